"""Maximum-entropy clustering on small synthetic feature maps with known regions."""

import numpy as np
import pytest
import torch

from pst_core.errors import ConfigError
from pst_core.segmentation.cluster_layer import ClusterHead, maxent_cluster


def two_colours(h=32, w=32, noise=0.05, seed=0):
    """Left half one colour, right half another, plus pixel noise; returns (image, truth)."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.empty(3, h, w)
    image[:, :, : w // 2] = torch.tensor([0.8, 0.2, 0.2]).view(3, 1, 1)
    image[:, :, w // 2:] = torch.tensor([0.2, 0.3, 0.8]).view(3, 1, 1)
    truth = torch.zeros(h, w, dtype=torch.bool)
    truth[:, w // 2:] = True
    return image + noise * torch.randn(3, h, w, generator=gen), truth


def iou(a, b):
    return float((a & b).sum()) / float((a | b).sum())


def test_two_flat_colours_are_separated():
    image, truth = two_colours()
    _, probs, history = maxent_cluster(image, 2)
    labels = probs.argmax(0)
    assert max(iou(labels == 1, truth), iou(labels == 0, truth)) == 1.0
    assert history[-1] < history[0]


def test_gradient_is_split_in_the_middle():
    # A horizontal ramp: the balance term asks for equal halves, confidence for a sharp cut.
    ramp = torch.linspace(0, 1, 48).expand(3, 32, 48).clone()
    _, probs, _ = maxent_cluster(ramp, 2, iterations=300)
    labels = probs.argmax(0)
    left = labels[:, 0]
    assert (left == left[0]).all() and (labels[:, -1] != left[0]).all()
    # Every row switches exactly once, within 4 px of the middle.
    switches = (labels[:, 1:] != labels[:, :-1]).sum(1)
    assert (switches == 1).all()
    cut = (labels[0] != left[0]).float().argmax()
    assert abs(int(cut) - 24) <= 4


def test_probabilities_sum_to_one_and_are_deterministic():
    image, _ = two_colours(noise=0.3)
    head_a, probs_a, hist_a = maxent_cluster(image, 3, seed=7, smoothness=0.5, coords_weight=1.0)
    head_b, probs_b, hist_b = maxent_cluster(image, 3, seed=7, smoothness=0.5, coords_weight=1.0)
    assert torch.allclose(probs_a.sum(0), torch.ones(32, 32), atol=1e-5)
    assert torch.equal(probs_a, probs_b) and hist_a == hist_b
    assert np.array_equal(head_a.weight, head_b.weight)


def test_head_round_trip_and_gradient():
    image, _ = two_colours()
    head, probs, _ = maxent_cluster(image, 2, coords_weight=0.5)
    again = ClusterHead.from_arrays({k: np.array(v) for k, v in head.to_arrays().items()})
    assert torch.allclose(again.probs(image), probs, atol=1e-6)
    assert all(isinstance(v, np.ndarray) for v in head.to_arrays().values())
    features = image.clone().requires_grad_(True)
    again.probs(features)[0].sum().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0


def test_float16_features_are_accepted():
    image, truth = two_colours()
    _, probs, _ = maxent_cluster(image.half(), 2)
    assert probs.dtype == torch.float32
    labels = probs.argmax(0)
    assert max(iou(labels == 1, truth), iou(labels == 0, truth)) == 1.0


def three_stripes(noise=0.02):
    """Three vertical stripes: red | green | blue, 16 px each."""
    image = torch.zeros(3, 24, 48)
    for i in range(3):
        image[i, :, 16 * i: 16 * (i + 1)] = 1.0
    return image + noise * torch.randn(3, 24, 48, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("middle", [0, 1])
def test_seed_points_decide_the_labels(middle):
    # Two regions for three stripes: the seed points say which side the middle stripe joins.
    points = [(12, 4, 0), (12, 44, 1), (12, 24, middle), (3, 20, middle), (20, 28, middle)]
    _, probs, _ = maxent_cluster(three_stripes(), 2, seed_points=points)
    labels = probs.argmax(0)
    assert (labels[:, :16] == 0).all()
    assert (labels[:, 32:] == 1).all()
    assert (labels[:, 16:32] == middle).all()


def test_min_region_size_is_respected():
    # A small square (1/16 of the image) on a flat background, no balance term.
    image = torch.zeros(3, 32, 32)
    image[:, 4:12, 4:12] = 1.0
    image += 0.01 * torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(0))
    free = maxent_cluster(image, 2, balance_weight=0.0)[1].mean((1, 2))
    assert float(free.min()) < 0.2  # without the constraint a cluster is small
    _, probs, _ = maxent_cluster(image, 2, balance_weight=0.0, min_region_size=0.3)
    assert float(probs.mean((1, 2)).min()) >= 0.3 - 1e-4


def test_bad_arguments_are_refused():
    image, _ = two_colours()
    with pytest.raises(ConfigError):
        maxent_cluster(image, 3, min_region_size=0.5)
    with pytest.raises(ConfigError):
        maxent_cluster(image, 2, seed_points=[(40, 0, 0)])
    with pytest.raises(ConfigError):
        maxent_cluster(image[0], 2)
