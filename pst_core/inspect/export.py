"""``pst export``: a PNG of every intermediate of a run, named by stage, image and layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pst_core.inspect.render import heat_picture, labels_picture, mapping_pictures, to_pil
from pst_core.store.artifact_store import ArtifactStore


def _name(stage: dict, suffix: str) -> str:
    parts = [stage.get("side") or "pair", stage["stage"]]
    if stage.get("layer"):
        parts.append(stage["layer"])
    return "_".join(parts + [suffix]) + ".png"


def export_run(store: ArtifactStore, run: dict, out_dir: str) -> list[dict]:
    """Write the pictures of ``run`` under ``out_dir``; returns [{file, stage, side, layer, kind}]."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stages = run["stages"]
    images: dict[str, np.ndarray] = {}  # per side, the working-size image (segmentation may load a smaller one)
    for s in stages:
        if s["stage"] == "load":
            image = store.open("load", s["key"]).array("image")
            if s["side"] not in images or image.size > images[s["side"]].size:
                images[s["side"]] = image
    written: list[dict] = []

    def save(picture, stage: dict, suffix: str, kind: str) -> None:
        name = _name(stage, suffix)
        picture.save(folder / name)
        written.append({"file": name, "stage": stage["stage"], "side": stage.get("side"),
                        "layer": stage.get("layer"), "kind": kind})

    regions = {}
    for stage in stages:
        entry = store.open(stage["stage"], stage["key"])
        kind = stage["stage"]
        if kind == "load":
            image = entry.array("image")
            working = image.shape == images[stage["side"]].shape
            save(to_pil(image), stage, "image" if working else "segmentation_image", "image")
        elif kind == "color_normalize":
            save(to_pil(entry.array("content")), {**stage, "side": "content"}, "normalised", "image")
            save(to_pil(entry.array("style")), {**stage, "side": "style"}, "normalised", "image")
        elif kind in ("cluster_layer", "backprop_clusters", "fuse_segmentation"):
            soft = entry.array({"cluster_layer": "probs", "backprop_clusters": "indicators",
                                "fuse_segmentation": "regions"}[kind])
            image = images[stage["side"]]
            size = (image.shape[2], image.shape[1])
            save(labels_picture(soft, size), stage, "labels", "labels")
            for k in range(soft.shape[0]):
                save(heat_picture(soft[k], image), stage, f"heat{k}", "heat")
            if kind == "fuse_segmentation":
                regions[stage["side"]] = soft
        elif kind == "style_transfer":
            save(to_pil(entry.array("image")), stage, "image", "image")
            if "snapshots" in entry.names():
                for it, snap in zip(entry.array("snapshot_iterations"), entry.array("snapshots")):
                    save(to_pil(snap), stage, f"snapshot{int(it):05d}", "snapshot")
            mapping = {int(c): int(s) for c, s in entry.attrs.get("mapping", {}).items()}
            if "content" in regions and "style" in regions:
                content_pic, style_pic = mapping_pictures(regions["content"], regions["style"], mapping)
                save(content_pic, {**stage, "side": "content"}, "mapping", "mapping")
                save(style_pic, {**stage, "side": "style"}, "mapping", "mapping")
        elif kind == "unnormalize":
            save(to_pil(entry.array("image")), stage, "output", "output")
    return written


def label_count(path: str | Path) -> int:
    """How many distinct colours (labels) a labels picture shows."""
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    return len(np.unique(pixels, axis=0))
