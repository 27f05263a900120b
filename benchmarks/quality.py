"""The stylised picture, judged without the network it was optimised against.

    PYTHONPATH=. python benchmarks/quality.py                          # 256 and 512 px, every case
    PYTHONPATH=. python benchmarks/quality.py --sizes 256 --cases disk-stripes-dots --json q.json
    PYTHONPATH=. python benchmarks/quality.py --set style_transfer.iterations=300 --label before
    PYTHONPATH=. python benchmarks/quality.py --sizes 2048 --cases disk-stripes-dots --no-k1 --scale-times

Every case is a content image with known regions (label masks, so only the transfer is judged) and
a style image of two textures, run twice with the same settings: partitioned (each content region
mapped to its style region) and K=1 (one region each side: plain transfer). The run is the
pipeline's own code (colour normalisation, transfer, exact inverse) minus the store. Measures
(pst_core/quality.py):

- structure: per content region, 1.0 = carries its style region's frequencies and orientations as
  distinctly as the style does, 0 = none of it; targets: >= 0.6 in every region, >= 0.3 above K=1;
  ceiling: the score of the style's own pixels cut to each content region's shape (a thin or small
  region cannot show a coarse texture's peaks even then; a reference for what the shape allows, not a
  strict bound); presence (in the JSON; printed with --parts): the two parts of the score, how much of
  the mapped style region's peaks the region has and how much of the other regions' (the content's
  own edges and shading show there), the output's beside the ideal composite's;
- noise: share of luminance energy above 0.35 cycles/pixel against the larger of the inputs'
  (target <= 1.5);
- fringe: the largest, over regions, of a region's fine detail in a band just outside its neighbours
  against its interior's, beside the ideal composite's (a halo of one region's style round another
  shows as more than the composite's; no target in #12, reported since confine_regions);
- palette: Lab sliced-Wasserstein distance of each output region to the palette asked for
  (unnormalize.palette: the content region's colours, or the style region's) and to the other one;
- gram: Gram distances measured with a VGG19 of another random seed (1) than the one optimised (0):
  the smallest ratio, over regions, of the distance to the other style region over the distance to
  the mapped one (above 1: each region is closer to its own style region);
- seconds, and time to quality: the wall time until a snapshot first meets the structure and noise
  targets (snapshots every --snapshot-every iterations), or '-' if none does.
- scales (in the JSON; printed with --scale-times): per scale, its size, whether it ran in tiles,
  the L-BFGS history, iterations and seconds (a scale's first iteration includes building its
  objective), so the cost of another schedule can be read off one run.
- trajectory (in the JSON; printed with --trajectory): structure and noise at every snapshot of the
  final scale, so what each of its iterations buys can be read off one run too.

Photos come from ../shared/data/seg_dev (research use only; never copied into the repository),
with their foreground masks as the content regions; they are at most 256 px, so 512 px upsamples.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pst_core.inspect import quality
from pst_core import synthetic
from pst_core.color.normalize import normalize_pair, restore_palette
from pst_core.config.overrides import build_config
from pst_core.load import read_image, resize, working_shape
from pst_core.style.style_transfer import transfer
from pst_core.features import load_vgg

SEG_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "seg_dev"
EXAMPLES = Path(__file__).resolve().parents[1] / "pst_core" / "demo"
STRUCTURE_TARGET, NOISE_TARGET, ABOVE_K1 = 0.6, 1.5, 0.3
GRAM_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]


@dataclass
class Case:
    name: str
    content: np.ndarray  # (3, H, W)
    content_masks: np.ndarray  # (K, H, W) one region per style region, content region r -> style region r
    style: np.ndarray
    style_masks: np.ndarray
    mapping: dict[int, int] = field(default_factory=lambda: {0: 0, 1: 1})


def _style(size: int, textures, colours, layout: str = "halves_h", seed: int = 0):
    """A style image of one texture per region; texture periods are given at 256 px and scale with size."""
    rng = np.random.default_rng(seed)
    labels = synthetic.layout(layout, (size, size), rng)
    patterns = [synthetic.texture(kind, (size, size), period * size / 256, angle, rng)
                for kind, period, angle in textures]
    return synthetic.mosaic(labels, patterns, colours, contrast=0.22), synthetic.label_masks(labels)


def _scene(size: int, layout: str, colours, seed: int = 0):
    """A content image: flat-ish regions with smooth shading (no texture of its own)."""
    rng = np.random.default_rng(seed)
    labels = synthetic.layout(layout, (size, size), rng)
    shading = np.linspace(-0.08, 0.08, size)[None, :] + np.linspace(-0.05, 0.05, size)[:, None]
    flat = [np.zeros((size, size))] * (labels.max() + 1)
    image = synthetic.mosaic(labels, flat, colours, contrast=0.0, edge=1.5) + shading[None]
    return np.clip(image, 0, 1).astype(np.float32), synthetic.label_masks(labels)


WARM, COOL = (0.85, 0.5, 0.2), (0.2, 0.45, 0.85)


def _synthetic_cases(size: int) -> dict[str, Case]:
    disk, disk_masks = _scene(size, "disk", [(0.75, 0.7, 0.55), (0.35, 0.45, 0.3)])
    halves, halves_masks = _scene(size, "halves", [(0.5, 0.6, 0.8), (0.45, 0.35, 0.25)])
    blobs, blobs_masks = _scene(size, "irregular2", [(0.7, 0.45, 0.45), (0.35, 0.5, 0.55)], seed=3)
    return {
        "disk-stripes-dots": Case("disk-stripes-dots", disk, disk_masks,
                                  *_style(size, [("stripes", 24, 0), ("dots", 20, 0)], [WARM, COOL])),
        "halves-checks-blobs": Case("halves-checks-blobs", halves, halves_masks,
                                    *_style(size, [("checks", 28, 0), ("blobs", 14, 0)], [COOL, WARM])),
        "blobs-orientation": Case("blobs-orientation", blobs, blobs_masks,
                                  *_style(size, [("stripes", 20, 0), ("stripes", 20, 90)], [WARM, COOL])),
        "disk-waves-dots": Case("disk-waves-dots", disk, disk_masks,
                                *_style(size, [("waves", 32, 0), ("dots", 16, 0)], [WARM, COOL])),
    }


def _photo_case(name: str, size: int) -> Case:
    pixels = read_image(SEG_DEV / f"{name}.png")
    content = resize(pixels, working_shape(pixels.shape[1], pixels.shape[2], size))
    mask = read_image(SEG_DEV / f"{name}.mask.png")[0]
    mask = resize(mask[None], content.shape[1:])[0] > 0.5
    masks = np.stack([mask, ~mask]).astype(np.float32)  # 0 = foreground, 1 = background
    style_pixels = read_image(EXAMPLES / "style.png")
    style = resize(style_pixels, working_shape(style_pixels.shape[1], style_pixels.shape[2], size))
    style_masks = synthetic.label_masks(synthetic.layout("halves_h", style.shape[1:]))
    return Case(f"photo-{name}", content, masks, style, style_masks)


PHOTOS = ("horse001", "horse007", "bsds153077")


def cases(size: int, names: list[str] | None) -> list[Case]:
    found = _synthetic_cases(size)
    if SEG_DEV.is_dir():
        found.update({f"photo-{p}": None for p in PHOTOS})
    names = names or list(found)
    unknown = [n for n in names if n not in found]
    if unknown:
        raise SystemExit(f"unknown case {unknown[0]!r} (have {', '.join(found)})")
    return [found[n] or _photo_case(n.removeprefix("photo-"), size) for n in names]


def stylise(case: Case, config, partitioned: bool, snapshot_every: int):
    """Colour normalisation, transfer and exact inverse, as the pipeline's stages run them."""
    colour = config.color_normalize
    params = config.style_transfer.model_copy(update={"snapshot_every": snapshot_every})
    if partitioned:
        cm, sm, mapping = case.content_masks, case.style_masks, case.mapping
    else:
        cm, sm, mapping = np.ones_like(case.content_masks[:1]), np.ones_like(case.style_masks[:1]), {0: 0}
    params = params.model_copy(update={"mapping": mapping})
    method, direction = colour.method, colour.direction
    extra = {}
    if hasattr(colour, "max_gain"):  # older code: no bound, no auto
        from pst_core.color.normalize import resolve

        method, direction = resolve(method, direction, config.unnormalize.palette)
        extra["max_gain"] = colour.max_gain
    if colour.regions:  # one transform per mapped region pair, as the pipeline fits it
        extra.update(content_masks=cm, style_masks=sm, mapping=mapping)
    content, style, transform = normalize_pair(case.content, case.style, method, direction, **extra)
    vgg = load_vgg(config.features.weights, config.features.seed)
    snapshots = []
    scales = ScaleTimes()
    start = time.perf_counter()
    result = transfer(content, style, cm, sm, vgg, params, progress=scales.record,
                      snapshot=lambda it, img: snapshots.append((it, time.perf_counter() - start, img.copy())))
    seconds = time.perf_counter() - start
    final = restore_palette(result.image, transform, config.unnormalize.palette)
    timeline = [(it, t, restore_palette(img, transform, config.unnormalize.palette)) for it, t, img in snapshots]
    return final, result.image, style, seconds, timeline, scales.rows()


