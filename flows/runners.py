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
        import torch

        # One task at a time per worker process; torch uses as many threads inside it as it does here
        # (Dask would pin OMP_NUM_THREADS=1), so a Dask run's floating point sums, and outputs, are
        # the same as a local run's.
        threads = str(torch.get_num_threads())
        return DaskTaskRunner(cluster_kwargs={"n_workers": concurrency, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None,
                                              "env": {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}})
    raise ConfigError(f"--task-runner {kind!r}: expected 'threads' or 'dask'")
