"""The stage graph of a run, planned from keys before anything runs.

Every stage's key is a digest of its parameters and its inputs' keys (a Merkle key). So the whole graph
of a run, and which of its entries the store already holds, is known before any stage runs: a plan.
This module is the one place the graph is written down. The stage functions (``pst_core.pipeline.stages``)
build their keys with the same ``*_spec`` functions, so a plan's keys are the keys the stages write;
flows submit work for the missing steps only and report the others as cached.

    content ─ load ─┬─ features ─ cluster_layer* ─ backprop_clusters* ─ fuse_segmentation ─┐
                    └─────────────┐                                                        │
                                  ├─ color_normalize ─ style_transfer ─ unnormalize ─ out  │
                    ┌─────────────┘                                                        │
    style ── load ──┴─ features ─ cluster_layer* ─ backprop_clusters* ─ fuse_segmentation ─┘

Above ``load.segment_size`` a side has a second load, of the image at that size, which segmentation
reads (features to fuse_segmentation); colour normalisation and the transfer carry its masks up.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import cached_property
from typing import Any

from pst_core.color.normalize import resolve
from pst_core.config.schema import (STAGE_VERSIONS, BackpropParams, ClusterLayerParams, ColorNormalizeParams,
                                    FeaturesParams, FuseParams, LoadParams, PipelineConfig, StyleTransferParams,
                                    UnnormalizeParams)
from pst_core.segmentation.cluster_layer import cluster_layers
from pst_core.store.artifact_store import key_digest


def stage_key(stage: str, params: dict[str, Any], inputs: dict[str, str]) -> str:
    """The Merkle key: the stage, its version (beside its parameters' model, ``config.schema``), the parameters
    it reads, its inputs' keys."""
    return key_digest({"stage": stage, "version": STAGE_VERSIONS[stage], "params": params, "inputs": inputs})


@dataclass(frozen=True)
class KeySpec:
    """What a stage's key covers: the parameters it reads and its inputs' keys (both stored with the entry)."""

    stage: str
    params: dict[str, Any]
    inputs: dict[str, str]

    @cached_property
    def key(self) -> str:
        return stage_key(self.stage, self.params, self.inputs)


# -- the key of each stage -------------------------------------------------------------------------
def load_spec(params: LoadParams, pixels: str) -> KeySpec:
    """``pixels``: the decoded image's digest (``imageio.pixel_digest``), not its file name or format.
    ``segment_size`` says which load entry segmentation reads, not how this one is computed: left out."""
    return KeySpec("load", params.model_dump(exclude={"segment_size"}), {"pixels": pixels})


def segmentation_load(params: LoadParams) -> LoadParams | None:
    """The load parameters of the smaller image segmentation works on, or None when it works on the
    working size itself (``load.segment_size`` bounds segmentation's memory and store at any size)."""
    return params.model_copy(update={"size": params.segment_size}) if params.size > params.segment_size else None


@dataclass(frozen=True)
class MappingNet:
    """The network ``mapping=auto`` compares regions with: the transfer's (weights, pooling) at ``layer``."""

    weights: str
    seed: int
    pooling: str
    layer: str

    def key(self, weights_id: str) -> dict[str, Any]:
        """``weights_id``: see ``features_spec``."""
        return {"weights": weights_id, "seed": self.seed, "pooling": self.pooling, "layer": self.layer}


def color_normalize_spec(params: ColorNormalizeParams, content_key: str, style_key: str,
                         regions: tuple[str, str] | None = None, mapping: Any = None, palette: str = "content",
                         mapping_net: MappingNet | None = None, net_weights_id: str | None = None) -> KeySpec:
    """The method and direction as resolved for ``palette``; with ``params.regions`` the regions and the
    transfer's mapping, and for ``mapping=auto`` the network that decides it (``net_weights_id``: its
    weights, as ``features_spec``'s ``weights_id``)."""
    method, direction = resolve(params.method, params.direction, palette)
    inputs = {"content": content_key, "style": style_key}
    key_params = {**params.model_dump(), "method": method, "direction": direction}
    if params.regions:
        inputs.update(content_regions=regions[0], style_regions=regions[1])
        key_params["mapping"] = {str(c): s for c, s in mapping.items()} if isinstance(mapping, dict) else mapping
        if mapping == "auto":
            key_params["mapping_net"] = mapping_net.key(net_weights_id)
    return KeySpec("color_normalize", key_params, inputs)


def features_spec(params: FeaturesParams, image_key: str, weights_id: str) -> KeySpec:
    """``weights_id``: the weights' name, or a weights file's content hash (``vgg.weights_fingerprint``)."""
    key = {"weights": weights_id, "layers": params.layers}
    if params.weights == "random":
        key["seed"] = params.seed
    return KeySpec("features", key, {"image": image_key})


def cluster_layer_spec(params: ClusterLayerParams, layer: str, source_key: str) -> KeySpec:
    return KeySpec("cluster_layer", {**params.model_dump(exclude={"layers"}), "layer": layer}, {"source": source_key})


def backprop_clusters_spec(params: BackpropParams, layer: str, cluster_key: str, image_key: str) -> KeySpec:
    return KeySpec("backprop_clusters", {**params.model_dump(), "layer": layer},
                   {"clusters": cluster_key, "image": image_key})


def fuse_segmentation_spec(params: FuseParams, indicator_keys: dict[str, str], image_key: str,
                           labels: str | None = None) -> KeySpec:
    """``labels``: the digest of a label map drawn by hand (``params.labels``). Drawn regions are keyed by
    the map alone, so renaming the file re-runs nothing and redrawing it re-runs the transfer."""
    if labels is not None:
        return KeySpec("fuse_segmentation", {"labels": labels}, {"image": image_key})
    inputs = {"image": image_key}
    if params.k > 1:
        inputs.update({f"indicators:{k}": v for k, v in indicator_keys.items()})
    return KeySpec("fuse_segmentation", {"k": 1} if params.k == 1 else params.model_dump(), inputs)


# Transfer parameters added after stores were written, with the value that reproduces the earlier code:
# equal layer weights, the start image as it is, and every region's gradient reaching every pixel.
_ADDED_LATER = {"style_layer_weights": {}, "init_blur": 1, "confine_regions": False}


def style_transfer_spec(params: StyleTransferParams, color_key: str, content_regions_key: str,
                        style_regions_key: str) -> KeySpec:
    # A parameter added after transfers were stored stays out of the key at the value that does what the
    # code did before it existed, so those stored transfers stay valid.
    unset = {name for name, before in _ADDED_LATER.items() if getattr(params, name) == before}
    return KeySpec("style_transfer", params.model_dump(mode="json", exclude=unset or None),
                   {"normalised": color_key, "content_regions": content_regions_key, "style_regions": style_regions_key})


def unnormalize_spec(params: UnnormalizeParams, styled_key: str, color_key: str) -> KeySpec:
    return KeySpec("unnormalize", params.model_dump(), {"styled": styled_key, "normalised": color_key})


# -- outcomes and steps ----------------------------------------------------------------------------
@dataclass
class StageOutcome:
    """What a stage hands downstream: where its output lives, and how it got there."""

    stage: str
    side: str | None
    key: str
    status: str  # "computed" | "cached"
    seconds: float  # computing the entry
    layer: str | None = None
    stored: float = 0.0  # seconds writing it to the store

    @property
    def cached(self) -> bool:
        return self.status == "cached"

    def record(self) -> dict[str, Any]:
        """As the store's run records hold it."""
        return asdict(self)

    def public(self) -> dict[str, Any]:
        """As a run returns it (a flow's result, the CLI's ``--json``): ``image`` is content, style or pair."""
        return {"stage": self.stage, "image": self.side or "pair", "layer": self.layer, "key": self.key,
                "status": self.status, "seconds": round(self.seconds, 4)}


@dataclass(frozen=True, eq=False)
class Step:
    """One stage of a run: its key, the entries it reads, and the arguments of its stage function
    (``pst_core.pipeline.stages.<stage>``, besides the store and the device)."""

    spec: KeySpec
    side: str | None
    layer: str | None
    needs: tuple[tuple[str, str], ...]  # (stage, key) of every entry it reads
    args: dict[str, Any]

    @property
    def stage(self) -> str:
        return self.spec.stage

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def id(self) -> tuple[str, str]:
        """What identifies the step's output anywhere: its entry, (stage, key)."""
        return self.spec.stage, self.spec.key

    @property
    def part(self) -> str:
        """Which part of the graph it belongs to: ``content``, ``style`` or ``pair``."""
        return self.side or "pair"

    @property
    def name(self) -> str:
        """As task runs are named: stage-side-layer."""
        return "-".join(part for part in (self.stage, self.side, self.layer) if part)

    def outcome(self, status: str = "cached", seconds: float = 0.0) -> StageOutcome:
        return StageOutcome(self.stage, self.side, self.key, status, seconds, self.layer)


def _step(spec: KeySpec, needs: list[Step], **args: Any) -> Step:
    """A step of ``spec``'s stage reading ``needs``; ``args``: its stage function's (side and layer among them)."""
    return Step(spec, args.get("side"), args.get("layer"), tuple(n.id for n in needs), args)


@dataclass(frozen=True)
class SideSource:
    """What a side's keys need from its input files: the image's pixel digest, and the digest of its label
    map where regions are drawn by hand."""

    path: str
    pixels: str
    labels: str | None = None


def side_steps(side: str, source: SideSource, config: PipelineConfig, weights_id: str) -> list[Step]:
    """load -> features -> cluster_layer per layer -> backprop_clusters per layer -> fuse_segmentation;
    the first step is the side's working-size image, the last its regions. Above ``load.segment_size``
    a second, smaller load step feeds segmentation (its masks are carried up by the stages that read
    them). ``weights_id``: see ``features_spec``."""
    load_params = config.params("load", side)
    working = _step(load_spec(load_params, source.pixels), [], path=source.path, params=load_params, side=side)
    loads = [working]
    if (small := segmentation_load(load_params)) is not None:
        loads.append(_step(load_spec(small, source.pixels), [], path=source.path, params=small, side=side))
    loaded = loads[-1]  # the image segmentation works on
    fuse = config.params("fuse_segmentation", side)
    if fuse.k == 1 or fuse.labels:  # the whole image, or regions drawn by hand: nothing to segment
        drawn = source.labels if fuse.labels else None
        regions = _step(fuse_segmentation_spec(fuse, {}, loaded.key, drawn), [loaded], indicator_keys={},
                        image_key=loaded.key, params=fuse, side=side)
        return [*loads, regions]
    feats_params = config.params("features", side)
    cluster = config.params("cluster_layer", side)
    backprop = config.params("backprop_clusters", side)
    feats = _step(features_spec(feats_params, loaded.key, weights_id), [loaded], image_key=loaded.key,
                  params=feats_params, side=side)
    steps, indicators = [*loads, feats], {}
    for layer in cluster_layers(cluster, feats_params.layers):
        source = loaded if layer == "rgb" else feats
        clusters = _step(cluster_layer_spec(cluster, layer, source.key), [source], layer=layer,
                         source_key=source.key, params=cluster, side=side)
        # upsample reads the clustered activations (the features entry) too
        reads = [clusters, loaded] + ([feats] if layer != "rgb" else [])
        indicator = _step(backprop_clusters_spec(backprop, layer, clusters.key, loaded.key), reads, layer=layer,
                          cluster_key=clusters.key, image_key=loaded.key, params=backprop,
                          features_params=feats_params, side=side)
        indicators[layer] = indicator
        steps += [clusters, indicator]
    keys = {layer: step.key for layer, step in indicators.items()}
    steps.append(_step(fuse_segmentation_spec(fuse, keys, loaded.key), [loaded, *indicators.values()],
                       indicator_keys=keys, image_key=loaded.key, params=fuse, side=side))
    return steps


def pair_steps(content: list[Step], style: list[Step], config: PipelineConfig, weights_id: str) -> list[Step]:
    """color_normalize -> style_transfer -> unnormalize, from both sides' steps (load first, regions last).
    ``weights_id``: the content side's weights (see ``features_spec``), which ``mapping=auto`` runs."""
    (c_load, c_regions), (s_load, s_regions) = (content[0], content[-1]), (style[0], style[-1])
    colour, transfer, palette = config.color_normalize, config.style_transfer, config.unnormalize.palette
    if colour.regions:  # per region pair: after both segmentations, and it decides the pairs
        features = config.params("features", "content")
        net = MappingNet(features.weights, features.seed, transfer.pooling, transfer.mapping_layer)
        regions = (c_regions.key, s_regions.key)
        spec = color_normalize_spec(colour, c_load.key, s_load.key, regions, transfer.mapping, palette, net, weights_id)
        normalised = _step(spec, [c_load, s_load, c_regions, s_regions], content_key=c_load.key,
                           style_key=s_load.key, params=colour, regions=regions, mapping=transfer.mapping,
                           palette=palette, mapping_net=net)
    else:
        normalised = _step(color_normalize_spec(colour, c_load.key, s_load.key, palette=palette), [c_load, s_load],
                           content_key=c_load.key, style_key=s_load.key, params=colour, palette=palette)
    styled = _step(style_transfer_spec(transfer, normalised.key, c_regions.key, s_regions.key),
                   [normalised, c_regions, s_regions], color_key=normalised.key, content_regions_key=c_regions.key,
                   style_regions_key=s_regions.key, params=transfer,
                   features_params=config.params("features", "content"))
    final = _step(unnormalize_spec(config.unnormalize, styled.key, normalised.key), [styled, normalised],
                  styled_key=styled.key, color_key=normalised.key, params=config.unnormalize)
    return [normalised, styled, final]


def needs_network(step: Step) -> tuple[str, int] | None:
    """The VGG19 weights (weights, seed) a step runs, if it runs the network."""
    args = step.args
    if step.stage == "features":
        return args["params"].weights, args["params"].seed
    if step.stage == "style_transfer" or (step.stage == "backprop_clusters" and args["params"].method == "vjp"):
        return args["features_params"].weights, args["features_params"].seed
    if step.stage == "color_normalize" and args.get("mapping") == "auto":
        return args["mapping_net"].weights, args["mapping_net"].seed
    return None


@dataclass
class Plan:
    """Every step of a run, in report order (content side, style side, the pair's), and which of their
    entries the store held when the run was planned."""

    steps: list[Step]
    present: set[tuple[str, str]]
    device: str = "cpu"

    @property
    def missing(self) -> list[Step]:
        """The steps to run: entries the store lacked, each once (two sides may share an entry)."""
        seen, out = set(self.present), []
        for step in self.steps:
            if step.id not in seen:
                seen.add(step.id)
                out.append(step)
        return out

    def missing_in(self, part: str) -> list[Step]:
        """The steps to run of one part of the graph: ``content``, ``style`` (load to fuse_segmentation) or
        ``pair`` (color_normalize, style_transfer, unnormalize)."""
        return [step for step in self.missing if step.part == part]

    @property
    def cached(self) -> list[Step]:
        return [step for step in self.steps if step.id in self.present]

    @property
    def final(self) -> Step:
        return self.steps[-1]

    def outcomes(self, ran: dict[tuple[str, str], StageOutcome], reused: bool = False) -> list[StageOutcome]:
        """Every step's outcome in report order: those in ``ran`` as they ran (a step whose entry another
        step of this plan produced, the same image on both sides, reports that outcome), those the store
        held as cached. The others could not run, and are left out; unless ``reused``: another run
        computed them (an earlier row of a dataset), and they count as cached too."""
        out = []
        for step in self.steps:
            if step.id in ran:
                done = ran[step.id]
                out.append(replace(done, side=step.side, layer=step.layer))
            elif reused or step.id in self.present:
                out.append(step.outcome())
        return out
