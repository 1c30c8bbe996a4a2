"""The export core, shared by export.py (the CLI) and models/runtime.py (--backend's cached exports): load the .pt,
check the flags against the formats' records, write each format through its record and check the written file
against PyTorch through models/backends.py.

Every head exports through the head contract: ``model.set_export(True)`` makes the eval forward return only the
decoded ``(B, N, 5 + nc)`` tensor with grids built inside the traced graph; nothing here knows the head or the
format. Shape shorthand: B batch, H/W input height/width, N predictions, nc classes.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from models.backends import load_backend, load_model, require
from models.formats.registry import FORMATS, PYTORCH_SUFFIX, ExportFormat, ExportOptions
from models.yolo import DetectionModel, make_divisible
from utils.torch_utils import LOGGER

TOLERANCE = 1e-3  # largest |exported - PyTorch| (pixels and probabilities) that passes the FP32 check (x10 FP16)
CheckImage = Callable[[int, tuple[int, int], torch.device, torch.dtype], Tensor]  # (B, (H, W), ..) -> (B, 3, H, W)


def check_args(include: list[str], imgsz: list[int], batch_size: int, options: ExportOptions,
               device: torch.device, stride: int) -> tuple[int, int]:
    """Validate the flags against the formats' records -> export (h, w), rounded up to the stride."""
    unknown = [f for f in include if f.lower() not in FORMATS]
    if unknown or not include:
        raise ValueError(f"--include {' '.join(include)}: choose from {', '.join(FORMATS)}")
    half, dynamic = options.half, options.dynamic
    if half and device.type != "cuda":
        raise ValueError(f"--half exports FP16 on CUDA only; device is {device}: use --device 0, or drop --half")
    if half and dynamic:
        raise ValueError("--half is not compatible with --dynamic; use one of them")
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size} must be >= 1")
    formats = [FORMATS[f.lower()] for f in include]
    fp32 = [f.name for f in formats if not f.half]
    if half and fp32:
        raise ValueError(f"--include {' '.join(fp32)} exports FP32 only: drop --half")
    for f in formats:
        if (dynamic and not f.dynamic) or (f.batch is not None and batch_size != f.batch):
            batch = f" batch {f.batch}" if f.batch is not None else ""
            raise ValueError(f"--include {f.name} exports{batch} at a fixed size: drop --dynamic"
                             + (f" and use --batch-size {f.batch}" if batch else ""))
    for f in formats:
        if f.packages:
            require(*f.packages, purpose=f"--include {f.name}")
    if len(imgsz) not in (1, 2) or min(imgsz) < 1:
        raise ValueError(f"--imgsz {imgsz}: give one size or two (height width), positive")
    h, w = imgsz[0], imgsz[-1]
    new = (make_divisible(h, stride), make_divisible(w, stride))
    if new != (h, w):
        LOGGER.warning(f"WARNING: --imgsz {h} {w} must be a multiple of the stride {stride}, using {new[0]} {new[1]}")
    return new


def export_metadata(model: DetectionModel, shape: tuple[int, ...], dynamic: bool, half: bool) -> dict:
    """What models/backends.py reads back: stride, class names, traced input shape, dynamic, half, suppressed and
    the training size (``imgsz``, the default inference size; left out when the checkpoint does not record it)."""
    meta = {"stride": int(model.stride.max()), "names": {int(k): v for k, v in model.names.items()},
            "shape": list(shape), "dynamic": dynamic, "half": half, "suppressed": model.suppressed}
    return meta | ({"imgsz": model.train_imgsz} if model.train_imgsz else {})


