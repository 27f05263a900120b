"""Cluster backprop, fusion and the composed segmentation on small synthetic images (random VGG19)."""

import copy

import pytest
import torch

import numpy as np

from pst_core import synthetic
from pst_core.color.spaces import srgb_to_lab
from pst_core.segmentation.backprop_clusters import backprop_indicators, layer_features
from pst_core.config.overrides import build_config
from pst_core.config.schema import BackpropParams, ClusterLayerParams, FuseParams
from pst_core.segmentation.fuse_segmentation import fuse_indicators
from pst_core.segmentation.cluster_layer import maxent_cluster
from pst_core.config.presets import PRESETS
from pst_core.segmentation.segment import segment_image
from pst_core.segmentation.texture import confidence, gaussian_blur, local_energy
from pst_core.features import load_vgg


@pytest.fixture(scope="module")
def vgg():
    return load_vgg("random", seed=0)


def best_iou(labels, truth, k):
    scores = []
    for subset in range(1, 2 ** k - 1):
        pred = torch.zeros_like(truth)
        for j in range(k):
            if subset >> j & 1:
                pred |= labels == j
        scores.append(float((pred & truth).sum()) / float((pred | truth).sum()))
    return max(scores)


def two_textures(size=64):
    """Vertical stripes on the left, horizontal on the right, of the same two colours: every pixel
    colour occurs equally often on both sides, so colour alone cannot tell them apart."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    truth = x >= size // 2
    on = torch.where(truth, (y // 2) % 2, (x // 2) % 2).bool()
    image = torch.where(on, torch.tensor([0.9, 0.7, 0.2]).view(3, 1, 1), torch.tensor([0.1, 0.3, 0.6]).view(3, 1, 1))
    return image, truth


def disk(size=64):
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    truth = (y - size / 2) ** 2 + (x - size / 2) ** 2 <= (size / 4) ** 2
    image = torch.where(truth, torch.tensor([0.9, 0.8, 0.1]).view(3, 1, 1), torch.tensor([0.1, 0.4, 0.5]).view(3, 1, 1))
    return image + 0.03 * torch.randn(3, size, size, generator=torch.Generator().manual_seed(0)), truth


def test_textures_with_equal_colours_need_layer_features(vgg):
    image, truth = two_textures()
    _, colour, _ = maxent_cluster(layer_features(image, vgg, "rgb"), 2)
    assert best_iou(colour.argmax(0), truth, 2) < 0.7  # colour clustering picks the stripes instead
    cluster = ClusterLayerParams(k=3, layers=["relu2_1"])
    regions = segment_image(image, vgg, ["relu2_1"], cluster, BackpropParams(method="upsample", blur=2.0),
                            FuseParams(k=2, layer_weights={}, colour_weight=0.0))  # layer features alone
    assert best_iou(regions.argmax(0), truth, 2) > 0.85


@pytest.mark.parametrize("method", ["vjp", "upsample"])
def test_indicators_are_distributions_at_image_resolution(vgg, method):
    image, truth = disk(48)
    for layer in ("rgb", "conv1_2", "relu3_1"):
        with torch.no_grad():
            features = layer_features(image, vgg, layer)
        head, _, _ = maxent_cluster(features, 3)
        ind = backprop_indicators(image, vgg, layer, head, method=method, blur=1.5)
        assert ind.shape == (3, 48, 48)
        assert (ind >= 0).all()
        assert torch.allclose(ind.sum(0), torch.ones(48, 48), atol=1e-5)


def test_upsampled_layer_clusters_find_the_disk(vgg):
    image, truth = disk()
    with torch.no_grad():
        features = layer_features(image, vgg, "relu1_1")
    head, _, _ = maxent_cluster(features, 3)
    ind = backprop_indicators(image, vgg, "relu1_1", head, method="upsample", blur=1.0)
    assert best_iou(ind.argmax(0), truth, 3) > 0.8


def test_blur_preserves_mass_and_smooths():
    spike = torch.zeros(1, 21, 21)
    spike[0, 10, 10] = 1.0
    blurred = gaussian_blur(spike, 2.0)
    assert torch.isclose(blurred.sum(), torch.tensor(1.0), atol=1e-5)
    assert float(blurred.max()) < 0.1 and float(blurred[0, 10, 12]) > 0
    assert torch.equal(gaussian_blur(spike, 0.0), spike)


def test_fusion_orders_regions_by_size_and_weights_layers():
    # Layer "a" says left quarter vs rest; layer "b" says top half vs bottom.
    a = torch.zeros(2, 32, 32)
    a[0, :, :8], a[1, :, 8:] = 1, 1
    b = torch.zeros(2, 32, 32)
    b[0, :16], b[1, 16:] = 1, 1
    _, regions = fuse_indicators({"a": a, "b": b}, k=2, layer_weights={"a": 3.0, "b": 0.1}, balance_weight=0.3)
    mass = regions.mean((1, 2))
    assert torch.allclose(regions.sum(0), torch.ones(32, 32), atol=1e-5)
    assert float(mass[0]) >= float(mass[1])
    labels = regions.argmax(0)
    assert (labels[:, 8:] == 0).all() and (labels[:, :8] == 1).all()  # "a" wins, largest first
    _, regions = fuse_indicators({"a": a, "b": b}, k=2, layer_weights={"a": 0.1, "b": 3.0})
    labels = regions.argmax(0)
    assert (labels[:16] == labels[0, 0]).all() and (labels[16:] != labels[0, 0]).all()  # now "b" wins


def test_segment_image_is_deterministic_and_finds_the_disk(vgg):
    image, truth = disk()
    config = build_config(copy.deepcopy(PRESETS["default"]), ["features.layers=relu1_1,relu3_1", "fuse_segmentation.k=2"])
    run = lambda: segment_image(image, vgg, config.features.layers, config.cluster_layer,  # noqa: E731
                                config.backprop_clusters, config.fuse_segmentation)
    first, second = run(), run()
    assert torch.equal(first, second)
    assert first.shape == (2, 64, 64)
    assert torch.allclose(first.sum(0), torch.ones(64, 64), atol=1e-5)
    # Blur and smoothness round the region edges by a pixel or two, hence not ~1.
    assert best_iou(first.argmax(0), truth, 2) > 0.85


def test_presets_are_valid_configs():
    seed = build_config(copy.deepcopy(PRESETS["seed"]))
    assert seed.cluster_layer.layers == ["rgb", "conv1_2", "conv5_4"]
    assert seed.cluster_layer.k == 3 and seed.fuse_segmentation.k == 3
    default = build_config(copy.deepcopy(PRESETS["default"]))
    assert default.cluster_layer == ClusterLayerParams()
    assert default.fuse_segmentation == FuseParams()


def default_regions(image, vgg, k):
    config = build_config(copy.deepcopy(PRESETS["default"]), ["features.weights=random", f"fuse_segmentation.k={k}"])
    return segment_image(image, vgg, config.features.layers, config.cluster_layer, config.backprop_clusters,
                         config.fuse_segmentation)


@pytest.mark.parametrize("layout, kinds", [("halves_h", (("waves", 12, 0), ("dots", 8, 0))),
                                           ("disk", (("stripes", 8, 45), ("checks", 10, 0)))])
def test_texture_only_pictures_are_segmented_with_the_defaults(vgg, layout, kinds):
    """Regions of the same mean colour and contrast, different structure: colour cannot tell them apart
    (k-means on Lab splits light from dark), the default segmentation finds them."""
    size, rng = 64, np.random.default_rng(0)
    labels = synthetic.layout(layout, (size, size), rng)
    patterns = [synthetic.texture(kind, (size, size), period, angle, rng) for kind, period, angle in kinds]
    image = torch.from_numpy(synthetic.mosaic(labels, patterns, [(0.55, 0.45, 0.35)] * 2))
    truth = torch.from_numpy(labels == 0)
    _, colour, _ = maxent_cluster(srgb_to_lab(image), 2)
    assert best_iou(colour.argmax(0), truth, 2) < 0.7
    assert best_iou(default_regions(image, vgg, 2).argmax(0), truth, 2) > 0.9


def test_local_energy_is_the_same_all_over_a_texture():
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    stripes = torch.sin(2 * torch.pi * x / 8)[None].clamp_min(0)  # a rectified filter response
    energy = local_energy(stripes, 1 / 16)[0, 8:-8, 8:-8]
    assert float(stripes.std()) > 0.3 and float(energy.std() / energy.mean()) < 0.02


def test_confidence_is_high_for_regions_and_low_for_clusters_that_alternate_within_a_texture():
    x = torch.arange(64.0).expand(64, 64)
    halves = torch.stack([x < 32, x >= 32]).float()
    stripes = torch.stack([(x // 4) % 2 == 0, (x // 4) % 2 == 1]).float()  # confident pixel by pixel
    assert confidence(halves, 1 / 32) > 0.8
    assert confidence(stripes, 0.0) > 0.9 and confidence(stripes, 1 / 32) < 0.2
