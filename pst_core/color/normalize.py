"""Colour normalisation between a content and a style image, and its exact inverse.

A transform T moves one image (``side``) onto the other's colour statistics:
x' = A (x - mu_src) + mu_dst with A S_src A^T = S_dst (Gatys et al. 2017, ``match_color``):

- ``linear``: A = S_s^-1/2 (S_s^1/2 S_d S_s^1/2)^1/2 S_s^-1/2, the optimal-transport (Monge-Kantorovich)
  map between the two Gaussians, i.e. the one that moves colours least;
- ``cholesky``: A = L_d L_s^-1;  ``pca``: A = S_d^1/2 S_s^-1/2;
- ``luminance``: the same fit on Y = 0.299R + 0.587G + 0.114B alone (mean/std); both images become
  grey and the content's chroma (YIQ) is kept to colour the result again;
- ``none``: identity.

Direction x palette. The transfer output lives in the normalised space, whose palette is that of
the side that was *not* moved. ``restore_palette`` therefore applies T^-1 exactly when the palette
asked for is the moved side's:

==================  =============  ================================================================
direction           palette        final image
==================  =============  ================================================================
content_to_style    content        T^-1(output): the content's colours back (exact inverse)
content_to_style    style          output as is (already in the style's palette)
style_to_content    content        output as is (already in the content's palette)
style_to_content    style          T^-1(output): T^-1 maps the content's statistics onto the style's
==================  =============  ================================================================

For ``luminance`` the same rule acts on Y only, and the result always takes the content's chroma:
palette=content gives the content's tonal range, palette=style the style's (Gatys et al.'s
luminance-only transfer is style_to_content + palette=content).

``auto`` (the default method and direction) chooses by the palette asked for. palette=content:
``luminance`` and style_to_content, Gatys et al.'s colour-preserving transfer: each style region's
luminance takes its content region's mean (and never loses contrast: max_gain 1), the transfer works
on luminance, and the result takes the content's chroma, so every region keeps its own colours and
wears its style region's texture at the style's contrast; nothing is inverted, so nothing is
amplified. palette=style: ``linear`` and content_to_style, the output keeps the style's colours.

Region-aware variant (masks + mapping given): one transform T_r per region of the moved side,
fitted with soft-mask weights against the mapped region(s) of the other side, and blended per pixel
by the masks: y_p = A_p x_p + b_p with A_p = sum_r m_r(p) A_r, b_p = sum_r m_r(p) b_r. The masks
depend on the position, not the colour, so each pixel's map is affine and is inverted exactly by a
3x3 solve per pixel. That inverse needs the moved side's geometry, so with direction
style_to_content it cannot give palette=style (ConfigError); every other combination is exact.

Conditioning. A style of one or two flat colours has a colour covariance of rank 0 or 1: the exact
fit would squeeze every other colour direction of the moved image to nothing, and the inverse would
then amplify whatever the transfer adds off that line (a stripes-only style once turned a photo into
saturated pixel noise). So every covariance's eigenvalues get a floor (one 8-bit level of standard
deviation), and the fitted map squeezes no colour direction by more than
max_gain (its singular values are raised to at least 1/max_gain): the inverse then amplifies nothing
by more than max_gain. Stretching is not bounded (its inverse only squeezes). Moderate statistics fit
exactly as before; an extreme style is matched as far as the bound allows (the style loss does the
rest), and the inverse stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pst_core.color.spaces import rgb_to_yiq, yiq_to_rgb
from pst_core.errors import ComputeError, ConfigError
from pst_core.style.mapping import map_regions

METHODS = ("linear", "cholesky", "pca", "luminance", "none")
DIRECTIONS = ("content_to_style", "style_to_content")
AUTO = {"content": ("luminance", "style_to_content"), "style": ("linear", "content_to_style")}
# The floor of every covariance's eigenvalues (Gatys et al. add 1e-5 to all): a tiny share of the
# image's own variance, and at least one 8-bit level of standard deviation, so a flat or two-colour
# image still has a full-rank covariance while every direction above the floor fits exactly.
EPS = 1e-6
EPS_FLOOR = (1 / 255) ** 2
MAX_GAIN = 1.0  # default bound on how much the map may squeeze any colour direction (1: not at all)
_MIN_MASS = 1e-6  # fraction of the image below which a region has no statistics

def _sym_power(s: np.ndarray, power: float) -> np.ndarray:
    vals, vecs = np.linalg.eigh(s)
    return (vecs * np.clip(vals, 1e-12, None) ** power) @ vecs.T


def _bounded(matrix: np.ndarray, max_gain: float) -> np.ndarray:
    """The matrix with its singular values raised to at least 1/max_gain (its inverse's gain <= max_gain)."""
    u, sigma, vt = np.linalg.svd(matrix)
    return (u * np.maximum(sigma, 1 / max_gain)) @ vt


def _moments(x: np.ndarray, w: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean (d,) and covariance (d,d) of pixels x (d,N), its eigenvalues raised to the floor."""
    w = np.ones(x.shape[1]) if w is None else w
    w = w / w.sum()
    mu = x @ w
    t = x - mu[:, None]
    cov = (t * w) @ t.T
    vals, vecs = np.linalg.eigh(cov)
    floor = max(EPS * np.trace(cov) / len(x), EPS_FLOOR)
    return mu, (vecs * np.maximum(vals, floor)) @ vecs.T


def _fit_matrix(method: str, s_src: np.ndarray, s_dst: np.ndarray) -> np.ndarray:
    if method == "cholesky":
        return np.linalg.cholesky(s_dst) @ np.linalg.inv(np.linalg.cholesky(s_src))
    if method == "pca":
        return _sym_power(s_dst, 0.5) @ _sym_power(s_src, -0.5)
    # linear and luminance (in 1-D every method is std_dst / std_src)
    root = _sym_power(s_src, 0.5)
    inv_root = _sym_power(s_src, -0.5)
    return inv_root @ _sym_power(root @ s_dst @ root, 0.5) @ inv_root


@dataclass
class ColorTransform:
    """T (per region r): x -> matrix[r] (x - source_mean[r]) + target_mean[r], blended by ``masks``."""

    method: str
    side: str  # the image T was applied to: "content" or "style"
    matrix: np.ndarray  # (R, d, d) float64; d = 3 (RGB) or 1 (luminance)
    source_mean: np.ndarray  # (R, d)
    target_mean: np.ndarray  # (R, d)
    masks: np.ndarray | None = None  # (R, H, W) soft weights on the moved side (region-aware only)
    chroma: np.ndarray | None = None  # (2, H, W) the content's I, Q (luminance only)

    def _channels(self, image: np.ndarray) -> np.ndarray:
        return rgb_to_yiq(image)[:1] if self.method == "luminance" else image.astype(np.float64)

    def _to_rgb(self, x: np.ndarray) -> np.ndarray:
        """Values in the fitted channels -> RGB image; luminance is grey until the chroma comes back."""
        return np.repeat(x, 3, axis=0) if self.method == "luminance" else x

    def _pixel_maps(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel A (N,d,d) and b (N,d), or a single (1,d,d), (1,d) without masks."""
        bias = self.target_mean - np.einsum("rij,rj->ri", self.matrix, self.source_mean)
        if self.masks is None:
            return self.matrix, bias
        if self.masks.shape[1:] != tuple(shape):
            raise ConfigError(f"colour transform: region masks are {self.masks.shape[1:]}, image is {tuple(shape)}")
        m = self.masks.reshape(len(self.masks), -1).astype(np.float64)
        m = m / np.maximum(m.sum(0), 1e-12)
        return np.einsum("rn,rij->nij", m, self.matrix), m.T @ bias

    def apply(self, image: np.ndarray) -> np.ndarray:
        x = self._channels(image)
        d, h, w = x.shape
        a, b = self._pixel_maps((h, w))
        x = x.reshape(d, -1)
        y = a[0] @ x + b[0][:, None] if len(a) == 1 else np.einsum("nij,jn->in", a, x) + b.T
        return self._to_rgb(y.reshape(d, h, w)).astype(np.float32)

    def invert(self, image: np.ndarray) -> np.ndarray:
        y = self._channels(image)
        d, h, w = y.shape
        a, b = self._pixel_maps((h, w))
        rhs = (y.reshape(d, -1) - b.T).T[..., None]  # (N, d, 1)
        if len(a) == 1:
            x = np.linalg.solve(a[0], rhs[..., 0].T)
        else:
            if np.abs(np.linalg.det(a)).min() < 1e-12:
                raise ComputeError("colour transform: a blended region map is singular and cannot be inverted")
            x = np.linalg.solve(a, rhs)[..., 0].T
        return self._from_channels(x.reshape(d, h, w))

    def recolor(self, image: np.ndarray) -> np.ndarray:
        """The output as is, except that luminance takes the content's chroma back."""
        return self._from_channels(self._channels(image)) if self.method == "luminance" else image

    def _from_channels(self, x: np.ndarray) -> np.ndarray:
        if self.method != "luminance":
            return x.astype(np.float32)
        if self.chroma is None or self.chroma.shape[1:] != x.shape[1:]:
            raise ConfigError("colour transform: luminance restore needs the content's chroma at the output's size")
        return yiq_to_rgb(np.concatenate([x, self.chroma])).astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"matrix": self.matrix, "source_mean": self.source_mean, "target_mean": self.target_mean}
        if self.masks is not None:
            arrays["masks"] = self.masks
        if self.chroma is not None:
            arrays["chroma"] = self.chroma
        return arrays

    def to_attrs(self) -> dict:
        return {"method": self.method, "side": self.side, "regions": self.masks is not None}

    @classmethod
    def from_stored(cls, arrays: dict[str, np.ndarray], attrs: dict) -> "ColorTransform":
        return cls(method=attrs["method"], side=attrs["side"], matrix=np.asarray(arrays["matrix"]),
                   source_mean=np.asarray(arrays["source_mean"]), target_mean=np.asarray(arrays["target_mean"]),
                   masks=np.asarray(arrays["masks"]) if "masks" in arrays else None,
                   chroma=np.asarray(arrays["chroma"]) if "chroma" in arrays else None)


def _region_weights(src_masks, dst_masks, mapping, side):
    """(source weights, target weights) per region of the moved side; target None = leave it alone."""
    if side == "content":
        return [(src_masks[r], dst_masks[mapping[r]]) for r in range(len(src_masks))]
    pairs = []
    for s in range(len(src_masks)):
        sources = [r for r, t in mapping.items() if t == s]
        pairs.append((src_masks[s], sum(dst_masks[r] for r in sources) if sources else None))
    return pairs


def fit_transform(source: np.ndarray, target: np.ndarray, method: str, side: str, *,
                  source_masks: np.ndarray | None = None, target_masks: np.ndarray | None = None,
                  mapping: dict[int, int] | None = None, chroma: np.ndarray | None = None,
                  max_gain: float = MAX_GAIN) -> ColorTransform:
    """Fit T moving ``source`` (3,H,W) onto ``target``'s statistics (per region when masks are given),
    stretching no colour direction by more than ``max_gain`` either way."""
    if method not in METHODS:
        raise ConfigError(f"color_normalize.method: unknown method {method!r} (choose from {', '.join(METHODS)})")
    fit = "linear" if method in ("luminance", "none") else method
    x = rgb_to_yiq(source)[:1] if method == "luminance" else source.astype(np.float64)
    y = rgb_to_yiq(target)[:1] if method == "luminance" else target.astype(np.float64)
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    d = len(x)
    pairs = [(None, None)] if source_masks is None else _region_weights(
        source_masks.reshape(len(source_masks), -1).astype(np.float64),
        target_masks.reshape(len(target_masks), -1).astype(np.float64), mapping, side)
    mats, mu_src, mu_dst = [], [], []
    for w_src, w_dst in pairs:
        empty = w_src is not None and (w_dst is None or w_src.mean() < _MIN_MASS or w_dst.mean() < _MIN_MASS)
        if method == "none" or empty:
            mats.append(np.eye(d)), mu_src.append(np.zeros(d)), mu_dst.append(np.zeros(d))
            continue
        m_s, s_s = _moments(x, w_src)
        m_d, s_d = _moments(y, w_dst)
        mats.append(_bounded(_fit_matrix(fit, s_s, s_d), max_gain)), mu_src.append(m_s), mu_dst.append(m_d)
    return ColorTransform(method, side, np.stack(mats), np.stack(mu_src), np.stack(mu_dst),
                          masks=None if source_masks is None else source_masks.astype(np.float32),
                          chroma=chroma)


def resolve(method: str, direction: str, palette: str) -> tuple[str, str]:
    """The method and direction to use: ``auto`` for either takes the choice made for ``palette``."""
    auto_method, auto_direction = AUTO[palette]
    return (auto_method if method == "auto" else method), (auto_direction if direction == "auto" else direction)


def normalize_pair(content: np.ndarray, style: np.ndarray, method: str, direction: str, *,
                   content_masks: np.ndarray | None = None, style_masks: np.ndarray | None = None,
                   mapping: dict[int, int] | None = None, max_gain: float = MAX_GAIN
                   ) -> tuple[np.ndarray, np.ndarray, ColorTransform]:
    """(3,H,W) float32 in [0,1] each -> (content_normalised, style_normalised, transform).

    With ``content_masks`` (Kc,H,W), ``style_masks`` (Ks,Hs,Ws) and ``mapping`` ({content region: style
    region} or "overlap"; pass the mapping the style transfer uses) the transform is region-aware. Normalised images are not clipped, so T^-1 stays exact.
    """
    if direction not in ("content_to_style", "style_to_content"):
        raise ConfigError(f"color_normalize.direction: unknown direction {direction!r}")
    if (content_masks is None) != (style_masks is None) or (content_masks is not None and mapping is None):
        raise ConfigError("color_normalize: region-aware normalisation needs both masks and a mapping")
    if content_masks is not None:
        mapping = map_regions(content_masks, style_masks, mapping)  # checks the regions exist, fills gaps
    side = "content" if direction == "content_to_style" else "style"
    chroma = rgb_to_yiq(content)[1:] if method == "luminance" else None
    if side == "content":
        t = fit_transform(content, style, method, side, source_masks=content_masks, target_masks=style_masks,
                          mapping=mapping, chroma=chroma, max_gain=max_gain)
        moved, still = t.apply(content), style
    else:
        t = fit_transform(style, content, method, side, source_masks=style_masks, target_masks=content_masks,
                          mapping=mapping, chroma=chroma, max_gain=max_gain)
        moved, still = t.apply(style), content
    if method == "luminance":
        still = np.repeat(rgb_to_yiq(still)[:1], 3, axis=0).astype(np.float32)
    still = still.astype(np.float32)
    return (moved, still, t) if side == "content" else (still, moved, t)


def restore_palette(image: np.ndarray, transform: ColorTransform, palette: str) -> np.ndarray:
    """The unnormalize stage: output image in normalised space -> final image (clipped to [0,1])."""
    if palette not in ("content", "style"):
        raise ConfigError(f"unnormalize.palette: unknown palette {palette!r}")
    if palette == transform.side:
        if transform.masks is not None and transform.side == "style":
            raise ConfigError("unnormalize.palette=style cannot undo a region-aware style_to_content colour "
                              "transform (it lives on the style's geometry); use direction=content_to_style")
        out = transform.invert(image)
    else:
        out = transform.recolor(image)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
