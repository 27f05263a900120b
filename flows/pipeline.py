"""The pair flow and the segmentation flow, as the pipeline's diagram:

    content ─ load ─┬─ features ─ cluster_layer* ─ backprop_clusters* ─ fuse_segmentation ─┐
                    └─────────────┐                                                        │
                                  ├─ color_normalize ─ style_transfer ─ unnormalize ─ out  │
                    ┌─────────────┘                                                        │
    style ── load ──┴─ features ─ cluster_layer* ─ backprop_clusters* ─ fuse_segmentation ─┘

A flow first plans every stage's key (``pst_core.pipeline.plan``; the inputs are checked before
anything is written), then submits one task run per stage the store lacks, each after the task runs
of the stages it reads; one ``reused`` task run stands for the stages found in the store, and the
run's summary artifact lists every stage. The bookkeeping is ``flows.runtime``'s.
"""

from __future__ import annotations

from prefect import flow

from pst_core.config.schema import PipelineConfig

from .runtime import Run


@flow(name="partitioned-style-transfer", log_prints=True)
def partitioned_style_transfer(content: str, style: str, config: PipelineConfig = PipelineConfig(),
                               store: str | None = None, out: str | None = None) -> dict:
    """Stylise ``content`` with ``style``, region by region; every stage cached in ``store``."""
    run = Run("partitioned-style-transfer", {"content": content, "style": style}, config, store)
    run.stages("content")  # load ─ features ─ cluster_layer* ─ backprop_clusters* ─ fuse_segmentation
    run.stages("style")  # the same for the style image
    run.stages("pair")  # color_normalize ─ style_transfer ─ unnormalize
    return run.finish(out)  # the output image, the run's record, its summary artifact


@flow(name="segment-image", log_prints=True)
def segment_image(image: str, config: PipelineConfig = PipelineConfig(), store: str | None = None) -> dict:
    """Only the segmentation stages of one image (as the content side of a run)."""
    run = Run("segment-image", {"content": image}, config, store, inputs={"image": image})
    run.stages("content")  # load ─ features ─ cluster_layer* ─ backprop_clusters* ─ fuse_segmentation
    return run.finish()
