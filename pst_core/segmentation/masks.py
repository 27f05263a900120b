"""Resampling soft region masks, in one place: down to a layer's resolution by area averaging (the
transfer's statistics, the region mapping, the quality measures), up to an image's resolution
(segmentation works at a bounded size)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(K,H,W) soft masks -> (K,h,w) by area averaging (a downsampled mask keeps its mass fraction)."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    mode = "area" if size[0] <= masks.shape[-2] and size[1] <= masks.shape[-1] else "bilinear"
    extra = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(masks[None], size=size, mode=mode, **extra)[0]


def regions_at_size(regions: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(K, h, w) soft masks -> (K, H, W), bilinear, renormalised to sum to 1 per pixel."""
    if regions.shape[1:] == tuple(shape):
        return regions.astype(np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(regions, dtype=np.float32))[None]
    out = F.interpolate(tensor, size=shape, mode="bilinear", align_corners=False)[0].clamp_min(0)
    return (out / out.sum(0, keepdim=True).clamp_min(1e-8)).numpy()
