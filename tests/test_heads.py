"""The head contract v2 (models/heads/base.py), checked for every model YAML and every head in the table, and a
test-only family (tests/toy_head.py) taken through train.py, val.py, detect.py and export.py unchanged."""
from __future__ import annotations

import csv
import math
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch
import toy_head  # noqa: E402  (tests/ is on sys.path under pytest)

from models.heads import HEADS
from models.heads.base import Criterion, EpochState
from models.yolo import DetectionModel, load_cfg
from utils.boxes import postprocess
from utils.io.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
YAMLS = sorted(p.name for p in (ROOT / "models").glob("*.yaml"))
HYP = {"box": 0.05, "cls": 0.5, "obj": 1.0, "anchor_t": 4.0}


def small(cfg: dict) -> dict:
    """The same rows at a fraction of the width and depth: the contract, not the size, is under test."""
    return {**cfg, "nc": 3, "width_multiple": min(float(cfg.get("width_multiple", 1)), 0.125),
            "depth_multiple": min(float(cfg.get("depth_multiple", 1)), 0.33)}


def targets_for(batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    rows = []
    for b in range(batch):
        for _ in range(3):
            wh = torch.rand(2, generator=g) * 0.3 + 0.1
            xy = torch.rand(2, generator=g) * (1 - wh) + wh / 2
            rows.append(torch.cat((torch.tensor([b, float(torch.randint(0, 3, (1,), generator=g))]), xy, wh)))
    return torch.stack(rows)


def contract_case(cfg: dict, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DetectionModel(cfg)
    head = model.head
    assert type(head).__name__ in HEADS
    # a training step: finite named losses, gradients everywhere the training forward reaches
    crit = model.criterion(HYP, 64)
    assert isinstance(crit, Criterion) and len(crit.loss_names) >= 1
    for c in (model, crit):
        c.on_epoch(EpochState(0, 2, mosaic=True))
    imgs, targets = torch.rand(2, 3, 64, 64), targets_for(2)
    model.train()
    loss, items = crit(model(imgs, targets), targets)
    assert torch.isfinite(loss) and items.shape == (len(crit.loss_names),) and torch.isfinite(items).all()
    loss.backward()
    # eval: the common layout (B, N, 5 + nc), probabilities in [0, 1]
    model.eval()
    with torch.no_grad():
        y, raw = model(imgs)
    assert y.ndim == 3 and y.shape[0] == 2 and y.shape[2] == 5 + model.yaml["nc"]
    assert float(y[..., 4:].min()) >= 0 and float(y[..., 4:].max()) <= 1
    dets = postprocess(y, model.suppressed, conf_thres=0.0, max_det=10)
    assert len(dets) == 2 and all(d.shape[1] == 6 for d in dets)
    # validation loss: reported, or declared unavailable by the head
    if head.val_loss:
        _, val_items = crit(raw, targets)
        assert torch.isfinite(val_items).all()
    # fuse keeps the outputs (and drops training-only modules)
    fused = deepcopy(model).fuse()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert all(getattr(fused.head, n) is None for n in head.train_only)
    # a two-stage head's boxes pass BN-folding noise (1e-6) through proposal NMS, RoIAlign and a second
    # regression: a few coordinates move by a few hundredths of a pixel (0.02 px seen); scores stay within 1e-3
    atol = 0.05 if model.suppressed else 1e-3
    with torch.no_grad():
        torch.testing.assert_close(fused(imgs)[0], y, rtol=1e-3, atol=atol)
    # a checkpoint loads with weights_only=True and rebuilds the same model, training-only modules included
    save_checkpoint({"model": model.state_dict(), "ema": None, "yaml": model.yaml, "names": model.names},
                    tmp_path / "m.pt")
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    again = DetectionModel.from_checkpoint(ckpt).eval()
    assert set(again.state_dict()) == set(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(again(imgs)[0], y)
    # ONNX export matches PyTorch
    import export
    out = export.run(tmp_path / "m.pt", include=["onnx"], imgsz=[64, 64])
    assert out["onnx"][1] < atol, out


@pytest.mark.parametrize("name", YAMLS)
def test_every_yaml_keeps_the_contract(name, tmp_path):
    contract_case(small(load_cfg(name)[0]), tmp_path)


def test_every_head_in_the_table_is_covered_by_a_yaml():
    used = {load_cfg(name)[0]["head"][-1][2] for name in YAMLS}
    assert set(HEADS) <= used, set(HEADS) - used


def test_toy_head_keeps_the_contract(monkeypatch, tmp_path):
    toy_head.register(monkeypatch)
    contract_case(deepcopy(toy_head.TOY_YAML), tmp_path)


def test_multi_output_row_select_and_foreign_init(monkeypatch):
    toy_head.register(monkeypatch)
    model = DetectionModel(deepcopy(toy_head.TOY_YAML))
    assert len(model.head.m) == 3 and model.stride.tolist() == [8.0, 16.0, 16.0]
    own = model.model[2]  # a row that brings its own initialisation keeps torch's BatchNorm settings
    assert all(m.momentum == 0.1 and m.eps == 1e-5 for m in own.modules() if isinstance(m, torch.nn.BatchNorm2d))
    ours = model.model[0].bn
    assert ours.momentum == 0.03 and ours.eps == 1e-3
    cfg = deepcopy(toy_head.TOY_YAML)
    cfg["backbone"][3] = [2, 1, "Select", [2]]
    with pytest.raises(ValueError, match=r"row 3 \(Select\).*output index of the 2 outputs"):
        DetectionModel(cfg)
    cfg = deepcopy(toy_head.TOY_YAML)
    cfg["backbone"][3] = [2, 1, "Conv", [32, 1, 1]]
    with pytest.raises(ValueError, match=r"row 3 \(Conv\).*takes one input map.*Select"):
        DetectionModel(cfg)


def test_deploy_count_excludes_training_only_modules(monkeypatch):
    toy_head.register(monkeypatch)
    model = DetectionModel(deepcopy(toy_head.TOY_YAML))
    aux = sum(p.numel() for p in model.head.aux.parameters())
    total = sum(p.numel() for p in model.parameters())
    info = model.info(64)
    assert info["parameters"] == total and info["deploy_parameters"] == total - aux and aux > 30_000


def test_toy_family_through_train_val_detect_export(monkeypatch, tmp_path, tiny_data):
    """No objectness, a training-only branch switched by the epoch hook, targets in the training forward,
    already-suppressed detections, inputs from a multi-output row: train.py, val.py, detect.py and export.py
    run it as they are."""
    import yaml

    import detect
    import export
    import train
    import val
    toy_head.register(monkeypatch)
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(yaml.safe_dump({**toy_head.TOY_YAML, "nc": 8}))
    rc = train.main(["--cfg", str(cfg), "--data", str(tiny_data), "--epochs", "2", "--imgsz", "64", "--batch-size",
                     "4", "--workers", "0", "--noautoanchor", "--project", str(tmp_path), "--name", "exp"])
    assert rc == 0
    run = tmp_path / "exp"
    rows = list(csv.DictReader(open(run / "results.csv")))
    rows = [{k.strip(): v.strip() for k, v in r.items()} for r in rows]
    assert float(rows[0]["train/aux_loss"]) > 0 and float(rows[1]["train/aux_loss"]) == 0  # the epoch hook
    assert all(math.isnan(float(r["val/heat_loss"])) for r in rows)  # declared unavailable, not 0
    best = run / "weights" / "best.pt"
    ckpt = load_checkpoint(best)
    assert any(".aux." in k for k in ckpt["model"])  # checkpoints keep the training-only branch
    res = val.run(str(tiny_data), weights=str(best), imgsz=64, batch_size=4, workers=0, project=tmp_path,
                  name="val")
    assert 0 <= res.map50 <= 1
    out = detect.run(best, source=Path(str(tiny_data)).parent / "shapes" / "images" / "val", imgsz=64,
                     project=tmp_path, name="det", conf_thres=0.01)
    assert out.frames == 8
    files = export.run(best, include=["onnx"], imgsz=[64, 64])
    onnx_file, diff = files["onnx"]
    assert diff < 1e-3
    import onnx
    inits = sum(int(np.prod(t.dims)) for t in onnx.load(str(onnx_file)).graph.initializer)
    model = DetectionModel.from_checkpoint(ckpt)
    aux = sum(p.numel() for p in model.head.aux.parameters())
    deployed = sum(p.numel() for p in deepcopy(model).fuse().parameters())
    assert inits <= deployed + 16 < aux  # every exported weight is a deployed one; the aux branch is not there
    backend_res = val.run(str(tiny_data), weights=str(onnx_file), imgsz=64, batch_size=1, workers=0,
                          project=tmp_path, name="val_onnx")
    assert abs(backend_res.map50 - res.map50) < 0.05  # the file carries the suppressed flag: no NMS there either


def test_yolox_head_trains_with_a_second_assigner_from_yaml(tmp_path, tiny_data):
    """One YAML argument swaps SimOTA for FCOS-style centre sampling."""
    import yaml

    import train
    cfg, _ = load_cfg("yolov5n-decoupled-af.yaml")
    cfg = small(cfg)
    cfg["head"][-1][3] = ["nc", 256, False, "center"]
    path = tmp_path / "af-center.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rc = train.main(["--cfg", str(path), "--data", str(tiny_data), "--epochs", "2", "--imgsz", "64", "--batch-size",
                     "4", "--workers", "0", "--noplots", "--project", str(tmp_path), "--name", "exp"])
    assert rc == 0
    rows = [{k.strip(): v.strip() for k, v in r.items()} for r in csv.DictReader(open(tmp_path / "exp" / "results.csv"))]
    assert len(rows) == 2 and all(math.isfinite(float(r["train/iou_loss"])) for r in rows)
    assert float(rows[0]["train/iou_loss"]) > 0  # the centre assigner found positives
    assert load_checkpoint(tmp_path / "exp" / "weights" / "last.pt")["yaml"]["head"][-1][3][3] == "center"
