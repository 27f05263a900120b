import pytest

from pst_core.config.overrides import build_config
from pst_core.errors import ConfigError


def test_defaults_and_side_overrides():
    config = build_config(sets=["content.cluster_layer.k=5", "cluster_layer.iterations=7"])
    assert config.params("cluster_layer", "content").k == 5
    assert config.params("cluster_layer", "style").k == 3
    assert config.params("cluster_layer", "style").iterations == 7


def test_values_are_parsed():
    config = build_config(sets=["features.layers=relu1_1,relu3_1", "style_transfer.mapping={\"0\": 1, \"1\": 0}",
                                "style_transfer.style_weight=2.5", "features.weights=random"])
    assert config.features.layers == ["relu1_1", "relu3_1"]
    assert config.style_transfer.mapping == {0: 1, 1: 0}
    assert config.style_transfer.style_weight == 2.5
    yaml_style = build_config(sets=["style_transfer.mapping={0: 1, 1: 0}",
                                    "style_transfer.regions={1: {keep_content: true}}"])
    assert yaml_style.style_transfer.mapping == {0: 1, 1: 0}
    assert yaml_style.style_transfer.regions[1].keep_content
    named = build_config(sets=["content.fuse_segmentation.labels=123", "features.weights=7.pt"])
    assert named.params("fuse_segmentation", "content").labels == "123" and named.features.weights == "7.pt"


@pytest.mark.parametrize("assignment, message", [
    ("cluster_layer.kk=3", "did you mean 'k'"),
    ("clustr_layer.k=3", "did you mean 'cluster_layer'"),
    ("cluster_layer.k=0", "cluster_layer.k"),
    ("fuse_segmentation.k=-1", "fuse_segmentation.k"),
    ("style_transfer.iterations=nan", "style_transfer.iterations"),
    ("style_transfer.style_weight=inf", "style_transfer.style_weight"),
    ("features.layers=relu9_9", "unknown VGG19 layer"),
    ("content.style_transfer.iterations=3", "no per-side settings"),
    ("content.cluster_layer.k=0", "content.cluster_layer.k"),
    ("novalue", "expected stage.param=value"),
    ("style_transfer.mapping={0: 1", "not valid JSON or YAML"),
])
def test_bad_parameters_are_one_line_errors(assignment, message):
    with pytest.raises(ConfigError, match=message) as info:
        build_config(sets=[assignment])
    assert "\n" not in str(info.value)


def test_config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("cluster_layer:\n  k: 4\nstyle:\n  fuse_segmentation:\n    k: 2\n")
    config = build_config(config_file=str(path), sets=["cluster_layer.seed=3"])
    assert config.cluster_layer.k == 4 and config.cluster_layer.seed == 3
    assert config.params("fuse_segmentation", "style").k == 2
    assert config.params("fuse_segmentation", "content").k == 3


def test_seed_preset_is_the_original_configuration_and_sets_override_it():
    config = build_config(preset="seed", sets=["fuse_segmentation.k=4"])
    assert config.features.layers == ["conv1_2", "conv5_4"]
    assert config.cluster_layer.layers == ["rgb", "conv1_2", "conv5_4"] and config.cluster_layer.k == 3
    assert config.backprop_clusters.method == "vjp"
    assert config.fuse_segmentation.k == 4
    assert build_config(preset="seed").fuse_segmentation.k == 3  # the preset itself is untouched
    assert build_config(sets=["cluster_layer.layers=rgb"]).cluster_layer.layers == ["rgb"]
    with pytest.raises(ConfigError, match="unknown preset"):
        build_config(preset="sed")


def test_pretrained_weights_that_cannot_be_had_name_both_alternatives(monkeypatch):
    """Offline, torchvision's download fails; the error must say what to do instead."""
    from urllib.error import URLError

    from torchvision.models import VGG19_Weights

    from pst_core import features as vgg

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(type(VGG19_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    vgg._build.cache_clear()
    with pytest.raises(ConfigError) as info:
        vgg.load_vgg("imagenet")
    message = str(info.value)
    assert "features.weights=imagenet" in message and "features.weights=PATH" in message
    assert "features.weights=random" in message and "\n" not in message


def test_random_weights_are_torchvisions_draw_whether_drawn_or_read_from_the_cache(tmp_path, monkeypatch):
    """The features' share of torchvision's seeded vgg19 init is kept in the torch hub cache; what is read
    back is the same draw, and a damaged cache file is drawn again rather than trusted."""
    import torch
    from torchvision.models import vgg19

    from pst_core import features as vgg

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        expected = vgg19(weights=None).features.state_dict()

    def built() -> dict:
        vgg._build.cache_clear()
        return vgg.load_vgg("random", seed=5).body.state_dict()

    def same(state: dict) -> bool:
        return state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in expected)

    cache = vgg.random_weights_file(5)
    assert str(cache).startswith(str(tmp_path)) and not cache.exists()
    assert same(built()) and cache.is_file()  # drawn, and kept
    assert same(built())  # read back
    cache.write_bytes(b"not a torch file")
    assert same(built())  # drawn again
    vgg._build.cache_clear()


def test_local_weights_file_is_used(tmp_path):
    import torch

    from pst_core import features as vgg

    reference = vgg.load_vgg("random", seed=3)
    path = tmp_path / "vgg.pth"
    torch.save(reference.body.state_dict(), path)
    loaded = vgg.load_vgg(str(path))
    image = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(loaded(image, ["relu3_1"])["relu3_1"], reference(image, ["relu3_1"])["relu3_1"])
    assert vgg.weights_fingerprint(str(path)).startswith("sha256:")
