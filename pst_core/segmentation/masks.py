"""Soft regions brought back to an image's own resolution."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def regions_at_size(regions: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(K, h, w) soft masks -> (K, H, W), bilinear, renormalised to sum to 1 per pixel."""
    if regions.shape[1:] == tuple(shape):
        return regions.astype(np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(regions, dtype=np.float32))[None]
    out = F.interpolate(tensor, size=shape, mode="bilinear", align_corners=False)[0].clamp_min(0)
    return (out / out.sum(0, keepdim=True).clamp_min(1e-8)).numpy()
