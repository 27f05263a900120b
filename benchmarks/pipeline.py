"""Pipeline figures: per-stage seconds and peak RSS by size, orchestration cost, cache reruns, store speed,
and the command line's own cost against bare start-up.

    .venv/bin/python benchmarks/pipeline.py [--sizes 128 256 512] [--iterations 20]
        [--overhead-size 256] [--overhead-iterations 200] [--cli-runs 3] [--noise 0]
        [--skip stages overhead store cli] [--json benchmarks/results/pipeline.json]

Every measured run happens in a fresh subprocess (so peak RSS is that run's own), on the bundled
example images, with random VGG19 weights. Prints tables and writes JSON.

``cli``: `pst run` of a 64 px pair as a user types it, against `python -c "import torch, zarr, prefect"`
(bare start-up), both measured here in the same run: fully cached, then with style_transfer.iterations
changed (wall time minus the stages it computed); without a Prefect server (Prefect starts a temporary
one when there is work to run) and with one running (PREFECT_API_URL). ``--noise N`` then makes N
consecutive CLI runs, cached and computing, and counts those whose stderr shows a traceback or an
ERROR line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CONTENT, STYLE = str(ROOT / "pst_core" / "demo" / "content.png"), str(ROOT / "pst_core" / "demo" / "style.png")


def worker(args) -> None:
    """One flow run in this process; prints a JSON line with wall time, stages and peak RSS."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    from flows.pipeline import partitioned_style_transfer
    from pst_core.config.overrides import build_config

    config = build_config(sets=["features.weights=random", f"load.size={args.size}",
                                f"style_transfer.iterations={args.iterations}", *args.set])
    configs = [config] * args.repeat
    if args.change:  # then one more run, in this warm process, with one parameter changed
        configs.append(build_config(base=config.model_dump(mode="json"), sets=[args.change]))
    runs = []
    for run_config in configs:
        start = time.perf_counter()
        result = partitioned_style_transfer(CONTENT, STYLE, config=run_config, store=args.store)
        runs.append({"wall": time.perf_counter() - start, "stages": result["stages"]})
    print(json.dumps({"runs": runs, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_worker(store: str, size: int, iterations: int, env: dict, sets=(), repeat: int = 1,
               change: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--store", store, "--size", str(size), "--iterations",
           str(iterations), "--repeat", str(repeat), *sum((["--set", s] for s in sets), [])]
    cmd += ["--change", change] if change else []
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compute_seconds(stages: list[dict]) -> float:
    return sum(s["seconds"] for s in stages if s["status"] == "computed")


def per_stage(sizes, iterations, env, tmp) -> list[dict]:
    rows = []
    for size in sizes:
        out = run_worker(f"{tmp}/stages{size}", size, iterations, env)
        totals: dict[str, float] = {}
        for s in out["runs"][0]["stages"]:
            totals[s["stage"]] = totals.get(s["stage"], 0.0) + s["seconds"]
        rows.append({"size": size, "stages": totals, "peak_rss_mib": out["peak_rss_mib"],
                     "wall": out["runs"][0]["wall"]})
        print(f"{size:>5} px  " + "  ".join(f"{k}={v:.2f}" for k, v in totals.items())
              + f"  wall={out['runs'][0]['wall']:.1f}s  peak RSS={out['peak_rss_mib']:.0f} MiB", flush=True)
    return rows


def start_server(env: dict, home: Path) -> tuple[subprocess.Popen, dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server_env = {**env, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=server_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    import httpx

    for _ in range(120):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return proc, server_env
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit("prefect server did not start")


def overhead(size, iterations, env, tmp) -> list[dict]:
    """A full run's wall time against the sum of its stages' compute time, then the cached reruns."""
    rows = []
    server, server_env = start_server(env, Path(tmp) / "server-home")
    try:
        for mode, mode_env in (("server", server_env), ("ephemeral", env)):
            store = f"{tmp}/overhead-{mode}"
            # full run, no-change rerun, then a style_transfer change: one process, as a warm worker
            first = run_worker(store, size, iterations, mode_env, repeat=2, change="style_transfer.content_weight=1.5")
            full, rerun, transfer = first["runs"]
            stage_s = compute_seconds(full["stages"])
            transfer_s = compute_seconds(transfer["stages"])
            row = {"mode": mode, "wall": full["wall"], "compute": stage_s,
                   "overhead_pct": 100 * (full["wall"] - stage_s) / stage_s,
                   "nochange_rerun": rerun["wall"], "changed_rerun": transfer["wall"],
                   "changed_compute": transfer_s,
                   "changed_overhead_pct": 100 * (transfer["wall"] - transfer_s) / transfer_s}
            rows.append(row)
            print(f"{mode:>9}: run {row['wall']:.1f}s vs stages {stage_s:.1f}s (+{row['overhead_pct']:.1f}%); "
                  f"no-change rerun {row['nochange_rerun']:.2f}s; style_transfer change rerun "
                  f"{row['changed_rerun']:.1f}s vs its stages {transfer_s:.1f}s (+{row['changed_overhead_pct']:.1f}%)",
                  flush=True)
    finally:
        os.killpg(server.pid, 15)
        server.wait()
    return rows


def store_speed(tmp) -> list[dict]:
    """Write and read MB/s of a features entry at 512 px under a few chunk/compression choices."""
    import numpy as np
    import zarr
    from zarr.storage import LocalStore

    from pst_core.store import artifact_store as store_mod
    from pst_core.load import read_image, resize
    from pst_core.features import load_vgg
    import torch

    image = resize(read_image(CONTENT), (512, 512))
    with torch.no_grad():
        acts = load_vgg("random")(torch.from_numpy(image)[None], ["relu1_1", "relu2_1", "relu3_1", "relu4_1",
                                                                   "relu5_1"])
    arrays = {k: v[0].numpy().astype(np.float16) for k, v in acts.items()}
    total_mb = sum(a.nbytes for a in arrays.values()) / 1e6
    rows = []
    for label, chunk_bytes, compressors in (("64 MiB chunks, zstd (default)", store_mod._CHUNK_BYTES, "auto"),
                                            ("8 MiB chunks, zstd", 8 << 20, "auto"),
                                            ("1 MiB chunks, zstd", 1 << 20, "auto"),
                                            ("8 MiB chunks, uncompressed", 8 << 20, None),
                                            ):
        path = f"{tmp}/speed-{len(rows)}"
        start = time.perf_counter()
        group = zarr.open_group(store=LocalStore(path), mode="w")
        for name, data in arrays.items():
            rows_per = max(1, min(data.shape[0], chunk_bytes // (data[0].nbytes)))
            group.create_array(name, data=data, chunks=(rows_per, *data.shape[1:]), compressors=compressors)
        write = time.perf_counter() - start
        start = time.perf_counter()
        group = zarr.open_group(store=LocalStore(path, read_only=True), mode="r")
        for name in arrays:
            np.asarray(group[name][...])
        read = time.perf_counter() - start
        disk = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6
        rows.append({"layout": label, "mb": total_mb, "disk_mb": disk, "write_mb_s": total_mb / write,
                     "read_mb_s": total_mb / read})
        print(f"{label:<30} {total_mb:6.1f} MB -> {disk:6.1f} MB on disk; write {total_mb / write:7.1f} MB/s, "
              f"read {total_mb / read:7.1f} MB/s", flush=True)
    return rows


CLI_SETS = ["features.weights=random", "load.size=64", "style_transfer.iterations=20"]
NOISE = ("Traceback", "ERROR", "CancelledError")


def _timed(argv: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, proc


def _pst_run(store: str, env: dict, tmp: str, sets=()) -> tuple[float, dict, str]:
    argv = [sys.executable, "-m", "flows.cli", "run", CONTENT, STYLE, "--out", f"{tmp}/cli.png", "--store", store,
            *sum((["--set", s] for s in [*CLI_SETS, *sets]), []), "--json"]
    wall, proc = _timed(argv, {**env, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return wall, json.loads(proc.stdout), proc.stderr


def cli(env: dict, tmp: str, runs: int, noise: int) -> dict:
    """`pst run` from the command line against bare start-up; see the module's docstring."""
    from statistics import median

    bare = median(_timed([sys.executable, "-c", "import torch, zarr, prefect"], env)[0] for _ in range(runs))
    print(f"bare start-up (import torch, zarr, prefect): {bare:.2f} s (median of {runs})", flush=True)
    server, server_env = start_server(env, Path(tmp) / "cli-server-home")
    rows, noisy, iterations = [], 0, 20
    try:
        for mode, mode_env in (("no server", env), ("server", server_env)):
            store = f"{tmp}/cli-{mode.replace(' ', '-')}"
            _pst_run(store, mode_env, tmp)  # fills the store
            cached = [_pst_run(store, mode_env, tmp)[0] for _ in range(runs)]
            changed = []
            for _ in range(runs):
                iterations += 1
                wall, result, _ = _pst_run(store, mode_env, tmp, [f"style_transfer.iterations={iterations}"])
                changed.append((wall, compute_seconds(result["stages"])))
            row = {"mode": mode, "bare": bare, "cached": median(cached), "cached_x_bare": median(cached) / bare,
                   "changed_wall": median(w for w, _ in changed), "changed_stages": median(c for _, c in changed),
                   "changed_overhead": median(w - c for w, c in changed)}
            row["changed_overhead_x_bare"] = row["changed_overhead"] / bare
            rows.append(row)
            print(f"{mode:>9}: cached run {row['cached']:.2f} s = {row['cached_x_bare']:.2f}x bare; "
                  f"style_transfer.iterations changed: {row['changed_wall']:.2f} s, of which stages "
                  f"{row['changed_stages']:.2f} s, the rest {row['changed_overhead']:.2f} s = "
                  f"{row['changed_overhead_x_bare']:.2f}x bare (medians of {runs})", flush=True)
        store = f"{tmp}/cli-noise"
        for i in range(noise):  # alternately computing (a new iteration count) and fully cached
            iterations += i % 2
            _, _, stderr = _pst_run(store, env, tmp, [f"style_transfer.iterations={iterations}"])
            noisy += any(word in stderr for word in NOISE)
        if noise:
            print(f"{noise} consecutive CLI runs (half computing, half cached, no server configured): "
                  f"{noisy} printed a traceback or an ERROR line", flush=True)
    finally:
        os.killpg(server.pid, 15)
        server.wait()
    return {"runs": rows, "noise_runs": noise, "noisy": noisy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--change", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--overhead-size", type=int, default=256)
    parser.add_argument("--overhead-iterations", type=int, default=200)
    parser.add_argument("--cli-runs", type=int, default=3, help="repeats of each CLI timing (medians)")
    parser.add_argument("--noise", type=int, default=0, help="consecutive CLI runs to check for noise")
    parser.add_argument("--skip", nargs="*", default=[], choices=["stages", "overhead", "store", "cli"])
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "CRITICAL"}
    env.pop("PREFECT_API_URL", None)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        env["PREFECT_HOME"] = f"{tmp}/home"
        if "stages" not in args.skip:
            print("== seconds per stage (summed over layers and sides), peak RSS ==")
            results["stages"] = per_stage(args.sizes, args.iterations, env, tmp)
        if "overhead" not in args.skip:
            print(f"== orchestration and cache at {args.overhead_size} px, {args.overhead_iterations} iterations ==")
            results["overhead"] = overhead(args.overhead_size, args.overhead_iterations, env, tmp)
        if "store" not in args.skip:
            print("== store: a 512 px features entry ==")
            results["store"] = store_speed(tmp)
        if "cli" not in args.skip:
            print("== the command line: pst run of a 64 px pair against bare start-up ==")
            results["cli"] = cli(env, tmp, args.cli_runs, args.noise)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
