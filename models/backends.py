"""One loader for inference weights, chosen by suffix, behind one small interface (``Backend``).

    .pt           our checkpoint, or a YOLOv5 v7.0 pickle read without running its code -> DetectionModel
    .torchscript  torch.jit module written by export.py (metadata in the ``config.txt`` extra file)
    .onnx         ONNX Runtime session (CPU; CUDA when asked for and available; metadata in metadata_props),
                  with torch's intra-op thread count (``torch.set_num_threads`` / OMP_NUM_THREADS)
    *_openvino_model/  OpenVINO IR (.xml + .bin) compiled for CPU in FP32, or BF16 with ``half`` on a CPU that has it
                       (optional package ``openvino``)
    *_ncnn_model/      ncnn .param + .bin from pnnx, batch 1, FP32 (optional package ``ncnn``)

Shape shorthand: B batch, H/W input height/width (multiples of the stride), N predictions, nc classes.
Every backend maps a float image batch ``(B, 3, H, W)`` in [0, 1] to the head contract's decoded layout
``(B, N, 5 + nc)`` = cxcywh input pixels, objectness, class probabilities (float32), so val.py and detect.py
never ask which format they run. A static export has a fixed batch and size (``Backend.batch``,
``Backend.imgsz``); other batch sizes are split/padded here, other sizes are a clear error.

Export metadata (written by export.py, read here): ``stride`` (max stride, int), ``names`` ({int: str}),
``shape`` ([B, 3, H, W] traced), ``dynamic`` (any batch and size), ``half``, ``suppressed`` (the outputs are
final detections: no NMS). ONNX keeps them as
metadata_props strings (JSON; YOLOv5's Python-dict ``names`` are read too), TorchScript as one JSON
``config.txt``, the OpenVINO and ncnn folders as ``metadata.yaml`` (YOLOv5's ``<name>.yaml`` beside the .xml is
read too). The thread budget of every CPU runtime is torch's (``torch.get_num_threads()``).
"""
from __future__ import annotations

import ast
import contextlib
import importlib
import json
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import Tensor

from models.yolo import DetectionModel
from utils.io.checkpoint import load_checkpoint
from utils.torch_utils import LOGGER

SUFFIXES = (".pt", ".torchscript", ".onnx", "_openvino_model", "_ncnn_model")  # files, then folders


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


def weights_format(path: Path) -> str | None:
    """The entry of SUFFIXES that ``path`` has: a file suffix or a folder-name ending; None if none."""
    return next((s for s in SUFFIXES if path.name.endswith(s) and path.name != s), None)


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
    fmt: str  # 'pytorch' | 'torchscript' | 'onnx' | 'openvino' | 'ncnn'
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
        if self.fmt not in ("onnx", "openvino", "ncnn") or self.device.type != "cpu":
            yield
            return
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

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
    """The backend for ``weights`` by suffix. ``half`` runs a ``.pt`` in FP16 (CUDA only), or an OpenVINO model
    in BF16 on a CPU that has it (``cpu_bf16``); other exported files keep the precision they were exported with."""
    path, device = Path(weights), torch.device(device)
    fmt = weights_format(path)
    if fmt is None:
        raise ValueError(f"--weights {weights}: unsupported format '{path.suffix or path.name}'; use one of "
                         f"{', '.join(SUFFIXES)}")
    if not (path.is_file() if fmt.startswith(".") else path.is_dir()):
        raise FileNotFoundError(f"--weights {weights}: {'file' if fmt.startswith('.') else 'folder'} not found "
                                f"(weights are local files: nothing is downloaded)")
    if half and device.type != "cuda" and fmt != "_openvino_model":
        raise ValueError(f"--half needs a CUDA device, got {device}; on a CPU only OpenVINO models run reduced "
                         f"precision (BF16), and FP16 is not supported")
    loader = {".pt": _load_pytorch, ".torchscript": _load_torchscript, ".onnx": _load_onnx,
              "_openvino_model": _load_openvino, "_ncnn_model": _load_ncnn}[fmt]
    backend = loader(path, device, half, fuse)
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
                   fp16=half, model=model, suppressed=model.suppressed)


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


def _meta_bool(value, where: str, key: str) -> bool:
    if isinstance(value, bool) or value is None:
        return bool(value)
    if str(value).lower() in ("true", "1"):
        return True
    if str(value).lower() in ("false", "0"):
        return False
    raise ValueError(f"{where}: metadata '{key}' must be true or false, got {value!r}")


def _meta_stride(value, where: str) -> int:
    if value is None:
        LOGGER.warning(f"WARNING: {where}: no 'stride' in the metadata, assuming 32")
        return 32
    try:
        return max(int(float(value)), 32)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: metadata 'stride' is not a number: {value!r}") from None


