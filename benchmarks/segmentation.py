"""Segmentation benchmark: our max-entropy segmentation against three baselines on a labelled folder.

Score per image and K: the best IoU between the ground-truth foreground and any union of the
predicted regions (hard labels), so a method is not penalised for splitting the foreground.
Baselines: k-means on RGB, k-means on CIE Lab (both k-means++ seeded, Lloyd to convergence), and a
fixed centred ellipse (semi-axes a third of the width and height) that looks at no pixel.

    PYTHONPATH=. python benchmarks/segmentation.py --size 256 --k 2,3,4 [--ablation] [--json out.json]
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

from pst_core.backprop import colour_features  # noqa: E402
from pst_core.config import build_config  # noqa: E402
from pst_core.presets import PRESETS  # noqa: E402
from pst_core.segmentation import cluster_layers, fuse_regions, layer_indicators  # noqa: E402
from pst_core.vgg import load_vgg  # noqa: E402

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
        return kmeans(colour_features(image).reshape(3, -1).T, k).view(h, w)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return ((ys / (2 / 3)) ** 2 + (xs / (2 / 3)) ** 2 <= 1).long()  # ellipse: 2 regions whatever k


def run_ours(config, pairs, ks, vgg) -> tuple[dict[int, list[float]], list[float]]:
    scores: dict[int, list[float]] = {k: [] for k in ks}
    seconds = []
    for image, truth in pairs:
        start = time.perf_counter()
        indicators = layer_indicators(image, vgg, config.features.layers, config.cluster_layer,
                                      config.backprop_clusters)
        shared = time.perf_counter() - start
        for k in ks:
            start = time.perf_counter()
            regions = fuse_regions(indicators, config.fuse_segmentation.model_copy(update={"k": k}), image)
            if k == max(ks):
                seconds.append(shared + time.perf_counter() - start)
            scores[k].append(best_union_iou(regions.argmax(0), truth, k))
    return scores, seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "seg_dev"))
    ap.add_argument("--size", type=int, default=256, help="longer side in pixels")
    ap.add_argument("--k", default="2,3,4", help="comma-separated numbers of final regions")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N images (0: all)")
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ap.add_argument("--set", dest="sets", action="append", default=[], help="stage.param=value (repeatable)")
    ap.add_argument("--ablation", action="store_true", help="also run the preset with each part changed")
    ap.add_argument("--per-image", action="store_true", help="print every image's scores")
    ap.add_argument("--json", help="write all scores to this file")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    ks = [int(k) for k in args.k.split(",")]
    paths = sorted(p for p in Path(args.data).glob("*.png") if not p.name.endswith(".mask.png"))
    paths = paths[: args.limit] if args.limit else paths
    pairs = [load_pair(p, args.size) for p in paths]
    preset = lambda: copy.deepcopy(PRESETS[args.preset])  # noqa: E731  (build_config mutates nested dicts)
    base = build_config(preset(), args.sets)
    vgg = load_vgg(base.features.weights, base.features.seed)
    print(f"{len(pairs)} images from {args.data} at {args.size} px; preset {args.preset} {args.sets}; "
          f"layers {cluster_layers(base.cluster_layer, base.features.layers)}; weights {base.features.weights}")

    results: dict[str, dict] = {}
    variants = {f"ours ({args.preset})": base}
    if args.ablation:
        variants.update({f"  {name}": build_config(preset(), [*args.sets, *sets])
                         for name, sets in ABLATIONS.items()})
    for name, config in variants.items():
        scores, seconds = run_ours(config, pairs, ks, vgg)
        results[name] = {"iou": scores, "seconds": seconds, "names": [p.stem for p in paths]}
    for name in ("kmeans-rgb", "kmeans-lab", "ellipse"):
        scores, seconds = {k: [] for k in ks}, []
        for image, truth in pairs:
            for k in ks:
                start = time.perf_counter()
                labels = baseline_labels(name, image, k)
                if k == max(ks):
                    seconds.append(time.perf_counter() - start)
                scores[k].append(best_union_iou(labels, truth, max(k, 2)))
        results[name] = {"iou": scores, "seconds": seconds, "names": [p.stem for p in paths]}

    if args.per_image:
        for i, path in enumerate(paths):
            row = "  ".join(f"{name.strip()[:14]:>14} " + " ".join(f"{r['iou'][k][i]:.2f}" for k in ks)
                            for name, r in results.items() if not name.startswith("  "))
            print(f"{path.stem:>12}  {row}")
    header = f"{'method':<28}" + "".join(f"  K={k:<4}" for k in ks) + "  s/image"
    print(header)
    for name, r in results.items():
        print(f"{name:<28}" + "".join(f"  {np.mean(r['iou'][k]):.3f} " for k in ks)
              + f"  {np.mean(r['seconds']):.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
