"""The dataset flow: a manifest of content/style pairs, mapped over the single-pair stages.

Work is shared, never repeated: an image used by many rows (a style across a dataset) is loaded,
featurised and segmented by one set of task runs whose futures every row reuses, and rows that
share upstream stages share their store entries. A bad row is recorded as failed with its one-line
reason; the others finish. Rerunning finds every finished stage in the store and computes nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from prefect import flow
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import PrefectFuture, as_completed

import tasks.stages as t
from pst_core import stages
from pst_core.config import SIDED_STAGES, PipelineConfig, build_config
from pst_core.errors import PstError
from pst_core.imageio import save_image
from pst_core.manifest import Row, product_rows, read_manifest
from pst_core.runs import check_inputs, run_record
from pst_core.store import ArtifactStore

from .deployments import resolve_store
from .pipeline import SideFutures, collect, current_run_id, normalise_colours, segment_side

RESULT_COLUMNS = ["row", "content", "style", "status", "output", "computed", "cached", "seconds", "error"]


@dataclass
class RowPlan:
    row: Row
    futures: list[PrefectFuture] = field(default_factory=list)  # the stages this row was first to need
    final: PrefectFuture | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)


class Planner:
    """Submits each row's stages, reusing the futures of any identical side already submitted."""

    def __init__(self, store: str):
        self.store = store
        self.sides: dict[tuple, SideFutures] = {}
        self.checked: dict[tuple, str] = {}  # (image, side settings) -> device

    def side(self, path: str, side: str, config: PipelineConfig, device: str, plan: RowPlan) -> SideFutures:
        params = {stage: config.params(stage, side).model_dump(mode="json") for stage in SIDED_STAGES}
        memo = (path, side, json.dumps(params, sort_keys=True))
        if memo not in self.sides:
            self.sides[memo] = segment_side(self.store, path, side, config, device)
            plan.futures += self.sides[memo].all
        return self.sides[memo]

    def submit(self, plan: RowPlan, base: PipelineConfig) -> None:
        row = plan.row
        config = build_config(base.model_dump(mode="json"), row.sets) if row.sets else base
        device = self._check(row, config)
        c = self.side(row.content, "content", config, device, plan)
        s = self.side(row.style, "style", config, device, plan)
        normalised = normalise_colours(self.store, c, s, config)
        styled = t.style_transfer.submit(self.store, normalised, c.regions, s.regions, config.style_transfer,
                                         config.params("features", "content"), device)
        plan.final = t.unnormalize.submit(self.store, styled, normalised, config.unnormalize)
        plan.futures += [normalised, styled, plan.final]

    def _check(self, row: Row, config: PipelineConfig) -> str:
        """Decode each image once and load each weights once, however many rows use them."""
        device = ""
        for path, side in ((row.content, "content"), (row.style, "style")):
            # Everything check_inputs reads: the image, weights, label images, the mapping's regions.
            memo = (path, side, config.params("load", side).max_pixels,
                    config.params("features", side).model_dump_json(),
                    *(config.params("fuse_segmentation", s).model_dump_json() for s in ("content", "style")),
                    json.dumps(config.style_transfer.model_dump(mode="json", include={"mapping", "regions"}),
                               sort_keys=True), config.device)
            if memo not in self.checked:
                self.checked[memo] = check_inputs({side: path}, config)
            device = self.checked[memo]
        return device


def _finish_row(plan: RowPlan, artifact_store: ArtifactStore) -> dict:
    row = plan.row
    result = {"row": row.row, "content": row.content, "style": row.style, "status": "failed", "output": None,
              "computed": 0, "cached": 0, "seconds": 0.0, "error": plan.error, "stages": []}
    if plan.error is None:
        outcomes, error = collect(plan.futures)
        result["computed"] = sum(not o.cached for o in outcomes)
        result["cached"] = sum(o.cached for o in outcomes)
        result["stages"] = [o.record() for o in outcomes]
        if error is not None:
            result["error"] = str(error) if isinstance(error, PstError) else f"{type(error).__name__}: {error}"
        elif plan.final is not None and plan.final.state.is_completed():
            save_image(row.out, stages.output_image(artifact_store, plan.final.result().key))
            result.update(status="ok", output=row.out)
        else:
            result["error"] = "an upstream stage failed"
    result["seconds"] = round(time.time() - plan.started, 3)
    return result


@flow(name="pst-dataset", log_prints=True)
def dataset(manifest: str | None = None, out_dir: str = "out/dataset", content_dir: str | None = None,
            styles: list[str] | None = None, config: PipelineConfig = PipelineConfig(),
            store: str | None = None, progress_bar: bool = False) -> dict:
    """Run every pair of a manifest (CSV/Parquet: content, style[, out][, stage.param ...]) or of
    ``content_dir`` x ``styles``; write outputs under ``out_dir`` and a results table."""
    started = time.time()
    if manifest:
        rows = read_manifest(manifest, out_dir)
    elif content_dir and styles:
        rows = product_rows(content_dir, styles, out_dir)
    else:
        raise PstError("dataset: give a manifest, or a content folder and a list of styles")
    store = resolve_store(store)
    artifact_store = ArtifactStore(store)
    artifact_store.check()
    planner = Planner(store)
    plans = [RowPlan(row) for row in rows]
    for plan in plans:
        try:
            planner.submit(plan, config)
        except PstError as exc:
            plan.error = str(exc)

    progress_id = create_progress_artifact(0.0, description=f"pst dataset: {len(plans)} pairs")
    bar = _progress_bar(len(plans)) if progress_bar else None
    results = []

    def finished(plan: RowPlan) -> None:
        results.append(_finish_row(plan, artifact_store))
        if bar:
            bar.update(1)
        update_progress_artifact(progress_id, 100.0 * len(results) / len(plans))

    for plan in plans:
        if plan.final is None:  # refused before any stage was submitted
            finished(plan)
    pending = {p.final: p for p in plans if p.final is not None}
    for done in as_completed(list(pending)):
        finished(pending[done])
    if bar:
        bar.close()

    table = pd.DataFrame(sorted(results, key=lambda r: r["row"]), columns=RESULT_COLUMNS)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    table.to_parquet(Path(out_dir) / "results.parquet", index=False)
    table.to_csv(Path(out_dir) / "results.csv", index=False)
    create_table_artifact(table.astype(str).to_dict("records"), key="pst-dataset-results",
                          description=f"pst dataset: {int((table.status == 'ok').sum())} ok, "
                                      f"{int((table.status == 'failed').sum())} failed")
    run_id = current_run_id()
    artifact_store.write_run({**run_record(run_id, "pst-dataset", {"manifest": manifest, "content_dir": content_dir,
                                                                  "styles": styles}, config, [], started),
                              "rows": sorted(results, key=lambda r: r["row"]), "out_dir": out_dir})
    print(f"{int((table.status == 'ok').sum())} ok, {int((table.status == 'failed').sum())} failed; "
          f"results in {Path(out_dir) / 'results.csv'}")
    return {"run_id": run_id, "results": table.to_dict("records"), "out_dir": out_dir,
            "stages": [s for r in results for s in r["stages"]]}


def _progress_bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="pair", desc="pst dataset")
