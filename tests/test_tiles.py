"""Tiled transfer: the same objective as the whole image's, no seams, and a memory plan that fits."""

import resource
import sys
import threading
import weakref

import numpy as np
import pytest
import torch

from pst_core.style import style_transfer as style_module
from pst_core.style import tiles
from pst_core.config.schema import RegionSettings, StyleTransferParams
from pst_core.errors import MemoryBudgetError
from pst_core.style.memory import GIB
from pst_core.style.heap import release_freed_memory, reuse_freed_memory
from pst_core.style.style_transfer import _Objective, plan_transfer, transfer
from pst_core.synthetic import disk_scene, two_texture_style
from pst_core.features import load_vgg

SHALLOW = ["relu1_1", "relu2_1", "relu3_1"]  # halo 16 px: small tiles are real tiles at test sizes


@pytest.fixture(scope="module")
def vgg():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_vgg("random", seed=0, device="cpu").with_pooling("average")
    torch.set_num_threads(threads)


def test_halo_covers_the_receptive_field_and_no_less(vgg):
    """Tile cores computed with the halo give the whole image's activations at relu5_1; one grid step
    less of halo does not (so the halo is not merely generous)."""
    image = torch.rand(1, 3, 256, 224, generator=torch.Generator().manual_seed(0))
    layers = ["relu3_1", "relu5_1"]
    assert tiles.halo(["relu5_1"]) == 80 and tiles.halo(["relu3_1"]) == 16 and tiles.halo(["relu4_2"]) == 48
    whole = vgg(image, layers)
    layout = tiles.grid((256, 224), 128, tiles.halo(layers), offset=(48, 16))
    assert len(layout) == 9 and any(t.window != (0, 256, 0, 224) for t in layout)
    tiled = tiles.features(vgg, image, layers, layout)
    for layer in layers:
        assert tiled[layer].shape == whole[layer].shape
        assert torch.allclose(tiled[layer], whole[layer], rtol=1e-4, atol=1e-5 * whole[layer].abs().max())
    short = tiles.features(vgg, image, layers, tiles.grid((256, 224), 128, tiles.halo(layers) - 16, offset=(48, 16)))
    assert not torch.allclose(short["relu5_1"], whole["relu5_1"], rtol=1e-3, atol=1e-3 * whole["relu5_1"].abs().max())


def test_grid_covers_the_image_once_on_the_pooling_grid():
    layout = tiles.grid((100, 70), 32, 16, offset=(16, 48))
    cover = np.zeros((100, 70), int)
    for t in layout:
        y0, y1, x0, x1 = t.core
        cover[y0:y1, x0:x1] += 1
        wy0, wy1, wx0, wx1 = t.window
        assert wy0 <= y0 and y1 <= wy1 and wx0 <= x0 and x1 <= wx1
        assert all(e % 16 == 0 for e in (y0, x0, wy0, wx0))
    assert (cover == 1).all()
    whole = tiles.Tile((0, 100, 0, 70), (0, 100, 0, 70))
    assert tiles.grid((100, 70), None, 16) == tiles.grid((100, 70), 128, 16) == [whole]


@pytest.mark.parametrize("loss, layers, tile, confine", [("meancov", SHALLOW, 32, True), ("gram", SHALLOW, 32, True),
                                                          ("meancov", StyleTransferParams().style_layers, 64, True),
                                                          ("meancov", SHALLOW, 32, False)])
