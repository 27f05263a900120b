"""Dataset runs on real components: a manifest, a real store, Prefect thread and Dask runners, S3."""

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import FAST
from pst_core.config.overrides import build_config
from pst_core.store.artifact_store import ArtifactStore

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """4 contents x 3 styles = 12 rows; row 5 names a missing file, row 10 an impossible K."""
    folder = tmp_path_factory.mktemp("dataset")
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:32, 0:32]
    for i in range(4):
        disk = (yy - 10 - 3 * i) ** 2 + (xx - 16) ** 2 < 60 + 10 * i
        img = np.where(disk[..., None], rng.random(3), rng.random(3)) + 0.04 * rng.standard_normal((32, 32, 3))
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / f"c{i}.png")
    for j in range(3):
        stripes = (np.sin(xx * (0.6 + 0.4 * j) + yy * j) > 0)[..., None] * rng.random(3)
        Image.fromarray((np.clip(stripes + 0.1, 0, 1) * 255).astype(np.uint8)).save(folder / f"s{j}.png")
    rows = [{"content": f"c{i}.png", "style": f"s{j}.png"} for i in range(4) for j in range(3)]
    rows[5]["content"] = "missing.png"
    table = pd.DataFrame(rows)
    table["cluster_layer.k"] = None
    table.loc[10, "cluster_layer.k"] = 0
    path = folder / "manifest.csv"
    table.to_csv(path, index=False)
    return str(path)


def _run(manifest, store, out_dir, runner=None, **options):
    from flows.dataset import dataset

    flow = dataset.with_options(task_runner=runner) if runner else dataset
    return flow(manifest=manifest, out_dir=str(out_dir), config=build_config(sets=FAST), store=str(store), **options)


def _stages(store, result) -> list[dict]:
    """Every row's stages, as the run recorded them beside its record in the store."""
    return [s for row in ArtifactStore(str(store)).run_rows(result["run_id"]) for s in row["stages"]]


@pytest.fixture(scope="module")
def first(manifest, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ds-run")
    return folder, _run(manifest, folder / "store", folder / "out")


def test_bad_rows_are_recorded_and_the_rest_finish(first):
    folder, result = first
    table = pd.read_parquet(folder / "out" / "results.parquet")
    assert list(table.columns)[:9] == ["row", "content", "style", "status", "output", "computed", "cached",
                                       "seconds", "error"]
    assert (table.status == "ok").sum() == 10
    failed = table[table.status == "failed"].set_index("row")
    assert sorted(failed.index) == [5, 10]
    assert "missing.png" in failed.loc[5, "error"] and "no such file" in failed.loc[5, "error"]
    assert "cluster_layer.k" in failed.loc[10, "error"]
    for output in table[table.status == "ok"].output:
        assert Image.open(output).size == (40, 40)  # load.size=40: the working size
    assert pd.read_csv(folder / "out" / "results.csv").shape[0] == 12


def test_each_style_is_segmented_once(first):
    folder, result = first
    computed = [s for s in _stages(folder / "store", result) if s["status"] == "computed"]
    style_fuse = [s for s in computed if s["stage"] == "fuse_segmentation" and s["side"] == "style"]
    assert len(style_fuse) == 3
    keys = [(s["stage"], s["key"]) for s in computed]
    assert len(keys) == len(set(keys)), "some stage was computed twice"


def test_rerun_computes_nothing_then_only_a_deleted_output(first, manifest):
    folder, result = first
    outputs = {path: os.stat(path).st_mtime_ns for path in pd.read_csv(result["results"]).output.dropna()}
    again = _run(manifest, folder / "store", folder / "out")
    assert again["ok"] == 10 and all(s["status"] == "cached" for s in _stages(folder / "store", again))
    # each output already shows its row's result (the PNG names its store entry): not written again
    assert {path: os.stat(path).st_mtime_ns for path in outputs} == outputs
    store = ArtifactStore(str(folder / "store"))
    victim = next(s for s in _stages(folder / "store", result) if s["stage"] == "unnormalize")
    store.remove("unnormalize", victim["key"])
    third = _run(manifest, folder / "store", folder / "out")
    computed = [(s["stage"], s["key"]) for s in _stages(folder / "store", third) if s["status"] == "computed"]
    assert computed == [("unnormalize", victim["key"])]


def test_dask_local_cluster_gives_identical_outputs(first, manifest, tmp_path):
    from flows.runners import make_task_runner

    folder, _ = first
    result = _run(manifest, tmp_path / "store", tmp_path / "out", make_task_runner("dask", 2))
    table = pd.read_csv(result["results"])
    assert result["ok"] == 10 and (table.status == "ok").sum() == 10
    for row in table[table.status == "ok"].to_dict("records"):
        mine = np.asarray(Image.open(row["output"]))
        theirs = np.asarray(Image.open(folder / "out" / os.path.basename(row["output"])))
        np.testing.assert_array_equal(mine, theirs)


@pytest.fixture
def s3_endpoint(monkeypatch):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}.items():
        monkeypatch.setenv(name, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem().mkdir("pst-test")
    yield "s3://pst-test/store"
    server.stop()
    s3fs.S3FileSystem.clear_instance_cache()


def test_store_on_s3_gives_the_same_results(s3_endpoint, images, tmp_path):
    from flows.pipeline import partitioned_style_transfer

    config = build_config(sets=FAST)
    local = partitioned_style_transfer(images["content"], images["style"], config=config,
                                       store=str(tmp_path / "local"), out=str(tmp_path / "local.png"))
    remote = partitioned_style_transfer(images["content"], images["style"], config=config, store=s3_endpoint,
                                        out=str(tmp_path / "s3.png"))
    assert [s["key"] for s in remote["stages"]] == [s["key"] for s in local["stages"]]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "local.png")),
                                  np.asarray(Image.open(tmp_path / "s3.png")))
    again = partitioned_style_transfer(images["content"], images["style"], config=config, store=s3_endpoint)
    assert {s["status"] for s in again["stages"]} == {"cached"}
    store = ArtifactStore(s3_endpoint)
    assert store.runs() and all(complete for _, _, complete in store.iter_entries())


