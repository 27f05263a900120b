"""Inspection on a real run: exported pictures, the HTML report in headless Chromium, verify and gc."""

import json
import os
import shutil
import subprocess

import pytest
from PIL import Image

from conftest import FAST, OUTPUT, chromium
from flows.cli import main
from pst_core.store import maintenance
from pst_core.inspect.export import export_run, label_count
from pst_core.store.artifact_store import ArtifactStore

pytestmark = pytest.mark.usefixtures("prefect_server")
SETS = sum((["--set", s] for s in FAST), [])


@pytest.fixture(scope="module")
def runs(images, tmp_path_factory):
    folder = tmp_path_factory.mktemp("inspect")
    store = str(folder / "store")
    ids = []
    for extra in ([], ["--set", "style_transfer.iterations=4", "--set", "style_transfer.snapshot_every=2"]):
        out = subprocess_free_run(images, store, folder / f"out{len(ids)}.png", extra)
        ids.append(out["run_id"])
    return store, ids, folder


def subprocess_free_run(images, store, out, extra):
    import io
    from contextlib import redirect_stdout

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        assert main(["run", images["content"], images["style"], "--out", str(out), "--store", store, "--json",
                     *SETS, *extra]) == 0
    return json.loads(buffer.getvalue().strip().splitlines()[-1])


def test_inspect_lists_runs_and_shows_the_stage_graph(runs, capsys):
    store, ids, _ = runs
    capsys.readouterr()
    assert main(["inspect", "--store", store]) == 0
    listing = capsys.readouterr().out
    assert all(run_id[:8] in listing for run_id in ids)
    assert main(["inspect", ids[1][:8], "--store", store]) == 0
    graph = capsys.readouterr().out
    assert "cluster_layer[relu2_1]" in graph and "cached" in graph and "computed" in graph
    assert '"iterations": 4' in graph


def test_export_writes_every_stage_with_right_sizes_and_labels(runs, tmp_path):
    store, ids, _ = runs
    artifact_store = ArtifactStore(store)
    files = export_run(artifact_store, artifact_store.run(ids[1]), str(tmp_path))
    stages = {f["stage"] for f in files}
    assert stages == {"load", "color_normalize", "features", "cluster_layer", "backprop_clusters",
                      "fuse_segmentation", "style_transfer", "unnormalize"} - {"features"}
    for f in files:
        picture = Image.open(tmp_path / f["file"])
        if f["side"] == "content" or f["stage"] in ("style_transfer", "unnormalize"):
            assert picture.size == (40, 32), f["file"]
    fused = [f for f in files if f["stage"] == "fuse_segmentation" and f["kind"] == "labels"]
    assert len(fused) == 2 and all(label_count(tmp_path / f["file"]) == 2 for f in fused)
    layers = {(f["side"], f["layer"]) for f in files if f["stage"] == "cluster_layer" and f["kind"] == "labels"}
    assert layers == {(side, layer) for side in ("content", "style") for layer in ("rgb", "relu1_1", "relu2_1",
                                                                                     "relu3_1")}
    assert [f for f in files if f["kind"] == "snapshot"], "snapshots were asked for"
    assert [f for f in files if f["kind"] == "mapping"]


def test_html_report_renders_in_headless_chromium(runs, tmp_path):
    store, ids, folder = runs
    report = tmp_path / "report.html"
    assert main(["report", ids[0], "--diff", ids[1], "--out", str(report), "--store", store]) == 0
    page = report.read_text()
    assert page.count("<img") > 20 and 'class="differs"' in page and 'src="http' not in page
    browser = chromium(tmp_path / "profile")
    out_dir = str(OUTPUT)
    os.makedirs(out_dir, exist_ok=True)
    check = tmp_path / "check.html"
    # The report, plus a script that counts images that failed to decode once the page has loaded.
    check.write_text(page.replace("</body>", """<script>window.addEventListener('load', () => {
      const imgs = [...document.images]; const broken = imgs.filter(i => !i.complete || i.naturalWidth === 0);
      document.title = 'IMAGES ' + imgs.length + ' BROKEN ' + broken.length; });</script></body>"""))
    dom = subprocess.run([*browser, "--virtual-time-budget=5000", "--dump-dom", check.as_uri()],
                         capture_output=True, text=True, timeout=120)
    title = dom.stdout.split("<title>")[1].split("</title>")[0]
    images_total, broken = int(title.split()[1]), int(title.split()[3])
    assert images_total == page.count("<img") and broken == 0
    # The page logs nothing itself, so any console line is an error (Chromium logs them all as CONSOLE).
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    subprocess.run([*browser, "--window-size=1400,2000", f"--screenshot={out_dir}/report.png",
                    report.as_uri()], capture_output=True, timeout=120)
    assert os.path.getsize(os.path.join(out_dir, "report.png")) > 10_000


def test_verify_flags_truncated_chunks_and_gc_keeps_referenced(runs, tmp_path):
    store_path, ids, _ = runs
    copy = tmp_path / "store"
    shutil.copytree(store_path, copy)
    store = ArtifactStore(str(copy))
    assert maintenance.verify(store) == []
    # truncate one chunk of the first run's fused regions
    entry = next(s for s in store.run(ids[0])["stages"] if s["stage"] == "fuse_segmentation")
    chunk_dir = copy / "entries" / "fuse_segmentation" / entry["key"] / "regions" / "c"
    chunk = next(p for p in chunk_dir.rglob("*") if p.is_file())
    chunk.write_bytes(chunk.read_bytes()[: max(1, chunk.stat().st_size // 3)])
    problems = maintenance.verify(store)
    assert [p.path for p in problems] == [store.entry_path("fuse_segmentation", entry["key"])]
    assert main(["store", "verify", "--store", str(copy)]) == 1

    kept = store.run(ids[1])
    result = maintenance.collect_garbage(store, keep_runs=1)
    assert result["kept_runs"] == [ids[1]]
    for s in kept["stages"]:
        assert store.has(s["stage"], s["key"]), f"gc removed {s['stage']} of a kept run"
    assert result["removed_entries"], "the older run's own style_transfer entries should go"
    assert [r["run_id"] for r in store.runs()] == [ids[1]]
