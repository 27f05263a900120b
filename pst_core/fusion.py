"""Fusion: one more maximum-entropy clustering, over the stacked per-layer indicators."""

from __future__ import annotations

import torch

from .backprop import colour_features
from .errors import ConfigError
from .maxent import ClusterHead, maxent_cluster


def fuse_indicators(indicators: dict[str, torch.Tensor], *, k: int, layer_weights: dict[str, float] | None = None,
                    iterations: int = 300, entropy_weight: float = 1.0, balance_weight: float = 1.0,
                    smoothness: float = 0.0, coords_weight: float = 0.0, lr: float = 0.05, seed: int = 0,
                    image: torch.Tensor | None = None, colour_weight: float = 0.0
                    ) -> tuple[ClusterHead, torch.Tensor]:
    """{layer: (K_l, H, W)} at image resolution -> (head, regions (k, H, W)), largest region first.

    Each indicator channel is standardised, then multiplied by its layer's weight (default 1), so
    the weights say how much each layer counts whatever its scale. Layers are stacked in name order
    so the result does not depend on dict order.
    With ``image`` and ``colour_weight`` > 0 the image's own Lab colour joins as three more channels:
    the clustered colour indicators keep only K_rgb cluster memberships, raw colour keeps the nuance
    (measured on seg_dev at K=4, 256 px: 0.654 -> 0.675 best-union IoU).
    """
    if not indicators:
        raise ConfigError("fuse_segmentation: no indicators to fuse")
    weights = dict(layer_weights or {})
    if image is not None and colour_weight > 0:
        indicators = {**indicators, " colour": colour_features(image)}  # the space keeps it off layer names
        weights[" colour"] = colour_weight
    unknown = sorted(set(weights) - set(indicators))
    if unknown:
        raise ConfigError(f"fuse_segmentation.layer_weights: no indicators for layer(s) {unknown}")
    names = sorted(indicators)
    stacked = torch.cat([indicators[name].float() for name in names])
    channel_weights = torch.cat([torch.full((indicators[name].shape[0],), float(weights.get(name, 1.0)))
                                 for name in names])
    head, probs, _ = maxent_cluster(stacked, k, iterations=iterations, entropy_weight=entropy_weight,
                                    balance_weight=balance_weight, smoothness=smoothness,
                                    coords_weight=coords_weight, lr=lr, seed=seed, channel_weights=channel_weights)
    # Stable sort on negated mass: ties keep cluster order, so the labelling is deterministic.
    order = sorted(range(k), key=lambda j: -float(probs[j].sum()))
    return head.permuted(order), probs[order]
