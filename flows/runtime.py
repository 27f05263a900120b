"""What every flow does besides choosing its stages, written once:

- which store a run writes to (``resolve_store``) and its run id;
- ``TaskRuns``: a task run for planned steps (``pst_core.pipeline.plan``), each step once however
  many parts of a run (or rows of a dataset) need it, each after the task runs computing what it reads;
- ``collect``: what finished task runs returned, and the first error;
- ``PlanTasks``: the task runs of one plan, part by part (``content``, ``style``, ``pair``), waited
  for until the server has recorded every one (``flows.server.settle``); ``run_plan`` runs all parts;
- ``Run``: a flow run of one plan (a pair, or one image): planned before anything runs, its parts
  submitted as the flow names them, and its end: the output image, the run record, the summary artifact.
"""

from __future__ import annotations

import time
import uuid

from prefect import allow_failure
from prefect.futures import PrefectFuture, wait
from prefect.runtime import flow_run
from prefect.variables import Variable

import tasks.stages as t
from pst_core.config.schema import PipelineConfig
from pst_core.errors import ComputeError
from pst_core.pipeline.plan import Plan, StageOutcome, Step
from pst_core.pipeline.preflight import preflight
from pst_core.pipeline.records import finish_run, run_result
from pst_core.store.artifact_store import DEFAULT_STORE, ArtifactStore

from .artifacts import publish_run_summary
from .server import settle

STORE_VARIABLE = "pst_store"
StepId = tuple[str, str]  # (stage, key): a step's entry


def resolve_store(store: str | None) -> str:
    """An explicit store, else the Prefect variable ``pst_store``, else the local default."""
    if store:
        return store
    return Variable.get(STORE_VARIABLE, default=None) or DEFAULT_STORE


def current_run_id() -> str:
    return str(flow_run.id or uuid.uuid4())


class TaskRuns:
    """Task runs computing planned steps: each step once, each task run after those computing the
    entries its steps read."""

    def __init__(self, store: str):
        self.store = store
        self.computing: dict[StepId, PrefectFuture] = {}  # step -> the task run computing it
        self.steps_of: dict[PrefectFuture, list[StepId]] = {}  # task run -> its steps, until it is done
        self.submitted = self.finished = 0  # task runs, and those that reached a final state

    def alone(self, step: Step, device: str, wait_for: list[PrefectFuture] = ()) -> None:
        """A task run of its own for ``step`` (a pair run: the Prefect UI shows every stage)."""
        if step.id not in self.computing:
            after = [*self._upstream([step]), *wait_for]
            self._add([step], t.TASKS[step.stage].submit(self.store, step, device, wait_for=after))

    def together(self, steps: list[Step], label: str, device: str) -> PrefectFuture | None:
        """One task run for several steps, in order (a dataset row's side, or its pair stages); None when
        other task runs compute all of them already."""
        todo = [step for step in steps if step.id not in self.computing]
        if not todo:
            return None
        future = t.stage_list.submit(self.store, todo, label, device, wait_for=self._upstream(todo))
        self._add(todo, future)
        return future

    def rows_together(self, rows: list[tuple[int, list[Step]]], label: str, device: str) -> PrefectFuture | None:
        """One task run for several dataset rows' steps (``tasks.stages.stage_rows``), after the task runs
        computing what they read, even where those failed: each row then fails on its own. None when
        no row has a step that no other task run computes."""
        rows = [(row, todo) for row, steps in rows if (todo := [s for s in steps if s.id not in self.computing])]
        if not rows:
            return None
        steps = [step for _, todo in rows for step in todo]
        after = [allow_failure(future) for future in self._upstream(steps)]
        future = t.stage_rows.submit(self.store, rows, label, device, wait_for=after)
        self._add(steps, future)
        return future

    def done(self, future: PrefectFuture) -> None:
        """A task run finished: its entries are in the store now (or it failed), so steps submitted later
        need not wait for it."""
        self.finished += future.state.is_final()
        for step_id in self.steps_of.pop(future, []):
            if self.computing.get(step_id) is future:
                del self.computing[step_id]

    def _upstream(self, steps: list[Step]) -> list[PrefectFuture]:
        return list({self.computing[need]: None for step in steps for need in step.needs if need in self.computing})

    def _add(self, steps: list[Step], future: PrefectFuture) -> None:
        self.submitted += 1
        self.steps_of[future] = [step.id for step in steps]
        self.computing.update({step.id: future for step in steps})


