"""Hardening: bad input refused cleanly, SIGKILL at random moments, concurrent writers, determinism."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import FAST
from flows.cli import main
from pst_core.store import maintenance
from pst_core.store.artifact_store import ArtifactStore

SETS = sum((["--set", s] for s in FAST), [])
PST = [sys.executable, "-m", "flows.cli"]


def _snapshot(folder):
    return {os.path.join(r, n): os.stat(os.path.join(r, n)).st_mtime_ns
            for r, _, names in os.walk(folder) for n in names}


@pytest.fixture(scope="module")
def store(images, tmp_path_factory, prefect_server):
    """A store holding one complete run, which bad input must leave exactly as it is."""
    folder = tmp_path_factory.mktemp("faults")
    assert main(["run", images["content"], images["style"], "--out", str(folder / "o.png"),
                 "--store", str(folder / "store"), *SETS]) == 0
    return folder / "store"


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    Image.new("RGB", (64, 48), "red").save(d / "ok.png")
    Image.new("RGB", (64, 48), "red").save(d / "ok.jpg", quality=90)
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("hello")
    for name in ("ok.png", "ok.jpg"):
        data = (d / name).read_bytes()
        (d / f"cut{Path(name).suffix}").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (1, 1), "red").save(d / "one.png")
    Image.new("RGB", (5000, 5000), "red").save(d / "huge.png")
    (d / "folder.png").mkdir()
    pd.DataFrame({"content": ["ok.png"]}).to_csv(d / "nostyle.csv", index=False)
    (d / "bad.yaml").write_text("cluster_layer: [unclosed")
    noise = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)  # the images are 40x32
    Image.fromarray(noise).save(d / "noise.png")
    Image.fromarray(np.repeat(np.arange(40, dtype=np.uint8)[None] // 20, 32, 0)).save(d / "halves.png")
    return d


C, S = "{content}", "{style}"
CASES = [
    (["run", "{d}/missing.png", S], "no such file"),
    (["run", "{d}/folder.png", S], "is a directory"),
    (["run", "{d}/empty.png", S], "not an image"),
    (["run", "{d}/text.png", S], "not an image"),
    (["run", "{d}/cut.png", S], "cut.png"),
    (["run", C, "{d}/cut.jpg"], "cut.jpg"),
    (["run", "{d}/one.png", S], "too small"),
    (["run", "{d}/huge.png", S, "--set", "load.max_pixels=1000000"], "max_pixels"),
    (["run", C, S, "--set", "style_transfer.style_weight=nan"], "style_transfer.style_weight"),
    (["run", C, S, "--set", "style_transfer.content_weight=inf"], "style_transfer.content_weight"),
    (["run", C, S, "--set", "style_transfer.iterations=-5"], "style_transfer.iterations"),
    (["run", C, S, "--set", "load.size=3"], "load.size"),
    (["run", C, S, "--set", "cluster_layer.kk=3"], "did you mean 'k'"),
    (["run", C, S, "--set", "styletransfer.iterations=3"], "did you mean 'style_transfer'"),
    (["run", C, S, "--set", "cluster_layer.k=0"], "cluster_layer.k"),
    (["run", C, S, "--set", "load.size=16", "--set", "cluster_layer.k=40"], "more than the 12 pixels"),
    (["run", C, S, "--set", "style_transfer.mapping={{\"0\": 7}}"], "does not exist"),
    (["run", C, S, "--set", "features.weights=/no/such/weights.pth"], "features.weights"),
    (["run", C, S, "--set", "features.layers=relu9_1"], "unknown VGG19 layer"),
    (["run", C, S, "--set", "color_normalize.method=rainbow"], "color_normalize.method"),
    (["run", C, S, "--set", "device=cuda:7"], "device"),
    (["run", C, S, "--config", "{d}/bad.yaml"], "bad.yaml"),
    (["run", C, S, "--config", "{d}/none.yaml"], "no such file"),
    (["segment", C, "--regions", "0"], "--regions"),
    (["run", C, S, "--content-labels", "{d}/noise.png"], "1280 distinct colours"),
    (["run", C, S, "--content-labels", "{d}/ok.png"], "does not fit the 40x32 image"),
    (["run", C, S, "--style-labels", "{d}/nolabels.png"], "style.fuse_segmentation.labels"),
    (["run", C, S, "--content-labels", "{d}/halves.png", "--set", "style_transfer.mapping={{0: 0, 2: 1}}"],
     "content has regions 0..1"),
    (["dataset", "{d}/nostyle.csv", "--out-dir", "{d}/o"], "missing column(s) style"),
    (["dataset", "{d}/none.csv", "--out-dir", "{d}/o"], "no such file"),
]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a[1:]) for a, _ in CASES])
def test_bad_input(args, message, bad, images, store, capsys):
    before = _snapshot(store)
    argv = [a.format(d=bad, content=images["content"], style=images["style"]) for a in args]
    if argv[0] in ("run", "segment"):
        argv = [argv[0], *SETS, *argv[1:], "--out", str(bad / "out.png")]
    capsys.readouterr()
    assert main([*argv, "--store", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err
    assert _snapshot(store) == before


def test_unreachable_store(images, capsys):
    assert main(["run", images["content"], images["style"], "--out", "/tmp/x.png", "--store", "nosuch://x/y",
                 *SETS]) == 2
    assert "--store nosuch://x/y" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["I;16", "P", "CMYK", "RGBA", "L"])
def test_unusual_image_modes_run(mode, images, store, tmp_path):
    base = Image.open(images["content"]).convert("RGB")
    if mode == "I;16":
        img = Image.fromarray((np.asarray(base.convert("L"), np.uint16) * 257).astype(np.uint16))
    else:
        img = base.convert(mode)
    path = tmp_path / ("in.tif" if mode == "CMYK" else "in.png")
    img.save(path)
    assert main(["run", str(path), images["style"], "--out", str(tmp_path / "o.png"), "--store", str(store),
                 *SETS]) == 0
    assert Image.open(tmp_path / "o.png").size == (40, 32)


def _env(home):
    """Subprocesses talk to the session's Prefect server (one server, as a team would run it)."""
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": PREFECT_API_URL.value(),
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


