"""Regions drawn by hand: a label image (one flat colour per region) instead of automatic segmentation.

Regions are numbered by sorting the distinct colours (grey levels ascending; colours by red, then
green, then blue), so a grey PNG holding 0, 1, 2 gives regions 0, 1, 2. ``pst segment`` writes a
palette PNG whose indices are the region numbers and whose colours sort in index order, so it reads
back with the same numbering, also after a paint program has saved it as RGB.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pst_core.errors import InputError
from pst_core.load import read_image

MAX_LABELS = 64  # as fuse_segmentation.k
ASPECT_TOLERANCE = 0.02  # relative: a label image drawn over a resized copy still fits


def _label_palette() -> np.ndarray:
    """(MAX_LABELS, 3) uint8 colours in ascending (red, green, blue) order, distinct at a glance for the
    first seven (Okabe and Ito's colour-blind-safe set), then reds of rising green for the rest."""
    first = [(0, 114, 178), (0, 158, 115), (86, 180, 233), (204, 121, 167), (213, 94, 0), (230, 159, 0),
             (240, 228, 66)]
    rest = [(241 + i // 4, (40, 90, 170, 230)[i % 4], (40, 200, 90, 230)[i % 4]) for i in range(MAX_LABELS - 7)]
    return np.array(first + rest, np.uint8)


LABEL_PALETTE = _label_palette()


def save_labels(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write (H, W) region numbers as a palette PNG: index = region number, one distinct colour each."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8))
    image.putpalette(LABEL_PALETTE.ravel().tolist())  # turns the grey image into a palette image
    image.save(file, format="PNG")


def labels_role(side: str) -> str:
    """How errors name a side's label image: by the parameter that gave it."""
    return f"{side}.fuse_segmentation.labels"


@dataclass
class LabelImage:
    path: str
    index: np.ndarray  # (H, W) int64 region of each pixel
    count: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.index.shape

    def digest(self) -> str:
        """What identifies the regions in a cache key: the label map, not the file's name or colours."""
        digest = hashlib.sha256(f"{self.index.shape}:{self.count}".encode())
        digest.update(np.ascontiguousarray(self.index, dtype=np.int64).tobytes())
        return digest.hexdigest()


def read_labels(path: str, max_pixels: int, role: str) -> LabelImage:
    """Decode a label image; an ``InputError`` naming the file if it is unreadable or has too many colours."""
    pixels = read_image(path, max_pixels, role=role)
    # 16 bits per channel keeps 8- and 16-bit colours distinct; sorting the packed keys sorts R, G, B.
    q = np.rint(pixels * 65535).astype(np.int64)
    keys = (q[0] << 32) | (q[1] << 16) | q[2]
    colours, index = np.unique(keys.ravel(), return_inverse=True)
    if len(colours) > MAX_LABELS:
        raise InputError(f"{role} {path!r}: {len(colours)} distinct colours; a label image holds one flat colour "
                         f"per region, at most {MAX_LABELS} (save it as PNG: JPEG adds colours)")
    return LabelImage(str(path), index.reshape(keys.shape), len(colours))


def check_fits(labels: LabelImage, image_shape: tuple[int, int], role: str) -> None:
    """The label image must cover the image: same aspect ratio (any resolution). ``labels``: anything with
    the label image's ``path`` and ``shape``."""
    (h, w), (lh, lw) = image_shape, labels.shape
    if abs((lh / lw) / (h / w) - 1) > ASPECT_TOLERANCE:
        raise InputError(f"{role} {labels.path!r}: {lw}x{lh} does not fit the {w}x{h} image "
                         "(a label image needs the image's aspect ratio)")


def label_masks(labels: LabelImage, shape: tuple[int, int]) -> np.ndarray:
    """(count, h, w) soft masks summing to 1 per pixel: hard inside regions, area-averaged at edges."""
    h, w = shape
    # Nearest-neighbour to twice the working size first, so memory stays count x (2h x 2w) whatever the
    # label file's resolution; the 2x2 area average then gives the edges their mixed weights.
    index = torch.from_numpy(labels.index)[None, None].float()
    index = F.interpolate(index, size=(2 * h, 2 * w), mode="nearest-exact")[0, 0].long()
    one_hot = F.one_hot(index, labels.count).permute(2, 0, 1).float()
    masks = F.avg_pool2d(one_hot[None], 2)[0]
    return masks.numpy().astype(np.float32)
