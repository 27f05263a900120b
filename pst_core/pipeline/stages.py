"""The pipeline's stages: each reads its inputs from the store by key, computes, and publishes one entry.

Every stage function has the same shape: build the stage's key from its own parameters and its
inputs' keys (with ``pst_core.pipeline.plan``'s ``*_spec`` functions, which plan a run's keys before
it runs); if the store holds a complete entry under that key, return at once ("cached"); otherwise
compute, write the entry atomically and return ("computed"). Inputs and outputs are store keys, never
large arrays, so the same functions run in a thread, a process or a Dask worker. The computing itself
is done by each stage's own module (``MATHS``).
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any, Callable

import numpy as np
import torch

from pst_core import __version__
from pst_core.color.normalize import ColorTransform, normalize_pair, resolve, restore_palette
from pst_core.color.spaces import srgb_to_lab
from pst_core.config.schema import (STAGE_VERSIONS, BackpropParams, ClusterLayerParams, ColorNormalizeParams,
                                    FeaturesParams, FuseParams, LoadParams, StyleTransferParams, UnnormalizeParams)
from pst_core.errors import InputError, describe_error
from pst_core.features import load_vgg, reflected_features, strict_cuda_numerics, weights_id
from pst_core.load import pixel_digest, read_image, resize, working_shape
from pst_core.pipeline.plan import (KeySpec, MappingNet, StageOutcome, Step, backprop_clusters_spec, cluster_layer_spec,
                                    color_normalize_spec, features_spec, fuse_segmentation_spec, load_spec,
                                    style_transfer_spec, unnormalize_spec)
from pst_core.progress import TransferProgress, report_progress
from pst_core.segmentation.backprop_clusters import backprop_indicators
from pst_core.segmentation.cluster_layer import ClusterHead, cluster_features
from pst_core.segmentation.fuse_segmentation import fuse_indicators
from pst_core.segmentation.labels import check_fits, label_masks, labels_role, read_labels
from pst_core.segmentation.masks import regions_at_size
from pst_core.store.artifact_store import ArrayOut, ArtifactStore
from pst_core.style.mapping import map_regions
from pst_core.style.style_transfer import transfer
from pst_core.style.tiles import forward

# Where each stage's maths lives. The functions below read the stage's inputs from the store, call
# it, and write the entry; the graph of stages is ``pst_core.pipeline.plan``'s.
MATHS = {
    "load": "pst_core.load",  # decode any image file to RGB float, resize, digest the pixels
    "features": "pst_core.features",  # VGG19 activations (the image mirrored outwards at its borders)
    "cluster_layer": "pst_core.segmentation.cluster_layer",  # max-entropy clustering of one layer
    "backprop_clusters": "pst_core.segmentation.backprop_clusters",  # a layer's clusters at image resolution
    "fuse_segmentation": "pst_core.segmentation.fuse_segmentation",  # all layers fused into K regions
    "color_normalize": "pst_core.color.normalize",  # colour statistics matched, per region pair
    "style_transfer": "pst_core.style.style_transfer",  # the partitioned transfer (losses, tiles, memory)
    "unnormalize": "pst_core.color.normalize",  # the colour transform's inverse
}


def _execute(store: ArtifactStore, spec: KeySpec, compute: Callable[[], tuple[dict[str, ArrayOut], dict[str, Any]]],
             side: str | None = None, layer: str | None = None) -> StageOutcome:
    start = time.perf_counter()
    key = spec.key
    if store.has(spec.stage, key):
        return StageOutcome(spec.stage, side, key, "cached", time.perf_counter() - start, layer)
    arrays, extra = compute()
    seconds = time.perf_counter() - start
    attrs = {
        "stage": spec.stage, "key": key, "params": spec.params, "inputs": spec.inputs, "side": side, "layer": layer,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(), "seconds": seconds,
        "stage_version": STAGE_VERSIONS[spec.stage], "pst_version": __version__, **extra,
    }
    store.write(spec.stage, key, arrays, attrs)
    return StageOutcome(spec.stage, side, key, "computed", seconds, layer, time.perf_counter() - start - seconds)


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

    return _execute(store, load_spec(params, pixel_digest(pixels)), compute, side)


# -- 2. color_normalize ----------------------------------------------------------------------------
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
    net_weights = weights_id(mapping_net.weights, store.file_memo) if mapping_net else None
    spec = color_normalize_spec(params, content_key, style_key, regions, mapping, palette, mapping_net, net_weights)

    def compute():
        content, style = _image(store, content_key), _image(store, style_key)
        if not params.regions:
            normalised = normalize_pair(content, style, method, direction, max_gain=params.max_gain)
            return _normalised_arrays(*normalised), {"transform": normalised[2].to_attrs()}
        masks = read_regions(store, regions[0], content.shape[1:]), read_regions(store, regions[1], style.shape[1:])
        pairs = mapping
        if mapping == "auto":
            pairs = _auto_mapping(content, style, *masks, method, direction, params.max_gain, mapping_net)
        normalised = normalize_pair(content, style, method, direction, max_gain=params.max_gain,
                                    content_masks=masks[0], style_masks=masks[1], mapping=pairs)
        pairs = map_regions(masks[0], masks[1], pairs)  # overlap and partial dicts, filled in
        return _normalised_arrays(*normalised), {"transform": normalised[2].to_attrs(),
                                                 "mapping": {str(c): t for c, t in pairs.items()}}

    return _execute(store, spec, compute)


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
    # In tiles at large sizes: the same activations, within bounded memory.
    features = [forward(vgg, _tensor(image)[None], [net.layer])[net.layer][0] for image in (content_n, style_n)]
    return map_regions(content_masks, style_masks, "auto", content_features=features[0], style_features=features[1])


def read_transform(store: ArtifactStore, color_key: str) -> ColorTransform:
    entry = store.open("color_normalize", color_key)
    return ColorTransform.from_stored(_read_prefixed(entry, "transform_"), entry.attrs["transform"])


# -- 3. features -----------------------------------------------------------------------------------
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

    return _execute(store, features_spec(params, image_key, weights_id(params.weights, store.file_memo)), compute,
                    side)


# -- 4. cluster_layer ------------------------------------------------------------------------------
def cluster_layer(store: ArtifactStore, layer: str, source_key: str, params: ClusterLayerParams,
                  side: str = "content") -> StageOutcome:
    """Cluster one layer's activations (``source_key`` = features entry), or the colour channels
    (layer ``rgb``, ``source_key`` = load entry)."""

    def compute():
        if layer == "rgb":
            feats = srgb_to_lab(_tensor(_image(store, source_key)))
        else:
            feats = _tensor(store.open("features", source_key).array(layer))
        head, probs, history = cluster_features(feats, layer, params)
        arrays = {"probs": ArrayOut(probs.detach().numpy(), ("cluster", "y", "x")),
                  "loss": ArrayOut(np.asarray(history, np.float32), ("iteration",)),
                  **_small_arrays("head_", head.to_arrays())}
        return arrays, {}

    return _execute(store, cluster_layer_spec(params, layer, source_key), compute, side, layer)


# -- 5. backprop_clusters --------------------------------------------------------------------------
def backprop_clusters(store: ArtifactStore, layer: str, cluster_key: str, image_key: str,
                      params: BackpropParams, features_params: FeaturesParams, side: str = "content",
                      device: str = "cpu") -> StageOutcome:
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

    return _execute(store, backprop_clusters_spec(params, layer, cluster_key, image_key), compute, side, layer)


# -- 6. fuse_segmentation --------------------------------------------------------------------------
def fuse_segmentation(store: ArtifactStore, indicator_keys: dict[str, str], image_key: str, params: FuseParams,
                      side: str = "content") -> StageOutcome:
    """Fuse all layers' indicators into ``params.k`` soft regions. With k = 1 the single region is the
    whole image, and with ``params.labels`` the regions are the label image's: no clustering (and no
    upstream segmentation) is needed."""
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

    return _execute(store, fuse_segmentation_spec(params, indicator_keys, image_key), compute, side)


def _regions_from_labels(store: ArtifactStore, image_key: str, path: str, side: str) -> StageOutcome:
    role = labels_role(side)
    labels = read_labels(path, LoadParams().max_pixels, role)

    def compute():
        loaded = store.open("load", image_key)
        check_fits(labels, tuple(loaded.attrs["source_shape"]), role)
        regions = label_masks(labels, loaded.array("image").shape[1:])
        return _regions_arrays(regions), {"labels_source": str(path)}

    return _execute(store, fuse_segmentation_spec(FuseParams(), {}, image_key, labels.digest()), compute, side)


def _regions_arrays(regions: np.ndarray) -> dict[str, ArrayOut]:
    labels = regions.argmax(0).astype(np.uint8)
    return {"regions": ArrayOut(regions.astype(np.float32), ("region", "y", "x")),
            "labels": ArrayOut(labels, ("y", "x"))}


def read_regions(store: ArtifactStore, fuse_key: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """The soft regions (K, h, w), carried up to ``shape`` when given (segmentation may work smaller)."""
    regions = store.open("fuse_segmentation", fuse_key).array("regions")
    return regions if shape is None else regions_at_size(regions, tuple(shape))


# -- 7. style_transfer -----------------------------------------------------------------------------
def style_transfer(store: ArtifactStore, color_key: str, content_regions_key: str, style_regions_key: str,
                   params: StyleTransferParams, features_params: FeaturesParams, device: str = "cpu",
                   progress: Callable[[TransferProgress], None] | None = None) -> StageOutcome:
    """``progress(record)`` each iteration; this process's progress listeners (``pst_core.progress``) get
    the same records."""

    def report(record: TransferProgress) -> None:
        report_progress(record)
        if progress:
            progress(record)

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
                          net, run_params, device=device, progress=report,
                          snapshot=lambda it, img: snapshots.append((it, img)))
        arrays = {"image": ArrayOut(result.image, ("channel", "y", "x"))}
        if result.snapshots:
            arrays["snapshots"] = ArrayOut(np.stack([img for _, img in result.snapshots]),
                                           ("snapshot", "channel", "y", "x"))
            arrays["snapshot_iterations"] = ArrayOut(np.array([it for it, _ in result.snapshots]), ("snapshot",))
        for column in ("total", "content", "style", "tv"):
            values = [getattr(h, column) for h in result.history]
            arrays[f"loss_{column}"] = ArrayOut(np.asarray(values, np.float64), ("iteration",))
        return arrays, {"mapping": {str(c): s for c, s in result.mapping.items()}, "device": device}

    spec = style_transfer_spec(params, color_key, content_regions_key, style_regions_key)
    return _execute(store, spec, compute)


# -- 8. unnormalize --------------------------------------------------------------------------------
def unnormalize(store: ArtifactStore, styled_key: str, color_key: str, params: UnnormalizeParams) -> StageOutcome:
    def compute():
        styled = store.open("style_transfer", styled_key).array("image")
        final = restore_palette(styled, read_transform(store, color_key), params.palette)
        return {"image": ArrayOut(final.astype(np.float32), ("channel", "y", "x"))}, {}

    return _execute(store, unnormalize_spec(params, styled_key, color_key), compute)


def output_image(store: ArtifactStore, unnormalize_key: str) -> np.ndarray:
    return store.open("unnormalize", unnormalize_key).array("image")


# -- a planned step --------------------------------------------------------------------------------
STAGES: dict[str, Callable[..., StageOutcome]] = {
    "load": load, "color_normalize": color_normalize, "features": features, "cluster_layer": cluster_layer,
    "backprop_clusters": backprop_clusters, "fuse_segmentation": fuse_segmentation,
    "style_transfer": style_transfer, "unnormalize": unnormalize,
}
ON_DEVICE = ("features", "backprop_clusters", "style_transfer")


def run_step(store: ArtifactStore, step: Step, device: str = "cpu",
             progress: Callable[[TransferProgress], None] | None = None) -> StageOutcome:
    """Run one planned step (``pst_core.pipeline.plan``). Its key must come out as planned: if it does not, an input
    changed after the run was planned (an image file rewritten), and what is downstream would read
    entries that do not exist."""
    kwargs = dict(step.args)
    if step.stage in ON_DEVICE:
        kwargs["device"] = device
    if step.stage == "style_transfer" and progress:
        kwargs["progress"] = progress
    outcome = STAGES[step.stage](store, **kwargs)
    if outcome.key != step.key:
        where = f" ({step.args['path']})" if step.stage == "load" else ""
        raise InputError(f"{step.name}{where}: its input changed while the run was planned; run it again")
    return outcome


def run_steps(store: ArtifactStore, steps: list[Step], device: str = "cpu") -> list[StageOutcome]:
    """Run planned steps one after the other (each reads entries the ones before it wrote)."""
    return [run_step(store, step, device) for step in steps]


def run_rows(store: ArtifactStore, rows: list[tuple[int, list[Step]]], device: str = "cpu"
             ) -> dict[int, tuple[list[StageOutcome], str | None]]:
    """Several dataset rows' steps, row after row: by row, the outcomes of the steps that ran and the
    one-line reason it stopped (None when every step ran). A row that fails stops only itself."""
    done: dict[int, tuple[list[StageOutcome], str | None]] = {}
    for row, steps in rows:
        outcomes: list[StageOutcome] = []
        try:
            for step in steps:
                outcomes.append(run_step(store, step, device))
            done[row] = (outcomes, None)
        except Exception as exc:  # recorded as the row's failure; the other rows go on
            done[row] = (outcomes, describe_error(exc))
    return done
