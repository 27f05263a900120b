"""The network-free quality measures give the right answer on images of known structure."""

import numpy as np
import pytest

from pst_core.inspect import quality
from pst_core import synthetic

SIZE = 128
PAIRS = [(("stripes", 14, 0), ("dots", 10, 0)), (("stripes", 12, 0), ("stripes", 12, 90)),
         (("waves", 20, 0), ("dots", 12, 0)), (("checks", 12, 0), ("blobs", 10, 0))]


def _textures(pair, rng):
    return [synthetic.texture(kind, (SIZE, SIZE), period, angle, rng) for kind, period, angle in pair]


def _case(pair):
    """A two-texture style (top/bottom) and a content layout (a disk in a ground) to put them in."""
    rng = np.random.default_rng(0)
    style_labels = synthetic.layout("halves_h", (SIZE, SIZE))
    style = synthetic.mosaic(style_labels, _textures(pair, rng), [(0.8, 0.5, 0.2), (0.2, 0.4, 0.8)])
    labels = synthetic.layout("disk", (SIZE, SIZE))

    def painted(textures, contrast=0.18, colours=((0.5, 0.5, 0.5),) * 2):
        return synthetic.mosaic(labels, textures, list(colours), contrast=contrast)

    return style, synthetic.label_masks(style_labels), synthetic.label_masks(labels), painted, rng


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0][0]}-{p[1][0]}")
def test_structure_score_recognises_the_mapped_texture(pair):
    style, style_masks, masks, painted, rng = _case(pair)
    mapping = {0: 0, 1: 1}
    right = quality.structure_scores(painted(_textures(pair, rng)), masks, style, style_masks, mapping)
    faint = quality.structure_scores(painted(_textures(pair, rng), 0.04), masks, style, style_masks, mapping)
    wrong = quality.structure_scores(painted(_textures(pair[::-1], rng)), masks, style, style_masks, mapping)
    assert min(right.values()) > 0.6, right  # each region wears its own texture
    assert min(faint.values()) > 0.6, faint  # contrast does not matter, structure does
    assert max(wrong.values()) < 0, wrong  # swapped textures score below zero


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0][0]}-{p[1][0]}")
def test_structure_score_ignores_a_regions_outline(pair):
    """A bright disk on a dark ground scores as the same textures in equal greys: the step between the
    regions' brightness is the content's palette, not texture (a low-frequency filter is wider than a
    thin region and would measure that step). Flat colours, however bright, have no structure."""
    style, style_masks, masks, _, rng = _case(pair)
    labels, textures, mapping = masks.argmax(0), _textures(pair, rng), {0: 0, 1: 1}
    even = synthetic.mosaic(labels, textures, [(0.5,) * 3] * 2)
    bright = synthetic.mosaic(labels, textures, [(0.85,) * 3, (0.15,) * 3])
    flat = synthetic.mosaic(labels, [np.zeros((SIZE, SIZE))] * 2, [(0.85,) * 3, (0.15,) * 3], contrast=0.0)
    scores = [quality.structure_scores(image, masks, style, style_masks, mapping) for image in (even, bright, flat)]
    assert all(abs(scores[0][r] - scores[1][r]) < 0.1 for r in mapping), scores
    assert max(abs(v) for v in scores[2].values()) < 0.05, scores


@pytest.mark.parametrize("pair", PAIRS[:2], ids=lambda p: f"{p[0][0]}-{p[1][0]}")
def test_structure_score_is_near_zero_without_the_structure(pair):
    style, style_masks, masks, painted, rng = _case(pair)
    mapping = {0: 0, 1: 1}
    noise = np.clip(0.5 + 0.2 * rng.standard_normal((3, SIZE, SIZE)), 0, 1)
    ramp = np.broadcast_to(np.linspace(0.2, 0.8, SIZE), (3, SIZE, SIZE))
    mix = 0.5 * painted(_textures(pair, rng)) + 0.5 * painted(_textures(pair[::-1], rng))
    for image, limit in ((noise, 0.35), (ramp, 0.35), (mix, 0.5)):  # a mix leans to the peakier texture
        scores = quality.structure_scores(image, masks, style, style_masks, mapping)
        assert max(abs(v) for v in scores.values()) < limit, scores


@pytest.mark.parametrize("pair", PAIRS[:3], ids=lambda p: f"{p[0][0]}-{p[1][0]}")
def test_structure_parts_tell_a_missing_texture_from_an_added_one(pair):
    """Mixing the other texture in keeps the region's own peaks and adds the other region's: the parts
    say which one lowered the score."""
    style, style_masks, masks, painted, rng = _case(pair)
    mapping = {0: 0, 1: 1}
    reference = quality.StructureReference(style, style_masks, (SIZE, SIZE))
    image = painted(_textures(pair, rng))
    right = reference.parts(image, masks, mapping)
    mix = reference.parts(0.5 * image + 0.5 * painted(_textures(pair[::-1], rng)), masks, mapping)
    assert reference.scores(image, masks, mapping) == {r: p.score for r, p in right.items()}
    for r in mapping:
        assert right[r].own > 0.6 and right[r].other < 0.1, right
        assert mix[r].own > 0.2 and mix[r].other > right[r].other + 0.4, (right, mix)
        assert mix[r].score < right[r].score - 0.4, (right, mix)


