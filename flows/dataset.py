"""The dataset flow: a manifest of content/style pairs, streamed through a bounded window of rows.

Rows are planned one at a time, as ``pst run`` plans a pair (``pst_core.pipeline.plan``: every stage's key,
looked up in the store). A row whose entries are all in the store finishes at once, with no task
run. Otherwise what it lacks runs as task runs of whole lists of stages: one per image side that no
row in flight is already computing (so a style shared by many rows is segmented once), then one for
the row's pair stages, shared by up to ``batch`` rows whose transfers are tiny. Whole lists rather
than one task run per stage: at thousands of pairs, a task run per stage costs more bookkeeping than
the stages' compute, and floods a temporary Prefect server's event queue (it drops task run events).
At most ``window`` rows are in flight; as each one finishes, its output is written and its result
appended to ``results.csv`` and the run's record in the store. Memory therefore stays flat in the
number of rows, and a killed run keeps every row it finished: rerunning it finds their entries in
the store and computes only what is missing.
A bad row never stops the run: it is recorded as failed with its one-line reason.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from prefect import flow
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import PrefectFuture, as_completed

from pst_core.config.overrides import build_config
from pst_core.config.schema import PipelineConfig
from pst_core.errors import PstError, describe_error
from pst_core.pipeline.manifest import Row, product_rows, read_manifest
from pst_core.pipeline.plan import Plan
from pst_core.pipeline.preflight import plan_run
from pst_core.pipeline.records import run_record, write_output
from pst_core.store.artifact_store import ArtifactStore

from .runtime import TaskRuns, collect, current_run_id, resolve_store
from .server import settle

# A task run costs tens of milliseconds of bookkeeping (measured on 2 cores): rows whose style transfer is
# about that cheap share one; a row with more work than this has its own, so workers share the work out.
BATCH_WORK = 64 * 64 * 20  # working pixels x final-scale iterations

RESULT_COLUMNS = ["row", "content", "style", "status", "output", "computed", "cached", "seconds", "error"]


@dataclass
class RowRun:
    row: Row
    plan: Plan | None = None
    sides: list[PrefectFuture] = field(default_factory=list)  # the task runs computing its images' stages
    own: list[PrefectFuture] = field(default_factory=list)  # those it submitted itself (its computed stages)
    batch: PrefectFuture | None = None  # the task run of its pair stages, with other rows'
    waiting: set[PrefectFuture] = field(default_factory=set)  # those not finished yet
    error: str | None = None
    started: float = field(default_factory=time.time)

    @property
    def work(self) -> int:
        """What its style transfer costs, roughly: working pixels x final-scale iterations (0 if stored)."""
        load = self.plan.steps[0].args["params"]
        return sum(load.size ** 2 * step.args["params"].iterations
                   for step in self.plan.missing_in("pair") if step.stage == "style_transfer")


class Window:
    """Submits rows' missing stages, each once however many rows need it, and keeps at most ``size``
    rows in flight. Each image's stages are one task run; the pair stages of up to ``batch`` rows whose
    transfers are small (``BATCH_WORK`` in all) are another, so a tiny row costs a fraction of a task
    run's bookkeeping."""

    def __init__(self, store: str, size: int, batch: int):
        self.tasks = TaskRuns(store)
        self.size, self.batch = size, batch
        self.rows: list[RowRun] = []  # in flight: their pair stages submitted
        self.pending: list[RowRun] = []  # their images' stages submitted, their pair stages not yet

    def add(self, run: RowRun) -> None:
        """Submit what the row's images lack and no row in flight computes; its pair stages go with the
        next batch."""
        for part, image in (("content", run.row.content), ("style", run.row.style)):
            future = self.tasks.together(run.plan.missing_in(part), f"{part} {Path(image).name}", run.plan.device)
            if future is not None:
                run.own.append(future)
        run.sides = list({self.tasks.computing[step.id]: None for step in run.plan.missing
                          if step.part != "pair" and step.id in self.tasks.computing})
        if self.pending and sum(r.work for r in self.pending) + run.work > BATCH_WORK:
            self.submit_batch()
        self.pending.append(run)
        if len(self.pending) >= self.batch:
            self.submit_batch()

    def submit_batch(self) -> None:
        """One task run for the pending rows' pair stages."""
        if not self.pending:
            return
        runs, self.pending = self.pending, []
        label = f"rows {runs[0].row.row}-{runs[-1].row.row}" if len(runs) > 1 else f"row {runs[0].row.row}"
        batch = self.tasks.rows_together([(run.row.row, run.plan.missing_in("pair")) for run in runs], label,
                                         runs[0].plan.device)
        for run in runs:
            pair = [step.id for step in run.plan.missing_in("pair")]
            if batch is not None and any(self.tasks.computing.get(step) is batch for step in pair):
                run.batch = batch
            # pair stages that other rows' batches compute: wait for those too
            others = {self.tasks.computing[step]: None for step in pair if step in self.tasks.computing}
            run.waiting = {*run.sides, *others}
            self.rows.append(run)

    def full(self) -> bool:
        return len(self.rows) + len(self.pending) >= self.size

    def next_finished(self) -> list[RowRun]:
        """Wait until some row in flight has all it waits for; take those rows out of the window."""
        self.submit_batch()
        for done in as_completed([f for run in self.rows for f in run.waiting]):
            done.wait()
            self.tasks.done(done)
            for run in self.rows:
                run.waiting.discard(done)
            finished = [run for run in self.rows if not run.waiting]
            if finished:
                self.rows = [run for run in self.rows if run.waiting]
                return finished
        finished, self.rows = self.rows, []  # rows that wait for nothing
        return finished


