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
