"""val.py --save-json: COCO's image ids (file stems), 91-id categories, original-pixel boxes, pycocotools scoring
against the dataset's annotations/instances_val2017.json or our own labels.

A perfect detector is simulated: the val loader is wrapped to remember each batch's labels and val's NMS step is
replaced by one that returns them as detections, so the rect batching, letterbox and rescaling are the real ones."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch import nn

import val
from utils.boxes import xywh2xyxy
from utils.data.dataloaders import check_dataset, create_dataloader
from utils.evaluation.coco import CocoResults, image_id

pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# hand-written, independent of COCO80_TO_91: class index -> COCO category id
HAND_CATEGORY = {0: 1, 11: 13, 56: 62, 79: 90}
# stem: (width, height, [(class, x, y, w, h) top-left pixels])
IMAGES = {"000000000139": (96, 64, [(0, 10, 8, 30, 40), (56, 50, 20, 36, 30)]),
          "000000000285": (48, 80, [(79, 4, 6, 30, 50)]),
          "000000000632": (64, 64, [(11, 20, 20, 24, 24), (0, 2, 2, 12, 20)]),
          "000000000724": (72, 40, [])}  # no objects: in the ground truth's images all the same


class _RecordingLoader:
    """The val loader, remembering the last batch's targets (val.run scales them to batch pixels in place)."""

    def __init__(self, loader):
        self.loader, self.targets = loader, None

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.targets = batch[1]
            yield batch


class _NoModel(nn.Module):
    suppressed = False

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, im):
        return torch.zeros(im.shape[0], 0, 85)


def _perfect_postprocess(loader: _RecordingLoader):
    def postprocess(preds, *args, **kwargs):
        t = loader.targets  # (n, 6) image, cls, cxcywh in batch pixels
        out = []
        for i in range(preds.shape[0]):
            rows = t[t[:, 0] == i]
            conf = torch.full((len(rows), 1), 0.9)
            out.append(torch.cat((xywh2xyxy(rows[:, 2:6]), conf, rows[:, 1:2]), 1))
        return out
    return postprocess


