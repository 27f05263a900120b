"""The single-pair flow, read as the pipeline diagram:

    content ─ load ─┬─ features ─ cluster_layer* ─ backprop_clusters* ─ fuse_segmentation ─┐
                    └─────────────┐                                                        │
                                  ├─ color_normalize ─ style_transfer ─ unnormalize ─ out  │
                    ┌─────────────┘                                                        │
    style ── load ──┴─ features ─ cluster_layer* ─ backprop_clusters* ─ fuse_segmentation ─┘
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from prefect import flow
from prefect.futures import PrefectFuture, wait
from prefect.runtime import flow_run

import tasks.stages as t
from pst_core import stages
from pst_core.config import PipelineConfig
from pst_core.errors import PstError
from pst_core.imageio import save_image
from pst_core.runs import preflight, run_record
from pst_core.stages import StageOutcome
from pst_core.store import ArtifactStore

from .artifacts import publish_run_summary
from .deployments import resolve_store


@dataclass
class SideFutures:
    load: PrefectFuture
    regions: PrefectFuture
    all: list[PrefectFuture] = field(default_factory=list)


def segment_side(store: str, path: str, side: str, config: PipelineConfig, device: str) -> SideFutures:
    """load -> features -> cluster_layer per layer -> backprop_clusters per layer -> fuse_segmentation."""
    loaded = t.load.submit(store, path, config.params("load", side), side)
    futures = [loaded]
    # Segmentation works at most at load.segment_size; the transfer carries its masks up.
    small = stages.segmentation_load(config.params("load", side))
    if small is not None:
        futures.append(t.load.submit(store, path, small, side))
    image = futures[-1]
    fuse = config.params("fuse_segmentation", side)
    if fuse.k == 1 or fuse.labels:  # the whole image, or regions drawn by hand: nothing to segment
        regions = t.fuse_segmentation.submit(store, {}, image, fuse, side)
        return SideFutures(loaded, regions, [*futures, regions])
    feats_params = config.params("features", side)
    cluster = config.params("cluster_layer", side)
    feats = t.features.submit(store, image, feats_params, side, device)
    futures.append(feats)
    indicators = {}
    for layer in cluster.layers or ["rgb", *feats_params.layers]:
        clusters = t.cluster_layer.submit(store, layer, image if layer == "rgb" else feats, cluster, side)
        indicators[layer] = t.backprop_clusters.submit(store, layer, clusters, image,
                                                       config.params("backprop_clusters", side), feats_params,
                                                       side, device)
        futures += [clusters, indicators[layer]]
    regions = t.fuse_segmentation.submit(store, indicators, image, fuse, side)
    return SideFutures(loaded, regions, futures + [regions])


def normalise_colours(store: str, c: SideFutures, s: SideFutures, config: PipelineConfig) -> PrefectFuture:
    """color_normalize; region-aware (after both segmentations) when color_normalize.regions is set."""
    if config.color_normalize.regions:
        return t.color_normalize.submit(store, c.load, s.load, config.color_normalize, c.regions, s.regions,
                                        stages.colour_mapping(config.style_transfer.mapping))
    return t.color_normalize.submit(store, c.load, s.load, config.color_normalize)


def collect(futures: list[PrefectFuture]) -> tuple[list[StageOutcome], BaseException | None]:
    """Wait for every future; return the outcomes that finished and the first error, if any."""
    wait(futures)
    outcomes, error = [], None
    for future in futures:
        state = future.state
        if state.is_completed():
            outcomes.append(future.result())
        elif error is None and state.is_failed():
            try:
                future.result()
            except BaseException as exc:  # the task's own exception, re-raised by Prefect
                error = exc
    return outcomes, error


def current_run_id() -> str:
    return str(flow_run.id or uuid.uuid4())


@flow(name="partitioned-style-transfer", log_prints=True)
def partitioned_style_transfer(content: str, style: str, config: PipelineConfig = PipelineConfig(),
                               store: str | None = None, out: str | None = None) -> dict:
    """Stylise ``content`` with ``style``, region by region; every stage cached in ``store``."""
    started = time.time()
    store = resolve_store(store)
    artifact_store = ArtifactStore(store)
    device = preflight(artifact_store, {"content": content, "style": style}, config)

    c = segment_side(store, content, "content", config, device)
    s = segment_side(store, style, "style", config, device)
    normalised = normalise_colours(store, c, s, config)
    styled = t.style_transfer.submit(store, normalised, c.regions, s.regions, config.style_transfer,
                                     config.params("features", "content"), device)
    final = t.unnormalize.submit(store, styled, normalised, config.unnormalize)
    outcomes, error = collect([*c.all, *s.all, normalised, styled, final])

    run_id = current_run_id()
    inputs = {"content": content, "style": style}
    if error is not None:
        message = str(error) if isinstance(error, PstError) else f"{type(error).__name__}: {error}"
        artifact_store.write_run(run_record(run_id, "partitioned-style-transfer", inputs, config, outcomes,
                                            started, "failed", message))
        raise error
    if out:
        save_image(out, stages.output_image(artifact_store, outcomes[-1].key))
    record = run_record(run_id, "partitioned-style-transfer", inputs, config, outcomes, started, output=out)
    artifact_store.write_run(record)
    publish_run_summary(record, store)
    return {"run_id": run_id, "output": out, "unnormalize_key": outcomes[-1].key,
            "stages": [_public(o) for o in outcomes]}


@flow(name="segment-image", log_prints=True)
def segment_image(image: str, config: PipelineConfig = PipelineConfig(), store: str | None = None) -> dict:
    """Only the segmentation stages of one image (as the content side of a run)."""
    started = time.time()
    store = resolve_store(store)
    artifact_store = ArtifactStore(store)
    device = preflight(artifact_store, {"content": image}, config)
    side = segment_side(store, image, "content", config, device)
    outcomes, error = collect(side.all)
    run_id = current_run_id()
    if error is not None:
        artifact_store.write_run(run_record(run_id, "segment-image", {"image": image}, config, outcomes, started,
                                            "failed", str(error)))
        raise error
    record = run_record(run_id, "segment-image", {"image": image}, config, outcomes, started)
    artifact_store.write_run(record)
    publish_run_summary(record, store)
    return {"run_id": run_id, "regions_key": outcomes[-1].key, "stages": [_public(o) for o in outcomes]}


def _public(outcome: StageOutcome) -> dict:
    return {"stage": outcome.stage, "image": outcome.side or "pair", "layer": outcome.layer, "key": outcome.key,
            "status": outcome.status, "seconds": round(outcome.seconds, 4)}
