"""One loader for inference weights, chosen by suffix, behind one small interface (``Backend``).

    .pt           our checkpoint, or a YOLOv5 v7.0 pickle read without running its code -> DetectionModel
    anything else an export format of models/formats (its ``ExportFormat``: suffix, exporter, loader):
                  .torchscript, .onnx, *_openvino_model/, *_ncnn_model/ and any format registered later

Shape shorthand: B batch, H/W input height/width (multiples of the stride), N predictions, nc classes.
Every backend maps a float image batch ``(B, 3, H, W)`` in [0, 1] to the head contract's decoded layout
``(B, N, 5 + nc)`` = cxcywh input pixels, objectness, class probabilities (float32), so val.py and detect.py
never ask which format they run. A static export has a fixed batch and size (``Backend.batch``,
``Backend.imgsz``); other batch sizes are split/padded here, other sizes are a clear error.

Export metadata (written by the exporters, read by the loaders with the helpers here): ``stride`` (max stride,
int), ``names`` ({int: str}), ``shape`` ([B, 3, H, W] traced), ``dynamic`` (any batch and size), ``half``,
``suppressed`` (the outputs are final detections: no NMS), ``imgsz`` (the size the model was trained at, the
default inference size; absent when unknown). ONNX keeps them as metadata_props strings (JSON;
YOLOv5's Python-dict ``names`` are read too), TorchScript as one JSON ``config.txt``, the OpenVINO and ncnn folders
as ``metadata.yaml`` (YOLOv5's ``<name>.yaml`` beside the .xml is read too). The thread budget of every CPU
runtime is torch's (``torch.get_num_threads()``).
"""
from __future__ import annotations

import ast
import contextlib
import importlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import yaml
from torch import Tensor

from models.formats.registry import FORMATS, PYTORCH_SUFFIX, format_of
from models.yolo import DetectionModel
from utils.io.checkpoint import load_checkpoint, train_imgsz
from utils.torch_utils import LOGGER


def require(*modules: str, purpose: str):
    """Import optional packages -> the last one, or one ValueError line naming every missing one and the pip
    command."""
    imported, missing = None, []
    for name in modules:
        try:
            imported = importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        which = (f"package '{missing[0]}', which is" if len(missing) == 1 else
                 f"packages {', '.join(repr(m) for m in missing)}, which are")
        raise ValueError(f"{purpose} needs the optional {which} not installed: pip install {' '.join(missing)}")
    return imported


def suffixes() -> tuple[str, ...]:
    """Every weights suffix load_backend reads: .pt, then the registered formats' (files, then folders)."""
    ordered = sorted(FORMATS.values(), key=lambda f: f.folder)
    return (PYTORCH_SUFFIX, *(f.suffix for f in ordered))


def weights_format(path: Path) -> str | None:
    """The suffix of ``suffixes()`` that ``path`` has: a file suffix or a folder-name ending; None if none."""
    if path.suffix == PYTORCH_SUFFIX and path.name != PYTORCH_SUFFIX:
        return PYTORCH_SUFFIX
    fmt = format_of(path)
    return fmt.suffix if fmt else None


def load_model(weights: str | Path, device: torch.device | str = "cpu", fuse: bool = True) -> DetectionModel:
    """A ``.pt`` checkpoint (ours, or a YOLOv5 v7.0 pickle read without running its code) -> eval model."""
    path = Path(weights)
    if path.suffix != ".pt":
        raise ValueError(f"--weights {weights}: unsupported format '{path.suffix}'; use a .pt checkpoint")
    model = DetectionModel.from_checkpoint(load_checkpoint(path))
    model = model.to(device).eval().deploy()  # no training-only modules in an inference model
    return model.fuse() if fuse else model


