"""How much memory a transfer needs, part by part, and the plan that keeps it within a budget.

The model counts what the transfer holds at each scale (bytes per pixel of each part) plus the
network's working memory for one tile's forward and backward pass, which is measured (see
``benchmarks/style.py --rss-sizes``). A scale runs on the whole image where that fits the budget;
otherwise in tiles (``pst_core.style.tiles``: memory then grows with the tile, not the image), and the
L-BFGS history, which holds 2 image-sized vectors per step remembered, is shortened where even tiles
leave no room for it. A transfer that cannot fit at all is refused before it starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pst_core.config.schema import StyleTransferParams
from pst_core.errors import MemoryBudgetError
from pst_core.style.tiles import GRID, halo
from pst_core.features import LAYER_INDEX, LAYER_NAMES, LAYER_STRIDE

GIB = 2 ** 30
# The process the transfer runs in: Python, torch, Prefect, the VGG19 weights, and what the earlier
# stages leave in the heap once it is trimmed (``pst_core.style.heap.release_freed_memory``). Measured in a 2048 px
# `pst run` (hand-drawn regions, 1024 px tiles forced, one iteration above 256 px, RSS sampled every
# 0.1 s): 1.11 GiB during the 64 px scale (a bare `import torch, prefect` with the weights: 0.64);
# with this base the whole-image scales peak 0.3 to 0.5 GiB under the model, the tiled 2048 px
# scale at 5.11 GiB against 5.06 (with 1.0 and no trimming: 1.84 and 5.69 against 4.65 GiB).
BASE_BYTES = 1.4 * GIB
# One forward and backward pass, per pixel of the tile (or image) and per float the network holds
# per input pixel down to the deepest layer (conv and pool outputs, weighted by 1/stride^2): the
# autograd graph, the gradients in flight and the masked Grams' saved columns. Measured at 256 to
# 1024 px with relu1_1..relu5_1 + relu4_2: 3.1 to 3.4 KiB per pixel for 408 floats per pixel.
PASS_BYTES_PER_FLOAT = 8.5
# A tile's pass holds more than a whole-image pass of the window's size: the image's gradient summed
# over the tiles, and this share of the pass on top. Measured in a 4096 px `pst run` in 1536 px tiles
# without reuse (RSS sampled every 0.1 s): 9.77 GiB at its 2048 px scale and 11.91 at 4096 px, where
# the plan's other parts and a whole-image pass of the window gave 9.2 and 11.6 (1.09 and 1.05 times
# that pass). In 1024 px tiles the same run measured 9.83 GiB at 4096 px against 8.8: more than this
# share, not explained yet (a standalone 2048 px transfer in 512 px tiles stays under the model).
TILED_PASS_SHARE = 0.1
IMAGE = 3 * 4  # bytes per pixel of an RGB float32 image
TILE_SIZES = (2048, 1536, 1024, 768, 512, 384, 256, 128)  # tried in this order when the image does not fit
PREFERRED_TILE = 512  # smaller tiles pay more halo than they save; used only before refusing
PREFERRED_HISTORY = 10  # L-BFGS steps remembered that a larger tile may not push out
# Freed blocks kept in the heap for reuse (``pst_core.style.heap.reuse_freed_memory``: no page faults,
# up to 1.9x faster per iteration) raise the peak by the heap's fragmentation, which grows with the
# image-sized vectors as well as with the pass. Measured in a 4096 px `pst run` that reused freed
# memory at every scale (RSS sampled every 0.1 s): 2048 px in 1024 px tiles 9.72 GiB against 5.4
# for the plan's other parts, 4096 px in 1024 px tiles 15.93 against 8.3: 1.15 and 1.27 times
# (activations + optimizer + images) above them; 1024 px whole 5.34 against 4.2. The plan counts 1.5
# times that sum, and reuses freed memory in tiles no smaller than those measured. Those slacks were
# measured above the other parts without the tiled pass's share, so in a plan with reuse the heap's
# part holds that share.
HEAP_SLACK = 1.5
REUSE_MIN_TILE = 1024


def network_floats(layers: list[str]) -> float:
    """Floats per input pixel that the network's activations down to the deepest layer hold."""
    channels = 3
    total = 0.0
    for name in LAYER_NAMES[:max(LAYER_INDEX[name] for name in layers) + 1]:
        if name.startswith("conv"):
            channels = _CONV_CHANNELS[name]
        if not name.startswith("relu"):  # relu outputs replace conv outputs in the graph
            total += channels / LAYER_STRIDE[name] ** 2
    return total


