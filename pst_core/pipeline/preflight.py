"""The checks and the plan made before a run touches the store: every image decodes, the parameters fit
the images, the memory plan fits its budget, the weights load; then every stage's key, and which of
them the store already holds."""

from __future__ import annotations

from dataclasses import dataclass

from pst_core.color.normalize import resolve
from pst_core.config.schema import SIDES, PipelineConfig
from pst_core.errors import ConfigError
from pst_core.features import LAYER_STRIDE, load_vgg, resolve_device, weights_id
from pst_core.load import check_pixel_count, pixel_digest, read_image, working_shape
from pst_core.pipeline.plan import Plan, SideSource, needs_network, pair_steps, side_steps
from pst_core.segmentation.cluster_layer import cluster_layers
from pst_core.segmentation.labels import check_fits, labels_role, read_labels
from pst_core.store.artifact_store import ArtifactStore
from pst_core.style.style_transfer import plan_transfer

MIN_SIDE = 8  # pixels: smaller inputs carry no regions to find


@dataclass(frozen=True)
class ImageFacts:
    """What planning and checking need from an image file: its pixels' digest and its size."""

    path: str
    digest: str
    height: int
    width: int


@dataclass(frozen=True)
class LabelFacts:
    """The same for a label image: the label map's digest, its number of regions, its size."""

    path: str
    digest: str
    count: int
    shape: tuple[int, int]


def image_facts(store: ArtifactStore, path: str, max_pixels: int, role: str, learned: list | None = None
                ) -> ImageFacts:
    """Decoded once per file version, then read from the store's memo (see ``ArtifactStore.file_memo``)."""
    def decode() -> dict:
        pixels = read_image(path, max_pixels, role=role)
        return {"digest": pixel_digest(pixels), "height": pixels.shape[1], "width": pixels.shape[2]}

    facts = store.file_memo("image", path, decode, learned)
    check_pixel_count(f"{role} {str(path)!r}", facts["width"], facts["height"], max_pixels)
    return ImageFacts(str(path), **facts)


def label_facts(store: ArtifactStore, path: str, max_pixels: int, role: str, learned: list | None = None
                ) -> LabelFacts:
    def decode() -> dict:
        labels = read_labels(path, max_pixels, role)
        return {"digest": labels.digest(), "count": labels.count, "shape": list(labels.shape)}

    facts = store.file_memo("labels", path, decode, learned)
    check_pixel_count(f"{role} {str(path)!r}", facts["shape"][1], facts["shape"][0], max_pixels)
    return LabelFacts(str(path), facts["digest"], facts["count"], tuple(facts["shape"]))


def preflight(store: ArtifactStore, images: dict[str, str], config: PipelineConfig) -> Plan:
    """Everything that can be checked before a stage writes, and the run's plan: the store is reachable,
    every image decodes, the parameters fit the images, the device exists, and the weights load where a
    missing stage runs the network. Bad input therefore fails here, with the store unchanged.
    ``images``: {"content": path, "style": path} for a pair, {"content": path} to segment one image."""
    store.check()
    return plan_run(store, images, config)


def plan_run(store: ArtifactStore, images: dict[str, str], config: PipelineConfig) -> Plan:
    """``preflight`` without the store's reachability check (a dataset checks it once, not per row)."""
    device = resolve_device(config.device)
    learned: list = []  # facts about the input files, stored once every check has passed
    drawn = {side: label_facts(store, path, config.params("load", side).max_pixels, labels_role(side), learned)
             for side in SIDES if (path := config.params("fuse_segmentation", side).labels)}
    facts = {side: image_facts(store, path, config.params("load", side).max_pixels, f"{side} image", learned)
             for side, path in images.items()}
    check_inputs(facts, drawn, config)

    def memo(kind, path, compute):
        return store.file_memo(kind, path, compute, learned)

    weights = {side: weights_id(config.params("features", side).weights, memo) for side in facts}
    sides = {side: side_steps(side, SideSource(f.path, f.digest, drawn[side].digest if side in drawn else None),
                              config, weights[side])
             for side, f in facts.items()}
    steps = [step for side in sides.values() for step in side]
    if len(sides) == 2:
        steps += pair_steps(sides["content"], sides["style"], config, weights["content"])
    plan = Plan(steps, store.complete(step.id for step in steps), device)
    check_weights(plan, device)
    store.remember(learned)
    return plan


def check_weights(plan: Plan, device: str) -> None:
    """Load the weights every missing step will run (random weights cannot fail to load)."""
    for weights, seed in {net for step in plan.missing if (net := needs_network(step))}:
        if weights != "random":
            load_vgg(weights, seed, device)


def check_inputs(images: dict[str, ImageFacts], drawn: dict[str, LabelFacts], config: PipelineConfig) -> None:
    """The parameters against the images (and label images, ``drawn``) they will run on."""
    regions = {side: drawn[side].count if side in drawn else config.params("fuse_segmentation", side).k
               for side in SIDES}
    shapes = {}
    for side, facts in images.items():
        load = config.params("load", side)
        if min(facts.height, facts.width) < MIN_SIDE:
            raise ConfigError(f"{side} image {facts.path!r}: {facts.width}x{facts.height} is too small "
                              f"(at least {MIN_SIDE} px on each side)")
        shapes[side] = working_shape(facts.height, facts.width, load.size)
        if side in drawn:
            check_fits(drawn[side], (facts.height, facts.width), labels_role(side))
        else:
            segmented = working_shape(facts.height, facts.width, min(load.size, load.segment_size))
            _check_cluster_sizes(side, segmented, config)
    _check_mapping(config, regions)
    if set(shapes) == set(SIDES):  # the memory guard: refused here rather than killed by the kernel later
        carried = any(config.params("load", side).size > config.params("load", side).segment_size for side in SIDES)
        plan_transfer(shapes["content"], shapes["style"], regions["content"], regions["style"], config.style_transfer,
                      masks_carried=carried)
    palette = config.unnormalize.palette
    direction = resolve(config.color_normalize.method, config.color_normalize.direction, palette)[1]
    if config.color_normalize.regions and direction == "style_to_content" and palette == "style":
        raise ConfigError("color_normalize.regions with direction=style_to_content cannot restore "
                          "unnormalize.palette=style (the inverse needs the style's geometry); use content_to_style")


def _check_cluster_sizes(side: str, shape: tuple[int, int], config: PipelineConfig) -> None:
    """Every clustered layer must have at least K pixels at the size segmentation works at (``shape``:
    the working size, or load.segment_size where that is smaller)."""
    features = config.params("features", side)
    clusters = config.params("cluster_layer", side)
    fuse = config.params("fuse_segmentation", side)
    if fuse.k == 1:
        return  # nothing is clustered
    for layer in cluster_layers(clusters, features.layers):
        if layer != "rgb" and layer not in features.layers:
            raise ConfigError(f"{side}.cluster_layer.layers: {layer!r} is not among features.layers "
                              f"{features.layers}")
        stride = 1 if layer == "rgb" else LAYER_STRIDE[layer]
        pixels = max(1, shape[0] // stride) * max(1, shape[1] // stride)
        if clusters.k > pixels:
            raise ConfigError(f"{side}.cluster_layer.k={clusters.k} is more than the {pixels} pixels of layer "
                              f"{layer} at {shape[1]}x{shape[0]} px (load.size, at most load.segment_size)")
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
