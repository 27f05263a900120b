"""Quality measures of a stylised image that no network can flatter.

The transfer optimises VGG statistics, so judging it with the same network rewards whatever the
optimiser found, noise included. These measures look at the pixels instead:

- **structure**: does each content region carry the spatial frequencies and orientations of the style
  region it was mapped to, and not those of the other style regions? Energies come from a bank of
  Gabor filters (constant relative bandwidth, so a natural 1/f image has about equal energy in every
  band) applied to the luminance, less each region's mean luminance (so the contrast of a region's
  outline against its neighbour is not counted as texture); a region's spectrum is its mean energy
  per (frequency, orientation) bin, away from its border. The *peaks* of style region s are the bins
  where s's share of energy most exceeds the other style regions'. Spectra are whitened (each bin
  relative to the mean energy of its neighbouring frequencies over all orientations), so noise or a
  smooth gradient is flat (1) and a fainter copy of a texture has the same whitened spectrum. For an
  image region X mapped to s,

      presence_s(X)    = (mean W_X(P_s) - 1) / (mean W_s(P_s) - 1)    (1: all of s's peaks, 0: none)
      selectivity(X)   = presence_s(X) - mean over other style regions o of presence_o(X)

  and the score divides it by the style region's own selectivity: 1.0 = as distinct as the style,
  0 = none of it (featureless, or an even mix of the textures), negative = the wrong texture.
- **fringe**: a region's fine detail in a band just outside its neighbours against its interior's
  (1.0 = its border band is like the rest of it; more = a halo of the neighbour's style round it).
- **noise**: the share of luminance energy above 0.35 cycles/pixel, against the larger of the
  content's and the style's share (1.0 = no more fine-grained than the inputs).
- **palette**: sliced Wasserstein distance in CIE Lab between an output region's colours and the
  colours it should have, beside the distance to the palette it should not have.
- **independent network**: Gram distances measured with a VGG19 of another random seed than the one
  optimised (a check that the statistics transferred are not an artefact of one network's weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pst_core.color.spaces import luminance, srgb_to_lab

NOISE_CUTOFF = 0.35  # cycles per pixel
QUANTISATION_VARIANCE = (1 / 255) ** 2 / 12  # of a luminance stored in 8 bits
_ORIENTATIONS = 8


def gabor_frequencies(shape: tuple[int, int]) -> np.ndarray:
    """Half-octave steps from about 2.5 periods per image side up to 0.35 cycles/pixel."""
    lowest = 2.5 / min(shape)
    count = int(np.floor(np.log2(NOISE_CUTOFF / lowest) * 2)) + 1
    return NOISE_CUTOFF / 2 ** (np.arange(count)[::-1] / 2)


def _gabor(fx: np.ndarray, fy: np.ndarray, frequency: float, theta: float) -> np.ndarray:
    """An analytic Gabor filter in the Fourier domain: one octave radial bandwidth about ``frequency``
    (cycles/pixel), 22.5 degree orientation bandwidth about ``theta``."""
    along = fx * np.cos(theta) + fy * np.sin(theta)
    across = -fx * np.sin(theta) + fy * np.cos(theta)
    return np.exp(-((along - frequency) ** 2) / (2 * (0.3 * frequency) ** 2) - across ** 2 / (2 * (0.2 * frequency) ** 2))


def border_distance(frequency: float) -> float:
    """How far (pixels) inside a region a bin's energy is taken: 1.5 of its filter's spatial extent, so
    the region's border (and the texture beyond it) does not leak into the region's spectrum."""
    return 1.5 * 0.5 / (np.pi * 0.3 * frequency)


def region_spectra(image: np.ndarray, masks, frequencies: np.ndarray) -> np.ndarray:
    """(len(masks), F * O): each region's mean Gabor energy of the luminance per (frequency,
    orientation) bin, each bin away from the region's border by ``border_distance``.

    One filter's energy map at a time, in single precision: at 2048 px the whole bank's maps would be
    2 GiB and the double-precision transforms twice as slow."""
    lum = _without_region_means(luminance(image) if image.ndim == 3 else np.asarray(image, np.float64), masks)
    h, w = lum.shape
    pad = min(h, w) // 4  # mirrored padding: no wrap-around edges from the FFT
    spectrum = np.fft.fft2(np.pad(lum, pad, mode="reflect").astype(np.float32))
    fy = np.fft.fftfreq(spectrum.shape[0]).astype(np.float32)[:, None]
    fx = np.fft.fftfreq(spectrum.shape[1]).astype(np.float32)[None, :]
    orientations = np.arange(_ORIENTATIONS) * np.pi / _ORIENTATIONS
    out = np.empty((len(masks), len(frequencies), len(orientations)))
    for i, f in enumerate(frequencies):
        weights = np.stack([_interior(m, border_distance(f)) for m in masks]).reshape(len(masks), -1)
        weights /= weights.sum(1, keepdims=True)
        for j, theta in enumerate(orientations):
            gabor = _gabor(fx, fy, f, theta)
            filtered = np.fft.ifft2(spectrum * gabor)[pad:pad + h, pad:pad + w]
            energy = filtered.real ** 2 + filtered.imag ** 2
            # What an 8-bit image's rounding alone gives (white noise through this filter): a region
            # without any texture (a flat colour, once its mean is taken off) is then flat, not rounding noise.
            out[:, i, j] = weights @ energy.ravel() + QUANTISATION_VARIANCE * float(np.mean(gabor ** 2))
    return out.reshape(len(masks), -1)


def _without_region_means(lum: np.ndarray, masks) -> np.ndarray:
    """The luminance less each region's own (weighted) mean, the pixels no mask covers counting as one
    more region. A low-frequency filter is wider than a thin region (a 64 px period spans the swimmer's
    whole body at 256 px): without this it measures the step between a bright region and a dark
    neighbour (the content's palette, which the transfer keeps) rather than the region's texture."""
    weights = [np.clip(np.asarray(m, np.float64), 0, 1) for m in masks]
    weights.append(np.clip(1 - sum(weights), 0, 1))
    out = np.asarray(lum, np.float64).copy()
    for m in weights:
        if m.sum() > 1e-9:
            out -= m * float((m * lum).sum() / m.sum())
    return out


def _interior(mask: np.ndarray, radius: float) -> np.ndarray:
    """The part of a (soft) mask at least ``radius`` pixels inside it; shrunk less where the region is
    too small to have any such part."""
    hard = np.asarray(mask) > 0.5
    r = int(round(radius))
    while r > 0:
        inner = _erode(hard, r)
        if inner.sum() >= max(16.0, 0.1 * float(hard.sum())):
            return inner
        r //= 2
    return hard.astype(np.float32) if hard.any() else np.asarray(mask, np.float32)


def _erode(hard: np.ndarray, r: int) -> np.ndarray:
    """1 where the whole (2r+1)^2 square around a pixel lies in the region, else 0; outside the image
    counts as outside (the mirrored padding is not the texture). A box sum from the summed-area table:
    the same as a square erosion, in constant time per pixel (at 2048 px the outermost filters'
    squares are about 1,300 px wide)."""
    return (_box_sum(np.asarray(hard, np.int64), r) == (2 * r + 1) ** 2).astype(np.float32)


def _box_sum(values: np.ndarray, r: int) -> np.ndarray:
    """The sum of ``values`` over the (2r+1)^2 square round each pixel (zero outside the image), from
    the summed-area table."""
    k = 2 * r + 1
    table = np.zeros((values.shape[0] + k, values.shape[1] + k), values.dtype)
    table[1:, 1:] = np.pad(values, r).cumsum(0).cumsum(1)
    return table[k:, k:] - table[:-k, k:] - table[k:, :-k] + table[:-k, :-k]


def whiten(spectrum: np.ndarray, frequencies: np.ndarray, orientations: int = _ORIENTATIONS) -> np.ndarray:
    """Energy per bin relative to the region's own power-law trend (a line fitted to log energy
    against log frequency, averaged over orientations): noise of any colour or a smooth gradient
    becomes about flat (1), peaks of orientation or scale stand out, and a fainter copy of a texture
    has the same whitened spectrum."""
    grid = spectrum.reshape(len(frequencies), orientations)
    slope, offset = np.polyfit(np.log(frequencies), np.log(np.maximum(grid.mean(1), 1e-20)), 1)
    trend = np.exp(offset + slope * np.log(frequencies))
    return np.maximum(grid / trend[:, None], 1e-6).ravel()


def peak_weights(log_spectra: list[np.ndarray]) -> list[np.ndarray]:
    """Per style region, a weight per bin: how far its log whitened energy rises above both its own
    trend (0) and every other region's there: its distinctive peaks (0 elsewhere)."""
    weights = []
    for s, spectrum in enumerate(log_spectra):
        others = np.max([o for i, o in enumerate(log_spectra) if i != s], axis=0)
        weights.append(np.maximum(spectrum - np.maximum(others, 0), 0))
    return weights


