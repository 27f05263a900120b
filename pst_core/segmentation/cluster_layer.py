"""Maximum-entropy clustering: a softmax head over per-pixel features, trained per image.

Model: p(k|x) = softmax(W z(x) + b), z = per-channel standardised features (times optional channel
weights), optionally followed by the pixel coordinates (y, x in [-1, 1], times ``coords_weight``).
With ``window`` > 0 the features are first pooled into their local energy (``segmentation.texture``), so a
texture is clustered by what it is rather than by its phase.
Loss (RIM, Krause et al. 2010; IIC): - balance_weight * H(mean_x p) + entropy_weight * mean_x H(p)
+ smoothness * TV(p) [+ seed-point cross-entropy] [+ minimum-size hinge]. The first term asks for
balanced clusters, the second for confident pixels, TV for spatially coherent ones.
W and b start from k-means++ centres (nearest-centre logits), then full-batch Adam.
One function serves the colour channels, every VGG layer and the final fusion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pst_core.config.schema import ClusterLayerParams
from pst_core.errors import ConfigError
from pst_core.segmentation.texture import local_energy

_EPS = 1e-8


def coordinates(h: int, w: int) -> torch.Tensor:
    """(3, h, w): y and x in [-1, 1] (so heads carry over between resolutions) and the squared
    distance from the centre, shifted to mean ~0: with it a linear head can express "centre versus
    border", the strongest prior for where a photograph's subject is; y and x alone give half-planes."""
    ys = torch.linspace(-1, 1, h) if h > 1 else torch.zeros(1)
    xs = torch.linspace(-1, 1, w) if w > 1 else torch.zeros(1)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([y, x, y * y + x * x - 2 / 3])


@dataclass
class ClusterHead:
    """A trained head: standardisation, channel weights, coordinates scale and the softmax layer."""

    mean: np.ndarray            # (D,)
    std: np.ndarray             # (D,)
    channel_weight: np.ndarray  # (D,)
    weight: np.ndarray          # (K, D + 3 if coords_weight > 0 else D)
    bias: np.ndarray            # (K,)
    coords_weight: float = 0.0
    window: float = 0.0         # local energy window, a fraction of the map's longer side (0: raw features)

    @property
    def k(self) -> int:
        return int(self.bias.shape[0])

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {name: np.asarray(getattr(self, name), dtype=np.float32)
                  for name in ("mean", "std", "channel_weight", "weight", "bias")}
        arrays["coords_weight"] = np.asarray(self.coords_weight, dtype=np.float32)
        arrays["window"] = np.asarray(self.window, dtype=np.float32)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "ClusterHead":
        get = lambda name: np.asarray(arrays[name], dtype=np.float32)  # noqa: E731
        return cls(get("mean"), get("std"), get("channel_weight"), get("weight"), get("bias"),
                   float(np.asarray(arrays["coords_weight"])), float(np.asarray(arrays.get("window", 0.0))))

    def pooled(self, features: torch.Tensor) -> torch.Tensor:
        """(D, H, W) raw features -> what the head standardises: their local energy, or themselves."""
        return local_energy(features, self.window) if self.window > 0 else features.float()

    def inputs(self, features: torch.Tensor, pooled: bool = False) -> torch.Tensor:
        """(D, H, W) raw (or, with ``pooled``, already pooled) features -> (D', H, W) head inputs
        (standardised, weighted, + coordinates)."""
        f = features.float() if pooled else self.pooled(features)
        as_t = lambda a: torch.from_numpy(a).to(f.device).view(-1, 1, 1)  # noqa: E731
        z = (f - as_t(self.mean)) / as_t(self.std) * as_t(self.channel_weight)
        if self.coords_weight > 0:
            z = torch.cat([z, self.coords_weight * coordinates(*f.shape[1:]).to(f.device)])
        return z

    def logits(self, features: torch.Tensor, pooled: bool = False) -> torch.Tensor:
        z = self.inputs(features, pooled)
        w = torch.from_numpy(self.weight).to(z.device)
        b = torch.from_numpy(self.bias).to(z.device)
        return torch.einsum("kd,dhw->khw", w, z) + b.view(-1, 1, 1)

    def probs(self, features: torch.Tensor, pooled: bool = False) -> torch.Tensor:
        """(D, H, W) -> (K, H, W), summing to 1 per pixel; differentiable wrt ``features``."""
        return torch.softmax(self.logits(features, pooled), dim=0)

    def permuted(self, order: list[int]) -> "ClusterHead":
        """The same head with its clusters renumbered: new cluster i is old cluster order[i]."""
        return ClusterHead(self.mean, self.std, self.channel_weight, self.weight[order].copy(),
                           self.bias[order].copy(), self.coords_weight, self.window)