def collect(futures: list[PrefectFuture]) -> tuple[dict[StepId, StageOutcome], BaseException | None]:
    """Wait for ``futures``; the outcomes they returned, by entry, and the first error (a task's own
    exception; or, where task runs never ran because one they waited for failed elsewhere, saying so)."""
    wait(futures)
    ran: dict[StepId, StageOutcome] = {}
    error = None
    for future in futures:
        state = future.state
        if state.is_completed():
            result = future.result()
            ran.update({(o.stage, o.key): o for o in (result if isinstance(result, list) else [result])})
        elif error is None and state.is_failed():
            try:
                future.result()
            except BaseException as exc:  # the task's own exception, re-raised by Prefect
                error = exc
    if error is None and any(not future.state.is_completed() for future in futures):
        error = ComputeError("an upstream stage failed")
    return ran, error


class PlanTasks:
    """The task runs of one plan: ``stages(part)`` submits one task run per missing step of a part of the
    graph, ``wait`` collects them. One ``reused`` task run stands for the stages found in the store; the
    computed stages that read them come after it."""

    def __init__(self, store: str, plan: Plan):
        self.store, self.plan = store, plan
        self.tasks = TaskRuns(store)
        cached = plan.cached
        self.reused = t.reused.submit([f"{step.name} {step.key[:12]}" for step in cached]) if cached else None

    def stages(self, part: str) -> None:
        """Submit the missing steps of ``part``: ``content``, ``style`` or ``pair``."""
        for step in self.plan.missing_in(part):
            reads_stored = self.reused is not None and any(need in self.plan.present for need in step.needs)
            self.tasks.alone(step, self.plan.device, [self.reused] if reads_stored else [])

    def wait(self) -> tuple[list[StageOutcome], BaseException | None]:
        """Every step's outcome in report order (steps that could not run left out), and the first error;
        returns once the server has recorded every task run's final state."""
        futures = list(self.tasks.steps_of)
        submitted = [*futures, *([self.reused] if self.reused else [])]
        try:
            ran, error = collect(futures)
        finally:
            wait(submitted)
            settle(len(submitted), sum(future.state.is_final() for future in submitted))
        return self.plan.outcomes(ran), error


def run_plan(store: str, plan: Plan) -> tuple[list[StageOutcome], BaseException | None]:
    """Every part of a plan made elsewhere (``preflight``), in the diagram's order; see ``PlanTasks.wait``."""
    tasks = PlanTasks(store, plan)
    for part in ("content", "style", "pair"):
        tasks.stages(part)
    return tasks.wait()


class Run(PlanTasks):
    """One flow run of one plan. Made, it has planned every stage's key and checked its inputs, with
    the store unchanged (``preflight``); ``stages(part)`` submits the task runs of one part of the
    graph, for the steps the store lacks; ``finish`` waits for them and records the run."""

    def __init__(self, flow_name: str, images: dict[str, str], config: PipelineConfig, store: str | None,
                 inputs: dict[str, str] | None = None):
        self.started = time.time()
        self.flow_name, self.config, self.inputs = flow_name, config, inputs or images
        self.artifact_store = ArtifactStore(resolve_store(store))
        super().__init__(self.artifact_store.url, preflight(self.artifact_store, images, config))

    def finish(self, out: str | None = None) -> dict:
        """Wait for every task run; write the output image (``out``), the run's record and its summary
        artifact; raise the first error, else return the run's result (``records.run_result``)."""
        outcomes, error = self.wait()
        record = finish_run(self.artifact_store, current_run_id(), self.flow_name, self.inputs, self.config,
                            self.plan, outcomes, self.started, error, out)
        publish_run_summary(record, self.store)
        if error is not None:
            raise error
        return run_result(record, self.plan, outcomes)
