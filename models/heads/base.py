"""The head contract (v2): what every detector family implements, and all that train.py, val.py,
detect.py, export.py and compare.py may assume about a head. It supersedes the contract of
shared/DESIGN.md ("forward returns raw outputs, identical in training and eval").

A head is the last row of a model YAML and owns everything specific to its family:

1. **Building.** ``yaml_args(args, ctx)`` (classmethod) turns the row's YAML arguments and the model
   context (``ctx.gw`` width multiple, ``ctx.divisor``, ``ctx.cfg`` the model dict, ``ctx.error``) into
   constructor arguments; the input channels are appended as the last argument ``ch``. The default
   scales the arguments at ``channel_args`` by the width multiple and fills left-out optional arguments
   with their defaults. ``cfg_from_hyp(cfg, hyp)`` (classmethod) lets hyperparameters edit the model
   dict before it is built (YOLOv5's ``anchors`` hyp key). ``initialize(stride)`` runs once after the
   stride probe (priors, biases, grids).
2. **Forward.** ``forward(features, targets=None)``: ``features`` is the list of the head's input maps.
   In training the output is opaque: train.py and val.py hand it to the criterion and to nothing else.
   A head with ``needs_targets = True`` receives the batch targets ``(M, 6)`` ``[image, class, cx, cy, w,
   h]`` (normalised) in its training forward; it must still run (its output unused) when a training-mode
   forward comes without targets: precise BN gathers BatchNorm statistics that way. In eval, ``decode(raw)`` returns the one common layout
   ``(B, N, 4 + 1 + nc)``: cxcywh in input pixels, an objectness/quality probability (1.0 for a head
   without objectness) and per-class probabilities.
3. **Suppression.** ``suppressed = True`` declares that ``decode`` already gives final detections (one
   row per object, padding rows scored 0); val.py and detect.py then skip NMS and keep rows by score
   (``utils.boxes.postprocess``), and exported files carry the flag in their metadata.
4. **Training-only modules.** ``train_only`` names child modules (an auxiliary branch) that only the
   training forward uses. They are in ``state_dict`` and checkpoints (``--resume`` continues them), and
   absent from the eval forward, ``DetectionModel.fuse()`` / ``deploy()``, exported files and the deploy
   parameter count (``models/yolo.py --cfg`` prints train and deploy counts). A head whose auxiliary branch
   needs its own copy of the neck (NanoDet-Plus's AGM) sets ``aux_from`` to the neck's first row index:
   ``DetectionModel`` then hands it the neck rows once (``attach_neck(rows)``, to copy them) and, in every
   training forward, the trunk outputs by row index (``forward(features, targets, trunk=outputs)``), from
   which the copied rows are re-run.
5. **Loss.** ``criterion(hyp, imgsz, label_smoothing)`` returns an object that satisfies ``Criterion``
   below. ``hyp_keys`` lists the head-specific hyperparameters it reads, ``hyp_ranges`` their ``--evolve``
   mutation ranges (``(gain, low, high)``, YOLOv5's table; a key without one is not evolved). A hyp file may
   hold every registered head's keys (``models.heads.all_hyp_keys``: one file serves every arm of a
   comparison); each head reads its own. A head whose row names a label assigner lists the assigners' keys
   (``utils.assigners.assigner_hyp_keys``) and hands the row's assigner options and the hyp to its criterion.
   ``val_loss = False`` declares that the criterion cannot score eval outputs; val.py then reports the
   validation loss as unavailable (NaN), never 0.
6. **Epochs.** ``on_epoch(state)`` is called on the model's head and on the criterion at the start of
   every epoch (resumed runs included) with an ``EpochState``: epoch-switched behaviour (YOLOX's L1 term
   once mosaic closes, NanoDet's AGM detach epoch) lives behind it.
7. **Priors and transfer.** ``fit_priors(label_wh, hyp)`` refits data-fitted priors before training
   (AutoAnchor for anchor heads; a no-op otherwise). ``transfer_exclude(hyp, new_cfg)`` names the
   state_dict key fragments that must not be transferred from a checkpoint (anchors when the cfg or
   the hyp sets new ones).
8. **Export.** ``export`` is an instance flag: when set, ``decode`` builds its grids inside the traced
   graph, with no Python-side branching that ONNX cannot trace. ``dynamic_export = False`` declares that the
   exported graph holds only the traced batch and size (export.py then refuses ``--dynamic`` in one line).
   ``cpu_runtime = False`` declares that the model runs faster as PyTorch than through ONNX Runtime on a CPU,
   so detect.py / val.py ``--backend auto`` keep PyTorch for it (an explicit ``--backend onnxruntime`` still
   exports).

Label assigners share one result contract, ``utils.assigners.Assignment`` (per prediction the matched
ground-truth index or -1, and a soft quality target); a head picks its assigner by a YAML argument, a name or
``{name: ..., option: value}`` (``utils.assigners.parse_assigner``), and its criterion binds the options with
``utils.assigners.assigner_from``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from torch import Tensor, nn


@dataclass(frozen=True)
class EpochState:
    """What a head and its criterion learn at the start of each epoch."""

    epoch: int    # the epoch about to be trained, 0-based
    epochs: int   # epochs planned for the run
    mosaic: bool  # strong augmentation (mosaic/mixup) is on for this epoch


@runtime_checkable
class Criterion(Protocol):
    """A head's loss. ``__call__(outputs, targets) -> (total, items)``: ``outputs`` is the head's training
    forward output (opaque to the pipeline), ``targets`` ``(M, 6)`` normalised; ``items`` is a detached 1-D
    tensor of the terms named by ``loss_names`` (the results.csv columns) and ``total`` the tensor to
    back-propagate (YOLOv5's reduction: sum(items) x batch size)."""

    loss_names: tuple[str, ...]

    def __call__(self, outputs: Any, targets: Tensor) -> tuple[Tensor, Tensor]: ...

    def on_epoch(self, state: EpochState) -> None: ...


class Head(nn.Module):
    channel_args: tuple[int, ...] = ()
    yaml_keys: tuple[str, ...] = ()  # top-level model-YAML keys this head reads (Detect: anchors)
    needs_targets: bool = False
    suppressed: bool = False
    val_loss: bool = True
    train_only: tuple[str, ...] = ()
    hyp_keys: tuple[str, ...] = ()
    hyp_ranges: ClassVar[dict[str, tuple[float, float, float]]] = {}  # key of hyp_keys: (--evolve gain, low, high)
    aux_from: int | None = None  # first neck row copied for a training-only branch (see attach_neck)
    dynamic_export: bool = True  # exported files may take any batch and size (export.py --dynamic)
    cpu_runtime: bool = True  # --backend auto runs its .pt through ONNX Runtime on a CPU (faster than PyTorch)
    area_flops: bool = True  # FLOPs scale with the input area (YOLOv5 measures at the stride and scales); a
                             # two-stage head's RoI work does not: its model is measured at the size asked for

    nc: int
    nl: int
    stride: Tensor
    export: bool

    @classmethod
    def yaml_args(cls, args: list, ctx) -> list:
        """YAML arguments -> constructor arguments (without ``ch``, which parse_model appends)."""
        params = [p for p in inspect.signature(cls).parameters.values() if p.name != "ch"]
        args = list(args)
        for k in cls.channel_args:
            if k >= len(args):
                args += [p.default for p in params[len(args):k + 1]]
            args[k] = ctx.scale_channels(args[k])
        if len(args) < len(params):  # optional arguments left out: their defaults, so 'ch' stays last
            args += [p.default for p in params[len(args):]]
        return args

    @classmethod
    def cfg_from_hyp(cls, cfg: dict, hyp: dict) -> dict:
        """The model dict as hyperparameters change it (default: unchanged)."""
        return cfg

    def forward(self, features: list[Tensor], targets: Tensor | None = None):
        raise NotImplementedError

    def decode(self, raw) -> Tensor:
        raise NotImplementedError

    def initialize(self, stride: Tensor) -> None:
        raise NotImplementedError

    def criterion(self, hyp: dict, imgsz: int = 640, label_smoothing: float = 0.0) -> Criterion:
        raise NotImplementedError

    def on_epoch(self, state: EpochState) -> None:
        """Epoch-switched behaviour of the head itself (default: none)."""

    def attach_neck(self, rows: list[nn.Module]) -> None:
        """The built rows ``aux_from`` .. (head excluded), called once when ``aux_from`` is set: a head that
        trains an auxiliary copy of the neck deep-copies them here (default: nothing to do)."""

    def fit_priors(self, label_wh: np.ndarray, hyp: dict) -> None:
        """Heads without data-fitted priors have nothing to do."""

    def transfer_exclude(self, hyp: dict, new_cfg: bool) -> tuple[str, ...]:
        """state_dict key fragments not to transfer from a checkpoint (default: none)."""
        return ()

    def strip_training_modules(self) -> None:
        """Drop the training-only modules (for inference copies: fuse, export, deploy counts)."""
        for name in self.train_only:
            if hasattr(self, name):
                delattr(self, name)
                setattr(self, name, None)
