"""Model zoo core: every YAML builds and runs, YOLOv5 v7.0's figures hold, heads keep one layout."""
import math
import subprocess
import sys
from copy import deepcopy
from pathlib import Path

import pytest
import torch
import yaml

from models.common import Conv
from models.heads import DetectDcoupleHead
from models.yolo import MODELS_DIR, DetectionModel, find_cfg, load_cfg

ROOT = Path(__file__).resolve().parents[1]
CFGS = sorted(f"yolov5{k}{v}.yaml" for k in "nsmlx" for v in ("", "-decoupled"))  # the anchor-based heads

# YOLOv5 v7.0's printed figures at nc=80 (unfused); the decoupled count is the issue's.
PARAMS = {"yolov5n.yaml": 1_872_157, "yolov5s.yaml": 7_235_389, "yolov5m.yaml": 21_190_557,
          "yolov5l.yaml": 46_563_709, "yolov5x.yaml": 86_749_405, "yolov5s-decoupled.yaml": 8_992_829}
GFLOPS = {"yolov5n.yaml": 4.6, "yolov5s.yaml": 16.6, "yolov5m.yaml": 49.2, "yolov5l.yaml": 109.6, "yolov5x.yaml": 206.3}


def test_all_ten_cfgs_present():
    assert all((MODELS_DIR / c).is_file() for c in CFGS)


