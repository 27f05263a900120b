"""The pipeline's stages: each reads its inputs from the store by key, computes, and publishes one entry.

Every stage function has the same shape: build the stage's key from its own parameters and its
inputs' keys; if the store holds a complete entry under that key, return at once ("cached");
otherwise compute, write the entry atomically and return ("computed"). Inputs and outputs are store
keys, never large arrays, so the same functions run in a thread, a process or a Dask worker.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch

from . import __version__
from .color import ColorTransform, normalize_pair, resolve, restore_palette
from .config import (BackpropParams, ClusterLayerParams, ColorNormalizeParams, FeaturesParams, FuseParams,
                     LoadParams, StyleTransferParams, UnnormalizeParams)
from .imageio import pixel_digest, read_image, resize, working_shape
from .mapping import map_regions
from .store import ArrayOut, ArtifactStore, key_digest
from .vgg import load_vgg, reflected_features, strict_cuda_numerics, weights_fingerprint

# Bump a stage's version when its algorithm changes: its entries (and everything downstream) recompute.
STAGE_VERSIONS = {
    "load": 1,
    "color_normalize": 3,  # 2: covariance floor and bounded gain; 3: decides the region pairs
    "features": 2,  # 2: the image mirrored outwards before the network (no border responses)
    "cluster_layer": 2,  # 2: VGG layers clustered by their local energy (texture window)
    "backprop_clusters": 3,  # 3: the head pools activations into local energy before it applies
    "fuse_segmentation": 3,  # 3: per-image confidence weights of layers and colour
    "style_transfer": 3,  # 2: output spans the normalised inputs' range; 3: averaged iterates, bicubic upscaling
    "unnormalize": 1,
}

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class StageOutcome:
    """What a stage hands downstream: where its output lives, and how it got there."""

    stage: str
    side: str | None
    key: str
    status: str  # "computed" | "cached"
    seconds: float
    layer: str | None = None

    @property
    def cached(self) -> bool:
        return self.status == "cached"

    def record(self) -> dict[str, Any]:
        return asdict(self)


def stage_key(stage: str, params: dict[str, Any], inputs: dict[str, str]) -> str:
    return key_digest({"stage": stage, "version": STAGE_VERSIONS[stage], "params": params, "inputs": inputs})


def _execute(store: ArtifactStore, stage: str, params: dict[str, Any], inputs: dict[str, str],
             compute: Callable[[], tuple[dict[str, ArrayOut], dict[str, Any]]],
             side: str | None = None, layer: str | None = None) -> StageOutcome:
    start = time.perf_counter()
    key = stage_key(stage, params, inputs)
    if store.has(stage, key):
        return StageOutcome(stage, side, key, "cached", time.perf_counter() - start, layer)
    arrays, extra = compute()
    seconds = time.perf_counter() - start
    attrs = {
        "stage": stage, "key": key, "params": params, "inputs": inputs, "side": side, "layer": layer,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(), "seconds": seconds,
        "stage_version": STAGE_VERSIONS[stage], "pst_version": __version__, **extra,
    }
    store.write(stage, key, arrays, attrs)
    return StageOutcome(stage, side, key, "computed", seconds, layer)


def _tensor(array: np.ndarray, device: str = "cpu") -> torch.Tensor:
    if device != "cpu":
        strict_cuda_numerics()  # in whichever process (a Dask worker, say) the stage runs
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)


def _image(store: ArtifactStore, key: str) -> np.ndarray:
    return store.open("load", key).array("image")


def _dims(prefix: str, ndim: int) -> tuple[str, ...]:
    return tuple(f"{prefix}_{i}" for i in range(ndim))


def _small_arrays(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, ArrayOut]:
    return {f"{prefix}{name}": ArrayOut(np.asarray(a), _dims(f"{prefix}{name}", np.ndim(a)))
            for name, a in arrays.items()}


def _read_prefixed(entry, prefix: str) -> dict[str, np.ndarray]:
    return {name[len(prefix):]: entry.array(name) for name in entry.names() if name.startswith(prefix)}


# -- 1. load ---------------------------------------------------------------------------------------
def load(store: ArtifactStore, path: str, params: LoadParams, side: str = "content") -> StageOutcome:
    pixels = read_image(path, params.max_pixels, role=f"{side} image")

    def compute():
        shape = working_shape(pixels.shape[1], pixels.shape[2], params.size)
        image = resize(pixels, shape)
        return ({"image": ArrayOut(image, ("channel", "y", "x"))},
                {"source": str(path), "source_shape": list(pixels.shape[1:])})

    return _execute(store, "load", params.model_dump(), {"pixels": pixel_digest(pixels)}, compute, side)


# -- 2. color_normalize ----------------------------------------------------------------------------
@dataclass(frozen=True)
class MappingNet:
    """The network ``mapping=auto`` compares regions with: the transfer's (weights, pooling) at ``layer``."""

    weights: str
    seed: int
    pooling: str
    layer: str

    def key(self) -> dict[str, Any]:
        return {"weights": weights_fingerprint(self.weights), "seed": self.seed, "pooling": self.pooling,
                "layer": self.layer}


