"""Small composable losses on VGG activations, masked (guided) statistics first-class.

Every statistic is a mean over a region's pixels (weights = the soft mask resized to the layer by
area averaging, divided by the mask's mass), and every loss is divided by the size of its target,
so weights do not need retuning when the image size, the layer or the region size changes.
"""

from __future__ import annotations

import torch

# Pixels whose weight is below this fraction of the region's largest weight are left out of its
# statistics: with near-hard soft masks the K regions then cost about one full Gram, not K.
SPARSE_THRESHOLD = 1e-3
MIN_MASS_FRACTION = 1e-4  # a region lighter than this share of a layer's pixels has no statistics


class Region:
    """A soft mask (h, w) at one layer's resolution, prepared for masked statistics."""

    def __init__(self, mask: torch.Tensor):
        w = mask.flatten()
        keep = w > SPARSE_THRESHOLD * w.max().clamp_min(1e-12)
        self.numel = w.numel()
        self.index = None if bool(keep.all()) else keep.nonzero()[:, 0]
        self.weight = w if self.index is None else w[self.index]
        self.ones = bool((self.weight == 1).all())  # an all-ones mask: plain, unmasked statistics
        self.sqrt_weight = self.weight.sqrt()
        self.mass = self.weight.sum()
        self.empty = float(self.mass) < MIN_MASS_FRACTION * self.numel

    def columns(self, features: torch.Tensor) -> torch.Tensor:
        """(C, h, w) activations -> (C, n) the region's pixels."""
        f = features.flatten(1)
        return f if self.index is None else f.index_select(1, self.index)

    def gram(self, features: torch.Tensor) -> torch.Tensor:
        return masked_grams(features, [self])[0]

    def mean_cov(self, features: torch.Tensor, gram: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.columns(features) @ self.weight / self.mass
        return mean, (self.gram(features) if gram is None else gram) - torch.outer(mean, mean)


class _MaskedGrams(torch.autograd.Function):
    """The Grams of several regions of one layer as one autograd node.

    Each region multiplies only its kept pixels, and the backward gathers every region's gradient
    into a single tensor: (dG + dG^T) X / mass per region (one matmul; autograd's mm backward spends
    two), added in place by pixel index, rather than K zero-filled full-size gradients summed.
    """

    @staticmethod
    def forward(ctx, features, regions):
        f = features.flatten(1)
        cols = []
        for r in regions:
            c = f if r.index is None else f.index_select(1, r.index)
            cols.append(c if r.ones else c * r.sqrt_weight)
        ctx.regions, ctx.shape = regions, features.shape
        ctx.save_for_backward(*cols)
        # Separate outputs, not one stacked tensor: selecting from a stack costs a (K, C, C) zero-filled
        # gradient per region in the backward.
        ctx.set_materialize_grads(False)
        return tuple(c @ c.T / r.mass for c, r in zip(cols, regions))

    @staticmethod
    def backward(ctx, *grads):
        out = None
        for g, c, r in zip(grads, ctx.saved_tensors, ctx.regions):
            if g is None:
                continue
            d = (g + g.T) @ c / r.mass
            d = d if r.ones else d * r.sqrt_weight
            if r.index is None:
                out = d if out is None else out + d
            else:
                out = d.new_zeros(d.shape[0], r.numel) if out is None else out
                out.index_add_(1, r.index, d)
        return (None if out is None else out.view(ctx.shape)), None


def masked_grams(features: torch.Tensor, regions: list[Region]) -> tuple[torch.Tensor, ...]:
    """(C, h, w) activations -> K mass-normalised (C, C) Gram matrices, one per region."""
    return _MaskedGrams.apply(features, regions)


class GramLoss:
    """Gatys et al.: squared Frobenius distance of masked Gram matrices, relative to the target's."""

    def __init__(self, target_features: torch.Tensor, target_region: Region):
        self.target = target_region.gram(target_features)
        self.scale = self.target.square().sum().clamp_min(1e-12)

    def __call__(self, features: torch.Tensor, region: Region, gram: torch.Tensor | None = None) -> torch.Tensor:
        gram = region.gram(features) if gram is None else gram
        return (gram - self.target).square().sum() / self.scale


class MeanCovLoss:
    """crowsonkb: Wasserstein-2 distance between the Gaussians (mean, covariance) of the activations,
    ||mu - mu_t||^2 + tr S + tr S_t - 2 tr (S_t^1/2 S S_t^1/2)^1/2, relative to the target's size.

    tr M^1/2 is the sum of the square roots of M's eigenvalues; the eigenvalues' gradient
    (V diag(g) V^T) does not involve eigenvalue gaps, so it stays stable where eigh's vectors would not.
    """

    def __init__(self, target_features: torch.Tensor, target_region: Region):
        self.mean, cov = target_region.mean_cov(target_features)
        vals, vecs = _stable(torch.linalg.eigh, cov)
        self.root = (vecs * vals.clamp_min(0).sqrt()) @ vecs.T
        self.trace = cov.trace()
        self.scale = (self.trace + self.mean.square().sum()).clamp_min(1e-12)
        self.floor = 1e-8 * float(self.scale)  # below this an eigenvalue is rounding noise

    def __call__(self, features: torch.Tensor, region: Region, gram: torch.Tensor | None = None) -> torch.Tensor:
        mean, cov = region.mean_cov(features, gram)
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

    Called with the activations and, optionally, the region Grams of every layer computed together
    (``masked_grams``); ``slot`` is this region's place among its layer's regions.
    """

    def __init__(self, layer: str, statistic, region: Region, weight: float, slot: int = 0):
        self.layer, self.statistic, self.region, self.weight, self.slot = layer, statistic, region, weight, slot

    def __call__(self, features: dict[str, torch.Tensor], grams: dict[str, torch.Tensor] | None = None
                 ) -> torch.Tensor:
        gram = None if grams is None else grams[self.layer][self.slot]
        return self.weight * self.statistic(features[self.layer][0], self.region, gram)


class ContentLoss:
    """Mean squared activation difference weighted per pixel, relative to the target's mean square."""

    def __init__(self, layer: str, target: torch.Tensor, weight_map: torch.Tensor):
        self.layer, self.target, self.weight_map = layer, target, weight_map  # (1,C,h,w), (1,1,h,w)
        self.scale = target.square().mean().clamp_min(1e-12)

    def __call__(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        diff = (features[self.layer] - self.target).square()
        return (diff * self.weight_map).mean() / self.scale


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels (size independent)."""
    return ((image[..., 1:, :] - image[..., :-1, :]).square().mean()
            + (image[..., :, 1:] - image[..., :, :-1]).square().mean())
