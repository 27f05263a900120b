"""Dataset throughput: pairs per minute at 128 px for 1, 2 and 4 concurrent tasks, and the speed-up of a
second (fully cached) run over the first.

    .venv/bin/python benchmarks/dataset.py [--pairs 8] [--size 128] [--iterations 50] [--json out.json]

Uses a synthetic dataset (contents x styles) in a temporary folder, random VGG19 weights, and a fresh
store per concurrency level, so every first run computes everything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402


def make_dataset(folder: Path, contents: int, styles: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    rows = []
    for i in range(contents):
        disk = (yy - 0.4 - 0.05 * i) ** 2 + (xx - 0.5) ** 2 < 0.06 + 0.01 * i
        img = np.where(disk[..., None], rng.random(3), rng.random(3)) + 0.05 * rng.standard_normal((size, size, 3))
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / f"c{i}.png")
    for j in range(styles):
        img = (np.sin(xx * (20 + 10 * j) + yy * 7 * j) > 0)[..., None] * rng.random(3) + 0.1
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / f"s{j}.png")
        rows += [{"content": f"c{i}.png", "style": f"s{j}.png"} for i in range(contents)]
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contents", type=int, default=4)
    parser.add_argument("--styles", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--json")
    args = parser.parse_args()

    from flows.dataset import dataset
    from flows.runners import make_task_runner
    from pst_core.config import build_config

    config = build_config(sets=["features.weights=random", f"load.size={args.size}",
                                f"style_transfer.iterations={args.iterations}"])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_dataset(Path(tmp), args.contents, args.styles, args.size)
        pairs = args.contents * args.styles
        for concurrency in args.concurrency:
            store, out = Path(tmp) / f"store{concurrency}", Path(tmp) / f"out{concurrency}"
            flow = dataset.with_options(task_runner=make_task_runner("threads", concurrency))
            timings = []
            for _ in range(2):
                start = time.perf_counter()
                result = flow(manifest=str(manifest), out_dir=str(out), config=config, store=str(store))
                timings.append(time.perf_counter() - start)
                assert all(r["status"] == "ok" for r in result["results"])
            row = {"concurrency": concurrency, "pairs": pairs, "first_s": timings[0], "second_s": timings[1],
                   "pairs_per_min": 60 * pairs / timings[0], "second_run_speedup": timings[0] / timings[1]}
            results.append(row)
            print(f"concurrency {concurrency}: {pairs} pairs in {timings[0]:.1f} s = {row['pairs_per_min']:.1f} "
                  f"pairs/min; cached rerun {timings[1]:.1f} s ({row['second_run_speedup']:.1f}x faster)",
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
