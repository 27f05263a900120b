"""Per-layer soft clusters brought back to image resolution, as per-pixel distributions over K.

Colour features (layer ``rgb``) are CIE Lab (D65) of the image (``color.spaces``); the head
standardises them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pst_core.color.spaces import srgb_to_lab
from pst_core.errors import ConfigError
from pst_core.features import reflected_features
from pst_core.segmentation.cluster_layer import ClusterHead
from pst_core.segmentation.texture import gaussian_blur, normalise


def layer_features(image: torch.Tensor, vgg, layer: str) -> torch.Tensor:
    """The features cluster_layer clusters: (C, h, w) activations of ``layer``, or Lab for 'rgb'."""
    if layer == "rgb":
        return srgb_to_lab(image)
    return reflected_features(vgg, image[None], [layer])[layer][0]


def _vjp_maps(image: torch.Tensor, vgg, layer: str, head: ClusterHead) -> torch.Tensor:
    """|d(sum_x p_k(x)) / d image| summed over colour channels, for every k at once."""
    x = image.detach().float().clone().requires_grad_(True)
    p = head.probs(reflected_features(vgg, x[None], [layer])[layer][0])
    mass = p.sum((1, 2))
    # One batched backward (vmap over the K one-hot cotangents) reuses the single forward graph.
    (grads,) = torch.autograd.grad(mass, x, torch.eye(head.k, device=x.device),
                               is_grads_batched=True)
    maps = grads.abs().sum(1)
    # Raw gradient magnitudes differ in scale between clusters; give each map its cluster's mass.
    share = p.detach().mean((1, 2))
    return maps / maps.mean((1, 2), keepdim=True).clamp_min(1e-20) * share.view(-1, 1, 1)


def backprop_indicators(image: torch.Tensor, vgg, layer: str, head: ClusterHead, *, method: str = "vjp",
                        blur: float = 2.0, features: torch.Tensor | None = None) -> torch.Tensor:
    """image (3, H, W) in [0, 1] -> (K, H, W) per-pixel distributions over the head's clusters.

    rgb: the head applied to the image's colour features. Otherwise ``vjp`` (|d sum p_k / d image|
    through head and VGG) or ``upsample`` (bilinear p_k). Blur sigma is in image pixels.
    ``features``: the layer's activations when the caller has them (upsample then runs no network).
    """
    h, w = image.shape[-2:]
    if layer == "rgb":
        with torch.no_grad():
            maps = head.probs(srgb_to_lab(image))
    elif method == "upsample":
        with torch.no_grad():
            p = head.probs(layer_features(image, vgg, layer) if features is None else features)
            maps = F.interpolate(p[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    elif method == "vjp":
        maps = _vjp_maps(image, vgg, layer, head)
    else:
        raise ConfigError(f"backprop_clusters.method: unknown method {method!r} (vjp or upsample)")
    return normalise(gaussian_blur(maps.detach(), blur))
