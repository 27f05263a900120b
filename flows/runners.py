"""Task runners for dataset runs: threads on this machine, or Dask (a local cluster or a scheduler)."""

from __future__ import annotations

from pst_core.errors import ConfigError


def make_task_runner(kind: str = "threads", concurrency: int = 2, dask_address: str | None = None):
    if concurrency < 1:
        raise ConfigError(f"--concurrency {concurrency}: must be at least 1")
    if kind == "threads":
        if dask_address:
            raise ConfigError("--dask-address needs --task-runner dask")
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=concurrency)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        # One thread per worker process: torch already uses the cores inside each task.
        return DaskTaskRunner(cluster_kwargs={"n_workers": concurrency, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    raise ConfigError(f"--task-runner {kind!r}: expected 'threads' or 'dask'")
