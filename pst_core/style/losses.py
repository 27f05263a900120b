"""Small composable losses on VGG activations, masked (guided) statistics first-class.

Every statistic is a mean over a region's pixels (weights = the soft mask resized to the layer by
area averaging, divided by the mask's mass), and every loss is divided by the size of its target,
so weights do not need retuning when the image size, the layer or the region size changes.
"""

from __future__ import annotations

import functools

import torch

# Pixels whose weight is below this fraction of the region's largest weight are left out of its
# statistics: with near-hard soft masks the K regions then cost about one full Gram, not K.
SPARSE_THRESHOLD = 1e-3
MIN_MASS_FRACTION = 1e-4  # a region lighter than this share of a layer's pixels has no statistics


class Region:
    """The pixels of one region at one layer's resolution (or of one tile's part of it), prepared for
    masked statistics.

    ``mask`` is the soft mask (h, w). A tile's part of a region (``crop``) keeps the whole region's
    ``peak`` and ``mass``: its statistics are then its share of the whole region's, and the shares of
    all tiles add up to the whole region's statistics exactly.
    """

    def __init__(self, mask: torch.Tensor, *, peak: torch.Tensor | None = None, mass: torch.Tensor | None = None):
        self.mask = mask
        self.peak = mask.max() if peak is None else peak
        self.numel = mask.numel()
        self.mass = (mask * self._kept(mask)).sum() if mass is None else mass
        self.empty = float(self.mass) < MIN_MASS_FRACTION * self.numel

    def _kept(self, mask: torch.Tensor) -> torch.Tensor:
        return mask > SPARSE_THRESHOLD * self.peak.clamp_min(1e-12)

    # The kept pixels, worked out when statistics are first taken (a tiled transfer takes them of
    # crops only, and never holds these index arrays for the whole image).
    @functools.cached_property
    def index(self) -> torch.Tensor | None:
        keep = self._kept(self.mask).reshape(-1)
        return None if bool(keep.all()) else keep.nonzero()[:, 0]

    @functools.cached_property
    def weight(self) -> torch.Tensor:
        w = self.mask.reshape(-1)
        return w if self.index is None else w[self.index]

    @functools.cached_property
    def ones(self) -> bool:
        """An all-ones mask: plain, unmasked statistics."""
        return bool((self.weight == 1).all())

    @functools.cached_property
    def sqrt_weight(self) -> torch.Tensor:
        return self.weight.sqrt()

    def crop(self, rows: slice, cols: slice) -> "Region":
        """The part of this region inside a tile (rows and columns at this layer's resolution)."""
        return Region(self.mask[rows, cols], peak=self.peak, mass=self.mass)

    def statistics(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The region's mean (C,) and mass-normalised Gram matrix (C, C) of ``features`` (C, h, w)."""
        return masked_statistics(features, [self])[0]


class _MaskedStatistics(torch.autograd.Function):
    """The means and Grams of several regions of one layer as one autograd node.

    Each region multiplies only its kept pixels X (scaled by the square root of their weights w), and
    the backward gathers every region's gradient, ((dG + dG^T) X + dmean w^1/2) w^1/2 / mass, into a
    single tensor, added in place by pixel index, rather than 2K zero-filled full-size gradients
    summed. It keeps only the activations (which the network's graph holds anyway) and takes each
    region's columns again in the backward, one region at a time: keeping them would hold another
    copy of every style layer's activations through the whole backward (2 GiB at 2048 px).
    """

    @staticmethod
    def forward(ctx, features, regions):
        ctx.regions, ctx.shape = regions, features.shape
        ctx.save_for_backward(features)
        # Separate outputs, not stacked tensors: selecting from a stack costs a (K, C, C) zero-filled
        # gradient per region in the backward.
        ctx.set_materialize_grads(False)
        f = features.flatten(1)
        means, grams = [], []
        for r in regions:
            x = _scaled_columns(f, r)
            means.append((x.sum(1) if r.ones else x @ r.sqrt_weight) / r.mass)
            grams.append(x @ x.T / r.mass)
        return (*means, *grams)

    @staticmethod
    def backward(ctx, *grads):
        (features,) = ctx.saved_tensors
        f = features.flatten(1)
        k = len(ctx.regions)
        out = None
        for r, dmean, dgram in zip(ctx.regions, grads[:k], grads[k:]):
            if dmean is None and dgram is None:
                continue
            n = r.numel if r.index is None else r.index.numel()
            d = (dgram + dgram.T) @ _scaled_columns(f, r) if dgram is not None else f.new_zeros(f.shape[0], n)
            if dmean is not None:
                d = d + (dmean[:, None] if r.ones else torch.outer(dmean, r.sqrt_weight))
            d = d / r.mass if r.ones else d * (r.sqrt_weight / r.mass)
            if r.index is None:
                out = d if out is None else out + d
            else:
                out = d.new_zeros(d.shape[0], r.numel) if out is None else out
                out.index_add_(1, r.index, d)
        return (None if out is None else out.view(ctx.shape)), None


def _scaled_columns(f: torch.Tensor, r: Region) -> torch.Tensor:
    """(C, n) activations -> the region's kept pixels, each scaled by the square root of its weight."""
    c = f if r.index is None else f.index_select(1, r.index)
    return c if r.ones else c * r.sqrt_weight


def masked_statistics(features: torch.Tensor, regions: list[Region]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(C, h, w) activations -> one (mean (C,), mass-normalised Gram (C, C)) per region."""
    out = _MaskedStatistics.apply(features, regions)
    return list(zip(out[:len(regions)], out[len(regions):]))


class GramLoss:
    """Gatys et al.: squared Frobenius distance of masked Gram matrices, relative to the target's."""

    uses_mean = False

    def __init__(self, target_mean: torch.Tensor, target_gram: torch.Tensor):
        self.target = target_gram
        self.scale = self.target.square().sum().clamp_min(1e-12)

    def __call__(self, mean: torch.Tensor | None, gram: torch.Tensor) -> torch.Tensor:
        return (gram - self.target).square().sum() / self.scale


class MeanCovLoss:
    """crowsonkb: Wasserstein-2 distance between the Gaussians (mean, covariance) of the activations,
    ||mu - mu_t||^2 + tr S + tr S_t - 2 tr (S_t^1/2 S S_t^1/2)^1/2, relative to the target's size.

    tr M^1/2 is the sum of the square roots of M's eigenvalues; the eigenvalues' gradient
    (V diag(g) V^T) does not involve eigenvalue gaps, so it stays stable where eigh's vectors would not.
    """

    uses_mean = True

    def __init__(self, target_mean: torch.Tensor, target_gram: torch.Tensor):
        self.mean = target_mean
        cov = target_gram - torch.outer(target_mean, target_mean)
        vals, vecs = _stable(torch.linalg.eigh, cov)
        self.root = (vecs * vals.clamp_min(0).sqrt()) @ vecs.T
        self.trace = cov.trace()
        self.scale = (self.trace + self.mean.square().sum()).clamp_min(1e-12)
        self.floor = 1e-8 * float(self.scale)  # below this an eigenvalue is rounding noise

    def __call__(self, mean: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
        cov = gram - torch.outer(mean, mean)
        prod = self.root @ cov @ self.root
        vals = _stable(torch.linalg.eigvalsh, (prod + prod.T) / 2)
        # Eigenvalues under the floor are rounding noise: they count as zero (hundreds of sqrt(floor)
        # would bias the loss below zero) and pass no gradient (sqrt' is unbounded at zero).
        roots = torch.where(vals > self.floor, vals.clamp_min(self.floor).sqrt(), torch.zeros_like(vals))
        w2 = (mean - self.mean).square().sum() + cov.trace() + self.trace - 2 * roots.sum()
        return w2 / self.scale


def _stable(decomposition, matrix: torch.Tensor):
    """LAPACK's float32 symmetric eigensolver can return NaN for a nearly rank-deficient matrix (a
    region of a few pixels at relu5_1 has a 512x512 covariance of rank <= 4): retry in float64."""
    result = decomposition(matrix)
    first = result if isinstance(result, torch.Tensor) else result[0]
    if matrix.dtype == torch.float64 or bool(torch.isfinite(first).all()):
        return result
    result = decomposition(matrix.double())
    return result.to(matrix.dtype) if isinstance(result, torch.Tensor) else tuple(t.to(matrix.dtype) for t in result)


STATISTICS = {"gram": GramLoss, "meancov": MeanCovLoss}


class MaskedStyleLoss:
    """One style statistic of one layer, between a content region and its mapped style region.

    Called with every layer's region statistics, {layer: [(mean, gram) per region]}; ``slot`` is this
    region's place among its layer's regions, ``region`` the content region it belongs to. The
    statistics may come from the whole image at once or be summed over tiles: the loss is the same.
    """

    def __init__(self, layer: str, statistic, weight: float, slot: int = 0, region: int = 0):
        self.layer, self.statistic, self.weight, self.slot, self.region = layer, statistic, weight, slot, region

    def __call__(self, statistics: dict[str, list[tuple[torch.Tensor, torch.Tensor]]]) -> torch.Tensor:
        return self.weight * self.statistic(*statistics[self.layer][self.slot])


class ContentLoss:
    """Mean squared activation difference weighted per pixel, relative to the target's mean square.

    A tile passes its part of the activations with ``rows``/``cols`` (at this layer's resolution): its
    share of the loss, so the shares of all tiles add up to the whole image's loss.
    """

    def __init__(self, layer: str, target: torch.Tensor, weight_map: torch.Tensor, region: int = 0):
        self.layer, self.target, self.weight_map = layer, target, weight_map  # (1,C,h,w), (1,1,h,w)
        self.region = region  # the content region whose pixels the weight map covers
        self.scale = target.square().mean().clamp_min(1e-12)
        self.count = target.numel()

    def __call__(self, features: dict[str, torch.Tensor], rows: slice = slice(None), cols: slice = slice(None)
                 ) -> torch.Tensor:
        diff = (features[self.layer] - self.target[..., rows, cols]).square()
        return (diff * self.weight_map[..., rows, cols]).sum() / self.count / self.scale


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels (size independent)."""
    return ((image[..., 1:, :] - image[..., :-1, :]).square().mean()
            + (image[..., :, 1:] - image[..., :, :-1]).square().mean())