def test_sigkill_at_random_moments_then_a_normal_run_is_clean(images, tmp_path, prefect_server):
    store = tmp_path / "store"
    base = [*PST, "run", images["content"], images["style"], "--out", str(tmp_path / "o.png"), "--store",
            str(store), *SETS, "--set", "style_transfer.iterations=300"]
    env = _env(tmp_path / "home")
    rng = random.Random(0)
    kills = 0
    for attempt in range(10):
        # a new seed each time, so every attempt has new entries to write when it is killed
        proc = subprocess.Popen([*base, "--set", f"style_transfer.seed={attempt}"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(1.0, 8.0))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the run and its Prefect server, mid-whatever
            kills += 1
        proc.wait()
    assert kills >= 8
    done = subprocess.run([*base, "--set", "style_transfer.seed=99"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    artifact_store = ArtifactStore(str(store))
    assert maintenance.verify(artifact_store) == []
    check = subprocess.run([*PST, "store", "verify", "--store", str(store)], env=env, capture_output=True, text=True)
    assert check.returncode == 0 and "verified" in check.stdout


def test_four_processes_on_the_same_pair(images, tmp_path, prefect_server):
    store = tmp_path / "store"
    procs = [subprocess.Popen([*PST, "run", images["content"], images["style"], "--out", str(tmp_path / f"o{i}.png"),
                               "--store", str(store), *SETS, "--json"], env=_env(tmp_path / f"home{i}"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    results = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1][-500:] for r in results]
    outputs = [np.asarray(Image.open(tmp_path / f"o{i}.png")) for i in range(4)]
    for other in outputs[1:]:
        np.testing.assert_array_equal(outputs[0], other)
    entries = list(ArtifactStore(str(store)).iter_entries())
    assert len(entries) == len({(s, k) for s, k, _ in entries}) and all(c for _, _, c in entries)
    stages = json.loads(results[0][0].strip().splitlines()[-1])["stages"]
    assert len(entries) == len({(s["stage"], s["key"]) for s in stages})
    assert maintenance.verify(ArtifactStore(str(store))) == []


def test_same_inputs_give_bit_identical_masks_and_outputs(images, tmp_path, prefect_server):
    from flows.pipeline import partitioned_style_transfer
    from pst_core.config.overrides import build_config

    runs = []
    for name in ("a", "b"):
        runs.append(partitioned_style_transfer(images["content"], images["style"], config=build_config(sets=FAST),
                                               store=str(tmp_path / name)))
    assert [s["key"] for s in runs[0]["stages"]] == [s["key"] for s in runs[1]["stages"]]
    a, b = ArtifactStore(str(tmp_path / "a")), ArtifactStore(str(tmp_path / "b"))
    for s in runs[0]["stages"]:
        ea, eb = a.open(s["stage"], s["key"]), b.open(s["stage"], s["key"])
        for name in ea.names():
            np.testing.assert_array_equal(ea.array(name), eb.array(name), err_msg=f"{s['stage']}/{name}")


def _rows_written(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def test_dataset_killed_at_random_moments_resumes_with_nothing_computed_twice(tmp_path, prefect_server):
    """SIGKILL a dataset run (with its whole process group) at random moments while rows finish, resume it
    each time: every run keeps the rows it finished, the last one ends with every row ok, and across all
    the runs no stage was computed twice."""
    rng = np.random.default_rng(3)
    rows = []
    for i in range(8):  # 32 rows: the last kill (after 14) leaves more than two batches of tiny rows to go
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"c{i}.png")
        rows += [{"content": f"c{i}.png", "style": f"s{j}.png"} for j in range(4)]
    for j in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"s{j}.png")
    pd.DataFrame(rows).to_csv(tmp_path / "pairs.csv", index=False)
    results = tmp_path / "out" / "results.csv"
    argv = [*PST, "dataset", str(tmp_path / "pairs.csv"), "--out-dir", str(tmp_path / "out"), "--store",
            str(tmp_path / "store"), *SETS, "--set", "fuse_segmentation.k=1", "--concurrency", "1", "--json"]
    env = _env(tmp_path / "home")
    moments = random.Random(5)
    for attempt in range(5):
        # Each run is killed after it has finished a row of its own: a run killed while it still starts
        # up (the earlier runs having written enough rows already) would leave no run record to count.
        wanted = max(2 + 3 * attempt, _rows_written(results) + 1)
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.time() + 240
        while _rows_written(results) < wanted and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(moments.uniform(0, 0.5))
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kept = pd.read_csv(results)  # the rows it finished, each with its output
        assert len(kept) >= 2 + 3 * attempt and (kept.status == "ok").all()
        assert all(os.path.exists(output) for output in kept.output)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (pd.read_csv(results).status == "ok").sum() == len(rows)
    store = ArtifactStore(str(tmp_path / "store"))
    runs = [run for run in store.runs() if run["flow"] == "pst-dataset"]
    assert [run["status"] for run in runs] == ["running"] * 5 + ["ok"]  # the killed ones never finished
    recorded = [list(store.run_rows(run["run_id"])) for run in runs]
    assert len(recorded[-1]) == len(rows)
    computed = [(s["stage"], s["key"]) for rows_of_run in recorded for row in rows_of_run for s in row["stages"]
                if s["status"] == "computed"]
    assert computed and len(computed) == len(set(computed))
    assert maintenance.verify(store) == []
