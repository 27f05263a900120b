import json

import numpy as np
import pytest

from pst_core.color.normalize import ColorTransform, normalize_pair, restore_palette
from pst_core.errors import ConfigError

LINEAR = ("linear", "cholesky", "pca")
DIRECTIONS = ("content_to_style", "style_to_content")


def _images():
    rng = np.random.default_rng(0)
    content = (0.2 + 0.5 * rng.random((3, 40, 48))).astype(np.float32)
    content[1] = 0.6 * content[0] + 0.3 * content[1]  # correlated channels
    style = (rng.random((3, 32, 36)) ** 2).astype(np.float32)
    style[2] = 1 - style[2] * 0.5
    return content, style


def _masks(h, w, split):
    m = np.zeros((2, h, w), np.float32)
    m[0, :, :split] = 1
    m[1] = 1 - m[0]
    return m


def _stats(image, weights=None):
    x = image.reshape(len(image), -1).astype(np.float64)
    w = np.ones(x.shape[1]) if weights is None else weights.reshape(-1).astype(np.float64)
    w = w / w.sum()
    mu = x @ w
    t = x - mu[:, None]
    return mu, (t * w) @ t.T


def _moved(direction, content, style, cn, sn):
    """(image that was moved, its normalised version, image whose statistics it took)."""
    return (content, cn, style) if direction == "content_to_style" else (style, sn, content)


@pytest.mark.parametrize("method", LINEAR + ("none",))
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_round_trip_and_fitted_statistics(method, direction):
    content, style = _images()
    # The content's correlated channels need a squeeze of about 7 in one direction: unbounded here.
    cn, sn, t = normalize_pair(content, style, method, direction, max_gain=100)
    source, moved, target = _moved(direction, content, style, cn, sn)
    assert np.abs(t.invert(moved) - source).max() < 1e-5
    if method == "none":
        assert np.array_equal(cn, content) and np.array_equal(sn, style)
        return
    (mu, cov), (mu_t, cov_t) = _stats(moved), _stats(target)
    np.testing.assert_allclose(mu, mu_t, atol=1e-5)
    np.testing.assert_allclose(cov, cov_t, atol=1e-4)
    untouched, original = (sn, style) if direction == "content_to_style" else (cn, content)
    assert np.array_equal(untouched, original)


def test_linear_is_the_symmetric_map_that_moves_colours_least():
    content, style = _images()
    moves = {}
    for method in LINEAR:
        cn, _, t = normalize_pair(content, style, method, "content_to_style")
        moves[method] = np.square(cn - content).mean()
    a = normalize_pair(content, style, "linear", "content_to_style")[2].matrix[0]
    np.testing.assert_allclose(a, a.T, atol=1e-10)
    assert np.linalg.eigvalsh(a).min() > 0
    assert moves["linear"] < moves["cholesky"] and moves["linear"] < moves["pca"]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_luminance_keeps_content_chroma_and_matches_luminance(direction):
    content, style = _images()
    cn, sn, t = normalize_pair(content, style, "luminance", direction, max_gain=100)
    for image in (cn, sn):
        assert np.allclose(image[0], image[1]) and np.allclose(image[0], image[2])  # grey
    source, moved, target = _moved(direction, content, style, cn, sn)
    y_target = 0.299 * target[0] + 0.587 * target[1] + 0.114 * target[2]
    y_source = 0.299 * source[0] + 0.587 * source[1] + 0.114 * source[2]
    assert abs(moved[0].mean() - y_target.mean()) < 1e-5
    assert abs(moved[0].std() - y_target.std()) < 1e-4
    # By default (max_gain 1) the mean is matched but contrast is never squeezed away.
    cn, sn, t = normalize_pair(content, style, "luminance", direction)
    _, moved, _ = _moved(direction, content, style, cn, sn)
    assert abs(moved[0].mean() - y_target.mean()) < 1e-5
    assert abs(moved[0].std() - max(y_target.std(), y_source.std())) < 1e-4
    # Restoring the normalised content with the content's palette gives the content back exactly.
    assert np.abs(restore_palette(cn, t, "content") - np.clip(content, 0, 1)).max() < 1e-5
    if direction == "content_to_style":
        assert np.abs(t.invert(cn) - content).max() < 1e-5


def test_direction_palette_semantics():
    content, style = _images()
    # content_to_style: the output lives in the style's palette.
    cn, _, t = normalize_pair(content, style, "linear", "content_to_style")
    assert np.abs(restore_palette(cn, t, "content") - content).max() < 1e-5
    assert np.array_equal(restore_palette(cn, t, "style"), np.clip(cn, 0, 1))
    # style_to_content: the output lives in the content's palette; palette=style moves it to the style's.
    _, _, t = normalize_pair(content, style, "linear", "style_to_content", max_gain=100)
    assert np.array_equal(restore_palette(content, t, "content"), content)
    restyled = t.invert(content)
    (mu, cov), (mu_s, cov_s) = _stats(restyled), _stats(style)
    np.testing.assert_allclose(mu, mu_s, atol=1e-5)
    np.testing.assert_allclose(cov, cov_s, atol=1e-4)
    with pytest.raises(ConfigError):
        restore_palette(content, t, "palette")


