"""The single-pair flow and the segmentation flow: plan from keys, then run only what is missing.

The stage graph lives in ``pst_core.plan``. A flow plans every stage's key before anything runs
(``pst_core.runs.preflight``), submits one task run per stage the store lacks, each after the task
runs of the stages it reads, and reports the others as cached: one ``reused`` task run stands for
them in the Prefect UI, and the run's summary artifact lists every stage, cached or computed.
"""

from __future__ import annotations

import time
import uuid

from prefect import flow
from prefect.futures import PrefectFuture, wait
from prefect.runtime import flow_run

import tasks.stages as t
from pst_core.config.schema import PipelineConfig
from pst_core.pipeline.plan import Plan, StageOutcome
from pst_core.pipeline.preflight import finish_run, preflight, public_stages
from pst_core.store.artifact_store import ArtifactStore

from .artifacts import publish_run_summary
from .deployments import resolve_store
from .server import settle


def run_plan(store: str, plan: Plan) -> tuple[list[StageOutcome], BaseException | None]:
    """Submit a task run for every missing step, none for the cached ones; wait for them. Returns every
    step's outcome in report order (steps that could not run left out) and the first error, if any."""
    futures: dict[tuple[str, str], PrefectFuture] = {}
    cached = plan.cached
    reused = t.reused.submit([f"{step.name} {step.key[:12]}" for step in cached]) if cached else None
    try:
        for step in plan.missing:
            upstream = [futures[need] for need in step.needs if need in futures]
            if reused is not None and any(need in plan.present for need in step.needs):
                upstream.append(reused)
            futures[step.id] = t.TASKS[step.stage].submit(store, step, plan.device, wait_for=upstream)
        ran, error = collect(futures)
    finally:
        submitted = [*futures.values(), *([reused] if reused else [])]
        wait(submitted)
        settle(len(submitted), sum(f.state.is_final() for f in submitted))
    return plan.outcomes(ran), error


def collect(futures: dict) -> tuple[dict, BaseException | None]:
    """Wait for every future; return the results of those that finished (by their key in ``futures``) and
    the first error, if any."""
    wait(list(futures.values()))
    done, error = {}, None
    for name, future in futures.items():
        state = future.state
        if state.is_completed():
            done[name] = future.result()
        elif error is None and state.is_failed():
            try:
                future.result()
            except BaseException as exc:  # the task's own exception, re-raised by Prefect
                error = exc
    return done, error


def current_run_id() -> str:
    return str(flow_run.id or uuid.uuid4())


@flow(name="partitioned-style-transfer", log_prints=True)
def partitioned_style_transfer(content: str, style: str, config: PipelineConfig = PipelineConfig(),
                               store: str | None = None, out: str | None = None) -> dict:
    """Stylise ``content`` with ``style``, region by region; every stage cached in ``store``."""
    started = time.time()
    store = resolve_store(store)
    artifact_store = ArtifactStore(store)
    inputs = {"content": content, "style": style}
    plan = preflight(artifact_store, inputs, config)
    outcomes, error = run_plan(store, plan)
    record = finish_run(artifact_store, current_run_id(), "partitioned-style-transfer", inputs, config, plan,
                        outcomes, started, error, out)
    publish_run_summary(record, store)
    if error is not None:
        raise error
    return {"run_id": record["run_id"], "output": out, "unnormalize_key": plan.final.key,
            "stages": public_stages(outcomes)}


@flow(name="segment-image", log_prints=True)
def segment_image(image: str, config: PipelineConfig = PipelineConfig(), store: str | None = None) -> dict:
    """Only the segmentation stages of one image (as the content side of a run)."""
    started = time.time()
    store = resolve_store(store)
    artifact_store = ArtifactStore(store)
    plan = preflight(artifact_store, {"content": image}, config)
    outcomes, error = run_plan(store, plan)
    record = finish_run(artifact_store, current_run_id(), "segment-image", {"image": image}, config, plan, outcomes,
                        started, error)
    publish_run_summary(record, store)
    if error is not None:
        raise error
    return {"run_id": record["run_id"], "regions_key": plan.final.key, "stages": public_stages(outcomes)}