def _default_names(names: dict[int, str] | None, nc: int | None, where: str) -> dict[int, str]:
    if names is None:
        if nc is None:
            raise ValueError(f"{where}: no class 'names' in the metadata and no fixed output size to count them")
        LOGGER.warning(f"WARNING: {where}: no class names in the metadata, using class0..class{nc - 1}")
        return {i: f"class{i}" for i in range(nc)}
    if nc is not None and nc != len(names):
        raise ValueError(f"{where}: metadata lists {len(names)} class names but the output has {nc} classes")
    return names


def _static_shape(shape, dynamic: bool) -> tuple[int | None, tuple[int, int] | None]:
    """(batch, (H, W)) of a static export from its traced ``shape`` [B, 3, H, W]; (None, None) if dynamic."""
    if dynamic or not shape:
        return None, None
    b, _, h, w = (int(x) for x in shape)
    return b, (h, w)


# ---------------------------------------------------------------------------------------------------------------
# exported files: loaders


def _load_torchscript(path: Path, device: torch.device, half: bool, fuse: bool) -> Backend:
    extra = {"config.txt": ""}
    try:
        with warnings.catch_warnings():  # torch 2.10+ marks TorchScript deprecated; it still loads and runs
            warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=FutureWarning)
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except RuntimeError as e:
        raise ValueError(f"{path}: not a readable TorchScript file: {str(e).splitlines()[0]}") from None
    where = str(path)
    try:
        meta = json.loads(extra["config.txt"] or "{}")
    except ValueError:
        raise ValueError(f"{where}: config.txt metadata is not JSON") from None
    fp16 = _meta_bool(meta.get("half"), where, "half")
    if fp16 and device.type != "cuda":
        raise ValueError(f"{where} was exported in FP16, which runs on CUDA only; got device {device}. Export "
                         f"without --half for CPU")
    batch, imgsz = _static_shape(meta.get("shape"), _meta_bool(meta.get("dynamic"), where, "dynamic"))
    names = _default_names(parse_names(meta.get("names"), where), None, where)
    module.eval()

    def run_fn(im: Tensor) -> Tensor:
        y = module(im)
        return y[0] if isinstance(y, (list, tuple)) else y

    return Backend(run_fn, "torchscript", path, device, _meta_stride(meta.get("stride"), where), names, fp16,
                   batch, imgsz, suppressed=_meta_bool(meta.get("suppressed"), where, "suppressed"))


def _ort_providers(device: torch.device) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.type == "cuda":
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        LOGGER.warning("WARNING: onnxruntime has no CUDAExecutionProvider here; running the ONNX model on CPU")
    return ["CPUExecutionProvider"]


def _onnx_input_shape(shape: list) -> tuple[int | None, tuple[int, int] | None]:
    """(batch, (H, W)) from an ONNX input shape; named (symbolic) dims are dynamic."""
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    batch = dims[0] if len(dims) == 4 else None
    hw = (dims[2], dims[3]) if len(dims) == 4 and dims[2] and dims[3] else None
    return batch, hw


def _load_onnx(path: Path, device: torch.device, half: bool, fuse: bool) -> Backend:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ValueError(f"{path}: running ONNX models needs onnxruntime (pip install onnxruntime)") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same thread budget as PyTorch
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=_ort_providers(device))
    except Exception as e:  # onnxruntime raises its own exception types for unreadable models
        raise ValueError(f"{path}: onnxruntime cannot load it: {str(e).splitlines()[0]}") from None
    where = str(path)
    meta = session.get_modelmeta().custom_metadata_map
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    fp16 = inp.type == "tensor(float16)"
    batch, imgsz = _onnx_input_shape(inp.shape)
    nc = out.shape[2] - 5 if len(out.shape) == 3 and isinstance(out.shape[2], int) else None
    names = _default_names(parse_names(meta.get("names"), where), nc, where)
    out_name = out.name
    in_name = inp.name

    def run_fn(im: Tensor) -> Tensor:
        y = session.run([out_name], {in_name: im.detach().cpu().numpy()})[0]
        return torch.from_numpy(y).to(im.device)

    return Backend(run_fn, "onnx", path, device, _meta_stride(meta.get("stride"), where), names, fp16, batch, imgsz,
                   suppressed=_meta_bool(meta.get("suppressed"), where, "suppressed"))


def _folder_meta(path: Path, stem: str) -> dict:
    """metadata.yaml of an exported folder (ours), else ``<stem>.yaml`` (YOLOv5 v7.0's OpenVINO folder)."""
    for f in (path / "metadata.yaml", path / f"{stem}.yaml"):
        if f.is_file():
            meta = yaml.safe_load(f.read_text())
            if not isinstance(meta, dict):
                raise ValueError(f"{f}: metadata must be a mapping, got {type(meta).__name__}")
            return meta
    LOGGER.warning(f"WARNING: {path}: no metadata.yaml")
    return {}


