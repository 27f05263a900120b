"""The schema of a run's parameters: one pydantic model per stage, with the stage's version and
whether it has sides beside it, and ``PipelineConfig``, all of them together.

A parameter is addressed as ``stage.param`` (both images) or ``content.stage.param`` /
``style.stage.param`` (one side only; only the per-image stages, ``sided`` below, have sides). Each
stage's cache key is built from that stage's own model and version only, so a change re-runs exactly
that stage and what is downstream of it. Reading ``--set`` and files: ``overrides``; the README's
table: ``reference``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pst_core.errors import ConfigError
from pst_core.features import check_layers

GRID = 16  # pixels: the network's largest stride (relu5_x); tiles are multiples of it

DEFAULT_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
STYLE_LAYERS = DEFAULT_LAYERS[:4]


class StageParams(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    # Bump a stage's version when its algorithm changes: its entries (and everything downstream) recompute.
    version: ClassVar[int]
    sided: ClassVar[bool]  # per image (content and style may differ), or once for the pair


class LoadParams(StageParams):
    version = 1
    sided = True
    size: int = Field(512, ge=8, le=8192, description="Working size: the longer side, in pixels")
    max_pixels: int = Field(
        100_000_000, ge=1, description="Refuse input files with more pixels than this (decompression bombs)"
    )
    segment_size: int = Field(
        1024, ge=8, le=8192, description="Segmentation (features, clustering, regions) works at most at this size "
                                         "(longer side); its masks are carried up to the working size"
    )


class ColorNormalizeParams(StageParams):
    version = 3  # 2: covariance floor and bounded gain; 3: decides the region pairs
    sided = False
    method: Literal["auto", "linear", "cholesky", "pca", "luminance", "none"] = Field(
        "auto", description="auto: luminance for unnormalize.palette=content, linear for palette=style; linear: "
                            "mean/covariance matched by the symmetric (Monge-Kantorovich) map; cholesky; pca; "
                            "luminance: luminance only, chroma from the content (Gatys et al.); none"
    )
    direction: Literal["auto", "content_to_style", "style_to_content"] = Field(
        "auto", description="Which image is moved to the other's colour statistics; auto: style_to_content for "
                            "unnormalize.palette=content, content_to_style for palette=style"
    )
    regions: bool = Field(
        True, description="One transform per mapped region pair (each region keeps its own colours); the whole "
                          "image at once when false"
    )
    max_gain: float = Field(
        1.0, ge=1, le=1e3, description="The most the transform may squeeze any colour direction (and so the most "
                                       "its inverse amplifies): 1 keeps the style's contrast in flat content "
                                       "regions, and one- and two-colour styles well conditioned"
    )


class FeaturesParams(StageParams):
    version = 2  # 2: the image mirrored outwards before the network (no border responses)
    sided = True
    weights: str = Field("imagenet", description="'imagenet', 'random' (seeded), or a path to a VGG19 state_dict")
    seed: int = Field(0, ge=0, description="Seed of the random weights (weights=random only)")
    layers: list[str] = Field(default_factory=lambda: list(DEFAULT_LAYERS), min_length=1,
                              description="VGG19 layers stored and clustered for segmentation")

    @field_validator("layers")
    @classmethod
    def _known_layers(cls, layers: list[str]) -> list[str]:
        check_layers(layers)
        return layers


class ClusterLayerParams(StageParams):
    version = 2  # 2: VGG layers clustered by their local energy (texture window)
    sided = True
    k: int = Field(3, ge=1, le=64, description="Clusters per layer")
    # Few steps on purpose: on seg_dev, 20 steps from the k-means++ init beat 50 and 200 (longer
    # training drifts towards the balanced, equal-area optimum of the objective).
    iterations: int = Field(20, ge=1, le=100_000, description="Adam steps of the per-image clustering model")
    entropy_weight: float = Field(1.0, ge=0, le=1e3, description="lambda: weight of the mean per-pixel entropy")
    balance_weight: float = Field(0.5, ge=0, le=1e3, description="Weight of the entropy of the mean distribution")
    smoothness: float = Field(0.0, ge=0, le=1e3, description="Weight of the total variation of the probabilities")
    coords_weight: float = Field(0.0, ge=0, le=1e3, description="Scale of pixel coordinates appended to features")
    lr: float = Field(0.05, gt=0, le=10, description="Adam step size")
    seed: int = Field(0, ge=0, description="Seed of the k-means++ initialisation")
    # 1/32 of the image: wide enough to average over the texture set's periods (1/32 to 1/10 of the
    # image), narrow enough to keep photo boundaries (seg_dev: 1/64 and 1/16 both did worse overall).
    window: float = Field(
        1 / 32, ge=0, le=1, description="Texture window: each layer's activations are pooled into their local "
                                        "energy over a Gaussian of this sigma (a fraction of the longer side) "
                                        "before clustering; 0: raw activations (rgb is never pooled)"
    )
    layers: list[str] | None = Field(
        None, description="Layers to cluster ('rgb' = colour channels); null: rgb + features.layers (an empty list "
                          "is refused: it would cluster nothing)"
    )

    @field_validator("layers")
    @classmethod
    def _known_layers(cls, layers: list[str] | None) -> list[str] | None:
        if layers is not None:
            if not layers:  # it would cluster nothing; null is the default
                raise ValueError("an empty list clusters nothing: name at least one layer, or null for rgb + "
                                 "features.layers")
            check_layers([name for name in layers if name != "rgb"], "cluster_layer.layers")
        return layers


class BackpropParams(StageParams):
    version = 3  # 3: the head pools activations into local energy before it applies
    sided = True
    method: Literal["vjp", "upsample"] = Field(
        "upsample", description="vjp: |d sum p_k / d image| through head and VGG; upsample: bilinear p_k"
    )
    blur: float = Field(2.0, ge=0, le=64, description="Gaussian blur sigma (pixels at the working size)")


class FuseParams(StageParams):
    version = 4  # 3: per-image confidence weights of layers and colour; 4: one Lab scale, colour 16, gate squared
    sided = True
    k: int = Field(3, ge=1, le=64, description="Final regions per image")
    iterations: int = Field(20, ge=1, le=100_000, description="Adam steps of the fusion clustering model")
    entropy_weight: float = Field(1.0, ge=0, le=1e3, description="Weight of the mean per-pixel entropy")
    balance_weight: float = Field(0.5, ge=0, le=1e3, description="Lower than 1: foregrounds are smaller than 1/k")
    smoothness: float = Field(1.0, ge=0, le=1e3, description="Weight of the total variation of the region maps")
    # 2 (was 1): with texture layers the centre prior keeps colour mosaics' regions whole (colour set
    # K=2 0.963 -> 0.986), photos unchanged within noise.
    coords_weight: float = Field(2.0, ge=0, le=1e3, description="Scale of y, x and centre distance (centre prior)")
    lr: float = Field(0.05, gt=0, le=10, description="Adam step size")
    seed: int = Field(0, ge=0, description="Seed of the k-means++ initialisation")
    layer_weights: dict[str, float] = Field(default_factory=dict, description="Weight per layer name (default 1)")
    # 16 (was 4), with one scale for the three Lab channels and the squared colour gate: photos K=2
    # 0.463 -> 0.495 and K=4 0.678 -> 0.678 best-union IoU (seg_dev, 256 px); the colour set, the
    # texture set and the demo's style no lower.
    colour_weight: float = Field(
        16.0, ge=0, le=1e3, description="Weight of the image's own Lab colour, fused beside the indicators (0: none)"
    )
    auto_weights: bool = Field(
        True, description="Weight each layer by the confidence of its own clustering (relative to the most "
                          "confident layer), and the colour by colour_gate, per image"
    )
    confidence_window: float = Field(
        1 / 32, ge=0, le=1, description="Scale (a fraction of the longer side) at which auto_weights measures "
                                        "confidence: clusters that alternate within a texture mix at this scale"
    )
    # (0.25, 0.45), was (0.2, 0.4): the demo's style (orange/black waves over blue dots) has colour at
    # 0.34 of the best layer's confidence; at 0.68 of colour_weight its dark stripes joined the dark blue
    # below (K=2 IoU 0.727 -> 0.992); photos K=2/K=4 and the texture set moved by under 0.01.
    colour_gate: tuple[float, float] = Field(
        (0.25, 0.45), description="auto_weights: colour counts fully when its clustering's confidence is at least "
                                "hi times the best layer's, not at all below lo times"
    )

    @field_validator("colour_gate")
    @classmethod
    def _ordered_gate(cls, gate: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= gate[0] <= gate[1]:
            raise ValueError("colour_gate needs 0 <= lo <= hi")
        return gate
    labels: str | None = Field(
        None, description="A label image (one flat colour per region) to use instead of automatic segmentation; "
                          "k and the settings above are then unused"
    )


class RegionSettings(StageParams):
    style_weight: float | None = Field(None, ge=0, le=1e9)
    content_weight: float | None = Field(None, ge=0, le=1e9)
    style_layers: list[str] | None = None
    keep_content: bool = Field(False, description="No style in this content region")

    @field_validator("style_layers")
    @classmethod
    def _known_layers(cls, layers: list[str] | None) -> list[str] | None:
        if layers is not None:
            check_layers(layers, "style_transfer.regions.style_layers")
        return layers


class StyleTransferParams(StageParams):
    version = 7  # 2: output spans the normalised inputs' range; 3: averaged iterates, bicubic upscaling;
    # 4: the memory plan counts the pipeline's process (base 1.4 GiB) and trims the heap between scales;
    # fine_iterations 25 -> 5; 5: plans that reuse freed memory come first (2048 px: 1024 px tiles);
    # 6: a tiled pass counts the tile's extra share (4096 px: 1024 px tiles); 7: scales above fine_size
    # take smooth updates with the plain (unconfined) gradient
    sided = False
    iterations: int = Field(150, ge=0, le=100_000, description="Optimiser iterations at the final scale")
    # Losses are relative errors (see pst_core.style.losses), so these need no retuning across sizes;
    # chosen on the seeded random VGG19 (64 to 256 px, benchmarks/quality.py), not checked with ImageNet weights.
    # 30 (was 10) with relu5_1 left out of style_layers: on disk-stripes-dots the dot lattice's structure
    # 0.55 -> 0.66 and the stripes' 0.73 -> 0.80; the horse 0.45 -> 0.53 (benchmarks/quality.py, 256 px).
    style_weight: float = Field(30.0, ge=0, le=1e9, description="Weight of the style losses (relative errors)")
    content_weight: float = Field(1.0, ge=0, le=1e9, description="Weight of the content loss (relative error)")
    tv_weight: float = Field(10.0, ge=0, le=1e9, description="Weight of total variation (mean squared neighbour "
                                                             "difference): 10 removes pixel grain, keeps edges")
    mapping: Literal["auto", "overlap"] | dict[int, int] = Field(
        "auto", description="auto (feature similarity), overlap, or {content_region: style_region}"
    )
    regions: dict[int, RegionSettings] = Field(default_factory=dict, description="Per content region settings")
    mapping_layer: str = Field("relu3_1", description="VGG layer whose masked statistics mapping=auto compares")
    content_layers: list[str] = Field(default_factory=lambda: ["relu4_2"], min_length=1,
                                      description="Layers of the content loss")
    # relu5_1 left out: at 256 px its 16x16 map adds blotches, not structure, and slows the way to the
    # target (disk-stripes-dots reached it in 96 s without relu5_1, 291 s with it).
    style_layers: list[str] = Field(default_factory=lambda: list(STYLE_LAYERS), min_length=1,
                                    description="Layers of the style losses (each region may have its own)")
    style_layer_weights: dict[str, float] = Field(
        default_factory=dict, description="Relative weight of each style layer (a layer not named weighs 1); "
                                          "a region's layer weights are normalised to sum to its style weight")
    loss: Literal["meancov", "gram"] = Field(
        "meancov", description="meancov: mean + covariance (Wasserstein-2); gram: Gatys et al.'s masked Gram matrices"
    )
    pooling: Literal["average", "max"] = Field(
        "average", description="VGG pooling in the transfer (same weights): average draws the style's structure, "
                               "max (the original network) leaves pixel speckle with random weights"
    )
    optimizer: Literal["lbfgs", "adam"] = Field("lbfgs", description="lbfgs, or adam (with an average of its iterates)")
    lr: float = Field(0.02, gt=0, le=100, description="Adam step size")
    average: float = Field(0.99, ge=0, lt=1, description="Adam: decay of the moving average of iterates that "
                                                         "is the output (0: the last iterate)")
    lbfgs_history: int = Field(100, ge=1, le=1000, description="L-BFGS history size")
    min_size: int = Field(64, ge=0, le=8192, description="Coarse to fine: the first scale's longer side, doubling up "
                                                         "to the working size (0: one scale)")
    scale_iterations: int | None = Field(100, ge=0, description="Iterations at each coarser scale (null: as many "
                                                                "as at the final scale)")
    init: Literal["content", "style", "noise"] = Field("content", description="Starting image: content, style or noise")
    # 4 (was 1): the photos' foregrounds lift at both sizes (bsds153077 0.46-0.51 -> 0.58-0.59 at 256 px,
    # 0.47-0.54 -> 0.64 at 512 px), horse001's noise at 512 px falls from 1.48x to 0.71x
    # (benchmarks/quality.py); 2, 3 and 8 lifted less (the swimmer 0.48, 0.53, 0.48).
    init_blur: int = Field(4, ge=1, le=64, description="The starting image (content or style) downsampled by this "
                                                       "factor and back: its layout and colours without its detail, "
                                                       "which the style then draws (1: the image as it is)")
    # True (new): the fringe of speckle round a region (the swimmer in the dotted background) goes;
    # one more backward pass per region after the first (benchmarks/quality.py, README).
    confine_regions: bool = Field(True, description="Each region's losses move only its own pixels at the scales up "
                                                    "to fine_size, where the structure forms (every scale with "
                                                    "smooth_fine_updates=false; no halo of one "
                                                    "region's style round another; one more backward pass per "
                                                    "region after the first: at K=4 each iteration costs 2.5 to "
                                                    "2.7x K=1's, against 1.07 to 1.13x with false)")
    seed: int = Field(0, ge=0, description="Seed of the noise initialisation")
    snapshot_every: int = Field(0, ge=0, description="Store a snapshot every N iterations of the final scale (0: none)")
    # 256 and 25 (were 1024 and 50): at 512 px blobs-orientation's structure stays 0.84 / 0.82 while its
    # noise falls from 1.56x (150 final iterations) to 1.47x (25), and the run from 522 s to 149 s
    # (benchmarks/quality.py --sizes 512); the final scale sharpens what the coarser ones drew.
    # 5 (was 25): at 512 px every synthetic case's structure is reached by the 5th iteration there,
    # and later ones only add grain (blobs-orientation: noise 0.53x at 5, 1.47x at 25; horse001's
    # structure falls from 0.50 to 0.45); at 4096 px each iteration costs minutes
    # (benchmarks/quality.py --trajectory).
    fine_size: int = Field(256, ge=0, le=65536, description="Scales after the first whose longer side exceeds "
                                                             "this run at most fine_iterations iterations: structure "
                                                             "forms at the coarser scales, these add detail (0: no "
                                                             "limit)")
    fine_iterations: int = Field(5, ge=0, le=100_000, description="Iterations at each scale above fine_size")
    # True (new): at 512 px horse007's noise 1.96x -> 0.55x and blobs-orientation's 0.98x -> 0.17x, structure
    # 0.74 -> 0.74 and 0.73 / 0.81 -> 0.89 / 0.85 (benchmarks/quality.py --sizes 512). Those iterations drew a
    # 2 px hatching (the network's gradient carries it), and the confined gradient, which is no loss's
    # gradient, threw L-BFGS's first steps far off (blobs-orientation: magenta streaks, noise 13.7x).
    smooth_fine_updates: bool = Field(True, description="Above fine_size the image changes only by smooth updates "
                                                        "(a 3x3 binomial blur of the optimised correction) with the "
                                                        "plain gradient: those iterations sharpen what the coarser "
                                                        "scales drew without adding pixel grain")
    memory_budget: float = Field(12.0, ge=0.5, le=65536, description="Peak memory (GiB) the transfer may use: a "
                                                                      "scale that would not fit runs in tiles, with a "
                                                                      "shorter L-BFGS history if need be; a run that "
                                                                      "cannot fit is refused before it starts")
    tile_size: int | None = Field(None, ge=GRID, le=65536, description="Tile side in pixels (a multiple of 16), "
                                                                       "forced; null: the whole image where it fits "
                                                                       "memory_budget, else the largest tile that fits")

    def above_fine_size(self, size: tuple[int, int]) -> bool:
        """Whether a scale of this (height, width) is above fine_size: after a coarser one, it takes few
        iterations and smooth updates."""
        return bool(self.fine_size) and max(size) > self.fine_size

    @field_validator("content_layers", "style_layers")
    @classmethod
    def _known_layers(cls, layers: list[str]) -> list[str]:
        check_layers(layers, "style_transfer layers")
        return layers

    @field_validator("style_layer_weights")
    @classmethod
    def _known_weighted_layers(cls, weights: dict[str, float]) -> dict[str, float]:
        check_layers(list(weights), "style_transfer.style_layer_weights")
        for layer, weight in weights.items():
            if not 0 <= weight <= 1e9:
                raise ValueError(f"the weight of {layer} must be between 0 and 1e9, got {weight}")
        return weights

    @field_validator("mapping_layer")
    @classmethod
    def _known_layer(cls, layer: str) -> str:
        check_layers([layer], "style_transfer.mapping_layer")
        return layer

    @field_validator("tile_size")
    @classmethod
    def _on_the_grid(cls, tile: int | None) -> int | None:
        if tile is not None and tile % GRID:
            raise ValueError(f"must be a multiple of {GRID} (the network's largest stride), e.g. {tile // GRID * GRID or GRID}")
        return tile


class UnnormalizeParams(StageParams):
    version = 1
    sided = False
    palette: Literal["content", "style"] = Field(
        "content", description="content: exact inverse colour transform; style: keep the style's palette"
    )


STAGE_MODELS: dict[str, type[StageParams]] = {
    "load": LoadParams,
    "color_normalize": ColorNormalizeParams,
    "features": FeaturesParams,
    "cluster_layer": ClusterLayerParams,
    "backprop_clusters": BackpropParams,
    "fuse_segmentation": FuseParams,
    "style_transfer": StyleTransferParams,
    "unnormalize": UnnormalizeParams,
}
STAGE_VERSIONS = {stage: model.version for stage, model in STAGE_MODELS.items()}
SIDED_STAGES = tuple(stage for stage, model in STAGE_MODELS.items() if model.sided)
SIDES = ("content", "style")


class SideOverrides(BaseModel):
    """Parameters that apply to one image only (validated when the config is built)."""

    model_config = ConfigDict(extra="forbid")
    load: dict[str, Any] = Field(default_factory=dict)
    features: dict[str, Any] = Field(default_factory=dict)
    cluster_layer: dict[str, Any] = Field(default_factory=dict)
    backprop_clusters: dict[str, Any] = Field(default_factory=dict)
    fuse_segmentation: dict[str, Any] = Field(default_factory=dict)


class PipelineConfig(BaseModel):
    """All parameters of one content/style run."""

    model_config = ConfigDict(extra="forbid")
    load: LoadParams = Field(default_factory=LoadParams)
    color_normalize: ColorNormalizeParams = Field(default_factory=ColorNormalizeParams)
    features: FeaturesParams = Field(default_factory=FeaturesParams)
    cluster_layer: ClusterLayerParams = Field(default_factory=ClusterLayerParams)
    backprop_clusters: BackpropParams = Field(default_factory=BackpropParams)
    fuse_segmentation: FuseParams = Field(default_factory=FuseParams)
    style_transfer: StyleTransferParams = Field(default_factory=StyleTransferParams)
    unnormalize: UnnormalizeParams = Field(default_factory=UnnormalizeParams)
    content: SideOverrides = Field(default_factory=SideOverrides)
    style: SideOverrides = Field(default_factory=SideOverrides)
    device: str = Field("auto", description="auto, cpu or cuda[:N]; not part of any cache key")

    @model_validator(mode="after")
    def _validate_sides(self) -> "PipelineConfig":
        for side in SIDES:
            for stage in SIDED_STAGES:
                self.params(stage, side)
        return self

    def params(self, stage: str, side: str | None = None) -> StageParams:
        """The effective parameters of ``stage`` (for one side, where the stage has sides)."""
        base: StageParams = getattr(self, stage)
        overrides = getattr(self, side).__dict__[stage] if side and stage in SIDED_STAGES else {}
        if not overrides:
            return base
        merged = {**base.model_dump(), **overrides}
        try:
            return type(base).model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, f"{side}.{stage}")) from None


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """pydantic's first complaint as one line: the parameter's full name, what is wrong, what was given."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
    got = err.get("input")
    shown = f" (got {got!r})" if got is not None and not isinstance(got, dict) else ""
    return f"{where}: {err['msg']}{shown}"
