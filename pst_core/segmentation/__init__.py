"""Per-image segmentation, stage by stage: cluster_layer, backprop_clusters, fuse_segmentation."""
