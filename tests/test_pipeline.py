"""Cache semantics on a real store and real Prefect runs (one shared ephemeral server)."""

import numpy as np
import pytest

from conftest import FAST
from pst_core.pipeline import stages
from pst_core.config.overrides import build_config
from pst_core.store.artifact_store import ArtifactStore

pytestmark = pytest.mark.usefixtures("prefect_server")


def _run(images, store, extra=(), out=None):
    from flows.pipeline import partitioned_style_transfer

    config = build_config(sets=[*FAST, *extra])
    return partitioned_style_transfer(images["content"], images["style"], config=config, store=store, out=out)


def _computed(result) -> set[tuple]:
    return {(s["stage"], s["image"], s["layer"]) for s in result["stages"] if s["status"] == "computed"}


@pytest.fixture(scope="module")
def first_run(images, tmp_path_factory):
    store = str(tmp_path_factory.mktemp("store"))
    out = str(tmp_path_factory.mktemp("out") / "out.png")
    return store, _run(images, store, out=out)


def test_first_run_computes_every_stage_and_writes_output(first_run, images):
    store, result = first_run
    names = [s["stage"] for s in result["stages"]]
    for stage in stages.STAGE_VERSIONS:
        assert stage in names
    assert all(s["status"] == "computed" for s in result["stages"])
    # one cluster_layer and backprop per layer (rgb + 3 VGG layers) per side
    assert names.count("cluster_layer") == 8 and names.count("backprop_clusters") == 8
    from PIL import Image

    output = np.asarray(Image.open(result["output"]), np.float32) / 255
    content = np.asarray(Image.open(images["content"]), np.float32) / 255
    assert output.shape == content.shape
    assert np.abs(output - content).mean() > 0.01  # stylised, not a copy
    record = ArtifactStore(store).run(result["run_id"])
    assert record["status"] == "ok" and len(record["stages"]) == len(result["stages"])
    # Entries computed on the device say which one (device=auto resolves to cpu without a GPU).
    on_device = {s["stage"]: s["key"] for s in result["stages"] if s["stage"] in ("features", "style_transfer")}
    for stage, key in on_device.items():
        assert ArtifactStore(store).open(stage, key).attrs["device"] == "cpu"


def test_second_run_computes_nothing(first_run, images):
    store, first = first_run
    again = _run(images, store)
    assert _computed(again) == set()
    assert [s["key"] for s in again["stages"]] == [s["key"] for s in first["stages"]]


def test_style_transfer_parameter_reruns_only_transfer_and_unnormalize(first_run, images):
    store, _ = first_run
    result = _run(images, store, ["style_transfer.iterations=5"])
    assert _computed(result) == {("style_transfer", "pair", None), ("unnormalize", "pair", None)}


def test_content_clustering_parameter_reruns_content_segmentation_and_downstream(first_run, images):
    store, _ = first_run
    result = _run(images, store, ["content.cluster_layer.seed=1"])
    computed = _computed(result)
    # Colours are normalised per region pair (color_normalize.regions), so new regions re-fit them too.
    assert {c[0] for c in computed} == {"cluster_layer", "backprop_clusters", "fuse_segmentation",
                                         "color_normalize", "style_transfer", "unnormalize"}
    assert all(image in ("content", "pair") for _, image, _ in computed)
    assert len([c for c in computed if c[0] == "cluster_layer"]) == 4


