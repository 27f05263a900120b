"""The demo's two images, made here (no third-party content, so freely usable) and shipped with the
package: ``content.png``, a landscape (sky, sun, hills with grass noise), and ``style.png``, two
textures of different colours, warm brush-like waves on top and cool dots below, so that partitioned
transfer has two clearly different style regions to map.

``bundled()`` gives their paths wherever the package is installed; ``python -m pst_core.demo.images``
draws them again into the package folder (the same pixels: the noise is seeded).
"""

from __future__ import annotations

from contextlib import contextmanager
from importlib.resources import as_file, files
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

SIZE = 256


@contextmanager
def bundled() -> Iterator[tuple[Path, Path]]:
    """The installed content and style images as files (content, style)."""
    folder = files(__package__)
    with as_file(folder / "content.png") as content, as_file(folder / "style.png") as style:
        yield content, style


def _grid() -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    return y, x


def content_image() -> np.ndarray:
    """(H, W, 3) in [0, 1]: sky gradient, sun disk, two hills."""
    rng = np.random.default_rng(7)
    y, x = _grid()
    sky = np.stack([0.35 + 0.3 * y, 0.55 + 0.3 * y, 0.95 - 0.1 * y], -1)
    content = sky.copy()
    sun = (x - 0.72) ** 2 + (y - 0.25) ** 2 < 0.012
    content[sun] = [1.0, 0.85, 0.3]
    hill1 = y > 0.62 + 0.12 * np.sin(3.2 * x + 0.5)
    hill2 = y > 0.75 + 0.08 * np.cos(5 * x)
    grass = 0.08 * rng.standard_normal((SIZE, SIZE))
    content[hill1] = np.stack([0.25 + grass, 0.55 + grass, 0.2 + grass / 2], -1)[hill1]
    content[hill2] = np.stack([0.15 + grass, 0.4 + grass, 0.12 + grass / 2], -1)[hill2]
    return content


def style_image() -> np.ndarray:
    """(H, W, 3) in [0, 1]: warm waves on top, cool dots below."""
    y, x = _grid()
    style = np.zeros((SIZE, SIZE, 3))
    waves = 0.5 + 0.5 * np.sin(40 * x + 6 * np.sin(9 * y))
    style[:] = np.stack([0.9 * waves + 0.1, 0.45 * waves + 0.1, 0.1 + 0.1 * waves], -1)
    dots = ((x * 16) % 1 - 0.5) ** 2 + ((y * 16) % 1 - 0.5) ** 2 < 0.09
    cool = np.where(dots, 0.95, 0.15)
    bottom = y > 0.5
    style[bottom] = np.stack([0.1 + 0.2 * cool, 0.3 + 0.3 * cool, 0.4 + 0.55 * cool], -1)[bottom]
    return style


def save(folder: Path) -> None:
    for name, image in (("content.png", content_image()), ("style.png", style_image())):
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(folder / name)


if __name__ == "__main__":
    save(Path(__file__).resolve().parent)
