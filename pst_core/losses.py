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
        self.index = None if bool(keep.all()) else keep.nonzero()[:, 0]
        self.weight = w if self.index is None else w[self.index]
        self.ones = bool((self.weight == 1).all())  # an all-ones mask: plain, unmasked statistics
        self.mass = self.weight.sum()
        self.empty = float(self.mass) < MIN_MASS_FRACTION * w.numel()

    def columns(self, features: torch.Tensor) -> torch.Tensor:
        """(C, h, w) activations -> (C, n) the region's pixels."""
        f = features.flatten(1)
        return f if self.index is None else f.index_select(1, self.index)

    def gram(self, features: torch.Tensor) -> torch.Tensor:
        f = self.columns(features)
        fw = f if self.ones else f * self.weight.sqrt()
        return fw @ fw.T / self.mass

    def mean_cov(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.columns(features) @ self.weight / self.mass
        return mean, self.gram(features) - torch.outer(mean, mean)


class GramLoss:
    """Gatys et al.: squared Frobenius distance of masked Gram matrices, relative to the target's."""

    def __init__(self, target_features: torch.Tensor, target_region: Region):
        self.target = target_region.gram(target_features)
        self.scale = self.target.square().sum().clamp_min(1e-12)

    def __call__(self, features: torch.Tensor, region: Region) -> torch.Tensor:
        return (region.gram(features) - self.target).square().sum() / self.scale


class MeanCovLoss:
    """crowsonkb: Wasserstein-2 distance between the Gaussians (mean, covariance) of the activations,
    ||mu - mu_t||^2 + tr S + tr S_t - 2 tr (S_t^1/2 S S_t^1/2)^1/2, relative to the target's size.

    tr M^1/2 is the sum of the square roots of M's eigenvalues; the eigenvalues' gradient
    (V diag(g) V^T) does not involve eigenvalue gaps, so it stays stable where eigh's vectors would not.
    """

    def __init__(self, target_features: torch.Tensor, target_region: Region):
        self.mean, cov = target_region.mean_cov(target_features)
        vals, vecs = torch.linalg.eigh(cov)
        self.root = (vecs * vals.clamp_min(0).sqrt()) @ vecs.T
        self.trace = cov.trace()
        self.scale = (self.trace + self.mean.square().sum()).clamp_min(1e-12)
        self.floor = 1e-8 * float(self.scale)  # below this an eigenvalue is rounding noise

    def __call__(self, features: torch.Tensor, region: Region) -> torch.Tensor:
        mean, cov = region.mean_cov(features)
        prod = self.root @ cov @ self.root
        vals = torch.linalg.eigvalsh((prod + prod.T) / 2).clamp_min(self.floor)
        w2 = (mean - self.mean).square().sum() + cov.trace() + self.trace - 2 * vals.sqrt().sum()
        return w2 / self.scale


STATISTICS = {"gram": GramLoss, "meancov": MeanCovLoss}


class MaskedStyleLoss:
    """One style statistic of one layer, between a content region and its mapped style region."""

    def __init__(self, layer: str, statistic, region: Region, weight: float):
        self.layer, self.statistic, self.region, self.weight = layer, statistic, region, weight

    def __call__(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.weight * self.statistic(features[self.layer][0], self.region)


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
