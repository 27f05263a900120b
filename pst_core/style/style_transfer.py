"""Partitioned style transfer: each content region takes the style of its mapped style region.

K = 1 (one all-ones mask per side) is plain, unpartitioned transfer through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pst_core.config.schema import RegionSettings, StyleTransferParams
from pst_core.errors import ComputeError, ConfigError
from pst_core.progress import TransferProgress
from pst_core.style import heap, memory, tiles
from pst_core.style.losses import (STATISTICS, ContentLoss, MaskedStyleLoss, Region, masked_statistics,
                                   total_variation)
from pst_core.segmentation.masks import resize_masks
from pst_core.style.mapping import map_regions
from pst_core.features import LAYER_STRIDE

__all__ = ["StyleResult", "transfer", "map_regions"]


@dataclass
class StyleResult:
    image: np.ndarray  # (3,H,W) float32 within the inputs' per-channel range (at least [0,1])
    mapping: dict[int, int]
    history: list[TransferProgress] = field(default_factory=list)  # per iteration
    snapshots: list[tuple[int, np.ndarray]] = field(default_factory=list)
    plans: list = field(default_factory=list)  # per scale: how it ran (memory.ScalePlan)


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)


def _check_inputs(content, style, content_masks, style_masks, vgg, params, device) -> None:
    for name, array in (("content image", content), ("style image", style),
                        ("content masks", content_masks), ("style masks", style_masks)):
        _check_finite(name, array)
    for name, masks, image in (("content", content_masks, content), ("style", style_masks, style)):
        (h, w), (mh, mw) = image.shape[1:], masks.shape[1:]
        if abs((mh / mw) / (h / w) - 1) > 0.02:
            raise ConfigError(f"style_transfer: {name} masks {mw}x{mh} do not fit the {w}x{h} image "
                              "(masks need the image's aspect ratio)")
    bad = [r for r in params.regions if not 0 <= r < len(content_masks)]
    if bad:
        raise ConfigError(f"style_transfer.regions: content region {bad[0]} does not exist "
                          f"(content has regions 0..{len(content_masks) - 1})")

    vgg_device = next(vgg.parameters()).device
    if vgg_device.type != torch.device(device).type:
        raise ConfigError(f"style_transfer: the VGG network is on {vgg_device}, the transfer was asked on {device}")


def _check_finite(name: str, array: np.ndarray) -> None:
    if not np.isfinite(array).all():
        raise ComputeError(f"style_transfer: the {name} holds NaN or infinite values")


class _Objective:
    """All losses of one scale: content, masked style per mapped pair and layer, total variation.

    With ``tile`` (pixels) the network runs tile by tile (see ``pst_core.style.tiles``) and the objective is
    still the whole image's: every region's statistics are summed over the tiles before any loss is
    taken (``value_and_grad``). Tile edges move between evaluations (``seed``), so no seam can settle
    where rounding differs.
    """

    def __init__(self, vgg, content, style, cmasks, smasks, mapping, params: StyleTransferParams,
                 tile: int | None = None, seed: int = 0, confine: bool | None = None):
        settings = [params.regions.get(r, RegionSettings()) for r in range(len(cmasks))]
        style_layers = {r: s.style_layers or params.style_layers for r, s in enumerate(settings)}
        self.layers = sorted(set(params.content_layers).union(*style_layers.values()))
        self.vgg, self.tv_weight, self.tile = vgg, params.tv_weight, tile
        self.masks = cmasks
        self.confine = params.confine_regions if confine is None else confine
        self.margin = tiles.halo(self.layers)
        self.offsets = np.random.default_rng(seed)

        active = [r for r, s in enumerate(settings) if not s.keep_content]
        targets: dict[str, list[Region]] = {}  # style regions, per layer
        wanted: list[tuple[int, str, float]] = []
        self.regions: dict[str, list[Region]] = {}  # content regions per layer, so its K Grams are one autograd node
        for r in active:
            weight = settings[r].style_weight if settings[r].style_weight is not None else params.style_weight
            layer_weights = {layer: params.style_layer_weights.get(layer, 1.0) for layer in style_layers[r]}
            layer_total = sum(layer_weights.values()) or 1.0
            for layer in style_layers[r]:
                region = Region(resize_masks(cmasks[r:r + 1], _layer_shape(content, layer))[0])
                target = Region(resize_masks(smasks[mapping[r]:mapping[r] + 1], _layer_shape(style, layer))[0])
                if region.empty or target.empty:
                    continue
                self.regions.setdefault(layer, []).append(region)
                targets.setdefault(layer, []).append(target)
                # Regions count alike (Gatys et al.'s 1/R); within a region, layers by style_layer_weights.
                wanted.append((len(self.regions[layer]) - 1, layer,
                               weight * layer_weights[layer] / (layer_total * len(active)), r))
        target_statistics = _single(self._statistics(style, targets, self._tiles(style.shape[-2:], moved=False)),
                                    style.dtype)
        self.style_losses = [MaskedStyleLoss(layer, STATISTICS[params.loss](*target_statistics[layer][slot]), weight,
                                             slot, r) for slot, layer, weight, r in wanted]
        self.owners = {layer: [r for _, l, _, r in wanted if l == layer] for layer in self.regions}  # per slot

        c_feats = tiles.features(vgg, content, params.content_layers, self._tiles(content.shape[-2:], moved=False))
        cweights = torch.tensor([s.content_weight if s.content_weight is not None else params.content_weight
                                 for s in settings], dtype=content.dtype, device=content.device)
        # One content loss per region and layer (their sum is the loss of the weighted map), so that
        # each region's losses can be told apart (``confine_regions``).
        self.content_losses = [
            ContentLoss(layer, c_feats[layer], resize_masks(cweights[r] * cmasks[r:r + 1], c_feats[layer].shape[-2:])[None]
                        / len(params.content_layers), region=r)
            for r in range(len(cmasks)) if cweights[r] > 0 for layer in params.content_layers]

    def _tiles(self, shape: tuple[int, int], moved: bool = True) -> list[tiles.Tile]:
        offset = (0, 0)
        if self.tile and moved:
            offset = tuple(int(o) * tiles.GRID for o in self.offsets.integers(0, self.tile // tiles.GRID, 2))
        return tiles.grid(shape, self.tile, self.margin, offset)

    def _statistics(self, image: torch.Tensor, regions: dict[str, list[Region]], layout: list[tiles.Tile]
                    ) -> dict[str, list[tuple]]:
        """Every region's (mean, Gram) over the whole image, summed tile by tile (no gradient) in double
        precision (``_add_statistics``)."""
        total: dict[str, list[tuple]] = {}
        with torch.no_grad():
            for tile in layout:
                feats = self.vgg(image[(..., *tile.window_slices())], list(regions))
                _add_statistics(total, _tile_statistics(feats, tile, regions))
                del feats  # this tile's activations, before the next tile's pass
        return total

    def _tile_pass(self, image: torch.Tensor, tile: tiles.Tile):
        """One tile's window as a leaf, its activations and its shares of the statistics, with a graph."""
        window = image[(..., *tile.window_slices())].detach().requires_grad_(True)
        feats = self.vgg(window, self.layers)
        return window, feats, _tile_statistics(feats, tile, self.regions)

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The losses of the whole image in one pass, differentiable (untiled)."""
        return self._losses(image)[0]

    def _losses(self, image: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[int, torch.Tensor]]:
        """The losses, and each content region's own content and style losses, {region: loss}."""
        feats = self.vgg(image, self.layers)
        zero = image.new_zeros(())
        statistics = {layer: masked_statistics(feats[layer][0], regions) for layer, regions in self.regions.items()}
        content = [(loss.region, loss(feats)) for loss in self.content_losses]
        style = [(loss.region, loss(statistics)) for loss in self.style_losses]
        tv = self.tv_weight * total_variation(image) if self.tv_weight else zero
        content_total, style_total = sum((v for _, v in content), zero), sum((v for _, v in style), zero)
        return ({"total": content_total + style_total + tv, "content": content_total, "style": style_total, "tv": tv},
                _by_region(content + style))

    def value_and_grad(self, image: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The losses and the gradient of the total with respect to ``image``."""
        layout = self._tiles(image.shape[-2:])
        if len(layout) == 1:
            x = image.detach().requires_grad_(True)
            losses, parts = self._losses(x)
            grad = region_gradient(parts, x, self.masks, self.confine)
            if losses["tv"].requires_grad:
                grad += torch.autograd.grad(losses["tv"], x)[0]
            return {k: v.detach() for k, v in losses.items()}, grad
        # Pass 1: every region's statistics of the whole image. The style loss is a function of these
        # only, so its gradients with respect to them are all a tile needs. The largest tile comes last
        # and keeps its graph (memory as for one tile of pass 2), so pass 2 need not run it again.
        layout = sorted(layout, key=lambda t: (t.window[1] - t.window[0]) * (t.window[3] - t.window[2]))
        statistics = self._statistics(image, self.regions, layout[:-1])
        kept = self._tile_pass(image, layout[-1])
        _add_statistics(statistics, kept[2])
        leaves = {layer: [(m.requires_grad_(True), g.requires_grad_(True)) for m, g in stats]
                  for layer, stats in _single(statistics, image.dtype).items()}
        style = sum((loss(leaves) for loss in self.style_losses), image.new_zeros(()))
        if style.requires_grad:
            style.backward()
        # Pass 2: tile by tile, the chain rule through the tile's share of each statistic (d loss /
        # d statistic . d share / d pixels) and of the content loss; shares add up, and so do gradients.
        grad = torch.zeros_like(image)
        content = image.new_zeros(())
        for tile in [layout[-1], *layout[:-1]]:
            window, feats, shares = kept if kept is not None else self._tile_pass(image, tile)
            kept = None
            parts = []  # (region, this tile's share of its loss)
            for layer, stats in shares.items():
                for r, (m, g), (leaf_m, leaf_g) in zip(self.owners[layer], stats, leaves[layer]):
                    if leaf_g.grad is not None:
                        parts.append((r, (g * leaf_g.grad).sum()))
                    if leaf_m.grad is not None:
                        parts.append((r, (m * leaf_m.grad).sum()))
            for loss in self.content_losses:
                (rows, cols), local = tile.at_layer(loss.layer)
                part = loss({loss.layer: feats[loss.layer][(..., *local)]}, rows, cols)
                parts.append((loss.region, part))
                content = content + part.detach()
            masks = self.masks[(..., *tile.window_slices())]
            grad[(..., *tile.window_slices())] += region_gradient(_by_region(parts), window, masks, self.confine)
            del feats, shares, parts, window  # this tile's activations, before the next tile's pass
        tv = image.new_zeros(())
        if self.tv_weight:
            x = image.detach().requires_grad_(True)
            tv = self.tv_weight * total_variation(x)
            tv.backward()
            grad += x.grad
            tv = tv.detach()
        style = style.detach()
        return {"total": content + style + tv, "content": content, "style": style, "tv": tv}, grad


def _by_region(losses: list[tuple[int, torch.Tensor]]) -> dict[int, torch.Tensor]:
    """(region, loss) pairs -> each region's summed loss."""
    out: dict[int, torch.Tensor] = {}
    for r, value in losses:
        out[r] = out[r] + value if r in out else value
    return out


def region_gradient(parts: dict[int, torch.Tensor], x: torch.Tensor, masks: torch.Tensor, confine: bool
                    ) -> torch.Tensor:
    """The gradient of the regions' summed losses with respect to ``x``, or with ``confine`` each
    region's own gradient weighted by its mask, sum_r masks[r] * d parts[r] / dx.

    Confined, a region's losses move only its own pixels. Its deep statistics see across its border
    (a relu4_1 cell sees about 50 px), and unconfined their gradient paints a halo of its style into the
    region beside it (a speckled fringe round a swimmer in a dotted background). It costs one backward
    pass more per region after the first: the last region's gradient is the total's minus the others'.
    """
    live = [r for r, value in parts.items() if value.requires_grad]
    if not live:
        return torch.zeros_like(x)
    total = sum(parts[r] for r in live)
    if not confine:
        return torch.autograd.grad(total, x)[0]
    *others, last = live
    grad = torch.autograd.grad(total, x, retain_graph=bool(others))[0] * masks[last]
    for i, r in enumerate(others):
        (own,) = torch.autograd.grad(parts[r], x, retain_graph=i < len(others) - 1)
        grad += own * (masks[r] - masks[last])
    return grad


def _layer_shape(image: torch.Tensor, layer: str) -> tuple[int, int]:
    """A layer's activation size for ``image`` (every pooling floors, and nested floors of halving
    are one floor of the stride)."""
    s = LAYER_STRIDE[layer]
    return image.shape[-2] // s, image.shape[-1] // s


def _add_statistics(total: dict[str, list[tuple]], shares: dict[str, list[tuple]]) -> None:
    """Add one tile's shares of every region's (mean, Gram) to the running ``total``, in place. The
    total is kept in double precision, so it does not depend on the order the tiles come in."""
    for layer, stats in shares.items():
        stats = [(m.detach().double(), g.detach().double()) for m, g in stats]
        total[layer] = stats if layer not in total else [
            (m0 + m1, g0 + g1) for (m0, g0), (m1, g1) in zip(total[layer], stats)]


def _single(total: dict[str, list[tuple]], dtype: torch.dtype) -> dict[str, list[tuple]]:
    """Summed statistics back in the images' precision."""
    return {layer: [(m.to(dtype), g.to(dtype)) for m, g in stats] for layer, stats in total.items()}


def _tile_statistics(feats: dict[str, torch.Tensor], tile: tiles.Tile, regions: dict[str, list[Region]]
                     ) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Each region's share of its (mean, Gram) from one tile's core: the whole image's statistics are
    the sum of these shares over the tiles."""
    out = {}
    for layer, layer_regions in regions.items():
        whole, local = tile.at_layer(layer)
        core = feats[layer][0][(..., *local)]
        crops = [r.crop(*whole) for r in layer_regions]
        out[layer] = masked_statistics(core, crops)
    return out


def _scale_sizes(size: tuple[int, int], min_size: int) -> list[tuple[int, int]]:
    """Coarse to fine: the longer side doubles from about ``min_size`` up to ``size`` (whose own scale
    is always the last). Structure forms at the coarse scales, where the network's receptive fields
    span more of the image, and is refined at the fine ones, which cost 4x more each."""
    sizes = [tuple(size)]
    while min_size and max(sizes[0]) / 2 >= min_size:
        h, w = sizes[0]
        sizes.insert(0, (max(1, round(h / 2)), max(1, round(w / 2))))
    return sizes


def _initial(params: StyleTransferParams, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    if params.init == "noise":
        generator = torch.Generator().manual_seed(params.seed)
        return torch.rand(content.shape, generator=generator).to(content)
    image = content if params.init == "content" else _resize(style, content.shape[-2:])
    if params.init_blur == 1:
        return image.clone()
    # Like STROTSS's start from the content's coarsest pyramid level: the content's own detail (a
    # swimmer's muscles and shading) would hold the share of each region's contrast that its style needs.
    small = [max(1, n // params.init_blur) for n in image.shape[-2:]]
    coarse = F.interpolate(image, size=small, mode="area")  # the mean of each factor x factor block
    return F.interpolate(coarse, size=image.shape[-2:], mode="bicubic", align_corners=False)


class _Average:
    """A bias-corrected exponential moving average of the iterates (crowsonkb): Adam's last iterate
    jitters by about one step; the average keeps the structure and drops the jitter."""

    def __init__(self, decay: float):
        self.decay, self.sum, self.weight = decay, None, 0.0

    def update(self, image: torch.Tensor) -> None:
        d = self.decay
        self.sum = image * (1 - d) if self.sum is None else self.sum.mul_(d).add_(image, alpha=1 - d)
        self.weight = self.weight * d + (1 - d)

    def get(self, latest: torch.Tensor) -> torch.Tensor:
        """The average, or ``latest`` before the first update."""
        return latest if self.sum is None else self.sum / self.weight


def transfer(content: np.ndarray, style: np.ndarray, content_masks: np.ndarray, style_masks: np.ndarray,
             vgg, params: StyleTransferParams, *, device="cpu", progress: Callable[[TransferProgress], None] | None = None,
             snapshot: Callable[[int, np.ndarray], None] | None = None) -> StyleResult:
    """content (3,H,W), style (3,Hs,Ws) in [0,1] or, colour-normalised, somewhat beyond; masks (Kc,h,w), (Ks,hs,ws)
    soft, summing to 1 per pixel, at the images' resolution or a smaller one with the same aspect ratio (carried
    up). progress(TransferProgress) called each iteration; snapshot(iteration, image) every params.snapshot_every iterations
    of the final scale (so every snapshot has the output's size)."""
    _check_inputs(content, style, content_masks, style_masks, vgg, params, device)
    heap.release_freed_memory()  # what the earlier stages freed, before the largest allocations come
    if hasattr(vgg, "with_pooling"):
        vgg = vgg.with_pooling(params.pooling)

    def tensor(a):
        return torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)

    c_full, s_full = tensor(content)[None], tensor(style)[None]
    # Masks may come at a smaller size (segmentation works at a bounded size): carried up here.
    cm_full = resize_masks(tensor(content_masks), tuple(content.shape[1:]))
    sm_full = resize_masks(tensor(style_masks), tuple(style.shape[1:]))
    schedule = _schedule(tuple(content.shape[1:]), tuple(style.shape[1:]), params)
    plans = plan_transfer(content.shape[1:], style.shape[1:], len(content_masks), len(style_masks), params,
                          masks_carried=content_masks.shape[1:] != content.shape[1:])
    features = None
    if params.mapping == "auto" and len(style_masks) > 1:
        layer = [params.mapping_layer]
        features = [tiles.features(vgg, image, layer, tiles.grid(image.shape[-2:], plans[-1].tile, tiles.halo(layer)))
                    [params.mapping_layer][0].cpu() for image in (c_full, s_full)]
    mapping = map_regions(cm_full.cpu(), sm_full.cpu(), params.mapping,
                          content_features=None if features is None else features[0],
                          style_features=None if features is None else features[1])
    del features

    # Colour-normalised inputs can leave [0, 1] (the transform is not clipped, so its inverse stays
    # exact): the output may span the inputs' range per channel, or the inverse would bend clipped colours.
    low = torch.minimum(c_full.amin((0, 2, 3)), s_full.amin((0, 2, 3))).clamp_max(0).view(1, 3, 1, 1)
    high = torch.maximum(c_full.amax((0, 2, 3)), s_full.amax((0, 2, 3))).clamp_min(1).view(1, 3, 1, 1)
    result = StyleResult(image=np.empty(0, np.float32), mapping=mapping, plans=plans)
    report = _Report(sum(steps for _, _, steps in schedule), result, progress, snapshot)
    x = None
    for scale, ((size, s_size, steps), plan) in enumerate(zip(schedule, plans)):
        c, s = _resize(c_full, size), _resize(s_full, s_size)
        cm, sm = resize_masks(cm_full, size), resize_masks(sm_full, s_size)
        # Scales above fine_size sharpen what the coarser ones drew, in a few iterations. With
        # smooth_fine_updates their updates are smooth (see ``_optimise``) and their gradient the plain
        # one: the confined gradient is no function's gradient, and L-BFGS's first steps on it overshoot
        # (the coarser scales' many iterations recover; a handful do not).
        smooth = params.smooth_fine_updates and _refines(params, scale, size)
        with heap.reuse_freed_memory(plan.reuse_heap):  # where the plan has room: no page faults
            objective = _Objective(vgg, c, s, cm, sm, mapping, params, tile=plan.tile, seed=params.seed + scale,
                                   confine=params.confine_regions and not smooth)
            kept = [cm[r] for r, st in params.regions.items() if st.keep_content]
            keep = sum(kept[1:], kept[0]) if kept else None
            x = _initial(params, c, s) if x is None else F.interpolate(x, size=size, mode="bicubic", align_corners=False)
            snapshots = bool(params.snapshot_every) and scale == len(schedule) - 1  # at the output's size only
            x = _optimise(objective, x.clamp(low, high), c, keep, (low, high), params, scale, plan, steps, report,
                          snapshots, smooth)
            del objective  # before the next scale's is built
        heap.release_freed_memory()

    image = torch.clamp(x, low, high)[0].cpu().numpy().astype(np.float32)
    if not np.isfinite(image).all():
        raise ComputeError("style_transfer: the optimised image is not finite")
    result.image = image
    return result


