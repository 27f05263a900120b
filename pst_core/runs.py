"""Run records and the checks made before a run touches the store."""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any

from .config import PipelineConfig
from .errors import ConfigError
from .imageio import read_image
from .stages import StageOutcome
from .store import ArtifactStore
from .vgg import load_vgg, resolve_device


def preflight(store: ArtifactStore, images: dict[str, str], config: PipelineConfig) -> str:
    """Everything that can be checked before a stage writes: the store is reachable, every image
    decodes, the weights load, the device exists. Returns the resolved device.
    Bad input therefore fails here, with the store unchanged."""
    store.check()
    return check_inputs(images, config)


def check_inputs(images: dict[str, str], config: PipelineConfig) -> str:
    """The part of ``preflight`` that does not touch the store."""
    for side, path in images.items():
        read_image(path, config.params("load", side).max_pixels, role=f"{side} image")
    device = resolve_device(config.device)
    for side in images:
        features = config.params("features", side)
        clusters = config.params("cluster_layer", side)
        missing = [layer for layer in (clusters.layers or []) if layer != "rgb" and layer not in features.layers]
        if missing:
            raise ConfigError(f"{side}.cluster_layer.layers: {missing[0]!r} is not among features.layers "
                              f"{features.layers}")
        load_vgg(features.weights, features.seed, device)
    return device


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
