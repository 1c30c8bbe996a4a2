"""End-to-end frames per second of detect.py on the built-in video: PyTorch (.pt) vs ONNX Runtime (.onnx).

    python bench/detect_fps.py                                   # yolov5n and yolov5n-decoupled, fresh weights
    python bench/detect_fps.py --weights runs/train/exp/weights/best.pt --threads 1 2
    python bench/detect_fps.py --weights best.pt --imgsz 640 --in-flight 1 2 3 --repeat 3   # frames at once
    python bench/detect_fps.py --weights best.pt --checkouts /tmp/before . --rounds 5   # python detect.py, A vs B

Each model runs through ``detect.run`` on the whole video (decode, letterbox, inference, NMS, drawing, writing
the annotated mp4), once as its .pt and once as a --dynamic ONNX export of it, so both see the same letterboxed
input.

``--checkouts A B`` instead times ``python detect.py --weights W --source VIDEO`` as a user runs it (default flags,
``--imgsz`` only if given), from each checkout's folder (e.g. a ``git worktree`` of the commit before a change, then
this one), ``--rounds`` times with the order alternating: the whole-process wall and detect.py's own end-to-end
FPS, medians, and each checkout against the first (one untimed run first caches the runtime export).

Without --weights, freshly initialised models are used: speed does not depend on training (an untrained
model finds nothing at conf 0.25, so NMS and drawing cost less than with a trained one). Each setting runs
``--repeat`` times and keeps the fastest (the machine may be shared). Prints a table and writes
runs/bench/detect_fps.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnxruntime  # noqa: E402
import torch  # noqa: E402

import detect  # noqa: E402
import export  # noqa: E402
from models.yolo import DetectionModel  # noqa: E402
from utils.io.checkpoint import save_checkpoint  # noqa: E402
from utils.data.dataloaders import check_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CFGS = ("yolov5n.yaml", "yolov5n-decoupled.yaml")


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", nargs="+", default=None, help=".pt files (default: fresh yolov5n, yolov5n-decoupled)")
    p.add_argument("--source", default=None, help="video (default: the built-in shapes video)")
    p.add_argument("--imgsz", type=int, default=None, help="inference size (px; default 320, --checkouts: detect.py's)")
    p.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()],
                   help="intra-op thread counts to time (PyTorch and ONNX Runtime alike)")
    p.add_argument("--repeat", type=int, default=2, help="runs per setting; the fastest is kept")
    p.add_argument("--in-flight", type=int, nargs="+", default=[None],
                   help="ONNX Runtime: frames at once to time (e.g. 1 2; default: detect.py's own choice)")
    p.add_argument("--checkouts", nargs="+", default=None,
                   help="time `python detect.py` from each of these repository folders instead (needs --weights)")
    p.add_argument("--rounds", type=int, default=3, help="--checkouts: timed runs per checkout, order alternating")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench" / "detect_fps.json"))
    return p.parse_args(argv)


def fresh_weights(folder: Path, names: dict[int, str]) -> list[Path]:
    """Freshly initialised models of CFGS saved as our checkpoints (seeded)."""
    paths = []
    for cfg in CFGS:
        torch.manual_seed(0)
        m = DetectionModel(cfg, nc=len(names))
        paths.append(save_checkpoint({"model": m.state_dict(), "ema": None, "yaml": m.yaml, "names": names,
                                      "epoch": -1, "optimizer": None, "best_fitness": 0.0, "updates": 0, "opt": {},
                                      "date": ""}, folder / f"{Path(cfg).stem}.pt"))
    return paths


def time_detect(weights: Path, source: str, imgsz: int, project: Path, repeat: int,
                in_flight: int | None = None, backend: str = "auto") -> detect.DetectResult:
    """The fastest of ``repeat`` full detect.py runs (annotated mp4 written, as a user would run it)."""
    runs = [detect.run(weights, source, imgsz=imgsz, project=project, name="run", exist_ok=True, in_flight=in_flight,
                       backend=backend) for _ in range(repeat)]
    return max(runs, key=lambda r: r.fps)


def bench(weights: list[Path], source: str, imgsz: int, threads: list[int], repeat: int, work: Path,
          in_flight: list[int | None] = (None,)) -> list[dict]:
    """Each setting: PyTorch, then ONNX Runtime at each ``in_flight`` (frames at once; None: detect.py's default,
    which is also what runs when the runtime cannot take more)."""
    rows = []
    for w in weights:
        onnx = export.run(w, include=["onnx"], imgsz=[imgsz], dynamic=True)["onnx"][0]
        for n in threads:
            torch.set_num_threads(n)
            for fmt, f, flights in (("PyTorch", w, [None]), ("ONNX Runtime", onnx, in_flight)):
                for k in flights:  # the .pt as PyTorch: detect.py's default would run it through ONNX Runtime
                    r = time_detect(f, source, imgsz, work / "runs", repeat, k, "torch" if fmt == "PyTorch" else "auto")
                    rows.append({"model": w.stem, "format": fmt, "threads": n, "in_flight": r.in_flight,
                                 "frames": r.frames, "input_shape": list(r.shape), "pre_ms": r.speed_ms[0],
                                 "inference_ms": r.speed_ms[1], "nms_ms": r.speed_ms[2], "fps": r.fps})
    return rows


SUMMARY = re.compile(r"(\d+) frames in ([\d.]+)s: ([\d.]+) FPS end-to-end")


def run_cli(root: Path, weights: Path, source: str, imgsz: int | None, project: Path) -> dict:
    """One ``python detect.py`` from ``root``: whole-process wall seconds and its own summary line's figures."""
    cmd = [sys.executable, str(root / "detect.py"), "--weights", str(weights), "--source", source,
           "--project", str(project), *(["--imgsz", str(imgsz)] if imgsz else [])]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=project.parent)
    wall = time.perf_counter() - t0
    m = SUMMARY.search(p.stderr + p.stdout)
    if p.returncode or not m:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return {"wall_s": wall, "frames": int(m[1]), "loop_s": float(m[2]), "fps": float(m[3])}


