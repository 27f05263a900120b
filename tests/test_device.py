"""The accelerator path.

Without a GPU, the stages' forward computations run on *fake* CUDA tensors (PyTorch's FakeTensorMode:
shapes and devices, no data), which fails on any tensor left on the CPU beside a CUDA one.
With a GPU, the same pipeline runs on CPU and on CUDA and the results are compared.
"""

import copy

import numpy as np
import pytest
import torch

from conftest import FAST
from pst_core.color.spaces import srgb_to_lab
from pst_core.segmentation.backprop_clusters import backprop_indicators
from pst_core.segmentation.cluster_layer import maxent_cluster
from pst_core.features import load_vgg

CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def heads():
    vgg = load_vgg("random", 0, "cpu")
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    feats = vgg(image[None], ["relu2_1"])["relu2_1"][0]
    layer_head, _, _ = maxent_cluster(feats, 3, iterations=3)
    colour_head, _, _ = maxent_cluster(srgb_to_lab(image), 3, iterations=3)
    return vgg, image, layer_head, colour_head


def test_device_stages_keep_every_tensor_on_the_device(heads):
    from torch._subclasses.fake_tensor import FakeTensorMode

    vgg, image, layer_head, colour_head = heads
    on_device = copy.deepcopy(vgg)
    previous = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)  # lets .to() swap in fake parameters
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            on_device = on_device.to("cuda")
            x = image.to("cuda")
            feats = on_device(x[None], ["relu1_1", "relu2_1"])
            assert {f.device.type for f in feats.values()} == {"cuda"}
            for layer, head in (("rgb", colour_head), ("relu2_1", layer_head)):
                maps = backprop_indicators(x, on_device, layer, head, method="upsample", blur=2.0)
                assert maps.device.type == "cuda" and tuple(maps.shape) == (3, 32, 32)
            stored = feats["relu2_1"][0]
            maps = backprop_indicators(x, None, "relu2_1", layer_head, method="upsample", features=stored)
            assert maps.device.type == "cuda"
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(previous)


# ---------------------------------------------------------------- real GPU (skipped without one)

gpu = pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")


@gpu
def test_cuda_network_and_backprop_match_cpu(heads):
    vgg, image, layer_head, _ = heads
    cuda_vgg = load_vgg("random", 0, "cuda")
    layers = ["relu1_1", "relu3_1", "relu5_1"]
    cpu, gpu_feats = vgg(image[None], layers), cuda_vgg(image.cuda()[None], layers)
    for layer in layers:
        scale = float(cpu[layer].abs().max())
        assert float((gpu_feats[layer].cpu() - cpu[layer]).abs().max()) < 1e-4 * scale, layer
    for method in ("vjp", "upsample"):
        a = backprop_indicators(image, vgg, "relu2_1", layer_head, method=method)
        b = backprop_indicators(image.cuda(), cuda_vgg, "relu2_1", layer_head, method=method).cpu()
        assert float((a - b).abs().max()) < 1e-4, method


@gpu
def test_cuda_transfer_matches_cpu():
    from pst_core.config.schema import StyleTransferParams
    from pst_core.style.style_transfer import transfer
    from pst_core.synthetic import disk_scene, two_texture_style

    content, cm = disk_scene(48)
    style, sm = two_texture_style(48)
    params = StyleTransferParams(iterations=10, mapping={0: 0, 1: 1}, style_layers=["relu1_1", "relu2_1", "relu3_1"],
                                 content_layers=["relu3_1"])
    on_cpu = transfer(content, style, cm, sm, load_vgg("random", 0, "cpu"), params, device="cpu")
    on_gpu = transfer(content, style, cm, sm, load_vgg("random", 0, "cuda"), params, device="cuda")
    assert on_cpu.mapping == on_gpu.mapping
    losses = np.array([h.total for h in on_cpu.history]), np.array([h.total for h in on_gpu.history])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-3)
    assert np.abs(on_gpu.image - on_cpu.image).max() < 1e-2
    assert np.abs(on_gpu.image - on_cpu.image).mean() < 1e-3


@gpu
def test_pipeline_on_cuda_matches_cpu(images, tmp_path, prefect_server):
    from flows.pipeline import partitioned_style_transfer
    from pst_core.config.overrides import build_config
    from pst_core.store.artifact_store import ArtifactStore

    outputs = {}
    for device in ("cpu", "cuda"):
        store = str(tmp_path / device)
        result = partitioned_style_transfer(images["content"], images["style"], store=store,
                                            config=build_config(sets=[*FAST, f"device={device}"]))
        outputs[device] = (ArtifactStore(store), {(s["stage"], s["image"], s["layer"]): s["key"]
                                                  for s in result["stages"]})
    (cpu_store, cpu_keys), (gpu_store, gpu_keys) = outputs["cpu"], outputs["cuda"]
    assert cpu_keys == gpu_keys  # the device is not part of any key
    for (stage, side, layer), key in cpu_keys.items():
        if stage == "features":  # float16 in the store: one rounding step apart at most
            a, b = cpu_store.open(stage, key), gpu_store.open(stage, key)
            for name in a.names():
                x, y = a.array(name).astype(np.float64), b.array(name).astype(np.float64)
                assert np.abs(x - y).max() <= 2e-3 * np.abs(x).max(), (side, name)
    final = next(key for (stage, _, _), key in cpu_keys.items() if stage == "unnormalize")
    x, y = cpu_store.open("unnormalize", final).array("image"), gpu_store.open("unnormalize", final).array("image")
    assert np.abs(x - y).mean() < 5e-3
