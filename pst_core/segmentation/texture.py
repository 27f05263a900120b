"""Scale-space tools for telling regions apart by texture: smoothing, local energy, confidence.

Raw activations oscillate with a texture's phase (a stripe filter fires on the stripe, not between
them), so clustering them splits a texture into its light and dark parts. Their local energy, the
square root of the mean square over a Gaussian window, is the same all over a texture and differs
between textures of another orientation, period or kind.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (K, H, W) maps, reflecting at the borders."""
    if sigma <= 0:
        return maps
    radius = min(int(math.ceil(3 * sigma)), maps.shape[-2] - 1, maps.shape[-1] - 1)
    if radius < 1:
        return maps
    t = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = maps.shape[0]
    # One depthwise convolution over all maps (groups=c): many times faster on CPUs than a batch of
    # single-channel images.
    x = F.pad(maps[None], (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


def local_energy(features: torch.Tensor, window: float) -> torch.Tensor:
    """(C, h, w) -> (C, h, w): sqrt of each channel's mean square over a Gaussian window whose sigma is
    ``window`` times the map's longer side (so the same fraction of the image at every layer)."""
    h, w = features.shape[-2:]
    sigma = window * max(h, w)
    energy = features.float().square()
    # The result is smooth at the scale sigma: average s x s cells first and blur the small map (the
    # same result within a few percent, many times faster than a wide kernel at full resolution).
    step = max(1, min(int(sigma / 2), h, w))
    if step > 1:
        energy = F.avg_pool2d(energy[None], step, ceil_mode=True)[0]
    energy = gaussian_blur(energy, sigma / step)
    if step > 1:
        energy = F.interpolate(energy[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return energy.clamp_min(1e-12).sqrt()  # clamped: no infinite gradient where a channel is silent


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Per-pixel distribution over K; a pixel with no evidence at all becomes uniform."""
    maps = maps.clamp_min(0) + 1e-12
    return maps / maps.sum(0, keepdim=True)


def confidence(probs: torch.Tensor, window: float) -> float:
    """How well a soft clustering (K, H, W) separates the image, in [0, 1]: the mutual information
    between pixel and cluster over log K, measured after blurring by ``window`` times the longer side.
    The blur is the scale space: clusters that alternate within a texture (light and dark stripes)
    mix and lose their confidence, regions larger than the window keep it."""
    k = probs.shape[0]
    if k < 2:
        return 0.0
    p = normalise(gaussian_blur(probs.float(), window * max(probs.shape[-2:])))
    mass = p.mean((1, 2))
    spread = -(mass * (mass + 1e-12).log()).sum()
    per_pixel = -(p * (p + 1e-12).log()).sum(0).mean()
    return float((spread - per_pixel).clamp_min(0) / math.log(k))
