"""Checkpoint I/O: atomic saves, weights_only loading, restricted reading of YOLOv5 pickles, row-aligned transfer."""
from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import textwrap
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from utils.io import checkpoint as ckpt_mod
from utils.io.checkpoint import StandIn, load_checkpoint, save_checkpoint, transfer_weights

ROOT = Path(__file__).resolve().parents[1]


def _small_ckpt(epoch: int = 3) -> tuple[dict, nn.Module]:
    torch.manual_seed(epoch)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    ckpt = {"model": model.state_dict(), "ema": copy.deepcopy(model.state_dict()), "updates": 7,
            "optimizer": opt.state_dict(), "epoch": epoch, "best_fitness": np.float64(0.25),
            "yaml": {"nc": 2, "backbone": [[-1, 1, "Conv", [16, 3, 2]]], "head": []},
            "names": {0: "a", 1: "b"}, "date": "2024-01-01T00:00:00", "version": "0.1",
            "opt": argparse.Namespace(weights=Path("w.pt"), imgsz=np.int64(64), hyp={"lr0": np.float32(0.01)},
                                      freeze=[0], classes={2, 1})}
    return ckpt, model


# ------------------------------------------------------------------------------------------ saving / loading
def test_save_and_load_weights_only(tmp_path):
    ckpt, model = _small_ckpt()
    path = save_checkpoint(ckpt, tmp_path / "weights" / "last.pt")
    raw = torch.load(path, weights_only=True)  # the contract: no pickled classes inside
    assert raw["opt"] == {"weights": "w.pt", "imgsz": 64, "hyp": {"lr0": pytest.approx(0.01)}, "freeze": [0],
                          "classes": [1, 2]}
    assert type(raw["best_fitness"]) is float and type(raw["opt"]["imgsz"]) is int
    loaded = load_checkpoint(path)
    assert loaded["format"] == "headzoo" and loaded["epoch"] == 3 and loaded["yaml"] == ckpt["yaml"]
    for k, v in model.state_dict().items():
        assert torch.equal(loaded["model"][k], v), k
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    opt.load_state_dict(loaded["optimizer"])  # the optimizer state round-trips
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp file left behind


def test_save_rejects_unreadable_values(tmp_path):
    ckpt, model = _small_ckpt()
    ckpt["model"] = model  # a pickled module is exactly what we refuse to write
    with pytest.raises(TypeError, match=r"ckpt\['model'\].*Sequential.*state_dict"):
        save_checkpoint(ckpt, tmp_path / "x.pt")
    assert not list(tmp_path.iterdir())


def test_load_missing_and_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(bad)