def test_tiled_loss_and_gradient_equal_the_whole_images(vgg, loss, layers, tile, confine):
    """Every region's statistics summed over tiles, the content loss too: the same objective, so the
    same value and gradient (up to rounding), with per-region settings, a kept region and TV, each
    region's gradient confined to its pixels or not."""
    content, cm = disk_scene(96)
    style, sm = two_texture_style(80)
    c, s = torch.tensor(content)[None], torch.tensor(style)[None]
    x = (c + 0.05 * torch.randn(c.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    params = StyleTransferParams(loss=loss, style_layers=layers, tv_weight=0.5, mapping={0: 1, 1: 0},
                                 confine_regions=confine,
                                 regions={1: RegionSettings(style_weight=3.0, style_layers=["relu2_1"])})
    args = (vgg, c, s, torch.tensor(cm), torch.tensor(sm), {0: 1, 1: 0}, params)
    want, want_grad = _Objective(*args).value_and_grad(x)
    tiled = _Objective(*args, tile=tile, seed=3)
    assert len(tiled._tiles((96, 96))) >= 4
    for _ in range(2):  # tile edges move between evaluations; the result does not
        got, got_grad = tiled.value_and_grad(x)
        # The mean+covariance loss counts eigenvalues under its rounding floor as zero: one that lies
        # near the floor can fall either side of it in the two sums (a jump of about 1e-5 relative).
        rtol = 1e-5 if loss == "gram" else 1e-4
        for name in ("total", "content", "style", "tv"):
            assert torch.allclose(got[name], want[name], rtol=rtol, atol=1e-7), (name, got[name], want[name])
        # Gram statistics agree to rounding (1e-7); the mean+covariance loss takes square roots of
        # covariance eigenvalues near zero (deep layers have fewer pixels than channels at 96 px),
        # which amplifies rounding to about 1e-4 in either way of computing it.
        assert float((got_grad - want_grad).norm() / want_grad.norm()) < (1e-5 if loss == "gram" else 1e-3)


class _Watched:
    """The network, noting how many of the previous call's activations are still alive when a call
    begins (weak references: watching keeps nothing alive)."""

    def __init__(self, vgg):
        self.vgg, self.previous, self.alive = vgg, [], []

    def __call__(self, image, layers):
        self.alive.append(sum(ref() is not None for ref in self.previous))
        out = self.vgg(image, layers)
        self.previous = [weakref.ref(act) for act in out.values()]
        return out


def test_a_tiles_activations_are_freed_before_the_next_tiles_pass(vgg):
    """Memory grows with the tile only if a tile's activations go before the next tile's pass begins
    (kept, they added a window's worth of the requested layers: 1.4 GiB at 1536 px tiles)."""
    content, cm = disk_scene(96)
    style, sm = two_texture_style(80)
    c, s = torch.tensor(content)[None], torch.tensor(style)[None]
    watched = _Watched(vgg)
    objective = _Objective(watched, c, s, torch.tensor(cm), torch.tensor(sm), {0: 1, 1: 0},
                           StyleTransferParams(style_layers=SHALLOW), tile=32, seed=0)
    objective.value_and_grad(c.clone())
    assert len(watched.alive) > 2 * 9  # targets, content features, both passes over at least 9 tiles
    assert max(watched.alive) == 0, watched.alive


def test_tiled_transfer_follows_the_untiled_one(vgg):
    """The same objective, so the same run: with Gram statistics (whose rounding differences stay at
    1e-7) the images agree closely; the mean+covariance loss's eigenvalues amplify rounding to about
    1e-4 of the gradient, which L-BFGS carries a little further."""
    content, cm = disk_scene(64)
    style, sm = two_texture_style(64)
    params = StyleTransferParams(iterations=6, min_size=32, style_layers=SHALLOW, content_layers=["relu3_1"],
                                 mapping={0: 0, 1: 1})
    for loss, largest, mean in (("gram", 1e-3, 1e-4), ("meancov", 0.1, 5e-3)):
        chosen = params.model_copy(update={"loss": loss})
        whole = transfer(content, style, cm, sm, vgg, chosen)
        tiled = transfer(content, style, cm, sm, vgg, chosen.model_copy(update={"tile_size": 32}))
        assert [p.tile for p in whole.plans] == [None, None] and [p.tile for p in tiled.plans] == [None, 32]
        difference = np.abs(tiled.image - whole.image)
        assert difference.max() < largest and difference.mean() < mean, (loss, difference.max(), difference.mean())
        assert abs(tiled.history[-1].total - whole.history[-1].total) < 1e-3 * whole.history[-1].total


def _seam_z(image: np.ndarray) -> float:
    """How far the gradient energy across the 16 px grid lines (where tile edges can lie) stands above
    that across every other line of pixels, in standard errors of the others' mean."""
    size = image.shape[1]
    across_columns = ((image[:, :, 1:] - image[:, :, :-1]) ** 2).sum(0).mean(0)
    across_rows = ((image[:, 1:, :] - image[:, :-1, :]) ** 2).sum(0).mean(1)
    energy = np.concatenate([across_columns, across_rows])
    on_grid = np.concatenate([np.arange(1, size)] * 2) % tiles.GRID == 0
    other = energy[~on_grid]
    return float((energy[on_grid].mean() - other.mean()) / (other.std() / np.sqrt(on_grid.sum())))


def test_tiled_output_has_no_seams(vgg, monkeypatch):
    """Gradient energy along tile edges is indistinguishable from elsewhere; tiles without their halo
    (each tile sees zero padding at its edges) do leave seams there, so the measure can tell."""
    content, cm = disk_scene(64)
    style, sm = two_texture_style(64)
    # 16 px tiles: every line of the 16 px grid is a tile edge at every evaluation.
    # No TV: smoothing would hide seams as well as pixel grain, and the halo-less control would pass.
    params = StyleTransferParams(iterations=20, min_size=0, tile_size=16, style_layers=SHALLOW,
                                 content_layers=["relu3_1"], mapping={0: 0, 1: 1}, tv_weight=0.0)
    tiled = transfer(content, style, cm, sm, vgg, params)
    assert tiled.plans[0].tile == 16
    assert abs(_seam_z(tiled.image)) < 2.5
    monkeypatch.setattr(style_module.tiles, "halo", lambda layers: 0)
    seamed = transfer(content, style, cm, sm, vgg, params)
    assert _seam_z(seamed.image) > 3


# ---------------------------------------------------------------- memory plan

def test_plan_keeps_small_images_whole_and_tiles_large_ones():
    params = StyleTransferParams()
    small = plan_transfer((512, 512), (512, 512), 3, 3, params)
    assert all(p.tile is None and p.history == min(100, p.iterations) for p in small)
    big = plan_transfer((4096, 4096), (4096, 4096), 2, 2, params)
    assert big[-1].tile is not None and big[-1].peak <= 12 * GIB
    assert [p.iterations for p in big][-2:] == [params.fine_iterations] * 2  # 2048 and 4096 px: fine scales
    # A tighter budget: smaller tiles and, once tiles cannot shrink further usefully, a shorter history.
    tight = plan_transfer((4096, 4096), (4096, 4096), 2, 2, params.model_copy(update={"memory_budget": 6.0}))
    assert tight[-1].peak <= 6 * GIB and (tight[-1].tile, tight[-1].history) < (big[-1].tile, big[-1].history)
    forced = plan_transfer((512, 512), (512, 512), 3, 3, params.model_copy(update={"tile_size": 256}))
    assert forced[-1].tile == 256 and forced[-2].tile is None  # the 256 px scale is one tile


def test_plan_reuses_freed_memory_where_its_slack_fits_before_it_takes_larger_tiles():
    params = StyleTransferParams()
    small = plan_transfer((1024, 1024), (1024, 1024), 2, 2, params)
    assert all(p.reuse_heap and p.tile is None and p.parts["heap"] > 0 and p.peak <= 12 * GIB for p in small)
    # 2048 px: 1536 px tiles would fit without reuse; smaller tiles with it come first (faster).
    reused = plan_transfer((2048, 2048), (1024, 1024), 2, 2, params)[-1]
    plain = plan_transfer((2048, 2048), (1024, 1024), 2, 2, params.model_copy(update={"tile_size": 1536}))[-1]
    assert reused.reuse_heap and reused.tile < plain.tile and not plain.reuse_heap and plain.peak <= 12 * GIB
    # 4096 px: the image-sized vectors leave no room for the heap's slack (1024 px tiles with reuse
    # peaked at 15.9 GiB in a pipeline run); its tiles run without, as before.
    assert not plan_transfer((4096, 4096), (2048, 2048), 2, 2, params)[-1].reuse_heap
    # A budget that even the smallest preferred tile fills: no reuse, its slack not counted.
    tight = plan_transfer((4096, 4096), (4096, 4096), 2, 2, params.model_copy(update={"memory_budget": 6.0}))[-1]
    assert not tight.reuse_heap and "heap" not in tight.parts and tight.peak <= 6 * GIB
    for plan in small + [reused, plain, tight]:
        assert plan.reuse_heap == ("heap" in plan.parts)
        # A tile's extra share is counted without reuse; with it, the heap's measured slack holds it.
        assert ("tiling" in plan.parts) == (plan.tile is not None and not plan.reuse_heap)
    assert plain.parts["tiling"] > 4 * 3 * 2048 * 2048  # at least the image's gradient summed over tiles


def _resident_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_memory_freed_in_another_thread_goes_back_to_the_system():
    # What a pipeline's earlier stages leave: many small arrays freed in a worker thread's heap, a few
    # kept (so the heap cannot simply shrink from its top). 256 MiB freed stays resident until released.
    kept = []

    def stage():
        arrays = [np.ones(8192) for _ in range(4096)]  # 64 KiB each, under the size malloc maps on its own
        kept.extend(arrays[::16])

    worker = threading.Thread(target=stage)
    worker.start()
    worker.join()
    before = _resident_mib()
    assert release_freed_memory()
    assert before - _resident_mib() > 128
    assert all(a[0] == 1 for a in kept)  # what is still held is untouched


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_inside_and_given_back_after():
    pages = 64 * 2 ** 20 // resource.getpagesize()

    def faults_of_a_fresh_64_mib_tensor() -> int:
        # A larger block freed first (a pass frees blocks of many sizes; one of exactly the same size
        # would not do: torch asks for a few bytes more to align it): the heap may keep it.
        torch.ones(32 * 2 ** 20)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(16 * 2 ** 20)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    release_freed_memory()
    assert faults_of_a_fresh_64_mib_tensor() > pages // 2  # glibc maps a block this large anew each time
    with reuse_freed_memory() as reused:
        assert reused
        assert faults_of_a_fresh_64_mib_tensor() < pages // 20  # the freed block serves the next one
        resident = _resident_mib()
    assert release_freed_memory()
    assert resident - _resident_mib() > 32  # after: the kept block goes back
    assert faults_of_a_fresh_64_mib_tensor() > pages // 2  # and the usual thresholds are back


def test_a_run_that_cannot_fit_is_refused_in_one_line():
    params = StyleTransferParams(memory_budget=2.0)
    with pytest.raises(MemoryBudgetError) as info:
        plan_transfer((8192, 8192), (8192, 8192), 2, 2, params)
    message = str(info.value)
    assert "\n" not in message and "style_transfer.memory_budget" in message and "8192x8192" in message
    calls = []
    with pytest.raises(MemoryBudgetError):  # refused before any work: the base process alone is 1.4 GiB
        transfer(np.zeros((3, 64, 64), np.float32), np.zeros((3, 64, 64), np.float32),
                 np.ones((1, 64, 64), np.float32), np.ones((1, 64, 64), np.float32), load_vgg("random"),
                 params.model_copy(update={"memory_budget": 0.5}), progress=calls.append)
    assert calls == []