def color_normalize(store: ArtifactStore, content_key: str, style_key: str, params: ColorNormalizeParams,
                    regions: tuple[str, str] | None = None, mapping: Any = None, palette: str = "content",
                    mapping_net: MappingNet | None = None) -> StageOutcome:
    """Fit and apply the colour transform (``auto`` method and direction resolved for ``palette``).

    With ``params.regions``, ``regions`` holds the content and style fuse_segmentation keys and
    ``mapping`` the transfer's mapping (a dict, "overlap" or "auto"). The region pairs are decided
    here, before the transfer (``auto`` compares the regions' features, through ``mapping_net``, on the
    globally normalised images), stored in the entry's attrs, and the transfer takes them from there:
    colours and styles are paired alike."""
    method, direction = resolve(params.method, params.direction, palette)
    inputs = {"content": content_key, "style": style_key}
    key_params = {**params.model_dump(), "method": method, "direction": direction}
    if params.regions:
        inputs.update(content_regions=regions[0], style_regions=regions[1])
        key_params["mapping"] = {str(c): s for c, s in mapping.items()} if isinstance(mapping, dict) else mapping
        if mapping == "auto":
            key_params["mapping_net"] = mapping_net.key()

    def compute():
        content, style = _image(store, content_key), _image(store, style_key)
        if not params.regions:
            normalised = normalize_pair(content, style, method, direction, max_gain=params.max_gain)
            return _normalised_arrays(*normalised), {"transform": normalised[2].to_attrs()}
        masks = read_regions(store, regions[0]), read_regions(store, regions[1])
        pairs = mapping
        if mapping == "auto":
            pairs = _auto_mapping(content, style, *masks, method, direction, params.max_gain, mapping_net)
        normalised = normalize_pair(content, style, method, direction, max_gain=params.max_gain,
                                    content_masks=masks[0], style_masks=masks[1], mapping=pairs)
        pairs = map_regions(masks[0], masks[1], pairs)  # overlap and partial dicts, filled in
        return _normalised_arrays(*normalised), {"transform": normalised[2].to_attrs(),
                                                 "mapping": {str(c): t for c, t in pairs.items()}}

    return _execute(store, "color_normalize", key_params, inputs, compute)


def _normalised_arrays(content: np.ndarray, style: np.ndarray, transform: ColorTransform) -> dict[str, ArrayOut]:
    return {"content": ArrayOut(content, ("channel", "y", "x")),
            "style": ArrayOut(style, ("channel", "style_y", "style_x")),
            **_small_arrays("transform_", transform.to_arrays())}


def _auto_mapping(content, style, content_masks, style_masks, method, direction, max_gain, net: MappingNet):
    """mapping=auto, decided on the globally normalised images (so colour differences do not decide it)."""
    if len(style_masks) == 1:
        return {c: 0 for c in range(len(content_masks))}
    content_n, style_n, _ = normalize_pair(content, style, method, direction, max_gain=max_gain)
    vgg = load_vgg(net.weights, net.seed).with_pooling(net.pooling)
    with torch.no_grad():
        features = [vgg(_tensor(image)[None], [net.layer])[net.layer][0] for image in (content_n, style_n)]
    return map_regions(content_masks, style_masks, "auto", content_features=features[0], style_features=features[1])


def read_transform(store: ArtifactStore, color_key: str) -> ColorTransform:
    entry = store.open("color_normalize", color_key)
    return ColorTransform.from_stored(_read_prefixed(entry, "transform_"), entry.attrs["transform"])


# -- 3. features -----------------------------------------------------------------------------------
def _features_key_params(params: FeaturesParams) -> dict[str, Any]:
    key = {"weights": weights_fingerprint(params.weights), "layers": params.layers}
    if params.weights == "random":
        key["seed"] = params.seed
    return key


