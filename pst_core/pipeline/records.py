"""What a run leaves behind: its output image, its record in the store, and what it returns.

The same with or without Prefect: the flows call these at a run's end, and so does ``pst run`` when
the store already holds every stage (it then starts no Prefect server at all).
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from typing import Any

from pst_core.config.schema import PipelineConfig
from pst_core.errors import describe_error
from pst_core.load import image_source, save_image
from pst_core.pipeline.plan import Plan, StageOutcome
from pst_core.pipeline.stages import output_image
from pst_core.store.artifact_store import ArtifactStore


def finish_run(store: ArtifactStore, run_id: str, flow: str, inputs: dict[str, Any], config: PipelineConfig,
               plan: Plan, outcomes: list[StageOutcome], started: float, error: BaseException | None = None,
               out: str | None = None) -> dict[str, Any]:
    """A run's end: the output image (``out``: the plan's final image), and the run's record in the
    store. Returns the record."""
    if error is None and out:
        write_output(store, plan, out)
    record = run_record(run_id, flow, inputs, config, outcomes, started, "ok" if error is None else "failed",
                        None if error is None else describe_error(error), output=out if error is None else None)
    store.write_run(record)
    return record


def write_output(store: ArtifactStore, plan: Plan, path: str) -> None:
    """The plan's output image, unless the file there already shows this entry (a rerun, a resumed run):
    a PNG names the store entry it shows."""
    source = f"{plan.final.stage}/{plan.final.key}"
    if image_source(path) != source:
        save_image(path, output_image(store, plan.final.key), source)


def run_result(record: dict[str, Any], plan: Plan, outcomes: list[StageOutcome]) -> dict[str, Any]:
    """What a run returns (a flow's result, the CLI's ``--json``): its id, its output, every stage, and
    the key of its final entry (``unnormalize_key`` for a pair, ``regions_key`` for one image)."""
    final = "unnormalize_key" if plan.final.stage == "unnormalize" else "regions_key"
    return {"run_id": record["run_id"], "output": record["output"], "stages": [o.public() for o in outcomes],
            final: plan.final.key}


def run_record(run_id: str, flow: str, inputs: dict[str, Any], config: PipelineConfig,
               outcomes: list[StageOutcome], started: float, status: str = "ok", error: str | None = None,
               output: str | None = None) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "flow": flow,
        "started": started,
        "started_at": _dt.datetime.fromtimestamp(started, _dt.timezone.utc).isoformat(),
        "seconds": time.time() - started,
        "status": status,
        "error": error,
        "inputs": inputs,
        "output": output,
        "config": config.model_dump(mode="json"),
        "stages": [o.record() for o in outcomes],
    }


def describe_run(run: dict) -> str:
    """``pst inspect RUN``: the stage graph with the parameters each stage read."""
    lines = [f"run {run['run_id']}  {run.get('flow')}  {run.get('started_at', '')}  status {run['status']}  "
             f"{run.get('seconds', 0):.1f} s"]
    lines += [f"  {k}: {v}" for k, v in run.get("inputs", {}).items() if v]
    if run.get("error"):
        lines.append(f"  error: {run['error']}")
    config = run.get("config", {})
    for s in run.get("stages", []):
        params = dict(config.get(s["stage"], {}))
        side_overrides = config.get(s.get("side") or "", {}).get(s["stage"], {}) if s.get("side") else {}
        params.update(side_overrides)
        name = f"{s['stage']}[{s['layer']}]" if s.get("layer") else s["stage"]
        lines.append(f"  {name:<32} {s.get('side') or 'pair':<8} {s['key'][:12]}  {s['status']:<8} "
                     f"{s['seconds']:7.2f}s  {json.dumps(params, sort_keys=True)}")
    if run.get("flow") == "pst-dataset":
        lines.append(f"  {run.get('rows', 0)} rows: {run.get('ok', '?')} ok, {run.get('failed', '?')} failed; "
                     f"results in {run.get('out_dir')}/results.csv")
    return "\n".join(lines)
