"""Partitioned style transfer: region fidelity, speed and peak memory.

    PYTHONPATH=. python benchmarks/style.py                       # everything, default sizes
    PYTHONPATH=. python benchmarks/style.py --only speed --speed-sizes 256 --speed-iterations 4
    PYTHONPATH=. python benchmarks/style.py --device cuda --speed-sizes 256 512 1024   # on a GPU
    PYTHONPATH=. python benchmarks/style.py --only memory --rss-sizes 512 1024 2048 4096   # memory model

Uses the seeded random VGG19 (weights='random'): pretrained weights cannot be downloaded here.
CPU timings on a shared machine are noisy, so the variants are interleaved in rounds and compared
as ratios of medians taken in the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from pst_core.config.schema import StyleTransferParams
from pst_core.errors import ConfigError
from pst_core.inspect.quality import region_style_distances
from pst_core.style.style_transfer import transfer
from pst_core.synthetic import disk_scene, two_texture_style
from pst_core.features import load_vgg, resolve_device

FIDELITY_LAYERS = ["relu1_1", "relu2_1", "relu3_1"]


def style_distances(vgg, output, content_masks, style, style_masks, layers=FIDELITY_LAYERS):
    return region_style_distances(vgg, output, content_masks, style, style_masks, layers)


def fidelity(vgg, size: int, iterations: int, device: str) -> None:
    content, cm = disk_scene(size)
    style, sm = two_texture_style(size)
    ones_c, ones_s = np.ones((1, size, size), np.float32), np.ones((1, size, size), np.float32)
    print(f"\n== region fidelity: {size} px, L-BFGS {iterations} iterations; content 0=disk 1=ground, "
          f"style 0=red stripes 1=blue dots; relative Gram distance over {', '.join(FIDELITY_LAYERS)}")
    runs = {"partitioned {0: 0, 1: 1}": (cm, sm, {0: 0, 1: 1}), "unpartitioned K=1": (ones_c, ones_s, "overlap")}
    for name, (cmk, smk, mapping) in runs.items():
        start = time.perf_counter()
        out = transfer(content, style, cmk, smk, vgg, StyleTransferParams(iterations=iterations, mapping=mapping),
                       device=device)
        d = style_distances(load_vgg("random", seed=0, device="cpu"), out.image, cm, style, sm)
        print(f"{name} ({time.perf_counter() - start:.1f} s)")
        for r, label in enumerate(("disk  ", "ground")):
            own = d[r, r]
            print(f"  {label}: to stripes {d[r, 0]:.3f}  to dots {d[r, 1]:.3f}  "
                  f"other/own = {d[r, 1 - r] / own:.2f}")
    auto = transfer(content, style, cm, sm, vgg, StyleTransferParams(iterations=0, mapping="auto"),
                    device=device).mapping
    print(f"mapping=auto on this pair: {auto}")


def _soft_quadrants(size: int, width: float) -> np.ndarray:
    """Four regions (quadrants) with sigmoid edges `width` pixels wide; soft everywhere if width is large."""
    t = np.arange(size) - size / 2 + 0.5
    left = 1 / (1 + np.exp(t / width))
    top, lft = left[:, None], left[None, :]
    masks = np.stack([top * lft, top * (1 - lft), (1 - top) * lft, (1 - top) * (1 - lft)])
    return (masks / masks.sum(0)).astype(np.float32)


def _now() -> tuple[float, float]:
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()  # time finished work, not queued kernels
    return time.perf_counter(), time.process_time()


def _bare_step(vgg, x):
    x.grad = None
    vgg(x, ["relu5_1"])["relu5_1"].sum().backward()


def speed(vgg, sizes: list[int], iterations: int, rounds: int, device: str) -> None:
    defaults = StyleTransferParams()
    print(f"\n== speed: seconds per iteration at one scale (median of {rounds} rounds x {iterations} iterations, "
          f"L-BFGS, {defaults.loss} loss, {', '.join(defaults.style_layers)} + {', '.join(defaults.content_layers)})")
    for size in sizes:
        content, _ = disk_scene(size)
        style, _ = two_texture_style(size)
        x = torch.tensor(content, device=device)[None].requires_grad_(True)
        variants = {
            "K=1": (np.ones((1, size, size), np.float32), {0: 0}, True),
            "K=4 sharp edges": (_soft_quadrants(size, 1.0), {i: i for i in range(4)}, True),
            "K=4 soft everywhere": (_soft_quadrants(size, size / 8), {i: i for i in range(4)}, True),
            "K=4 sharp, unconfined": (_soft_quadrants(size, 1.0), {i: i for i in range(4)}, False),
        }
        # Wall time, and this process's CPU time (less disturbed by other jobs on the same cores).
        times: dict[str, list[tuple[float, float]]] = {"bare VGG19 fwd+bwd": []} | {k: [] for k in variants}
        for _ in range(rounds):
            _bare_step(vgg, x)  # warm-up outside the timing
            start = _now()
            for _ in range(iterations):
                _bare_step(vgg, x)
            end = _now()
            times["bare VGG19 fwd+bwd"].append(((end[0] - start[0]) / iterations, (end[1] - start[1]) / iterations))
            for name, (masks, mapping, confine) in variants.items():
                stamps: list[tuple[float, float]] = []
                # One scale, so that every timed iteration is at this size.
                params = StyleTransferParams(iterations=iterations + 1, mapping=mapping, min_size=0,
                                             confine_regions=confine)
                transfer(content, style, masks, masks, vgg, params, device=device,
                         progress=lambda _: stamps.append(_now()))
                # The first iteration (setup, warm-up) is left out.
                times[name].append(tuple((stamps[-1][i] - stamps[0][i]) / iterations for i in range(2)))
        print(f"{size} px:                   wall s/iter  cpu s/iter   (wall per round)")
        med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
        for name, (wall, cpu) in med.items():
            print(f"  {name:22s} {wall:9.3f} {cpu:11.3f}   ({', '.join(f'{w:.3f}' for w, _ in times[name])})")
        for i, clock in enumerate(("wall", "cpu ")):
            bare, k1 = med["bare VGG19 fwd+bwd"][i], med["K=1"][i]
            print(f"  {clock}: K=1 / bare = {k1 / bare:.3f} (target <= 1.25)   "
                  f"K=4 sharp / K=1 = {med['K=4 sharp edges'][i] / k1:.3f} (target <= 1.10)   "
                  f"K=4 soft / K=1 = {med['K=4 soft everywhere'][i] / k1:.3f}   "
                  f"K=4 sharp unconfined / K=1 = {med['K=4 sharp, unconfined'][i] / k1:.3f}")


def _rss(field: str = "VmRSS") -> float:
    """This process's resident memory now (VmRSS) or its peak since the last reset (VmHWM), bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:  # resets VmHWM to the current VmRSS (Linux)
        refs.write("5")


