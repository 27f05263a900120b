"""The Prefect server a run talks to: the user's (``PREFECT_API_URL``), or a temporary one.

Without ``PREFECT_API_URL``, Prefect starts a temporary server in a subprocess and stops it when this
process exits. Task runs reach a server as events, which its task-run recorder writes to the
database a moment later. Stopping the temporary server while the recorder is still writing cancels
the write: the "Error flushing 1 events" ERROR lines, SQLAlchemy tracebacks and ``CancelledError``
that used to follow a successful ``pst run``, with the last task run states lost. So every flow
waits, before it returns, until the server has recorded the final states of its task runs
(``settle``); whatever stops the server next finds the recorder idle.
"""

from __future__ import annotations

import time

FINAL = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]


def api_configured() -> bool:
    """Whether runs go to a Prefect server of the user's rather than a temporary one."""
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def settle(submitted: int, finished: int, timeout: float = 120.0) -> None:
    """Return once the server holds this flow run's ``submitted`` task runs, ``finished`` of them in a
    final state (the others stopped before they ran: an upstream task failed), or after ``timeout``."""
    if not submitted:
        return
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    runs = {"id": {"any_": [str(flow_run.id)]}}
    everything = {"flow_runs": runs}
    final = {"flow_runs": runs, "task_runs": {"state": {"type": {"any_": FINAL}}}}
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        def count(body: dict) -> int:
            response = client.request("POST", "/task_runs/count", json=body)
            response.raise_for_status()
            return int(response.json())

        while time.monotonic() < deadline:
            if count(final) >= finished and count(everything) >= submitted:
                return
            time.sleep(0.05)
