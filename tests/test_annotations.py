"""COCO JSON and VOC XML splits (utils/data/annotations.py): a generated dataset written in both forms by
data/convert.py reads back to the YOLO copy's labels; crowd boxes, empty images, category-id gaps, difficult
objects, degenerate boxes and bad files are handled as documented."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from data.convert import convert, voc_xml
from utils.data.annotations import coco_ids, load_split
from utils.data.config import check_dataset
from utils.data.dataloaders import create_dataloader


@pytest.fixture(scope="module")
def copies(tiny_data, tmp_path_factory):
    """The tiny generated dataset and its COCO and VOC copies: {format: check_dataset dict}."""
    out = tmp_path_factory.mktemp("copies")
    return {"yolo": check_dataset(tiny_data),
            **{to: check_dataset(convert(tiny_data, to, out / to)) for to in ("coco", "voc")}}


def stem(f: str) -> str:
    return f.rsplit("/", 1)[-1].rsplit("_", 1)[-1]  # VOC copies are named <split>_<stem>


@pytest.mark.parametrize("fmt", ["coco", "voc"])
@pytest.mark.parametrize("split", ["train", "val"])
def test_copies_read_back_to_the_yolo_labels(copies, fmt, split):
    ref, other = copies["yolo"], copies[fmt]
    assert other["names"] == ref["names"]
    a_files, _, a = load_split(ref[split], ref["names"])
    b_files, _, b = load_split(other[split], other["names"])
    assert [stem(f) for f in b_files] == [stem(f) for f in a_files]  # same images, same order
    assert sum(len(lb) for lb in a.labels) > 0
    for la, lb in zip(a.labels, b.labels):
        assert la.shape == lb.shape
        np.testing.assert_array_equal(la[:, 0], lb[:, 0])  # same classes
        np.testing.assert_allclose(la[:, 1:], lb[:, 1:], rtol=0, atol=1e-7)  # same boxes within float rounding
    np.testing.assert_array_equal(a.shapes, b.shapes)
    assert (a.report.found, a.report.empty) == (b.report.found, b.report.empty)


def test_dataloader_reads_a_coco_split(copies):
    ref, coco = copies["yolo"], copies["coco"]
    _, ds_a = create_dataloader(ref["val"], 64, 4, 32, workers=0, names=ref["names"])
    _, ds_b = create_dataloader(coco["val"], 64, 4, 32, workers=0, names=coco["names"])
    assert len(ds_a) == len(ds_b)
    for la, lb in zip(ds_a.labels, ds_b.labels):
        np.testing.assert_allclose(la, lb, rtol=0, atol=1e-7)
    assert Path(coco["val"]["coco"]).with_suffix(".cache").is_file()  # the label cache beside the JSON
    image_ids, cats = coco_ids(coco["val"], coco["names"])
    assert [image_ids[f] for f in ds_b.im_files] == list(range(1, len(ds_b) + 1))
    assert cats == [i + 1 for i in coco["names"]]


def test_mixed_list_split(copies):
    ref, coco = copies["yolo"], copies["coco"]
    files, _, res = load_split([ref["val"], coco["val"]], ref["names"])
    n = len(load_split(ref["val"], ref["names"])[0])
    assert len(files) == len(res.labels) == 2 * n == res.report.total


# ------------------------------------------------------------------ edge cases, hand-written files
def image(path, w=64, h=48):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 127, np.uint8))
    return path


def write_yaml(path, spec):
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def coco_edge(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        image(tmp_path / "imgs" / name)
    anns = [
        {"id": 1, "image_id": 10, "category_id": 7, "bbox": [16, 12, 32, 24], "iscrowd": 0},  # class 1
        {"id": 2, "image_id": 10, "category_id": 3, "bbox": [0, 0, 8, 8], "iscrowd": 1},  # crowd
        {"id": 3, "image_id": 10, "category_id": 3, "bbox": [5, 5, 0, 10], "iscrowd": 0},  # zero width
        {"id": 4, "image_id": 10, "category_id": 99, "bbox": [1, 1, 5, 5], "iscrowd": 0},  # unknown category
        {"id": 5, "image_id": 10, "category_id": 3, "bbox": [1, 2, 3], "iscrowd": 0},  # malformed
        {"id": 6, "image_id": 30, "category_id": 3, "bbox": [0, 0, 64, 48]},  # class 0, whole image
        {"id": 7, "image_id": 30, "category_id": 3, "bbox": [0, 0, 4, 4], "iscrowd": 1},  # crowd
    ]
    d = {"images": [{"id": 10, "file_name": "a.jpg", "width": 64, "height": 48},
                    {"id": 20, "file_name": "b.jpg", "width": 64, "height": 48},  # no annotations: background
                    {"id": 30, "file_name": "c.jpg", "width": 64, "height": 48}],
         "annotations": anns,
         "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}]}  # ids with gaps
    (tmp_path / "ann.json").write_text(json.dumps(d))
    return tmp_path


def test_coco_edge_cases(coco_edge, caplog):
    f = write_yaml(coco_edge / "d.yaml", {"path": str(coco_edge), "train": {"coco": "ann.json", "images": "imgs"},
                                          "val": {"coco": "ann.json", "images": "imgs"}})
    data = check_dataset(f)
    assert data["names"] == {0: "a", 1: "b"} and data["nc"] == 2  # from the JSON's categories, ids 3, 7 -> 0, 1
    with caplog.at_level("INFO"):
        files, _, res = load_split(data["val"], data["names"])
    assert [p.rsplit("/", 1)[1] for p in files] == ["a.jpg", "b.jpg", "c.jpg"]
    np.testing.assert_allclose(res.labels[0], [[1, 0.5, 0.5, 0.5, 0.5]])
    assert res.labels[1].shape == (0, 5)  # kept as a background image
    np.testing.assert_allclose(res.labels[2], [[0, 0.5, 0.5, 1, 1]])
    assert res.usable.all() and res.report.empty == 1
    assert res.report.counts == {"crowd": 2, "zero_area": 1, "unknown_class": 1, "malformed": 1}
    assert "ann.json:annotation id 3: box w=0" in caplog.text
    assert "ann.json:annotation id 2: iscrowd=1" in caplog.text


def test_coco_names_in_yaml_map_by_name(coco_edge):
    f = write_yaml(coco_edge / "d.yaml", {"path": str(coco_edge), "train": {"coco": "ann.json", "images": "imgs"},
                                          "val": {"coco": "ann.json", "images": "imgs"}, "names": ["b", "x", "a"]})
    data = check_dataset(f)
    _, _, res = load_split(data["val"], data["names"])
    assert res.labels[0][:, 0].tolist() == [0] and res.labels[2][:, 0].tolist() == [2]
    assert coco_ids(data["val"], data["names"])[1] == [7, -1, 3]


def test_coco_bad_files(coco_edge):
    spec = {"coco": str(coco_edge / "ann.json"), "images": str(coco_edge / "imgs")}
    (coco_edge / "imgs" / "b.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"ann.json: image 'b.jpg' \(id 20\) not found in .*imgs"):
        load_split(spec, {0: "a", 1: "b"})
    (coco_edge / "ann.json").write_text('{"images": [}')
    with pytest.raises(ValueError, match="ann.json: not valid JSON"):
        load_split(spec, {0: "a"})
    (coco_edge / "ann.json").write_text('{"images": []}')
    with pytest.raises(ValueError, match=r"not a COCO instances file, missing \['annotations', 'categories'\]"):
        load_split(spec, {0: "a"})
    f = write_yaml(coco_edge / "d.yaml", {"path": str(coco_edge), "train": {"coco": "ann.json", "image": "imgs"},
                                          "val": "imgs", "names": ["a"]})
    with pytest.raises(ValueError, match="unknown key 'image', did you mean 'images'"):
        check_dataset(f)


@pytest.fixture
def voc_edge(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2007"
    objects = {"000001": [("dog", [1, 1, 33, 17], 0), ("cat", [1, 1, 9, 9], 1), ("yak", [1, 1, 5, 5], 0),
                          ("dog", [20, 20, 20, 30], 0)],  # degenerate: xmin == xmax
               "000002": []}
    for i, objs in objects.items():
        image(voc / "JPEGImages" / f"{i}.jpg")
        (voc / "Annotations").mkdir(parents=True, exist_ok=True)
        (voc / "Annotations" / f"{i}.xml").write_text(voc_xml(f"{i}.jpg", 64, 48, objs))
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "train.txt").write_text("000001\n000002\n")
    return tmp_path


def test_voc_edge_cases(voc_edge):
    names = {0: "cat", 1: "dog"}
    spec = {"voc": str(voc_edge / "VOCdevkit" / "VOC2007"), "set": "train"}
    files, _, res = load_split(spec, names)
    assert [p.rsplit("/", 1)[1] for p in files] == ["000001.jpg", "000002.jpg"]
    # 1-based xmin 1..xmax 33 -> pixels 0..32 of 64: cx 0.25, w 0.5; ymin 1..ymax 17 -> 0..16 of 48
    np.testing.assert_allclose(res.labels[0], [[1, 0.25, 8 / 48, 0.5, 16 / 48]], atol=1e-7)
    assert res.labels[1].shape == (0, 5) and res.report.empty == 1
    assert res.report.counts == {"difficult": 1, "unknown_class": 1, "zero_area": 1}
    _, _, kept = load_split({**spec, "difficult": True}, names)  # another setting: the cache is not reused
    assert sorted(kept.labels[0][:, 0].tolist()) == [0, 1] and "difficult" not in kept.report.counts


def test_voc_bad_files(voc_edge):
    voc = voc_edge / "VOCdevkit" / "VOC2007"
    (voc / "Annotations" / "000002.xml").write_text("<annotation><object></annotation>")
    with pytest.raises(ValueError, match=r"000002.xml: malformed XML \(mismatched tag"):
        load_split({"voc": str(voc), "set": "train"}, {0: "dog"})
    (voc / "JPEGImages" / "000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"VOC image .*000002.jpg not found"):
        load_split({"voc": str(voc), "set": "train"}, {0: "dog"})
    with pytest.raises(FileNotFoundError, match="VOC image set .*test.txt not found"):
        load_split({"voc": str(voc), "set": "test"}, {0: "dog"})
