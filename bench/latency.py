"""Forward latency of model configs on this machine (eval mode, no NMS; the deployed model: training-only modules
such as NanoDet-Plus's AGM dropped).

    python bench/latency.py                                   # yolov5n/s + decoupled, yolov5n-gfl, nanodet-plus-m
    python bench/latency.py --cfg yolov5n.yaml --imgsz 320 --batch 1 8 --runs 50
    python bench/latency.py --cfg yolov5n.yaml --imgsz 320 --batch 1 8 --modes eager fused channels_last torchscript onnx

Modes: ``eager`` (the model as built), ``fused`` (BatchNorm folded into the convolutions), ``channels_last`` (fused,
weights and input in NHWC memory format), ``torchscript`` (export.py's traced file of the fused export-mode model,
run by torch.jit.load), ``onnx`` (export.py's ONNX file, run by ONNX Runtime with as many intra-op threads as torch
uses). TorchScript and ONNX are exported per (imgsz, batch), static shapes, into a temporary folder. Every mode
computes the same decoded ``(B, N, 5 + nc)`` output. Prints a table (median and p90 ms per batch) and writes
runs/bench/latency.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from copy import deepcopy
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from models.yolo import DetectionModel  # noqa: E402
from utils.torch_utils import select_device, time_sync  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CFGS = ["yolov5n.yaml", "yolov5n-decoupled.yaml", "yolov5n-gfl.yaml", "yolov5s.yaml", "yolov5s-decoupled.yaml",
                "nanodet-plus-m.yaml", "faster-rcnn-mnv3-fpn.yaml"]
MODES = ["eager", "fused", "channels_last", "torchscript", "onnx"]
EXPORTED = ("torchscript", "onnx")  # modes built per input shape


def time_forward(model: Callable, x, runs: int, warmup: int, device: torch.device | None = None) -> list[float]:
    """Wall-clock ms of ``runs`` calls ``model(x)`` after ``warmup`` untimed ones (CUDA synchronised)."""
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            t0 = time_sync(device)
            model(x)
            if i >= warmup:
                times.append((time_sync(device) - t0) * 1000)
    return times


def variants(model: DetectionModel, modes: list[str]) -> dict[str, torch.nn.Module]:
    """The PyTorch modules of each mode; exported modes get the fused export-mode model to export."""
    out = {}
    fused = deepcopy(model).fuse() if set(modes) - {"eager"} else None
    if "eager" in modes:
        out["eager"] = model
    if "fused" in modes:
        out["fused"] = fused
    if "channels_last" in modes:
        out["channels_last"] = deepcopy(fused).to(memory_format=torch.channels_last)
    for mode in EXPORTED:
        if mode in modes:
            out[mode] = deepcopy(fused).set_export(True)
    return out


def onnx_session(file: Path, device: torch.device):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError("onnx mode on CUDA needs onnxruntime-gpu (CUDAExecutionProvider is not available)")
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    return ort.InferenceSession(str(file), so, providers=providers)


def exported_runner(mode: str, model: DetectionModel, x: torch.Tensor, folder: Path) -> tuple[Callable, object]:
    """(callable, its input) of ``model`` exported by export.py's exporters (models/formats) at the shape of ``x``."""
    from models.formats import FORMATS, ExportOptions  # the benchmark times exactly the files export.py writes
    from models.formats.core import export_metadata

    meta = export_metadata(model, tuple(x.shape), dynamic=False, half=False)
    fmt = FORMATS[mode]
    file = fmt.export(model, x, fmt.path_for(folder / f"m_{x.shape[0]}_{x.shape[-1]}.pt"), meta, ExportOptions())
    if mode == "torchscript":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=FutureWarning)
            return torch.jit.load(str(file), map_location=x.device), x
    session = onnx_session(file, x.device)
    feed = {"images": x.cpu().numpy()}
    return (lambda inputs: session.run(None, inputs)), feed


def runner(mode: str, model: torch.nn.Module, x: torch.Tensor, folder: Path) -> tuple[Callable, object]:
    if mode in EXPORTED:
        return exported_runner(mode, model, x, folder)
    if mode == "channels_last":
        return model, x.contiguous(memory_format=torch.channels_last)
    return model, x


def bench_cfg(cfg: str, opt: argparse.Namespace, device: torch.device, folder: Path) -> list[dict]:
    model = DetectionModel(cfg, nc=opt.nc).deploy().to(device).eval()  # training-only modules dropped
    rows = []
    for mode, m in variants(model, opt.modes).items():
        n_params = sum(p.numel() for p in m.parameters())
        for imgsz in opt.imgsz:
            for bs in opt.batch:
                fn, x = runner(mode, m, torch.rand(bs, 3, imgsz, imgsz, device=device), folder)
                t = sorted(time_forward(fn, x, opt.runs, opt.warmup, device))
                row = {"cfg": cfg, "imgsz": imgsz, "batch": bs, "mode": mode, "params": n_params,
                       "median_ms": statistics.median(t), "p90_ms": t[int(0.9 * (len(t) - 1))]}
                rows.append(row)
                print(f"{cfg:<26}{imgsz:>6}{bs:>6}{mode:>14}{row['median_ms']:>11.1f}{row['p90_ms']:>9.1f}"
                      f"{n_params:>11,}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cfg", nargs="+", default=DEFAULT_CFGS)
    ap.add_argument("--imgsz", type=int, nargs="+", default=[640, 320])
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--modes", nargs="+", default=["eager", "fused"], choices=MODES)
    ap.add_argument("--nc", type=int, default=80)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu or a CUDA index")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--json", default=str(ROOT / "runs" / "bench" / "latency.json"))
    opt = ap.parse_args(argv)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    device = select_device(opt.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"{device.type.upper()}: {where}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'cfg':<26}{'imgsz':>6}{'batch':>6}{'mode':>14}{'median ms':>11}{'p90 ms':>9}{'params':>11}")
    t0, rows = time.time(), []
    with tempfile.TemporaryDirectory(prefix="latency_") as tmp:
        for cfg in opt.cfg:
            rows += bench_cfg(cfg, opt, device, Path(tmp))
    Path(opt.json).parent.mkdir(parents=True, exist_ok=True)
    Path(opt.json).write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                                          "device": str(device), "rows": rows}, indent=2))
    print(f"wrote {opt.json} ({time.time() - t0:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