def features(store: ArtifactStore, image_key: str, params: FeaturesParams, side: str = "content",
             device: str = "cpu") -> StageOutcome:
    def compute():
        net = load_vgg(params.weights, params.seed, device)
        with torch.no_grad():
            acts = reflected_features(net, _tensor(_image(store, image_key), device)[None], params.layers)
        arrays = {}
        for layer, act in acts.items():
            data = act[0].float().cpu().numpy()
            # float16 halves the store; activations are standardised before clustering anyway.
            if np.abs(data).max() < 6e4:
                data = data.astype(np.float16)
            arrays[layer] = ArrayOut(data, (f"{layer}_channel", f"{layer}_y", f"{layer}_x"))
        return arrays, {"weights_source": params.weights, "device": device}

    return _execute(store, "features", _features_key_params(params), {"image": image_key}, compute, side)


# -- 4. cluster_layer ------------------------------------------------------------------------------
def _cluster_key_params(params: ClusterLayerParams | FuseParams, layer: str) -> dict[str, Any]:
    return {**params.model_dump(exclude={"layers"}), "layer": layer}


def cluster_layer(store: ArtifactStore, layer: str, source_key: str, params: ClusterLayerParams,
                  side: str = "content") -> StageOutcome:
    """Cluster one layer's activations (``source_key`` = features entry), or the colour channels
    (layer ``rgb``, ``source_key`` = load entry)."""
    from .backprop import colour_features
    from .segmentation import cluster_features

    def compute():
        if layer == "rgb":
            feats = colour_features(_tensor(_image(store, source_key)))
        else:
            feats = _tensor(store.open("features", source_key).array(layer))
        head, probs, history = cluster_features(feats, layer, params)
        arrays = {"probs": ArrayOut(probs.detach().numpy(), ("cluster", "y", "x")),
                  "loss": ArrayOut(np.asarray(history, np.float32), ("iteration",)),
                  **_small_arrays("head_", head.to_arrays())}
        return arrays, {}

    return _execute(store, "cluster_layer", _cluster_key_params(params, layer), {"source": source_key},
                    compute, side, layer)


# -- 5. backprop_clusters --------------------------------------------------------------------------
def backprop_clusters(store: ArtifactStore, layer: str, cluster_key: str, image_key: str,
                      params: BackpropParams, features_params: FeaturesParams, side: str = "content",
                      device: str = "cpu") -> StageOutcome:
    from .backprop import backprop_indicators
    from .maxent import ClusterHead

    def compute():
        clusters = store.open("cluster_layer", cluster_key)
        head = ClusterHead.from_arrays(_read_prefixed(clusters, "head_"))
        # Only vjp runs the network: rgb needs none, and upsample reads the clustered activations.
        net = load_vgg(features_params.weights, features_params.seed, device) if params.method == "vjp" else None
        stored = None
        if params.method == "upsample" and layer != "rgb":
            stored = _tensor(store.open("features", clusters.attrs["inputs"]["source"]).array(layer), device)
        indicators = backprop_indicators(_tensor(_image(store, image_key), device), net, layer, head,
                                         method=params.method, blur=params.blur, features=stored)
        return {"indicators": ArrayOut(indicators.detach().cpu().numpy(), ("cluster", "y", "x"))}, {"device": device}

    return _execute(store, "backprop_clusters", {**params.model_dump(), "layer": layer},
                    {"clusters": cluster_key, "image": image_key}, compute, side, layer)


# -- 6. fuse_segmentation --------------------------------------------------------------------------
def fuse_segmentation(store: ArtifactStore, indicator_keys: dict[str, str], image_key: str, params: FuseParams,
                      side: str = "content") -> StageOutcome:
    """Fuse all layers' indicators into ``params.k`` soft regions. With k = 1 the single region is the
    whole image, and with ``params.labels`` the regions are the label image's: no clustering (and no
    upstream segmentation) is needed."""
    from .fusion import fuse_indicators

    if params.labels:
        return _regions_from_labels(store, image_key, params.labels, side)

    def compute():
        height, width = _image(store, image_key).shape[1:]
        if params.k == 1:
            regions = np.ones((1, height, width), np.float32)
            return _regions_arrays(regions), {}
        indicators = {layer: _tensor(store.open("backprop_clusters", key).array("indicators"))
                      for layer, key in indicator_keys.items()}
        head, regions = fuse_indicators(indicators, image=_tensor(_image(store, image_key)),
                                        **params.model_dump(exclude={"labels"}))
        return {**_regions_arrays(regions.detach().numpy()), **_small_arrays("head_", head.to_arrays())}, {}

    inputs = {"image": image_key}
    if params.k > 1:
        inputs.update({f"indicators:{k}": v for k, v in indicator_keys.items()})
    key_params = {"k": 1} if params.k == 1 else params.model_dump()
    return _execute(store, "fuse_segmentation", key_params, inputs, compute, side)


