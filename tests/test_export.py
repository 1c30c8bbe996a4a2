"""export.py: TorchScript and ONNX files of every head match PyTorch, carry names and stride, and run in val.py
through models/backends.py with the same results as the .pt."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import export
import val
from data.generators.shapes import CLASS_NAMES, ShapesConfig, generate, render_image
from models.backends import load_backend, parse_names
from models.yolo import DetectionModel
from utils.data.dataloaders import check_dataset, create_dataloader
from utils.io.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]

NAMES = {0: "a", 1: "b", 2: "c"}
CFGS = ["yolov5n.yaml", "yolov5n-decoupled.yaml"]


def real_images(n: int, imgsz: int = 64, split: str = "train") -> torch.Tensor:
    """(n, 3, imgsz, imgsz) RGB in [0, 1] from the shapes generator."""
    cfg = ShapesConfig(imgsz=imgsz, max_objects=4, min_size=10)
    ims = [render_image(cfg, split, i)[0][..., ::-1].transpose(2, 0, 1) for i in range(n)]
    return torch.from_numpy(np.ascontiguousarray(np.stack(ims))).float() / 255


def make_checkpoint(path: Path, cfg: str = "yolov5n.yaml", nc: int = 3, names: dict | None = None,
                    calibrate: bool = True) -> Path:
    """A fresh model; with ``calibrate`` its BatchNorm statistics are measured on a few generated images, so
    that its scores depend on the input (a fresh model's near-constant scores tie, and ties make NMS outputs
    incomparable). The calibrated model is ill-conditioned (activations ~200, boxes ~1500 px): fusing its
    BatchNorm alone moves its outputs by ~1e-4 relative, so exact-match checks use the fresh model."""
    torch.manual_seed(0)
    m = DetectionModel(cfg, nc=nc)
    if calibrate:
        for bn in (x for x in m.modules() if isinstance(x, nn.BatchNorm2d)):
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average
        with torch.no_grad():
            m.train()(real_images(8))
    names = names or (NAMES if nc == 3 else {i: f"k{i}" for i in range(nc)})
    return save_checkpoint({"model": m.state_dict(), "ema": None, "yaml": m.yaml, "names": names, "epoch": -1,
                            "optimizer": None, "best_fitness": 0.0, "updates": 0, "opt": {}, "date": ""}, path)


def pytorch_model(weights: Path) -> DetectionModel:
    """The unfused model in its ordinary eval mode: the reference every export is held to."""
    return DetectionModel.from_checkpoint(load_checkpoint(weights)).eval()


@pytest.mark.parametrize("cfg", CFGS)
def test_dynamic_exports_match_pytorch(cfg: str, tmp_path: Path):
    w = make_checkpoint(tmp_path / "m.pt", cfg, calibrate=False)
    results = export.run(w, include=["torchscript", "onnx"], imgsz=[64, 96], dynamic=True)
    assert {k: v[0].name for k, v in results.items()} == {"torchscript": "m.torchscript", "onnx": "m.onnx"}
    assert all(diff < 1e-3 for _, diff in results.values())
    im = real_images(3, 128, "val")[..., :96]  # another batch size and shape than exported: (3, 3, 128, 96)
    with torch.no_grad():
        ref = pytorch_model(w)(im)[0]
    assert ref.shape == (3, 3 * (16 * 12 + 8 * 6 + 4 * 3), 8)
    for fmt, (f, _) in results.items():
        b = load_backend(f)
        assert (b.fmt, b.names, b.nc, b.stride, b.dynamic, b.fp16) == (fmt, NAMES, 3, 32, True, False)
        got = b(im)
        assert got.dtype == torch.float32 and got.shape == ref.shape
        assert (got - ref).abs().max() < 1e-3, fmt


NANO_HEADS = sorted(p.name for p in (ROOT / "models").glob("*.yaml") if p.name.startswith(("yolov5n", "yolox-nano")))


@pytest.mark.parametrize("cfg", [c for c in NANO_HEADS if c not in CFGS])
def test_every_other_head_exports_to_onnx(cfg: str, tmp_path: Path):
    """Heads added later export through the head contract with no change to export.py."""
    w = make_checkpoint(tmp_path / "m.pt", cfg, calibrate=False)
    f, diff = export.run(w, include=["onnx"], imgsz=[64, 96], dynamic=True)["onnx"]
    assert diff < 1e-3 and load_backend(f).names == NAMES


def test_static_export_has_a_fixed_shape(tmp_path: Path):
    w = make_checkpoint(tmp_path / "m.pt", calibrate=False)
    results = export.run(w, include=["onnx", "torchscript"], imgsz=[64], batch_size=2)
    im = real_images(3)
    with torch.no_grad():
        ref = pytorch_model(w)(im)[0]
    for f, _ in results.values():
        b = load_backend(f)
        assert (b.batch, b.imgsz, b.dynamic, b.names) == (2, (64, 64), False, NAMES)
        assert (b(im) - ref).abs().max() < 1e-3  # batch 3 runs as 2 + (1 padded to 2)
        with pytest.raises(ValueError, match="static .* takes 64x64 .* --dynamic"):
            b(torch.zeros(1, 3, 96, 64))


def test_export_flags(tmp_path: Path, caplog):
    w = make_checkpoint(tmp_path / "m.pt", calibrate=False)
    with caplog.at_level(logging.WARNING, logger="headzoo"):
        assert export.main(["--weights", str(w), "--half", "--device", "cpu", "--include", "onnx"]) == 2
        assert "--half exports FP16 on CUDA only" in caplog.text
        assert export.main(["--weights", str(w), "--include", "tflite"]) == 2
        assert "choose from torchscript, onnx" in caplog.text
        assert export.main(["--weights", str(w), "--include", "onnx", "--imgsz", "70", "--simplify"]) == 0
    assert "using 96 96" in caplog.text
    try:
        import onnxsim  # noqa: F401
    except ImportError:
        assert "--simplify needs onnx-simplifier" in caplog.text
    assert load_backend(w.with_suffix(".onnx")).imgsz == (96, 96)


def test_metadata_names_and_loader_errors(tmp_path: Path):
    assert parse_names("{0: 'person', 1: 'bus'}", "x") == {0: "person", 1: "bus"}  # YOLOv5's str(dict)
    assert parse_names('{"1": "b", "0": "a"}', "x") == {0: "a", 1: "b"}
    assert parse_names('["a", "b"]', "x") == {0: "a", 1: "b"}
    with pytest.raises(ValueError, match="x: metadata 'names'"):
        parse_names("{0: person", "x")
    with pytest.raises(ValueError, match="unsupported format '.engine'"):
        load_backend(tmp_path / "m.engine")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_backend(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.onnx: onnxruntime cannot load it"):
        load_backend(tmp_path / "bad.onnx")
    with pytest.raises(ValueError, match="--half needs a CUDA device"):
        load_backend(tmp_path / "bad.onnx", half=True)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    generate(root / "shapes", ShapesConfig(imgsz=64, n_train=1, n_val=8, max_objects=4, min_size=10, video_seconds=0),
             workers=1, log=lambda s: None)
    names = dict(enumerate(CLASS_NAMES))
    (root / "tiny.yaml").write_text(yaml.safe_dump({"path": str(root / "shapes"), "train": "images/train",
                                                    "val": "images/val", "names": names}))
    return root / "tiny.yaml"


def fit_head(weights: Path, data: Path, steps: int = 30) -> Path:
    """Overfit only the head, a few Adam steps on the val images' cached backbone features, so that val finds
    some objects (mAP > 0) and comparing mAPs means something. Cheap: the backbone runs once."""
    ckpt = load_checkpoint(weights)
    model = DetectionModel.from_checkpoint(ckpt).eval()
    d = check_dataset(data)
    im, targets, _, _ = next(iter(create_dataloader(d["val"], 64, 8, 32, workers=0, names=d["names"])[0]))
    with torch.no_grad():
        feats = model._features(im.float() / 255)
    hyp = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
    criterion, head = model.criterion(hyp, 64), model.head.train()
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    torch.manual_seed(0)
    for _ in range(steps):
        loss = criterion(head(feats), targets)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    ckpt["model"] = model.state_dict()
    return save_checkpoint(ckpt, weights)


def _val(weights: Path, data: Path, out: Path, name: str,
         backend: str = "auto") -> tuple[val.ValResult, dict[str, np.ndarray]]:
    r = val.run(data, weights=str(weights), batch_size=4, imgsz=64, workers=0, plots=False, save_txt=True,
                save_conf=True, project=out, name=name, backend=backend)
    preds = {p.name: np.loadtxt(p, ndmin=2) for p in sorted((out / name / "labels").glob("*.txt"))}
    return r, preds


def test_val_on_exports_gives_the_same_results_as_the_pt(tiny_dataset: Path, tmp_path: Path):
    w = fit_head(make_checkpoint(tmp_path / "m8.pt", nc=8, names=dict(enumerate(CLASS_NAMES))), tiny_dataset)
    files = export.run(w, include=["onnx", "torchscript"], imgsz=[64], dynamic=True)
    r_pt, p_pt = _val(w, tiny_dataset, tmp_path, "pt")
    r_onnx, p_onnx = _val(files["onnx"][0], tiny_dataset, tmp_path, "onnx")
    r_ts, p_ts = _val(files["torchscript"][0], tiny_dataset, tmp_path, "ts")
    assert p_pt and r_pt.map50 > 0  # per-image predictions exist and some objects are found
    assert r_ts.metrics() == r_pt.metrics()  # TorchScript runs the same kernels: identical
    np.testing.assert_allclose(r_onnx.metrics(), r_pt.metrics(), atol=1e-4)
    np.testing.assert_allclose(r_onnx.maps, r_pt.maps, atol=1e-4)
    assert sorted(p_onnx) == sorted(p_pt)
    for k in p_pt:
        a, b = p_pt[k], p_onnx[k]
        assert abs(len(a) - len(b)) <= max(1, len(a) // 100)  # a near-tie at the threshold may flip
        top = min(len(a), len(b), 50)  # the most confident detections agree
        a, b = a[np.argsort(-a[:, 5], kind="stable")][:top], b[np.argsort(-b[:, 5], kind="stable")][:top]
        np.testing.assert_allclose(a[:, 5], b[:, 5], atol=1e-4)
    with pytest.raises(ValueError, match="predicts 3 classes but .*tiny.yaml has nc=8"):
        val.run(tiny_dataset, weights=str(make_checkpoint(tmp_path / "m3.pt")), imgsz=64, workers=0, plots=False,
                project=tmp_path)