def _presence(log_spectrum: np.ndarray, style: np.ndarray, weights: np.ndarray) -> float:
    """How much of a style region's distinctive peaks a region has (log whitened energy at those bins,
    weighted, relative to the style region's own): 1 = as much, 0 = a featureless spectrum."""
    return float((weights * log_spectrum).sum() / max((weights * style).sum(), 1e-6))


def _presences(log_spectrum: np.ndarray, own: int, style_spectra: list[np.ndarray],
               weights: list[np.ndarray]) -> tuple[float, float]:
    """(Presence of the own style region's peaks, mean presence of the other regions' peaks)."""
    others = [_presence(log_spectrum, style_spectra[o], weights[o]) for o in range(len(style_spectra)) if o != own]
    return _presence(log_spectrum, style_spectra[own], weights[own]), float(np.mean(others))


def _selectivity(log_spectrum: np.ndarray, own: int, style_spectra: list[np.ndarray],
                 weights: list[np.ndarray]) -> float:
    """Presence of the own style region's peaks minus the mean presence of the other regions' peaks."""
    present, other = _presences(log_spectrum, own, style_spectra, weights)
    return present - other


@dataclass(frozen=True)
class StructureParts:
    """A region's structure score and the two presences it is made of: a score can fall short for want
    of the mapped style region's peaks (``own`` low) or because the region also has energy where the
    other style regions have theirs (``other`` high; e.g. the content's own edges and shading)."""

    own: float
    other: float
    score: float


