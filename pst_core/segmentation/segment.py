"""The whole per-image segmentation: cluster each layer, bring it back to the image, fuse.

The pipeline runs these three steps as separate cached stages, in exactly this composition.
"""

from __future__ import annotations

import torch

from pst_core.color.spaces import srgb_to_lab
from pst_core.config.schema import BackpropParams, ClusterLayerParams, FuseParams
from pst_core.features import reflected_features
from pst_core.segmentation.backprop_clusters import backprop_indicators
from pst_core.segmentation.cluster_layer import cluster_features, cluster_layers
from pst_core.segmentation.fuse_segmentation import fuse_indicators


def layer_indicators(image: torch.Tensor, vgg, feature_layers: list[str], cluster: ClusterLayerParams,
                     backprop: BackpropParams) -> dict[str, torch.Tensor]:
    """{layer: (K, H, W)} indicators at image resolution, one max-entropy clustering per clustered layer
    (``cluster_layers``)."""
    names = cluster_layers(cluster, feature_layers)
    deep = [name for name in names if name != "rgb"]
    with torch.no_grad():
        activations = {name: a[0] for name, a in reflected_features(vgg, image[None], deep).items()} if deep else {}
    if "rgb" in names:
        activations["rgb"] = srgb_to_lab(image)
    out = {}
    for name in names:
        head, _, _ = cluster_features(activations[name], name, cluster)
        out[name] = backprop_indicators(image, vgg, name, head, method=backprop.method, blur=backprop.blur,
                                        features=activations[name] if name != "rgb" else None)
    return out


def fuse_regions(indicators: dict[str, torch.Tensor], params: FuseParams, image: torch.Tensor) -> torch.Tensor:
    _, regions = fuse_indicators(indicators, image=image, **params.model_dump(exclude={"labels"}))
    return regions


def segment_image(image: torch.Tensor, vgg, feature_layers: list[str], cluster: ClusterLayerParams,
                  backprop: BackpropParams, fuse: FuseParams) -> torch.Tensor:
    """image (3, H, W) in [0, 1] -> soft regions (fuse.k, H, W), largest first."""
    return fuse_regions(layer_indicators(image, vgg, feature_layers, cluster, backprop), fuse, image)
