"""Planning from keys, without Prefect: plans match what the stages write, input facts are memoised safely."""

import json
import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FAST
from pst_core.pipeline import stages
from pst_core.config.overrides import build_config
from pst_core.errors import InputError
from pst_core.pipeline.plan import style_transfer_spec
from pst_core.pipeline.preflight import preflight
from pst_core.store.artifact_store import ArtifactStore


def _pair(images):
    return {"content": images["content"], "style": images["style"]}


def test_planned_keys_are_the_keys_the_stages_write(images, tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    config = build_config(sets=[*FAST, "fuse_segmentation.k=1"])
    plan = preflight(store, _pair(images), config)
    assert len(plan.missing) == len(plan.steps) == 7 and not plan.present
    outcomes = stages.run_steps(store, plan.missing, plan.device)  # run_step checks each key as planned
    assert [o.key for o in outcomes] == [step.key for step in plan.steps]
    assert store.complete(step.id for step in plan.steps) == {step.id for step in plan.steps}
    again = preflight(store, _pair(images), config)
    assert again.missing == [] and [o.status for o in again.outcomes({})] == ["cached"] * 7


def test_a_changed_parameter_plans_that_stage_and_what_reads_it(images, tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    config = build_config(sets=FAST)
    stages.run_steps(store, preflight(store, _pair(images), config).missing)
    changed = preflight(store, _pair(images), build_config(sets=[*FAST, "style.cluster_layer.seed=1"]))
    assert {(s.stage, s.side) for s in changed.missing} == {
        ("cluster_layer", "style"), ("backprop_clusters", "style"), ("fuse_segmentation", "style"),
        ("color_normalize", None), ("style_transfer", None), ("unnormalize", None)}  # colours per region pair


def test_style_layer_weights_replan_the_transfer_only_and_leave_default_keys_as_they_were(images, tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    config = build_config(sets=FAST)
    stages.run_steps(store, preflight(store, _pair(images), config).missing)
    weighted = preflight(store, _pair(images), build_config(sets=[*FAST, "style_transfer.style_layer_weights={relu1_1: 2}"]))
    assert {s.stage for s in weighted.missing} == {"style_transfer", "unnormalize"}
    # Stores written before the parameter existed keep their transfers: equal weights are not in the key.
    default = style_transfer_spec(config.style_transfer, "c", "r", "s")
    assert "style_layer_weights" not in default.params and "style_weight" in default.params
    # So do the imagenet preset's (the start as it is): init_blur=1 is not in the key, the default 4 is.
    classic = style_transfer_spec(config.style_transfer.model_copy(update={"init_blur": 1}), "c", "r", "s")
    assert "init_blur" not in classic.params and default.params["init_blur"] == 4
    # And unconfined regions (the preset's, and the code's before confine_regions): out; the default, in.
    unconfined = style_transfer_spec(config.style_transfer.model_copy(update={"confine_regions": False}), "c", "r", "s")
    assert "confine_regions" not in unconfined.params and default.params["confine_regions"] is True


def test_segmentation_at_segment_size_is_planned_and_its_keys_are_the_ones_written(images, tmp_path):
    """Above load.segment_size each side plans a second, smaller load that segmentation reads; the load
    key leaves segment_size out (the working-size entry is the one it always was); the transfer's new
    parameters are in its key."""
    store = ArtifactStore(str(tmp_path / "store"))
    plan = preflight(store, _pair(images), build_config(sets=[*FAST, "fuse_segmentation.k=1", "load.segment_size=24"]))
    loads = [step for step in plan.steps if step.stage == "load"]
    assert [(s.side, s.args["params"].size) for s in loads] == [("content", 40), ("content", 24),
                                                                  ("style", 40), ("style", 24)]
    fused = [step for step in plan.steps if step.stage == "fuse_segmentation"]
    assert [dict(f.needs)["load"] for f in fused] == [loads[1].key, loads[3].key]
    assert len(plan.missing) == len(plan.steps) == 9
    outcomes = stages.run_steps(store, plan.missing, plan.device)  # run_step checks each key as planned
    assert [o.key for o in outcomes] == [step.key for step in plan.steps]

    def keys(*sets):
        return {(s.stage, s.side): s.key
                for s in preflight(store, _pair(images), build_config(sets=[*FAST, "fuse_segmentation.k=1", *sets])).steps}

    plain = keys()
    assert plain == keys("load.segment_size=40")  # segment_size at or above load.size changes nothing
    assert plain[("load", "content")] == loads[0].key
    for changed in ("style_transfer.memory_budget=16", "style_transfer.tile_size=32", "style_transfer.fine_size=512",
                    "style_transfer.fine_iterations=10"):
        assert keys(changed)[("style_transfer", None)] != plain[("style_transfer", None)], changed


def test_the_colour_key_holds_what_the_colour_stage_decides(images, tmp_path):
    """Its key has the method and direction as resolved for the palette (auto and the same explicit
    choice share an entry), and the network that decides mapping=auto (the transfer reads its pairs)."""
    store = ArtifactStore(str(tmp_path / "store"))

    def colour_key(*sets):
        plan = preflight(store, _pair(images), build_config(sets=[*FAST, *sets]))
        return next(step.key for step in plan.steps if step.stage == "color_normalize")

    auto = colour_key()
    assert auto == colour_key("color_normalize.method=luminance", "color_normalize.direction=style_to_content")
    assert auto != colour_key("unnormalize.palette=style")
    assert auto != colour_key("style_transfer.mapping_layer=relu2_1") != colour_key("style_transfer.pooling=max")
    overlap = colour_key("style_transfer.mapping=overlap")
    assert overlap != auto and overlap == colour_key("style_transfer.mapping=overlap", "style_transfer.pooling=max")


def test_image_facts_come_from_the_memo_while_the_file_is_unchanged(images, tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    config = build_config(sets=[*FAST, "fuse_segmentation.k=1"])
    load_key = preflight(store, _pair(images), config).steps[0].key
    memo = [os.path.join(root, name) for root, _, names in os.walk(tmp_path / "store" / "memo" / "image")
            for name in names]
    assert len(memo) == 2  # one per image file
    for path in memo:  # the memo is trusted as long as the file is the same file, unchanged
        facts = json.loads(open(path).read())
        open(path, "w").write(json.dumps({**facts, "digest": "0" * 64}))
    assert preflight(store, _pair(images), config).steps[0].key != load_key


def test_an_image_rewritten_with_the_same_size_and_mtime_is_decoded_again(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    config = build_config(sets=[*FAST, "fuse_segmentation.k=1"])
    path = tmp_path / "c.ppm"  # uncompressed: the same size whatever the pixels
    Image.fromarray(np.full((32, 40, 3), 60, np.uint8)).save(path)
    images = {"content": str(path), "style": str(path)}
    first = preflight(store, images, config).steps[0].key
    stat = os.stat(path)
    Image.fromarray(np.full((32, 40, 3), 200, np.uint8)).save(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_size == stat.st_size and os.stat(path).st_mtime_ns == stat.st_mtime_ns
    assert preflight(store, images, config).steps[0].key != first


def test_an_image_changed_after_planning_is_refused_before_anything_reads_it(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    config = build_config(sets=[*FAST, "fuse_segmentation.k=1"])
    path = tmp_path / "c.png"
    Image.fromarray(np.full((32, 40, 3), 60, np.uint8)).save(path)
    plan = preflight(store, {"content": str(path), "style": str(path)}, config)
    Image.fromarray(np.full((32, 40, 3), 200, np.uint8)).save(path)
    with pytest.raises(InputError, match="changed while the run was planned"):
        stages.run_steps(store, plan.missing)


def test_the_same_image_on_both_sides_is_one_step_to_run(images, tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    plan = preflight(store, {"content": images["content"], "style": images["content"]},
                     build_config(sets=[*FAST, "fuse_segmentation.k=1"]))
    assert len(plan.steps) == 7 and len(plan.missing) == 5  # load and fuse_segmentation are shared
    ran = {o.key: o for o in stages.run_steps(store, plan.missing)}
    outcomes = plan.outcomes({(o.stage, o.key): o for o in ran.values()})
    assert [o.side for o in outcomes[:4]] == ["content", "content", "style", "style"]
    assert all(o.status == "computed" for o in outcomes)


def test_random_weights_built_by_two_threads_at_once_are_the_seeded_ones():
    from pst_core import features as vgg

    def weights(seed):
        return torch.cat([p.flatten() for p in vgg.load_vgg("random", seed).parameters()])

    vgg._build.cache_clear()
    alone = {seed: weights(seed) for seed in (0, 1)}
    vgg._build.cache_clear()
    together = {}
    threads = [threading.Thread(target=lambda s=seed: together.update({s: weights(s)})) for seed in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for seed in (0, 1):
        assert torch.equal(alone[seed], together[seed])


def test_which_layers_are_clustered_means_the_same_to_the_plan_the_checks_and_segment_image(images, tmp_path):
    """cluster_layer.layers: a list, or null for rgb + features.layers. The plan, the checks before a run and
    segment_image all take it from cluster_layers; an empty list (it would cluster nothing) is refused."""
    from pst_core.config.schema import BackpropParams
    from pst_core.errors import ConfigError
    from pst_core.features import load_vgg
    from pst_core.segmentation.cluster_layer import cluster_layers
    from pst_core.segmentation.segment import layer_indicators

    for empty in ("cluster_layer.layers=[]", "content.cluster_layer.layers=[]"):
        with pytest.raises(ConfigError, match=rf"^{empty.split('=')[0]}: .*empty list") as info:
            build_config(sets=[*FAST, empty])
        assert "\n" not in str(info.value)
    store = ArtifactStore(str(tmp_path / "store"))
    image = torch.rand(3, 24, 24)
    for sets, expected in (([], ["rgb", "relu1_1", "relu2_1", "relu3_1"]), (["cluster_layer.layers=relu2_1,rgb"],
                                                                             ["relu2_1", "rgb"])):
        config = build_config(sets=[*FAST, *sets, "cluster_layer.iterations=2"])
        assert cluster_layers(config.cluster_layer, config.features.layers) == expected
        plan = preflight(store, {"content": images["content"]}, config)
        assert [step.layer for step in plan.steps if step.stage == "cluster_layer"] == expected
        indicators = layer_indicators(image, load_vgg("random"), config.features.layers, config.cluster_layer,
                                      BackpropParams(method="upsample"))
        assert list(indicators) == expected
    with pytest.raises(ConfigError, match="'relu4_1' is not among features.layers"):  # checked on the same list
        preflight(store, {"content": images["content"]}, build_config(sets=[*FAST, "cluster_layer.layers=relu4_1"]))