class StructureReference:
    """The style's side of the structure score, computed once per style and output size (a benchmark
    scores every snapshot of a run, and the ideal composite, against the same one): the filter bank,
    each style region's log whitened spectrum, its distinctive peaks and its own selectivity."""

    def __init__(self, style: np.ndarray, style_masks: np.ndarray, shape: tuple[int, int]):
        # One filter bank for both images (they may differ in size): the smaller one's.
        self.frequencies = gabor_frequencies(tuple(min(a, b) for a, b in zip(shape, style.shape[-2:])))
        self.spectra = [np.log(whiten(s, self.frequencies))
                        for s in region_spectra(style, style_masks, self.frequencies)]
        self.weights = peak_weights(self.spectra) if len(self.spectra) > 1 else []
        self.selectivity = [_selectivity(spectrum, s, self.spectra, self.weights)
                            for s, spectrum in enumerate(self.spectra)] if self.weights else []

    def scores(self, output: np.ndarray, content_masks: np.ndarray, mapping: dict[int, int]) -> dict[int, float]:
        """{content region: its structure score} for every mapped content region ({} when the style
        has one region: there is nothing to tell apart)."""
        return {r: p.score for r, p in self.parts(output, content_masks, mapping).items()}

    def parts(self, output: np.ndarray, content_masks: np.ndarray,
              mapping: dict[int, int]) -> dict[int, StructureParts]:
        """{content region: its score with the presences it is made of} (see ``scores``)."""
        if len(self.spectra) < 2:
            return {}
        regions = region_spectra(output, [content_masks[r] for r in mapping], self.frequencies)
        parts = {}
        for (r, s), spectrum in zip(mapping.items(), regions):
            own, other = _presences(np.log(whiten(spectrum, self.frequencies)), s, self.spectra, self.weights)
            parts[r] = StructureParts(own, other, (own - other) / max(self.selectivity[s], 1e-6))
        return parts


