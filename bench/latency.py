"""Forward latency of model configs on this machine (eval mode, no NMS).

    python bench/latency.py                                   # yolov5n/s + decoupled, 640 and 320, eager/fused
    python bench/latency.py --cfg yolov5n.yaml --imgsz 320 --batch 1 8 --runs 50

Prints a table (median and p90 ms per batch) and writes runs/bench/latency.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from copy import deepcopy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from models.yolo import DetectionModel  # noqa: E402

DEFAULT_CFGS = ["yolov5n.yaml", "yolov5n-decoupled.yaml", "yolov5s.yaml", "yolov5s-decoupled.yaml"]


def time_forward(model: torch.nn.Module, x: torch.Tensor, runs: int, warmup: int) -> list[float]:
    """Wall-clock ms of ``runs`` forwards after ``warmup`` untimed ones."""
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000)
    return times


def variants(model: DetectionModel, modes: list[str]) -> dict[str, torch.nn.Module]:
    out = {}
    if "eager" in modes:
        out["eager"] = model
    if "fused" in modes:
        out["fused"] = deepcopy(model).fuse()
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cfg", nargs="+", default=DEFAULT_CFGS)
    ap.add_argument("--imgsz", type=int, nargs="+", default=[640, 320])
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--modes", nargs="+", default=["eager", "fused"], choices=["eager", "fused"])
    ap.add_argument("--nc", type=int, default=80)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--json", default=str(ROOT / "runs" / "bench" / "latency.json"))
    opt = ap.parse_args(argv)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    rows = []
    print(f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'cfg':<26}{'imgsz':>6}{'batch':>6}{'mode':>7}{'median ms':>11}{'p90 ms':>9}{'params':>11}")
    for cfg in opt.cfg:
        model = DetectionModel(cfg, nc=opt.nc).eval()
        for mode, m in variants(model, opt.modes).items():
            n_params = sum(p.numel() for p in m.parameters())
            for imgsz in opt.imgsz:
                for bs in opt.batch:
                    t = sorted(time_forward(m, torch.rand(bs, 3, imgsz, imgsz), opt.runs, opt.warmup))
                    row = {"cfg": cfg, "imgsz": imgsz, "batch": bs, "mode": mode, "params": n_params,
                           "median_ms": statistics.median(t), "p90_ms": t[int(0.9 * (len(t) - 1))]}
                    rows.append(row)
                    print(f"{cfg:<26}{imgsz:>6}{bs:>6}{mode:>7}{row['median_ms']:>11.1f}{row['p90_ms']:>9.1f}"
                          f"{n_params:>11,}", flush=True)
    Path(opt.json).parent.mkdir(parents=True, exist_ok=True)
    Path(opt.json).write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                                          "rows": rows}, indent=2))
    print(f"wrote {opt.json}")
    return rows


if __name__ == "__main__":
    main()