def _rss_child(size: int, iterations: int, device: str, budget: float, tile: int | None, confine: bool) -> None:
    """One transfer at ``size`` px (one scale, two hand-drawn-like regions each side), its memory
    measured part by part, and what the model says of the same run."""
    from pst_core.style import memory
    from pst_core.store.artifact_store import ArrayOut, ArtifactStore

    vgg = load_vgg("random", seed=0, device=device)
    base = _rss()
    content, cm = disk_scene(size)
    style, sm = two_texture_style(size)
    inputs = _rss() - base
    params = StyleTransferParams(iterations=iterations, min_size=0, mapping={0: 0, 1: 1}, memory_budget=budget,
                                 tile_size=tile, confine_regions=confine)
    stamps: list[tuple[float, float, float]] = []  # per iteration: time, resident, peak during it

    def progress(_):
        stamps.append((time.perf_counter(), _rss(), _rss("VmHWM")))
        _reset_peak()

    _reset_peak()
    start = time.perf_counter()
    result = transfer(content, style, cm, sm, vgg, params, device=device, progress=progress)
    plan = result.plans[-1]
    resident = [r for _, r, _ in stamps]
    # Store writes: the stage's output written to a store (zarr, zstd chunks), peak over the resident.
    with tempfile.TemporaryDirectory() as folder:
        before = _rss()
        _reset_peak()
        ArtifactStore(folder).write("style_transfer", "0" * 64, {"image": ArrayOut(result.image, ("c", "y", "x"))},
                                    {"stage": "style_transfer"})
        store_write = _rss("VmHWM") - before
    model = memory.parts(memory.Shapes((size, size), (size, size), 2, 2), (size, size), (size, size), True, params,
                         plan.tile, len(stamps))
    full = memory.plan_scale(memory.Shapes((size, size), (size, size), 2, 2), (size, size), (size, size),
                             StyleTransferParams().fine_iterations if size > StyleTransferParams().fine_size
                             else StyleTransferParams().iterations, True, params)
    print(json.dumps({
        "size": size, "tile": plan.tile, "iterations": len(stamps), "seconds": time.perf_counter() - start,
        "s_per_iteration": (stamps[-1][0] - stamps[0][0]) / max(1, len(stamps) - 1),
        "peak": max(p for _, _, p in stamps), "base": base, "inputs": inputs,
        "setup": resident[0] - base - inputs,  # masks, content targets, the image and its gradient, 1 step
        "optimizer_per_iteration": (resident[-1] - resident[0]) / max(1, len(stamps) - 1),
        "activations": max(p - r for _, r, p in stamps[1:] or stamps),
        "store_write": store_write, "model": model,
        "planned": {"tile": full.tile, "history": full.history, "iterations": full.iterations, "parts": full.parts},
        "gpu_peak": torch.cuda.max_memory_allocated() if device.startswith("cuda") else None}))


