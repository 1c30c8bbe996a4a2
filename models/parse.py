"""YAML -> layers: the model language of YOLOv5 v7.0 and the table of what a row may name.

``parse_model`` reads a dict with ``nc``, ``depth_multiple``, ``width_multiple``, ``anchors`` and ``backbone`` +
``head`` lists of rows ``[from, number, module, args]``. Modules are looked up in one explicit table (``MODULES``
for blocks and whitelisted torch.nn layers, ``models.heads.HEADS`` for heads); nothing in a YAML is ``eval``'d.
A bad row gets an error naming the file, row index, module and problem. ``models/yolo.py``'s ``DetectionModel``
builds a model from these layers.
"""
from __future__ import annotations

import ast
import difflib
import inspect
import math
import re
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from models.backbones import CHECKPOINT_WEIGHTS, GhostPAN, ShuffleNetV2
from models.c2f import C2PSA, PSA, C2f, C2fCIB, C3k, C3k2, SCDown
from models.common import (
    C3,
    C3DW,
    SPP,
    SPPF,
    Bottleneck,
    BottleneckDW,
    Concat,
    Conv,
    DWConv,
    DWSConv,
    Focus,
    Select,
)
from models.cspnext import CSPNeXtLayer
from models.heads import HEADS
from models.heads.base import Head
from models.tv import TVFPN, TVTrunk
from utils import LOGGER
from utils.io.files import find_in_dir, yaml_read

MODELS_DIR = Path(__file__).resolve().parent

# How a row's output channels follow from its inputs and arguments.
IN_OUT = "in_out"        # args = [c2, ...] -> cls(c1, c2 * width_multiple, ...)
CONCAT = "concat"        # c2 = sum of the input channels
BATCHNORM = "batchnorm"  # args = [] -> cls(c1)
EXPLICIT = "explicit"    # args = [c1, c2, ...] as given (torch's own conv); c1 must match the input
SAME = "same"            # c2 = c1 (resampling, pooling, identity)
MULTI = "multi"          # cls(c1, *args) returns a list of maps; the module's ``out_channels`` lists their widths
                         # (c1 is a list of widths when the row reads several maps)
SELECT = "select"        # args = [k]: output k of a multi-output row


@dataclass(frozen=True)
class Block:
    cls: type[nn.Module]
    channels: str
    repeats_inside: bool = False  # the row's `number` becomes the block's own repeat argument
    own_init: bool = False        # brings its own initialisation or weights: BatchNorm settings left alone
    weights_arg: int | None = None  # index of its local-weights-file argument in the YAML args (see from_checkpoint)


