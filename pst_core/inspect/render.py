"""Pictures of store arrays: images, colour-coded labels, per-cluster heat maps."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image


def palette(n: int) -> np.ndarray:
    """n well-separated colours (uint8, (n, 3)), the same for every picture."""
    golden = 0.618033988749895
    return np.array([[int(255 * c) for c in colorsys.hsv_to_rgb((i * golden) % 1.0, 0.75, 0.95)]
                     for i in range(n)], np.uint8)


def to_pil(image: np.ndarray) -> Image.Image:
    """(3, H, W) float in [0, 1] -> RGB picture."""
    return Image.fromarray((np.clip(image, 0, 1).transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8))


def labels_picture(soft: np.ndarray, size: tuple[int, int] | None = None,
                   colours: np.ndarray | None = None) -> Image.Image:
    """(K, h, w) soft maps -> the most probable label per pixel, colour-coded; resized to ``size`` (W, H)."""
    colours = palette(soft.shape[0]) if colours is None else colours
    picture = Image.fromarray(colours[soft.argmax(0)])
    return picture.resize(size, Image.NEAREST) if size and picture.size != size else picture


def heat_picture(weight: np.ndarray, image: np.ndarray) -> Image.Image:
    """One cluster's (h, w) probability over the image: the image dimmed where the weight is low."""
    base = to_pil(image)
    heat = Image.fromarray((np.clip(weight, 0, 1) * 255).astype(np.uint8)).resize(base.size, Image.BILINEAR)
    alpha = np.asarray(heat, np.float32)[..., None] / 255
    red = np.array([255, 40, 40], np.float32)
    blended = np.asarray(base, np.float32) * (0.25 + 0.75 * alpha) * 0.7 + red * alpha * 0.3
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))


def mapping_pictures(content_regions: np.ndarray, style_regions: np.ndarray, mapping: dict[int, int]
                     ) -> tuple[Image.Image, Image.Image]:
    """Style regions in their own colours; each content region in the colour of its style region."""
    colours = palette(max(style_regions.shape[0], 1))
    grey = np.array([128, 128, 128], np.uint8)
    content_colours = np.stack([colours[mapping[c]] if c in mapping else grey
                                for c in range(content_regions.shape[0])])
    return labels_picture(content_regions, colours=content_colours), labels_picture(style_regions, colours=colours)
