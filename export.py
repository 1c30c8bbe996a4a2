"""Export a detector to TorchScript, ONNX, OpenVINO and ncnn, then check each against PyTorch on a real image.

    python export.py --weights best.pt --include torchscript onnx --imgsz 320
    python export.py --weights best.pt --include onnx --dynamic     # any batch size and input size
    python export.py --weights best.pt --include openvino ncnn      # pip install openvino / pnnx ncnn first
    python detect.py --weights best.onnx                            # val.py and detect.py run the files
    python val.py --weights best_openvino_model                     # ... and the folders

Every head exports through the head contract: ``model.set_export(True)`` makes the eval forward return only
the decoded ``(B, N, 5 + nc)`` tensor with grids built inside the traced graph; nothing here knows the head.
Files are written beside the weights (best.pt -> best.torchscript, best.onnx) with the class names, stride,
input shape, ``dynamic`` and ``half`` in their metadata (see models/backends.py).

ONNX: the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``; torch 2.9+ defaults to the
torch.export-based one, which needs the onnxscript package), opset 17 by default (YOLOv5 master's; v7.0 used
12): the newest opset every ONNX Runtime since 1.14 runs, and one the legacy exporter fully supports.

OpenVINO (optional package ``openvino``): ``openvino.convert_model`` of the export-mode model, saved as FP32 IR in
best_openvino_model/ (best.xml, best.bin, metadata.yaml); static or ``--dynamic``.
ncnn (optional packages ``pnnx`` and ``ncnn``): pnnx converts a TorchScript trace into FP32 best_ncnn_model/
(model.ncnn.param, model.ncnn.bin, metadata.yaml); batch 1 at a fixed size (ncnn runs one image at a time).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

from models.backends import Backend, cpu_bf16, load_backend, load_model, require, weights_format
from models.heads import HEADS
from models.heads.base import Head
from models.yolo import DetectionModel, head_class
from utils.data.augmentations import letterbox, round_to_stride
from utils.io.checkpoint import load_checkpoint
from utils.torch_utils import LOGGER, select_device

ROOT = Path(__file__).resolve().parent
FORMATS = {"torchscript": ".torchscript", "onnx": ".onnx", "openvino": "_openvino_model", "ncnn": "_ncnn_model"}
PACKAGES = {"onnx": ("onnx",), "openvino": ("openvino",), "ncnn": ("pnnx", "ncnn")}  # what each export imports
PREFIX = {"torchscript": "TorchScript:", "onnx": "ONNX:", "openvino": "OpenVINO:", "ncnn": "ncnn:"}
TOLERANCE = 1e-3  # largest |exported - PyTorch| (pixels and probabilities) that passes the FP32 check


def check_args(include: list[str], imgsz: list[int], batch_size: int, half: bool, dynamic: bool,
               device: torch.device, stride: int) -> tuple[int, int]:
    """Validate the flags -> export (h, w), rounded up to the stride."""
    unknown = [f for f in include if f.lower() not in FORMATS]
    if unknown or not include:
        raise ValueError(f"--include {' '.join(include)}: choose from {', '.join(FORMATS)}")
    if half and device.type != "cuda":
        raise ValueError(f"--half exports FP16 on CUDA only; device is {device}: use --device 0, or drop --half")
    if half and dynamic:
        raise ValueError("--half is not compatible with --dynamic; use one of them")
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size} must be >= 1")
    edge = [f for f in ("openvino", "ncnn") if f in include]
    if half and edge:
        raise ValueError(f"--include {' '.join(edge)} exports FP32 only: drop --half")
    if "ncnn" in include and (dynamic or batch_size != 1):
        raise ValueError("--include ncnn exports batch 1 at a fixed size: drop --dynamic and use --batch-size 1")
    for f in include:
        if f in PACKAGES:
            require(*PACKAGES[f], purpose=f"--include {f}")
    if len(imgsz) not in (1, 2) or min(imgsz) < 1:
        raise ValueError(f"--imgsz {imgsz}: give one size or two (height width), positive")
    h, w = imgsz[0], imgsz[-1]
    new = (round_to_stride(h, stride), round_to_stride(w, stride))
    if new != (h, w):
        LOGGER.warning(f"WARNING: --imgsz {h} {w} must be a multiple of the stride {stride}, using {new[0]} {new[1]}")
    return new


def check_image(batch: int, hw: tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A real image for the checks: a picture from the built-in shapes generator, letterboxed to ``hw``,
    as a (batch, 3, H, W) tensor in [0, 1]."""
    from data.generators.shapes import ShapesConfig, render_image

    img = render_image(ShapesConfig(imgsz=max(max(hw), 64)), "val", 0)[0]  # (s, s, 3) BGR uint8
    img = letterbox(img, hw, auto=False)[0][..., ::-1].transpose(2, 0, 1)  # (3, H, W) RGB
    im = torch.from_numpy(np.ascontiguousarray(img)).to(device, dtype) / 255
    return im.unsqueeze(0).expand(batch, -1, -1, -1).contiguous()


