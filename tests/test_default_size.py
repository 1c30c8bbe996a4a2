"""The size a model was trained at is the default inference size everywhere a size is not given: the Python API,
detect.py, val.py and export.py (an explicit size still wins); val.py and detect.py default to the newest best.pt."""
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import detect
import export
import hubconf
from models.backends import load_backend
from models.yolo import DetectionModel, load_cfg
from utils.io.checkpoint import load_checkpoint, save_checkpoint, train_imgsz
from utils.io.files import default_weights

TRAINED_AT = 96


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A tiny yolov5n checkpoint whose opt says it trained at 96 px, as train.py saves one."""
    cfg = {**load_cfg("yolov5n.yaml")[0], "nc": 2, "width_multiple": 0.125}
    torch.manual_seed(0)
    model = DetectionModel(cfg)
    path = tmp_path_factory.mktemp("size") / "best.pt"
    return save_checkpoint({"model": model.state_dict(), "ema": None, "yaml": model.yaml, "names": {0: "a", 1: "b"},
                            "opt": {"imgsz": TRAINED_AT, "epochs": 1}}, path)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    file = tmp_path_factory.mktemp("im") / "im.jpg"
    cv2.imwrite(str(file), np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8))
    return file


@pytest.mark.parametrize("opt, size", [({"imgsz": 160}, 160), ({"imgsz": [640, 480]}, 640), ({"img_size": 320}, 320),
                                       ({"imgsz": "160"}, 160), ({}, None), (None, None), ({"imgsz": 0}, None),
                                       ({"imgsz": True}, None), ({"imgsz": "big"}, None)])
def test_train_imgsz_reads_ours_yolov5s_and_metadata(opt, size):
    assert train_imgsz(opt) == size


def test_checkpoint_records_its_size(ckpt):
    assert DetectionModel.from_checkpoint(load_checkpoint(ckpt)).train_imgsz == TRAINED_AT
    assert load_backend(ckpt).train_imgsz == TRAINED_AT


def test_python_api_letterboxes_to_the_training_size(ckpt, image):
    model = hubconf.custom(path=str(ckpt), device="cpu")
    assert max(model(str(image)).s[2:]) == TRAINED_AT  # 300 x 200 scaled to fit 96, not 640
    assert max(model(str(image), size=64).s[2:]) == 64  # a size given wins


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_detect_defaults_to_the_training_size(ckpt, image, tmp_path, backend):
    res = detect.run(ckpt, source=image, nosave=True, project=tmp_path, backend=backend)
    assert max(res.shape[2:]) == TRAINED_AT
    res = detect.run(ckpt, source=image, imgsz=128, nosave=True, project=tmp_path, backend=backend)
    assert max(res.shape[2:]) == 128


def test_export_defaults_to_the_training_size_and_records_it(ckpt, tmp_path):
    out = export.run(ckpt, include=["onnx"], out=tmp_path / "m.onnx")
    backend = load_backend(out["onnx"][0])
    assert backend.train_imgsz == TRAINED_AT and backend.imgsz == (TRAINED_AT, TRAINED_AT)  # static at 96


def test_val_and_detect_default_to_the_newest_best_pt(tmp_path):
    with pytest.raises(FileNotFoundError, match="train one first"):
        default_weights(tmp_path)
    for i, name in enumerate(("exp", "exp2", "exp3")):
        f = tmp_path / name / "weights" / "best.pt"
        f.parent.mkdir(parents=True)
        f.write_bytes(b"x")
        os.utime(f, (1000 + (i == 1) * 10, 1000 + (i == 1) * 10))  # exp2 is the newest
    assert default_weights(tmp_path) == tmp_path / "exp2" / "weights" / "best.pt"
