import numpy as np
import pytest
import torch

from pathlib import Path

from pst_core.color.normalize import normalize_pair
from pst_core.config.overrides import build_config
from pst_core.config.schema import RegionSettings, StyleTransferParams
from pst_core.errors import ComputeError, ConfigError
from pst_core.style.losses import GramLoss, MeanCovLoss, Region, masked_statistics
from pst_core.inspect.quality import high_frequency_share, region_style_distances
from pst_core.load import read_image, resize, working_shape
from pst_core.segmentation.masks import resize_masks
from pst_core.style.mapping import map_regions
from pst_core.segmentation.cluster_layer import cluster_layers
from pst_core.segmentation.segment import segment_image
from pst_core.style.style_transfer import _Objective, _initial, _schedule, binomial_blur, transfer
from pst_core.synthetic import disk_scene, two_texture_style
from pst_core.features import load_vgg

SHALLOW = ["relu1_1", "relu2_1", "relu3_1"]


@pytest.fixture(scope="module")
def vgg():
    # Tiny images gain nothing from threads, and on cores shared with other jobs each parallel region
    # waits for a descheduled thread; restore the caller's setting afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_vgg("random", seed=0, device="cpu")
    torch.set_num_threads(threads)


def _ones(image):
    return np.ones((1, *image.shape[1:]), np.float32)


def style_distances(vgg, output, content_masks, style, style_masks, layers=SHALLOW):
    return region_style_distances(vgg, output, content_masks, style, style_masks, layers)


# ---------------------------------------------------------------- mapping

def test_overlap_and_explicit_mapping():
    _, cm = disk_scene(32)
    _, sm = two_texture_style(48)
    swapped = sm[::-1].copy()
    everything_and_nothing = np.stack([np.ones((32, 32)), np.zeros((32, 32))])
    assert map_regions(everything_and_nothing, sm, "overlap") == {0: 0, 1: 0}
    halves = np.zeros((2, 32, 32), np.float32)
    halves[0, :, :16] = 1
    halves[1] = 1 - halves[0]
    assert map_regions(halves, sm, "overlap") == {0: 0, 1: 1}
    assert map_regions(halves, swapped, "overlap") == {0: 1, 1: 0}
    assert map_regions(cm, sm, {0: 1, 1: 0}) == {0: 1, 1: 0}
    assert map_regions(halves, sm, {1: 0}) == {0: 0, 1: 0}  # left out: filled by overlap


@pytest.mark.parametrize("bad", [{0: 2}, {3: 0}, {-1: 0}])
def test_mapping_to_a_missing_region_is_a_one_line_config_error(bad):
    _, cm = disk_scene(32)
    _, sm = two_texture_style(32)
    with pytest.raises(ConfigError) as info:
        map_regions(cm, sm, bad)
    assert "\n" not in str(info.value) and "does not exist" in str(info.value)
    with pytest.raises(ConfigError):
        map_regions(cm, sm, "nearest")


def test_auto_mapping_follows_features(vgg):
    style, sm = two_texture_style(48)
    # Content = the style with its halves swapped: auto must pair left with right.
    content = np.concatenate([style[:, :, 24:], style[:, :, :24]], axis=2)
    cm = np.concatenate([sm[:, :, 24:], sm[:, :, :24]], axis=2)[::-1].copy()  # region 0 = content's left
    with torch.no_grad():
        fc = vgg(torch.tensor(content)[None], ["relu3_1"])["relu3_1"][0]
        fs = vgg(torch.tensor(style)[None], ["relu3_1"])["relu3_1"][0]
    assert map_regions(cm, sm, "auto", content_features=fc, style_features=fs) == {0: 1, 1: 0}
    # Many-to-one: three content regions (two of them dots) onto two style regions.
    cm3 = np.stack([cm[0], cm[1] * (np.arange(48) < 24)[:, None], cm[1] * (np.arange(48) >= 24)[:, None]])
    assert map_regions(cm3, sm, "auto", content_features=fc, style_features=fs) == {0: 1, 1: 0, 2: 0}
    with pytest.raises(ConfigError):
        map_regions(cm, sm, "auto")


# ---------------------------------------------------------------- losses

