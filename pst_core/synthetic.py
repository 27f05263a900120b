"""Synthetic scenes with known regions, for tests and benchmarks (no files, no downloads).

Textures are luminance patterns of a known structure (stripes, waves, dots, checks, blobs) at a
chosen period and orientation, normalised to zero mean and unit standard deviation, so that regions
built from them can share mean colour and contrast exactly and differ in structure alone. Layouts
are label maps (halves, a disk, strips, quadrants, irregular blobs) with 2 to 4 regions. A mosaic
puts one texture (and one colour) in each region of a layout.
"""

from __future__ import annotations

import numpy as np

TEXTURES = ("stripes", "waves", "dots", "checks", "blobs", "grating")
LAYOUTS = ("halves", "halves_h", "disk", "strips3", "quadrants", "irregular2", "irregular3", "irregular4")


def _soft_step(distance: np.ndarray, width: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-distance / width))


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    return yy, xx


def _rotated(shape, angle_deg: float):
    yy, xx = _grid(shape)
    a = np.deg2rad(angle_deg)
    return xx * np.cos(a) + yy * np.sin(a), -xx * np.sin(a) + yy * np.cos(a)


def _smooth_noise(shape, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise (FFT), correlation length ~ ``scale`` pixels, zero mean unit std."""
    noise = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    sigma = scale / 2.5
    smooth = np.fft.ifft2(np.fft.fft2(noise) * np.exp(-2 * (np.pi * sigma) ** 2 * (fy ** 2 + fx ** 2))).real
    return (smooth - smooth.mean()) / max(smooth.std(), 1e-12)


def texture(kind: str, shape: tuple[int, int], period: float, angle: float = 0.0,
            rng: np.random.Generator | None = None) -> np.ndarray:
    """A luminance pattern (H, W) with zero mean and unit standard deviation.

    ``period`` in pixels (blobs: correlation length); ``angle`` in degrees (the direction across
    which stripes alternate; lattices are rotated by it)."""
    rng = rng or np.random.default_rng(0)
    u, v = _rotated(shape, angle)
    phase = rng.uniform(0, period)
    if kind == "stripes":  # square-wave stripes, half dark half light, slightly softened edges
        pattern = np.tanh(4 * np.sin(2 * np.pi * (u + phase) / period))
    elif kind == "grating":  # a pure sinusoid
        pattern = np.sin(2 * np.pi * (u + phase) / period)
    elif kind == "waves":  # stripes whose phase meanders (the demo's brush-like waves)
        pattern = np.sin(2 * np.pi * (u + phase) / period + 1.2 * np.sin(2 * np.pi * v / (3.5 * period)))
    elif kind == "dots":  # a square lattice of disks
        fu, fv = ((u + phase) % period) / period - 0.5, ((v + phase) % period) / period - 0.5
        pattern = _soft_step(0.22 - np.hypot(fu, fv), 0.02)
    elif kind == "checks":
        pattern = np.tanh(4 * np.sin(2 * np.pi * (u + phase) / period) * np.sin(2 * np.pi * (v + phase) / period))
    elif kind == "blobs":  # thresholded smooth noise: irregular blobs about ``period`` across
        pattern = np.tanh(3 * _smooth_noise(shape, period, rng))
    else:
        raise ValueError(f"unknown texture {kind!r} (choose from {', '.join(TEXTURES)})")
    return (pattern - pattern.mean()) / max(pattern.std(), 1e-12)


def layout(kind: str, shape: tuple[int, int], rng: np.random.Generator | None = None) -> np.ndarray:
    """A label map (H, W) of int64 region numbers 0..n-1."""
    rng = rng or np.random.default_rng(0)
    yy, xx = _grid(shape)
    h, w = shape
    if kind == "halves":  # left | right
        return (xx >= w / 2).astype(np.int64)
    if kind == "halves_h":  # top / bottom
        return (yy >= h / 2).astype(np.int64)
    if kind == "disk":  # a disk (0) in a ground (1)
        cy, cx = h * rng.uniform(0.4, 0.6), w * rng.uniform(0.4, 0.6)
        return (np.hypot(yy - cy, xx - cx) > 0.3 * min(h, w)).astype(np.int64)
    if kind == "strips3":  # three horizontal bands
        return np.minimum((yy * 3 / h).astype(np.int64), 2)
    if kind == "quadrants":
        return (yy >= h / 2).astype(np.int64) * 2 + (xx >= w / 2).astype(np.int64)
    if kind.startswith("irregular"):  # smooth random partition into n regions of similar area
        n = int(kind[len("irregular"):])
        fields = np.stack([_smooth_noise(shape, 0.35 * min(h, w), rng) for _ in range(n)])
        labels = fields.argmax(0)
        if len(np.unique(labels)) < n:  # degenerate draw: fall back to vertical bands
            return np.minimum((xx * n / w).astype(np.int64), n - 1)
        return labels.astype(np.int64)
    raise ValueError(f"unknown layout {kind!r} (choose from {', '.join(LAYOUTS)})")


def colourise(pattern: np.ndarray, mean_rgb, contrast: float = 0.18, tint=(1.0, 1.0, 1.0)) -> np.ndarray:
    """(H, W) zero-mean unit-std pattern -> (3, H, W): ``mean_rgb`` + contrast * tint * pattern."""
    mean = np.asarray(mean_rgb, np.float64)[:, None, None]
    tint = np.asarray(tint, np.float64)[:, None, None]
    return mean + contrast * tint * pattern[None]


def mosaic(labels: np.ndarray, patterns: list[np.ndarray], means: list, contrast: float = 0.18,
           tints: list | None = None, edge: float = 0.0) -> np.ndarray:
    """Region r of ``labels`` takes ``patterns[r]`` coloured with ``means[r]`` (and ``tints[r]``).

    ``edge`` > 0 softens region borders over about that many pixels. Returns (3, H, W) float32 in [0, 1]."""
    n = int(labels.max()) + 1
    tints = tints or [(1.0, 1.0, 1.0)] * n
    weights = np.stack([(labels == r).astype(np.float64) for r in range(n)])
    if edge > 0:
        weights = np.stack([_blur(wr, edge) for wr in weights])
        weights /= weights.sum(0, keepdims=True)
    image = sum(weights[r][None] * colourise(patterns[r], means[r], contrast, tints[r]) for r in range(n))
    return np.clip(image, 0, 1).astype(np.float32)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    fy = np.fft.fftfreq(image.shape[0])[:, None]
    fx = np.fft.fftfreq(image.shape[1])[None, :]
    return np.fft.ifft2(np.fft.fft2(image) * np.exp(-2 * (np.pi * sigma) ** 2 * (fy ** 2 + fx ** 2))).real


def label_masks(labels: np.ndarray) -> np.ndarray:
    """(H, W) labels -> (K, H, W) float32 one-hot masks."""
    return np.stack([(labels == r) for r in range(int(labels.max()) + 1)]).astype(np.float32)


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


# -- benchmark sets: the same layouts, regions told apart by texture alone or by colour alone ----------
# (kind, period as a fraction of the image's longer side, angle): pairwise different in kind, period
# (about 2x or more) or orientation (45 degrees or more), so any two make a visible texture boundary.
TEXTURE_SPECS = (
    ("stripes", 1 / 16, 0), ("stripes", 1 / 16, 90), ("stripes", 1 / 32, 45), ("waves", 1 / 12, 0),
    ("dots", 1 / 16, 0), ("dots", 1 / 32, 0), ("checks", 1 / 12, 0), ("blobs", 1 / 20, 0),
    ("grating", 1 / 10, 135), ("grating", 1 / 24, 60),
)


def _spec_pattern(spec, shape, turn: float, rng: np.random.Generator) -> np.ndarray:
    kind, fraction, angle = spec
    return texture(kind, shape, period=max(4.0, fraction * max(shape)), angle=angle + turn, rng=rng)


def texture_set(size: int = 256, count: int = 24, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` mosaics (image (3, H, W) float32, labels (H, W)) whose regions share mean colour and
    contrast and differ in structure only (a different texture per region), over every layout in turn."""
    return [_benchmark_mosaic(i, size, seed, by="texture") for i in range(count)]


def colour_set(size: int = 256, count: int = 24, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The texture set's layouts with one texture throughout and a different mean colour per region."""
    return [_benchmark_mosaic(i, size, seed, by="colour") for i in range(count)]


def _benchmark_mosaic(index: int, size: int, seed: int, by: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, index])
    shape = (size, size)
    labels = layout(LAYOUTS[index % len(LAYOUTS)], shape, rng)
    n = int(labels.max()) + 1
    turn = rng.uniform(-15, 15)  # the whole mosaic's textures rotated alike: differences stay
    tint = rng.uniform(0.6, 1.0, 3)
    if by == "texture":
        specs = [TEXTURE_SPECS[j] for j in rng.choice(len(TEXTURE_SPECS), n, replace=False)]
        means = [rng.uniform(0.35, 0.65, 3)] * n
        contrast = 0.18
    else:
        specs = [TEXTURE_SPECS[rng.integers(len(TEXTURE_SPECS))]] * n
        means = _distinct_colours(n, rng)
        contrast = 0.1
    patterns = [_spec_pattern(spec, shape, turn, rng) for spec in specs]
    return mosaic(labels, patterns, means, contrast, [tint] * n), labels


def _distinct_colours(n: int, rng: np.random.Generator, min_distance: float = 0.25) -> list[np.ndarray]:
    """n mean colours in [0.25, 0.75]^3, pairwise at least ``min_distance`` apart (RGB)."""
    colours: list[np.ndarray] = []
    while len(colours) < n:
        candidate = rng.uniform(0.25, 0.75, 3)
        if all(np.linalg.norm(candidate - c) >= min_distance for c in colours):
            colours.append(candidate)
    return colours
