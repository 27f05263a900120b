"""Prefect flows: the pipeline, datasets, deployments and the ``pst`` command line."""

import os

# Prefect's temporary server gives up after 20 s by default, and its first start (a new database and
# its migrations) takes longer than that on a busy 2-core machine. Set before any flow module imports
# Prefect, so the command line, the Python API and the benchmarks all get it.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