@dataclass(eq=False)
class Backend:
    """A loaded detector of any format: ``backend(im) -> (B, N, 5 + nc)`` float32 on ``device``."""

    run_fn: Callable[[Tensor], Tensor]  # (batch, 3, H, W) in the backend's dtype -> decoded predictions
    fmt: str  # 'pytorch', or the name of its export format ('onnx', models/formats)
    weights: Path
    device: torch.device
    stride: int  # largest stride: input sizes are multiples of it
    names: dict[int, str]
    fp16: bool = False
    batch: int | None = None  # fixed batch of a static export; None = any
    imgsz: tuple[int, int] | None = None  # fixed (H, W) of a static export; None = any
    model: DetectionModel | None = field(default=None, repr=False)  # the PyTorch model behind a .pt
    suppressed: bool = False  # outputs are final detections: no NMS (models/heads/base.py)
    bf16: bool = False  # computes in BF16 inside the runtime (OpenVINO --half on a BF16 CPU); inputs stay FP32
    own_threads: bool = False  # a runtime with its own CPU thread pool (ONNX Runtime, OpenVINO, ncnn)
    train_imgsz: int | None = None  # the size the model was trained at (checkpoint opt / export metadata); None=unknown
    runner: Callable[[int], Callable[[Tensor], Tensor]] | None = field(default=None, repr=False)  # threads ->
    # a new run_fn on that many CPU threads that several threads may call at once (ONNX Runtime); None: cannot

    @property
    def nc(self) -> int:
        return len(self.names)

    @property
    def pt(self) -> bool:
        return self.fmt == "pytorch"

    @property
    def dynamic(self) -> bool:
        """Runs at any batch size and any stride-multiple input size (rect batches, minimal letterbox)."""
        return self.batch is None and self.imgsz is None

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.fp16 else torch.float32

    @contextlib.contextmanager
    def host_threads(self) -> Iterator[None]:
        """While a CPU runtime with its own thread pool (ONNX Runtime, OpenVINO, ncnn) owns the cores, torch's ops
        around it (pre-processing, NMS, metrics) run on one thread: the runtime's threads keep spinning for a while
        after each call, and torch's second thread then waits for a core (detect.py on the demo video: pre-process
        4.5 ms -> 1.3 ms a frame; bench/README.md "Issue 18's acceptance runs")."""
        if not self.own_threads or self.device.type != "cpu":
            yield
            return
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def concurrent(self, calls: int) -> Backend | None:
        """This backend for ``calls`` calls at once from as many threads, each on its share of torch's CPU threads
        (one each on 2 cores): overlapping frames keep every core busy where one frame's call on all of them waits
        at its barriers (detect.py on video files; bench/README.md "Frames in flight"). None where the runtime
        cannot (PyTorch, OpenVINO, ncnn, CUDA) or there are fewer threads than calls."""
        threads = torch.get_num_threads()
        if self.runner is None or self.device.type != "cpu" or calls < 2 or threads < calls:
            return None
        return replace(self, run_fn=self.runner(threads // calls), runner=None)

    @torch.no_grad()
    def __call__(self, im: Tensor) -> Tensor:
        if im.ndim != 4 or im.shape[1] != 3:
            raise ValueError(f"{self.weights}: input of shape {tuple(im.shape)} is not (B, 3, H, W)")
        if self.imgsz is not None and tuple(im.shape[2:]) != self.imgsz:
            raise ValueError(f"{self.weights}: static {self.fmt} export takes {self.imgsz[0]}x{self.imgsz[1]} (HxW) "
                             f"inputs, got {im.shape[2]}x{im.shape[3]}; letterbox to that size or re-export "
                             f"with --dynamic")
        im = im.to(self.device, self.dtype)
        if self.batch is None or im.shape[0] == self.batch:
            return self.run_fn(im).float()
        return _run_fixed_batch(self.run_fn, im, self.batch).float()

    def warmup(self, imgsz: tuple[int, int] = (640, 640)) -> None:
        """One forward on zeros (at the fixed shape of a static export), so the first frame's timing is fair."""
        h, w = self.imgsz or imgsz
        self(torch.zeros(self.batch or 1, 3, h, w, device=self.device))

    def describe(self) -> str:
        shape = "dynamic" if self.dynamic else f"batch {self.batch or 'any'}, " + (
            f"{self.imgsz[0]}x{self.imgsz[1]}" if self.imgsz else "any size")
        precision = "FP16" if self.fp16 else "BF16 compute" if self.bf16 else "FP32"
        return (f"{self.weights} ({self.fmt}, {precision}, {shape}, stride {self.stride}, "
                f"{self.nc} classes) on {self.device}")


def _run_fixed_batch(run_fn: Callable[[Tensor], Tensor], im: Tensor, batch: int) -> Tensor:
    """Split ``im`` into chunks of the export's batch (the last one zero-padded), run, concatenate, trim."""
    n = im.shape[0]
    pad = -n % batch
    if pad:
        im = torch.cat((im, im.new_zeros((pad, *im.shape[1:]))), 0)
    return torch.cat([run_fn(chunk) for chunk in im.split(batch)], 0)[:n]


def load_backend(weights: str | Path, device: torch.device | str = "cpu", half: bool = False,
                 fuse: bool = True) -> Backend:
    """The backend for ``weights`` by suffix: a ``.pt`` here, an export through its format's loader. ``half`` runs
    a ``.pt`` in FP16 (CUDA only), or a format with a ``bf16`` check (OpenVINO) in BF16 on a CPU that has it; other
    exported files keep the precision they were exported with."""
    path, device = Path(weights), torch.device(device)
    suffix = weights_format(path)
    if suffix is None:
        raise ValueError(f"--weights {weights}: unsupported format '{path.suffix or path.name}'; use one of "
                         f"{', '.join(suffixes())}")
    fmt = format_of(path) if suffix != PYTORCH_SUFFIX else None
    folder = fmt is not None and fmt.folder
    if not (path.is_dir() if folder else path.is_file()):
        raise FileNotFoundError(f"--weights {weights}: {'folder' if folder else 'file'} not found "
                                f"(weights are local files: nothing is downloaded)")
    if half and device.type != "cuda" and (fmt is None or fmt.bf16 is None):
        bf16 = " or ".join(f.title for f in FORMATS.values() if f.bf16) or "no"
        raise ValueError(f"--half needs a CUDA device, got {device}; on a CPU only {bf16} models run reduced "
                         f"precision (BF16), and FP16 is not supported")
    backend = (fmt.load if fmt else _load_pytorch)(path, device, half, fuse)
    LOGGER.info(f"Loaded {backend.describe()}")
    return backend


def backend_from_model(model: DetectionModel, source: str | Path, device: torch.device | str = "cpu",
                       half: bool = False) -> Backend:
    """An in-memory model behind the Backend interface, in eval mode on ``device``; ``source`` (its checkpoint
    or YAML) names it in messages."""
    device = torch.device(device)
    model = model.to(device).eval()
    model = model.half() if half else model.float()

    def run_fn(im: Tensor) -> Tensor:
        return model(im)[0]

    return Backend(run_fn, "pytorch", Path(source), device, max(int(model.stride.max()), 32), dict(model.names),
                   fp16=half, model=model, suppressed=model.suppressed, train_imgsz=model.train_imgsz)


def _load_pytorch(path: Path, device: torch.device, half: bool, fuse: bool) -> Backend:
    return backend_from_model(load_model(path, device, fuse), path, device, half)


# ---------------------------------------------------------------------------------------------------------------
# exported files: metadata


def parse_names(value: str | dict | list | None, where: str) -> dict[int, str] | None:
    """``names`` from metadata: a JSON object/list (ours) or a Python dict literal (YOLOv5's ``str(names)``)."""
    if value is None or isinstance(value, (dict, list)):
        names = value
    else:
        try:
            names = json.loads(value)
        except ValueError:
            try:
                names = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise ValueError(f"{where}: metadata 'names' is neither JSON nor a dict literal: {value[:80]!r}") \
                    from None
    if names is None:
        return None
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict):
        raise ValueError(f"{where}: metadata 'names' must map class ids to names, got {type(names).__name__}")
    return {int(k): str(v) for k, v in sorted(names.items(), key=lambda kv: int(kv[0]))}


def meta_bool(value, where: str, key: str) -> bool:
    if isinstance(value, bool) or value is None:
        return bool(value)
    if str(value).lower() in ("true", "1"):
        return True
    if str(value).lower() in ("false", "0"):
        return False
    raise ValueError(f"{where}: metadata '{key}' must be true or false, got {value!r}")


def meta_stride(value, where: str) -> int:
    if value is None:
        LOGGER.warning(f"WARNING: {where}: no 'stride' in the metadata, assuming 32")
        return 32
    try:
        return max(int(float(value)), 32)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: metadata 'stride' is not a number: {value!r}") from None


def default_names(names: dict[int, str] | None, nc: int | None, where: str) -> dict[int, str]:
    if names is None:
        if nc is None:
            raise ValueError(f"{where}: no class 'names' in the metadata and no fixed output size to count them")
        LOGGER.warning(f"WARNING: {where}: no class names in the metadata, using class0..class{nc - 1}")
        return {i: f"class{i}" for i in range(nc)}
    if nc is not None and nc != len(names):
        raise ValueError(f"{where}: metadata lists {len(names)} class names but the output has {nc} classes")
    return names


def static_shape(shape, dynamic: bool) -> tuple[int | None, tuple[int, int] | None]:
    """(batch, (H, W)) of a static export from its traced ``shape`` [B, 3, H, W]; (None, None) if dynamic."""
    if dynamic or not shape:
        return None, None
    b, _, h, w = (int(x) for x in shape)
    return b, (h, w)




def input_shape(shape: list) -> tuple[int | None, tuple[int, int] | None]:
    """(batch, (H, W)) from a runtime's input shape (ONNX, OpenVINO); named (symbolic) or -1 dims are dynamic."""
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    batch = dims[0] if len(dims) == 4 else None
    hw = (dims[2], dims[3]) if len(dims) == 4 and dims[2] and dims[3] else None
    return batch, hw


def exported_backend(run_fn: Callable[[Tensor], Tensor], fmt: str, path: Path, device: torch.device, meta: dict,
                     nc: int | None = None, **fields) -> Backend:
    """The Backend of an exported file: stride, class names (checked against ``nc`` when the output fixes it) and
    ``suppressed`` from its metadata; ``fields``: the rest of Backend's (fp16, batch, imgsz, own_threads, ...)."""
    where = str(path)
    names = default_names(parse_names(meta.get("names"), where), nc, where)
    return Backend(run_fn, fmt, path, device, meta_stride(meta.get("stride"), where), names,
                   suppressed=meta_bool(meta.get("suppressed"), where, "suppressed"),
                   train_imgsz=train_imgsz(meta), **fields)


def inference_size(given, backend: Backend, fallback: int = 640, flag: str = "--imgsz"):
    """The size to run ``backend`` at: ``given`` when the user gave one, else the size the model was trained at
    (a checkpoint's ``opt``, an export's metadata), else ``fallback``; the log says which when it was not given
    (a model trained at 160 px finds nothing letterboxed to 640: its objects would be 4x the size it learned)."""
    if given:
        return given
    if backend.train_imgsz:
        LOGGER.info(f"{flag} not given: using {backend.train_imgsz}, the size {backend.weights.name} was trained at")
        return backend.train_imgsz
    LOGGER.info(f"{flag} not given and {backend.weights.name} does not record its training size: using {fallback}")
    return fallback


# ---------------------------------------------------------------------------------------------------------------
# exported folders (OpenVINO, ncnn): metadata.yaml beside the model files


def write_folder_meta(folder: Path, meta: dict) -> None:
    (folder / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False, allow_unicode=True))


def folder_meta(path: Path, stem: str) -> dict:
    """metadata.yaml of an exported folder (ours), else ``<stem>.yaml`` (YOLOv5 v7.0's OpenVINO folder)."""
    for f in (path / "metadata.yaml", path / f"{stem}.yaml"):
        if f.is_file():
            meta = yaml.safe_load(f.read_text())
            if not isinstance(meta, dict):
                raise ValueError(f"{f}: metadata must be a mapping, got {type(meta).__name__}")
            return meta
    LOGGER.warning(f"WARNING: {path}: no metadata.yaml")
    return {}


def one_file(path: Path, pattern: str) -> Path:
    found = sorted(path.glob(pattern))
    if len(found) != 1:
        raise ValueError(f"{path}: expected one {pattern} file, found {len(found)}: {[f.name for f in found]}")
    return found[0]


def cpu_only(fmt: str, device: torch.device) -> None:
    if device.type != "cpu":
        LOGGER.warning(f"WARNING: the {fmt} backend runs on CPU here; outputs are moved to {device}")
