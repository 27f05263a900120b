"""Colour spaces, in one place.

- CIE Lab (D65) from sRGB: segmentation clusters colour in Lab (layer ``rgb``; Lab separates
  lightness from chroma, and k-means on Lab beats k-means on RGB on our labelled set), the fusion
  weighs the image's own Lab beside the indicators, and the quality measures compare palettes in it.
- YIQ (NTSC): luminance-only colour normalisation fits Y and gives the result the content's I and Q.
- luminance: Y of YIQ (Rec. 601 weights), which the quality measures' spectra read.
"""

from __future__ import annotations

import numpy as np
import torch

_SRGB_TO_XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                             [0.2126729, 0.7151522, 0.0721750],
                             [0.0193339, 0.1191920, 0.9503041]])
_WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883])

# RGB -> YIQ; its first row is the luminance.
YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
YIQ_INV = np.linalg.inv(YIQ)


def srgb_to_lab(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) sRGB in [0, 1] -> (3, H, W) CIE Lab."""
    rgb = image.float().clamp(0, 1)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    matrix, white = _SRGB_TO_XYZ.to(rgb.device), _WHITE_D65.to(rgb.device)
    xyz = torch.einsum("ij,jhw->ihw", matrix, linear) / white.view(3, 1, 1)
    f = torch.where(xyz > (6 / 29) ** 3, xyz.clamp_min(1e-12) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return torch.stack([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def rgb_to_yiq(image: np.ndarray) -> np.ndarray:
    """(3, H, W) RGB -> (3, H, W) YIQ, float64."""
    return np.einsum("ij,jhw->ihw", YIQ, image.astype(np.float64))


def yiq_to_rgb(image: np.ndarray) -> np.ndarray:
    """(3, H, W) YIQ -> (3, H, W) RGB, float64."""
    return np.einsum("ij,jhw->ihw", YIQ_INV, image)


def luminance(image: np.ndarray) -> np.ndarray:
    """(3, H, W) RGB -> (H, W) luminance (Y), float64."""
    return np.tensordot(YIQ[0], np.asarray(image, np.float64), axes=1)
