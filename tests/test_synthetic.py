"""The synthetic textures and layouts that tests and benchmarks build their known-answer cases from."""

import numpy as np
import pytest

from pst_core import synthetic


@pytest.mark.parametrize("kind", synthetic.TEXTURES)
def test_textures_share_mean_and_contrast(kind):
    pattern = synthetic.texture(kind, (64, 80), period=12, angle=30, rng=np.random.default_rng(3))
    assert pattern.shape == (64, 80)
    assert abs(pattern.mean()) < 1e-9 and abs(pattern.std() - 1) < 1e-9


def test_stripes_alternate_across_their_angle():
    vertical = synthetic.texture("grating", (64, 64), period=16, angle=0)
    # angle 0: the pattern varies along x only, with a 16 px period
    assert np.allclose(vertical, vertical[:1], atol=1e-9)
    spectrum = np.abs(np.fft.rfft(vertical[0]))
    assert spectrum.argmax() == 64 // 16


@pytest.mark.parametrize("kind", synthetic.LAYOUTS)
def test_layouts_have_their_regions(kind):
    labels = synthetic.layout(kind, (96, 96), np.random.default_rng(1))
    counts = np.bincount(labels.ravel())
    expected = {"strips3": 3, "quadrants": 4}.get(kind, int(kind[-1]) if kind[-1].isdigit() else 2)
    assert len(counts) == expected and counts.min() > 0.05 * labels.size


def test_mosaic_regions_share_colour_statistics():
    labels = synthetic.layout("halves", (64, 64))
    patterns = [synthetic.texture("stripes", (64, 64), 8), synthetic.texture("dots", (64, 64), 10)]
    image = synthetic.mosaic(labels, patterns, [(0.5, 0.4, 0.3)] * 2, contrast=0.1)
    left, right = image[:, labels == 0], image[:, labels == 1]
    assert np.allclose(left.mean(1), right.mean(1), atol=0.01)
    assert np.allclose(left.std(1), right.std(1), atol=0.01)
    assert synthetic.label_masks(labels).sum(0).min() == 1
