"""Per-row forward time, GFLOPs and parameters of a model (``python models/yolo.py --cfg ... --profile``)."""
from __future__ import annotations

import torch

from utils import LOGGER
from utils.torch_utils import count_params, profile_module


def profile_layers(model, x: torch.Tensor, n: int = 10) -> None:
    """Log forward time, GFLOPs and parameters of every row."""
    LOGGER.info(f"{'time (ms)':>10s} {'GFLOPs':>10s} {'params':>10s}  module")
    y, total = [], 0.0
    for m in model.model:
        if m.f != -1:
            x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
        dt, flops = profile_module(m, x, n)
        total += dt
        fs = f"{flops:10.2f}" if flops is not None else f"{'-':>10s}"
        LOGGER.info(f"{dt:10.2f} {fs} {m.np:10.0f}  {m.type}")
        x = m(x)
        y.append(x if m.i in model.save else None)
    LOGGER.info(f"{total:10.2f} {'-':>10s} {count_params(model)[0]:10.0f}  Total")
