"""Speed: batch-1 latency of each arm's fused eval model (PyTorch on the CPU, and on CUDA when there is one;
the checkpoint's ONNX Runtime export) and the training seconds per epoch; the speed/accuracy plot."""
from __future__ import annotations

import math
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch

from compare.plots import figure, pareto_front, spread_labels
from compare.statistics.base import Statistic, fmt_mean_std
from compare.summary import ArmSummary, Comparison
from models.yolo import DetectionModel
from utils import LOGGER
from utils.torch_utils import time_sync

KINDS = {"cpu": "CPU ms", "onnx": "ONNX Runtime ms", "cuda": "GPU ms"}  # latency key -> report.md header


def time_forward(fn, x: torch.Tensor, device: torch.device, runs: int) -> dict:
    """ms of ``fn(x)``: median and p10/p90 of ``runs`` timed calls after max(2, runs // 10) untimed ones."""
    times = []
    with torch.inference_mode():
        for i in range(max(2, runs // 10) + runs):
            t0 = time_sync(device)
            fn(x)
            if i >= max(2, runs // 10):
                times.append((time_sync(device) - t0) * 1000)
    q10, q50, q90 = np.percentile(times, [10, 50, 90])
    return {"median_ms": float(q50), "p10_ms": float(q10), "p90_ms": float(q90), "runs": runs}


def measure_latency(model: DetectionModel, imgsz: int, device: torch.device, runs: int) -> dict:
    """Batch-1 forward ms of the fused eval model at ``imgsz`` on ``device``."""
    m = deepcopy(model).to(device).fuse().eval()
    return time_forward(m, torch.zeros(1, model.yaml["ch"], imgsz, imgsz, device=device), device, runs)


def measure_onnx_latency(weights: Path, imgsz: int, runs: int) -> dict | None:
    """Batch-1 ms of the checkpoint's ONNX Runtime export at ``imgsz`` on the CPU (the cached export detect.py and
    val.py run a .pt through by default); None when onnxruntime is not installed."""
    from models.backends import load_backend
    from models.runtime import cached_export
    from utils.data.check_image import check_image

    try:
        file, _ = cached_export(weights, "onnxruntime", (imgsz, imgsz), images=check_image)
    except ValueError as e:  # the optional package missing: one line, no ONNX column
        LOGGER.info(f"ONNX Runtime latency not measured: {e}")
        return None
    backend = load_backend(file, "cpu")
    return time_forward(backend, torch.zeros(1, 3, imgsz, imgsz), torch.device("cpu"), runs)


def arm_latency(arm: ArmSummary, runs: int) -> dict[str, dict]:
    """latency kind ('cpu', 'cuda', 'onnx') -> ``time_forward``'s figures, on the first seed's best.pt."""
    from utils.io.checkpoint import load_checkpoint

    torch.use_deterministic_algorithms(False)  # training set them for reproducibility; timing wants speed
    torch.backends.cudnn.deterministic = False
    model = DetectionModel.from_checkpoint(load_checkpoint(arm.weights)).eval()
    devices = [torch.device("cpu")] + ([torch.device("cuda:0")] if torch.cuda.is_available() else [])
    out = {d.type: measure_latency(model, arm.imgsz, d, runs) for d in devices}
    onnx = measure_onnx_latency(arm.weights, arm.imgsz, runs)
    if onnx is not None:
        out["onnx"] = onnx
    return out


class Speed(Statistic):
    name = "speed"
    columns = ("cpu_ms", "onnx_ms", "gpu_ms", "train_s_per_epoch")
    how_to_read = """\
- Speed: batch 1, BatchNorm fused, eval forward without NMS (a suppressing head's own NMS included), median of the
  timed runs at the run's imgsz ({latency}), in PyTorch and through the checkpoint's ONNX Runtime export (what
  detect.py and val.py run on a CPU by default); GFLOPs by thop (2 × MACs, unfused; a two-stage model measured at
  the imgsz itself) for every arm at the same imgsz; the dashed line joins the Pareto front (no other arm both
  faster and more accurate). train s/epoch: median over epochs of the training part of an epoch (data loading,
  forward, loss, backward, optimizer; no validation), mean over seeds — comparable only between runs on the same
  machine and load."""

    def compute(self, cmp: Comparison) -> None:
        cmp.results[self.name] = {a.cfg: arm_latency(a, cmp.latency_runs)
                                  if cmp.latency_runs > 0 and a.weights is not None else {} for a in cmp.arms}

    def latency(self, cmp: Comparison, arm: ArmSummary) -> dict[str, dict]:
        return cmp.results[self.name][arm.cfg]

    def row(self, cmp: Comparison, arm: ArmSummary) -> dict:
        lat = self.latency(cmp, arm)
        return {"cpu_ms": lat.get("cpu", {}).get("median_ms"), "onnx_ms": lat.get("onnx", {}).get("median_ms"),
                "gpu_ms": lat.get("cuda", {}).get("median_ms"), "train_s_per_epoch": arm.stat("train_s")[0]}

    def _kinds(self, cmp: Comparison) -> list[str]:
        gpu = any("cuda" in self.latency(cmp, a) for a in cmp.arms)
        return ["cpu", "onnx"] + (["cuda"] if gpu else [])

    def headers(self, cmp: Comparison) -> list[str]:
        return [KINDS[k] for k in self._kinds(cmp)] + ["train s/epoch"]

    def cells(self, cmp: Comparison, arm: ArmSummary) -> list[str]:
        lat = self.latency(cmp, arm)
        return [f"{lat[k]['median_ms']:.1f}" if k in lat else "-" for k in self._kinds(cmp)] + [
            fmt_mean_std(*arm.stat("train_s"), digits=2)]

    def plots(self, cmp: Comparison) -> list[Path]:
        return [plot_speed_accuracy(cmp.exp, cmp.arms, [self.latency(cmp, a) for a in cmp.arms])]


def plot_speed_accuracy(exp: Path, arms: list[ArmSummary], latencies: list[dict]) -> Path:
    """Final mAP50-95 (± std over seeds) against CPU latency (p10-p90 bars), or GFLOPs without latency."""
    fig, (ax,) = figure()
    timed = all("cpu" in lat for lat in latencies)
    labels, points = [], []
    for a, lat in zip(arms, latencies):
        mean, std = a.stat("final")
        if timed:
            c = lat["cpu"]
            x, xerr = c["median_ms"], [[c["median_ms"] - c["p10_ms"]], [c["p90_ms"] - c["median_ms"]]]
        else:
            x, xerr = a.gflops or 0.0, None
        points.append((x, mean))
        ax.errorbar(x, mean, xerr=xerr, yerr=0.0 if math.isnan(std) else std, fmt="o", capsize=4, label=a.name)
        labels.append(ax.annotate(a.name, (x, mean), textcoords="offset points", xytext=(6, 6), fontsize=8))
    front = pareto_front(points)
    if len(front) > 1:
        ax.plot(*zip(*(points[i] for i in front)), "k--", linewidth=1, label="Pareto front")
    xlabel = "CPU latency, batch 1, fused (ms; bars p10-p90)" if timed else "GFLOPs"
    xs = [x for x, _ in points]
    if min(xs) > 0 and max(xs) > 10 * min(xs):  # e.g. a two-stage arm beside nano one-stage ones: a log axis keeps both legible
        ax.set_xscale("log")
        xlabel += ", log scale"
    ax.set(xlabel=xlabel, ylabel="final mAP50-95 (bars ± std over seeds)", title="speed vs accuracy")
    ax.legend()
    spread_labels(fig, labels)
    fig.savefig(exp / "speed_accuracy.png", dpi=150)
    return exp / "speed_accuracy.png"