def _kmeans_pp(x: torch.Tensor, k: int, gen: torch.Generator, fixed: torch.Tensor | None,
               lloyd_steps: int = 10) -> torch.Tensor:
    """k-means++ centres of the rows of x (N, D), then a few Lloyd steps; ``fixed`` rows stay put."""
    centres = [] if fixed is None else list(fixed)
    if not centres:
        centres.append(x[torch.randint(len(x), (1,), generator=gen)].squeeze(0))
    while len(centres) < k:
        d2 = torch.cdist(x, torch.stack(centres)).pow(2).min(1).values
        if float(d2.sum()) <= 0:  # fewer distinct points than clusters: any point will do
            pick = torch.randint(len(x), (1,), generator=gen)
        else:
            pick = torch.multinomial(d2 / d2.sum(), 1, generator=gen)
        centres.append(x[pick].squeeze(0))
    c = torch.stack(centres)
    n_fixed = 0 if fixed is None else len(fixed)
    for _ in range(lloyd_steps):
        assign = torch.cdist(x, c).argmin(1)
        for j in range(n_fixed, k):
            members = x[assign == j]
            if len(members):
                c[j] = members.mean(0)
    return c


def _entropy(p: torch.Tensor, log_p: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return -(p * log_p).sum(dim)


def _enforce_min_size(w: torch.Tensor, b: torch.Tensor, z: torch.Tensor, min_size: float) -> torch.Tensor:
    """Raise the bias of any cluster whose mass is below ``min_size`` just enough (bisection)."""
    b = b.clone()
    mass = lambda bb: torch.softmax(w @ z + bb[:, None], 0).mean(1)  # noqa: E731
    for _ in range(3 * len(b)):  # raising one cluster can shrink another: a few passes
        m = mass(b)
        small = int(m.argmin())
        if float(m[small]) >= min_size:
            break
        lo, hi = 0.0, 1.0
        while float(mass(b + hi * F.one_hot(torch.tensor(small), len(b)))[small]) < min_size and hi < 1e4:
            hi *= 2
        for _ in range(40):
            mid = (lo + hi) / 2
            if float(mass(b + mid * F.one_hot(torch.tensor(small), len(b)))[small]) < min_size:
                lo = mid
            else:
                hi = mid
        b[small] += hi
    return b


def maxent_cluster(features: torch.Tensor, k: int, *, iterations: int = 200, entropy_weight: float = 1.0,
                   balance_weight: float = 1.0, smoothness: float = 0.0, coords_weight: float = 0.0,
                   lr: float = 0.05, seed: int = 0, seed_points: list[tuple[int, int, int]] | None = None,
                   min_region_size: float = 0.0, channel_weights: torch.Tensor | None = None,
                   window: float = 0.0) -> tuple[ClusterHead, torch.Tensor, list[float]]:
    """features (D, H, W) -> (head, probs (K, H, W) summing to 1 per pixel, loss history).

    seed_points: (y, x, region) in feature-map pixels; region r is then the user's region r.
    min_region_size: fraction of the image each cluster's soft mass mean_x p_k must reach.
    channel_weights: (D,) multipliers applied after standardisation (the fusion's layer weights).
    window: cluster the features' local energy over a Gaussian window of sigma ``window`` times the
    map's longer side (texture descriptors); 0 clusters the features themselves.
    """
    if features.dim() != 3:
        raise ConfigError(f"maxent_cluster: features must be (D, H, W), got shape {tuple(features.shape)}")
    if k * min_region_size > 1:
        raise ConfigError(f"min_region_size={min_region_size} is infeasible for k={k} clusters")
    d, h, w = features.shape
    f = local_energy(features.detach(), window) if window > 0 else features.detach().float()
    flat = f.reshape(d, -1)
    mean, std = flat.mean(1), flat.std(1)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # constant channels carry nothing
    cw = torch.ones(d) if channel_weights is None else channel_weights.detach().float().reshape(d)
    head = ClusterHead(mean.numpy(), std.numpy(), cw.numpy(), np.zeros((k, 1), np.float32),
                       np.zeros(k, np.float32), float(coords_weight), float(window))
    z = head.inputs(f, pooled=True).reshape(-1, h * w)  # (D', N)
    points = [(int(y), int(x), int(r)) for y, x, r in (seed_points or [])]
    for y, x, r in points:
        if not (0 <= y < h and 0 <= x < w and 0 <= r < k):
            raise ConfigError(f"seed point {(y, x, r)} is outside the {h}x{w} map or the {k} regions")
    gen = torch.Generator().manual_seed(seed)

    # k-means++ on a subsample: the init only needs centres, not a full pass over every pixel.
    sample = z.T[torch.randperm(h * w, generator=gen)[:4096]]
    fixed = None
    if points:
        regions = sorted({r for _, _, r in points})
        if regions != list(range(len(regions))):
            raise ConfigError("seed points must name regions 0..r without gaps")
        idx = torch.tensor([y * w + x for y, x, _ in points])
        lab = torch.tensor([r for _, _, r in points])
        fixed = torch.stack([z.T[idx[lab == r]].mean(0) for r in regions])
    c = _kmeans_pp(sample, k, gen, fixed)
    temp = torch.cdist(sample, c).pow(2).min(1).values.mean().clamp_min(1e-3)
    weight = (2 * c / temp).requires_grad_()
    bias = (-(c * c).sum(1) / temp).requires_grad_()

    opt = torch.optim.Adam([weight, bias], lr=lr)
    history: list[float] = []
    for _ in range(iterations):
        opt.zero_grad(set_to_none=True)
        logits = weight @ z + bias[:, None]
        # Clamped: confident heads push log p towards -inf, and denormal floats are very slow on CPUs.
        log_p = torch.log_softmax(logits, 0).clamp_min(-60)
        p = log_p.exp()
        mass = p.mean(1)
        loss = (-balance_weight * _entropy(mass, torch.log(mass + _EPS))
                + entropy_weight * _entropy(p, log_p).mean())
        if smoothness > 0:
            grid = p.view(k, h, w)
            tv = (grid[:, 1:] - grid[:, :-1]).abs().sum(0).mean() + (grid[:, :, 1:] - grid[:, :, :-1]).abs().sum(0).mean()
            loss = loss + smoothness * tv
        if points:
            loss = loss + F.nll_loss(log_p[:, idx].T, lab)
        if min_region_size > 0:
            loss = loss + 10.0 * torch.relu(min_region_size - mass).sum()
        loss.backward()
        opt.step()
        history.append(loss.item())
        if not np.isfinite(history[-1]):
            raise ConfigError("maxent_cluster: the loss became non-finite (try a smaller lr)")
    weight, bias = weight.detach(), bias.detach()
    if min_region_size > 0:
        bias = _enforce_min_size(weight, bias, z, min_region_size)
    head.weight, head.bias = weight.numpy().copy(), bias.numpy().copy()
    return head, head.probs(f, pooled=True), history


# -- the cluster_layer stage: which layers, with which settings ---------------------------------------
def cluster_layers(cluster: ClusterLayerParams, feature_layers: list[str]) -> list[str]:
    """Which layers are clustered: ``cluster_layer.layers``, or (null, the default) rgb and every one of
    ``features.layers``. The plan, the checks before a run and ``segment_image`` all ask here. (An empty
    list would cluster nothing: the schema refuses it.)"""
    return list(cluster.layers) if cluster.layers is not None else ["rgb", *feature_layers]


def cluster_features(features: torch.Tensor, layer: str, cluster: ClusterLayerParams):
    """One layer's max-entropy clustering: (head, probs, loss history). Colour is clustered per pixel,
    VGG layers by their local energy over cluster.window (texture descriptors)."""
    return maxent_cluster(features, cluster.k, iterations=cluster.iterations, entropy_weight=cluster.entropy_weight,
                          balance_weight=cluster.balance_weight, smoothness=cluster.smoothness,
                          coords_weight=cluster.coords_weight, lr=cluster.lr, seed=cluster.seed,
                          window=0.0 if layer == "rgb" else cluster.window)
