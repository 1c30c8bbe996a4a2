"""Checkpoint I/O.

- ``save_checkpoint``: atomic writes (temp file in the same folder, fsync, ``os.replace``) of a dict of plain
  values that loads with ``torch.load(path, weights_only=True)``.
- ``load_checkpoint``: our checkpoints with ``weights_only=True``; YOLOv5 v7.0 ``.pt`` files (pickled
  ``nn.Module`` trees) through a restricted unpickler that imports nothing from the file: tensor rebuild
  functions and plain containers are allowed, every other class becomes an inert ``StandIn`` that only
  records its state. The stand-in module tree is walked back into a state_dict with YOLOv5's key names.
- ``transfer_weights``: YOLOv5's transfer by identical key and shape, or -- when an inserted or removed YAML
  row shifts the ``model.<row>.`` indices -- transfer along an LCS alignment of the two YAMLs' rows.

Our checkpoint dict: ``model`` (state_dict), ``ema`` (state_dict or None), ``updates``, ``optimizer``
(state_dict or None), ``epoch``, ``best_fitness``, ``yaml`` (model YAML dict), ``names``, ``opt`` (plain
dict), ``date``, ``version``. ``load_checkpoint`` adds ``format`` ('headzoo' or 'yolov5').
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import pickle
import re
import struct
import tempfile
import types
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from utils.torch_utils import LOGGER

_PLAIN_SCALARS = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device)


# ---------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------
def to_plain(value: Any, where: str = "ckpt") -> Any:
    """``value`` with every part made readable by ``torch.load(weights_only=True)``: paths -> str, numpy
    scalars -> Python numbers, numpy arrays -> tensors, namespaces -> dicts, sets -> lists. Raises
    TypeError naming the offending entry (``where``) for anything else (e.g. an ``nn.Module``)."""
    if isinstance(value, np.generic):  # before the plain scalars: np.float64 subclasses float
        return value.item()
    if isinstance(value, Tensor) or isinstance(value, _PLAIN_SCALARS):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy()) if value.dtype.kind in "biufc" else to_plain(value.tolist(), where)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (argparse.Namespace, types.SimpleNamespace)):
        value = vars(value)
    if isinstance(value, dict):
        out = OrderedDict() if isinstance(value, OrderedDict) else {}
        for k, v in value.items():
            out[to_plain(k, f"{where} key {k!r}")] = to_plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, torch.Size):
        return tuple(value)
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, (set, frozenset)):
        return [to_plain(v, f"{where} item") for v in sorted(value, key=repr)]
    hint = " (save its state_dict())" if isinstance(value, torch.nn.Module) else ""
    raise TypeError(f"checkpoint value {where} is a {type(value).__module__}.{type(value).__qualname__}, "
                    f"which torch.load(weights_only=True) cannot read{hint}")


FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_cause(e: BaseException) -> OSError | None:
    """The 'no space left' / 'quota exceeded' OSError in ``e``'s chain (torch.save wraps it in a RuntimeError)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno in FULL:
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


class DiskFull(OSError):
    """A checkpoint that did not fit: the file, the space it needs (at least) and the space left."""

    def __init__(self, path: Path, written: int, previous: int = 0):
        """``written``: bytes written when the space ran out; ``previous``: the size of the file it replaces."""
        import shutil

        free = shutil.disk_usage(path.parent).free
        need = (f"about {previous / 1e6:.1f} MB (the size of the one it replaces)" if previous > written else
                f"more than the {written / 1e6:.1f} MB written when the space ran out")
        super().__init__(errno.ENOSPC, f"no space left on the device of {path.parent} to write {path.name}: it needs "
                                       f"{need}, {free / 1e6:.1f} MB are free", str(path))

    def __str__(self) -> str:
        return self.strerror


def save_checkpoint(ckpt: dict, path: str | Path) -> Path:
    """Write ``ckpt`` (converted by ``to_plain``) atomically: a kill at any moment leaves either the old
    file or the new one at ``path``, never a partial one. Returns the path."""
    path = Path(path)
    obj = to_plain(ckpt, "ckpt")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        full = disk_full_cause(e)
        if full is not None:  # torch.save reports it as "unexpected pos" over the OSError: say it in words
            raise DiskFull(path, written, path.stat().st_size if path.is_file() else 0) from full
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where folders cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------
# Restricted unpickling of foreign (YOLOv5) checkpoints
# ---------------------------------------------------------------------------------------------
class StandIn:
    """Inert record of a pickled object whose class is not allowed: its constructor arguments, its state
    (``__dict__`` or ``_standin_state``) and any list/dict items. No method of the original class exists."""

    _source = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__["_standin_args"] = args
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict state, slot state)
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_standin_state"] = state

    def append(self, item) -> None:
        self.__dict__.setdefault("_standin_items", []).append(item)

    def extend(self, items) -> None:
        for item in items:
            self.append(item)

    def __setitem__(self, key, value) -> None:
        self.__dict__.setdefault("_standin_mapping", {})[key] = value

    def __repr__(self) -> str:
        return f"StandIn({self._source})"