class ScaleTimes:
    """Seconds per iteration at each scale of a transfer, and how the scale ran (tiles, history):
    what a schedule with other iteration counts per scale would cost, from one run."""

    def __init__(self):
        self.last = time.perf_counter()
        self.scales: dict[int, dict] = {}

    def record(self, progress) -> None:
        now = time.perf_counter()
        row = self.scales.setdefault(progress.scale, {
            "size": list(progress.size), "tile": progress.tile, "history": progress.history,
            "iterations": 0, "seconds": 0.0})
        # The first iteration of a scale also pays for building its objective (targets, content
        # features): counted with it, as a run pays it.
        row["iterations"] += 1
        row["seconds"] += now - self.last
        self.last = now

    def rows(self) -> list[dict]:
        return [{**row, "seconds": round(row["seconds"], 2),
                 "seconds_per_iteration": round(row["seconds"] / row["iterations"], 3)}
                for _, row in sorted(self.scales.items())]


def print_scales(name: str, seconds: float, scales: list[dict]) -> None:
    print(f"{name}: transfer {seconds:.1f} s", flush=True)
    for s in scales:
        tiled = f"{s['tile']} px tiles" if s["tile"] else "whole"
        print(f"  {s['size'][1]}x{s['size'][0]} ({tiled}, history {s['history']}): {s['iterations']} iterations, "
              f"{s['seconds']:.1f} s, {s['seconds_per_iteration']:.2f} s each", flush=True)


