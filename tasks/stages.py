"""One thin Prefect task per pipeline stage. The maths and the store live in ``pst_core.stages``.

Tasks take and return store keys (``StageOutcome``), never arrays, so they run unchanged on threads,
processes or Dask workers. A stage found complete in the store returns a ``Completed`` state named
``Cached``, which the Prefect UI and API show. Prefect's own caching and result persistence are off:
the zarr store is the cache.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from pst_core import stages
from pst_core.config import (BackpropParams, ClusterLayerParams, ColorNormalizeParams, FeaturesParams, FuseParams,
                             LoadParams, StyleTransferParams, UnnormalizeParams)
from pst_core.stages import StageOutcome
from pst_core.store import ArtifactStore

PROGRESS = logging.getLogger("pst.progress")


def _finish(outcome: StageOutcome):
    if outcome.cached:
        return Completed(name="Cached", data=outcome, message=f"{outcome.stage} {outcome.key[:12]} is in the store")
    return outcome


def _progress(message: str) -> None:
    get_run_logger().info(message)
    PROGRESS.info(message)


stage_task = task(cache_policy=NO_CACHE, persist_result=False, retries=0)


@stage_task(name="load", task_run_name="load-{side}")
def load(store: str, path: str, params: LoadParams, side: str):
    return _finish(stages.load(ArtifactStore(store), path, params, side))


@stage_task(name="color_normalize")
def color_normalize(store: str, content: StageOutcome, style: StageOutcome, params: ColorNormalizeParams,
                    content_regions: StageOutcome | None = None, style_regions: StageOutcome | None = None,
                    mapping: Any = None, palette: str = "content", mapping_net: stages.MappingNet | None = None):
    regions = (content_regions.key, style_regions.key) if params.regions else None
    return _finish(stages.color_normalize(ArtifactStore(store), content.key, style.key, params, regions, mapping,
                                          palette, mapping_net))


@stage_task(name="features", task_run_name="features-{side}")
def features(store: str, image: StageOutcome, params: FeaturesParams, side: str, device: str):
    return _finish(stages.features(ArtifactStore(store), image.key, params, side, device))


@stage_task(name="cluster_layer", task_run_name="cluster_layer-{side}-{layer}")
def cluster_layer(store: str, layer: str, source: StageOutcome, params: ClusterLayerParams, side: str):
    return _finish(stages.cluster_layer(ArtifactStore(store), layer, source.key, params, side))


@stage_task(name="backprop_clusters", task_run_name="backprop_clusters-{side}-{layer}")
def backprop_clusters(store: str, layer: str, clusters: StageOutcome, image: StageOutcome, params: BackpropParams,
                      features_params: FeaturesParams, side: str, device: str):
    return _finish(stages.backprop_clusters(ArtifactStore(store), layer, clusters.key, image.key, params,
                                            features_params, side, device))


@stage_task(name="fuse_segmentation", task_run_name="fuse_segmentation-{side}")
def fuse_segmentation(store: str, indicators: dict[str, StageOutcome], image: StageOutcome, params: FuseParams,
                      side: str):
    keys = {layer: outcome.key for layer, outcome in indicators.items()}
    return _finish(stages.fuse_segmentation(ArtifactStore(store), keys, image.key, params, side))


@stage_task(name="style_transfer")
def style_transfer(store: str, normalised: StageOutcome, content_regions: StageOutcome, style_regions: StageOutcome,
                   params: StyleTransferParams, features_params: FeaturesParams, device: str):
    return _finish(stages.style_transfer(ArtifactStore(store), normalised.key, content_regions.key,
                                         style_regions.key, params, features_params, device, _progress))


@stage_task(name="unnormalize")
def unnormalize(store: str, styled: StageOutcome, normalised: StageOutcome, params: UnnormalizeParams):
    return _finish(stages.unnormalize(ArtifactStore(store), styled.key, normalised.key, params))