_ALLOWED_GLOBALS = {
    ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "Tensor"), ("torch.nn.parameter", "Parameter"), ("torch", "Size"), ("torch", "device"),
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
}

_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class RestrictedUnpickler(pickle.Unpickler):
    """``find_class`` resolves only ``_ALLOWED_GLOBALS`` and torch dtypes (torch's loader resolves the
    ``*Storage`` types before this is asked); any other global becomes a ``StandIn`` subclass named after it.
    Nothing named in the file is imported."""

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        self.stand_ins: dict[str, type] = {}

    def find_class(self, module: str, name: str):
        module = _PY2_MODULES.get(module, module)  # protocol-2 pickles (torch.save) name Python 2 modules
        if (module, name) in _ALLOWED_GLOBALS:
            return _resolve_allowed(module, name)
        if module == "torch" and isinstance(vars(torch).get(name), torch.dtype):  # no lazy torch imports
            return vars(torch)[name]
        key = f"{module}.{name}"
        if key not in self.stand_ins:
            self.stand_ins[key] = type(re.sub(r"\W", "_", name) or "Anon", (StandIn,),
                                       {"_source": key, "__module__": __name__})
        return self.stand_ins[key]


def _resolve_allowed(module: str, name: str):
    """One of ``_ALLOWED_GLOBALS`` (fixed names from this file, never from the checkpoint)."""
    return getattr(importlib.import_module(module), name)


def _restricted_load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


# torch.load(pickle_module=...) needs an object with Unpickler and load (and a __name__)
_RESTRICTED_PICKLE = types.SimpleNamespace(__name__="headzoo_restricted_pickle", Unpickler=RestrictedUnpickler,
                                           load=_restricted_load)


