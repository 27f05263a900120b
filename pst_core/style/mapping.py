"""Which style region styles which content region."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from pst_core.errors import ConfigError
from pst_core.segmentation.masks import resize_masks

_EXACT_MAX_K = 7  # up to 7! = 5040 permutations an exhaustive assignment is instant


def _descriptors(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Masked mean and standard deviation of each channel: (K, 2C)."""
    f = features.flatten(1).double()
    w = resize_masks(masks.to(features), features.shape[-2:]).flatten(1).double()
    w = w / w.sum(1, keepdim=True).clamp_min(1e-12)
    mean = w @ f.T
    std = (w @ (f.T ** 2) - mean ** 2).clamp_min(0).sqrt()
    return torch.cat([mean, std], 1)


def _assign(cost: np.ndarray) -> dict[int, int]:
    """One-to-one assignment of rows to columns of a square cost matrix (exact, or greedy when large)."""
    k = len(cost)
    if k <= _EXACT_MAX_K:
        best = min(itertools.permutations(range(k)), key=lambda p: cost[range(k), p].sum())
        return {r: int(c) for r, c in enumerate(best)}
    out: dict[int, int] = {}
    for flat in np.argsort(cost, axis=None):
        r, c = divmod(int(flat), k)
        if r not in out and c not in out.values():
            out[r] = c
    return out


def map_regions(content_masks, style_masks, mode, *, content_features=None, style_features=None) -> dict[int, int]:
    """{content region: style region}.

    mode: ``auto`` (regions with the most similar masked VGG feature statistics; one-to-one when the
    region counts match, otherwise each content region takes its nearest style region), ``overlap``
    (the style region whose mask, resized to the content's size, overlaps it most) or an explicit dict;
    content regions a dict leaves out are mapped by overlap.
    """
    cm = torch.as_tensor(np.asarray(content_masks), dtype=torch.float32)
    sm = torch.as_tensor(np.asarray(style_masks), dtype=torch.float32)
    kc, ks = len(cm), len(sm)
    if isinstance(mode, dict):
        for c, s in mode.items():
            if not 0 <= int(c) < kc or not 0 <= int(s) < ks:
                raise ConfigError(f"style_transfer.mapping: {{{c}: {s}}} names a region that does not exist "
                                  f"(content has regions 0..{kc - 1}, style 0..{ks - 1})")
        explicit = {int(c): int(s) for c, s in mode.items()}
        missing = [c for c in range(kc) if c not in explicit]
        filled = map_regions(cm, sm, "overlap") if missing else {}
        return {c: explicit.get(c, filled.get(c)) for c in range(kc)}
    if mode == "overlap":
        overlap = cm.flatten(1) @ resize_masks(sm, cm.shape[-2:]).flatten(1).T
        return {c: int(overlap[c].argmax()) for c in range(kc)}
    if mode == "auto":
        if ks == 1:
            return {c: 0 for c in range(kc)}
        if content_features is None or style_features is None:
            raise ConfigError("style_transfer.mapping=auto needs content and style features")
        dc = _descriptors(torch.as_tensor(content_features), cm)
        ds = _descriptors(torch.as_tensor(style_features), sm)
        scale = torch.cat([dc, ds]).std(0).clamp_min(1e-6)  # every statistic counts alike
        cost = torch.cdist(dc / scale, ds / scale).numpy()
        return _assign(cost) if kc == ks else {c: int(cost[c].argmin()) for c in range(kc)}
    raise ConfigError(f"style_transfer.mapping: unknown mode {mode!r} (auto, overlap or {{content: style}})")