def test_atomic_save_exception_mid_write(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(_small_ckpt(1)[0], path)

    def broken_save(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_small_ckpt(2)[0], path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_atomic_save_sigkill_mid_write(tmp_path):
    """A process killed (SIGKILL, no cleanup) half-way through writing leaves the previous file valid."""
    path = tmp_path / "last.pt"
    save_checkpoint(_small_ckpt(1)[0], path)
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        import torch
        from utils.io import checkpoint
        real_save = torch.save
        def dying_save(obj, f):
            f.write(b"PK\\x03\\x04 partial")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        checkpoint.torch.save = dying_save
        checkpoint.save_checkpoint({{"model": {{"w": torch.zeros(3)}}, "epoch": 2}}, {str(path)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert load_checkpoint(path)["epoch"] == 1
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last.pt"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.pt.") and leftovers[0].endswith(".tmp")


# ------------------------------------------------------------------------------------------ YOLOv5 pickles
class _Tripwire(types.ModuleType):
    """Stands in sys.modules for a module the checkpoint names: any attribute lookup is recorded and fails."""

    def __init__(self, name: str, log: list):
        super().__init__(name)
        self.__dict__["_log"] = log
        self.__path__ = []  # a package, so submodule imports resolve through sys.modules

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        self._log.append(f"{self.__name__}.{attr}")
        raise RuntimeError(f"checkpoint loading touched {self.__name__}.{attr}")


def _fake_yolov5_classes():
    """Small look-alikes of YOLOv5's classes, named as in its repo (models.common.Conv, models.yolo.Detect...)."""
    class Conv(nn.Module):
        def __init__(self, c1, c2, k=1, s=1):
            super().__init__()
            self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
            self.bn = nn.BatchNorm2d(c2)
            self.act = nn.SiLU()

    class Detect(nn.Module):
        def __init__(self, nc, ch):
            super().__init__()
            self.nc, self.no, self.na = nc, nc + 5, 3
            self.m = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in ch)
            self.register_buffer("anchors", torch.rand(len(ch), 3, 2))
            self.register_buffer("scratch", torch.zeros(1), persistent=False)
            self.stride = torch.tensor([8.0, 16.0])

    class DetectionModel(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.yaml = cfg
            self.model = nn.Sequential(Conv(3, 8, 3, 2), Conv(8, 16, 3, 2), Detect(cfg["nc"], (8, 16)))
            self.names = ["cat", "dog"]
            self.stride = torch.tensor([8.0, 16.0])
            self.hook = os.system  # a callable in the pickle: must come back inert

    for cls, mod in ((Conv, "models.common"), (Detect, "models.yolo"), (DetectionModel, "models.yolo")):
        cls.__module__, cls.__qualname__ = mod, cls.__name__
    return Conv, Detect, DetectionModel


class _Evil:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


def _write_yolov5_pt(path: Path, monkeypatch) -> tuple[nn.Module, dict]:
    Conv, Detect, DetectionModel = _fake_yolov5_classes()
    cfg = {"nc": 2, "depth_multiple": 0.33, "width_multiple": 0.25, "anchors": [[10, 13, 16, 30, 33, 23]] * 2,
           "backbone": [[-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [64, 3, 2]]],
           "head": [[[0, 1], 1, "Detect", ["nc", "anchors"]]]}
    torch.manual_seed(0)
    model = DetectionModel(cfg)
    ema = copy.deepcopy(model)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(1.0)  # EMA weights differ from the raw model's: the loader must pick these
    with monkeypatch.context() as mp:  # let pickle find the classes under YOLOv5's module names
        common, yolo = types.ModuleType("models.common"), types.ModuleType("models.yolo")
        common.Conv, yolo.Detect, yolo.DetectionModel = Conv, Detect, DetectionModel
        mp.setitem(sys.modules, "models.common", common)
        mp.setitem(sys.modules, "models.yolo", yolo)
        torch.save({"epoch": 9, "best_fitness": np.array([0.4]), "model": copy.deepcopy(model).half(),
                    "ema": copy.deepcopy(ema).half(), "updates": 123, "optimizer": None,
                    "opt": {"imgsz": 640, "evil": _Evil(path.parent / "pwned")},
                    "git": {"commit": "abc"}, "date": "2022-11-22T00:00:00"}, path)
    return ema, cfg


def test_load_yolov5_pickle_without_importing(tmp_path, monkeypatch):
    path = tmp_path / "yolov5n.pt"
    ema, cfg = _write_yolov5_pt(path, monkeypatch)
    with pytest.raises(Exception):  # torch itself refuses it under weights_only=True
        torch.load(path, weights_only=True)
    touched: list[str] = []
    for name in ("models", "models.common", "models.yolo"):
        monkeypatch.setitem(sys.modules, name, _Tripwire(name, touched))
    ckpt = load_checkpoint(path)
    assert touched == [] and not (tmp_path / "pwned").exists()  # nothing imported, nothing executed
    assert ckpt["format"] == "yolov5" and ckpt["source_class"] == "models.yolo.DetectionModel"
    expected = ema.half().state_dict()
    assert list(ckpt["model"]) == list(expected)  # YOLOv5 key names and order, e.g. model.0.conv.weight
    assert "model.2.anchors" in ckpt["model"] and "model.2.scratch" not in ckpt["model"]
    for k, v in expected.items():
        assert ckpt["model"][k].dtype == v.dtype and torch.equal(ckpt["model"][k], v), k
    assert ckpt["yaml"] == cfg and ckpt["names"] == ["cat", "dog"] and ckpt["epoch"] == 9
    assert torch.equal(ckpt["stride"], torch.tensor([8.0, 16.0]))
    assert ckpt["opt"] == {"imgsz": 640} and ckpt["ema"] is None  # the non-plain entry is dropped (and logged)


def test_restricted_unpickler_neutralises_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": _Evil(tmp_path / "pwned"), "t": torch.arange(3), "od": OrderedDict(a=1), "s": {1, 2}}, path)
    out = ckpt_mod.load_restricted(path)
    assert not (tmp_path / "pwned").exists()
    assert isinstance(out["x"], StandIn) and out["x"]._source in ("posix.system", "nt.system", "os.system")
    assert out["x"]._standin_args == (f"touch {tmp_path / 'pwned'}",)
    assert torch.equal(out["t"], torch.arange(3)) and out["od"] == OrderedDict(a=1) and out["s"] == {1, 2}
    with pytest.raises(ValueError, match="evil.pt"):
        load_checkpoint(path)  # not ours and not a YOLOv5 model


# ------------------------------------------------------------------------------------------ transfer
def _row(t: str, *shapes, prefix="m"):
    return t, {f"{prefix}.{i}": torch.randn(*s) for i, s in enumerate(shapes)}


def _build(rows):
    """rows [(type, {suffix: tensor})] -> (state_dict, yaml) with keys model.<i>.<suffix>."""
    sd = {f"model.{i}.{k}": v for i, (_, ts) in enumerate(rows) for k, v in ts.items()}
    yaml = {"backbone": [[-1, 1, t, []] for t, _ in rows[:3]], "head": [[-1, 1, t, []] for t, _ in rows[3:]]}
    return sd, yaml


SRC_ROWS = [_row("Conv", (8, 3, 3, 3), (8,)), _row("Conv", (16, 8, 3, 3), (16,)), _row("C3", (16, 16, 1, 1), (16,)),
            _row("nn.Upsample"), _row("Concat"), _row("Conv", (32, 16, 1, 1), (32,)), _row("Detect", (21, 32, 1, 1))]


def test_transfer_by_name_when_rows_line_up():
    src_sd, src_yaml = _build(SRC_ROWS)
    dst_rows = SRC_ROWS[:-1] + [_row("Detect", (30, 32, 1, 1))]  # other nc: the head starts fresh
    dst_sd, dst_yaml = _build([(t, {k: torch.zeros_like(v) for k, v in ts.items()}) for t, ts in dst_rows])
    new_sd, report = transfer_weights(src_sd, src_yaml, dst_sd, dst_yaml)
    assert report.mode == "name" and report.transferred == 8 and report.total == 9
    assert report.fresh == [6] and report.summary("a.pt") == "Transferred 8/9 items from a.pt"
    assert torch.equal(new_sd["model.5.m.0"], src_sd["model.5.m.0"])
    assert not new_sd["model.6.m.0"].any()


def test_transfer_aligns_rows_after_insert_and_removal():
    src_sd, src_yaml = _build(SRC_ROWS)
    inserted = _row("Conv", (16, 16, 3, 3), (16,))  # a new row after row 1 shifts every later index
    dst_rows = SRC_ROWS[:2] + [inserted] + SRC_ROWS[2:]
    dst_sd, dst_yaml = _build([(t, {k: torch.zeros_like(v) for k, v in ts.items()}) for t, ts in dst_rows])
    dst_sd["model.3.m.0"] = dst_sd["model.3.m.0"].half()  # dtype follows the destination
    new_sd, report = transfer_weights(src_sd, src_yaml, dst_sd, dst_yaml)
    assert report.mode == "aligned"
    assert report.rows == [(0, 0), (1, 1), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7)]
    assert report.fresh == [2] and report.transferred == 9 and report.total == 11
    for i, j in ((2, 3), (5, 6), (6, 7)):
        for k in ("m.0",):
            assert torch.allclose(new_sd[f"model.{j}.{k}"].float(), src_sd[f"model.{i}.{k}"], atol=1e-2)
    assert new_sd["model.3.m.0"].dtype == torch.float16
    assert not new_sd["model.2.m.0"].any()
    assert report.lines() == ["transfer by row alignment: 7 rows matched (src->dst): 0-1->0-1 2-6->3-7",
                              "rows starting fresh: 2"]
    # the other way round: a removed row
    back_sd, back_report = transfer_weights(new_sd, dst_yaml, src_sd, src_yaml)
    assert back_report.mode == "aligned" and back_report.transferred == 9 and back_report.fresh == []
    # no YAML on one side: rows are aligned by their tensors alone
    _, no_yaml = transfer_weights(src_sd, None, dst_sd, dst_yaml)
    assert no_yaml.mode == "aligned" and no_yaml.transferred == 9
    # exclusion (YOLOv5 excludes 'anchor' when the cfg gives anchors)
    _, ex_report = transfer_weights(src_sd, src_yaml, dst_sd, dst_yaml, exclude=("m.1",))
    assert ex_report.transferred == 9 - 4 and 3 in ex_report.partial


def test_transfer_into_inserted_row_yolov5n():
    """Acceptance: a row inserted into yolov5n's backbone no longer costs the later layers their weights."""
    yolo = pytest.importorskip("models.yolo")
    src = yolo.DetectionModel("yolov5n.yaml", nc=3)
    torch.manual_seed(0)
    with torch.no_grad():  # "trained" weights: anything but the initialisation
        for v in src.state_dict().values():
            if v.is_floating_point():
                v.copy_(torch.randn_like(v))
    cfg = copy.deepcopy(src.yaml)
    cfg["backbone"].insert(2, [-1, 1, "Conv", [128, 3, 1]])
    for row in cfg["backbone"][3:] + cfg["head"]:  # absolute `from` indices >= 2 move down by one
        f = row[0]
        row[0] = [x + 1 if x >= 2 else x for x in f] if isinstance(f, list) else (f + 1 if f >= 2 else f)
    dst = yolo.DetectionModel(cfg, nc=3)
    init = copy.deepcopy(dst.state_dict())
    new_sd, report = transfer_weights(src.state_dict(), src.yaml, dst.state_dict(), dst.yaml)
    dst.load_state_dict(new_sd, strict=True)
    src_sd, dst_sd = src.state_dict(), dst.state_dict()
    yolov5_rule = sum(k in src_sd and src_sd[k].shape == v.shape for k, v in dst_sd.items())  # intersect_dicts
    assert report.mode == "aligned" and report.fresh == [2] and report.partial == []
    assert report.transferred == report.total - sum(k.startswith("model.2.") for k in init) > yolov5_rule + 100
    n_layers = len(src.model)
    assert report.rows == [(0, 0), (1, 1)] + [(i, i + 1) for i in range(2, n_layers)]
    for i in range(2, n_layers):  # every layer after the insertion got the weights of its source row
        for (ka, a), (kb, b) in zip(src.model[i].state_dict().items(), dst.model[i + 1].state_dict().items()):
            assert ka == kb and torch.equal(a, b), (i, ka)
    for k, v in dst.model[2].state_dict().items():  # the inserted row starts fresh
        assert torch.equal(v, init[f"model.2.{k}"]), k