def _presences(parts: dict[int, quality.StructureParts]) -> dict[str, dict[str, float]]:
    return {str(r): {"own": round(p.own, 3), "other": round(p.other, 3)} for r, p in parts.items()}


def measure(case: Case, reference: quality.StructureReference, final: np.ndarray, styled: np.ndarray,
            style_normalised: np.ndarray, palette: str, independent) -> dict:
    parts = reference.parts(final, case.content_masks, case.mapping)
    structure = {r: p.score for r, p in parts.items()}
    asked, other = [], []
    for r, s in case.mapping.items():
        to_content = quality.palette_distance(final, case.content_masks[r], case.content, case.content_masks[r])
        to_style = quality.palette_distance(final, case.content_masks[r], case.style, case.style_masks[s])
        asked.append(to_content if palette == "content" else to_style)
        other.append(to_style if palette == "content" else to_content)
    d = quality.region_style_distances(independent, styled, case.content_masks, style_normalised,
                                       case.style_masks, GRAM_LAYERS)
    gram = min(min(d[r, o] for o in range(d.shape[1]) if o != s) / max(d[r, s], 1e-12)
               for r, s in case.mapping.items())
    composite = quality.ideal_composite(case.content_masks, case.style, case.style_masks, case.mapping)
    ideal = reference.parts(composite, case.content_masks, case.mapping)  # quality.ceiling_parts, composite built once
    fringe, fringe_ideal = (quality.fringe_ratios(image, case.content_masks) for image in (final, composite))
    return {"structure": {str(r): round(v, 3) for r, v in structure.items()},
            "structure_ceiling": {str(r): round(p.score, 3) for r, p in ideal.items()},
            "presence": _presences(parts), "presence_ceiling": _presences(ideal),
            "structure_min": round(min(structure.values()), 3),
            "noise": round(quality.noise_ratio(final, case.content, case.style), 3),
            "fringe": {str(r): round(v, 3) for r, v in fringe.items()},
            "fringe_ideal": {str(r): round(v, 3) for r, v in fringe_ideal.items()},
            "palette_asked": [round(v, 2) for v in asked], "palette_other": [round(v, 2) for v in other],
            "gram_other_over_own": round(float(gram), 3)}