@pytest.mark.parametrize("nc", [1, 80])
@pytest.mark.parametrize("cfg", CFGS)
def test_build_and_forward_non_square(cfg, nc):
    model = DetectionModel(cfg, nc=nc)
    assert model.stride.tolist() == [8, 16, 32]
    h, w = 128, 160  # non-square
    x = torch.rand(1, 3, h, w)
    raw = model.train()(x)
    assert [tuple(r.shape) for r in raw] == [(1, 3, h // s, w // s, nc + 5) for s in (8, 16, 32)]
    model.eval()
    with torch.no_grad():
        y, raw_eval = model(x)
    n = 3 * sum((h // s) * (w // s) for s in (8, 16, 32))
    assert y.shape == (1, n, nc + 5)
    assert torch.isfinite(y).all()
    assert ((y[..., 4:] >= 0) & (y[..., 4:] <= 1)).all()  # probabilities after decode
    assert [r.shape for r in raw_eval] == [r.shape for r in raw]


@pytest.mark.parametrize("cfg", sorted(PARAMS))
def test_parameter_counts_exact(cfg):
    assert sum(p.numel() for p in DetectionModel(cfg, nc=80).parameters()) == PARAMS[cfg]


@pytest.mark.parametrize("cfg", ["yolov5n.yaml", "yolov5s.yaml"])
def test_gflops_and_layers_match_yolov5(cfg):
    info = DetectionModel(cfg).info()
    assert round(info["gflops"], 1) == GFLOPS[cfg]
    assert info["layers"] == 214  # YOLOv5 v7.0 prints "214 layers" for every P5 model at depth 0.33
    fused = DetectionModel(cfg).fuse().info()
    assert fused["layers"] == 157


def test_decoupled_hidden_width_follows_width_multiple():
    for k, hidden in {"n": 64, "s": 128, "m": 192}.items():
        head = DetectionModel(f"yolov5{k}-decoupled.yaml").head
        assert isinstance(head, DetectDcoupleHead)
        assert {lvl.stem.conv.out_channels for lvl in head.m} == {hidden}


def test_coupled_and_decoupled_same_layouts():
    x = torch.rand(2, 3, 128, 96)
    a, b = DetectionModel("yolov5n.yaml", nc=3).eval(), DetectionModel("yolov5n-decoupled.yaml", nc=3).eval()
    with torch.no_grad():
        (ya, ra), (yb, rb) = a(x), b(x)
    assert ya.shape == yb.shape and [r.shape for r in ra] == [r.shape for r in rb]


def _zero_pred_weights(head: DetectDcoupleHead, reg_bias: torch.Tensor) -> None:
    with torch.no_grad():
        for lvl in head.m:
            for conv in (lvl.cls_preds, lvl.reg_preds, lvl.obj_preds):
                conv.weight.zero_()
            lvl.reg_preds.bias.copy_(reg_bias)


def test_decoupled_channels_contiguous_per_anchor():
    """Each anchor's channels are [reg(4), obj(1), cls(nc)] and the bias priors land on obj and cls."""
    nc, na = 3, 3
    model = DetectionModel("yolov5n-decoupled.yaml", nc=nc).eval()
    reg_bias = torch.arange(4 * na, dtype=torch.float32)  # anchor a, coord k -> 4a + k
    _zero_pred_weights(model.head, reg_bias)
    raw = model.head(model._features(torch.rand(1, 3, 64, 64)))
    prior = -math.log((1 - 0.01) / 0.01)
    for p in raw:
        assert p.shape[1] == na and p.shape[-1] == 5 + nc
        for a in range(na):
            torch.testing.assert_close(p[0, a, ..., :4], reg_bias[4 * a:4 * a + 4].expand_as(p[0, a, ..., :4]))
            torch.testing.assert_close(p[0, a, ..., 4:], torch.full_like(p[0, a, ..., 4:], prior))


def test_coupled_bias_priors():
    model = DetectionModel("yolov5n.yaml", nc=80)
    for conv, s in zip(model.head.m, (8, 16, 32)):
        b = conv.bias.detach().view(3, -1)
        assert torch.all(b[:, 4] - math.log(8 / (640 / s) ** 2) < 0.5)  # default init is within +-1/sqrt(fan_in)
        assert b[:, 4].mean() < -3 and b[:, 5:].mean() < -3


def test_anchors_in_grid_units_and_ordered():
    head = DetectionModel("yolov5s.yaml").head
    px = (head.anchors * head.stride.view(-1, 1, 1)).tolist()
    assert px[0] == [[10, 13], [16, 30], [33, 23]] and px[2] == [[116, 90], [156, 198], [373, 326]]
    cfg, _ = load_cfg("yolov5s.yaml")
    cfg["anchors"] = cfg["anchors"][::-1]  # reversed order is corrected by the anchor-order check
    assert (DetectionModel(cfg).head.anchors * head.stride.view(-1, 1, 1)).tolist() == px


def _randomise_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("cfg", ["yolov5n.yaml", "yolov5n-decoupled.yaml"])
def test_fuse_keeps_outputs(cfg):
    model = DetectionModel(cfg, nc=5).eval()
    _randomise_bn(model)
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        y0, raw0 = model(x)
        fused = deepcopy(model).fuse()
        y1, raw1 = fused(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert max((a - b).abs().max() for a, b in zip(raw0, raw1)) < 1e-4  # logits
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-4)  # boxes in pixels: float32 rounding scales with size


def test_grid_rebuilt_on_size_change():
    model = DetectionModel("yolov5n.yaml", nc=2).eval()
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
        g64 = model.head._grid._grids[0]
        model(torch.rand(1, 3, 64, 64))
        assert model.head._grid._grids[0] is g64  # cached while the size holds
        y, _ = model(torch.rand(1, 3, 96, 128))
    g = model.head._grid._grids[0]
    assert g.shape[2:4] == (12, 16) and g is not g64
    # decoded centres of the last level cover the new input, not the old one
    assert y[..., 0].max() > 100 and y[..., 1].max() > 70


def test_export_mode_returns_only_decoded():
    model = DetectionModel("yolov5n.yaml", nc=2).eval().set_export()
    with torch.no_grad():
        y = model(torch.rand(1, 3, 64, 64))
    assert isinstance(y, torch.Tensor) and y.shape == (1, 3 * (64 + 16 + 4), 7)


def test_state_dict_keys_follow_yolov5():
    sd = DetectionModel("yolov5s.yaml").state_dict()
    for k in ("model.0.conv.weight", "model.2.cv1.bn.running_mean", "model.2.m.0.cv2.conv.weight",
              "model.9.cv2.conv.weight", "model.24.m.0.weight", "model.24.m.2.bias", "model.24.anchors"):
        assert k in sd, k
    assert sd["model.24.anchors"].shape == (3, 3, 2)


def test_backbone_and_neck_transfer_into_decoupled():
    src = DetectionModel("yolov5s.yaml").state_dict()
    dst_model = DetectionModel("yolov5s-decoupled.yaml")
    dst = dst_model.state_dict()
    shared = {k: v for k, v in src.items() if k in dst and dst[k].shape == v.shape}
    body = [k for k in src if not k.startswith("model.24.")]
    assert set(body) <= set(shared)
    dst_model.load_state_dict(shared, strict=False)
    torch.testing.assert_close(dst_model.state_dict()["model.8.m.0.cv1.conv.weight"], src["model.8.m.0.cv1.conv.weight"])


def test_activation_is_per_model_not_per_process():
    cfg, _ = load_cfg("yolov5n.yaml")
    leaky = DetectionModel({**cfg, "activation": "nn.LeakyReLU(0.1)"})
    plain = DetectionModel(cfg)
    acts = lambda m: {type(c.act).__name__ for c in m.modules() if isinstance(c, Conv)}
    assert acts(leaky) == {"LeakyReLU"} and acts(plain) == {"SiLU"}


def test_find_cfg_by_bare_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_cfg("yolov5s-decoupled.yaml") == MODELS_DIR / "yolov5s-decoupled.yaml"
    assert find_cfg("yolov5n") == MODELS_DIR / "yolov5n.yaml"
    with pytest.raises(FileNotFoundError, match="yolov5s-decoupled.yaml"):
        find_cfg("yolov5s-decupled.yaml")


# ---------------------------------------------------------------- bad YAML
def _cfg(**changes):
    cfg = yaml.safe_load((MODELS_DIR / "yolov5n.yaml").read_text())
    cfg.update(changes)
    return cfg


def _with_row(section, index, row):
    cfg = _cfg()
    cfg[section] = deepcopy(cfg[section])
    cfg[section][index] = row
    return cfg


BAD = {
    "unknown module": (_with_row("backbone", 2, [-1, 3, "C4", [128]]), r"row 2 \(C4\): unknown module 'C4'.*C3"),
    "from out of range": (_with_row("head", 2, [[-1, -30], 1, "Concat", [1]]), r"row 12 \(Concat\).*out of range"),
    "from forward": (_with_row("head", 2, [[-1, 20], 1, "Concat", [1]]), r"row 12 \(Concat\).*points forward"),
    "wrong arg count": (_with_row("backbone", 1, [-1, 1, "Conv", [128, 3, 2, 1, 1, 1, True, 9]]),
                        r"row 1 \(Conv\): wrong arguments"),
    "missing channels": (_with_row("backbone", 1, [-1, 1, "Conv", []]), r"row 1 \(Conv\): first argument"),
    "anchors vs inputs": (_with_row("head", 14, [[17, 20], 1, "Detect", ["nc", "anchors"]]),
                          r"row 24 \(Detect\).*3 anchor levels for 2 input"),
    "channel mismatch": (_with_row("backbone", 2, [-1, 1, "nn.Conv2d", [64, 32, 1]]),
                         r"row 2 \(nn.Conv2d\): channel mismatch: expects 64 input channels but row 1 gives 32"),
    "spatial mismatch": (_with_row("head", 2, [[-1, 4], 1, "Concat", [1]]), r"row 12 \(Concat\): forward fails"),
    "head not last": (_with_row("head", 3, [[4, 6, 9], 1, "Detect", ["nc", "anchors"]]),
                      r"row 13 \(Detect\): a head must be the last row"),
    "bad number": (_with_row("backbone", 2, [-1, 0, "C3", [128]]), r"row 2 \(C3\): 'number' must be"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_yaml_messages(case):
    cfg, pattern = BAD[case]
    with pytest.raises(ValueError, match=pattern):
        DetectionModel(cfg)


@pytest.mark.parametrize("key", ["nc", "backbone", "head"])
def test_missing_top_level_key(key):
    cfg = _cfg()
    del cfg[key]
    with pytest.raises(ValueError, match=f"missing required key '{key}'"):
        DetectionModel(cfg)


def test_unknown_top_level_key_and_bad_nc():
    with pytest.raises(ValueError, match="did you mean 'depth_multiple'"):
        DetectionModel(_cfg(depth_multiplier=0.33))
    with pytest.raises(ValueError, match="'nc' must be a positive integer"):
        DetectionModel(_cfg(nc=0))


def test_anchor_count_per_level_mismatch():
    with pytest.raises(ValueError, match=r"row 24 \(Detect\).*same even number"):
        DetectionModel(_cfg(anchors=[[10, 13, 16, 30], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]))


def test_cli_prints_table_from_any_cwd(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "models" / "yolo.py"), "--cfg", "yolov5s-decoupled.yaml"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    assert "DetectDcoupleHead" in text and "8992829 parameters" in text and "GFLOPs" in text


def test_cli_profile_and_bad_cfg(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "models" / "yolo.py"), "--cfg", "yolov5n.yaml", "--nc", "3",
                          "--profile", "--imgsz", "64"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "time (ms)" in out.stdout + out.stderr and "Total" in out.stdout + out.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_with_row("backbone", 2, [-1, 3, "C4", [128]])))
    out = subprocess.run([sys.executable, str(ROOT / "models" / "yolo.py"), "--cfg", str(bad)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "unknown module 'C4'" in out.stderr and "Traceback" not in out.stderr
