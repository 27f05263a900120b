"""The Prefect server a run talks to: the user's (``PREFECT_API_URL``), or a temporary one.

Without ``PREFECT_API_URL``, Prefect starts a temporary server in a subprocess and stops it when this
process exits. Task runs reach a server as events, which its task-run recorder writes to the
database a moment later. Stopping the temporary server while the recorder is still writing cancels
the write: the "Error flushing 1 events" ERROR lines, SQLAlchemy tracebacks and ``CancelledError``
that used to follow a successful ``pst run``, with the last task run states lost. So every flow
waits, before it returns, until the server has recorded the final states of its task runs
(``settle``); whatever stops the server next finds the recorder idle.

The command line starts that temporary server itself (``temporary_server``), as Prefect would, but
sooner: its process imports Prefect's server while the command plans, and serves only once the plan
says a flow must run. Prefect's server package is then never imported into this process (2 s here).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager

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


class TemporaryServer:
    """Prefect's temporary server (what ``prefect.server.api.server.SubprocessASGIServer`` runs), in two
    steps. ``prepare()`` starts a process that imports the server, the slow part (3 s here), and waits;
    ``serve()`` lets it open the database and listen, and points this process's Prefect client at it.
    A run that turns out to need no server stops the prepared process, which has touched nothing."""

    def __init__(self):
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.serving = False
        self._settings = ExitStack()  # PREFECT_API_URL while serving

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def prepare(self) -> None:
        with socket.socket() as sock:  # a free port; a race for it ends in exit code 3, and a retry
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "flows.server_process", str(self.port)],
                                        stdin=subprocess.PIPE, env=env)

    def serve(self) -> None:
        """Unless runs go to the user's server: start serving, and return once the server answers."""
        if self.serving:
            return
        if api_configured():
            self.stop()
            return
        from prefect.settings import (PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
                                      temporary_settings)

        if self.process is None:
            self.prepare()
        self._tell_serve()
        self._wait_ready(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        self._settings.enter_context(temporary_settings({PREFECT_API_URL: self.api_url}))

    def _tell_serve(self) -> None:
        self.serving = True
        try:
            self.process.stdin.write(b"serve\n")
            self.process.stdin.close()
        except BrokenPipeError:  # it has exited already (an import failed): _wait_ready says with what code
            pass

    def _wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        with httpx.Client() as client:
            while time.monotonic() < deadline:
                exited = self.process.poll()
                if exited == 3:  # the port was taken meanwhile
                    self.prepare()
                    self._tell_serve()
                elif exited is not None:
                    raise RuntimeError(f"Prefect's temporary server exited with code {exited}")
                try:
                    if client.get(f"{self.api_url}/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"Prefect's temporary server did not answer within {timeout} s "
                           "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)")

    def stop(self) -> None:
        self._settings.close()
        if self.process is None:
            return
        if not self.serving:  # still importing, or waiting: nothing to shut down
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        self.serving = False


_active: TemporaryServer | None = None  # the enclosing temporary_server's, if any


@contextmanager
def temporary_server():
    """A ``TemporaryServer``, prepared now unless a Prefect server is configured, stopped at the end. Call its
    ``serve()`` before the first flow runs; until then its import overlaps the caller's own work. Nested
    (the demo's two runs), the enclosing one is shared."""
    global _active
    if _active is not None:
        yield _active
        return
    server = _active = TemporaryServer()
    # A server of the user's is known from the environment, or, once Prefect is loaded (a caller in
    # Python, the tests' harness), from its settings; one set in a Prefect profile is found by serve().
    if not (os.environ.get("PREFECT_API_URL") or ("prefect" in sys.modules and api_configured())):
        server.prepare()
    try:
        yield server
    finally:
        _active = None
        server.stop()
