"""CLI runs as a user runs them: a fresh process each, no Prefect server configured (Prefect starts a
temporary one when there is work to run). Every run exits clean; a fully cached run starts no server."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from conftest import FAST

ROOT = Path(__file__).resolve().parent.parent
PST = [sys.executable, "-m", "flows.cli"]
SETS = sum((["--set", s] for s in FAST), [])
NOISE = ("Traceback", "ERROR", "Error", "CancelledError", "WARNING")


def _env(home: Path) -> dict:
    """A user's environment: no Prefect settings but a home of its own."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")}
    return {**env, "PREFECT_HOME": str(home), "PYTHONPATH": str(ROOT)}


def _pst(*argv, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*PST, *argv], env=_env(home), capture_output=True, text=True, timeout=600)


def test_ten_cli_runs_exit_clean(images, tmp_path):
    store, home = str(tmp_path / "store"), tmp_path / "home"
    runs = []
    for iterations in range(1, 9):  # each computes the transfer: Prefect's temporary server starts and stops
        json_out = ["--json"] if iterations % 2 else []
        runs.append((json_out, _pst("run", images["content"], images["style"], "--out", str(tmp_path / "o.png"),
                                    "--store", store, *SETS, "--set", f"style_transfer.iterations={iterations}",
                                    *json_out, home=home)))
    runs.append(([], _pst("segment", images["style"], "--regions", "2", "--out", str(tmp_path / "s.png"),
                          "--store", store, *SETS, home=home)))
    pd.DataFrame({"content": [images["content"]] * 2, "style": [images["style"], images["content"]]}).to_csv(
        tmp_path / "pairs.csv", index=False)
    runs.append((["--json"], _pst("dataset", str(tmp_path / "pairs.csv"), "--out-dir", str(tmp_path / "out"),
                                  "--store", store, *SETS, "--json", home=home)))
    assert (home / "prefect.db").exists()  # the runs did use Prefect's temporary server
    for json_out, proc in runs:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert not [word for word in NOISE if word in proc.stderr], proc.stderr[-3000:]
        if json_out:
            assert proc.stderr == "" and json.loads(proc.stdout)


def test_a_fully_cached_run_starts_no_prefect_server(images, tmp_path):
    store = str(tmp_path / "store")
    argv = ["run", images["content"], images["style"], "--out", str(tmp_path / "o.png"), "--store", store, *SETS,
            "--json"]
    first = _pst(*argv, home=tmp_path / "home")
    assert first.returncode == 0, first.stderr[-3000:]
    os.remove(tmp_path / "o.png")
    again = _pst(*argv, home=tmp_path / "fresh-home")
    assert again.returncode == 0 and again.stderr == "", again.stderr[-3000:]
    result = json.loads(again.stdout)
    assert {s["status"] for s in result["stages"]} == {"cached"} and os.path.exists(tmp_path / "o.png")
    assert not (tmp_path / "fresh-home" / "prefect.db").exists()  # no server was started
    from pst_core.store.artifact_store import ArtifactStore

    record = ArtifactStore(store).run(result["run_id"])
    assert record["status"] == "ok" and [s["key"] for s in record["stages"]] == [s["key"] for s in result["stages"]]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited; its parent just has not reaped it
        return stat.read().split(") ")[-1][0] != "Z"


def test_a_server_prepared_but_never_served_touches_nothing_and_ends_with_its_command(tmp_path):
    """The command is killed while its temporary server is still importing or waiting: the server
    process sees its input end and exits, having opened no database."""
    import time

    script = ("import os, signal, time; from flows.server import TemporaryServer; server = TemporaryServer(); "
              "server.prepare(); print(server.process.pid, flush=True); time.sleep(5); "
              "os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", script], env=_env(tmp_path / "home"), capture_output=True,
                          text=True, timeout=120)
    server_pid = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 30
    while _alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(server_pid)
    assert not (tmp_path / "home" / "prefect.db").exists()


def test_a_served_temporary_server_is_the_api_until_it_stops(tmp_path):
    """In a process of its own: this session's harness is a configured server, which would be used."""
    script = """
import httpx
from prefect.settings import PREFECT_API_URL
from flows.server import temporary_server

with temporary_server() as server:
    server.serve()
    process, url = server.process, server.api_url
    assert PREFECT_API_URL.value() == url, PREFECT_API_URL.value()
    assert httpx.get(f"{url}/health").status_code == 200
assert process.poll() is not None and not PREFECT_API_URL.value()
try:
    httpx.get(f"{url}/health")
    print("still answering")
except httpx.TransportError:
    print("stopped")
"""
    proc = subprocess.run([sys.executable, "-c", script], env=_env(tmp_path / "home"), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.split() == ["stopped"], proc.stderr[-3000:]