def prepare_model(weights: Path, device: torch.device, half: bool) -> DetectionModel:
    """The fused export-mode model of a .pt checkpoint, without gradients."""
    if weights.suffix != PYTORCH_SUFFIX:
        raise ValueError(f"--weights {weights}: export reads a .pt checkpoint (ours or YOLOv5's)")
    model = load_model(weights, device, fuse=True)
    model = (model.half() if half else model.float()).eval().set_export(True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.no_grad()
def export_weights(weights: Path, include: list[str], imgsz: list[int] | None, batch_size: int, device: torch.device,
                   options: ExportOptions, images: CheckImage,
                   out: Path | None = None) -> dict[str, tuple[Path, float]]:
    """Export ``weights`` to each format in ``include`` -> {format: (file, largest difference to PyTorch)}, checked
    on ``images`` (utils/data/check_image.py: models/ draws no pictures); the files go beside ``weights``
    (``best.onnx``), or to ``out`` when one format is asked for. ``imgsz`` None: the size the checkpoint was
    trained at (else 640)."""
    include = [f.lower() for f in include]
    model = prepare_model(weights, device, options.half)
    if not imgsz:
        imgsz = [model.train_imgsz or 640] * 2
        why = f"the size {weights.name} was trained at" if model.train_imgsz else "the default (no size recorded)"
        LOGGER.info(f"--imgsz not given: exporting at {imgsz[0]}, {why}")
    if options.dynamic and not model.head.dynamic_export:
        raise ValueError(f"{model.head.type} exports with a fixed batch size and input size only: drop --dynamic "
                         f"and give --imgsz and --batch-size")
    stride = int(model.stride.max())
    hw = check_args(include, list(imgsz), batch_size, options, device, max(stride, 32))
    im = images(batch_size, hw, device, torch.float16 if options.half else torch.float32)
    for _ in range(2):  # dry runs: build and check the graph before tracing
        y = model(im)
    LOGGER.info(f"PyTorch: starting from {weights} with output shape {tuple(y.shape)} "
                f"({weights.stat().st_size / 1e6:.1f} MB)")
    meta = export_metadata(model, tuple(im.shape), options.dynamic, options.half)
    results = {}
    for name in dict.fromkeys(include):
        fmt = FORMATS[name]
        file = Path(out) if out is not None and len(include) == 1 else fmt.path_for(weights)
        export_format(fmt, model, im, file, meta, options)
        ims = _check_inputs(images, im, options.dynamic, stride)
        results[name] = file, check_export(fmt, file, model, ims, options.half)
    return results


def export_format(fmt: ExportFormat, model: DetectionModel, im: Tensor, file: Path, meta: dict,
                  options: ExportOptions) -> Path:
    """Write ``model`` (export mode) traced at ``im`` as ``fmt`` to ``file``, saying how long it took."""
    t = time.time()
    LOGGER.info(f"\n{fmt.prefix} starting export with {fmt.tool(options)}...")
    fmt.export(model, im, file, meta, options)
    LOGGER.info(f"{fmt.prefix} export success ✅ {time.time() - t:.1f}s, saved as {file} "
                f"({file_size(file) / 1e6:.1f} MB)")
    return file


def check_export(fmt: ExportFormat, file: Path, model: DetectionModel, ims: list[Tensor], half: bool) -> float:
    """The largest |exported - PyTorch| of ``file`` over ``ims``, logged, with a warning above the tolerance."""
    diff = verify(file, model, ims)
    shapes = ", ".join(str(tuple(x.shape)) for x in ims)
    LOGGER.info(f"{fmt.prefix} check on an image at {shapes}: largest |exported - PyTorch| = {diff:.3g}")
    if diff > TOLERANCE * (10 if half else 1):
        LOGGER.warning(f"WARNING: {fmt.prefix} {file} differs from PyTorch by {diff:.3g} (> {TOLERANCE:g})")
    return diff


def verify(file: Path, model: DetectionModel, ims: list[Tensor]) -> float:
    """Load ``file`` through models/backends.py and return the largest |exported - PyTorch| over ``ims``."""
    backend = load_backend(file, ims[0].device)
    diff = 0.0
    with torch.no_grad():
        for im in ims:
            ref = model(im).float()
            got = backend(im)
            if got.shape != ref.shape:
                raise ValueError(f"{file}: output shape {tuple(got.shape)} != PyTorch's {tuple(ref.shape)} "
                                 f"for input {tuple(im.shape)}")
            if model.suppressed:  # final detections: the same set in any order (near-tied scores may swap)
                got, ref = _canonical(_above_cut(got, ref)), _canonical(_above_cut(ref, got))
            diff = max(diff, float((got - ref).abs().max()))
    return diff


def _scores(y: Tensor) -> Tensor:
    return y[..., 5:].amax(-1) * y[..., 4]  # (B, K)


def _above_cut(y: Tensor, other: Tensor, tol: float = 1e-6) -> Tensor:
    """A suppressed output ``(B, K, 5 + nc)`` with the rows at the top-K cut zeroed: those scored within ``tol`` of
    the higher of the two outputs' last non-zero scores per image. Near-tied there, either output may hold other
    rows (an end-to-end head's top-K over an untrained model's near-equal scores); the rows above must agree."""
    last = [torch.where(s > 0, s, torch.inf).amin(1) for s in (_scores(y), _scores(other))]  # padding rows: 0
    cut = torch.maximum(*last)[:, None] + tol  # (B, 1)
    return y * (_scores(y) > cut)[..., None]


def _canonical(y: Tensor) -> Tensor:
    """Rows of each image of a suppressed output ``(B, K, 5 + nc)`` in one order: by score (to 1e-3), then box, then
    class (an end-to-end head may give one box two rows, one per class)."""
    out = []
    for rows in y.float().cpu():
        keys = np.round(rows[:, 5:].amax(1).numpy() * rows[:, 4].numpy(), 3)
        order = np.lexsort((rows[:, 5:].argmax(1).numpy(), *rows[:, :4].numpy().T[::-1], -keys))
        out.append(rows[torch.from_numpy(order)])
    return torch.stack(out)


def _check_inputs(images: CheckImage, im: Tensor, dynamic: bool, stride: int) -> list[Tensor]:
    """The export shape, and for a dynamic export also another batch size and input size."""
    if not dynamic:
        return [im]
    b, _, h, w = im.shape
    return [im, images(b + 1, (h + stride, max(w - stride, stride)), im.device, im.dtype)]


def file_size(path: Path) -> int:
    """Bytes of a file, or of all files in an exported folder."""
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