def export_metadata(model: DetectionModel, shape: tuple[int, ...], dynamic: bool, half: bool) -> dict:
    """What backends.py reads back: stride, class names, traced input shape, dynamic, half, suppressed."""
    return {"stride": int(model.stride.max()), "names": {int(k): v for k, v in model.names.items()},
            "shape": list(shape), "dynamic": dynamic, "half": half, "suppressed": model.suppressed}


def export_torchscript(model: DetectionModel, im: torch.Tensor, file: Path, meta: dict) -> Path:
    """torch.jit.trace of the export-mode model; metadata as the JSON extra file ``config.txt``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.trace.* is deprecated", category=FutureWarning)
        ts = torch.jit.trace(model, im, strict=False, check_trace=False)  # verify() checks the outputs
    ts.save(str(file), _extra_files={"config.txt": json.dumps(meta)})
    return file


def export_onnx(model: DetectionModel, im: torch.Tensor, file: Path, meta: dict, opset: int, dynamic: bool,
                simplify: bool) -> Path:
    """ONNX ``images`` -> ``output0`` (axes batch, height, width, anchors dynamic with ``dynamic``); metadata in
    metadata_props (JSON strings)."""
    import onnx

    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 1: "anchors"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.9+: the TorchScript-based exporter is legacy
        torch.onnx.export(model, (im,), str(file), opset_version=opset, input_names=["images"],
                          output_names=["output0"], do_constant_folding=True, dynamo=False,
                          dynamic_axes=axes if dynamic else None)
    model_onnx = onnx.load(str(file))
    onnx.checker.check_model(model_onnx)
    if simplify:
        model_onnx = _simplify(model_onnx)
    for k, v in meta.items():
        prop = model_onnx.metadata_props.add()
        prop.key, prop.value = k, json.dumps(v)
    onnx.save(model_onnx, str(file))
    return file


def _write_metadata(folder: Path, meta: dict) -> None:
    (folder / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False, allow_unicode=True))


def export_openvino(model: DetectionModel, im: torch.Tensor, folder: Path, meta: dict, dynamic: bool) -> Path:
    """``openvino.convert_model`` -> ``folder``/<stem>.xml + .bin (FP32 IR; H, W and batch dynamic with
    ``dynamic``) and metadata.yaml."""
    import openvino as ov

    shape = (-1, 3, -1, -1) if dynamic else tuple(im.shape)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.trace.* is deprecated", category=FutureWarning)
        ov_model = ov.convert_model(model, example_input=im, input=[shape])
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ov.save_model(ov_model, str(folder / f"{folder.name.removesuffix(FORMATS['openvino'])}.xml"),
                  compress_to_fp16=False)
    _write_metadata(folder, meta)
    return folder


def export_ncnn(model: DetectionModel, im: torch.Tensor, folder: Path, meta: dict) -> Path:
    """pnnx converts a TorchScript trace (at ``im``'s fixed shape, FP32 weights) -> ``folder``/model.ncnn.param,
    model.ncnn.bin and metadata.yaml; pnnx's other outputs stay in a temporary folder."""
    import pnnx

    with tempfile.TemporaryDirectory() as tmp:
        ts = export_torchscript(model, im, Path(tmp) / "model.torchscript", meta)
        out = {k: str(Path(tmp) / v) for k, v in {"ncnnparam": "model.ncnn.param", "ncnnbin": "model.ncnn.bin",
               "ncnnpy": "model_ncnn.py", "pnnxparam": "model.pnnx.param", "pnnxbin": "model.pnnx.bin",
               "pnnxpy": "model_pnnx.py", "pnnxonnx": "model.pnnx.onnx"}.items()}
        cmd = [pnnx.EXEC_PATH, str(ts), f"inputshape=[{','.join(map(str, im.shape))}]f32", "fp16=0",
               *(f"{k}={v}" for k, v in out.items())]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, check=False)  # judged below
        if r.returncode != 0 or not Path(out["ncnnbin"]).is_file():
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            raise ValueError(f"pnnx could not convert the model (exit code {r.returncode}): {' | '.join(tail)}")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for k in ("ncnnparam", "ncnnbin"):
            shutil.move(out[k], folder / Path(out[k]).name)
    _write_metadata(folder, meta)
    return folder


