"""The CLI: bad input is one line on stderr, exit code 2, and the store is left as it was."""

import json
import os

import pytest
from PIL import Image

from conftest import FAST
from flows.cli import main


def _snapshot(folder):
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            files[path] = os.stat(path).st_mtime_ns
    return files


SETS = sum((["--set", s] for s in FAST), [])


@pytest.fixture(scope="module")
def populated_store(images, tmp_path_factory, prefect_server):
    """A store holding one complete run, which bad input must leave exactly as it is."""
    folder = tmp_path_factory.mktemp("cli")
    store = folder / "store"
    assert main(["run", images["content"], images["style"], "--out", str(folder / "o.png"), "--store", str(store),
                 *SETS]) == 0
    return store


def test_run_json_output(images, populated_store, tmp_path, capsys):
    capsys.readouterr()
    assert main(["run", images["content"], images["style"], "--out", str(tmp_path / "o.png"), "--store",
                 str(populated_store), "--json", *SETS]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["output"] == str(tmp_path / "o.png") and os.path.exists(result["output"])
    assert {s["status"] for s in result["stages"]} == {"cached"}
    assert set(result["stages"][0]) >= {"stage", "image", "key", "status", "seconds"}


def test_segment_writes_labels_at_input_resolution(images, populated_store, tmp_path):
    out = tmp_path / "labels.png"
    assert main(["segment", images["content"], "--regions", "2", "--out", str(out), "--soft-out",
                 str(tmp_path / "soft.npy"), "--store", str(populated_store), *SETS]) == 0
    import numpy as np

    labels = np.asarray(Image.open(out))
    assert labels.shape == (32, 40) and set(np.unique(labels)) == {0, 1}
    soft = np.load(tmp_path / "soft.npy")
    assert soft.shape == (2, 32, 40) and np.allclose(soft.sum(0), 1, atol=1e-5)


def test_run_draws_a_progress_bar_then_the_stage_table(images, populated_store, tmp_path, capsys):
    capsys.readouterr()
    # two scales, 20x16 then 40x32 px: 5 iterations, then 10
    transfer = ["style_transfer.iterations=10", "style_transfer.scale_iterations=5", "style_transfer.min_size=20"]
    assert main(["run", images["content"], images["style"], "--out", str(tmp_path / "o.png"), "--store",
                 str(populated_store), *SETS, *sum((["--set", s] for s in transfer), [])]) == 0
    out, err = capsys.readouterr()
    bar = err.replace("\r", "\n").strip().splitlines()  # tqdm redraws its line with carriage returns
    assert bar and all(line.startswith("style_transfer:") for line in bar), err
    assert any("5/15" in line and "20x16 px" in line for line in bar), err
    assert "15/15" in bar[-1] and "40x32 px" in bar[-1] and "loss " in bar[-1] and "style " in bar[-1]
    assert "style_transfer              pair" in out and "computed" in out and "finished in" in out


def test_progress_bar_says_when_the_transfer_runs_in_tiles(images, populated_store, tmp_path, capsys):
    capsys.readouterr()
    assert main(["run", images["content"], images["style"], "--out", str(tmp_path / "o.png"), "--store",
                 str(populated_store), *SETS, "--set", "style_transfer.iterations=3",
                 "--set", "style_transfer.tile_size=16"]) == 0
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "3/3" in last and "40x32 px in 16 px tiles, L-BFGS history 3" in last, last


def test_json_run_is_quiet_on_stderr(images, populated_store, tmp_path, capsys):
    capsys.readouterr()
    assert main(["run", images["content"], images["style"], "--out", str(tmp_path / "o.png"), "--store",
                 str(populated_store), *SETS, "--set", "style_transfer.iterations=9", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and {s["status"] for s in json.loads(out)["stages"]} == {"cached", "computed"}


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    Image.new("RGB", (64, 64), "blue").save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    return tmp_path


@pytest.mark.parametrize("args, message", [
    (["run", "{d}/missing.png", "{style}"], "missing.png': no such file"),
    (["run", "{d}/text.png", "{style}"], "not an image"),
    (["run", "{content}", "{d}/truncated.png"], "truncated.png"),
    (["run", "{content}", "{style}", "--set", "cluster_layer.kk=2"], "did you mean 'k'"),
    (["run", "{content}", "{style}", "--set", "cluster_layer.k=0"], "cluster_layer.k"),
    (["run", "{content}", "{style}", "--set", "fuse_segmentation.k=0"], "fuse_segmentation.k"),
    (["segment", "{content}", "--regions", "0"], "--regions"),
    (["run", "{content}", "{style}", "--set", "style_transfer.memory_budget=0.5"], "style_transfer.memory_budget"),
    (["run", "{content}", "{style}", "--set", "style_transfer.tile_size=100"], "multiple of 16"),
    (["run", "{content}", "{style}", "--out", "{d}/out"], "no file extension"),
    (["run", "{content}", "{style}", "--out", "{d}/out.txt"], "extension '.txt'"),
    (["segment", "{content}", "--out", "{d}/labels.jpg"], ".png"),
    (["demo", "--out", "{d}/demo"], "no file extension"),
    (["run", "{content}", "{style}", "--out", "{d}/ok.png/o.png"], "is a file, not a folder"),
])
def test_bad_input_exits_2_with_one_line_and_store_unchanged(args, message, bad_files, images, populated_store,
                                                             tmp_path, capsys):
    store = populated_store
    before = _snapshot(store)
    argv = [a.format(d=bad_files, content=images["content"], style=images["style"]) for a in args]
    # the test's own fast settings and output first, so the bad value given last is the one that counts
    argv = [argv[0], *SETS, "--out", str(tmp_path / "bad.png"), "--store", str(store), *argv[1:]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert _snapshot(store) == before
