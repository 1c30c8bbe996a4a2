"""The Python API (hubconf.py, utils/hub): torch.hub.load of a local checkpoint, every input kind, boxes in the
original images' pixels, YOLOv5's result formats and files, the YAML entries."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import hubconf
from models.yolo import DetectionModel, load_cfg
from utils.hub import AutoShape, Detections
from utils.hub.detections import XYWH_COLUMNS, XYXY_COLUMNS
from utils.io.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
NAMES = {0: "circle", 1: "square", 2: "star"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A tiny yolov5n (nc=3) checkpoint with class names, as train.py saves one."""
    cfg = {**load_cfg("yolov5n.yaml")[0], "nc": 3, "width_multiple": 0.125}
    torch.manual_seed(0)
    model = DetectionModel(cfg)
    path = tmp_path_factory.mktemp("hub") / "best.pt"
    return save_checkpoint({"model": model.state_dict(), "ema": None, "yaml": model.yaml, "names": NAMES}, path)


@pytest.fixture(scope="module")
def model(ckpt) -> AutoShape:
    m = torch.hub.load(str(ROOT), "custom", path=str(ckpt), source="local", device="cpu", verbose=False)
    m.conf = 0.001  # random weights: low scores
    return m


def picture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """An HWC uint8 RGB image with a few coloured rectangles."""
    rng = np.random.default_rng(seed)
    im = np.full((h, w, 3), 40, np.uint8)
    for _ in range(4):
        x, y = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
        im[y:y + int(rng.integers(6, h // 2)), x:x + int(rng.integers(6, w // 2))] = rng.integers(80, 255, 3)
    return im


def test_torch_hub_load_custom_takes_every_input_kind(model, tmp_path):
    assert isinstance(model, AutoShape) and model.names == NAMES
    file = tmp_path / "scene.png"
    cv2.imwrite(str(file), picture(48, 80)[..., ::-1])  # RGB -> BGR for cv2
    inputs = [str(file), file, picture(70, 50, 1), Image.fromarray(picture(64, 64, 2))]
    for x in inputs:
        r = model(x, size=64)
        assert isinstance(r, Detections) and len(r) == 1 and r.xyxy[0].ndim == 2 and r.xyxy[0].shape[1] == 6
    r = model(inputs, size=64)
    assert len(r) == 4 and r.files[:2] == ["scene.jpg", "scene.jpg"] and r.files[2] == "image2.jpg"
    assert [im.shape for im in r.ims] == [(48, 80, 3), (48, 80, 3), (70, 50, 3), (64, 64, 3)]
    assert r.s[0] == 4 and r.s[2] % 32 == 0 and r.s[3] % 32 == 0
    for x in (r.xyxy, r.xywh, r.xyxyn, r.xywhn):
        assert len(x) == 4 and all(isinstance(t, torch.Tensor) and t.shape[1] == 6 for t in x)
    assert sum(len(p) for p in r.pred) > 0, "conf=0.001 on random weights should leave some boxes"
    for p, im in zip(r.xyxy, r.ims):  # original pixels: inside each image, not the 64 px input
        assert bool((p[:, [0, 2]] <= im.shape[1]).all()) and bool((p[:, [1, 3]] <= im.shape[0]).all())
    torch.testing.assert_close(r.xyxy[0], r.xyxy[1])  # a str path and a Path are the same image


def test_result_formats_agree_and_pandas_has_yolov5_columns(model):
    r = model([picture(60, 100), picture(90, 40, 3)], size=64)
    for i, im in enumerate(r.ims):
        h, w = im.shape[:2]
        gain = torch.tensor([w, h, w, h, 1, 1], dtype=torch.float32)
        torch.testing.assert_close(r.xyxyn[i] * gain, r.xyxy[i])
        torch.testing.assert_close(r.xywhn[i] * gain, r.xywh[i])
        torch.testing.assert_close(r.xywh[i][:, 2], r.xyxy[i][:, 2] - r.xyxy[i][:, 0])
    p = r.pandas()
    assert list(p.xyxy[0].columns) == XYXY_COLUMNS == ["xmin", "ymin", "xmax", "ymax", "confidence", "class", "name"]
    assert list(p.xywhn[1].columns) == XYWH_COLUMNS
    df = p.xyxy[0]
    assert len(df) == len(r.xyxy[0]) and set(df["name"]) <= set(NAMES.values())
    assert np.allclose(df[["xmin", "ymin", "xmax", "ymax", "confidence"]].to_numpy(), r.xyxy[0][:, :5].numpy())
    assert isinstance(r.xyxy[0], torch.Tensor), "pandas() returns a copy"
    parts = r.tolist()
    assert len(parts) == 2 and all(len(d) == 1 for d in parts)
    torch.testing.assert_close(parts[1].xyxy[0], r.xyxy[1])
    text = str(r)
    assert "image 1/2: 60x100" in text and "image 2/2: 90x40" in text and "Speed:" in text


def test_thresholds_classes_and_max_det_are_attributes(model):
    im = picture(64, 64)
    model.max_det, model.classes = 3, [1]
    try:
        r = model(im, size=64)
        assert len(r.xyxy[0]) <= 3 and bool((r.xyxy[0][:, 5] == 1).all())
    finally:
        model.max_det, model.classes = 1000, None
    with pytest.raises(AttributeError):
        model.conf_thres = 0.5  # YOLOv5's attribute is conf: a typo is an error, not a no-op


class WhiteBoxFinder:
    """A stand-in model: one detection around the white pixels of each input, in input pixels."""

    stride, names, suppressed, device, imgsz = 32, {0: "white"}, False, torch.device("cpu"), None

    def __call__(self, im: torch.Tensor) -> torch.Tensor:
        rows = []
        for x in im:
            ys, xs = torch.nonzero(x.min(0).values > 0.5, as_tuple=True)
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            rows.append(torch.tensor([[(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 1.0, 1.0]]))
        return torch.stack(rows)


def test_boxes_come_back_in_each_original_images_pixels():
    """Two images of different sizes and aspect ratios share one letterboxed batch (different scales and
    padding); each box must land on the white rectangle in its own image."""
    a, b = np.zeros((90, 160, 3), np.uint8), np.zeros((200, 120, 3), np.uint8)
    a[20:50, 40:80] = 255
    b[100:180, 10:60] = 255
    r = AutoShape(WhiteBoxFinder())([a, b], size=256)
    assert r.s == (2, 3, 256, 256)
    torch.testing.assert_close(r.xyxy[0][0, :4], torch.tensor([40.0, 20, 80, 50]), atol=1.5, rtol=0)
    torch.testing.assert_close(r.xyxy[1][0, :4], torch.tensor([10.0, 100, 60, 180]), atol=1.5, rtol=0)
    assert r.pandas().xyxy[1]["name"].tolist() == ["white"]


def test_matches_detect_py_on_a_file(model, ckpt, tmp_path):
    """The same pieces as detect.py (letterbox, postprocess, scale_boxes) give the same boxes."""
    import detect

    file = tmp_path / "im.jpg"
    cv2.imwrite(str(file), picture(64, 96)[..., ::-1])
    res = detect.run(ckpt, source=file, imgsz=96, conf_thres=0.001, device="cpu", save_txt=True, save_conf=True,
                     nosave=True, project=tmp_path / "detect")
    rows = np.loadtxt(res.save_dir / "labels" / "im.txt", ndmin=2)  # cls cx cy w h conf (normalised)
    r = model(str(file), size=96)
    assert r.s[2:] == (64, 96) and len(rows) == len(r.xywhn[0]) > 0
    ours = r.xywhn[0].numpy()
    order = np.lexsort((ours[:, 0], -ours[:, 4]))
    theirs = rows[np.lexsort((rows[:, 1], -rows[:, 5]))]
    assert np.allclose(ours[order][:, [5, 0, 1, 2, 3, 4]], theirs, atol=1 / 64 + 1e-4)  # detect.py rounds to px


def test_save_crop_render_write_yolov5s_files(model, tmp_path):
    r = model([picture(48, 80), picture(64, 64, 2)], size=64)
    first = r.save(save_dir=tmp_path / "runs" / "detect" / "exp")
    second = r.save(save_dir=tmp_path / "runs" / "detect" / "exp")
    assert first.name == "exp" and second.name == "exp2"
    assert sorted(p.name for p in first.iterdir()) == ["image0.jpg", "image1.jpg"]
    assert cv2.imread(str(first / "image0.jpg")).shape == (48, 80, 3)
    crops = r.crop(save_dir=tmp_path / "runs" / "detect" / "exp")
    n = sum(len(p) for p in r.pred)
    assert len(crops) == n and set(crops[0]) == {"box", "conf", "cls", "label", "im"}
    saved = list((tmp_path / "runs" / "detect" / "exp3" / "crops").rglob("*.jpg"))
    assert 0 < len(saved) <= n and {p.parent.name for p in saved} <= set(NAMES.values())
    assert r.crop(save=False) and not (tmp_path / "runs" / "detect" / "exp4").exists()
    originals = [im.copy() for im in r.ims]
    drawn = r.render()
    assert drawn is r.ims and [d.shape for d in drawn] == [o.shape for o in originals]
    assert any((d != o).any() for d, o in zip(drawn, originals))
    r.crop(save=False)  # crops come from the clean images, not the drawn ones
    assert np.array_equal(r.crop(save=False)[0]["im"], r.tolist()[0].crop(save=False)[0]["im"])


def test_tensor_input_returns_raw_predictions(model):
    y = model(torch.rand(2, 3, 64, 64))
    assert y.shape[0] == 2 and y.shape[2] == 5 + len(NAMES)


def test_yaml_entries_build_with_nc(tmp_path):
    m = torch.hub.load(str(ROOT), "yolov5n_decoupled", nc=3, device="cpu", source="local", verbose=False)
    assert isinstance(m, AutoShape) and len(m.names) == 3 and m.model.yaml["nc"] == 3
    assert len(m(picture(40, 72), size=64)) == 1
    raw = hubconf.nanodet_plus_m(nc=3, autoshape=False, device="cpu")
    assert isinstance(raw, DetectionModel) and raw.yaml["nc"] == 3
    stems = {p.stem.replace("-", "_") for p in (ROOT / "models").glob("*.yaml")}
    assert stems <= set(dir(hubconf)) and {"yolov5n", "yolov5n_decoupled_af", "nanodet_plus_m"} <= stems
    with pytest.raises(ValueError, match="custom"):
        hubconf.yolov5n(pretrained=True)


def test_missing_or_bad_inputs_are_clear_errors(model, tmp_path):
    missing = tmp_path / "nope" / "best.pt"
    with pytest.raises(FileNotFoundError, match="nope"):
        torch.hub.load(str(ROOT), "custom", path=str(missing), source="local", verbose=False)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        model(str(tmp_path / "missing.jpg"))
    with pytest.raises(ValueError, match="nothing is downloaded"):
        model("https://example.com/zidane.jpg")
    with pytest.raises(ValueError, match="uint8"):
        model(np.zeros((32, 32, 3)))
    with pytest.raises(TypeError, match="input 1"):
        model([picture(32, 32), 5])


def test_custom_loads_an_onnx_export_through_the_same_backend(model, ckpt, tmp_path):
    pytest.importorskip("onnxruntime")
    import shutil

    import export

    pt = shutil.copy(ckpt, tmp_path / "best.pt")
    out = export.run(pt, include=["onnx"], imgsz=[64, 64])
    onnx_model = hubconf.custom(out["onnx"][0], device="cpu")
    onnx_model.conf = model.conf
    im = picture(48, 80)
    a, b = model(im, size=64), onnx_model(im, size=64)
    assert b.s == (1, 3, 64, 64) and a.s == (1, 3, 64, 64)  # static export: its own size
    torch.testing.assert_close(b.xyxy[0], a.xyxy[0], atol=1e-2, rtol=1e-3)
