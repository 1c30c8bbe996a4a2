"""How val.py and detect.py run a .pt on the CPU (``--backend``): through a cached export for a CPU runtime (the
formats whose ``ExportFormat.runtime`` is set: ONNX Runtime, OpenVINO), or as PyTorch.

The cache: ``CACHE_ENV``, default .runtime_cache/ beside the weights; one export per checkpoint content, torch and
runtime version (and input size for a head that exports static graphs only), checked against PyTorch once."""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import shutil
from pathlib import Path

import torch

from models.backends import Backend, load_backend, require, weights_format
from models.formats.core import TOLERANCE, CheckImage, export_weights
from models.formats.registry import FORMATS, PYTORCH_SUFFIX, ExportFormat, ExportOptions
from models.heads import HEADS
from models.heads.base import Head
from models.yolo import head_class
from utils.io.checkpoint import load_checkpoint, train_imgsz
from utils.torch_utils import LOGGER

CACHE_ENV = "HEADZOO_RUNTIME_CACHE"  # folder of cached exports; default: .runtime_cache/ beside the weights


def cpu_runtimes() -> dict[str, ExportFormat]:
    """--backend name -> its format, in FORMATS' order: --backend auto on a CPU takes the first installed (fastest
    first, bench/README.md: edge exports)."""
    return {f.runtime: f for f in FORMATS.values() if f.runtime}


def backend_choices() -> tuple[str, ...]:
    """What val.py's and detect.py's --backend accept."""
    return ("auto", "torch", *cpu_runtimes())


def runtime_backend(weights: str | Path, device: torch.device, half: bool = False, backend: str = "auto",
                    imgsz: tuple[int, int] | None = None, *, images: CheckImage) -> Backend:
    """The inference backend for ``weights``: a ``.pt`` on a CPU runs through a cached ONNX Runtime (or OpenVINO)
    export unless ``backend`` is 'torch'; exported files and CUDA run as they are. 'auto' takes the first
    installed of ``cpu_runtimes()`` and says which; an export that does not match PyTorch on ``images``
    (utils/data/check_image.py) falls back to PyTorch.
    ``half`` on a CPU runs the BF16 runtime (OpenVINO) where it can (``_cpu_half``; bench/README.md: 1.9x,
    mAP50-95 -0.0007 on the built-in set), else FP32 with a warning. ``imgsz``: the size a static export is made
    for (None: the size the checkpoint was trained at, else 640); the backend's ``train_imgsz`` is the checkpoint's
    whichever way it runs."""
    choices = backend_choices()
    if backend not in choices:
        raise ValueError(f"--backend {backend!r} is not one of {', '.join(choices)}")
    path, device = Path(weights), torch.device(device)
    if half and device.type == "cpu":
        half = _cpu_half(path, backend)
        if half and path.suffix == PYTORCH_SUFFIX and path.is_file():  # BF16 through a cached export
            head, trained = _checkpoint_facts(path)
            return _trained_at(_runtime(path, device, _bf16_format().runtime, imgsz or _square(trained), backend,
                                        images, half=True), trained)
    if backend == "torch" or path.suffix != PYTORCH_SUFFIX or not path.is_file() or (
            backend == "auto" and (device.type != "cpu" or half)):  # (a missing file: load_backend's error)
        if backend not in ("auto", "torch"):
            LOGGER.info(f"--backend {backend}: {path} is not a .pt checkpoint, it runs as it is")
        return load_backend(path, device, half=half)
    if device.type != "cpu" or half:
        raise ValueError(f"--backend {backend} runs FP32 on the CPU; use --backend torch for {device}"
                         + (" with --half" if half else ""))
    head, trained = _checkpoint_facts(path)  # read once: the runtime choice and the export's cache key need it
    if backend == "auto" and not head.cpu_runtime:
        LOGGER.info(f"--backend auto: {path.name}'s head runs faster as PyTorch on the CPU (its cpu_runtime flag), "
                    f"running PyTorch")
        return load_backend(path, device)
    runtime = next((r for r in ((backend,) if backend != "auto" else cpu_runtimes()) if _installed(r)), None)
    if runtime is None:
        if backend != "auto":
            require(backend, purpose=f"--backend {backend}")
        LOGGER.info("--backend auto: no CPU runtime installed (pip install onnxruntime), running PyTorch")
        return load_backend(path, device)
    return _trained_at(_runtime(path, device, runtime, imgsz or _square(trained), backend, images,
                                dynamic=head.dynamic_export), trained)


def _square(size: int | None) -> tuple[int, int]:
    return (size, size) if size else (640, 640)


