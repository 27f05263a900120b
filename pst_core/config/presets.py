"""Named segmentation presets: raw config dicts in the shape of PipelineConfig.

- ``seed``: the original system's configuration (colour + conv1_2 + conv5_4, 3 clusters each, so
  9 indicator channels fused into 3 regions; cluster backprop (vjp); full-length training with
  balanced clusters; raw activations, no smoothness, no coordinates, all layers weighted equally).
- ``default``: our tuned defaults (those of config.py), spelled out.
- ``imagenet``: pretrained VGG19 with the classic transfer settings of the literature (Gatys et al.
  2016: Gram matrices of relu1_1..relu5_1, content relu4_2, L-BFGS from the content image, average
  pooling as they recommend for synthesis, one scale, guided losses whose gradients reach every
  pixel). Our defaults were tuned on seeded random weights, the only ones to be had offline; this
  preset has not been tuned here.
"""

from __future__ import annotations

from pst_core.config.schema import BackpropParams, ClusterLayerParams, FuseParams

PRESETS: dict[str, dict] = {
    "seed": {
        "features": {"layers": ["conv1_2", "conv5_4"]},
        "cluster_layer": {"k": 3, "layers": ["rgb", "conv1_2", "conv5_4"], "iterations": 200, "smoothness": 0.0,
                          "coords_weight": 0.0, "balance_weight": 1.0, "entropy_weight": 1.0, "window": 0.0},
        "backprop_clusters": {"method": "vjp"},
        "fuse_segmentation": {"k": 3, "iterations": 300, "smoothness": 0.0, "coords_weight": 0.0, "layer_weights": {},
                              "balance_weight": 1.0, "entropy_weight": 1.0, "colour_weight": 0.0,
                              "auto_weights": False},
    },
    "imagenet": {
        "features": {"weights": "imagenet"},
        "style_transfer": {"loss": "gram", "optimizer": "lbfgs", "pooling": "average", "min_size": 0, "tv_weight": 0.0,
                           "iterations": 500, "style_weight": 10.0, "content_layers": ["relu4_2"],
                           "style_layers": ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"],
                           "init": "content", "init_blur": 1, "confine_regions": False},
    },
    "default": {
        "cluster_layer": ClusterLayerParams().model_dump(),
        "backprop_clusters": BackpropParams().model_dump(),
        "fuse_segmentation": FuseParams().model_dump(),
    },
}
