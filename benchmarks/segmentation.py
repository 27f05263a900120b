"""Segmentation benchmark: our max-entropy segmentation against three baselines, on three sets.

- photos: a labelled folder (default ../shared/data/seg_dev, foreground masks). Score per image and
  K: the best IoU between the foreground and any union of the predicted regions (hard labels), so a
  method is not penalised for splitting the foreground.
- texture: mosaics built in code (pst_core.synthetic.texture_set): 2 to 4 regions sharing mean
  colour and contrast, told apart by structure alone. colour: the same layouts, one texture
  throughout, a different mean colour per region. Scored at K=2 and K=K_true: the true regions are
  merged into at most K groups in the way that fits best (at K=2 a 4-region mosaic may be split
  along any of its boundaries), and the score is the mean over groups of the group's best-union IoU.
- demo: the demo's style image (pst_core/demo/style.png), whose two halves are the truth, at K=2.
Baselines: k-means on RGB, k-means on CIE Lab (both k-means++ seeded, Lloyd to convergence), and a
fixed centred ellipse (semi-axes a third of the width and height) that looks at no pixel.

    PYTHONPATH=. python benchmarks/segmentation.py --size 256 --set features.weights=random
        [--sets photos,texture,colour,demo] [--k 2,3,4] [--ablation] [--per-image] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pst_core.color.spaces import srgb_to_lab  # noqa: E402
from pst_core.config.overrides import build_config  # noqa: E402
from pst_core.config.presets import PRESETS  # noqa: E402
from pst_core.segmentation.cluster_layer import cluster_layers  # noqa: E402
from pst_core.segmentation.segment import fuse_regions, layer_indicators  # noqa: E402
from pst_core.synthetic import colour_set, texture_set  # noqa: E402
from pst_core.features import load_vgg  # noqa: E402

# What each part contributes: each variant is the preset plus these --set assignments.
ABLATIONS: dict[str, list[str]] = {
    "colour only": ["cluster_layer.layers=[\"rgb\"]"],
    "layers, no colour": ["cluster_layer.layers=relu1_1,relu2_1,relu3_1,relu4_1,relu5_1",
                          "fuse_segmentation.layer_weights={}"],
    "backprop upsample": ["backprop_clusters.method=upsample"],
    "backprop vjp": ["backprop_clusters.method=vjp"],
    "fuse: no raw colour": ["fuse_segmentation.colour_weight=0"],
    "fuse: no raw colour, clustered colour x3": ["fuse_segmentation.colour_weight=0",
                                                 "fuse_segmentation.layer_weights={\"rgb\": 3}"],
    "raw activations (window 0)": ["cluster_layer.window=0"],
    "fuse: no confidence weights": ["fuse_segmentation.auto_weights=false"],
    "fuse: coords weight 1": ["fuse_segmentation.coords_weight=1"],
    "fuse: no smoothness": ["fuse_segmentation.smoothness=0"],
    "fuse: no coordinates": ["fuse_segmentation.coords_weight=0"],
    "200 iterations": ["cluster_layer.iterations=200", "fuse_segmentation.iterations=200"],
    "balance 0.5": ["cluster_layer.balance_weight=0.5", "fuse_segmentation.balance_weight=0.5"],
    "balance 1.0": ["cluster_layer.balance_weight=1.0", "fuse_segmentation.balance_weight=1.0"],
    "balance 2.0": ["cluster_layer.balance_weight=2.0", "fuse_segmentation.balance_weight=2.0"],
}


def load_pair(image_path: Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    image = Image.open(image_path).convert("RGB")
    mask = Image.open(image_path.with_name(image_path.name[:-4] + ".mask.png")).convert("L")
    scale = size / max(image.size)
    shape = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = image.resize(shape, Image.BICUBIC)
    mask = mask.resize(shape, Image.NEAREST)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1).contiguous()
    return pixels, torch.from_numpy(np.asarray(mask) > 127)


def best_union_iou(labels: torch.Tensor, truth: torch.Tensor, k: int) -> float:
    onehot = torch.stack([labels == j for j in range(k)]).reshape(k, -1)
    truth = truth.reshape(-1)
    best = 0.0
    for r in range(1, k + 1):
        for subset in itertools.combinations(range(k), r):
            pred = onehot[list(subset)].any(0)
            union = int((pred | truth).sum())
            best = max(best, int((pred & truth).sum()) / union if union else 0.0)
    return best


def set_partitions(n: int, groups: int):
    """Every way to merge labels 0..n-1 into exactly ``groups`` non-empty groups (lists of labels)."""
    for assign in itertools.product(range(groups), repeat=n):
        # canonical: group g first appears before group g+1, so each partition comes once
        if sorted(set(assign)) == list(range(groups)) and all(
                assign.index(g) < assign.index(g + 1) for g in range(groups - 1)):
            yield [[label for label in range(n) if assign[label] == g] for g in range(groups)]


def mosaic_iou(labels: torch.Tensor, truth: torch.Tensor, k: int) -> float:
    """Mean best-union IoU of the true regions, merged into at most k groups in the best way."""
    n = int(truth.max()) + 1
    cache: dict[tuple, float] = {}

    def group_iou(group: list[int]) -> float:
        if tuple(group) not in cache:
            cache[tuple(group)] = best_union_iou(labels, torch.isin(truth, torch.tensor(group)), k)
        return cache[tuple(group)]

    return max(float(np.mean([group_iou(g) for g in part])) for part in set_partitions(n, min(k, n)))


def kmeans(points: torch.Tensor, k: int, seed: int = 0, steps: int = 100) -> torch.Tensor:
    """Labels of the rows of points (N, D): k-means++ seeding, Lloyd until no label changes."""
    gen = torch.Generator().manual_seed(seed)
    centres = points[torch.randint(len(points), (1,), generator=gen)]
    while len(centres) < k:
        d2 = torch.cdist(points, centres).pow(2).min(1).values
        pick = torch.multinomial(d2 / d2.sum(), 1, generator=gen) if d2.sum() > 0 else torch.tensor([0])
        centres = torch.cat([centres, points[pick]])
    labels = None
    for _ in range(steps):
        new = torch.cdist(points, centres).argmin(1)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        centres = torch.stack([points[labels == j].mean(0) if (labels == j).any() else centres[j]
                               for j in range(k)])
    return labels


def baseline_labels(name: str, image: torch.Tensor, k: int) -> torch.Tensor:
    h, w = image.shape[1:]
    if name == "kmeans-rgb":
        return kmeans(image.reshape(3, -1).T, k).view(h, w)
    if name == "kmeans-lab":
        return kmeans(srgb_to_lab(image).reshape(3, -1).T, k).view(h, w)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return ((ys / (2 / 3)) ** 2 + (xs / (2 / 3)) ** 2 <= 1).long()  # ellipse: 2 regions whatever k


class Case:
    """One image of a set: its pixels, its truth, the Ks it is scored at and how."""

    def __init__(self, name: str, image: torch.Tensor, truth: torch.Tensor, ks: list[int], mosaic: bool):
        self.name, self.image, self.truth, self.ks, self.mosaic = name, image, truth, ks, mosaic

    def score(self, labels: torch.Tensor, k: int) -> float:
        if self.mosaic:
            return mosaic_iou(labels, self.truth, k)
        return best_union_iou(labels, self.truth, max(k, 2))


def photo_cases(data: str, size: int, ks: list[int], limit: int) -> list[Case]:
    paths = sorted(p for p in Path(data).glob("*.png") if not p.name.endswith(".mask.png"))
    paths = paths[:limit] if limit else paths
    return [Case(p.stem, *load_pair(p, size), ks, False) for p in paths]


def mosaic_cases(which: str, size: int, count: int) -> list[Case]:
    build = texture_set if which == "texture" else colour_set
    cases = []
    for i, (image, labels) in enumerate(build(size, count)):
        n = int(labels.max()) + 1
        cases.append(Case(f"{which}{i:02d}", torch.from_numpy(image), torch.from_numpy(labels), [2, n], True))
    return cases


def demo_cases(size: int) -> list[Case]:
    """The demo's style image (pst_core/demo/style.png): waves on top, a dot lattice below, K=2."""
    image = Image.open(ROOT / "pst_core" / "demo" / "style.png").convert("RGB").resize((size, size), Image.BICUBIC)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1).contiguous()
    truth = (torch.arange(size) >= size // 2).long()[:, None].expand(size, size)
    return [Case("style.png", pixels, truth, [2], True)]


def run_ours(config, cases: list[Case], vgg) -> tuple[list[list[float]], list[float]]:
    """Scores (per case, per its ks) and seconds per image (all layers + the fusion at its largest K)."""
    scores, seconds = [], []
    for case in cases:
        start = time.perf_counter()
        indicators = layer_indicators(case.image, vgg, config.features.layers, config.cluster_layer,
                                      config.backprop_clusters)
        shared = time.perf_counter() - start
        row = []
        for k in case.ks:
            start = time.perf_counter()
            regions = fuse_regions(indicators, config.fuse_segmentation.model_copy(update={"k": k}), case.image)
            if k == max(case.ks):
                seconds.append(shared + time.perf_counter() - start)
            row.append(case.score(regions.argmax(0), k))
        scores.append(row)
    return scores, seconds


def run_baseline(name: str, cases: list[Case]) -> tuple[list[list[float]], list[float]]:
    scores, seconds = [], []
    for case in cases:
        row = []
        for k in case.ks:
            start = time.perf_counter()
            labels = baseline_labels(name, case.image, k)
            if k == max(case.ks):
                seconds.append(time.perf_counter() - start)
            row.append(case.score(labels, k))
        scores.append(row)
    return scores, seconds


def print_table(title: str, columns: list[str], results: dict[str, dict], cases: list[Case], per_image: bool) -> None:
    print(f"\n{title}: {len(cases)} images")
    if per_image:
        for i, case in enumerate(cases):
            row = "  ".join(f"{name.strip()[:14]:>14} " + " ".join(f"{v:.2f}" for v in r["iou"][i])
                            for name, r in results.items() if not name.startswith("  "))
            print(f"{case.name:>12}  {row}")
    print(f"{'method':<28}" + "".join(f"  {c:<6}" for c in columns) + "  s/image")
    for name, r in results.items():
        means = np.mean(np.asarray(r["iou"]), 0)
        print(f"{name:<28}" + "".join(f"  {m:.3f} " for m in means) + f"  {np.mean(r['seconds']):.2f}")
    if len(cases) < 2:
        return
    ours, lab = next(iter(results.values())), results["kmeans-lab"]
    diff = np.asarray(ours["iou"])[:, -1] - np.asarray(lab["iou"])[:, -1]
    print(f"{columns[-1]}, ours against k-means Lab: {int((diff > 1e-3).sum())} wins, {int((diff < -1e-3).sum())} "
          f"losses, mean {diff.mean():+.3f} (standard error {diff.std(ddof=1) / np.sqrt(len(diff)):.3f})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "seg_dev"))
    ap.add_argument("--sets", default="photos,texture,colour,demo", help="comma-separated: photos, texture, colour, demo")
    ap.add_argument("--size", type=int, default=256, help="longer side in pixels")
    ap.add_argument("--k", default="2,3,4", help="comma-separated numbers of final regions (photos)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N photos (0: all)")
    ap.add_argument("--count", type=int, default=24, help="mosaics in the texture and colour sets")
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ap.add_argument("--set", dest="assignments", action="append", default=[], help="stage.param=value (repeatable)")
    ap.add_argument("--ablation", action="store_true", help="also run the preset with each part changed")
    ap.add_argument("--per-image", action="store_true", help="print every image's scores")
    ap.add_argument("--json", help="write all scores to this file")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    ks = [int(k) for k in args.k.split(",")]
    preset = lambda: copy.deepcopy(PRESETS[args.preset])  # noqa: E731  (build_config mutates nested dicts)
    base = build_config(preset(), args.assignments)
    vgg = load_vgg(base.features.weights, base.features.seed)
    print(f"{args.size} px; preset {args.preset} {args.assignments}; "
          f"layers {cluster_layers(base.cluster_layer, base.features.layers)}; weights {base.features.weights}")
    variants = {f"ours ({args.preset})": base}
    if args.ablation:
        variants.update({f"  {name}": build_config(preset(), [*args.assignments, *sets])
                         for name, sets in ABLATIONS.items()})

    everything: dict[str, dict] = {}
    for which in args.sets.split(","):
        if which == "photos":
            cases, columns = photo_cases(args.data, args.size, ks, args.limit), [f"K={k}" for k in ks]
        elif which == "demo":
            cases, columns = demo_cases(args.size), ["K=2"]
        elif which in ("texture", "colour"):
            cases, columns = mosaic_cases(which, args.size, args.count), ["K=2", "K=Kt"]
        else:
            raise SystemExit(f"--sets: unknown set {which!r} (photos, texture, colour, demo)")
        results: dict[str, dict] = {}
        for name, config in variants.items():
            scores, seconds = run_ours(config, cases, vgg)
            results[name] = {"iou": scores, "seconds": seconds}
        for name in ("kmeans-rgb", "kmeans-lab", "ellipse"):
            scores, seconds = run_baseline(name, cases)
            results[name] = {"iou": scores, "seconds": seconds}
        for r in results.values():
            r["names"] = [case.name for case in cases]
        print_table(which, columns, results, cases, args.per_image)
        everything[which] = results
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