def test_masked_statistics_match_the_plain_formulas_and_their_gradients():
    g = torch.Generator().manual_seed(0)
    features = torch.rand(8, 6, 7, generator=g, dtype=torch.float64).requires_grad_(True)
    soft = torch.rand(6, 7, generator=g, dtype=torch.float64)
    holes = soft * (soft > 0.4)  # exact zeros: those pixels are skipped, not multiplied
    masks = [torch.ones(6, 7, dtype=torch.float64), soft, holes]
    weights = [(torch.randn(8, generator=g, dtype=torch.float64), torch.randn(8, 8, generator=g, dtype=torch.float64))
               for _ in masks]
    got = masked_statistics(features, [Region(m) for m in masks])
    f = features.flatten(1)
    want = [(f @ m.flatten() / m.sum(), (f * m.flatten()) @ f.T / m.sum()) for m in masks]
    for (mean, gram), (want_mean, want_gram) in zip(got, want):
        assert torch.allclose(mean, want_mean) and torch.allclose(gram, want_gram)

    def weighted(stats, use_mean=True, use_gram=True):
        return sum((wm * m).sum() * use_mean + (wg * gm).sum() * use_gram for (wm, wg), (m, gm) in zip(weights, stats))

    for use_mean, use_gram in ((True, True), (True, False), (False, True)):  # each output alone, and both
        grad_got = torch.autograd.grad(weighted(masked_statistics(features, [Region(m) for m in masks]),
                                                use_mean, use_gram), features)[0]
        grad_want = torch.autograd.grad(weighted(want, use_mean, use_gram), features, retain_graph=True)[0]
        assert torch.allclose(grad_got, grad_want), (use_mean, use_gram)
    # Regions whose statistics are unused get no gradient work and no error.
    assert torch.autograd.grad(masked_statistics(features, [Region(m) for m in masks])[1][1].sum(), features)[0].shape \
        == features.shape


def test_meancov_loss_is_zero_at_its_target_and_positive_away(vgg):
    # Hundreds of floored eigenvalues once biased it to -0.04 at relu5_1 (the CLI showed negative losses).
    style, _ = two_texture_style(64)
    features = vgg(torch.tensor(style)[None], ["relu1_1", "relu4_1", "relu5_1"])
    for layer, f in features.items():
        region = Region(torch.ones(f.shape[-2:]))
        loss = MeanCovLoss(*region.statistics(f[0]))
        assert abs(float(loss(*region.statistics(f[0])))) < 1e-3, layer
        assert float(loss(*region.statistics(1.1 * f[0]))) > 5e-3, layer