def structure_scores(output: np.ndarray, content_masks: np.ndarray, style: np.ndarray, style_masks: np.ndarray,
                     mapping: dict[int, int]) -> dict[int, float]:
    """{content region: its structure score} for every content region mapped to a style region, when the
    style has at least two regions (with one there is nothing to tell apart)."""
    if len(style_masks) < 2:
        return {}
    return StructureReference(style, style_masks, output.shape[-2:]).scores(output, content_masks, mapping)


def ideal_composite(content_masks: np.ndarray, style: np.ndarray, style_masks: np.ndarray,
                    mapping: dict[int, int]) -> np.ndarray:
    """The answer the structure score was built for: every content region filled with its style
    region's own pixels (the region's bounding box, tiled over the image) and cut to the content
    region's shape. A thin or small region cannot hold a coarse texture's peaks even then, so its
    score says what the region's shape allows (a reference, not a strict bound: a texture that runs on
    across the border, as a K=1 run's may, is cut less by it)."""
    h, w = content_masks.shape[-2:]
    ideal = np.zeros((style.shape[0], h, w), np.float32)
    for r, s in mapping.items():
        rows, cols = np.nonzero(np.asarray(style_masks[s]) > 0.5)
        patch = style[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        tiled = np.tile(patch, (1, -(-h // patch.shape[1]), -(-w // patch.shape[2])))[:, :h, :w]
        ideal += np.asarray(content_masks[r], np.float32)[None] * tiled
    return ideal


def ceiling_parts(content_masks: np.ndarray, style: np.ndarray, style_masks: np.ndarray,
                  mapping: dict[int, int], reference: StructureReference | None = None) -> dict[int, StructureParts]:
    """{content region: the ideal composite's score and presences} (see ``ideal_composite``)."""
    ideal = ideal_composite(content_masks, style, style_masks, mapping)
    reference = reference or StructureReference(style, style_masks, ideal.shape[-2:])
    return reference.parts(ideal, content_masks, mapping)


def structure_ceiling(content_masks: np.ndarray, style: np.ndarray, style_masks: np.ndarray,
                      mapping: dict[int, int], reference: StructureReference | None = None) -> dict[int, float]:
    """{content region: the structure score of the ideal composite}: what the content regions' shapes
    allow."""
    return {r: p.score for r, p in ceiling_parts(content_masks, style, style_masks, mapping, reference).items()}


def high_frequency_share(image: np.ndarray) -> float:
    """Share of the (Hann-windowed) luminance energy above NOISE_CUTOFF cycles/pixel."""
    lum = luminance(image) if image.ndim == 3 else np.asarray(image, np.float64)
    h, w = lum.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2((lum - lum.mean()) * window)) ** 2
    radius = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    power[0, 0] = 0
    return float(power[radius > NOISE_CUTOFF].sum() / max(power.sum(), 1e-20))


FRINGE_BAND = (3, 10, 16)  # px at 256 px: the band 3-10 px outside the other regions; the interior beyond 16


def fringe_ratios(image: np.ndarray, masks: np.ndarray) -> dict[int, float]:
    """Per region, its fine detail (luminance minus its 3x3 mean, squared) in a band just outside the
    other regions, over the same in its interior: 1 = the band is like the rest of the region; a halo
    of a neighbour's style drawn into it (speckle round a silhouette) shows as more. Distances are
    FRINGE_BAND at 256 px, scaled with the image; a region with too small an interior (under a tenth
    of its pixels) or band (16 px) to compare is left out."""
    lum = np.asarray(luminance(image), np.float64)  # the summed-area table needs double precision
    mean = _box_sum(lum, 1) / _box_sum(np.ones_like(lum), 1)
    detail = (lum - mean) ** 2
    near, far, inner = (max(1, round(d * max(lum.shape) / 256)) for d in FRINGE_BAND)
    hard = np.asarray(masks) > 0.5
    out = {}
    for r, own in enumerate(hard):
        others = np.delete(hard, r, axis=0).any(0).astype(np.int64)
        band = own & (_box_sum(others, far) > 0) & (_box_sum(others, near) == 0)
        interior = own & (_box_sum(others, inner) == 0)
        if interior.sum() >= max(16, 0.1 * own.sum()) and band.sum() >= 16:
            out[r] = float(detail[band].mean() / max(detail[interior].mean(), 1e-20))
    return out


def noise_ratio(output: np.ndarray, content: np.ndarray, style: np.ndarray) -> float:
    """The output's high-frequency share against the larger of the inputs' (1.0 = as fine as the inputs)."""
    return high_frequency_share(output) / max(high_frequency_share(content), high_frequency_share(style), 1e-12)


def _lab(pixels: np.ndarray) -> np.ndarray:
    """(3, N) sRGB in [0, 1] -> (N, 3) CIE Lab (D65)."""
    return srgb_to_lab(torch.as_tensor(pixels, dtype=torch.float32)[:, None, :])[:, 0].T.numpy()


def palette_distance(image: np.ndarray, mask: np.ndarray, reference: np.ndarray, reference_mask: np.ndarray,
                     projections: int = 64, samples: int = 4096, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance (Lab units) between the colours of ``image`` inside ``mask`` and
    those of ``reference`` inside ``reference_mask`` (masks thresholded at 0.5)."""
    rng = np.random.default_rng(seed)

    def pixels(img, m):
        inside = np.asarray(m) > 0.5
        lab = _lab(np.asarray(img)[:, inside])
        return lab[rng.choice(len(lab), samples)] if len(lab) > samples else lab

    a, b = pixels(image, mask), pixels(reference, reference_mask)
    if not len(a) or not len(b):
        return float("nan")
    directions = rng.standard_normal((projections, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    quantiles = np.linspace(0, 1, 101)
    pa = np.quantile(a @ directions.T, quantiles, axis=0)
    pb = np.quantile(b @ directions.T, quantiles, axis=0)
    return float(np.abs(pa - pb).mean())


def region_style_distances(vgg, output, content_masks, style, style_masks, layers) -> np.ndarray:
    """d[r, s]: relative Gram distance, measured with ``vgg``, between content region r of ``output``
    and style region s (how well a transfer put each style region's statistics where it was mapped)."""
    from pst_core.style.losses import GramLoss, Region
    from pst_core.segmentation.masks import resize_masks

    with torch.no_grad():
        fo, fs = vgg(torch.tensor(output)[None], layers), vgg(torch.tensor(style)[None], layers)
    d = np.zeros((len(content_masks), len(style_masks)))
    for r in range(len(content_masks)):
        for s in range(len(style_masks)):
            for layer in layers:
                target = Region(resize_masks(torch.tensor(style_masks[s:s + 1]), fs[layer].shape[-2:])[0])
                region = Region(resize_masks(torch.tensor(content_masks[r:r + 1]), fo[layer].shape[-2:])[0])
                d[r, s] += float(GramLoss(*target.statistics(fs[layer][0]))(*region.statistics(fo[layer][0]))) / len(layers)
    return d
