"""Dataset figures: throughput by concurrency, bookkeeping and memory at scale, and resuming after SIGKILL.

    .venv/bin/python benchmarks/dataset.py [--skip throughput scale resume] [--json out.json]
        throughput: [--contents 4] [--styles 2] [--size 128] [--iterations 50] [--concurrency 1 2 4]
        scale:      [--scale 1000 5000 10000]
        resume:     [--resume-pairs 1000] [--kills 5]

throughput: pairs per minute at 128 px for 1, 2 and 4 concurrent tasks (threads), and the speed-up of
a second (fully cached) run over the first; a fresh store per concurrency level.

scale: manifests of tiny images (32 px, N/10 contents x 10 styles; no segmentation, one transfer
iteration through VGG19's first layer, so that bookkeeping is what is measured), each run in a process of its own with
one task at a time: the run's wall time minus its stages' compute time (summed from the run's record)
per pair, on the first run and on a fully cached rerun, and the flow process's peak RSS. The first
run's figure is also given without the stages' writes of their entries to the store (also in the record).
The wall time starts when the flow is called (imports done) and includes starting Prefect's temporary
server; the new Prefect database of the benchmark's own PREFECT_HOME is made first and timed apart
(a user pays it once, not per run).

resume: the same kind of manifest, run from the command line and killed with SIGKILL (the process
group: the run and its temporary Prefect server) at random moments (when a random number of rows has
finished), resumed each time; then whether every row is ok and whether any stage key was computed
by more than one run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

# Bookkeeping is what is measured: no segmentation, one transfer iteration through VGG19's first layer only.
TINY = ["features.weights=random", "load.size=32", "fuse_segmentation.k=1", "style_transfer.iterations=1",
        "style_transfer.style_layers=relu1_1", "style_transfer.content_layers=relu1_1",
        "style_transfer.mapping_layer=relu1_1"]


def make_dataset(folder: Path, contents: int, styles: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    rows = []
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(contents):
        disk = (yy - 0.4 - 0.05 * (i % 7)) ** 2 + (xx - 0.5) ** 2 < 0.06 + 0.01 * (i % 5)
        img = np.where(disk[..., None], rng.random(3), rng.random(3)) + 0.05 * rng.standard_normal((size, size, 3))
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / f"c{i}.png")
    for j in range(styles):
        img = (np.sin(xx * (20 + 10 * j) + yy * 7 * j) > 0)[..., None] * rng.random(3) + 0.1
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / f"s{j}.png")
        rows += [{"content": f"c{i}.png", "style": f"s{j}.png"} for i in range(contents)]
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def throughput(args, tmp: Path) -> list[dict]:
    from flows.dataset import dataset
    from flows.runners import make_task_runner
    from pst_core.config.overrides import build_config

    config = build_config(sets=["features.weights=random", f"load.size={args.size}",
                                f"style_transfer.iterations={args.iterations}"])
    manifest = make_dataset(tmp / "throughput", args.contents, args.styles, args.size)
    pairs = args.contents * args.styles
    results = []
    for concurrency in args.concurrency:
        store, out = tmp / f"store{concurrency}", tmp / f"out{concurrency}"
        flow = dataset.with_options(task_runner=make_task_runner("threads", concurrency))
        timings = []
        for _ in range(2):
            start = time.perf_counter()
            result = flow(manifest=str(manifest), out_dir=str(out), config=config, store=str(store))
            timings.append(time.perf_counter() - start)
            assert result["ok"] == pairs
        row = {"concurrency": concurrency, "pairs": pairs, "first_s": timings[0], "second_s": timings[1],
               "pairs_per_min": 60 * pairs / timings[0], "second_run_speedup": timings[0] / timings[1]}
        results.append(row)
        print(f"concurrency {concurrency}: {pairs} pairs in {timings[0]:.1f} s = {row['pairs_per_min']:.1f} "
              f"pairs/min; cached rerun {timings[1]:.1f} s ({row['second_run_speedup']:.1f}x faster)", flush=True)
    return results


def scale_worker(manifest: str, store: str, out: str) -> None:
    """One dataset run in this process, one task at a time; prints wall, compute and peak RSS as JSON."""
    from flows.dataset import dataset
    from flows.runners import make_task_runner
    from pst_core.config.overrides import build_config
    from pst_core.store.artifact_store import ArtifactStore

    config = build_config(sets=TINY)
    start = time.perf_counter()
    result = dataset.with_options(task_runner=make_task_runner("threads", 1))(
        manifest=manifest, out_dir=out, config=config, store=store, window=16)
    wall = time.perf_counter() - start
    stages = [s for row in ArtifactStore(store).run_rows(result["run_id"]) for s in row["stages"]]
    compute = sum(s["seconds"] for s in stages if s["status"] == "computed")
    stored = sum(s.get("stored", 0.0) for s in stages if s["status"] == "computed")
    print(json.dumps({"wall": wall, "compute": compute, "stored": stored, "ok": result["ok"],
                      "failed": result["failed"],
                      "computed": sum(s["status"] == "computed" for s in stages),
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _worker(*argv: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def new_database() -> float:
    """Create (migrate) this run's new Prefect database before anything is timed: a cost paid once
    per PREFECT_HOME, not by each dataset run; printed apart."""
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "prefect"), "server", "database", "upgrade", "-y"],
                   check=True, capture_output=True)
    seconds = time.perf_counter() - start
    print(f"a new Prefect database (once per PREFECT_HOME, not timed below): {seconds:.1f} s", flush=True)
    return seconds


def scale(sizes: list[int], tmp: Path) -> list[dict]:
    rows = []
    for pairs in sizes:
        folder = tmp / f"scale{pairs}"
        manifest = make_dataset(folder, pairs // 10, 10, 32)
        store, out = str(folder / "store"), str(folder / "out")
        first = _worker(str(manifest), store, out)
        again = _worker(str(manifest), store, out)
        assert first["ok"] == again["ok"] == pairs and again["computed"] == 0
        row = {"pairs": pairs, "first_wall": first["wall"], "first_compute": first["compute"],
               "first_stored": first["stored"],
               "first_overhead_ms": 1000 * (first["wall"] - first["compute"]) / pairs,
               "first_overhead_besides_writes_ms": 1000 * (first["wall"] - first["compute"] - first["stored"]) / pairs,
               "cached_wall": again["wall"], "cached_ms": 1000 * again["wall"] / pairs,
               "first_peak_rss_mib": first["peak_rss_mib"], "cached_peak_rss_mib": again["peak_rss_mib"]}
        rows.append(row)
        print(f"{pairs:>6} pairs: first run {first['wall']:.1f} s, stages {first['compute']:.1f} s -> "
              f"{row['first_overhead_ms']:.1f} ms bookkeeping per pair ({row['first_overhead_besides_writes_ms']:.1f} "
              f"besides the stages' {first['stored']:.1f} s of store writes); cached rerun {again['wall']:.1f} s "
              f"({row['cached_ms']:.1f} ms per pair); peak RSS {first['peak_rss_mib']:.0f} / "
              f"{again['peak_rss_mib']:.0f} MiB", flush=True)
    return rows


def _rows_written(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def resume(pairs: int, kills: int, tmp: Path) -> dict:
    from pst_core.store.artifact_store import ArtifactStore

    folder = tmp / "resume"
    manifest = make_dataset(folder, pairs // 10, 10, 32)
    results, store = folder / "out" / "results.csv", str(folder / "store")
    argv = [sys.executable, "-m", "flows.cli", "dataset", str(manifest), "--out-dir", str(folder / "out"),
            "--store", store, *sum((["--set", s] for s in TINY), []), "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(folder / "home")}
    moments = sorted(random.Random(0).sample(range(1, pairs), kills))  # rows finished when each kill comes
    start = time.perf_counter()
    for moment in moments:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        while _rows_written(results) < moment and proc.poll() is None:
            time.sleep(0.02)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        print(f"killed at {_rows_written(results)} rows", flush=True)
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    table = pd.read_csv(results)
    artifact_store = ArtifactStore(store)
    runs = [run for run in artifact_store.runs() if run["flow"] == "pst-dataset"]
    computed = [(s["stage"], s["key"]) for run in runs for row in artifact_store.run_rows(run["run_id"])
                for s in row["stages"] if s["status"] == "computed"]
    twice = len(computed) - len(set(computed))
    row = {"pairs": pairs, "kills": kills, "kill_moments_rows": moments, "returncode": done.returncode,
           "rows_ok": int((table.status == "ok").sum()), "runs": len(runs), "computed": len(computed),
           "computed_twice": twice, "wall_s": wall}
    print(f"{pairs} pairs, killed {kills} times at {moments} finished rows and resumed: exit {done.returncode}, "
          f"{row['rows_ok']} rows ok, {len(computed)} stages computed over {len(runs)} runs, {twice} of them "
          f"twice ({wall:.0f} s in all)", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--contents", type=int, default=4)
    parser.add_argument("--styles", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--scale", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--resume-pairs", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "scale", "resume"])
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.worker:
        return scale_worker(*args.worker)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PREFECT_HOME"] = f"{tmp}/home"
        if "throughput" not in args.skip:
            print("== throughput by concurrency ==", flush=True)
            results["throughput"] = throughput(args, Path(tmp))
        if "scale" not in args.skip:
            print("== tiny-image manifests at scale (one task at a time) ==", flush=True)
            results["new_database_seconds"] = new_database()
            results["scale"] = scale(args.scale, Path(tmp))
        if "resume" not in args.skip:
            print("== SIGKILL and resume ==", flush=True)
            results["resume"] = resume(args.resume_pairs, args.kills, Path(tmp))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