def load_restricted(path: str | Path, map_location: Any = "cpu") -> Any:
    """Read any torch.save file without running code from it (unknown classes become ``StandIn``)."""
    return torch.load(Path(path), map_location=map_location, pickle_module=_RESTRICTED_PICKLE, weights_only=False)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Our checkpoint (``weights_only=True``), a YOLOv5 v7.0 ``.pt`` (restricted unpickler) or a bare state_dict
    (a torchvision detector's; no YAML) -> our dict shape with ``format`` 'headzoo', 'yolov5' or 'state_dict'. Tensors keep their dtype (YOLOv5 files hold FP16). A file
    that is not a checkpoint (empty, truncated, another format) is one ValueError line naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found (weights are local files: nothing is downloaded)")
    if path.stat().st_size == 0:
        raise ValueError(_not_a_checkpoint(path, "the file is empty"))
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # pickled classes inside (a foreign checkpoint), or not a pickle at all
        return _from_yolov5(_load_foreign(path, map_location), path)
    except _UNREADABLE as e:
        raise ValueError(_not_a_checkpoint(path, e)) from e
    if isinstance(ckpt, dict) and ckpt and all(isinstance(v, Tensor) for v in ckpt.values()):
        return {"format": "state_dict", "model": ckpt, "yaml": None}  # a bare state_dict (e.g. torchvision's)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise ValueError(_not_a_checkpoint(path, f"it holds a {type(ckpt).__name__} without a 'model' state_dict"))
    ckpt.setdefault("format", "headzoo")
    return ckpt


# what torch.load raises on a file that is not a torch.save file (empty, truncated, text, another pickle protocol)
# and, on damaged bytes, what the unpicklers let through (found by tests/test_fuzz.py): torch's AssertionError
# "saved_id must be a tuple", a MemoryError for an opcode declaring a huge length, SystemError on a broken buffer
_UNREADABLE = (EOFError, pickle.UnpicklingError, RuntimeError, KeyError, IndexError, ValueError, UnicodeDecodeError,
               struct.error, AssertionError, TypeError, AttributeError, OverflowError, NotImplementedError,
               MemoryError, SystemError)


def _not_a_checkpoint(path: Path, why: str | BaseException) -> str:
    if isinstance(why, BaseException):
        first = (str(why).strip().splitlines() or [""])[0].split(". ")[0]  # torch's advice sentences dropped
        why = f"torch.load: {type(why).__name__}" + (f": {first[:160]}" if first else "")
    return (f"{path} is not a checkpoint ({why}); expected a .pt written by train.py (torch.save of a dict of "
            f"state_dicts) or a YOLOv5 v7.0 .pt")


def _load_foreign(path: Path, map_location: Any) -> Any:
    try:
        return load_restricted(path, map_location)
    except _UNREADABLE as e:
        raise ValueError(_not_a_checkpoint(path, e)) from e


def _from_yolov5(raw: Any, path: Path) -> dict:
    """A restricted-loaded YOLOv5 checkpoint dict -> our dict shape (EMA weights preferred, as YOLOv5)."""
    if not isinstance(raw, dict):
        raise ValueError(_not_a_checkpoint(path, f"it holds a {_kind(raw)}, not a dict"))
    module = raw.get("ema") if raw.get("ema") is not None else raw.get("model")
    if not _is_module_tree(module):
        foreign = sorted({v._source for v in raw.values() if isinstance(v, StandIn)})
        asks = f"; refused: it asks for {', '.join(foreign)}, outside the allow-list (nothing was run)" if foreign else ""
        raise ValueError(_not_a_checkpoint(path, f"'model'/'ema' holds a {_kind(module)}, neither a state_dict "
                                                 f"readable with weights_only=True nor a pickled YOLOv5 model{asks}"))
    attrs = module.__dict__
    stride = attrs.get("stride")
    epoch = raw.get("epoch")
    return {
        "model": standin_state_dict(module),
        "ema": None, "updates": None, "optimizer": None,
        "epoch": epoch if isinstance(epoch, int) else -1,
        "best_fitness": None,
        "yaml": _plain_or_none(attrs.get("yaml"), f"{path}: model.yaml"),
        "names": _plain_or_none(attrs.get("names"), f"{path}: model.names"),
        "stride": stride.float() if isinstance(stride, Tensor) else None,
        "opt": _plain_items(raw.get("opt"), f"{path}: opt"),
        "date": raw.get("date") if isinstance(raw.get("date"), str) else None,
        "version": None,
        "format": "yolov5",
        "source_class": module._source,
    }


def _is_module_tree(obj: Any) -> bool:
    """A stand-in for a pickled ``nn.Module`` (its state has ``_parameters`` and ``_modules``), not a stand-in
    for a call such as ``os.system(...)`` or some other object."""
    return isinstance(obj, StandIn) and isinstance(obj.__dict__.get("_modules"), dict) and \
        isinstance(obj.__dict__.get("_parameters"), dict)


def _kind(obj: Any) -> str:
    return f"pickled {obj._source}" if isinstance(obj, StandIn) else type(obj).__name__


def _plain_or_none(value: Any, where: str) -> Any:
    """``value`` if it holds only plain types (no stand-ins), else None with a warning naming ``where``."""
    try:
        return to_plain(value, where)
    except TypeError as e:
        LOGGER.warning(f"WARNING ⚠️ ignoring {where}: {e}")
        return None


def _plain_items(value: Any, where: str) -> dict:
    """The plain entries of a dict; the others are dropped with one warning naming them."""
    if not isinstance(value, dict):
        return {}
    out, dropped = {}, []
    for k, v in value.items():
        try:
            out[k] = to_plain(v, f"{where}[{k!r}]")
        except TypeError:
            dropped.append(str(k))
    if dropped:
        LOGGER.warning(f"WARNING ⚠️ {where}: dropped non-plain entries {', '.join(dropped)}")
    return out


def standin_state_dict(module: StandIn, prefix: str = "") -> dict[str, Tensor]:
    """Walk a stand-in ``nn.Module`` tree (``_parameters``, ``_buffers``, ``_modules``) into the state_dict
    ``nn.Module.state_dict`` would give: own parameters, persistent buffers, then children, depth-first."""
    attrs = module.__dict__
    sd: dict[str, Tensor] = {}
    skip = set(attrs.get("_non_persistent_buffers_set") or ())
    for kind in ("_parameters", "_buffers"):
        for name, t in (attrs.get(kind) or {}).items():
            if t is None or (kind == "_buffers" and name in skip):
                continue
            if not isinstance(t, Tensor):
                raise ValueError(f"{module._source} {kind}[{name!r}] at '{prefix}{name}' is a "
                                 f"{type(t).__name__}, not a tensor")
            sd[prefix + name] = t.detach()
    for name, child in (attrs.get("_modules") or {}).items():
        if isinstance(child, StandIn):
            sd.update(standin_state_dict(child, f"{prefix}{name}."))
    return sd


# ---------------------------------------------------------------------------------------------
# Transfer between model YAMLs
# ---------------------------------------------------------------------------------------------
_ROW_KEY = re.compile(r"^model\.(\d+)\.(.+)$")


@dataclass
class TransferReport:
    """What ``transfer_weights`` moved. ``mode`` 'name': keys matched by name and shape (YOLOv5's
    intersect_dicts); 'aligned': along the row alignment ``rows`` [(src row, dst row)]. ``fresh`` lists the dst
    rows with weights that received none; ``partial`` those that received some but not all."""
    transferred: int
    total: int
    mode: str
    rows: list[tuple[int, int]] = field(default_factory=list)
    fresh: list[int] = field(default_factory=list)
    partial: list[int] = field(default_factory=list)

    def summary(self, weights: str | Path) -> str:
        return f"Transferred {self.transferred}/{self.total} items from {weights}"

    def lines(self) -> list[str]:
        """Human-readable row map, e.g. 'rows matched (src->dst): 0-1->0-1 2-24->3-25'."""
        out = [f"transfer by {'name' if self.mode == 'name' else 'row alignment'}: {len(self.rows)} rows matched"
               + (f" (src->dst): {' '.join(_runs(self.rows))}" if self.rows else "")]
        if self.fresh:
            out.append(f"rows starting fresh: {' '.join(map(str, self.fresh))}")
        if self.partial:
            out.append(f"rows partly transferred (shape mismatch): {' '.join(map(str, self.partial))}")
        return out


def _runs(pairs: list[tuple[int, int]]) -> list[str]:
    """[(0, 0), (1, 1), (2, 3), (3, 4)] -> ['0-1->0-1', '2-3->3-4']: runs of consecutive rows, same offset."""
    runs: list[list[tuple[int, int]]] = []
    for i, j in pairs:
        if runs and runs[-1][-1] == (i - 1, j - 1):
            runs[-1].append((i, j))
        else:
            runs.append([(i, j)])

    def span(a: int, b: int) -> str:
        return str(a) if a == b else f"{a}-{b}"

    return [f"{span(r[0][0], r[-1][0])}->{span(r[0][1], r[-1][1])}" for r in runs]


def _split_rows(sd: dict[str, Tensor]) -> tuple[dict[int, dict[str, Tensor]], dict[str, Tensor]]:
    """state_dict -> ({row: {key suffix: tensor}}, {other keys: tensor})."""
    rows: dict[int, dict[str, Tensor]] = {}
    other = {}
    for k, v in sd.items():
        m = _ROW_KEY.match(k)
        if m:
            rows.setdefault(int(m.group(1)), {})[m.group(2)] = v
        else:
            other[k] = v
    return rows, other


def _row_types(cfg: dict | None, n: int) -> list[str]:
    """Module name of each YAML row (backbone + head); '?' for all when there is no YAML."""
    if not cfg:
        return ["?"] * n
    return [str(row[2]) for row in list(cfg.get("backbone") or []) + list(cfg.get("head") or [])]


def _row_score(src: dict[str, Tensor], dst: dict[str, Tensor], exclude: tuple[str, ...]) -> int:
    """How many of ``dst``'s tensors have a same-suffix, same-shape tensor in ``src``."""
    return sum(1 for k, t in dst.items()
               if k in src and src[k].shape == t.shape and not any(x in k for x in exclude))


def align_rows(src_types: list[str], dst_types: list[str], src_rows: dict[int, dict[str, Tensor]],
               dst_rows: dict[int, dict[str, Tensor]], exclude: tuple[str, ...] = ()) -> list[tuple[int, int]]:
    """Order-preserving row alignment maximising the number of transferable tensors (weighted LCS).

    Rows may pair only when their module types agree and they share a tensor, or both have none (a tiny
    bonus then aligns parameter-free rows such as Upsample and Concat). Ties prefer the diagonal."""
    n, m = len(src_types), len(dst_types)
    w = np.full((n, m), -1.0)
    for i in range(n):
        for j in range(m):
            if src_types[i] != dst_types[j]:
                continue
            s, d = src_rows.get(i, {}), dst_rows.get(j, {})
            score = _row_score(s, d, exclude)
            if score or (not s and not d):
                w[i, j] = score + 1e-3
    best = np.zeros((n + 1, m + 1))
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diag = best[i - 1, j - 1] + w[i - 1, j - 1] if w[i - 1, j - 1] >= 0 else -1.0
            best[i, j] = max(diag, best[i - 1, j], best[i, j - 1])
    pairs, i, j = [], n, m
    while i and j:
        if w[i - 1, j - 1] >= 0 and best[i, j] == best[i - 1, j - 1] + w[i - 1, j - 1]:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif best[i, j] == best[i - 1, j]:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def _take(src: Tensor, dst: Tensor) -> Tensor:
    return src.detach().to(dtype=dst.dtype, copy=True)


def transfer_weights(src_sd: dict[str, Tensor], src_yaml: dict | None, dst_sd: dict[str, Tensor],
                     dst_yaml: dict | None, exclude: tuple[str, ...] = ()) -> tuple[dict[str, Tensor], TransferReport]:
    """Copy ``src_sd`` tensors into a copy of ``dst_sd`` (dst dtypes) -> (new state_dict, report).

    First YOLOv5's rule: identical key and shape. If aligning the YAML rows (``align_rows``) transfers more
    -- an inserted or removed row shifts every later ``model.<row>.`` index -- tensors move row by row along
    the alignment instead, again only where the key suffix and the shape agree. Keys containing any
    ``exclude`` substring (e.g. 'anchor') are never transferred."""
    def ok(k: str, s: Tensor | None, d: Tensor) -> bool:
        return s is not None and s.shape == d.shape and not any(x in k for x in exclude)

    by_name = {k: _take(src_sd[k], d) for k, d in dst_sd.items() if ok(k, src_sd.get(k), d)}
    src_rows, src_other = _split_rows(src_sd)
    dst_rows, dst_other = _split_rows(dst_sd)
    n_src = max(len(_row_types(src_yaml, 0)), max(src_rows, default=-1) + 1)
    n_dst = max(len(_row_types(dst_yaml, 0)), max(dst_rows, default=-1) + 1)
    if not (src_yaml and dst_yaml):  # without both YAMLs, rows are told apart by their tensors only
        src_yaml = dst_yaml = None
    src_types = (_row_types(src_yaml, n_src) + ["?"] * n_src)[:n_src]
    dst_types = (_row_types(dst_yaml, n_dst) + ["?"] * n_dst)[:n_dst]
    pairs = align_rows(src_types, dst_types, src_rows, dst_rows, exclude)
    aligned = {k: _take(s, dst_other[k]) for k, s in src_other.items() if k in dst_other and ok(k, s, dst_other[k])}
    for i, j in pairs:
        for suffix, d in dst_rows.get(j, {}).items():
            s = src_rows.get(i, {}).get(suffix)
            if ok(suffix, s, d):
                aligned[f"model.{j}.{suffix}"] = _take(s, d)
    mode, moved = ("aligned", aligned) if len(aligned) > len(by_name) else ("name", by_name)
    if mode == "name":
        pairs = [(j, j) for j in sorted(dst_rows) if any(f"model.{j}.{s}" in moved for s in dst_rows[j])]
    new_sd = {k: moved.get(k, v) for k, v in dst_sd.items()}
    got = {j: sum(f"model.{j}.{s}" in moved for s in dst_rows[j]) for j in dst_rows}
    report = TransferReport(transferred=len(moved), total=len(dst_sd), mode=mode, rows=pairs,
                            fresh=[j for j in sorted(got) if got[j] == 0],
                            partial=[j for j in sorted(got) if 0 < got[j] < len(dst_rows[j])])
    return new_sd, report


def train_imgsz(opt) -> int | None:
    """The training image size recorded in a checkpoint's ``opt`` (ours: an int; YOLOv5's: an int or [h, w]),
    or None when it holds none (a bare state_dict, a foreign file without ``opt``). Export metadata's ``imgsz``
    is read the same way."""
    size = opt.get("imgsz", opt.get("img_size")) if isinstance(opt, dict) else None
    if isinstance(size, str) and size.strip().isdigit():  # ONNX metadata values are strings
        size = int(size)
    if isinstance(size, (list, tuple)) and size:
        size = max(size)
    return int(size) if isinstance(size, (int, float)) and not isinstance(size, bool) and size > 0 else None