_CONV_CHANNELS = {name: 64 * 2 ** min(int(name[4]) - 1, 3) for name in LAYER_NAMES if name.startswith("conv")}


def layer_floats(layers: list[str]) -> float:
    """Floats per input pixel of these layers' activations."""
    return sum(_CONV_CHANNELS["conv" + name[4:]] / LAYER_STRIDE[name] ** 2 for name in layers)


@dataclass
class ScalePlan:
    """How one scale of the transfer runs, and what the model says it holds (bytes per part)."""

    size: tuple[int, int]
    iterations: int
    tile: int | None  # pixels; None: the whole image at once
    history: int  # L-BFGS steps remembered (0 for Adam)
    parts: dict[str, float] = field(default_factory=dict)
    reuse_heap: bool = False  # freed blocks stay in the heap for the next pass (parts["heap"] counts them)

    @property
    def peak(self) -> float:
        return sum(self.parts.values())

    def describe(self) -> str:
        tiled = "whole image" if self.tile is None else f"{self.tile} px tiles"
        heap = ", freed memory reused" if self.reuse_heap else ""
        return f"{self.size[1]}x{self.size[0]}: {tiled}, history {self.history}{heap}, {self.peak / GIB:.1f} GiB"


@dataclass
class Shapes:
    """What the model needs to know of a transfer's inputs."""

    content: tuple[int, int]  # the working size
    style: tuple[int, int]
    content_regions: int
    style_regions: int
    masks_carried: bool = False  # masks come at a smaller size and are carried up to the images' size


def transfer_layers(params: StyleTransferParams) -> tuple[list[str], list[str]]:
    """(every layer the transfer evaluates, the style layers) over all regions' settings."""
    style = set(params.style_layers)
    for settings in params.regions.values():
        style |= set(settings.style_layers or [])
    return sorted(style | set(params.content_layers), key=LAYER_INDEX.get), sorted(style, key=LAYER_INDEX.get)


def parts(shapes: Shapes, size: tuple[int, int], style_size: tuple[int, int], final: bool,
          params: StyleTransferParams, tile: int | None, history: int) -> dict[str, float]:
    """Bytes each part of the transfer holds at one scale (see the module's docstring)."""
    layers, style_layers = transfer_layers(params)
    full, full_s = shapes.content[0] * shapes.content[1], shapes.style[0] * shapes.style[1]
    p, ps = size[0] * size[1], style_size[0] * style_size[1]
    kc, ks = shapes.content_regions, shapes.style_regions
    mask_floats = sum(1 / LAYER_STRIDE[name] ** 2 for name in style_layers)
    # Inputs at the working size (images and soft masks), and their copies at a coarser scale.
    images = IMAGE * (full + full_s) + 4 * (kc * full + ks * full_s) * (2 if shapes.masks_carried else 1)
    if not final:
        images += IMAGE * (p + ps) + 4 * (kc * p + ks * ps)
    # The image being optimised and its gradient, the keep-content composite, the optimiser's state.
    vectors = 2 + (1 if params.regions else 0)
    vectors += 2 * history + 2 if params.optimizer == "lbfgs" else 3  # L-BFGS: 2 per step, previous gradient
    # and direction; Adam: its two moments and the average of iterates
    if params.smooth_fine_updates and params.above_fine_size(size):
        # The scale's start, beside the smooth correction, and the image composed of them (counted for
        # a one-scale run too, which takes no smooth updates: two image-sized vectors over).
        vectors += 2
    whole = tile is None
    window = p if whole else min(p, (tile + 2 * halo(layers)) ** 2)
    # Content region masks at each style layer; the whole image's masked statistics also index its
    # pixels (the style's are used once, before the optimiser's state exists).
    masks = 4 * mask_floats * kc * p + (16 * mask_floats * p if whole else 0)
    targets = 4 * layer_floats(params.content_layers) * p * 1.1  # content activations and weight map
    # The peak of an iteration: the network's pass over a tile, or the optimiser's step (its flat
    # gradient, the new step's two vectors, the next direction), or total variation's graph.
    step = 4 if params.optimizer == "lbfgs" else 2
    one_pass = PASS_BYTES_PER_FLOAT * network_floats(layers) * window
    passes = max(one_pass, IMAGE * p * step, IMAGE * p * 4 if params.tv_weight else 0)
    held = {"base": BASE_BYTES, "images": images, "masks": masks, "targets": targets,
            "optimizer": IMAGE * p * vectors, "activations": passes}
    if not whole:
        held["tiling"] = TILED_PASS_SHARE * one_pass + IMAGE * p
    return held