def _fringe(row: dict) -> str:
    """The output's largest fringe over the ideal composite's, or '-' where no region can be measured."""
    if not row["fringe"]:
        return "-"
    worst = max(row["fringe"], key=row["fringe"].get)
    return f"{row['fringe'][worst]:.2f}/{row['fringe_ideal'].get(worst, float('nan')):.2f}"


def scored_snapshots(case: Case, reference: quality.StructureReference, timeline):
    """Structure and noise of each snapshot at the final scale, in order, scored as they are asked for
    (coarser scales' snapshots are not yet the picture asked for)."""
    for iteration, seconds, image in timeline:
        if image.shape == case.content.shape:
            yield {"iteration": iteration, "seconds": seconds,
                   "structure": reference.scores(image, case.content_masks, case.mapping),
                   "noise": quality.noise_ratio(image, case.content, case.style)}


def time_to_quality(points) -> tuple[int, float] | None:
    """(Iteration, seconds) of the first scored snapshot that meets the structure and noise targets."""
    for point in points:
        if min(point["structure"].values()) >= STRUCTURE_TARGET and point["noise"] <= NOISE_TARGET:
            return point["iteration"], point["seconds"]
    return None


def out_of_reach(part: dict, plain: dict) -> list[str]:
    """The structure targets no output can meet on this case: where even the ideal composite (the style
    region's own pixels in the content region's shape) scores below the target, or below K=1's score
    plus the margin (K=1 can lay the right texture on a region by chance)."""
    reasons = []
    for r, ideal in part["structure_ceiling"].items():
        if ideal < STRUCTURE_TARGET:
            reasons.append(f"region {r}: the ideal composite scores {ideal:.2f}")
        elif ideal < plain["structure"][r] + ABOVE_K1:
            reasons.append(f"region {r}: K=1 scores {plain['structure'][r]:.2f}, the ideal composite {ideal:.2f}")
    return reasons