def test_ideal_composite_puts_each_style_region_in_its_content_region_and_scores_what_the_shape_allows():
    pair = PAIRS[0]
    style, style_masks, masks, _, _ = _case(pair)
    mapping = {0: 1, 1: 0}  # the disk gets the bottom (dots), the ground the top (stripes)
    ideal = quality.ideal_composite(masks, style, style_masks, mapping)
    inside = masks[0] > 0.5
    # the disk holds the style's bottom half's colours, the ground its top half's
    assert np.allclose(ideal[:, inside].mean(1), style[:, SIZE // 2:].mean((1, 2)), atol=0.03)
    assert np.allclose(ideal[:, ~inside].mean(1), style[:, :SIZE // 2].mean((1, 2)), atol=0.03)
    wide = quality.structure_ceiling(masks, style, style_masks, mapping)
    assert min(wide.values()) > 0.8, wide  # big regions can show their textures fully
    # a thin ring cannot show the stripes' peaks as well as the wide ground does
    yy, xx = np.mgrid[:SIZE, :SIZE]
    ring = np.abs(np.hypot(yy - SIZE / 2, xx - SIZE / 2) - SIZE / 3) < 3
    thin = np.stack([ring, ~ring]).astype(np.float32)
    narrow = quality.structure_ceiling(thin, style, style_masks, {0: 0, 1: 1})
    assert narrow[0] < wide[1] - 0.2, (narrow, wide)


def test_noise_share_tells_noise_from_structure():
    rng = np.random.default_rng(1)
    stripes = synthetic.mosaic(np.zeros((SIZE, SIZE), int), [synthetic.texture("stripes", (SIZE, SIZE), 12)],
                               [(0.5, 0.5, 0.5)])
    grating = synthetic.mosaic(np.zeros((SIZE, SIZE), int), [synthetic.texture("grating", (SIZE, SIZE), 12)],
                               [(0.5, 0.5, 0.5)])
    noise = np.clip(0.5 + 0.2 * rng.standard_normal((3, SIZE, SIZE)), 0, 1)
    # white noise spreads its energy evenly: the share above 0.35 cycles/pixel is the area of the
    # frequency square outside that radius, 1 - pi 0.35^2 = 0.62
    assert abs(quality.high_frequency_share(noise) - (1 - np.pi * 0.35 ** 2)) < 0.05
    assert quality.high_frequency_share(stripes) < 0.05  # square waves: only their 5th harmonic is that fine
    assert quality.noise_ratio(stripes, grating, stripes) == pytest.approx(1.0)
    assert quality.noise_ratio(np.clip(grating + 0.25 * (noise - 0.5), 0, 1), grating, grating) > 5


def test_fringe_finds_a_halo_of_speckle_round_a_region():
    """Dots in a ground round a striped disk: clean up to the disk's edge, the ground's band is like its
    interior (about 1); speckle drawn into a ring just outside the disk shows (well above 1), and the
    same speckle over the whole ground does not."""
    rng = np.random.default_rng(4)
    labels = synthetic.layout("disk", (SIZE, SIZE))
    masks = synthetic.label_masks(labels)
    clean = synthetic.mosaic(labels, [synthetic.texture("stripes", (SIZE, SIZE), 14),
                                      synthetic.texture("dots", (SIZE, SIZE), 10)], [(0.7, 0.6, 0.4), (0.2, 0.3, 0.6)])
    speckle = 0.3 * rng.standard_normal((SIZE, SIZE))
    near_disk = (quality._box_sum(masks[0].astype(np.int64), 6) > 0) & (masks[1] > 0.5)
    ringed = np.clip(clean + speckle * near_disk, 0, 1)
    everywhere = np.clip(clean + speckle * (masks[1] > 0.5), 0, 1)
    ground = 1  # the disk's interior is its own: it has one too, but no halo was drawn there
    assert 0.7 < quality.fringe_ratios(clean, masks)[ground] < 1.4
    assert quality.fringe_ratios(ringed, masks)[ground] > 3
    assert 0.7 < quality.fringe_ratios(everywhere, masks)[ground] < 1.4


def test_palette_distance_is_zero_for_the_same_colours_and_grows_with_difference():
    rng = np.random.default_rng(2)
    mask = np.ones((32, 32), np.float32)
    warm = np.clip(np.array([0.8, 0.5, 0.2])[:, None, None] + 0.05 * rng.standard_normal((3, 32, 32)), 0, 1)
    warm2 = np.clip(np.array([0.8, 0.5, 0.2])[:, None, None] + 0.05 * rng.standard_normal((3, 32, 32)), 0, 1)
    cool = np.clip(np.array([0.2, 0.4, 0.8])[:, None, None] + 0.05 * rng.standard_normal((3, 32, 32)), 0, 1)
    same, other = quality.palette_distance(warm, mask, warm2, mask), quality.palette_distance(warm, mask, cool, mask)
    assert same < 1.5 and other > 20 * same


def test_independent_network_distances_favour_the_mapped_region():
    from pst_core.features import load_vgg

    pair = PAIRS[0]
    style, style_masks, masks, painted, rng = _case(pair)
    output = painted(_textures(pair, rng), colours=((0.8, 0.5, 0.2), (0.2, 0.4, 0.8)))
    d = quality.region_style_distances(load_vgg("random", 1), output, masks, style, style_masks,
                                       ["relu2_1", "relu3_1"])
    assert d[0, 0] < d[0, 1] and d[1, 1] < d[1, 0]


def test_region_interiors_are_square_erosions():
    # Brute force: a pixel is kept when every pixel of the square around it is in the region (and in
    # the image). A ragged region with holes, so every kind of border is there.
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:41, :53]
    hard = (rng.random((41, 53)) > 0.15) | ((yy - 20) ** 2 + (xx - 30) ** 2 < 150)
    for r in (1, 3, 8):
        padded = np.pad(hard, r)
        expected = np.array([[padded[y:y + 2 * r + 1, x:x + 2 * r + 1].all() for x in range(53)]
                             for y in range(41)])
        assert np.array_equal(quality._erode(hard, r) == 1, expected)
    assert quality._erode(hard, 3).sum() > 0 and not quality._erode(hard, 30).any()
