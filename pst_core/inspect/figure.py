"""The comparison figure: what partitioning does, side by side, labelled.

content | style | content regions | style regions | K=1 output | partitioned output

Regions are drawn in the colour of the style region they take their style from (the content's) or
are (the style's), so the mapping reads off the picture.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pst_core.inspect.render import mapping_pictures, to_pil

PANEL = 256  # height of each panel, pixels
_TITLE = 26


def _panel(picture: Image.Image, title: str, font) -> Image.Image:
    width = max(1, round(picture.width * PANEL / picture.height))
    resample = Image.NEAREST if picture.mode == "P" else Image.LANCZOS
    body = picture.convert("RGB").resize((width, PANEL), resample)
    out = Image.new("RGB", (width, PANEL + _TITLE), "white")
    out.paste(body, (0, _TITLE))
    draw = ImageDraw.Draw(out)
    draw.text((6, 4), title, fill="black", font=font)
    return out


def comparison_figure(content: np.ndarray, style: np.ndarray, content_regions: np.ndarray,
                      style_regions: np.ndarray, mapping: dict[int, int], plain: np.ndarray,
                      partitioned: np.ndarray) -> Image.Image:
    """Images (3, H, W) in [0, 1]; regions (K, H, W) soft; mapping {content region: style region}."""
    font = ImageFont.load_default(size=15)
    content_map, style_map = mapping_pictures(content_regions, style_regions, mapping)
    panels = [(to_pil(content), "content"), (to_pil(style), "style"),
              (content_map, f"content: {len(content_regions)} regions"),
              (style_map, f"style: {len(style_regions)} regions"),
              (to_pil(plain), "K=1 (no regions)"), (to_pil(partitioned), "partitioned")]
    tiles = [_panel(picture, title, font) for picture, title in panels]
    gap = 6
    figure = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1), tiles[0].height), "white")
    x = 0
    for tile in tiles:
        figure.paste(tile, (x, 0))
        x += tile.width + gap
    return figure