def save_strip(path: Path, case: Case, partitioned: np.ndarray, plain: np.ndarray) -> None:
    style = resize(case.style, case.content.shape[1:]) if case.style.shape != case.content.shape else case.style
    strip = np.concatenate([case.content, style, plain, partitioned], axis=2)
    Image.fromarray((np.clip(strip, 0, 1).transpose(1, 2, 0) * 255).astype(np.uint8)).save(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--cases", nargs="+", help="case names (default: all)")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.PARAM=VALUE")
    parser.add_argument("--weights", default="random", help="features.weights (default random)")
    parser.add_argument("--snapshot-every", type=int, default=25)
    parser.add_argument("--label", default="", help="a name for this configuration in the output")
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--images", help="folder for content|style|K=1|partitioned strips")
    parser.add_argument("--no-k1", action="store_true", help="partitioned runs only (for tuning; no K=1 figures)")
    parser.add_argument("--scale-times", action="store_true", help="print seconds per iteration at each scale")
    parser.add_argument("--parts", action="store_true",
                        help="print each region's presence of its own and of the other style regions' peaks, "
                             "the output's beside the ideal composite's")
    parser.add_argument("--trajectory", action="store_true",
                        help="print structure and noise at every snapshot of the final scale")
    args = parser.parse_args(argv)
    config = build_config(sets=[f"features.weights={args.weights}", *args.set])
    independent = load_vgg("random", 1)
    images = Path(args.images) if args.images else None
    if images:
        images.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"quality {args.label}: weights={args.weights} {' '.join(args.set)}")
    print(f"{'case':24s} {'px':>4s} {'run':5s} {'structure':>16s} {'min':>6s} {'noise':>6s} {'palette':>13s} "
          f"{'gram':>5s} {'fringe':>9s} {'s':>6s} {'to-q s@it':>9s} {'ceiling':>12s}")
    for size in args.sizes:
        for case in cases(size, args.cases):
            outputs = {}
            reference = quality.StructureReference(case.style, case.style_masks, case.content.shape[1:])
            runs = (("part", True),) if args.no_k1 else (("K=1", False), ("part", True))
            for run, partitioned in runs:
                final, styled, style_n, seconds, timeline, scales = stylise(case, config, partitioned,
                                                                             args.snapshot_every)
                if args.scale_times:  # before the scoring, which takes minutes at large sizes
                    print_scales(f"{case.name} {size} px {run}", seconds, scales)
                row = {"label": args.label, "case": case.name, "size": size, "run": run, "seconds": round(seconds, 1),
                       "scales": scales,
                       **measure(case, reference, final, styled, style_n, config.unnormalize.palette, independent),
                       "time_to_quality": None, "iterations_to_quality": None}
                # Without --trajectory, scoring stops at the first snapshot that meets the targets.
                points = scored_snapshots(case, reference, timeline)
                if args.trajectory:
                    points = list(points)
                    row["trajectory"] = [{"iteration": p["iteration"], "seconds": round(p["seconds"], 1),
                                          "structure": {str(r): round(v, 3) for r, v in p["structure"].items()},
                                          "noise": round(p["noise"], 3)} for p in points]
                    for point in points:
                        shown = " ".join(f"{v:5.2f}" for v in point["structure"].values())
                        print(f"  {case.name} {size} px {run} at iteration {point['iteration']} "
                              f"({point['seconds']:.0f} s): structure {shown}, noise {point['noise']:.2f}")
                reached = time_to_quality(points)
                if reached:
                    row["iterations_to_quality"], row["time_to_quality"] = reached[0], round(reached[1], 1)
                outputs[run] = final
                rows.append(row)
                ttq = "-" if reached is None else f"{reached[1]:.0f}@{reached[0]}"
                structure = " ".join(f"{v:5.2f}" for v in row["structure"].values())
                palette = f"{np.mean(row['palette_asked']):5.1f}/{np.mean(row['palette_other']):5.1f}"
                print(f"{case.name:24s} {size:4d} {run:5s} {structure:>16s} {row['structure_min']:6.2f} "
                      f"{row['noise']:6.2f} {palette:>13s} {row['gram_other_over_own']:5.2f} {_fringe(row):>9s} "
                      f"{seconds:6.0f} "
                      f"{ttq:>9s} {' '.join(f'{v:5.2f}' for v in row['structure_ceiling'].values()):>12s}",
                      flush=True)
                if args.parts:
                    for r, found in row["presence"].items():
                        ideal = row["presence_ceiling"][r]
                        print(f"  region {r} presence own / other: {found['own']:.2f} / {found['other']:.2f} "
                              f"(ideal composite {ideal['own']:.2f} / {ideal['other']:.2f})", flush=True)
            if images:
                save_strip(images / f"{case.name}-{size}.png", case, outputs["part"], outputs.get("K=1", case.content))
            if args.no_k1:
                continue
            part, plain = rows[-1], rows[-2]
            gap = min(part["structure"][r] - plain["structure"][r] for r in part["structure"])
            part["above_k1_min"] = round(gap, 3)
            # The same comparison of the regions' mean: K=1 can carry a style region's texture into a
            # content region by chance (the transfer lays textures where the content's colours suit them).
            mean_gap = float(np.mean([part["structure"][r] - plain["structure"][r] for r in part["structure"]]))
            part["above_k1_mean"] = round(mean_gap, 3)
            part["meets_targets"] = bool(part["structure_min"] >= STRUCTURE_TARGET and gap >= ABOVE_K1
                                         and part["noise"] <= NOISE_TARGET
                                         and all(a < o for a, o in zip(part["palette_asked"], part["palette_other"])))
            part["out_of_reach"] = out_of_reach(part, plain)
            feasible = f" (out of reach: {'; '.join(part['out_of_reach'])})" if part["out_of_reach"] else ""
            print(f"{'':24s} {'':4s} {'':5s} above K=1 by {gap:.2f} (region mean {mean_gap:.2f}); targets "
                  f"{'met' if part['meets_targets'] else 'NOT met'}{feasible}")
    met = [r for r in rows if "meets_targets" in r]
    reachable = [r for r in met if not r["out_of_reach"]]
    print(f"\n{sum(r['meets_targets'] for r in met)}/{len(met)} partitioned runs meet every target "
          f"({sum(r['meets_targets'] for r in reachable)}/{len(reachable)} of those whose targets are within reach)")
    if args.json:
        Path(args.json).write_text(json.dumps({"label": args.label, "settings": args.set, "weights": args.weights,
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
