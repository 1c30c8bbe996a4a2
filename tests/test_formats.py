"""The export-format registry (models/formats): a format defined outside the repo's code (tests/toy_format.py,
registered at test time) is one of export.py's --include choices, is written and checked by it, and runs in val.py
and detect.py through load_backend with the .pt's detections; the registry also drives weights_format, the
suffixes load_backend reads and its unknown-format error."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

import detect
import export
from data.generators.shapes import CLASS_NAMES
from models.backends import load_backend, suffixes, weights_format
from models.formats import FORMATS, register_format
from models.runtime import backend_choices
from tests import toy_format
from tests.test_export import (
    _val,
    fit_head,
    make_checkpoint,
    tiny_dataset,  # noqa: F401  (a fixture)
)


@pytest.fixture
def toy():
    """The toy format registered as its own module would register itself; FORMATS as shipped again after."""
    fmt = register_format(toy_format.FORMAT)
    yield fmt
    del FORMATS[fmt.name]


def test_toy_is_an_include_choice_and_exports_checked(toy, tmp_path: Path, caplog, capsys):
    with pytest.raises(SystemExit):
        export.parse_opt(["--help"])
    assert "one or more of torchscript, onnx, openvino, ncnn, toy" in " ".join(capsys.readouterr().out.split())
    w = make_checkpoint(tmp_path / "m.pt", calibrate=False)
    with caplog.at_level(logging.INFO, logger="headzoo"):
        assert export.main(["--weights", str(w), "--include", "tflite"]) == 2
        assert "choose from torchscript, onnx, openvino, ncnn, toy" in caplog.text
        assert export.main(["--weights", str(w), "--include", "toy", "--imgsz", "64", "--dynamic"]) == 0
    folder = tmp_path / "m_toy_model"
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.yaml", "weights.npz"]
    assert "Toy: starting export with numpy.savez" in caplog.text and "Toy: export success" in caplog.text
    assert "Toy: check on an image at (1, 3, 64, 64), (2, 3, 96, 32)" in caplog.text  # dynamic: a second shape
    b = load_backend(folder)
    assert (b.fmt, b.dynamic, b.stride, b.names) == ("toy", True, 32, {0: "a", 1: "b", 2: "c"})
    assert "toy" not in backend_choices()  # not a CPU runtime: --backend is unchanged


def test_val_and_detect_run_the_toy_export_like_the_pt(toy, tiny_dataset: Path, tmp_path: Path):  # noqa: F811
    w = fit_head(make_checkpoint(tmp_path / "m8.pt", nc=8, names=dict(enumerate(CLASS_NAMES))), tiny_dataset)
    folder, diff = export.run(w, include=["toy"], imgsz=[64], dynamic=True)["toy"]
    assert folder == tmp_path / "m8_toy_model" and diff < 1e-4
    r_pt, p_pt = _val(w, tiny_dataset, tmp_path, "pt", backend="torch")
    r_toy, p_toy = _val(folder, tiny_dataset, tmp_path, "toy")
    assert p_pt and r_pt.map50 > 0
    np.testing.assert_allclose(r_toy.metrics(), r_pt.metrics(), atol=1e-6)
    assert sorted(p_toy) == sorted(p_pt)
    for k in p_pt:
        np.testing.assert_allclose(p_toy[k], p_pt[k], atol=1e-5)
    images = tiny_dataset.parent / "shapes" / "images" / "val"
    labels = {}
    for name, weights in (("pt", w), ("toy", folder)):
        out = detect.run(weights, source=images, imgsz=64, conf_thres=0.01, save_txt=True, save_conf=True,
                         nosave=True, project=tmp_path / "detect", name=name, backend="torch")
        assert out.frames == 8
        labels[name] = {p.name: np.loadtxt(p, ndmin=2) for p in sorted((out.save_dir / "labels").glob("*.txt"))}
    assert labels["pt"] and sorted(labels["toy"]) == sorted(labels["pt"])
    for k in labels["pt"]:
        np.testing.assert_allclose(labels["toy"][k], labels["pt"][k], atol=1e-5)


def test_the_registry_drives_suffixes_and_errors(toy, tmp_path: Path):
    assert weights_format(Path("m_toy_model")) == "_toy_model" and weights_format(Path("m.pt")) == ".pt"
    assert suffixes() == (".pt", ".torchscript", ".onnx", "_openvino_model", "_ncnn_model", "_toy_model")
    with pytest.raises(ValueError, match="unsupported format '.engine'; use one of .pt, .torchscript, .onnx, "
                                         "_openvino_model, _ncnn_model, _toy_model"):
        load_backend(tmp_path / "m.engine")
    with pytest.raises(FileNotFoundError, match="m_toy_model: folder not found"):
        load_backend(tmp_path / "m_toy_model")
    (tmp_path / "m_toy_model").mkdir()
    with pytest.raises(ValueError, match="--half needs a CUDA device, got cpu; on a CPU only OpenVINO models"):
        load_backend(tmp_path / "m_toy_model", half=True)
    with pytest.raises(ValueError, match="'toy' .* clashes with the registered 'toy'"):
        register_format(toy_format.FORMAT)
    with pytest.raises(ValueError, match="clashes with the registered 'onnx'"):
        register_format(dataclasses.replace(toy_format.FORMAT, name="onnx2", suffix=".onnx"))
    with pytest.raises(ValueError, match="suffix '.pt' must be"):
        register_format(dataclasses.replace(toy_format.FORMAT, name="pt2", suffix=".pt"))
    with pytest.raises(ValueError, match="lower-case identifier"):
        register_format(dataclasses.replace(toy_format.FORMAT, name="Toy 2", suffix="_toy2_model"))


def test_an_unregistered_format_is_unknown(tmp_path: Path):
    assert "toy" not in FORMATS and weights_format(Path("m_toy_model")) is None
    with pytest.raises(ValueError, match="unsupported format 'm_toy_model'; use one of .pt, .torchscript, .onnx, "
                                         "_openvino_model, _ncnn_model$"):
        load_backend(tmp_path / "m_toy_model")
