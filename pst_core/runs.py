"""Run records and the checks made before a run touches the store."""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any

from .config import SIDES, PipelineConfig
from .errors import ConfigError
from .imageio import read_image, working_shape
from .labels import check_fits, labels_role, read_labels
from .stages import StageOutcome
from .style import plan_transfer
from .store import ArtifactStore
from .vgg import LAYER_STRIDE, load_vgg, resolve_device

MIN_SIDE = 8  # pixels: smaller inputs carry no regions to find


def preflight(store: ArtifactStore, images: dict[str, str], config: PipelineConfig) -> str:
    """Everything that can be checked before a stage writes: the store is reachable, every image
    decodes, the weights load, the device exists. Returns the resolved device.
    Bad input therefore fails here, with the store unchanged."""
    store.check()
    return check_inputs(images, config)


def check_inputs(images: dict[str, str], config: PipelineConfig) -> str:
    """The part of ``preflight`` that does not touch the store."""
    device = resolve_device(config.device)
    drawn = {side: read_labels(path, config.params("load", side).max_pixels, labels_role(side))
             for side in SIDES if (path := config.params("fuse_segmentation", side).labels)}
    regions = {side: drawn[side].count if side in drawn else config.params("fuse_segmentation", side).k
               for side in SIDES}
    shapes = {}
    for side, path in images.items():
        load = config.params("load", side)
        pixels = read_image(path, load.max_pixels, role=f"{side} image")
        if min(pixels.shape[1:]) < MIN_SIDE:
            raise ConfigError(f"{side} image {path!r}: {pixels.shape[2]}x{pixels.shape[1]} is too small "
                              f"(at least {MIN_SIDE} px on each side)")
        shapes[side] = working_shape(pixels.shape[1], pixels.shape[2], load.size)
        if side in drawn:
            check_fits(drawn[side], pixels.shape[1:], labels_role(side))
        else:
            _check_cluster_sizes(side, working_shape(pixels.shape[1], pixels.shape[2], min(load.size, load.segment_size)),
                                 config)
        features = config.params("features", side)
        load_vgg(features.weights, features.seed, device)
    _check_mapping(config, regions)
    if set(shapes) == set(SIDES):  # the memory guard: refused here rather than killed by the kernel later
        carried = any(config.params("load", side).size > config.params("load", side).segment_size for side in SIDES)
        plan_transfer(shapes["content"], shapes["style"], regions["content"], regions["style"], config.style_transfer,
                      masks_carried=carried)
    if (config.color_normalize.regions and config.color_normalize.direction == "style_to_content"
            and config.unnormalize.palette == "style"):
        raise ConfigError("color_normalize.regions with direction=style_to_content cannot restore "
                          "unnormalize.palette=style (the inverse needs the style's geometry); use content_to_style")
    return device


def _check_cluster_sizes(side: str, shape: tuple[int, int], config: PipelineConfig) -> None:
    """Every clustered layer must have at least K pixels at the working size."""
    features = config.params("features", side)
    clusters = config.params("cluster_layer", side)
    fuse = config.params("fuse_segmentation", side)
    if fuse.k == 1:
        return  # nothing is clustered
    layers = clusters.layers if clusters.layers is not None else ["rgb", *features.layers]
    for layer in layers:
        if layer != "rgb" and layer not in features.layers:
            raise ConfigError(f"{side}.cluster_layer.layers: {layer!r} is not among features.layers "
                              f"{features.layers}")
        stride = 1 if layer == "rgb" else LAYER_STRIDE[layer]
        pixels = max(1, shape[0] // stride) * max(1, shape[1] // stride)
        if clusters.k > pixels:
            raise ConfigError(f"{side}.cluster_layer.k={clusters.k} is more than the {pixels} pixels of layer "
                              f"{layer} at load.size={config.params('load', side).size}")
    if fuse.k > shape[0] * shape[1]:
        raise ConfigError(f"{side}.fuse_segmentation.k={fuse.k} is more than the image's {shape[0] * shape[1]} pixels")


def _check_mapping(config: PipelineConfig, regions: dict[str, int]) -> None:
    """regions: how many regions each side will have (fuse_segmentation.k, or its label image's)."""
    mapping = config.style_transfer.mapping
    kc, ks = regions["content"], regions["style"]
    for c, s in mapping.items() if isinstance(mapping, dict) else ():
        if not (0 <= c < kc and 0 <= s < ks):
            raise ConfigError(f"style_transfer.mapping: {{{c}: {s}}} names a region that does not exist "
                              f"(content has regions 0..{kc - 1}, style 0..{ks - 1})")
    for c in config.style_transfer.regions:
        if not 0 <= c < kc:
            raise ConfigError(f"style_transfer.regions: content region {c} does not exist (0..{kc - 1})")


def run_record(run_id: str, flow: str, inputs: dict[str, Any], config: PipelineConfig,
               outcomes: list[StageOutcome], started: float, status: str = "ok", error: str | None = None,
               output: str | None = None) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "flow": flow,
        "started": started,
        "started_at": _dt.datetime.fromtimestamp(started, _dt.timezone.utc).isoformat(),
        "seconds": time.time() - started,
        "status": status,
        "error": error,
        "inputs": inputs,
        "output": output,
        "config": config.model_dump(mode="json"),
        "stages": [o.record() for o in outcomes],
    }


def stage_table(outcomes: list[StageOutcome]) -> str:
    """A plain-text table of stages, as the CLI prints it at the end of a run."""
    rows = [("stage", "image", "key", "status", "seconds")]
    for o in outcomes:
        name = f"{o.stage}[{o.layer}]" if o.layer else o.stage
        rows.append((name, o.side or "pair", o.key[:12], o.status, f"{o.seconds:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