@pytest.mark.parametrize("method", LINEAR + ("luminance",))
def test_region_aware_fits_each_pair_and_inverts_exactly(method):
    content, style = _images()
    cm, sm = _masks(40, 48, 20), _masks(32, 36, 12)
    mapping = {0: 1, 1: 0}
    cn, _, t = normalize_pair(content, style, method, "content_to_style",
                              content_masks=cm, style_masks=sm, mapping=mapping)
    assert np.abs(t.invert(cn) - content).max() < 1e-5
    if method != "luminance":
        for r, s in mapping.items():
            (mu, cov), (mu_t, cov_t) = _stats(cn, cm[r]), _stats(style, sm[s])
            np.testing.assert_allclose(mu, mu_t, atol=1e-5)
            np.testing.assert_allclose(cov, cov_t, atol=1e-4)
    # Soft masks: the per-pixel blended map is still inverted exactly.
    soft = np.stack([np.linspace(0, 1, 48, dtype=np.float32)[None].repeat(40, 0)] * 1)
    soft_masks = np.concatenate([soft, 1 - soft])
    cn, _, t = normalize_pair(content, style, method, "content_to_style",
                              content_masks=soft_masks, style_masks=sm, mapping=mapping)
    assert np.abs(t.invert(cn) - content).max() < 1e-5


def test_region_aware_style_to_content_and_empty_regions():
    content, style = _images()
    cm, sm = _masks(40, 48, 20), _masks(32, 36, 12)
    sm3 = np.concatenate([sm, np.zeros((1, 32, 36), np.float32)])  # an empty style region
    cn, sn, t = normalize_pair(content, style, "linear", "style_to_content",
                               content_masks=cm, style_masks=sm3, mapping={0: 1, 1: 1})
    assert np.array_equal(cn, content)
    np.testing.assert_allclose(t.matrix[0], np.eye(3))  # no content region maps to style region 0
    np.testing.assert_allclose(t.matrix[2], np.eye(3))  # empty region: identity, no division by zero
    assert np.array_equal(sn[:, :, :12], style[:, :, :12])
    assert np.abs(t.invert(sn) - style).max() < 1e-5
    with pytest.raises(ConfigError, match="style_to_content"):
        restore_palette(cn, t, "style")
    with pytest.raises(ConfigError):
        normalize_pair(content, style, "linear", "content_to_style", content_masks=cm)
    with pytest.raises(ConfigError, match="does not exist"):
        normalize_pair(content, style, "linear", "content_to_style", content_masks=cm, style_masks=sm, mapping={0: 4})


@pytest.mark.parametrize("method", ("linear", "luminance"))
def test_stored_transform_gives_identical_results(method):
    content, style = _images()
    cm, sm = _masks(40, 48, 20), _masks(32, 36, 12)
    cn, _, t = normalize_pair(content, style, method, "content_to_style",
                              content_masks=cm, style_masks=sm, mapping={0: 0, 1: 1})
    attrs = json.loads(json.dumps(t.to_attrs()))
    back = ColorTransform.from_stored({k: v.copy() for k, v in t.to_arrays().items()}, attrs)
    assert np.array_equal(back.invert(cn), t.invert(cn))
    assert np.array_equal(back.apply(content), cn)
    assert all(v.size <= 3 * 40 * 48 for v in t.to_arrays().values())


@pytest.mark.parametrize("method", LINEAR + ("luminance",))
def test_flat_images_stay_finite_and_invertible(method):
    content, style = _images()
    flat = np.full_like(content, 0.4)
    cn, _, t = normalize_pair(flat, style, method, "content_to_style")
    assert np.isfinite(cn).all() and np.abs(t.invert(cn) - flat).max() < 1e-5
    # A flat target no longer squeezes the content to nothing: by max_gain (4) at most, so it inverts.
    cn, _, t = normalize_pair(content, np.full_like(style, 0.7), method, "content_to_style")
    assert np.isfinite(cn).all() and abs(cn.mean() - 0.7) < 1e-3
    assert cn.std() > content.std() / 8
    assert np.abs(t.invert(cn) - content).max() < 1e-5


def _few_colour_style(colours: int) -> np.ndarray:
    """Flat colours in stripes: a colour covariance of rank colours - 1."""
    palette = np.array([[0.9, 0.5, 0.1], [0.1, 0.1, 0.3], [0.1, 0.8, 0.2]])[:colours]
    band = (np.arange(36) // 6) % colours
    return np.broadcast_to(palette[band].T[:, None, :], (3, 32, 36)).astype(np.float32).copy()


@pytest.mark.parametrize("colours", (1, 2, 3))
@pytest.mark.parametrize("method", LINEAR + ("luminance",))
def test_few_colour_styles_keep_the_inverse_well_conditioned(method, colours):
    """Noise the transfer adds in the normalised space comes back at most max_gain times larger."""
    content, _ = _images()
    cn, _, t = normalize_pair(content, _few_colour_style(colours), method, "content_to_style")
    assert np.abs(t.invert(cn) - content).max() < 1e-5
    singular = np.linalg.svd(t.matrix[0], compute_uv=False)
    assert singular.min() >= 1 / 4 - 1e-9
    noise = 0.01 * np.random.default_rng(1).standard_normal(cn.shape).astype(np.float32)
    amplified = (t.invert(cn + noise) - t.invert(cn)).std() / noise.std()
    assert amplified <= 4
    loose = normalize_pair(content, _few_colour_style(colours), method, "content_to_style", max_gain=1e3)[2]
    if colours < 3 and method != "luminance":  # rank-deficient colour: the unbounded fit amplifies far more
        assert (loose.invert(cn + noise) - loose.invert(cn)).std() / noise.std() > 4 * amplified