MODULES: dict[str, Block] = {
    "Conv": Block(Conv, IN_OUT),
    "DWConv": Block(DWConv, IN_OUT),
    "Focus": Block(Focus, IN_OUT),
    "Bottleneck": Block(Bottleneck, IN_OUT),
    "C3": Block(C3, IN_OUT, repeats_inside=True),
    "SPP": Block(SPP, IN_OUT),
    "SPPF": Block(SPPF, IN_OUT),
    "DWSConv": Block(DWSConv, IN_OUT),
    "BottleneckDW": Block(BottleneckDW, IN_OUT),
    "C3DW": Block(C3DW, IN_OUT, repeats_inside=True),
    "C2f": Block(C2f, IN_OUT, repeats_inside=True),  # YOLOv8 and YOLO11 (models/c2f.py)
    "C3k": Block(C3k, IN_OUT, repeats_inside=True),
    "C3k2": Block(C3k2, IN_OUT, repeats_inside=True),
    "C2PSA": Block(C2PSA, IN_OUT, repeats_inside=True),
    "SCDown": Block(SCDown, IN_OUT),  # YOLOv10 (models/c2f.py)
    "C2fCIB": Block(C2fCIB, IN_OUT, repeats_inside=True),
    "PSA": Block(PSA, IN_OUT),
    "Concat": Block(Concat, CONCAT),
    "nn.Upsample": Block(nn.Upsample, SAME),
    "nn.MaxPool2d": Block(nn.MaxPool2d, SAME),
    "nn.Identity": Block(nn.Identity, SAME),
    "nn.ZeroPad2d": Block(nn.ZeroPad2d, SAME),
    "nn.BatchNorm2d": Block(nn.BatchNorm2d, BATCHNORM),
    "nn.Conv2d": Block(nn.Conv2d, EXPLICIT),
    "Select": Block(Select, SELECT),
    "CSPNeXtLayer": Block(CSPNeXtLayer, IN_OUT, repeats_inside=True),  # RTMDet's CSPNeXt backbone and neck
    # NanoDet-Plus's trunk (torchvision's blocks) and neck, with NanoDet's / torchvision's BatchNorm settings
    "ShuffleNetV2": Block(ShuffleNetV2, MULTI, own_init=True, weights_arg=1),
    "GhostPAN": Block(GhostPAN, MULTI, own_init=True),
    # torchvision's trunks and FPN (its BackboneWithFPN in two rows), with torchvision's BatchNorm settings
    "TVTrunk": Block(TVTrunk, MULTI, own_init=True, weights_arg=3),
    "TVFPN": Block(TVFPN, MULTI, own_init=True),
}
ACTIVATIONS = {n: getattr(nn, n) for n in
               ("SiLU", "ReLU", "ReLU6", "LeakyReLU", "Hardswish", "Mish", "GELU", "Sigmoid", "Identity")}
TOP_LEVEL_KEYS = {"nc", "depth_multiple", "width_multiple", "backbone", "head", "activation", "ch",
                  "inplace", "channel_multiple", "max_channels"}


def make_divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


def find_cfg(name: str | Path) -> Path:
    """A model YAML by path, or by bare name (``yolov5s-decoupled.yaml`` or ``yolov5s-decoupled``) in models/."""
    return find_in_dir(name, MODELS_DIR, "model config", recursive=True)


def load_cfg(cfg: str | Path | dict) -> tuple[dict, str]:
    """(YAML dict, its name for messages)."""
    if isinstance(cfg, dict):
        return deepcopy(cfg), "<dict>"
    path = find_cfg(cfg)
    d = yaml_read(path)
    if not isinstance(d, dict):
        raise ValueError(f"{path}: a model YAML must be a mapping with nc, backbone and head, got {type(d).__name__}")
    return d, str(path)


class _Ctx:
    """What parse_model knows while it walks the rows (and hands to a head's ``yaml_args``)."""

    def __init__(self, cfg: dict, source: str, ch: int):
        self.cfg, self.source = cfg, source
        self.nc, self.gd, self.gw = cfg["nc"], float(cfg.get("depth_multiple", 1)), float(cfg.get("width_multiple", 1))
        self.divisor = int(cfg.get("channel_multiple", 8))
        self.max_channels = cfg.get("max_channels", math.inf)  # Ultralytics' cap, applied before the width gain
        # a row argument may name a top-level key (nc, or a head's own key): it stands for that key's value
        self.names = {k: v for k, v in cfg.items() if k not in ("backbone", "head")} | {"None": None}
        self.ch: list = [ch]  # output channels of each row so far (an int, or a list for a multi-output row)
        self.head_inputs: list[int] = []  # channels of the head's input maps, set before its yaml_args

    def scale_channels(self, c: int) -> int:
        return make_divisible(min(c, self.max_channels) * self.gw, self.divisor)

    def inputs(self, fs: list[int]) -> list[int]:
        """Channels of the maps that rows ``fs`` give, a multi-output row counting as all its maps."""
        return [c for j in fs for c in (self.ch[j] if isinstance(self.ch[j], list) else [self.ch[j]])]

    def error(self, i: int, module: object, msg: str) -> ValueError:
        """One line: a name or value from the YAML is shown as repr when it holds a line break."""
        module = repr(module) if "\n" in str(module) or "\r" in str(module) else module
        return ValueError(f"{self.source}: row {i} ({module}): {' '.join(str(msg).split())}")