def _regions_from_labels(store: ArtifactStore, image_key: str, path: str, side: str) -> StageOutcome:
    from .labels import check_fits, label_masks, labels_role, read_labels

    role = labels_role(side)
    labels = read_labels(path, LoadParams().max_pixels, role)

    def compute():
        loaded = store.open("load", image_key)
        check_fits(labels, tuple(loaded.attrs["source_shape"]), role)
        regions = label_masks(labels, loaded.array("image").shape[1:])
        return _regions_arrays(regions), {"labels_source": str(path)}

    # Keyed by the label map itself: renaming the file re-runs nothing, redrawing it re-runs the transfer.
    return _execute(store, "fuse_segmentation", {"labels": labels.digest()}, {"image": image_key}, compute, side)


def _regions_arrays(regions: np.ndarray) -> dict[str, ArrayOut]:
    labels = regions.argmax(0).astype(np.uint8)
    return {"regions": ArrayOut(regions.astype(np.float32), ("region", "y", "x")),
            "labels": ArrayOut(labels, ("y", "x"))}


def read_regions(store: ArtifactStore, fuse_key: str) -> np.ndarray:
    return store.open("fuse_segmentation", fuse_key).array("regions")


# -- 7. style_transfer -----------------------------------------------------------------------------
def style_transfer(store: ArtifactStore, color_key: str, content_regions_key: str, style_regions_key: str,
                   params: StyleTransferParams, features_params: FeaturesParams, device: str = "cpu",
                   progress: Progress = _quiet) -> StageOutcome:
    from .style import transfer

    def compute():
        normalised = store.open("color_normalize", color_key)
        net = load_vgg(features_params.weights, features_params.seed, device)
        snapshots: list[tuple[int, np.ndarray]] = []
        # A region-aware colour stage decided the region pairs: style them as they were coloured.
        pairs = normalised.attrs.get("mapping")
        run_params = params if pairs is None else params.model_copy(
            update={"mapping": {int(c): t for c, t in pairs.items()}})
        result = transfer(normalised.array("content"), normalised.array("style"),
                          read_regions(store, content_regions_key), read_regions(store, style_regions_key),
                          net, run_params, device=device, progress=_progress_printer(params, progress),
                          snapshot=lambda it, img: snapshots.append((it, img)))
        arrays = {"image": ArrayOut(result.image, ("channel", "y", "x"))}
        if result.snapshots:
            arrays["snapshots"] = ArrayOut(np.stack([img for _, img in result.snapshots]),
                                           ("snapshot", "channel", "y", "x"))
            arrays["snapshot_iterations"] = ArrayOut(np.array([it for it, _ in result.snapshots]), ("snapshot",))
        for column in ("total", "content", "style", "tv"):
            values = [h.get(column, np.nan) for h in result.history]
            arrays[f"loss_{column}"] = ArrayOut(np.asarray(values, np.float64), ("iteration",))
        return arrays, {"mapping": {str(c): s for c, s in result.mapping.items()}, "device": device}

    inputs = {"normalised": color_key, "content_regions": content_regions_key, "style_regions": style_regions_key}
    return _execute(store, "style_transfer", params.model_dump(mode="json"), inputs, compute)


def _progress_printer(params: StyleTransferParams, progress: Progress) -> Callable[[dict], None]:
    every = max(1, params.iterations // 10)
    last = {"time": time.perf_counter(), "iteration": 0}

    def report(step: dict) -> None:
        iteration = step.get("iteration", 0)
        if iteration % every == 0:
            now = time.perf_counter()
            rate = (now - last["time"]) / max(1, iteration - last["iteration"])
            last.update(time=now, iteration=iteration)
            losses = " ".join(f"{k}={step[k]:.4g}" for k in ("total", "content", "style") if k in step)
            progress(f"style_transfer scale {step.get('scale', 0)} iteration {iteration}/{step.get('of', '?')}: {losses} "
                     f"({rate:.2f} s/it)")

    return report


# -- 8. unnormalize --------------------------------------------------------------------------------
def unnormalize(store: ArtifactStore, styled_key: str, color_key: str, params: UnnormalizeParams) -> StageOutcome:
    def compute():
        styled = store.open("style_transfer", styled_key).array("image")
        final = restore_palette(styled, read_transform(store, color_key), params.palette)
        return {"image": ArrayOut(final.astype(np.float32), ("channel", "y", "x"))}, {}

    return _execute(store, "unnormalize", params.model_dump(), {"styled": styled_key, "normalised": color_key},
                    compute)


def output_image(store: ArtifactStore, unnormalize_key: str) -> np.ndarray:
    return store.open("unnormalize", unnormalize_key).array("image")