def test_k1_is_plain_unpartitioned_transfer(vgg):
    content, _ = disk_scene(40)
    style, _ = two_texture_style(36)
    params = StyleTransferParams(style_weight=3.0, content_weight=0.5, loss="gram", tv_weight=0.0)  # no TV below
    c, s = torch.tensor(content)[None], torch.tensor(style)[None]
    objective = _Objective(vgg, c, s, torch.ones(1, 40, 40), torch.ones(1, 36, 36), {0: 0}, params)
    x = (c + 0.05 * torch.randn(c.shape, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    got = objective(x)["total"]
    (g_got,) = torch.autograd.grad(got, x)

    # The same loss written out without masks: Gram = F F^T / N, relative errors, layers averaged.
    def gram(f):
        f = f[0].flatten(1)
        return f @ f.T / f.shape[1]

    fx = vgg(x, params.style_layers + params.content_layers)
    with torch.no_grad():
        fs, fc = vgg(s, params.style_layers), vgg(c, params.content_layers)
    style_loss = sum((gram(fx[k]) - gram(fs[k])).square().sum() / gram(fs[k]).square().sum()
                     for k in params.style_layers) / len(params.style_layers)
    content_loss = (fx["relu4_2"] - fc["relu4_2"]).square().mean() / fc["relu4_2"].square().mean()
    want = 3.0 * style_loss + 0.5 * content_loss
    (g_want,) = torch.autograd.grad(want, x)
    assert torch.allclose(got, want, rtol=1e-5)
    assert torch.allclose(g_got, g_want, rtol=1e-4, atol=1e-6 * g_want.abs().max())


def test_empty_regions_are_skipped(vgg):
    content, cm = disk_scene(32)
    style, sm = two_texture_style(32)
    cm3 = np.concatenate([cm, np.zeros((1, 32, 32), np.float32)])
    result = transfer(content, style, cm3, sm, vgg, StyleTransferParams(iterations=3, mapping={0: 0, 1: 1, 2: 0}))
    assert np.isfinite(result.image).all() and all(np.isfinite(h.total) for h in result.history)


# ---------------------------------------------------------------- optimisation

@pytest.mark.parametrize("loss", ["gram", "meancov"])
def test_style_loss_falls_and_output_moves_toward_style(vgg, loss):
    content, _ = disk_scene(32)
    style, _ = two_texture_style(32)
    calls, shots = [], []
    # No TV: at 32 px the style's texture is a few pixels wide and smoothing would hold its loss up.
    params = StyleTransferParams(iterations=40, loss=loss, style_layers=SHALLOW, snapshot_every=10, tv_weight=0.0)
    result = transfer(content, style, _ones(content), _ones(style), vgg, params,
                      progress=calls.append, snapshot=lambda i, im: shots.append(i))
    styles = [h.style for h in result.history]
    assert styles[-1] < 0.3 * styles[0]
    assert len(calls) == 40 and set(vars(calls[0])) >= {"scale", "iteration", "total", "content", "style", "tv"}
    assert shots == [10, 20, 30, 40] and [i for i, _ in result.snapshots] == shots
    one = _ones(content)
    optimised = vgg.with_pooling(params.pooling)
    before = style_distances(optimised, content, one, style, one)[0, 0]
    after = style_distances(optimised, result.image, one, style, one)[0, 0]
    assert after < 0.5 * before
    assert result.image.shape == content.shape and result.image.dtype == np.float32
    assert result.image.min() >= 0 and result.image.max() <= 1


def test_partitioned_puts_each_style_region_into_its_content_region(vgg):
    size = 48
    content, cm = disk_scene(size)
    style, sm = two_texture_style(size)
    params = dict(iterations=100, style_weight=10.0, style_layers=SHALLOW)
    part = transfer(content, style, cm, sm, vgg, StyleTransferParams(mapping={0: 0, 1: 1}, **params))
    plain = transfer(content, style, _ones(content), _ones(style), vgg, StyleTransferParams(**params))
    optimised = vgg.with_pooling(StyleTransferParams().pooling)  # the network the transfer optimised against
    d_part = style_distances(optimised, part.image, cm, style, sm)
    d_plain = style_distances(optimised, plain.image, cm, style, sm)
    # Partitioned: each content region is much closer to its own style region than to the other.
    assert d_part[0, 0] * 3 < d_part[0, 1] and d_part[1, 1] * 3 < d_part[1, 0]
    # Unpartitioned: no such separation in both regions at once.
    assert not (d_plain[0, 0] * 3 < d_plain[0, 1] and d_plain[1, 1] * 3 < d_plain[1, 0])


def test_keep_content_region_keeps_the_content(vgg):
    content, cm = disk_scene(32)
    style, sm = two_texture_style(32)
    hard = (cm > 0.5).astype(np.float32)
    params = StyleTransferParams(iterations=15, mapping={0: 0, 1: 1}, regions={1: RegionSettings(keep_content=True)})
    result = transfer(content, style, hard, sm, vgg, params)
    ground, disk = hard[1] == 1, hard[0] == 1
    assert np.abs(result.image - content)[:, ground].max() < 1e-6
    assert np.abs(result.image - content)[:, disk].mean() > 0.02


def _moved(result_image, content, hard):
    """Mean absolute change of each region's pixels."""
    d = np.abs(result_image - content)
    return [float(d[:, m == 1].mean()) for m in hard]


def test_per_region_style_and_content_weights_act_on_their_region(vgg):
    content, cm = disk_scene(32)
    style, sm = two_texture_style(32)
    hard = (cm > 0.5).astype(np.float32)

    def moved(regions, **extra):
        # L-BFGS: its steps follow the objective's scale, so how much a weight moves its region shows in
        # 20 iterations (Adam normalises every pixel's step, weights act through the gradient's direction).
        # Max pooling: at 32 px every receptive field spans both regions, and average pooling spreads each
        # region's gradient over the other (the quiet disk moved 0.36, the loud one 0.22).
        params = StyleTransferParams(iterations=20, mapping={0: 0, 1: 1}, style_layers=SHALLOW, regions=regions,
                                     optimizer="lbfgs", pooling="max", **extra)
        return _moved(transfer(content, style, hard, sm, vgg, params).image, content, hard)

    quiet_disk = moved({0: RegionSettings(style_weight=0.0), 1: RegionSettings(style_weight=30.0)})
    quiet_ground = moved({0: RegionSettings(style_weight=30.0), 1: RegionSettings(style_weight=0.0)})
    assert quiet_ground[0] > 2 * quiet_disk[0] and quiet_disk[1] > 2 * quiet_ground[1]

    free = moved({0: RegionSettings(content_weight=0.0)}, content_layers=["relu2_1"])
    held = moved({0: RegionSettings(content_weight=100.0)}, content_layers=["relu2_1"])
    # A heavy content weight on the disk holds the disk far more than the ground, which keeps weight 1.
    assert held[0] / free[0] < 0.5 * held[1] / free[1]


def test_per_region_style_layers(vgg):
    content, cm = disk_scene(32)
    style, sm = two_texture_style(32)
    params = StyleTransferParams(style_weight=2.0, content_weight=0.0, mapping={0: 0, 1: 1}, loss="gram",
                                 regions={0: RegionSettings(style_layers=["relu2_1"]),
                                          1: RegionSettings(keep_content=True)})
    c, s = torch.tensor(content)[None], torch.tensor(style)[None]
    x = c * 0.8
    got = _Objective(vgg, c, s, torch.tensor(cm), torch.tensor(sm), {0: 0, 1: 1}, params)(x)["style"]
    fx, fs = vgg(x, ["relu2_1"])["relu2_1"][0], vgg(s, ["relu2_1"])["relu2_1"][0]
    size = fx.shape[-2:]
    region, target = (Region(resize_masks(torch.tensor(m[:1]), size)[0]) for m in (cm, sm))
    want = 2.0 * GramLoss(*target.statistics(fs))(*region.statistics(fx))  # one active region, one layer
    assert torch.allclose(got, want, rtol=1e-5)


def test_style_layer_weights_share_a_regions_style_weight(vgg):
    content, _ = disk_scene(32)
    style, _ = two_texture_style(32)
    layers = ["relu1_1", "relu2_1"]
    params = StyleTransferParams(style_weight=2.0, content_weight=0.0, loss="gram", style_layers=layers,
                                 style_layer_weights={"relu1_1": 3.0})  # relu2_1 not named: weight 1
    c, s = torch.tensor(content)[None], torch.tensor(style)[None]
    x = c * 0.8
    got = _Objective(vgg, c, s, torch.ones(1, 32, 32), torch.ones(1, 32, 32), {0: 0}, params)(x)["style"]
    fx, fs = vgg(x, layers), vgg(s, layers)
    per_layer = {k: GramLoss(*Region(torch.ones(fx[k].shape[-2:])).statistics(fs[k][0]))(
        *Region(torch.ones(fx[k].shape[-2:])).statistics(fx[k][0])) for k in layers}
    want = 2.0 * (3.0 * per_layer["relu1_1"] + per_layer["relu2_1"]) / 4.0
    assert torch.allclose(got, want, rtol=1e-5)
    assert not torch.allclose(got, 2.0 * (per_layer["relu1_1"] + per_layer["relu2_1"]) / 2.0, rtol=1e-2)
    with pytest.raises(ConfigError, match="style_layer_weights: unknown VGG19 layer 'relu9_1'"):
        StyleTransferParams(style_layer_weights={"relu9_1": 1.0})


@pytest.mark.parametrize("confine", [True, False])
def test_confined_regions_move_only_their_own_pixels(vgg, confine):
    """Region 1's losses (here: a 5x heavier style weight) change the gradient only on region 1's
    pixels when confined; unconfined, its deep statistics also push the pixels of region 0 beside it."""
    content, soft = disk_scene(48)
    cm = (soft > 0.5).astype(np.float32)  # hard masks: a confined region's gradient is exactly 0 outside it
    style, sm = two_texture_style(48)
    c, s = torch.tensor(content)[None], torch.tensor(style)[None]
    x = (c + 0.05 * torch.randn(c.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    grads = []
    for weight in (1.0, 5.0):
        params = StyleTransferParams(confine_regions=confine, tv_weight=0.0, mapping={0: 0, 1: 1},
                                     regions={1: RegionSettings(style_weight=30.0 * weight)})
        grads.append(_Objective(vgg, c, s, torch.tensor(cm), torch.tensor(sm), {0: 0, 1: 1}, params)
                     .value_and_grad(x)[1])
    change = (grads[1] - grads[0]).abs().amax(1)[0]
    in_zero, in_one = torch.tensor(cm[0] == 1), torch.tensor(cm[1] == 1)
    assert float(change[in_one].max()) > 1e-3 * float(grads[0].abs().max())  # region 1's own pixels move
    outside = float(change[in_zero].max())
    assert (outside == 0.0) if confine else (outside > 1e-3 * float(grads[0].abs().max())), outside


def test_losses_need_no_retuning_across_image_sizes(vgg):
    """Statistics are means over a region and losses relative to their targets: the same scene at
    32, 64 and 128 px gives losses of the same size (a sum over pixels would grow 16x)."""
    losses = []
    for size in (32, 64, 128):
        content, cm = disk_scene(size)
        style, sm = two_texture_style(size)
        c, s = torch.tensor(content)[None], torch.tensor(style)[None]
        objective = _Objective(vgg, c, s, torch.tensor(cm), torch.tensor(sm), {0: 0, 1: 1}, StyleTransferParams())
        losses.append({k: float(v) for k, v in objective(0.7 * c).items()})
    for name in ("style", "content"):
        values = [loss[name] for loss in losses]
        assert max(values) < 2 * min(values), (name, values)


def test_total_variation_weight_smooths_the_output(vgg):
    from pst_core.style.losses import total_variation

    content, cm = disk_scene(32)
    style, sm = two_texture_style(32)
    tv = []
    for weight in (0.0, 100.0):
        params = StyleTransferParams(iterations=20, mapping={0: 0, 1: 1}, style_layers=SHALLOW, tv_weight=weight)
        image = transfer(content, style, cm, sm, vgg, params).image
        tv.append(float(total_variation(torch.tensor(image)[None])))
    assert tv[1] < 0.5 * tv[0]


def test_binomial_blur_is_its_own_adjoint_and_drops_2_px_detail():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 3, 20, 24, generator=g), torch.randn(1, 3, 20, 24, generator=g)
    # <blur(a), b> = <a, blur(b)>: the blurred gradient is the gradient of the blurred correction.
    assert torch.allclose((binomial_blur(a) * b).sum(), (a * binomial_blur(b)).sum(), rtol=1e-5)
    checks = torch.tensor([[(-1.0) ** (i + j) for j in range(24)] for i in range(20)]).expand(1, 3, 20, 24)
    assert float(binomial_blur(checks)[..., 1:-1, 1:-1].abs().max()) < 1e-6
    flat = torch.ones(1, 3, 20, 24)
    assert torch.allclose(binomial_blur(flat)[..., 1:-1, 1:-1], flat[..., 1:-1, 1:-1])


def test_only_scales_after_the_first_are_cut_to_fine_iterations():
    """Coarse to fine, the scales above fine_size refine what the coarser ones drew in a few iterations;
    a one-scale run (Gatys et al.'s preset) has nothing drawn before it and runs all its iterations."""
    params = StyleTransferParams(iterations=40, scale_iterations=30, min_size=32, fine_size=64, fine_iterations=3)
    assert [steps for _, _, steps in _schedule((128, 128), (128, 128), params)] == [30, 30, 3]
    one_scale = params.model_copy(update={"min_size": 0})
    assert [steps for _, _, steps in _schedule((128, 128), (128, 128), one_scale)] == [40]


def test_fine_scales_take_smooth_updates(vgg):
    """Above fine_size the iterations sharpen what the coarser scales drew: with smooth_fine_updates
    what they change has almost no energy at the finest frequencies; without it they add pixel grain."""
    content, cm = disk_scene(64)
    style, sm = two_texture_style(64)
    base = dict(iterations=5, scale_iterations=20, min_size=32, fine_size=32, mapping={0: 0, 1: 1})
    coarse = transfer(content, style, cm, sm, vgg, StyleTransferParams(**base, fine_iterations=0)).image
    changes = {}
    for smooth in (True, False):
        params = StyleTransferParams(**base, fine_iterations=5, smooth_fine_updates=smooth)
        changes[smooth] = transfer(content, style, cm, sm, vgg, params).image - coarse
    assert float(np.abs(changes[True]).mean()) > 0.01  # the fine iterations did move the image
    shares = {smooth: high_frequency_share(change) for smooth, change in changes.items()}
    assert shares[True] < 0.2 * shares[False], shares


def test_adam_multiscale_noise_init_is_seeded(vgg):
    content, cm = disk_scene(128)
    style, sm = two_texture_style(128)
    params = StyleTransferParams(iterations=4, scale_iterations=3, min_size=50, optimizer="adam", init="noise",
                                 seed=3, style_layers=SHALLOW, snapshot_every=2)
    a = transfer(content, style, cm, sm, vgg, params)
    b = transfer(content, style, cm, sm, vgg, params)
    assert np.array_equal(a.image, b.image)
    # From about 50 px up: 64 then 128 px (32 would be under 50).
    assert [h.scale for h in a.history] == [0, 0, 0, 1, 1, 1, 1]
    assert [h.size for h in a.history] == [(64, 64)] * 3 + [(128, 128)] * 4
    assert [h.iteration for h in a.history] == list(range(1, 8)) and a.history[0].of == 7
    # Snapshots only at the final scale, so every one has the output's size (the store stacks them).
    assert [i for i, _ in a.snapshots] == [4, 6] and all(img.shape == content.shape for _, img in a.snapshots)
    c = transfer(content, style, cm, sm, vgg, params.model_copy(update={"seed": 4}))
    assert not np.array_equal(a.image, c.image)


def test_blurred_start_keeps_the_layout_and_drops_the_detail():
    # Two halves (0.2 and 0.8) under a checkerboard of one-pixel cells: the layout is what the start
    # keeps, the checkerboard (detail finer than the factor) what it leaves for the style to draw.
    rows, cols = np.mgrid[0:32, 0:32]
    image = np.where(cols < 16, 0.2, 0.8) + 0.1 * np.where((rows + cols) % 2, 1.0, -1.0)
    content = torch.tensor(np.repeat(image[None, None], 3, axis=1), dtype=torch.float32)
    style = torch.rand(1, 3, 40, 40)
    plain = _initial(StyleTransferParams(init_blur=1), content, style)
    assert torch.equal(plain, content) and plain is not content
    start = _initial(StyleTransferParams(init_blur=4), content, style)[0, 0].numpy()
    assert start.shape == (32, 32)
    assert abs(start[:, :8].mean() - 0.2) < 0.01 and abs(start[:, 24:].mean() - 0.8) < 0.01
    assert np.abs(np.diff(start[:, :8], axis=1)).max() < 0.01  # was 0.2 between every pair of neighbours
    styled = _initial(StyleTransferParams(init="style", init_blur=4), content, style)
    assert styled.shape == content.shape and styled.std() < style.std() / 2


def test_a_region_of_a_few_deep_pixels_keeps_the_loss_finite(vgg):
    # The demo pair at 32 px segments the content into a region of 0.04 px; at relu5_1 (2x2) its
    # 512x512 covariance products made float32 eigvalsh return NaN (pst run stopped at iteration 1).
    config = build_config(sets=["features.weights=random"])
    images = []
    for name in ("content", "style"):
        pixels = read_image(Path(__file__).resolve().parents[1] / "pst_core" / "demo" / f"{name}.png")
        images.append(resize(pixels, working_shape(pixels.shape[1], pixels.shape[2], 32)))
    masks = [segment_image(torch.from_numpy(image), vgg, cluster_layers(config.cluster_layer, config.features.layers),
                           config.cluster_layer, config.backprop_clusters, config.fuse_segmentation).numpy()
             for image in images]
    content, style, _ = normalize_pair(images[0], images[1], "linear", "style_to_content")
    result = transfer(content, style, masks[0], masks[1], vgg, StyleTransferParams(iterations=1, min_size=32))
    assert np.isfinite(result.image).all()


# ---------------------------------------------------------------- errors

class _Exploding(torch.nn.Module):
    """VGG whose activations turn infinite after a few calls."""

    def __init__(self, inner, after):
        super().__init__()
        self.inner, self.after, self.calls = inner, after, 0

    def forward(self, image, layers):
        self.calls += 1
        out = self.inner(image, layers)
        return {k: v * float("inf") for k, v in out.items()} if self.calls > self.after else out


def test_non_finite_loss_raises_compute_error(vgg):
    content, cm = disk_scene(32)
    style, sm = two_texture_style(32)
    with pytest.raises(ComputeError) as info:
        transfer(content, style, cm, sm, _Exploding(vgg, after=5),
                 StyleTransferParams(iterations=10, mapping="overlap"))
    assert "non-finite" in str(info.value) and "\n" not in str(info.value)
    bad = content.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ComputeError, match="content image"):
        transfer(bad, style, cm, sm, vgg, StyleTransferParams(iterations=1))


def test_settings_for_a_missing_region_are_a_config_error(vgg):
    content, cm = disk_scene(32)
    style, sm = two_texture_style(32)
    with pytest.raises(ConfigError, match="region 5"):
        transfer(content, style, cm, sm, vgg, StyleTransferParams(iterations=1, regions={5: RegionSettings()}))


def test_colour_normalised_transfer_restores_the_content_palette(vgg):
    from pst_core.color.normalize import normalize_pair, restore_palette

    content, cm = disk_scene(32)
    style, sm = two_texture_style(32)
    cn, sn, t = normalize_pair(content, style, "linear", "content_to_style")
    out = transfer(cn, sn, cm, sm, vgg, StyleTransferParams(iterations=10, mapping={0: 0, 1: 1}))
    final = restore_palette(out.image, t, "content")
    mean = final.reshape(3, -1).mean(1)
    assert np.abs(mean - content.reshape(3, -1).mean(1)).max() < 0.05
    assert np.abs(mean - style.reshape(3, -1).mean(1)).max() > 0.1


def test_transfer_keeps_normalised_colours_outside_the_unit_cube(vgg):
    """A normalised image can leave [0, 1]; clipping it there would make the inverse colour transform
    bend those colours (a yellow sun came back lime green). With no iterations the output is the
    normalised content (started as it is, not blurred), so restoring the palette must give back the
    content itself."""
    from pst_core.color.normalize import normalize_pair, restore_palette

    content, cm = disk_scene(32)
    content[:, cm[0] > 0.5] = np.array([1.0, 0.85, 0.3])[:, None]  # a saturated yellow disk
    style, sm = two_texture_style(32)
    cn, sn, t = normalize_pair(content, style, "linear", "content_to_style")
    assert cn.min() < -0.01 or cn.max() > 1.01  # the case in question
    out = transfer(cn, sn, cm, sm, vgg, StyleTransferParams(iterations=0, init_blur=1, mapping={0: 0, 1: 1}))
    assert np.abs(restore_palette(out.image, t, "content") - content).max() < 1e-4
    styled = transfer(cn, sn, cm, sm, vgg, StyleTransferParams(iterations=5, mapping={0: 0, 1: 1})).image
    low = np.minimum(cn.min((1, 2)), sn.min((1, 2))).clip(None, 0)[:, None, None]
    high = np.maximum(cn.max((1, 2)), sn.max((1, 2))).clip(1, None)[:, None, None]
    assert (styled >= low).all() and (styled <= high).all()


def test_partitioned_transfer_beats_k1_on_structure(vgg):
    """Judged without any network: each content region of the partitioned output carries its own style
    region's orientation; the unpartitioned output cannot give both regions theirs."""
    from pst_core.inspect import quality
    from pst_core import synthetic

    size = 64
    labels = synthetic.layout("halves_h", (size, size))
    rng = np.random.default_rng(0)
    style = synthetic.mosaic(labels, [synthetic.texture("stripes", (size, size), 8, angle, rng) for angle in (0, 90)],
                             [(0.8, 0.5, 0.2), (0.2, 0.4, 0.8)], contrast=0.22)
    sm = synthetic.label_masks(labels)
    content, cm = disk_scene(size)
    params = StyleTransferParams(iterations=60)
    part = transfer(content, style, cm, sm, vgg, params.model_copy(update={"mapping": {0: 0, 1: 1}})).image
    plain = transfer(content, style, _ones(content), _ones(style), vgg, params).image
    hard = (cm > 0.5).astype(np.float32)
    scores_part = quality.structure_scores(part, hard, style, sm, {0: 0, 1: 1})
    scores_plain = quality.structure_scores(plain, hard, style, sm, {0: 0, 1: 1})
    assert min(scores_part.values()) > 0.5, scores_part
    assert min(scores_part.values()) > min(scores_plain.values()) + 0.3, (scores_part, scores_plain)