def file_size(path: Path) -> int:
    """Bytes of a file, or of all files in an exported folder."""
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _simplify(model_onnx):
    try:
        import onnxsim
    except ImportError:
        LOGGER.warning("WARNING: --simplify needs onnx-simplifier (import onnxsim), which is not installed: "
                       "writing the model unsimplified (pip install onnxsim to simplify)")
        return model_onnx
    simplified, ok = onnxsim.simplify(model_onnx)
    if not ok:
        LOGGER.warning("WARNING: onnxsim could not validate the simplified model: keeping the original")
        return model_onnx
    return simplified


def verify(file: Path, model: DetectionModel, ims: list[torch.Tensor], device: torch.device) -> float:
    """Load ``file`` through models/backends.py and return the largest |exported - PyTorch| over ``ims``."""
    backend = load_backend(file, device)
    diff = 0.0
    with torch.no_grad():
        for im in ims:
            ref = model(im).float()
            got = backend(im)
            if got.shape != ref.shape:
                raise ValueError(f"{file}: output shape {tuple(got.shape)} != PyTorch's {tuple(ref.shape)} "
                                 f"for input {tuple(im.shape)}")
            if model.suppressed:  # final detections: the same set in any order (near-tied scores may swap)
                got, ref = _canonical(got), _canonical(ref)
            diff = max(diff, float((got - ref).abs().max()))
    return diff


def _canonical(y: torch.Tensor) -> torch.Tensor:
    """Rows of each image of a suppressed output ``(B, K, 5 + nc)`` in one order: by score (to 1e-3), then box."""
    out = []
    for rows in y.float().cpu():
        keys = np.round(rows[:, 5:].amax(1).numpy() * rows[:, 4].numpy(), 3)
        order = np.lexsort((*rows[:, :4].numpy().T[::-1], -keys))
        out.append(rows[torch.from_numpy(order)])
    return torch.stack(out)


