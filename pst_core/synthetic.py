"""Synthetic scenes with known regions, for tests and benchmarks (no files, no downloads)."""

from __future__ import annotations

import numpy as np


def _soft_step(distance: np.ndarray, width: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-distance / width))


def disk_scene(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Content: a bright disk (region 0) on a darker ground (region 1), smooth shading, soft masks."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    inside = _soft_step(0.3 - np.hypot(yy - 0.5, xx - 0.5), 1.0 / size)
    shade = 0.1 * (xx - 0.5)
    disk, ground = np.array([0.75, 0.7, 0.6])[:, None, None], np.array([0.35, 0.4, 0.3])[:, None, None]
    image = inside * disk + (1 - inside) * ground
    masks = np.stack([inside, 1 - inside])
    return (image + shade).clip(0, 1).astype(np.float32), masks.astype(np.float32)


def two_texture_style(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Style: red horizontal stripes on the left half (region 0), blue dots on the right (region 1)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    period = max(4, size // 10)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * yy / period)
    dots = (np.hypot((yy % period) - period / 2, (xx % period) - period / 2) < period / 4).astype(np.float64)
    left = np.stack([0.5 + 0.5 * stripes, 0.15 * stripes, 0.1 + 0 * stripes])
    right = np.stack([0.1 + 0.1 * dots, 0.3 + 0.4 * dots, 0.9 - 0.5 * dots])
    side = _soft_step(size / 2 - 0.5 - xx, 1.0)
    image = side * left + (1 - side) * right
    return image.astype(np.float32), np.stack([side, 1 - side]).astype(np.float32)