def _trained_at(backend: Backend, size: int | None) -> Backend:
    """The checkpoint's training size on a backend run through its cached export (an export cached before exports
    recorded it has none)."""
    backend.train_imgsz = backend.train_imgsz or size
    return backend


def _runtime(path: Path, device: torch.device, runtime: str, imgsz: tuple[int, int], backend: str,
             images: CheckImage, half: bool = False, dynamic: bool | None = None) -> Backend:
    """``path`` through its cached ``runtime`` export; PyTorch (FP32) when the export cannot be written or does not
    match. ``half``: the runtime computes in BF16 (the export itself is FP32 and checked as such)."""
    try:
        file, diff = cached_export(path, runtime, imgsz, dynamic, images=images)
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


def _bf16_format() -> ExportFormat | None:
    """The CPU runtime that computes --half in BF16 (a format with a ``bf16`` check: OpenVINO)."""
    return next((f for f in cpu_runtimes().values() if f.bf16), None)


def _cpu_half(path: Path, backend: str) -> bool:
    """--half on the CPU: True when it can run (a .pt or a model of the BF16 runtime, that runtime installed, a BF16
    CPU); else a warning, and the run is FP32."""
    fmt, why = _bf16_format(), None
    if fmt is None or backend not in ("auto", fmt.runtime) or weights_format(path) not in (PYTORCH_SUFFIX, fmt.suffix):
        why = f"it runs BF16 through {fmt.title if fmt else 'a BF16 runtime'} only ({path.name}, --backend {backend})"
    elif not _installed(fmt.runtime):
        why = f"it needs {fmt.title} (pip install {fmt.runtime})"
    elif not fmt.bf16():
        why = "this CPU has no BF16 (AVX512-BF16 or AMX)"
    if why:
        LOGGER.warning(f"WARNING: --half on the CPU: {why}; running FP32")
    return why is None


def _checkpoint_facts(weights: Path) -> tuple[type[Head], int | None]:
    """The checkpoint's head class (its ``cpu_runtime`` and ``dynamic_export`` flags, models/heads/base.py; Detect
    for a checkpoint without a model YAML, a YOLOv5 one) and the image size it was trained at (None: unknown)."""
    ckpt = load_checkpoint(weights)
    cfg = ckpt.get("yaml")
    return (head_class(cfg) if cfg else HEADS["Detect"]), train_imgsz(ckpt.get("opt"))


def _installed(runtime: str) -> bool:
    try:
        require(runtime, purpose=runtime)
        return True
    except ValueError:
        return False


def cached_export(weights: Path, runtime: str, imgsz: tuple[int, int], dynamic: bool | None = None, *,
                  images: CheckImage) -> tuple[Path, float]:
    """The export of ``weights`` for ``runtime``, made once and reused -> (file, its difference to PyTorch on
    ``images``).

    The key: the checkpoint's SHA-256, the versions of torch and the runtime, and for a head that exports only
    static graphs the input size; a change in any makes a new file. Dynamic (any batch and size) where the head
    allows it (``dynamic``: its ``dynamic_export`` flag, read from the checkpoint when not given)."""
    runtimes = cpu_runtimes()
    if runtime not in runtimes:
        raise ValueError(f"runtime {runtime!r} is not one of {', '.join(runtimes)}")
    fmt = runtimes[runtime]
    if dynamic is None:
        dynamic = _checkpoint_facts(weights)[0].dynamic_export
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    size = "dynamic" if dynamic else f"{imgsz[0]}x{imgsz[1]}"
    folder = Path(os.environ.get(CACHE_ENV) or weights.parent / ".runtime_cache")
    file = folder / f"{weights.stem}-{digest}-{size}-torch{torch.__version__.split('+')[0]}-{runtime}" \
                    f"{md.version(runtime)}{fmt.suffix}"
    record = file.with_name(file.name + ".json")
    if file.exists() and record.is_file():
        return file, float(json.loads(record.read_text())["diff"])
    folder.mkdir(parents=True, exist_ok=True)
    LOGGER.info(f"--backend: exporting {weights} for {runtime} once (cached in {folder})")
    shutil.rmtree(file, ignore_errors=True) if file.is_dir() else file.unlink(missing_ok=True)
    options = ExportOptions(dynamic=dynamic)
    _, diff = export_weights(weights, [fmt.name], list(imgsz), 1, torch.device("cpu"), options, images, file)[fmt.name]
    record.write_text(json.dumps({"weights": str(weights), "sha256": digest, "diff": diff}))
    return file, diff
