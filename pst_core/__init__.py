"""pst_core: the maths and I/O of partitioned neural style transfer (no Prefect here).

    config/        the parameters: each stage's model with its version and sides (schema), --set and
                   files (overrides), presets, the README's table (reference)
    load.py        the load stage: image files in, output images out
    features.py    the features stage: VGG19
    segmentation/  cluster_layer, backprop_clusters, fuse_segmentation; texture, drawn labels, masks
    color/         color_normalize and unnormalize (normalize), colour spaces (spaces)
    style/         style_transfer: its losses, the region mapping, tiles, the memory plan
    pipeline/      the stage graph (plan), the stage functions (stages), preflight checks, run records,
                   dataset manifests
    store/         the artifact store (zarr entries under Merkle keys) and its upkeep
    inspect/       exported pictures, the HTML report, the demo figure, quality measures
    demo/          the demo's images
    progress.py    the transfer's progress record; errors.py one-line user errors; synthetic.py test scenes
"""

__version__ = "0.1.0"
