"""Partitioned style transfer: each content region takes the style of its mapped style region.

K = 1 (one all-ones mask per side) is plain, unpartitioned transfer through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .config import RegionSettings, StyleTransferParams
from .errors import ComputeError, ConfigError
from .losses import STATISTICS, ContentLoss, MaskedStyleLoss, Region, masked_grams, total_variation
from .mapping import map_regions, resize_masks

__all__ = ["StyleResult", "transfer", "map_regions"]


@dataclass
class StyleResult:
    image: np.ndarray  # (3,H,W) float32 within the inputs' per-channel range (at least [0,1])
    mapping: dict[int, int]
    history: list[dict] = field(default_factory=list)  # per iteration: scale, iteration, total, content, style, tv
    snapshots: list[tuple[int, np.ndarray]] = field(default_factory=list)


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)


def _check_inputs(content, style, content_masks, style_masks, vgg, params, device) -> None:
    for name, array in (("content image", content), ("style image", style),
                        ("content masks", content_masks), ("style masks", style_masks)):
        _check_finite(name, array)
    if content_masks.shape[1:] != content.shape[1:] or style_masks.shape[1:] != style.shape[1:]:
        raise ConfigError(f"style_transfer: masks {content_masks.shape[1:]} / {style_masks.shape[1:]} must match "
                          f"their images' sizes {content.shape[1:]} / {style.shape[1:]}")
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
    """All losses of one scale: content, masked style per mapped pair and layer, total variation."""

    def __init__(self, vgg, content, style, cmasks, smasks, mapping, params: StyleTransferParams):
        settings = [params.regions.get(r, RegionSettings()) for r in range(len(cmasks))]
        style_layers = {r: s.style_layers or params.style_layers for r, s in enumerate(settings)}
        self.layers = sorted(set(params.content_layers).union(*style_layers.values()))
        self.vgg, self.tv_weight = vgg, params.tv_weight
        with torch.no_grad():
            c_feats = vgg(content, self.layers)
            s_feats = vgg(style, sorted(set().union(*style_layers.values())))

        active = [r for r, s in enumerate(settings) if not s.keep_content]
        self.style_losses: list[MaskedStyleLoss] = []
        self.regions: dict[str, list[Region]] = {}  # per layer, so its K Grams are one autograd node
        for r in active:
            weight = settings[r].style_weight if settings[r].style_weight is not None else params.style_weight
            for layer in style_layers[r]:
                region = Region(resize_masks(cmasks[r:r + 1], c_feats[layer].shape[-2:])[0])
                target = Region(resize_masks(smasks[mapping[r]:mapping[r] + 1], s_feats[layer].shape[-2:])[0])
                if region.empty or target.empty:
                    continue
                statistic = STATISTICS[params.loss](s_feats[layer][0], target)
                # Regions count alike (Gatys et al.'s 1/R), layers count alike within a region.
                slots = self.regions.setdefault(layer, [])
                slots.append(region)
                self.style_losses.append(MaskedStyleLoss(
                    layer, statistic, region, weight / (len(style_layers[r]) * len(active)), len(slots) - 1))

        cweights = torch.tensor([s.content_weight if s.content_weight is not None else params.content_weight
                                 for s in settings], dtype=content.dtype, device=content.device)
        weight_map = (cweights[:, None, None] * cmasks).sum(0, keepdim=True)
        self.content_losses = [
            ContentLoss(layer, c_feats[layer], resize_masks(weight_map, c_feats[layer].shape[-2:])[None]
                        / len(params.content_layers))
            for layer in params.content_layers]

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.vgg(image, self.layers)
        zero = image.new_zeros(())
        content = sum((loss(feats) for loss in self.content_losses), zero)
        grams = {layer: masked_grams(feats[layer][0], regions) for layer, regions in self.regions.items()}
        style = sum((loss(feats, grams) for loss in self.style_losses), zero)
        tv = self.tv_weight * total_variation(image) if self.tv_weight else zero
        return {"total": content + style + tv, "content": content, "style": style, "tv": tv}


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
    if params.init == "content":
        return content.clone()
    if params.init == "style":
        return _resize(style, content.shape[-2:]).clone()
    generator = torch.Generator().manual_seed(params.seed)
    return torch.rand(content.shape, generator=generator).to(content)


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
             vgg, params: StyleTransferParams, *, device="cpu", progress: Callable[[dict], None] | None = None,
             snapshot: Callable[[int, np.ndarray], None] | None = None) -> StyleResult:
    """content (3,H,W), style (3,Hs,Ws) in [0,1] or, colour-normalised, somewhat beyond; masks (Kc,H,W), (Ks,Hs,Ws) soft,
    summing to 1 per pixel, at the images' resolution. progress(dict) called each iteration; snapshot(iteration,
    image) every params.snapshot_every iterations (at the current scale's size)."""
    _check_inputs(content, style, content_masks, style_masks, vgg, params, device)
    if hasattr(vgg, "with_pooling"):
        vgg = vgg.with_pooling(params.pooling)

    def tensor(a):
        return torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)

    c_full, s_full = tensor(content)[None], tensor(style)[None]
    cm_full, sm_full = tensor(content_masks), tensor(style_masks)
    features = None
    if params.mapping == "auto" and len(style_masks) > 1:
        with torch.no_grad():
            features = (vgg(c_full, [params.mapping_layer])[params.mapping_layer][0],
                        vgg(s_full, [params.mapping_layer])[params.mapping_layer][0])
    mapping = map_regions(cm_full.cpu(), sm_full.cpu(), params.mapping,
                          content_features=None if features is None else features[0].cpu(),
                          style_features=None if features is None else features[1].cpu())

    # Colour-normalised inputs can leave [0, 1] (the transform is not clipped, so its inverse stays
    # exact): the output may span the inputs' range per channel, or the inverse would bend clipped colours.
    low = torch.minimum(c_full.amin((0, 2, 3)), s_full.amin((0, 2, 3))).clamp_max(0).view(1, 3, 1, 1)
    high = torch.maximum(c_full.amax((0, 2, 3)), s_full.amax((0, 2, 3))).clamp_min(1).view(1, 3, 1, 1)
    result = StyleResult(image=np.empty(0, np.float32), mapping=mapping)
    sizes = _scale_sizes(tuple(content.shape[1:]), params.min_size)
    total = params.iterations + (len(sizes) - 1) * _coarse_iterations(params)
    iteration = 0
    x = None
    for scale, size in enumerate(sizes):
        factor = size[0] / content.shape[1]
        s_size = tuple(min(n, max(16, round(n * factor))) for n in style.shape[1:])
        c, s = _resize(c_full, size), _resize(s_full, s_size)
        cm, sm = resize_masks(cm_full, size), resize_masks(sm_full, s_size)
        objective = _Objective(vgg, c, s, cm, sm, mapping, params)
        kept = [cm[r] for r, st in params.regions.items() if st.keep_content]
        keep = sum(kept[1:], kept[0]) if kept else None
        x = _initial(params, c, s) if x is None else F.interpolate(x, size=size, mode="bicubic", align_corners=False)
        x = x.clamp(low, high).requires_grad_(True)

        def compose(x=x, c=c, keep=keep):
            # keep_content regions are pinned to the content: no gradient ever reaches their pixels.
            return x if keep is None else keep * c + (1 - keep) * x

        steps = params.iterations if scale == len(sizes) - 1 else _coarse_iterations(params)
        if params.optimizer == "lbfgs":
            # Fixed iteration count: no early stops, one function evaluation per iteration.
            optimizer = torch.optim.LBFGS([x], lr=1, max_iter=1, history_size=params.lbfgs_history,
                                          tolerance_grad=0, tolerance_change=0)
        else:
            optimizer = torch.optim.Adam([x], lr=params.lr, betas=(0.9, 0.99))
        average = _Average(params.average) if params.optimizer == "adam" and params.average else None
        for _ in range(steps):
            iteration += 1
            record: dict = {}

            def closure():
                optimizer.zero_grad()
                losses = objective(compose())
                if not torch.isfinite(losses["total"]):
                    value = float(losses["total"].detach())
                    raise ComputeError(f"style_transfer: the loss became non-finite ({value}) at scale {scale} "
                                       f"iteration {iteration}; lower style_weight/lr or check the inputs")
                losses["total"].backward()
                record.update({k: float(v.detach()) for k, v in losses.items()})
                return losses["total"]

            optimizer.step(closure)
            if params.optimizer == "adam":
                with torch.no_grad():
                    x.clamp_(low, high)  # L-BFGS would take a clamp for a step of its own: its output is clipped
            if average:
                average.update(compose().detach())
            entry = {"scale": scale, "iteration": iteration, "of": total, "size": list(size), **record}
            result.history.append(entry)
            if progress:
                progress(entry)
            if params.snapshot_every and iteration % params.snapshot_every == 0:
                image = torch.clamp(average.get(compose().detach()) if average else compose().detach(), low, high)
                image = image[0].cpu().numpy()
                result.snapshots.append((iteration, image))
                if snapshot:
                    snapshot(iteration, image)
        x = average.get(compose().detach()) if average else compose().detach()

    image = torch.clamp(x, low, high)[0].cpu().numpy().astype(np.float32)
    if not np.isfinite(image).all():
        raise ComputeError("style_transfer: the optimised image is not finite")
    result.image = image
    return result


def _coarse_iterations(params: StyleTransferParams) -> int:
    return params.iterations if params.scale_iterations is None else params.scale_iterations