class _Report:
    """Where a transfer's iterations (counted over all scales) and snapshots go: the result, and the
    caller's ``progress`` and ``snapshot``."""

    def __init__(self, total: int, result: StyleResult, progress: Callable[[TransferProgress], None] | None,
                 snapshot: Callable[[int, np.ndarray], None] | None):
        self.total, self.result, self.progress, self.snapshot, self.iteration = total, result, progress, snapshot, 0

    def step(self, entry: TransferProgress) -> None:
        self.result.history.append(entry)
        if self.progress:
            self.progress(entry)

    def image(self, iteration: int, image: np.ndarray) -> None:
        self.result.snapshots.append((iteration, image))
        if self.snapshot:
            self.snapshot(iteration, image)


def _optimise(objective: _Objective, x: torch.Tensor, content: torch.Tensor, keep: torch.Tensor | None, bounds,
              params: StyleTransferParams, scale: int, plan: memory.ScalePlan, steps: int, report: _Report,
              snapshots: bool, smooth: bool = False) -> torch.Tensor:
    """``steps`` iterations of one scale from ``x``; the scale's result (keep_content regions pinned to
    the content). Every iteration is reported, and with ``snapshots`` every params.snapshot_every-th image.

    With ``smooth`` the optimiser's variable is a correction to ``x`` that reaches the image through
    ``binomial_blur``: the image changes only by smooth updates (nothing at 2 px), the network's gradient
    reaches the variable through the same blur, and the objective is the same function of the image.
    """
    low, high = bounds
    start = x.detach()
    x = (torch.zeros_like(start) if smooth else start).requires_grad_(True)
    through = binomial_blur if smooth else (lambda t: t)

    def compose():
        # keep_content regions are pinned to the content: no gradient ever reaches their pixels.
        image = start + through(x.detach()) if smooth else x.detach()
        return image if keep is None else keep * content + (1 - keep) * image

    if params.optimizer == "lbfgs":
        # Fixed iteration count: no early stops, one function evaluation per iteration.
        optimizer = torch.optim.LBFGS([x], lr=1, max_iter=1, history_size=max(1, plan.history),
                                      tolerance_grad=0, tolerance_change=0)
    else:
        optimizer = torch.optim.Adam([x], lr=params.lr, betas=(0.9, 0.99))
    average = _Average(params.average) if params.optimizer == "adam" and params.average else None
    for _ in range(steps):
        report.iteration += 1
        iteration = report.iteration
        record: dict = {}

        def closure():
            optimizer.zero_grad()
            losses, grad = objective.value_and_grad(compose())
            if not torch.isfinite(losses["total"]):
                value = float(losses["total"])
                raise ComputeError(f"style_transfer: the loss became non-finite ({value}) at scale {scale} "
                                   f"iteration {iteration}; lower style_weight/lr or check the inputs")
            x.grad = through(grad if keep is None else grad * (1 - keep))
            record.update({k: float(v) for k, v in losses.items()})
            return losses["total"]

        optimizer.step(closure)
        if params.optimizer == "adam" and not smooth:  # (a smooth correction is no image to clamp)
            with torch.no_grad():
                x.clamp_(low, high)  # L-BFGS would take a clamp for a step of its own: its output is clipped
        if average:
            average.update(compose())
        report.step(TransferProgress(scale, iteration, report.total, tuple(x.shape[-2:]), plan.tile, plan.history,
                                     **record))
        if snapshots and iteration % params.snapshot_every == 0:
            image = torch.clamp(average.get(compose()) if average else compose(), low, high)
            report.image(iteration, image[0].cpu().numpy())
    return average.get(compose()) if average else compose()