def _one_file(path: Path, pattern: str) -> Path:
    found = sorted(path.glob(pattern))
    if len(found) != 1:
        raise ValueError(f"{path}: expected one {pattern} file, found {len(found)}: {[f.name for f in found]}")
    return found[0]


def _cpu_only(fmt: str, device: torch.device) -> None:
    if device.type != "cpu":
        LOGGER.warning(f"WARNING: the {fmt} backend runs on CPU here; outputs are moved to {device}")


def _load_openvino(path: Path, device: torch.device, half: bool, fuse: bool) -> Backend:
    ov = require("openvino", purpose=f"{path}: running OpenVINO models")
    xml, where = _one_file(path, "*.xml"), str(path)
    _cpu_only("openvino", device)
    core = ov.Core()
    if half and not cpu_bf16():
        raise ValueError(f"{path}: --half on the CPU computes in BF16, which this CPU lacks (AVX512-BF16 or AMX)")
    config = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "INFERENCE_PRECISION_HINT": "bf16" if half else "f32"}
    try:
        compiled = core.compile_model(core.read_model(str(xml)), "CPU", config)
    except RuntimeError as e:
        raise ValueError(f"{xml}: OpenVINO cannot load it: {str(e).splitlines()[0]}") from None
    meta = _folder_meta(path, xml.stem)
    shape_in, shape_out = compiled.input(0).get_partial_shape(), compiled.output(0).get_partial_shape()
    batch, imgsz = _onnx_input_shape([d.get_length() if d.is_static else -1 for d in shape_in])
    nc = shape_out[2].get_length() - 5 if len(shape_out) == 3 and shape_out[2].is_static else None
    names = _default_names(parse_names(meta.get("names"), where), nc, where)
    request = compiled.create_infer_request()

    def run_fn(im: Tensor) -> Tensor:
        y = request.infer({0: im.detach().cpu().numpy()})[0]
        return torch.from_numpy(np.array(y)).to(im.device)  # copy: the request reuses its output buffer

    return Backend(run_fn, "openvino", path, device, _meta_stride(meta.get("stride"), where), names, False, batch,
                   imgsz, suppressed=_meta_bool(meta.get("suppressed"), where, "suppressed"), bf16=half)


def cpu_bf16() -> bool:
    """OpenVINO is installed and this CPU computes BF16 natively (AVX512-BF16 or AMX: OpenVINO's 'BF16'
    optimization capability), so --half on the CPU can run OpenVINO at BF16."""
    try:
        import openvino as ov
    except ImportError:
        return False
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _load_ncnn(path: Path, device: torch.device, half: bool, fuse: bool) -> Backend:
    ncnn = require("ncnn", purpose=f"{path}: running ncnn models")
    param, where = _one_file(path, "*.param"), str(path)
    _cpu_only("ncnn", device)
    net = ncnn.Net()
    net.opt.num_threads = torch.get_num_threads()
    net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False  # FP32, as exported
    net.opt.use_bf16_storage = False
    if net.load_param(str(param)) != 0 or net.load_model(str(param.with_suffix(".bin"))) != 0:
        raise ValueError(f"{path}: ncnn cannot load {param.name} and {param.with_suffix('.bin').name}")
    meta = _folder_meta(path, param.stem)
    batch, imgsz = _static_shape(meta.get("shape"), False)
    if batch not in (None, 1):
        raise ValueError(f"{where}: metadata shape {meta.get('shape')} has batch {batch}; ncnn runs batch 1")
    names = _default_names(parse_names(meta.get("names"), where), None, where)
    in_name, out_name = net.input_names()[0], net.output_names()[0]

    def run_fn(im: Tensor) -> Tensor:  # (1, 3, H, W) -> (1, N, 5 + nc)
        x = np.ascontiguousarray(im[0].detach().cpu().numpy())  # ncnn.Mat wraps x without a copy: keep x alive
        ex = net.create_extractor()
        ex.input(in_name, ncnn.Mat(x))
        ret, y = ex.extract(out_name)
        if ret != 0:
            raise RuntimeError(f"{where}: ncnn extract('{out_name}') failed with code {ret}")
        return torch.from_numpy(np.array(y))[None].to(im.device)

    return Backend(run_fn, "ncnn", path, device, _meta_stride(meta.get("stride"), where), names, False, 1, imgsz,
                   suppressed=_meta_bool(meta.get("suppressed"), where, "suppressed"))