def _write_dataset(root: Path, names: dict, annotations: bool) -> Path:
    (root / "images" / "val2017").mkdir(parents=True)
    (root / "labels" / "val2017").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem, (w, h, boxes) in IMAGES.items():
        cv2.imwrite(str(root / "images" / "val2017" / f"{stem}.png"), rng.integers(0, 255, (h, w, 3), np.uint8))
        lines = [f"{c} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}" for c, x, y, bw, bh in boxes]
        (root / "labels" / "val2017" / f"{stem}.txt").write_text("\n".join(lines))
    if annotations:
        (root / "annotations").mkdir()
        anns = [{"id": k + 1, "image_id": int(stem), "category_id": HAND_CATEGORY[c], "bbox": [x, y, bw, bh],
                 "area": bw * bh, "iscrowd": 0}
                for k, (stem, (c, x, y, bw, bh)) in enumerate((s, b) for s, (_, _, bs) in IMAGES.items() for b in bs)]
        gt = {"images": [{"id": int(s), "width": w, "height": h, "file_name": f"{s}.jpg"}
                         for s, (w, h, _) in IMAGES.items()],
              "annotations": anns,
              "categories": [{"id": cid, "name": names[c]} for c, cid in HAND_CATEGORY.items()]}
        (root / "annotations" / "instances_val2017.json").write_text(json.dumps(gt))
    spec = {"path": str(root), "train": "images/val2017", "val": "images/val2017", "names": names}
    (root / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root / "data.yaml"


def _run_val(data_yaml: Path, save_dir: Path, monkeypatch) -> tuple[val.ValResult, list[dict]]:
    data = check_dataset(data_yaml)
    loader = _RecordingLoader(create_dataloader(data["val"], 64, 3, 32, pad=0.5, rect=True, workers=0,
                                                names=data["names"])[0])
    monkeypatch.setattr(val, "postprocess", _perfect_postprocess(loader))
    res = val.run(data, model=_NoModel(), dataloader=loader, save_json=True, save_dir=save_dir, plots=False)
    return res, json.loads((save_dir / "model_predictions.json").read_text())


def test_coco_json_ids_categories_and_official_annotations(tmp_path, monkeypatch, caplog):
    names = yaml.safe_load((ROOT / "data" / "coco.yaml").read_text())["names"]
    data_yaml = _write_dataset(tmp_path / "coco", names, annotations=True)
    with caplog.at_level(logging.INFO):
        res, rows = _run_val(data_yaml, tmp_path, monkeypatch)
    assert "instances_val2017.json" in caplog.text and "reported from pycocotools" in caplog.text
    assert {r["image_id"] for r in rows} == {139, 285, 632} and all(type(r["image_id"]) is int for r in rows)
    got = sorted((r["image_id"], r["category_id"], *r["bbox"]) for r in rows)
    want = sorted((int(s), HAND_CATEGORY[c], x, y, bw, bh) for s, (_, _, bs) in IMAGES.items() for c, x, y, bw, bh in bs)
    assert [g[:2] for g in got] == [w[:2] for w in want]  # ids and COCO 91-ids per box
    np.testing.assert_allclose([g[2:] for g in got], [w[2:] for w in want], atol=0.01)  # xywh top-left, pixels
    assert all(r["score"] == 0.9 for r in rows)
    assert res.map == pytest.approx(1.0, abs=1e-3) and res.map50 == pytest.approx(1.0, abs=1e-3)  # pycocotools'
    gt = COCO(str(tmp_path / "coco" / "annotations" / "instances_val2017.json"))  # scored here too, independently
    ev = COCOeval(gt, gt.loadRes(str(tmp_path / "model_predictions.json")), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0, abs=1e-3) and ev.stats[1] == pytest.approx(1.0, abs=1e-3)


def test_other_datasets_use_class_indices_and_own_ground_truth(tmp_path, monkeypatch, caplog):
    names = {i: f"thing{i}" for i in range(80)}  # 80 classes, but not COCO's: no 91-id mapping
    data_yaml = _write_dataset(tmp_path / "mine", names, annotations=False)
    with caplog.at_level(logging.INFO):
        res, rows = _run_val(data_yaml, tmp_path, monkeypatch)
    assert sorted((r["image_id"], r["category_id"]) for r in rows) == sorted(
        (int(s), c) for s, (_, _, bs) in IMAGES.items() for c, *_ in bs)
    assert "COCOeval (pycocotools): mAP50-95 1.0000, mAP50 1.0000" in caplog.text  # own labels, same image ids
    assert "reported from pycocotools" not in caplog.text


def test_image_ids_follow_yolov5_and_stay_one_type():
    assert image_id("a/b/000000000139.jpg") == 139 and image_id("x/cat_01.png") == "cat_01"
    coco = CocoResults.for_dataset({0: "a", 1: "b"})
    pred, labels = torch.tensor([[1.0, 2.0, 11.0, 22.0, 0.123456, 1.0]]), torch.tensor([[1.0, 1.0, 2.0, 11.0, 22.0]])
    coco.add("d/000007.jpg", pred, labels)
    coco.add("d/dog.jpg", pred[:0], labels[:0])
    coco.finish()  # mixed numeric and named stems: all strings, so pycocotools can sort them
    assert coco.images == ["7", "dog"] and coco.detections == [
        {"image_id": "7", "category_id": 1, "bbox": [1.0, 2.0, 10.0, 20.0], "score": 0.12346}]
    gt = coco.ground_truth()
    assert [i["id"] for i in gt["images"]] == ["7", "dog"] and gt["annotations"][0]["image_id"] == "7"
    assert gt["annotations"][0]["bbox"] == [1.0, 2.0, 10.0, 20.0]


def test_coco_split_is_scored_against_its_own_json(tmp_path, monkeypatch, caplog):
    """A val split given as {coco: json, images: dir}: detections carry the JSON's own image ids (not the stems)
    and category ids (with gaps); a crowd box is no target of ours and an ignore region for pycocotools."""
    root = tmp_path / "own"
    (root / "imgs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, anns, cat = [], [], {"a": 5, "b": 9}
    for k, (stem, (w, h, boxes)) in enumerate(IMAGES.items(), 101):
        cv2.imwrite(str(root / "imgs" / f"{stem}.png"), rng.integers(0, 255, (h, w, 3), np.uint8))
        images.append({"id": k, "file_name": f"{stem}.png", "width": w, "height": h})
        anns += [{"image_id": k, "category_id": cat["a" if c == 0 else "b"],
                  "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0} for c, x, y, bw, bh in boxes]
    anns.append({"image_id": 101, "category_id": 5, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 1})
    for i, a in enumerate(anns, 1):
        a["id"] = i
    (root / "instances.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": i, "name": n} for n, i in cat.items()]}))
    spec = {"coco": "instances.json", "images": "imgs"}
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": spec, "val": spec}))  # names: JSON's
    with caplog.at_level(logging.INFO):
        res, rows = _run_val(root / "data.yaml", tmp_path, monkeypatch)
    assert "image and category ids of" in caplog.text and "reported from pycocotools" in caplog.text
    assert {r["image_id"] for r in rows} == {101, 102, 103} and {r["category_id"] for r in rows} == {5, 9}
    assert res.map == pytest.approx(1.0, abs=1e-3)  # the crowd box neither missed nor needed