def binomial_blur(image: torch.Tensor) -> torch.Tensor:
    """Each channel filtered by the 3x3 binomial [1 2 1]x[1 2 1]/16, zero padded: its own adjoint, so
    the gradient of a loss of ``binomial_blur(d)`` with respect to ``d`` is ``binomial_blur`` of its
    gradient. It passes nothing at 2 px (0.5 cycles/pixel) and half the amplitude at 4 px."""
    k = torch.tensor([1.0, 2.0, 1.0], dtype=image.dtype, device=image.device)
    kernel = (k[:, None] * k[None, :] / 16).expand(image.shape[1], 1, 3, 3)
    return F.conv2d(image, kernel, padding=1, groups=image.shape[1])


def _schedule(shape: tuple[int, int], style_shape: tuple[int, int], params: StyleTransferParams
              ) -> list[tuple[tuple[int, int], tuple[int, int], int]]:
    """(content size, style size, iterations) per scale, coarse to fine. The style image is scaled
    alike (at least 16 px, at most its own size); scales above ``fine_size`` after the first run at
    most ``fine_iterations`` (a one-scale run, as Gatys et al.'s preset, runs all its iterations)."""
    sizes = _scale_sizes(shape, params.min_size)
    out = []
    for scale, size in enumerate(sizes):
        factor = size[0] / shape[0]
        style_size = tuple(min(n, max(16, round(n * factor))) for n in style_shape)
        steps = params.iterations if scale == len(sizes) - 1 else _coarse_iterations(params)
        if _refines(params, scale, size):
            steps = min(steps, params.fine_iterations)
        out.append((size, style_size, steps))
    return out


def _refines(params: StyleTransferParams, scale: int, size: tuple[int, int]) -> bool:
    """Whether a scale only refines what the coarser ones drew: above fine_size, after the first scale
    (a first scale has nothing drawn to refine)."""
    return scale > 0 and params.above_fine_size(size)


def plan_transfer(shape, style_shape, content_regions: int, style_regions: int, params: StyleTransferParams,
                  masks_carried: bool = False) -> list[memory.ScalePlan]:
    """How each scale runs within ``params.memory_budget`` (whole or tiled, L-BFGS history), decided
    before any work; a ``MemoryBudgetError`` naming the parameter to change where a scale cannot fit."""
    schedule = _schedule(tuple(shape), tuple(style_shape), params)
    shapes = memory.Shapes(tuple(shape), tuple(style_shape), content_regions, style_regions, masks_carried)
    return memory.plan_scales(shapes, [size for size, _, _ in schedule], [s for _, s, _ in schedule],
                              [steps for _, _, steps in schedule], params)


def _coarse_iterations(params: StyleTransferParams) -> int:
    return params.iterations if params.scale_iterations is None else params.scale_iterations