def bench_checkouts(roots: list[Path], weights: Path, source: str, imgsz: int | None, rounds: int,
                    work: Path) -> list[dict]:
    """Each checkout's detect.py, ``rounds`` times, the order alternating; medians and ratios to the first."""
    run_cli(roots[-1], weights, source, imgsz, work / "warmup")  # caches the runtime export for every side
    runs: dict[int, list[dict]] = {i: [] for i in range(len(roots))}
    for r in range(rounds):
        order = range(len(roots)) if r % 2 == 0 else reversed(range(len(roots)))
        for i in order:
            runs[i].append(run_cli(roots[i], weights, source, imgsz, work / f"side{i}"))
        print(f"round {r}: " + ", ".join(f"{roots[i].name} {runs[i][-1]['fps']:.1f} fps / {runs[i][-1]['wall_s']:.2f} s"
                                         for i in range(len(roots))) + f"; load {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for i, root in enumerate(roots):
        fps = statistics.median(x["fps"] for x in runs[i])
        wall = statistics.median(x["wall_s"] for x in runs[i])
        rows.append({"checkout": str(root), "frames": runs[i][0]["frames"], "fps": fps, "wall_s": wall,
                     "fps_ratio": fps / rows[0]["fps"] if rows else 1.0,
                     "wall_ratio": rows[0]["wall_s"] / wall if rows else 1.0, "runs": runs[i]})
    return rows


def print_checkouts(rows: list[dict]) -> None:
    head = f"{'checkout':<40}{'frames':>8}{'FPS':>8}{'x first':>9}{'wall s':>9}{'x first':>9}"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['checkout'][-40:]:<40}{r['frames']:>8}{r['fps']:>8.1f}{r['fps_ratio']:>9.2f}{r['wall_s']:>9.2f}"
              f"{r['wall_ratio']:>9.2f}")
    print("medians; 'x first': FPS over the first checkout's, its wall over this one's (higher is faster)")


def print_table(rows: list[dict]) -> None:
    head = f"{'model':<22}{'format':<14}{'threads':>8}{'in flight':>10}{'frames':>8}{'input':>16}{'pre ms':>8}" \
           f"{'infer ms':>10}{'NMS ms':>8}{'FPS':>8}"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        shape = "x".join(map(str, r["input_shape"][2:]))
        print(f"{r['model']:<22}{r['format']:<14}{r['threads']:>8}{r['in_flight']:>10}{r['frames']:>8}{shape:>16}"
              f"{r['pre_ms']:>8.1f}{r['inference_ms']:>10.1f}{r['nms_ms']:>8.1f}{r['fps']:>8.1f}")


def main(argv: list[str] | None = None) -> int:
    opt = parse_opt(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    data = check_dataset("shapes.yaml")
    source = opt.source or str(Path(data["path"]) / "videos" / "shapes.mp4")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if opt.weights:
            weights, note = [Path(w) for w in opt.weights], "weights: " + ", ".join(opt.weights)
        else:
            weights = fresh_weights(work, data["names"])
            note = "weights: freshly initialised models (speed does not depend on training)"
        print(f"detect.py end-to-end on {source} at --imgsz {opt.imgsz or ('default' if opt.checkouts else 320)}; "
              f"{note}; load average {os.getloadavg()[0]:.1f}")
        for w in weights:  # exports go beside the weights: copy user weights into the work folder
            if w.parent != work:
                (work / w.name).write_bytes(w.read_bytes())
        if opt.checkouts:
            roots = [Path(c).resolve() for c in opt.checkouts]
            rows = bench_checkouts(roots, work / weights[0].name, source, opt.imgsz, opt.rounds, work)
        else:
            rows = bench([work / w.name for w in weights], source, opt.imgsz or 320, opt.threads, opt.repeat, work,
                         opt.in_flight)
    print_checkouts(rows) if opt.checkouts else print_table(rows)
    info = {"note": note, "source": source, "imgsz": opt.imgsz, "repeat": opt.repeat, "rounds": opt.rounds,
            "cpu_count": os.cpu_count(),
            "loadavg": os.getloadavg(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "results": rows}
    out = Path(opt.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=1))
    print(f"\nload average {info['loadavg'][0]:.1f} on {info['cpu_count']} CPUs (a shared machine is noisy); "
          f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
