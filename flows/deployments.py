"""Prefect deployments of the two flows: ``pst deploy`` (a work pool and workers) and ``pst serve``.

Both flows take ``store=None`` by default and then read the Prefect variable ``pst_store``, so every
worker of a deployment writes to the same store; ``pst deploy --store URL`` sets that variable.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.variables import Variable

from .runtime import STORE_VARIABLE

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PAIR = ("flows/pipeline.py:partitioned_style_transfer", "pst-pair")
# A flow run's process: every thread allocates from one heap, so the transfer (in a task run's thread)
# can keep its large blocks there instead of faulting them in again every pass (pst_core.style.heap).
JOB_VARIABLES = {"env": {"MALLOC_ARENA_MAX": "1"}}
DATASET = ("flows/dataset.py:dataset", "pst-dataset")


def deploy_all(work_pool: str = "pst", store: str | None = None, defaults: dict | None = None) -> dict[str, str]:
    """Register both deployments on ``work_pool`` (a process pool); returns {name: deployment id}."""
    if store:
        Variable.set(STORE_VARIABLE, store, overwrite=True)
    ids = {}
    for entrypoint, name in (PAIR, DATASET):
        source_flow = flow.from_source(source=str(PROJECT_ROOT), entrypoint=entrypoint)
        ids[name] = str(source_flow.deploy(
            name=name, work_pool_name=work_pool, build=False, push=False, print_next_steps=False,
            parameters={"config": defaults} if defaults else None, job_variables=JOB_VARIABLES,
            description=f"pst {name}: partitioned neural style transfer, cached in the store "
                        f"(Prefect variable {STORE_VARIABLE})"))
    return ids


def serve_all() -> None:
    """Serve both flows from this process, for users without a work pool."""
    from prefect import serve

    from flows.dataset import dataset
    from flows.pipeline import partitioned_style_transfer

    # Names of their own, so serving never replaces the work-pool deployments of the same flows.
    serve(partitioned_style_transfer.to_deployment(name=f"{PAIR[1]}-served"),
          dataset.to_deployment(name=f"{DATASET[1]}-served"))
