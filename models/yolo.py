"""YAML -> detection model.

``DetectionModel`` builds a detector from a model YAML in YOLOv5 v7.0's layer language (``models/parse.py``:
``parse_model`` and ``MODULES``, the table of what a row may name; heads in ``models.heads.HEADS``), probes its
strides, initialises it and runs it: raw outputs in training, decoded ones in eval.

Usage: python models/yolo.py --cfg yolov5s-decoupled.yaml [--nc 3] [--profile]
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from copy import deepcopy
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from models.common import Conv
from models.fusion import fuse_conv_bn
from models.heads.base import Head
from models.parse import (  # noqa: F401  (MODELS_DIR, MODULES, Block, MULTI, find_cfg, make_divisible: re-exported)
    MODELS_DIR,
    MODULES,
    MULTI,
    Block,
    checkpoint_cfg,
    find_cfg,
    head_class,
    initialize_weights,
    load_cfg,
    make_divisible,
    parse_model,
)
from models.profiling import profile_layers
from utils import LOGGER
from utils.io.checkpoint import train_imgsz
from utils.torch_utils import count_params, model_info


class DetectionModel(nn.Module):
    """A YAML-built detector: backbone and neck rows, then one head row.

    ``forward`` returns the head's raw outputs in training; in eval ``(decoded, raw)``, where ``decoded`` is
    the common ``(B, N, 5 + nc)`` layout; with ``export`` set, only ``decoded``.
    """

    def __init__(self, cfg: str | Path | dict = "yolov5s.yaml", ch: int = 3, nc: int | None = None,
                 hyp: dict | None = None, verbose: bool = False):
        super().__init__()
        self.yaml, self.yaml_file = load_cfg(cfg)
        ch = self.yaml["ch"] = self.yaml.get("ch", ch)
        if nc is not None and nc != self.yaml.get("nc"):
            if verbose:
                LOGGER.info(f"Overriding {self.yaml_file} nc={self.yaml.get('nc')} with nc={nc}")
            self.yaml["nc"] = nc
        if hyp:
            self.yaml = head_class(self.yaml, self.yaml_file).cfg_from_hyp(self.yaml, hyp)
        self.model, self.save = parse_model(deepcopy(self.yaml), ch, self.yaml_file, verbose)
        self.names = {i: str(i) for i in range(self.yaml["nc"])}
        self.train_imgsz: int | None = None  # the image size it was trained at (from a checkpoint's opt)
        self.export = False
        self._attach_neck()
        self.head.initialize(self._probe_strides(ch))
        initialize_weights(self.model)
        if verbose:
            self.info()

    @classmethod
    def from_checkpoint(cls, ckpt: dict, use_ema: bool = True) -> DetectionModel:
        """Rebuild from a checkpoint dict (``yaml`` + state_dict; the EMA weights when present)."""
        sd = ckpt.get("ema") if use_ema and ckpt.get("ema") is not None else ckpt.get("model")
        if sd is None or not ckpt.get("yaml"):
            raise ValueError("checkpoint holds no model weights or no model YAML")
        model = cls(checkpoint_cfg(ckpt["yaml"]))
        missing, unexpected = model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
        if missing or unexpected:
            raise ValueError(f"checkpoint weights do not fit its own YAML: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        names = ckpt.get("names")
        if names:
            model.names = dict(names) if isinstance(names, dict) else dict(enumerate(names))
        model.train_imgsz = train_imgsz(ckpt.get("opt"))
        return model

    @property
    def head(self) -> Head:
        return self.model[-1]

    @property
    def stride(self) -> torch.Tensor:
        return self.head.stride

    @property
    def suppressed(self) -> bool:
        """The eval output holds final detections: skip NMS (``utils.boxes.postprocess``)."""
        return self.head.suppressed

    @property
    def has_val_loss(self) -> bool:
        return self.head.val_loss

    def _attach_neck(self) -> None:
        """A head with ``aux_from`` gets the neck rows to copy, and the trunk outputs its copy reads are kept."""
        first = self.head.aux_from
        if first is None:
            return
        last = len(self.model) - 1
        if not isinstance(first, int) or isinstance(first, bool) or not 0 < first < last:
            raise ValueError(f"{self.yaml_file}: {self.head.type}: aux_from must be the index of the neck's first "
                             f"row (1..{last - 1}), got {first!r}")
        self.head.attach_neck(list(self.model[first:last]))
        self.save = sorted(set(self.save) | {first - 1})

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        """Training: the head's output for its criterion (the head gets ``targets`` when it needs them, the
        trunk outputs when it has ``aux_from``). Eval: ``(decoded, raw)``; with ``export`` set, only ``decoded``."""
        if self.training:
            kwargs = {"targets": targets} if self.head.needs_targets else {}
            if self.head.aux_from is not None:
                features, kwargs["trunk"] = self._features(x, keep=True)
            else:
                features = self._features(x)
            return self.head(features, **kwargs)
        features = self._features(x)
        raw = self.head(features)
        y = self.head.decode(raw)
        return y if self.export else (y, raw)

    def on_epoch(self, state) -> None:
        """Start of an epoch (``models.heads.base.EpochState``): the head's epoch-switched behaviour."""
        self.head.on_epoch(state)

    @staticmethod
    def _gather(f, x, y: list) -> torch.Tensor | list:
        """A row's input: the previous output, or the outputs of rows ``f`` (a multi-output row's maps
        spliced into the list)."""
        if f == -1:
            return x
        if isinstance(f, int):
            return y[f]
        out = []
        for j in f:
            v = x if j == -1 else y[j]
            out += v if isinstance(v, list) else [v]
        return out

    def _features(self, x: torch.Tensor, checked: bool = False, keep: bool = False):
        """Run every row but the head; return the head's inputs (and, with ``keep``, the kept row outputs by
        row index, None where not kept). ``checked`` turns a failing row into a ValueError that names it (used
        by the stride probe)."""
        y = []
        for m in self.model[:-1]:
            x = self._gather(m.f, x, y)
            x = self._run_checked(m, x) if checked else m(x)
            y.append(x if m.i in self.save else None)
        features = self._gather(self.head.f, x, y)
        return (features, y) if keep else features

    def _run_checked(self, m: nn.Module, x):
        try:
            return m(x)
        except (RuntimeError, IndexError, TypeError, ValueError) as e:  # e.g. Concat over a dimension x lacks
            shapes = [tuple(t.shape) for t in x] if isinstance(x, list) else tuple(x.shape)
            reason = str(e).strip().splitlines()[0]
            raise ValueError(f"{self.yaml_file}: row {m.i} ({m.type}): forward fails on input shape(s) {shapes}: "
                             f"{reason}") from None

    def _probe_strides(self, ch: int, s: int = 256) -> torch.Tensor:
        training = self.training
        self.eval()
        with torch.no_grad():
            feats = self._features(torch.zeros(1, ch, s, s), checked=True)
        self.train(training)
        strides = [s / f.shape[-2] for f in feats]
        if any(st < 1 or st != int(st) for st in strides):
            raise ValueError(f"{self.yaml_file}: head inputs have non-integer strides {strides}")
        return torch.tensor(strides)

    def criterion(self, hyp: dict, imgsz: int = 640, label_smoothing: float = 0.0):
        """The head's loss: ``criterion(raw, targets) -> (total, items)`` with ``criterion.loss_names``."""
        return self.head.criterion(hyp, imgsz, label_smoothing)

    def set_export(self, export: bool = True) -> DetectionModel:
        """Export mode: eval forward returns only the decoded tensor, grids built inside the graph."""
        self.export = self.head.export = export
        return self

    def deploy(self) -> DetectionModel:
        """Drop the head's training-only modules (an inference copy: export, fuse, deploy counts)."""
        self.head.strip_training_modules()
        return self

    def fuse(self, verbose: bool = False) -> DetectionModel:
        """For inference: drop training-only modules, fold BatchNorm into the preceding convolutions (our
        ``Conv`` blocks directly, any other Conv2d + BatchNorm2d pair found on the traced graph)."""
        self.deploy()
        for m in list(self.modules()):
            if isinstance(m, Conv):
                m.fuse()
            elif hasattr(m, "reparameterize"):  # parallel branches summed into one conv (YOLOv10's RepVGGDW)
                m.reparameterize()
        fuse_conv_bn(self.model)
        if verbose:
            self.info()
        return self

    def frozen_parameters(self) -> set[str]:
        """Parameter names a row froze when it was built (``frozen``: a torchvision trunk's untrained stages);
        train.py keeps them frozen."""
        return {f"model.{m.i}.{n}" for m in self.model for n in getattr(m, "frozen", ())}

    def deploy_params(self) -> int:
        """Parameters of the inference model: all but those of the head's training-only modules."""
        extra = sum(p.numel() for n in self.head.train_only if getattr(self.head, n, None) is not None
                    for p in getattr(self.head, n).parameters())
        return count_params(self)[0] - extra

    def info(self, imgsz: int = 640) -> dict:
        stem = Path(self.yaml_file).stem if self.yaml_file != "<dict>" else "Model"
        name = re.sub(r"^yolo(?=v?\d)", "YOLO", stem)  # yolov5s -> YOLOv5s, yolo11n -> YOLO11n
        stride = max(int(self.stride.max()), 32) if self.head.area_flops else imgsz
        info = model_info(self, name, imgsz, ch=self.yaml["ch"], stride=stride)
        info["deploy_parameters"] = self.deploy_params()
        extra = f" (training-only: {', '.join(self.head.train_only)})" if self.head.train_only else ""
        LOGGER.info(f"{name} parameters: {info['parameters']} in training, {info['deploy_parameters']} deployed{extra}")
        return info


Model = DetectionModel  # YOLOv5's name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a model from its YAML and print its layers.")
    parser.add_argument("--cfg", default="yolov5s.yaml", help="model YAML: a path or a bare name in models/")
    parser.add_argument("--nc", type=int, default=None, help="override the number of classes")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--imgsz", type=int, default=640, help="input size for --profile and the GFLOPs line")
    parser.add_argument("--profile", action="store_true", help="time the forward pass of every layer")
    opt = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        model = DetectionModel(opt.cfg, nc=opt.nc, verbose=True)
    except (ValueError, FileNotFoundError) as e:
        LOGGER.error(f"error: {e}")
        return 2
    if opt.imgsz != 640:  # the summary above is at YOLOv5's 640; again at the size asked for
        model.info(opt.imgsz)
    if opt.profile:
        model.eval()
        profile_layers(model, torch.rand(opt.batch_size, model.yaml["ch"], opt.imgsz, opt.imgsz))
    return 0


if __name__ == "__main__":
    sys.exit(main())
