"""export.py's edge formats: OpenVINO and ncnn folders match PyTorch, carry names and stride, and run in val.py and
detect.py through models/backends.py. Their packages are optional (not in requirements.txt): the "not installed"
path is tested always, the exports only where the packages are."""
from __future__ import annotations

import importlib.util
import logging
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import detect
import export
from data.generators.shapes import CLASS_NAMES
from models.backends import load_backend
from models.formats import FORMATS
from tests.test_export import (
    NAMES,
    _val,
    fit_head,
    make_checkpoint,
    pytorch_model,
    real_images,
    tiny_dataset,  # noqa: F401  (a fixture)
)

HAVE_OPENVINO = importlib.util.find_spec("openvino") is not None
HAVE_NCNN = importlib.util.find_spec("pnnx") is not None and importlib.util.find_spec("ncnn") is not None
needs_openvino = pytest.mark.skipif(not HAVE_OPENVINO, reason="optional package openvino not installed "
                                                               "(pip install openvino)")
needs_ncnn = pytest.mark.skipif(not HAVE_NCNN, reason="optional packages pnnx and ncnn not installed "
                                                      "(pip install pnnx ncnn)")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("w") / "m.pt", calibrate=False)


@pytest.mark.parametrize("module, fmt", [("openvino", "openvino"), ("pnnx", "ncnn"), ("ncnn", "ncnn")])
def test_missing_package_is_a_one_line_error(module: str, fmt: str, weights: Path, monkeypatch, caplog):
    for other in set(FORMATS[fmt].packages) - {module}:  # installed or not, only ``module`` is missing here
        monkeypatch.setitem(sys.modules, other, types.ModuleType(other))
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError, as when not installed
    with caplog.at_level(logging.ERROR, logger="headzoo"):
        assert export.main(["--weights", str(weights), "--include", fmt, "--imgsz", "64"]) == 2
    assert f"--include {fmt} needs the optional package '{module}', which is not installed: pip install {module}" \
        in caplog.text
    assert not weights.with_name(f"m_{fmt}_model").exists()  # checked before anything is written


def test_every_missing_package_is_named(weights: Path, monkeypatch, caplog):
    for module in ("pnnx", "ncnn"):
        monkeypatch.setitem(sys.modules, module, None)
    with caplog.at_level(logging.ERROR, logger="headzoo"):
        assert export.main(["--weights", str(weights), "--include", "ncnn", "--imgsz", "64"]) == 2
    assert "--include ncnn needs the optional packages 'pnnx', 'ncnn', which are not installed: pip install pnnx " \
           "ncnn" in caplog.text


@pytest.mark.parametrize("module, fmt", [("openvino", "openvino"), ("ncnn", "ncnn")])
def test_missing_runtime_names_the_package(module: str, fmt: str, tmp_path: Path, monkeypatch):
    folder = tmp_path / f"m_{fmt}_model"
    folder.mkdir()
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ValueError, match=f"m_{fmt}_model: running .* needs the optional package '{module}', .*"
                                         f"pip install {module}"):
        load_backend(folder)
    with pytest.raises(FileNotFoundError, match="folder not found"):
        load_backend(tmp_path / f"other_{fmt}_model")


def test_edge_export_flags(weights: Path, caplog):
    with caplog.at_level(logging.ERROR, logger="headzoo"):
        assert export.main(["--weights", str(weights), "--include", "ncnn", "--dynamic"]) == 2
        assert export.main(["--weights", str(weights), "--include", "ncnn", "--batch-size", "2"]) == 2
        assert export.main(["--weights", str(weights), "--include", "engine"]) == 2
    assert caplog.text.count("--include ncnn exports batch 1 at a fixed size") == 2
    assert "choose from torchscript, onnx, openvino, ncnn" in caplog.text


@needs_openvino
@pytest.mark.parametrize("dynamic", [True, False])
def test_openvino_matches_pytorch(dynamic: bool, weights: Path):
    f, diff = export.run(weights, include=["openvino"], imgsz=[64, 96], dynamic=dynamic)["openvino"]
    assert f.name == "m_openvino_model" and sorted(p.name for p in f.iterdir()) == ["m.bin", "m.xml", "metadata.yaml"]
    assert diff < 1e-3 and yaml.safe_load((f / "metadata.yaml").read_text())["names"] == NAMES
    b = load_backend(f)
    assert (b.fmt, b.names, b.stride, b.dynamic, b.fp16) == ("openvino", NAMES, 32, dynamic, False)
    im = real_images(3, 128, "val")[..., :96] if dynamic else real_images(3, 96, "val")[:, :, :64]  # (3, 3, H, 96)
    with torch.no_grad():
        ref = pytorch_model(weights)(im)[0]
    got = b(im)  # static: batch 3 runs as three batches of 1
    assert got.dtype == torch.float32 and got.shape == ref.shape and (got - ref).abs().max() < 1e-3
    if not dynamic:
        with pytest.raises(ValueError, match="static openvino export takes 64x96"):
            b(torch.zeros(1, 3, 96, 64))
        (f / "metadata.yaml").rename(f / "m.yaml")  # YOLOv5 v7.0's folder: <name>.yaml beside <name>.xml
        assert load_backend(f).names == NAMES


@needs_ncnn
def test_ncnn_matches_pytorch(weights: Path):
    f, diff = export.run(weights, include=["ncnn"], imgsz=[64, 96])["ncnn"]
    assert sorted(p.name for p in f.iterdir()) == ["metadata.yaml", "model.ncnn.bin", "model.ncnn.param"]
    b = load_backend(f)
    assert (diff < 1e-3, b.fmt, b.names, b.batch, b.imgsz, b.fp16) == (True, "ncnn", NAMES, 1, (64, 96), False)
    im = real_images(3, 96, "val")[:, :, :64]
    with torch.no_grad():
        ref = pytorch_model(weights)(im)[0]
    got = b(im)
    assert got.shape == ref.shape and (got - ref).abs().max() < 1e-3


@pytest.mark.skipif(not (HAVE_OPENVINO or HAVE_NCNN), reason="optional packages openvino, pnnx and ncnn not "
                                                             "installed (pip install openvino pnnx ncnn)")
def test_val_and_detect_run_the_folders(tiny_dataset: Path, tmp_path: Path):  # noqa: F811
    w = fit_head(make_checkpoint(tmp_path / "m8.pt", nc=8, names=dict(enumerate(CLASS_NAMES))), tiny_dataset)
    include = [f for f, ok in (("openvino", HAVE_OPENVINO), ("ncnn", HAVE_NCNN)) if ok]
    files = export.run(w, include=["onnx", *include], imgsz=[64])  # static, as ncnn is: square letterbox in val
    r_ref, p_ref = _val(files.pop("onnx")[0], tiny_dataset, tmp_path, "onnx")  # the same preprocessing as the folders
    assert p_ref and r_ref.map50 > 0
    images = tiny_dataset.parent / "shapes" / "images" / "val"
    for fmt, (f, _) in files.items():
        r, p = _val(f, tiny_dataset, tmp_path, fmt)
        np.testing.assert_allclose(r.metrics(), r_ref.metrics(), atol=1e-4, err_msg=fmt)
        assert sorted(p) == sorted(p_ref)
        d = detect.run(str(f), images, imgsz=64, conf_thres=0.01, nosave=True, save_txt=True, project=tmp_path,
                       name=f"detect-{fmt}")
        assert d.frames == 8 and d.end == "done" and d.labels > 0