def _prepare(weights: str | Path, device: torch.device, half: bool) -> DetectionModel:
    model = load_model(weights, device, fuse=True)
    model = (model.half() if half else model.float()).eval().set_export(True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _check_inputs(im: torch.Tensor, dynamic: bool, stride: int) -> list[torch.Tensor]:
    """The export shape, and for a dynamic export also another batch size and input size."""
    if not dynamic:
        return [im]
    b, _, h, w = im.shape
    return [im, check_image(b + 1, (h + stride, max(w - stride, stride)), im.device, im.dtype)]


@torch.no_grad()
def run(weights: str | Path, include: list[str] = ("torchscript",), imgsz: list[int] = (640, 640),
        batch_size: int = 1, device: str = "cpu", half: bool = False, dynamic: bool = False,
        simplify: bool = False, opset: int = 17, out: Path | None = None) -> dict[str, tuple[Path, float]]:
    """Export ``weights`` to each format in ``include`` -> {format: (file, largest difference to PyTorch)}; the
    files go beside ``weights`` (``best.onnx``), or to ``out`` when one format is asked for (the runtime cache)."""
    t0 = time.time()
    weights, dev = Path(weights), select_device(device)
    include = [f.lower() for f in include]
    if weights.suffix != ".pt":
        raise ValueError(f"--weights {weights}: export reads a .pt checkpoint (ours or YOLOv5's)")
    model = _prepare(weights, dev, half)
    if dynamic and not model.head.dynamic_export:
        raise ValueError(f"{model.head.type} exports with a fixed batch size and input size only: drop --dynamic "
                         f"and give --imgsz and --batch-size")
    stride = int(model.stride.max())
    hw = check_args(include, list(imgsz), batch_size, half, dynamic, dev, max(stride, 32))
    im = check_image(batch_size, hw, dev, torch.float16 if half else torch.float32)
    for _ in range(2):  # dry runs: build and check the graph before tracing
        y = model(im)
    LOGGER.info(f"PyTorch: starting from {weights} with output shape {tuple(y.shape)} "
                f"({weights.stat().st_size / 1e6:.1f} MB)")
    meta = export_metadata(model, tuple(im.shape), dynamic, half)
    results = {}
    for fmt in dict.fromkeys(include):
        file = Path(out) if out is not None and len(include) == 1 else weights.with_name(weights.stem + FORMATS[fmt])
        results[fmt] = _export_one(fmt, model, im, file, meta, opset, dynamic, simplify, dev, stride)
    last = list(results.values())[-1][0]
    LOGGER.info(f"\nExport complete ({time.time() - t0:.1f}s)\nResults saved to {last.parent.resolve()}"
                f"\nDetect:   python detect.py --weights {last}\nValidate: python val.py --weights {last}")
    return results


def _export_one(fmt: str, model: DetectionModel, im: torch.Tensor, file: Path, meta: dict, opset: int,
                dynamic: bool, simplify: bool, dev: torch.device, stride: int) -> tuple[Path, float]:
    prefix, t = PREFIX[fmt], time.time()
    if fmt == "torchscript":
        LOGGER.info(f"\n{prefix} starting export with torch {torch.__version__}...")
        export_torchscript(model, im, file, meta)
    elif fmt == "onnx":
        LOGGER.info(f"\n{prefix} starting export with torch {torch.__version__}, opset {opset}...")
        export_onnx(model, im, file, meta, opset, dynamic, simplify)
    elif fmt == "openvino":
        LOGGER.info(f"\n{prefix} starting export with openvino {require('openvino', purpose=prefix).__version__}...")
        export_openvino(model, im, file, meta, dynamic)
    else:
        LOGGER.info(f"\n{prefix} starting export with pnnx {require('pnnx', purpose=prefix).__version__}...")
        export_ncnn(model, im, file, meta)
    LOGGER.info(f"{prefix} export success ✅ {time.time() - t:.1f}s, saved as {file} "
                f"({file_size(file) / 1e6:.1f} MB)")
    ims = _check_inputs(im, dynamic, stride)
    diff = verify(file, model, ims, dev)
    shapes = ", ".join(str(tuple(x.shape)) for x in ims)
    LOGGER.info(f"{prefix} check on a real image at {shapes}: largest |exported - PyTorch| = {diff:.3g}")
    if diff > TOLERANCE * (10 if meta["half"] else 1):
        LOGGER.warning(f"WARNING: {prefix} {file} differs from PyTorch by {diff:.3g} (> {TOLERANCE:g})")
    return file, diff


# ------------------------------------------------------------------ the runtime cache (detect.py / val.py --backend)
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
CPU_RUNTIMES = ("onnxruntime", "openvino")  # --backend auto on a CPU, fastest first (bench/README.md: edge exports)
RUNTIME_FORMAT = {"onnxruntime": "onnx", "openvino": "openvino"}
CACHE_ENV = "HEADZOO_RUNTIME_CACHE"  # folder of cached exports; default: .runtime_cache/ beside the weights


def runtime_backend(weights: str | Path, device: torch.device, half: bool = False, backend: str = "auto",
                    imgsz: tuple[int, int] = (640, 640)) -> Backend:
    """The inference backend for ``weights``: a ``.pt`` on a CPU runs through a cached ONNX Runtime (or OpenVINO)
    export unless ``backend`` is 'torch'; exported files and CUDA run as they are. 'auto' takes the first
    installed of CPU_RUNTIMES and says which; an export that does not match PyTorch falls back to PyTorch.
    ``half`` on a CPU runs OpenVINO in BF16 where it can (``_cpu_half``; bench/README.md: 1.9x, mAP50-95 -0.0007
    on the built-in set), else FP32 with a warning."""
    if backend not in BACKENDS:
        raise ValueError(f"--backend {backend!r} is not one of {', '.join(BACKENDS)}")
    path, device = Path(weights), torch.device(device)
    if half and device.type == "cpu":
        half = _cpu_half(path, backend)
        if half and path.suffix == ".pt" and path.is_file():  # BF16 through a cached OpenVINO export
            return _runtime(path, device, "openvino", imgsz, backend, half=True)
    if backend == "torch" or path.suffix != ".pt" or not path.is_file() or (
            backend == "auto" and (device.type != "cpu" or half)):  # (a missing file: load_backend's error)
        if backend not in ("auto", "torch"):
            LOGGER.info(f"--backend {backend}: {path} is not a .pt checkpoint, it runs as it is")
        return load_backend(path, device, half=half)
    if device.type != "cpu" or half:
        raise ValueError(f"--backend {backend} runs FP32 on the CPU; use --backend torch for {device}"
                         + (" with --half" if half else ""))
    head = _head_of(path)  # read once: the runtime choice and the export's cache key both need it
    if backend == "auto" and not head.cpu_runtime:
        LOGGER.info(f"--backend auto: {path.name}'s head runs faster as PyTorch on the CPU (its cpu_runtime flag), "
                    f"running PyTorch")
        return load_backend(path, device)
    runtime = next((r for r in ((backend,) if backend != "auto" else CPU_RUNTIMES) if _installed(r)), None)
    if runtime is None:
        if backend != "auto":
            require(backend, purpose=f"--backend {backend}")
        LOGGER.info("--backend auto: no CPU runtime installed (pip install onnxruntime), running PyTorch")
        return load_backend(path, device)
    return _runtime(path, device, runtime, imgsz, backend, dynamic=head.dynamic_export)


def _runtime(path: Path, device: torch.device, runtime: str, imgsz: tuple[int, int], backend: str,
             half: bool = False, dynamic: bool | None = None) -> Backend:
    """``path`` through its cached ``runtime`` export; PyTorch (FP32) when the export cannot be written or does not
    match. ``half``: OpenVINO computes in BF16 (the export itself is FP32 and checked as such)."""
    try:
        file, diff = cached_export(path, runtime, imgsz, dynamic)
    except OSError as e:  # a read-only folder beside the weights: say so, run as PyTorch
        LOGGER.warning(f"WARNING: --backend {backend}: cannot write the {runtime} export ({e}); running PyTorch "
                       f"(set {CACHE_ENV} to a writable folder)")
        return load_backend(path, device)
    if diff > TOLERANCE:
        LOGGER.warning(f"WARNING: --backend {backend}: the {runtime} export differs from PyTorch by {diff:.3g}; "
                       f"running PyTorch instead")
        return load_backend(path, device)
    LOGGER.info(f"--backend {backend}: {runtime}{' in BF16 (--half on the CPU)' if half else ''} ({file})")
    return load_backend(file, device, half=half)


def _cpu_half(path: Path, backend: str) -> bool:
    """--half on the CPU: True when it can run (a .pt or OpenVINO model, OpenVINO installed, a BF16 CPU); else a
    warning, and the run is FP32."""
    why = None
    if backend not in ("auto", "openvino") or weights_format(path) not in (".pt", "_openvino_model"):
        why = f"it runs BF16 through OpenVINO only ({path.name}, --backend {backend})"
    elif not _installed("openvino"):
        why = "it needs OpenVINO (pip install openvino)"
    elif not cpu_bf16():
        why = "this CPU has no BF16 (AVX512-BF16 or AMX)"
    if why:
        LOGGER.warning(f"WARNING: --half on the CPU: {why}; running FP32")
    return why is None


def _head_of(weights: Path) -> type[Head]:
    """The checkpoint's head class (its ``cpu_runtime`` and ``dynamic_export`` flags, models/heads/base.py); Detect
    for a checkpoint without a model YAML (a YOLOv5 one)."""
    cfg = load_checkpoint(weights).get("yaml")
    return head_class(cfg) if cfg else HEADS["Detect"]


def _installed(runtime: str) -> bool:
    try:
        require(runtime, purpose=runtime)
        return True
    except ValueError:
        return False


def cached_export(weights: Path, runtime: str, imgsz: tuple[int, int],
                  dynamic: bool | None = None) -> tuple[Path, float]:
    """The export of ``weights`` for ``runtime``, made once and reused -> (file, its difference to PyTorch).

    The key: the checkpoint's SHA-256, the versions of torch and the runtime, and for a head that exports only
    static graphs the input size; a change in any makes a new file. Dynamic (any batch and size) where the head
    allows it (``dynamic``: its ``dynamic_export`` flag, read from the checkpoint when not given)."""
    if dynamic is None:
        dynamic = _head_of(weights).dynamic_export
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    version = md.version("onnxruntime" if runtime == "onnxruntime" else runtime)
    size = "dynamic" if dynamic else f"{imgsz[0]}x{imgsz[1]}"
    fmt = RUNTIME_FORMAT[runtime]
    folder = Path(os.environ.get(CACHE_ENV) or weights.parent / ".runtime_cache")
    file = folder / f"{weights.stem}-{digest}-{size}-torch{torch.__version__.split('+')[0]}-{runtime}{version}" \
                    f"{FORMATS[fmt]}"
    record = file.with_name(file.name + ".json")
    if file.exists() and record.is_file():
        return file, float(json.loads(record.read_text())["diff"])
    folder.mkdir(parents=True, exist_ok=True)
    LOGGER.info(f"--backend: exporting {weights} for {runtime} once (cached in {folder})")
    shutil.rmtree(file, ignore_errors=True) if file.is_dir() else file.unlink(missing_ok=True)
    _, diff = run(weights, include=[fmt], imgsz=list(imgsz), dynamic=dynamic, out=file)[fmt]
    record.write_text(json.dumps({"weights": str(weights), "sha256": digest, "diff": diff}))
    return file, diff


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=str, required=True, help="model.pt path (ours or YOLOv5's)")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[640, 640], help="image (h, w)")
    p.add_argument("--batch-size", type=int, default=1, help="batch size")
    p.add_argument("--device", default="cpu", help="cuda device, i.e. 0, or cpu")
    p.add_argument("--half", action="store_true", help="FP16 half-precision export (CUDA only)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch size and input size")
    p.add_argument("--simplify", action="store_true", help="ONNX: simplify the model (needs onnxsim)")
    p.add_argument("--opset", type=int, default=17, help="ONNX: opset version")
    p.add_argument("--include", nargs="+", default=["torchscript"],
                   help=f"one or more of {', '.join(FORMATS)} (openvino needs pip install openvino; ncnn needs "
                        f"pip install pnnx ncnn)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    opt = parse_opt(argv)
    try:
        results = run(**vars(opt))
    except (FileNotFoundError, ValueError) as e:
        LOGGER.error(f"error: {e}")
        return 2
    limit = TOLERANCE * (10 if opt.half else 1)
    return 1 if any(d > limit for _, d in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