def _batch_result(run: RowRun) -> tuple[dict, str | None]:
    """The row's outcomes from its batch's task run, by entry, and the reason it stopped there."""
    if run.batch is None:
        return {}, None
    if not run.batch.state.is_completed():  # the task run itself failed: no row of it ran to its end
        _, error = collect([run.batch])
        return {}, describe_error(error)
    outcomes, error = run.batch.result()[run.row.row]
    return {(o.stage, o.key): o for o in outcomes}, error


def finish_row(run: RowRun, store: ArtifactStore) -> dict:
    """A row's result, and its output image if every stage it needs is done. Stages other rows computed
    for it count as cached here. Where one of its images' stages failed, that is the row's reason."""
    row = run.row
    result = {"row": row.row, "content": row.content, "style": row.style, "status": "failed", "output": None,
              "computed": 0, "cached": 0, "seconds": 0.0, "error": run.error, "stages": []}
    if run.plan is not None:
        ran, _ = collect(run.own)
        _, side_error = collect(run.sides)
        pair_ran, pair_error = _batch_result(run)
        ran.update(pair_ran)
        error = describe_error(side_error) if side_error is not None else pair_error
        if error is None and not store.has(run.plan.final.stage, run.plan.final.key):
            error = "a row computing the same stages failed"  # a duplicate row's batch, which completes anyway
        outcomes = run.plan.outcomes(ran, reused=error is None)
        result["computed"] = sum(not o.cached for o in outcomes)
        result["cached"] = sum(o.cached for o in outcomes)
        result["stages"] = [o.record() for o in outcomes]
        if error is None:
            write_output(store, run.plan, row.out)
            result.update(status="ok", output=row.out)
        else:
            result["error"] = error
    result["seconds"] = round(time.time() - run.started, 3)
    return result