def memory(sizes: list[int], iterations: int, device: str, budget: float, tile: int | None, confine: bool) -> None:
    gib = 2 ** 30
    print(f"\n== peak RSS and seconds per iteration: two regions each side, one scale, L-BFGS, {iterations} "
          f"iterations, memory_budget={budget:g} GiB{f', tile_size={tile}' if tile else ''}, "
          f"confine_regions={str(confine).lower()}, fresh process per size")
    for size in sizes:
        command = [sys.executable, __file__, "--rss-child", str(size), "--rss-iterations", str(iterations),
                   "--threads", str(torch.get_num_threads()), "--device", device, "--rss-budget", str(budget)]
        command += ["--rss-tile", str(tile)] if tile else []
        command += [] if confine else ["--rss-unconfined"]
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode:
            print(f"  {size} px: failed ({out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        model, planned = row["model"], row["planned"]
        how = "whole image" if row["tile"] is None else f"{row['tile']} px tiles"
        gpu = f", peak GPU memory {row['gpu_peak'] / gib:.2f} GiB" if row["gpu_peak"] is not None else ""
        print(f"  {size} px ({how}): peak RSS {row['peak'] / gib:.2f} GiB{gpu} (model {sum(model.values()) / gib:.2f}), "
              f"{row['s_per_iteration']:.1f} s/iteration ({row['seconds']:.0f} s in all)")
        measured = {"base": row["base"], "inputs": row["inputs"], "setup (masks, targets, image, 1 step)": row["setup"],
                    "optimiser state per iteration": row["optimizer_per_iteration"],
                    "activations (pass over a tile)": row["activations"], "store write": row["store_write"]}
        print("      measured: " + ", ".join(f"{k} {v / gib:.2f}" for k, v in measured.items()) + " GiB")
        print("      model:    " + ", ".join(f"{k} {v / gib:.2f}" for k, v in model.items()) + " GiB")
        print(f"      default plan at this size: {planned['iterations']} iterations, "
              f"{'whole image' if planned['tile'] is None else str(planned['tile']) + ' px tiles'}, L-BFGS history "
              f"{planned['history']}: model peak {sum(planned['parts'].values()) / gib:.2f} GiB ("
              + ", ".join(f"{k} {100 * v / sum(planned['parts'].values()):.0f}%" for k, v in planned["parts"].items())
              + ")")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["fidelity", "speed", "memory"])
    parser.add_argument("--fidelity-size", type=int, default=64)
    parser.add_argument("--fidelity-iterations", type=int, default=150)
    parser.add_argument("--speed-sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--speed-iterations", type=int, default=4)
    parser.add_argument("--speed-rounds", type=int, default=3)
    parser.add_argument("--rss-sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--rss-iterations", type=int, default=2)
    parser.add_argument("--rss-budget", type=float, default=StyleTransferParams().memory_budget,
                        help="style_transfer.memory_budget for the memory runs (GiB; large: never tiled)")
    parser.add_argument("--rss-tile", type=int, help="style_transfer.tile_size for the memory runs")
    parser.add_argument("--rss-unconfined", action="store_true",
                        help="style_transfer.confine_regions=false for the memory runs (its cost against the default)")
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    # One thread by default: on cores shared with other jobs, every parallel region of a 2-thread run
    # waits for a descheduled thread, which measured here 4x slower than one thread (2 cores, busy).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except ConfigError as exc:
        parser.error(str(exc))
    if args.rss_child:
        _rss_child(args.rss_child, args.rss_iterations, device, args.rss_budget, args.rss_tile, not args.rss_unconfined)
        return
    vgg = load_vgg("random", seed=0, device=device)
    where = torch.cuda.get_device_name(device) if device.startswith("cuda") else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {device} ({where}), VGG19 weights=random (seed 0)")
    if args.only in (None, "fidelity"):
        fidelity(vgg, args.fidelity_size, args.fidelity_iterations, device)
    if args.only in (None, "speed"):
        speed(vgg, args.speed_sizes, args.speed_iterations, args.speed_rounds, device)
    if args.only in (None, "memory"):
        memory(args.rss_sizes, args.rss_iterations, device, args.rss_budget, args.rss_tile, not args.rss_unconfined)


if __name__ == "__main__":
    main()
