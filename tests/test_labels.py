"""Regions drawn by hand: label images in place of automatic segmentation."""

import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import FAST
from pst_core.config.overrides import build_config
from pst_core.errors import InputError
from pst_core.segmentation.labels import check_fits, label_masks, read_labels, save_labels
from pst_core.pipeline.manifest import read_manifest
from pst_core.store.artifact_store import ArtifactStore


def _grey(path, values):
    Image.fromarray(np.asarray(values, np.uint8)).save(path)
    return str(path)


def test_regions_are_numbered_by_colour(tmp_path):
    grey = np.zeros((12, 16), np.uint8)
    grey[:, 8:] = 7
    grey[:4] = 3
    labels = read_labels(_grey(tmp_path / "g.png", grey), 10**8, "labels")
    assert labels.count == 3
    assert np.array_equal(labels.index, np.searchsorted([0, 3, 7], grey))  # grey levels ascending

    rgb = np.zeros((12, 16, 3), np.uint8)
    rgb[:, :8] = (0, 0, 255)    # blue
    rgb[:, 8:] = (255, 0, 0)    # red
    Image.fromarray(rgb).save(tmp_path / "c.png")
    labels = read_labels(str(tmp_path / "c.png"), 10**8, "labels")
    assert labels.count == 2 and (labels.index[:, :8] == 0).all() and (labels.index[:, 8:] == 1).all()


def test_saved_labels_are_a_visible_palette_png_that_reads_back_with_the_same_numbers(tmp_path):
    regions = np.arange(64).reshape(8, 8)  # every region number a label image can hold
    save_labels(tmp_path / "all.png", regions)
    with Image.open(tmp_path / "all.png") as image:
        assert image.mode == "P"
        assert np.array_equal(np.asarray(image), regions)  # the indices are the region numbers
        colours = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert len({tuple(c) for c in colours}) == 64  # one distinct colour per region
    assert np.array_equal(read_labels(str(tmp_path / "all.png"), 10**8, "labels").index, regions)

    # Some regions empty, and the file re-saved as RGB by a paint program: the order still holds.
    sparse = np.array([[0, 2, 2], [5, 0, 2]])
    save_labels(tmp_path / "sparse.png", sparse)
    with Image.open(tmp_path / "sparse.png") as image:
        image.convert("RGB").save(tmp_path / "sparse_rgb.png")
    for name in ("sparse.png", "sparse_rgb.png"):
        labels = read_labels(str(tmp_path / name), 10**8, "labels")
        assert labels.count == 3 and np.array_equal(labels.index, np.searchsorted([0, 2, 5], sparse))


def test_photos_and_wrong_shapes_are_refused(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "photo.png")
    with pytest.raises(InputError, match="photo.png.*distinct colours"):
        read_labels(str(tmp_path / "photo.png"), 10**8, "content.fuse_segmentation.labels")
    labels = read_labels(_grey(tmp_path / "wide.png", np.zeros((10, 30))), 10**8, "labels")
    check_fits(labels, (20, 60), "labels")  # any resolution with the same aspect ratio
    with pytest.raises(InputError, match="30x10 does not fit the 40x20 image"):
        check_fits(labels, (20, 40), "labels")


def test_masks_are_hard_inside_soft_at_edges_and_sum_to_one(tmp_path):
    grey = np.zeros((64, 64), np.uint8)
    grey[:, 23:] = 1  # an edge that falls inside a pixel of the 24 px working size
    masks = label_masks(read_labels(_grey(tmp_path / "l.png", grey), 10**8, "labels"), (24, 24))
    assert masks.shape == (2, 24, 24) and masks.dtype == np.float32
    assert np.allclose(masks.sum(0), 1)
    assert (masks[0, :, :8] == 1).all() and (masks[1, :, 9:] == 1).all()
    assert np.allclose(masks[:, :, 8], 0.5)  # the edge column is shared


def test_manifest_label_paths_are_relative_to_the_manifest(tmp_path):
    (tmp_path / "pairs.csv").write_text("content,style,content.fuse_segmentation.labels\n"
                                        "a.png,b.png,masks/a.png\n")
    row = read_manifest(str(tmp_path / "pairs.csv"), str(tmp_path / "out"))[0]
    assert row.sets == [f"content.fuse_segmentation.labels={tmp_path / 'masks' / 'a.png'}"]


# ---------------------------------------------------------------- in the pipeline

@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """Label images for the 40x32 test images: content disk (1) on ground (0), style top (red) / bottom (blue)."""
    folder = tmp_path_factory.mktemp("labels")
    yy, xx = np.mgrid[0:32, 0:40]
    disk = ((yy - 14) ** 2 + (xx - 20) ** 2 < 90).astype(np.uint8)
    Image.fromarray(np.where((yy < 16)[..., None], [255, 0, 0], [0, 0, 255]).astype(np.uint8)).save(
        folder / "style.png")
    return {"content": _grey(folder / "content.png", disk), "style": str(folder / "style.png"),
            "disk": disk.astype(bool), "folder": folder}