class Results:
    """Rows as they finish: appended to ``out_dir/results.csv`` at once, and to the run's record in the
    store (in parts, every ``every`` seconds); the Prefect progress artifact every ``report_every``
    seconds (each update is a request to the server); the sorted table (CSV, Parquet) at the end."""

    def __init__(self, out_dir: str, store: ArtifactStore, run_id: str, total: int, bar: bool, every: float = 1.0,
                 report_every: float = 10.0):
        self.folder = Path(out_dir)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.csv_file = open(self.folder / "results.csv", "w", newline="")
        self.csv = csv.DictWriter(self.csv_file, RESULT_COLUMNS, extrasaction="ignore")
        self.csv.writeheader()
        self.store, self.run_id, self.total, self.every, self.report_every = store, run_id, total, every, report_every
        self.pending: list[dict] = []
        self.parts = self.done = 0
        self.flushed = self.reported = time.monotonic()
        self.progress = create_progress_artifact(0.0, description=f"pst dataset: {total} pairs")
        self.bar = _progress_bar(total) if bar else None

    def add(self, result: dict) -> None:
        self.csv.writerow(result)
        self.csv_file.flush()
        self.pending.append(result)
        self.done += 1
        if self.bar:
            self.bar.update(1)
        if time.monotonic() - self.flushed >= self.every:
            self.flush()

    def flush(self, final: bool = False) -> None:
        if self.pending:
            self.store.write_run_rows(self.run_id, self.parts, self.pending)
            self.parts += 1
            self.pending = []
        self.flushed = time.monotonic()
        if final or self.flushed - self.reported >= self.report_every:
            update_progress_artifact(self.progress, 100.0 * self.done / max(1, self.total))
            self.reported = self.flushed

    def close(self) -> pd.DataFrame:
        self.flush(final=True)
        self.csv_file.close()
        if self.bar:
            self.bar.close()
        text = {c: str for c in ("content", "style", "status", "output", "error")}
        table = pd.read_csv(self.folder / "results.csv", dtype=text).sort_values("row", ignore_index=True)
        table.to_parquet(self.folder / "results.parquet", index=False)
        table.to_csv(self.folder / "results.csv", index=False)
        return table


@flow(name="pst-dataset", log_prints=True)
def dataset(manifest: str | None = None, out_dir: str = "out/dataset", content_dir: str | None = None,
            styles: list[str] | None = None, config: PipelineConfig = PipelineConfig(),
            store: str | None = None, progress_bar: bool = False, window: int = 16, batch: int = 8) -> dict:
    """Run every pair of a manifest (CSV/Parquet: content, style[, out][, stage.param ...]) or of
    ``content_dir`` x ``styles``; write outputs under ``out_dir`` and a results table. ``window``: rows
    in flight at most; ``batch``: rows whose pair stages share a task run."""
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
    run_id = current_run_id()
    inputs = {"manifest": manifest, "content_dir": content_dir, "styles": styles}
    record = {**run_record(run_id, "pst-dataset", inputs, config, [], started, status="running"), "out_dir": out_dir,
              "rows": len(rows)}
    artifact_store.write_run(record)  # a killed run leaves its record, and the rows it finished
    results = Results(out_dir, artifact_store, run_id, len(rows), progress_bar)
    flight = Window(store, max(1, window), max(1, min(batch, window)))

    try:
        for row in rows:
            run = RowRun(row)
            try:
                row_config = build_config(config.model_dump(mode="json"), row.sets) if row.sets else config
                run.plan = plan_run(artifact_store, {"content": row.content, "style": row.style}, row_config)
            except PstError as exc:
                run.error = str(exc)
            if run.plan is None or not run.plan.missing:
                results.add(finish_row(run, artifact_store))
                continue
            flight.add(run)
            while flight.full():
                for done in flight.next_finished():
                    results.add(finish_row(done, artifact_store))
        while flight.rows or flight.pending:
            for done in flight.next_finished():
                results.add(finish_row(done, artifact_store))
    finally:
        settle(flight.tasks.submitted, flight.tasks.finished)
    table = results.close()
    ok, failed = int((table.status == "ok").sum()), int((table.status == "failed").sum())
    create_table_artifact(table.astype(str).to_dict("records"), key="pst-dataset-results",
                          description=f"pst dataset: {ok} ok, {failed} failed")
    artifact_store.write_run({**record, **run_record(run_id, "pst-dataset", inputs, config, [], started),
                              "ok": ok, "failed": failed})
    print(f"{ok} ok, {failed} failed; results in {Path(out_dir) / 'results.csv'}")
    failures = table[table.status == "failed"]
    return {"run_id": run_id, "out_dir": out_dir, "results": str(Path(out_dir) / "results.csv"), "ok": ok,
            "failed": failed, "failed_rows": failures[["row", "error"]].to_dict("records")}


def _progress_bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="pair", desc="pst dataset", smoothing=0.05)