def plan_scales(shapes: Shapes, sizes: list[tuple[int, int]], style_sizes: list[tuple[int, int]],
                steps: list[int], params: StyleTransferParams) -> list[ScalePlan]:
    """One plan per scale; a ``MemoryBudgetError`` naming what to change when a scale cannot fit."""
    # The largest scale first: where a run cannot fit, that is the scale to name.
    last = len(sizes) - 1
    plans = [plan_scale(shapes, sizes[i], style_sizes[i], steps[i], i == last, params) for i in range(last, -1, -1)]
    return plans[::-1]


def plan_scale(shapes: Shapes, size: tuple[int, int], style_size: tuple[int, int], iterations: int,
               final: bool, params: StyleTransferParams) -> ScalePlan:
    """The whole image, else the largest tile (of at least PREFERRED_TILE px), that fits with the full
    history or at least PREFERRED_HISTORY steps of it, first with freed memory reused (its slack
    counted), then without; else the largest tile with the longest history that fits; else refused.

    Reuse comes before a larger tile: at 2048 px 1024 px tiles with it took 50.5 s per iteration, 1536
    px tiles without it 75.4 s and the whole image without it 64.2 s (the whole image with it would
    not fit 12 GiB)."""
    budget = params.memory_budget * GIB
    lbfgs = params.optimizer == "lbfgs"
    wanted = min(params.lbfgs_history, max(1, iterations)) if lbfgs else 0

    def plan(tile: int | None, history: int, reuse: bool) -> ScalePlan:
        held = parts(shapes, size, style_size, final, params, tile, history)
        if reuse:
            held.pop("tiling", None)  # inside the heap's measured slack
            held["heap"] = HEAP_SLACK * (held["activations"] + held["optimizer"] + held["images"])
        return ScalePlan(size, iterations, tile, history, held, reuse_heap=reuse)

    def longest_history(tile: int | None, reuse: bool) -> int:
        """The longest history up to ``wanted`` that fits with this tile (0: none does, or Adam)."""
        if not lbfgs:
            return 0
        fixed = plan(tile, 0, reuse)
        per_step = 2 * IMAGE * size[0] * size[1]
        return max(0, min(wanted, int((budget - fixed.peak) // per_step)))

    candidates = _tiles(size, params.tile_size)
    preferred = [t for t in candidates if t is None or t >= PREFERRED_TILE or params.tile_size is not None]
    for reuse in (True, False):
        for tile in [t for t in preferred if not reuse or t is None or t >= REUSE_MIN_TILE]:
            history = longest_history(tile, reuse)
            if plan(tile, history, reuse).peak <= budget and (not lbfgs or history >= min(wanted, PREFERRED_HISTORY)):
                return plan(tile, history, reuse)
    for tile in candidates:
        history = longest_history(tile, False)
        if plan(tile, history, False).peak <= budget and (not lbfgs or history >= 1):
            return plan(tile, history, False)
    smallest = plan(candidates[-1], 1 if lbfgs else 0, False)
    shown = ", ".join(f"{name} {value / GIB:.1f}" for name, value in smallest.parts.items())
    raise MemoryBudgetError(
        f"style_transfer.memory_budget={params.memory_budget:g} GiB: the {size[1]}x{size[0]} scale needs "
        f"{smallest.peak / GIB:.1f} GiB even in {_tile_name(candidates[-1])} ({shown} GiB); raise "
        f"style_transfer.memory_budget or lower load.size")


def _tile_name(tile: int | None) -> str:
    return "one piece" if tile is None else f"{tile} px tiles"


def _tiles(size: tuple[int, int], forced: int | None) -> list[int | None]:
    if forced is not None:
        return [None if forced >= max(size) else forced]
    return [None, *(t for t in TILE_SIZES if t < max(size))]


__all__ = ["GIB", "GRID", "ScalePlan", "Shapes", "plan_scales", "plan_scale", "parts", "network_floats",
           "HEAP_SLACK"]
