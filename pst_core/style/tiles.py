"""Tiles: the transfer's network run piece by piece, with the whole image's activations.

A tile answers for its *core* and is computed over a *window*: the core plus a halo as wide as the
receptive field of the deepest layer used, so every activation over the core sees exactly the pixels
it sees in the whole image (zero padding only where the whole image has it too). Tile edges lie on
the grid of the network's largest stride (16 px at relu5_x), so a tile's pooling cells are the whole
image's. The activations of the cores, put side by side, are then the whole image's up to rounding,
and memory grows with the window, not the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pst_core.config.schema import GRID  # tile edges on this grid keep pooled activations aligned
from pst_core.features import LAYER_INDEX, LAYER_NAMES, LAYER_STRIDE

# Passes without gradient over larger images run in tiles of this side: about 1 GiB of activations
# down to relu5_1, and images up to this size run whole, as before tiles existed.
FORWARD_TILE = 1024


def halo(layers: list[str]) -> int:
    """Pixels of context a core needs on each side for the deepest of ``layers``, rounded up to GRID.

    An activation at index i of a layer with stride J depends on the input pixels [i J - left,
    i J + right]; the core's last index is (end / J) - 1, so the window must reach right - J + 1
    pixels past the core's end and ``left`` before its start.
    """
    jump, left, right, need = 1, 0, 0, 0
    wanted = set(layers)
    for name in LAYER_NAMES[:max(LAYER_INDEX[name] for name in layers) + 1]:
        if name.startswith("conv"):  # 3x3, padding 1
            left, right = left + jump, right + jump
        elif name.startswith("pool"):  # 2x2, stride 2: each output also covers the next input
            right += jump
            jump *= 2
        if name in wanted:
            need = max(need, left, right - jump + 1)
    return math.ceil(need / GRID) * GRID


@dataclass(frozen=True)
class Tile:
    """A core (the pixels this tile answers for) and its window (core plus halo), as pixel bounds."""

    core: tuple[int, int, int, int]  # y0, y1, x0, x1
    window: tuple[int, int, int, int]

    def window_slices(self) -> tuple[slice, slice]:
        y0, y1, x0, x1 = self.window
        return slice(y0, y1), slice(x0, x1)

    def at_layer(self, layer: str) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
        """The core at ``layer``'s resolution: (rows, cols) in the whole image's activation, and the
        same pixels in the window's activation. Core edges are on the GRID (or the image's edge, where
        the whole image's activation ends at the same floor), so both are exact."""
        s = LAYER_STRIDE[layer]
        (y0, y1, x0, x1), (wy0, _, wx0, _) = self.core, self.window
        whole = (slice(y0 // s, y1 // s), slice(x0 // s, x1 // s))
        local = (slice(y0 // s - wy0 // s, y1 // s - wy0 // s), slice(x0 // s - wx0 // s, x1 // s - wx0 // s))
        return whole, local


def _edges(length: int, tile: int, offset: int) -> list[int]:
    inner = [e for e in range(offset % tile, length, tile) if 0 < e < length]
    return [0, *inner, length]


def grid(shape: tuple[int, int], tile: int | None, margin: int, offset: tuple[int, int] = (0, 0)) -> list[Tile]:
    """Tiles covering an image of ``shape``: cores ``tile`` px square (multiples of GRID) whose edges
    are shifted by ``offset`` (multiples of GRID), windows ``margin`` px wider on every side within
    the image. ``tile`` None, or not smaller than the image: one tile, the whole image."""
    h, w = shape
    if tile is None or (tile >= h and tile >= w):
        return [Tile((0, h, 0, w), (0, h, 0, w))]
    if tile % GRID or any(o % GRID for o in offset):
        raise ValueError(f"tile {tile} and offset {offset} must be multiples of {GRID}")
    tiles = []
    ys, xs = _edges(h, tile, offset[0]), _edges(w, tile, offset[1])
    for y0, y1 in zip(ys, ys[1:]):
        for x0, x1 in zip(xs, xs[1:]):
            window = (max(0, y0 - margin), min(h, y1 + margin), max(0, x0 - margin), min(w, x1 + margin))
            tiles.append(Tile((y0, y1, x0, x1), window))
    return tiles


def features(vgg, image: torch.Tensor, layers: list[str], tiles: list[Tile]) -> dict[str, torch.Tensor]:
    """The whole image's activations {layer: (1, C, h, w)}, computed tile by tile (no gradient)."""
    with torch.no_grad():
        if len(tiles) == 1:
            return vgg(image, layers)
        out: dict[str, torch.Tensor] = {}
        for tile in tiles:
            acts = vgg(image[(..., *tile.window_slices())], layers)
            for layer, act in acts.items():
                if layer not in out:
                    s = LAYER_STRIDE[layer]
                    out[layer] = act.new_empty(act.shape[0], act.shape[1], image.shape[-2] // s,
                                               image.shape[-1] // s)
                whole, local = tile.at_layer(layer)
                out[layer][(..., *whole)] = act[(..., *local)]
            del acts, act  # this tile's activations, before the next tile's pass
        return out


def forward(vgg, image: torch.Tensor, layers: list[str], tile: int = FORWARD_TILE) -> dict[str, torch.Tensor]:
    """``features`` over tiles of ``tile`` px (one tile, the whole image, where it is no larger)."""
    return features(vgg, image, layers, grid(image.shape[-2:], tile, halo(layers)))