def _head_name(cfg: dict):
    """The module name of the model dict's last row, or None when that row is malformed (reported later)."""
    rows = cfg.get("head")
    ok = isinstance(rows, list) and rows and isinstance(rows[-1], list) and len(rows[-1]) == 4
    return rows[-1][2] if ok and isinstance(rows[-1][2], str) else None


def _check_top_level(cfg: dict, source: str) -> None:
    head = _head_name(cfg)
    own = set(getattr(HEADS.get(head), "yaml_keys", ()))  # the head's own keys (Detect: anchors)
    others = {k for h in HEADS.values() for k in h.yaml_keys} - own
    allowed = TOP_LEVEL_KEYS | own | others
    for k in sorted(set(cfg) & others):  # left over from another head's YAML: one-row head swaps stay one row
        LOGGER.info(f"{source}: top-level key '{k}' is not read by {head}, ignoring it")
    unknown = set(cfg) - allowed
    if unknown:
        hints = {k: difflib.get_close_matches(k, allowed, n=1) for k in sorted(unknown)}
        raise ValueError(f"{source}: unknown top-level key(s) "
                         + ", ".join(f"'{k}'" + (f" (did you mean '{h[0]}'?)" if h else "") for k, h in hints.items()))
    for key in ("nc", "backbone", "head"):
        if key not in cfg:
            raise ValueError(f"{source}: missing required key '{key}'")
    nc = cfg["nc"]
    if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
        raise ValueError(f"{source}: 'nc' must be a positive integer, got {nc!r}")
    for key in ("backbone", "head"):
        if not isinstance(cfg[key], list):
            raise ValueError(f"{source}: '{key}' must be a list of [from, number, module, args] rows")
    ch = cfg.get("ch", 3)
    if isinstance(ch, bool) or not isinstance(ch, int) or ch < 1:
        raise ValueError(f"{source}: 'ch' (input channels) must be a positive integer, got {ch!r}")
    for key in ("depth_multiple", "width_multiple", "max_channels"):
        v = cfg.get(key, 1.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ValueError(f"{source}: '{key}' must be a positive number, got {v!r}")


def _parse_activation(spec: str | None, source: str) -> nn.Module:
    """``nn.LeakyReLU(0.1)``-style strings from a whitelist, parsed without eval."""
    if spec is None:
        return nn.SiLU(inplace=True)
    m = re.fullmatch(r"\s*(?:nn\.)?(\w+)\((.*)\)\s*", str(spec))
    if not m or m.group(1) not in ACTIVATIONS:
        raise ValueError(f"{source}: activation {spec!r} not understood; use one of "
                         + ", ".join(f"nn.{k}()" for k in ACTIVATIONS))
    try:
        args = ast.literal_eval(f"({m.group(2)},)") if m.group(2).strip() else ()
        return ACTIVATIONS[m.group(1)](*args)
    except (ValueError, SyntaxError, TypeError) as e:
        raise ValueError(f"{source}: activation {spec!r}: {e}") from None


def _check_from(ctx: _Ctx, i: int, name: str, f) -> list[int]:
    """Validate a row's ``from`` and return it as a list."""
    fs = f if isinstance(f, list) else [f]
    if not fs or not all(isinstance(j, int) and not isinstance(j, bool) for j in fs):
        raise ctx.error(i, name, f"'from' must be an int or a list of ints, got {f!r}")
    for j in fs:
        k = j if j >= 0 else i + j
        if j == -1:
            continue
        if k < 0:
            raise ctx.error(i, name, f"'from' index {j} is out of range (it reaches before row 0)")
        if k >= i:
            raise ctx.error(i, name, f"'from' index {j} points forward (to row {k}); rows may only read earlier "
                                     f"rows")
    return fs


def head_class(cfg: dict, source: str = "<dict>") -> type[Head]:
    """The head class named by the model dict's last row."""
    name = _head_name(cfg)
    if name not in HEADS:
        raise ValueError(f"{source}: the last row must be a head ({', '.join(HEADS)}), got {name!r}")
    return HEADS[name]


def _lookup(ctx: _Ctx, i: int, name) -> tuple[type[nn.Module], str]:
    if isinstance(name, str) and name in MODULES:
        return MODULES[name].cls, MODULES[name].channels
    if isinstance(name, str) and name in HEADS:
        return HEADS[name], "head"
    near = difflib.get_close_matches(str(name), [*MODULES, *HEADS], n=3)
    hint = f"; did you mean {', '.join(near)}?" if near else f"; known modules: {', '.join([*MODULES, *HEADS])}"
    raise ctx.error(i, name, f"unknown module {str(name)!r}{hint}")


def _row_args(ctx: _Ctx, i: int, name: str, rule: str, cls, fs: list[int], n: int, args: list) -> tuple[list, int, int]:
    """Resolve names in ``args`` and apply the channel rule -> (constructor args, repeats, output channels)."""
    args = [ctx.names.get(a, a) if isinstance(a, str) else a for a in args]
    if rule == SELECT:
        if len(fs) != 1 or not isinstance(ctx.ch[fs[0]], list):
            raise ctx.error(i, name, f"selects from one multi-output row, got 'from' {fs}")
        outs = ctx.ch[fs[0]]
        if len(args) != 1 or not isinstance(args[0], int) or not -len(outs) <= args[0] < len(outs):
            raise ctx.error(i, name, f"args must be [k], k an output index of the {len(outs)} outputs, got {args}")
        return args, n, outs[args[0]]
    c_in = ctx.inputs(fs)
    if rule == MULTI:  # one map in -> its channels; several (a neck over a trunk's maps) -> their list
        return [c_in[0] if len(c_in) == 1 else c_in, *args], n, None  # channels read from the built module
    if rule in (IN_OUT, BATCHNORM, EXPLICIT, SAME) and len(c_in) != 1:
        raise ctx.error(i, name, f"takes one input map, got 'from' {fs} ({len(c_in)} maps; pick one with Select)")
    c1 = c_in[0]
    if rule == IN_OUT:
        if not args or isinstance(args[0], bool) or not isinstance(args[0], int):
            raise ctx.error(i, name, f"first argument must be the output channels (int), got {args!r}")
        c2 = ctx.scale_channels(args[0])
        args = [c1, c2, *args[1:]]
        if MODULES[name].repeats_inside:
            args.insert(2, n)
            n = 1
        return args, n, c2
    if rule == CONCAT:
        return args, n, sum(c_in)
    if rule == BATCHNORM:
        return [c1], n, c1
    if rule == EXPLICIT:
        if len(args) < 2 or args[0] != c1:
            raise ctx.error(i, name, f"channel mismatch: expects {args[0] if args else '?'} input channels but "
                                     f"row {fs[0] if fs[0] >= 0 else i + fs[0]} gives {c1}")
        return args, n, args[1]
    if rule == SAME:
        return args, n, c1
    return _head_args(ctx, i, name, cls, c_in, args), n, 0


def _head_args(ctx: _Ctx, i: int, name: str, cls: type[Head], c_in: list[int], args: list) -> list:
    """The head's own hook turns its YAML arguments into constructor arguments; the input channels go last."""
    ctx.head_inputs = c_in
    try:
        args = cls.yaml_args(list(args), ctx)
    except (ValueError, TypeError, IndexError) as e:
        raise ctx.error(i, name, str(e)) from None
    return [*args, c_in]


def _build_row(ctx: _Ctx, i: int, row, last: bool) -> tuple[nn.Module, int, list]:
    """-> (module, repeats after the depth gain, constructor arguments)."""
    if not isinstance(row, list) or len(row) != 4:
        raise ctx.error(i, row, f"a row must be [from, number, module, args], got {row!r}")
    f, n, name, args = row
    cls, rule = _lookup(ctx, i, name)
    fs = _check_from(ctx, i, name, f)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ctx.error(i, name, f"'number' must be a positive integer, got {n!r}")
    if not isinstance(args, list):
        raise ctx.error(i, name, f"'args' must be a list, got {args!r}")
    if (rule == "head") != last:
        raise ctx.error(i, name, "a head must be the last row" if rule == "head" else
                        f"the last row must be a head ({', '.join(HEADS)})")
    n = n_ = max(round(n * ctx.gd), 1) if n > 1 else n
    args, n, c2 = _row_args(ctx, i, name, rule, cls, fs, n, list(args))
    try:
        inspect.signature(cls).bind(*args)
    except TypeError as e:
        raise ctx.error(i, name, f"wrong arguments {args}: {e}; signature {name}{inspect.signature(cls)}") from None
    try:
        m = nn.Sequential(*(cls(*args) for _ in range(n))) if n > 1 else cls(*args)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ctx.error(i, name, f"cannot build with arguments {args}: {e}") from None
    m.i, m.f, m.type = i, (fs if rule == "head" or isinstance(f, list) else f), name
    m.np = sum(p.numel() for p in m.parameters())
    m.own_init = rule != "head" and MODULES[name].own_init
    if rule == MULTI:
        c2 = [int(c) for c in m.out_channels]
    ctx.ch.append(c2)
    return m, n_, args


def parse_model(cfg: dict, ch: int = 3, source: str = "<dict>",
                verbose: bool = True) -> tuple[nn.Sequential, list[int]]:
    """Build the layers of a YOLOv5-schema model dict -> (layers, indices of rows whose outputs are reused)."""
    _check_top_level(cfg, source)
    ctx = _Ctx(cfg, source, ch)
    rows = cfg["backbone"] + cfg["head"]
    if not rows:
        raise ValueError(f"{source}: no rows in backbone + head")
    if verbose:
        LOGGER.info(f"\n{'':>3}{'from':>18}{'n':>3}{'params':>10}  {'module':<40}{'arguments':<30}")
    layers, save = [], []
    for i, row in enumerate(rows):
        m, n, args = _build_row(ctx, i, row, last=i == len(rows) - 1)
        if i == 0:
            ctx.ch = ctx.ch[1:]  # row indices refer to outputs from here on
        fs = m.f if isinstance(m.f, list) else [m.f]
        save.extend(j % i for j in fs if j != -1)
        layers.append(m)
        if verbose:
            LOGGER.info(f"{i:>3}{m.f!s:>18}{n:>3}{m.np:10.0f}  {m.type:<40}{args!s:<30}")
    act = _parse_activation(cfg.get("activation"), source)
    for m in nn.Sequential(*layers).modules():  # one activation instance per model, never per process
        if isinstance(m, Conv) and isinstance(m.act, nn.SiLU):
            m.act = act
    return nn.Sequential(*layers), sorted(set(save))


def initialize_weights(layers: nn.Sequential) -> None:
    """YOLOv5's BatchNorm settings and in-place activations, for rows built from our own blocks only: a row
    that brings its own initialisation or weights (``Block.own_init``) keeps its BatchNorm settings."""
    for row in layers:
        if getattr(row, "own_init", False):
            continue
        for m in row.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = 1e-3, 0.03
            elif isinstance(m, (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU)):
                m.inplace = True


def checkpoint_cfg(cfg: dict) -> dict:
    """The model dict with every row's local weights file replaced by ``CHECKPOINT_WEIGHTS``: rebuilt from a
    checkpoint, a row is built as pretrained (e.g. FrozenBatchNorm2d) but loads nothing -- the file it was trained
    from need not exist on this machine; the checkpoint's tensors follow."""
    cfg = deepcopy(cfg)
    for row in list(cfg.get("backbone") or []) + list(cfg.get("head") or []):
        block = MODULES.get(row[2]) if isinstance(row, list) and len(row) == 4 and isinstance(row[2], str) else None
        k = block.weights_arg if block is not None else None
        if k is not None and isinstance(row[3], list) and len(row[3]) > k and row[3][k] not in (None, "None"):
            row[3][k] = CHECKPOINT_WEIGHTS
    return cfg
