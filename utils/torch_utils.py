"""Torch helpers: model statistics (parameters, GFLOPs) and per-layer profiling."""
from __future__ import annotations

import logging
import time
from copy import deepcopy

import torch
from torch import nn

LOGGER = logging.getLogger("headzoo")


def count_params(model: nn.Module) -> tuple[int, int]:
    """(parameters, parameters that require grad)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def thop_gflops(model: nn.Module, im: torch.Tensor) -> float | None:
    """GFLOPs of one forward on ``im`` as thop counts them (2 x multiply-accumulates); None without thop."""
    try:
        import thop
    except ImportError:
        return None
    macs = thop.profile(deepcopy(model), inputs=(im,), verbose=False)[0]
    return macs * 2 / 1e9


def model_flops(model: nn.Module, imgsz: int | tuple[int, int] = 640, ch: int = 3, stride: int = 32) -> float | None:
    """GFLOPs at ``imgsz``, measured on a ``stride``-sized input and scaled by area (as YOLOv5 reports)."""
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    p = next(model.parameters())
    im = torch.zeros(1, ch, stride, stride, device=p.device, dtype=p.dtype)
    flops = thop_gflops(model, im)
    return None if flops is None else flops * (h / stride) * (w / stride)


def model_info(model: nn.Module, name: str = "Model", imgsz: int = 640, ch: int = 3, stride: int = 32) -> dict:
    """Log and return ``{layers, parameters, gradients, gflops}`` in YOLOv5's summary-line form."""
    n_p, n_g = count_params(model)
    n_l = len(list(model.modules()))
    gflops = model_flops(model, imgsz, ch, stride)
    fs = f", {gflops:.1f} GFLOPs" if gflops is not None else ""
    LOGGER.info(f"{name} summary: {n_l} layers, {n_p} parameters, {n_g} gradients{fs}")
    return {"layers": n_l, "parameters": n_p, "gradients": n_g, "gflops": gflops}


def time_sync(device: torch.device | None = None) -> float:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def profile_module(m: nn.Module, x, n: int = 10) -> tuple[float, float | None]:
    """(mean forward ms over ``n`` runs, GFLOPs) of module ``m`` on input ``x``."""
    flops = thop_gflops(m, x) if isinstance(x, torch.Tensor) else None
    device = x.device if isinstance(x, torch.Tensor) else x[0].device
    with torch.no_grad():
        m(x)
        t0 = time_sync(device)
        for _ in range(n):
            m(x)
        dt = (time_sync(device) - t0) / n * 1000
    return dt, flops
