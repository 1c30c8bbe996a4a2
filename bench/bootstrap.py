"""Time of the paired bootstrap over validation images (and of the TIDE breakdown) on a synthetic val set.

    python bench/bootstrap.py                          # 250 images, ~8 labels and ~100 detections each, 4 classes
    python bench/bootstrap.py --images 500 --n-boot 2000

Arm A's detections are its labels jittered (a box error of ~5% of the side, a few wrong classes, duplicates) plus
low-confidence background boxes; arm B is A with a slightly larger jitter. Matching (``match_images``) is timed apart
from the resampling (``paired_bootstrap``), which is the figure issue 17 bounds (< 30 s for 250 images, 1 thread).
Prints the timings, the intervals and the machine load (``uptime``), and writes runs/bench/bootstrap.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from utils.evaluation.bootstrap import match_images, paired_bootstrap  # noqa: E402
from utils.evaluation.tide import tide_errors  # noqa: E402


def synthetic_labels(rng: np.random.Generator, n_images: int, objects: int, nc: int,
                     size: float = 640.0) -> list[torch.Tensor]:
    """Per image (m, 5) [cls, x1, y1, x2, y2] with m drawn around ``objects`` (Poisson)."""
    out = []
    for _ in range(n_images):
        m = rng.poisson(objects)
        wh = rng.uniform(16, 160, (m, 2))
        xy = rng.uniform(0, size - wh)
        out.append(torch.tensor(np.column_stack((rng.integers(0, nc, m), xy, xy + wh)), dtype=torch.float32))
    return out


def synthetic_detections(rng: np.random.Generator, labels: torch.Tensor, detections: int, nc: int, jitter: float,
                         size: float = 640.0) -> torch.Tensor:
    """(n, 6) [x1, y1, x2, y2, conf, cls], conf-sorted: one jittered box per label (90% found, 10% wrong class),
    a duplicate for 20% of them, and background boxes up to ``detections`` rows."""
    lab = labels.numpy()
    found = lab[rng.random(len(lab)) < 0.9]
    dup = found[rng.random(len(found)) < 0.2]
    objs = np.concatenate((found, dup))
    side = (objs[:, 3:5] - objs[:, 1:3]).repeat(2, 1)
    boxes = objs[:, 1:5] + rng.normal(0, jitter, side.shape) * side
    cls = np.where(rng.random(len(objs)) < 0.1, rng.integers(0, nc, len(objs)), objs[:, 0])
    conf = np.concatenate((rng.uniform(0.3, 1.0, len(found)), rng.uniform(0.05, 0.6, len(dup))))
    n_bg = max(0, detections - len(objs))
    wh = rng.uniform(8, 200, (n_bg, 2))
    xy = rng.uniform(0, size - wh)
    bg = np.column_stack((xy, xy + wh, rng.uniform(0.001, 0.4, n_bg), rng.integers(0, nc, n_bg)))
    det = np.concatenate((np.column_stack((boxes, conf, cls)), bg))
    return torch.tensor(det[np.argsort(-det[:, 4], kind="stable")], dtype=torch.float32)


def main(opt: argparse.Namespace) -> dict:
    rng = np.random.default_rng(opt.seed)
    labels = synthetic_labels(rng, opt.images, opt.objects, opt.nc)
    arms = [[synthetic_detections(rng, lab, opt.detections, opt.nc, jitter) for lab in labels]
            for jitter in (0.05, 0.06)]
    t0 = time.perf_counter()
    stats = [match_images(preds, labels) for preds in arms]
    t1 = time.perf_counter()
    res = paired_bootstrap(*stats, n_boot=opt.n_boot, seed=opt.seed)
    t2 = time.perf_counter()
    tide = tide_errors(arms[0], labels)
    t3 = time.perf_counter()
    load = subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip()
    out = {"images": opt.images, "detections": int(sum(len(p) for p in arms[0])),
           "labels": int(sum(len(x) for x in labels)), "n_boot": opt.n_boot, "match_s": round(t1 - t0, 2),
           "bootstrap_s": round(t2 - t1, 2), "tide_s": round(t3 - t2, 2), "a": res.a, "b": res.b,
           "map_diff": [res.map.diff, res.map.low, res.map.high],
           "map50_diff": [res.map50.diff, res.map50.low, res.map50.high], "uptime": load,
           "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    print(f"{opt.images} images, {out['labels']} labels, {out['detections']} detections per arm, {opt.nc} classes, "
          f"{opt.n_boot} resamples, {out['threads']} torch thread(s)")
    print(f"match_images (both arms) {out['match_s']:.2f} s | paired_bootstrap {out['bootstrap_s']:.2f} s | "
          f"tide_errors (one arm) {out['tide_s']:.2f} s")
    print(f"mAP50-95 A {res.a[1]:.4f} B {res.b[1]:.4f}: B - A {res.map.diff:+.4f} "
          f"[{res.map.low:+.4f}, {res.map.high:+.4f}] | mAP50 B - A {res.map50.diff:+.4f} "
          f"[{res.map50.low:+.4f}, {res.map50.high:+.4f}]")
    print(f"TIDE (arm A, AP50 {tide.ap50:.4f}): " + " ".join(f"{k} {v:.4f}" for k, v in tide.dap.items())
          + f" FP {tide.dap_fp:.4f} FN {tide.dap_fn:.4f}")
    print(f"load: {load}")
    path = ROOT / "runs" / "bench" / "bootstrap.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    return out


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=250)
    p.add_argument("--objects", type=float, default=8, help="mean labels per image")
    p.add_argument("--detections", type=int, default=100, help="detections per image")
    p.add_argument("--nc", type=int, default=4)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(parse_opt())
