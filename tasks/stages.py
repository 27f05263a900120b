"""Thin Prefect tasks: one per pipeline stage; for dataset runs, one for an image's list of stages and
one for several rows' pair stages; and one that stands for the stages a run reused. The maths and
the store live in ``pst_core``.

Tasks take planned steps (``pst_core.pipeline.plan.Step``: a stage's key, its inputs' keys, its parameters) and
return ``StageOutcome``s, never arrays, so they run unchanged on threads, processes or Dask workers.
Flows submit tasks only for the steps whose entries the store lacks; a stage that finds its entry when
it runs after all (another process wrote it since the plan) returns a ``Completed`` state named
``Cached``. Prefect's own caching and result persistence are off: the zarr store is the cache.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from pst_core.pipeline import stages
from pst_core.config.schema import STAGE_MODELS
from pst_core.pipeline.plan import StageOutcome, Step
from pst_core.progress import TransferProgress
from pst_core.store.artifact_store import ArtifactStore

stage_task = task(cache_policy=NO_CACHE, persist_result=False, retries=0)


def _finish(outcomes: StageOutcome | list[StageOutcome]):
    many = isinstance(outcomes, list)
    found = [o for o in (outcomes if many else [outcomes]) if o.cached]
    if found and len(found) == (len(outcomes) if many else 1):
        return Completed(name="Cached", data=outcomes,
                         message=", ".join(f"{o.stage} {o.key[:12]}" for o in found) + " in the store")
    return outcomes


def _transfer_log(every: int = 10):
    """The style transfer's progress (``pst_core.progress.TransferProgress``) in the task run's log (the
    Prefect UI), every tenth of the way."""
    logger = get_run_logger()

    def log(progress: TransferProgress) -> None:
        if progress.iteration % max(1, progress.of // every) == 0 or progress.iteration == progress.of:
            logger.info(f"style_transfer iteration {progress.iteration}/{progress.of}: {progress.describe()}")

    return log


def _stage_task(stage: str):
    def run(store: str, step: Step, device: str = "cpu"):
        progress = _transfer_log() if stage == "style_transfer" else None
        return _finish(stages.run_step(ArtifactStore(store), step, device, progress))

    run.__name__ = run.__qualname__ = stage
    return stage_task(name=stage, task_run_name=lambda parameters: parameters["step"].name)(run)


TASKS = {stage: _stage_task(stage) for stage in STAGE_MODELS}


@stage_task(name="stage_list", task_run_name=lambda parameters: parameters["label"])
def stage_list(store: str, steps: list[Step], label: str, device: str = "cpu"):
    """Several steps in one task run, in order (a dataset row's, or one image's shared by many rows)."""
    return _finish(stages.run_steps(ArtifactStore(store), steps, device))


@stage_task(name="stage_rows", task_run_name=lambda parameters: parameters["label"])
def stage_rows(store: str, rows: list[tuple[int, list[Step]]], label: str, device: str = "cpu"):
    """Several dataset rows' steps in one task run, row after row; a row that fails stops only itself
    (its reason is in the result, by row, and counted in the state's message)."""
    done = stages.run_rows(ArtifactStore(store), rows, device)
    failed = sum(error is not None for _, error in done.values())
    outcomes = [o for ran, _ in done.values() for o in ran]
    name = "Cached" if outcomes and all(o.cached for o in outcomes) and not failed else "Completed"
    return Completed(name=name, data=done, message=f"{len(rows) - failed} rows done, {failed} failed")


@stage_task(name="reused", task_run_name=lambda parameters: f"reused-{len(parameters['steps'])}-stages")
def reused(steps: list[str]):
    """Stands in the task graph for the stages a run found in the store (``steps``: their names and keys);
    computed stages that read them come after it."""
    return Completed(name="Cached", data=steps, message=f"{len(steps)} stages reused from the store")
