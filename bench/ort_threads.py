"""How ONNX Runtime spends the CPU's threads on single frames: ms per frame of one call at a time on all threads,
batch 2 on all threads, and two frames at once from two Python threads (one 1-thread session shared, or one
session each), as detect.py can run them (``IN_FLIGHT``, ``Backend.concurrent``).

    python bench/ort_threads.py                                  # fresh yolov5n, 416x640 (the demo video at 640)
    python bench/ort_threads.py --weights best.pt --hw 416 640 --rounds 10 --calls 10

The model is exported as detect.py's runtime cache does (``--dynamic`` ONNX). ``--rounds`` blocks of ``--calls``
frames per mode, the modes interleaved in each round so that load drifts hit them alike; medians. Prints a table
and writes runs/bench/ort_threads.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

import export  # noqa: E402
from bench.detect_fps import fresh_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def modes(path: Path, threads: int, hw: tuple[int, int], calls: int, pool: ThreadPoolExecutor) -> dict:
    """Mode name -> a function that runs ``calls`` frames that way."""
    x1 = np.random.default_rng(0).random((1, 3, *hw), dtype=np.float32)
    x2 = np.concatenate([x1, x1])
    all_threads, one, one_b = session(path, threads), session(path, 1), session(path, 1)
    name = all_threads.get_inputs()[0].name

    def serial(s, x, n):
        for _ in range(n):
            s.run(None, {name: x})

    return {f"one call at a time, {threads} threads": lambda: serial(all_threads, x1, calls),
            f"batch 2, {threads} threads": lambda: serial(all_threads, x2, calls // 2),
            "one call at a time, 1 thread": lambda: serial(one, x1, calls),
            "2 at once, one 1-thread session": lambda: list(pool.map(serial, [one, one], [x1, x1], [calls // 2] * 2)),
            "2 at once, a 1-thread session each": lambda: list(pool.map(serial, [one, one_b], [x1, x1],
                                                                        [calls // 2] * 2))}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help=".pt (default: a fresh yolov5n)")
    ap.add_argument("--hw", type=int, nargs=2, default=[416, 640], help="input height and width (multiples of 32)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="threads of the all-threads modes")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--calls", type=int, default=10, help="frames per mode per round (even)")
    ap.add_argument("--json", default=str(ROOT / "runs" / "bench" / "ort_threads.json"))
    opt = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if opt.weights:
            w = work / Path(opt.weights).name
            w.write_bytes(Path(opt.weights).read_bytes())
        else:
            w = fresh_weights(work, {0: "circle", 1: "square", 2: "triangle", 3: "star"})[0]
        onnx = export.run(w, include=["onnx"], imgsz=list(opt.hw), dynamic=True)["onnx"][0]
        with ThreadPoolExecutor(2) as pool:
            fns = modes(onnx, opt.threads, tuple(opt.hw), opt.calls, pool)
            for f in fns.values():  # warm-up: first-run allocations
                f()
            ms = {k: [] for k in fns}
            for _ in range(opt.rounds):
                for k, f in fns.items():
                    t0 = time.perf_counter()
                    f()
                    ms[k].append((time.perf_counter() - t0) / opt.calls * 1e3)
    rows = [{"mode": k, "ms_per_frame": statistics.median(v), "rounds_ms": v} for k, v in ms.items()]
    print(f"\nONNX Runtime {ort.__version__}, {opt.hw[0]}x{opt.hw[1]}, {w.name}, {opt.rounds} rounds x {opt.calls} "
          f"frames, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for r in rows:
        print(f"{r['mode']:<40}{r['ms_per_frame']:>8.1f} ms/frame")
    Path(opt.json).parent.mkdir(parents=True, exist_ok=True)
    Path(opt.json).write_text(json.dumps({"hw": opt.hw, "threads": opt.threads, "weights": str(opt.weights),
                                          "loadavg": os.getloadavg(), "rows": rows}, indent=1))
    print(f"wrote {opt.json}")
    return rows


if __name__ == "__main__":
    main()