def _run(images, store, drawn_paths):
    from flows.pipeline import partitioned_style_transfer

    sets = [*FAST, f"content.fuse_segmentation.labels={drawn_paths[0]}",
            f"style.fuse_segmentation.labels={drawn_paths[1]}", "style_transfer.mapping={0: 1, 1: 0}"]
    return partitioned_style_transfer(images["content"], images["style"], config=build_config(sets=sets),
                                      store=str(store))


@pytest.mark.usefixtures("prefect_server")
def test_label_images_replace_segmentation_and_are_keyed_by_their_pixels(images, drawn, tmp_path):
    first = _run(images, tmp_path, (drawn["content"], drawn["style"]))
    assert sorted({s["stage"] for s in first["stages"]}) == ["color_normalize", "fuse_segmentation", "load",
                                                             "style_transfer", "unnormalize"]
    store = ArtifactStore(str(tmp_path))
    regions = {s["image"]: store.open("fuse_segmentation", s["key"])
               for s in first["stages"] if s["stage"] == "fuse_segmentation"}
    assert np.array_equal(regions["content"].array("labels") == 1, drawn["disk"])  # load.size=40: same size
    assert regions["content"].attrs["labels_source"] == drawn["content"]
    assert regions["style"].array("regions").shape == (2, 32, 40)

    renamed = shutil.copy(drawn["content"], drawn["folder"] / "renamed.png")
    again = _run(images, tmp_path, (renamed, drawn["style"]))
    assert {s["status"] for s in again["stages"]} == {"cached"}

    redrawn = _grey(drawn["folder"] / "redrawn.png", 1 - drawn["disk"])  # the same regions, swapped
    third = _run(images, tmp_path, (redrawn, drawn["style"]))
    computed = sorted((s["stage"], s["image"]) for s in third["stages"] if s["status"] == "computed")
    assert computed == [("color_normalize", "pair"), ("fuse_segmentation", "content"), ("style_transfer", "pair"),
                        ("unnormalize", "pair")]  # colours are fitted per region pair too


@pytest.mark.usefixtures("prefect_server")
def test_dataset_rows_with_and_without_label_images(images, drawn, tmp_path):
    import pandas as pd

    from flows.dataset import dataset

    shutil.copy(images["content"], tmp_path / "c.png")
    shutil.copy(images["style"], tmp_path / "s.png")
    (tmp_path / "masks").mkdir()
    shutil.copy(drawn["content"], tmp_path / "masks" / "c.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "masks" / "wrong.png")  # square: does not fit
    pd.DataFrame({"content": ["c.png"] * 3, "style": ["s.png"] * 3,
                  "content.fuse_segmentation.labels": [None, "masks/c.png", "masks/wrong.png"]}
                 ).to_csv(tmp_path / "pairs.csv", index=False)
    result = dataset(manifest=str(tmp_path / "pairs.csv"), out_dir=str(tmp_path / "out"),
                     config=build_config(sets=FAST), store=str(tmp_path / "store"))
    rows = {r["row"]: r for r in pd.read_csv(result["results"]).to_dict("records")}
    assert rows[0]["status"] == rows[1]["status"] == "ok"
    assert rows[2]["status"] == "failed" and "wrong.png" in rows[2]["error"] and "does not fit" in rows[2]["error"]
    store = ArtifactStore(str(tmp_path / "store"))
    fused = [store.open("fuse_segmentation", s["key"]) for row in store.run_rows(result["run_id"])
             for s in row["stages"] if s["stage"] == "fuse_segmentation" and s["side"] == "content"]
    assert sorted("labels_source" in entry.attrs for entry in fused) == [False, True]


@pytest.mark.usefixtures("prefect_server")
def test_segment_output_is_a_label_image_to_edit_and_feed_back(images, tmp_path, capsys):
    """pst segment writes labels at the input's resolution; fed back unchanged they are the same regions."""
    import json

    from flows.cli import main

    sets = sum((["--set", s] for s in FAST), [])
    store = str(tmp_path / "store")
    assert main(["segment", images["content"], "--regions", "2", "--out", str(tmp_path / "regions.png"),
                 "--store", store, *sets]) == 0
    with Image.open(tmp_path / "regions.png") as written:
        assert written.mode == "P"  # a palette image: region numbers as indices, visible colours
        found = np.asarray(written)
    assert sorted(np.unique(found)) == [0, 1]
    capsys.readouterr()
    assert main(["run", images["content"], images["style"], "--out", str(tmp_path / "o.png"), "--store", store,
                 "--content-labels", str(tmp_path / "regions.png"), "--json", *sets]) == 0
    stages = json.loads(capsys.readouterr().out)["stages"]
    key = next(s["key"] for s in stages if s["stage"] == "fuse_segmentation" and s["image"] == "content")
    fed_back = ArtifactStore(store).open("fuse_segmentation", key)
    assert "labels_source" in fed_back.attrs
    assert np.array_equal(fed_back.array("labels"), found)  # load.size=40 is the input's size