@pytest.fixture
def dask_scheduler(tmp_path):
    """A real Dask scheduler and one worker, each its own process, as on a cluster."""
    import json
    import signal
    import subprocess
    import sys
    import time

    import torch

    bin_dir = os.path.dirname(sys.executable)
    scheduler_file = tmp_path / "scheduler.json"
    # The worker computes with as many torch threads as this process, so outputs match bit for bit
    # (Dask's nanny sets OMP_NUM_THREADS=1 only where it is unset).
    threads = str(torch.get_num_threads())
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    common = dict(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    processes = [subprocess.Popen([f"{bin_dir}/dask", "scheduler", "--scheduler-file", str(scheduler_file),
                                   "--host", "127.0.0.1", "--port", "0", "--no-dashboard"], **common)]
    deadline = time.time() + 60
    while not scheduler_file.exists() and time.time() < deadline:
        time.sleep(0.2)
    processes.append(subprocess.Popen([f"{bin_dir}/dask", "worker", "--scheduler-file", str(scheduler_file),
                                       "--nthreads", "1", "--no-dashboard"], **common))
    try:
        yield json.loads(scheduler_file.read_text())["address"]
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_dask_address_runs_on_an_existing_scheduler(first, manifest, dask_scheduler, tmp_path, capsys):
    from flows.cli import main

    folder, _ = first
    rows = pd.read_csv(manifest).iloc[:3]  # one content, three styles
    small = os.path.join(os.path.dirname(manifest), "first-three.csv")
    rows.to_csv(small, index=False)
    sets = sum((["--set", s] for s in FAST), [])
    assert main(["dataset", small, "--out-dir", str(tmp_path / "out"), "--store", str(tmp_path / "store"),
                 "--task-runner", "dask", "--dask-address", dask_scheduler, *sets]) == 0
    assert "3 ok, 0 failed" in capsys.readouterr().out
    from distributed import Client

    with Client(dask_scheduler, timeout=30) as client:  # the stages ran there, as Dask tasks
        ran = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    assert ran == ["stage_list", "stage_rows"]  # each image's stages as one task; tiny rows' pair stages as one
    table = pd.read_parquet(tmp_path / "out" / "results.parquet")
    for output in table.output:
        mine = np.asarray(Image.open(output))
        theirs = np.asarray(Image.open(folder / "out" / os.path.basename(output)))
        np.testing.assert_array_equal(mine, theirs)