def _task_runs(run_id: str) -> dict[str, str]:
    """{task run name: state name} of a flow run, as the Prefect server recorded them. Flows return only
    once the server holds their task runs' final states, so there is nothing to wait for."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])), limit=200)
    return {run.name: run.state.name if run.state else None for run in runs}


def test_a_cached_run_submits_one_reused_task_run(first_run, images):
    store, _ = first_run
    result = _run(images, store)
    assert _task_runs(result["run_id"]) == {f"reused-{len(result['stages'])}-stages": "Cached"}


def test_a_changed_transfer_runs_two_task_runs_after_the_reused_one(first_run, images):
    store, _ = first_run
    result = _run(images, store, ["style_transfer.iterations=4"])
    assert _task_runs(result["run_id"]) == {f"reused-{len(result['stages']) - 2}-stages": "Cached",
                                            "style_transfer": "Completed", "unnormalize": "Completed"}


def test_a_stage_found_in_the_store_when_it_runs_is_cached(first_run, images):
    """A plan can go stale: another run computes a stage after this one planned it. The task run then
    finds the entry, and ends in state Cached."""
    from prefect import flow

    from flows.runtime import run_plan
    from pst_core.pipeline.preflight import preflight

    store, _ = first_run
    config = build_config(sets=[*FAST, "style_transfer.iterations=3"])
    plan = preflight(ArtifactStore(store), {"content": images["content"], "style": images["style"]}, config)
    assert [step.stage for step in plan.missing] == ["style_transfer", "unnormalize"]
    other = _run(images, store, ["style_transfer.iterations=3"])  # computes them behind the plan's back
    assert _computed(other) == {("style_transfer", "pair", None), ("unnormalize", "pair", None)}

    @flow
    def stale() -> tuple:
        from prefect.runtime import flow_run

        return str(flow_run.id), run_plan(store, plan)

    run_id, (outcomes, error) = stale()
    assert error is None and {o.stage for o in outcomes if not o.cached} == set()
    states = _task_runs(run_id)
    assert states["style_transfer"] == states["unnormalize"] == "Cached"


def test_one_region_is_unpartitioned_and_skips_segmentation(images, tmp_path):
    result = _run(images, str(tmp_path), ["fuse_segmentation.k=1"])
    names = {s["stage"] for s in result["stages"]}
    assert "cluster_layer" not in names and "features" not in names
    store = ArtifactStore(str(tmp_path))
    fuse = [s for s in result["stages"] if s["stage"] == "fuse_segmentation"]
    for s in fuse:
        regions = stages.read_regions(store, s["key"])
        assert regions.shape[0] == 1 and np.allclose(regions, 1.0)


def test_style_loss_falls(first_run):
    store, result = first_run
    key = next(s["key"] for s in result["stages"] if s["stage"] == "style_transfer")
    loss = ArtifactStore(store).open("style_transfer", key).array("loss_style")
    loss = loss[np.isfinite(loss)]
    assert loss[-1] < 0.7 * loss[0]


def test_region_aware_colour_normalisation(images, tmp_path):
    result = _run(images, str(tmp_path), ["color_normalize.regions=true", "style_transfer.mapping=overlap"])
    color = next(s for s in result["stages"] if s["stage"] == "color_normalize")
    entry = ArtifactStore(str(tmp_path)).open("color_normalize", color["key"])
    assert entry.attrs["transform"]["regions"] is True
    assert set(entry.attrs["inputs"]) == {"content", "style", "content_regions", "style_regions"}
    assert entry.array("transform_matrix").shape[0] == 2  # one transform per content region


def test_segmentation_works_at_segment_size_and_masks_are_carried_up(images, tmp_path):
    """Above load.segment_size the segmentation stages read a smaller load entry (their memory and
    store stay bounded at any working size); colour normalisation and the transfer carry the masks up."""
    result = _run(images, str(tmp_path), ["load.segment_size=24", "color_normalize.regions=true",
                                          "style_transfer.mapping=overlap"], out=str(tmp_path / "out.png"))
    store = ArtifactStore(str(tmp_path))
    loads = [store.open("load", s["key"]).array("image").shape for s in result["stages"] if s["stage"] == "load"]
    assert sorted(loads) == [(3, 19, 24), (3, 19, 24), (3, 32, 40), (3, 32, 40)]
    for s in result["stages"]:
        if s["stage"] == "fuse_segmentation":
            assert stages.read_regions(store, s["key"]).shape[1:] == (19, 24)
        if s["stage"] == "features":
            assert store.open("features", s["key"]).array("relu1_1").shape[1:] == (19, 24)
    from PIL import Image

    assert np.asarray(Image.open(tmp_path / "out.png")).shape == (32, 40, 3)
