"""HeadZoo against YOLOv5 v7.0's own code, side by side on this machine: ratios from one run.

    python bench/vs_yolov5.py --yolov5 ../refvenv/lib/python3.11/site-packages/yolov5 --python ../refvenv/bin/python
    python bench/vs_yolov5.py --yolov5 ~/src/yolov5 --tasks latency --sizes 320 640 --rounds 5 --runs 10

Latency rows also give GFLOP/s (thop, fused model) and the header the CPU's nominal FP32 peak.
``--yolov5`` is a YOLOv5 v7.0 checkout or the ``yolov5==7.0.14`` pip package's folder, run by ``--python`` (an
interpreter that can import it; bench/README.md says how to set one up). Nothing is downloaded or vendored: the
reference runs in its own process. Three tasks:

- ``latency``: batch-1 forward ms of yolov5n / yolov5s (random weights, fused, eval) at each size, interleaved in
  ``--rounds`` blocks (YOLOv5, then ours eager, then ours on the default CPU path: the cached ONNX Runtime export
  detect.py and val.py use), so load drifts hit every side alike; medians and ratios ours / YOLOv5.
- ``detect``: detect.py end-to-end on the built-in demo video with the same weights (a YOLOv5 checkpoint written by
  YOLOv5's code, which our detect.py reads too), default flags on both sides, timed around each ``run()`` call: a
  first round that includes our one-time export into the runtime cache, then ``--detect-rounds`` that reuse it (the
  headline: the ratio of their medians); then each side's ``python detect.py`` as a whole process
  (``--detect-rounds``, order alternating, medians).
- ``train``: wall time of each side's train.py, default flags, yolov5n, 320 px, batch 16, 2 epochs on the same 256
  generated images, ``--train-rounds`` times with the order alternating; the ratio of the medians.

Prints the table and writes ``runs/bench/vs_yolov5.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import detect  # noqa: E402
from models import runtime  # noqa: E402
from models.formats.openvino import cpu_bf16  # noqa: E402
from models.yolo import DetectionModel  # noqa: E402
from utils.data.check_image import check_image  # noqa: E402
from utils.data.dataloaders import check_dataset  # noqa: E402
from utils.io.checkpoint import save_checkpoint  # noqa: E402
from utils.torch_utils import thop_gflops, usable_cpus  # noqa: E402

# The reference side: a worker that imports YOLOv5 from its folder and answers commands on stdin with JSON lines.
WORKER = r'''
import json, sys, time, torch
from copy import deepcopy
from pathlib import Path
root = Path(sys.argv[1]).resolve()
torch.set_num_threads(int(sys.argv[2]))
try:  # the pip package (yolov5.models...) or a checkout (models...)
    sys.path.insert(0, str(root.parent)); from yolov5.models.yolo import Model; import yolov5.detect as ydetect
except ImportError:
    sys.path.insert(0, str(root)); from models.yolo import Model; import detect as ydetect
models = {}
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["do"] == "latency":
        key = (cmd["cfg"], cmd["size"])
        if key not in models:
            models[key] = Model(str(root / "models" / cmd["cfg"])).fuse().eval()
        x = torch.zeros(1, 3, cmd["size"], cmd["size"])
        times = []
        with torch.inference_mode():
            for i in range(cmd["runs"] + 2):
                t0 = time.perf_counter(); models[key](x)
                if i >= 2: times.append((time.perf_counter() - t0) * 1000)
        print(json.dumps(times), flush=True)
    elif cmd["do"] == "checkpoint":
        m = Model(str(root / "models" / cmd["cfg"]), nc=cmd["nc"])
        m.names = cmd["names"]
        torch.save({"model": deepcopy(m).half(), "epoch": -1, "optimizer": None, "ema": None}, cmd["path"])
        print(json.dumps("ok"), flush=True)
    elif cmd["do"] == "detect":
        t0 = time.perf_counter()
        ydetect.run(weights=cmd["weights"], source=cmd["source"], project=cmd["project"], device="cpu")
        print(json.dumps(time.perf_counter() - t0), flush=True)
'''


# YOLOv5 v7.0 pickles whole modules into its checkpoints; torch >= 2.6 loads weights only unless told otherwise
REF_ENV = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


class Reference:
    """The YOLOv5 worker process."""

    def __init__(self, python: str, folder: Path, threads: int):
        self.proc = subprocess.Popen([python, "-c", WORKER, str(folder), str(threads)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=tempfile.mkdtemp(), env=REF_ENV)

    def ask(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        while True:  # YOLOv5 may print to stdout too: the answer is the next line that is JSON
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the YOLOv5 worker exited: run it by hand to see why (bench/README.md: set-up)")
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(30)


def _time(fn, x, runs: int) -> list[float]:
    times = []
    with torch.inference_mode():
        for i in range(runs + 2):
            t0 = time.perf_counter()
            fn(x)
            if i >= 2:
                times.append((time.perf_counter() - t0) * 1000)
    return times


def latency(ref: Reference, cfgs: list[str], sizes: list[int], rounds: int, runs: int, tmp: Path) -> list[dict]:
    rows = []
    for cfg in cfgs:
        built = DetectionModel(cfg)
        w = save_checkpoint({"model": built.state_dict(), "ema": None, "yaml": built.yaml,
                             "names": {i: str(i) for i in range(80)}}, tmp / Path(cfg).with_suffix(".pt").name)
        model = built.fuse().eval()
        for size in sizes:
            gflops = thop_gflops(model, torch.zeros(1, 3, size, size))  # fused: the arithmetic actually run
            x = torch.zeros(1, 3, size, size)
            default = runtime.runtime_backend(w, torch.device("cpu"), backend="auto", imgsz=(size, size),
                                              images=check_image)
            sides = {"ours_eager": model, "ours_default": default}
            if cpu_bf16():  # the opt-in --half on the CPU: OpenVINO in BF16 (changes outputs beyond the 1e-3 check)
                sides["ours_half_bf16"] = runtime.runtime_backend(w, torch.device("cpu"), half=True, imgsz=(size, size),
                                                                  images=check_image)
            t = {"yolov5": [], **{k: [] for k in sides}}
            for _ in range(rounds):  # interleaved blocks: the same load for every side
                t["yolov5"] += ref.ask(do="latency", cfg=cfg, size=size, runs=runs)
                for k, fn in sides.items():
                    t[k] += _time(fn, x, runs)
            med = {k: float(np.median(v)) for k, v in t.items()}
            rows.append({"cfg": cfg, "size": size, **{f"{k}_ms": v for k, v in med.items()},
                         "default_backend": default.fmt, "gflops": gflops,
                         **{f"{k}_gflop_s": gflops / v * 1000 for k, v in med.items() if gflops},
                         "ratio_eager": med["ours_eager"] / med["yolov5"],
                         "ratio_default": med["ours_default"] / med["yolov5"],
                         **({"ratio_half_bf16": med["ours_half_bf16"] / med["yolov5"]} if "ours_half_bf16" in med
                            else {})})
            print(f"latency {cfg} @{size}: YOLOv5 {med['yolov5']:.1f} ms, ours eager {med['ours_eager']:.1f} ms "
                  f"({rows[-1]['ratio_eager']:.2f}x), ours default ({default.fmt}) {med['ours_default']:.1f} ms "
                  f"({rows[-1]['ratio_default']:.2f}x)" + (f"; {gflops:.1f} GFLOPs (fused): YOLOv5 "
                  f"{gflops / med['yolov5'] * 1000:.0f} GFLOP/s, ours default {gflops / med['ours_default'] * 1000:.0f}"
                  f" GFLOP/s" if gflops else "") + (f"; ours --half (OpenVINO BF16) {med['ours_half_bf16']:.1f} ms "
                  f"({rows[-1]['ratio_half_bf16']:.2f}x" + (f", {gflops / med['ours_half_bf16'] * 1000:.0f} GFLOP/s)"
                  if gflops else ")") if "ours_half_bf16" in med else ""), flush=True)
    return rows


def fp32_peak() -> dict:
    """The CPU's nominal FP32 FMA peak: usable cores x clock (/proc/cpuinfo 'cpu MHz') x FLOPs per cycle per core
    (2 FMA units x 16 lanes x 2 with AVX-512, x 8 lanes with AVX2/FMA, 8 without); nominal, not measured."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    mhz = next((float(line.split(":", 1)[1]) for line in info.splitlines() if line.startswith("cpu MHz")), 0.0)
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
    cores = usable_cpus()
    isa = "AVX-512" if per_cycle == 64 else "AVX2" if per_cycle == 32 else "SSE"
    return {"cores": cores, "mhz": mhz, "isa": isa, "gflop_s": cores * mhz / 1000 * per_cycle,
            "amx_bf16": "amx_bf16" in flags}


def detect_fps(ref: Reference, tmp: Path, python: str, folder: Path, rounds: int) -> dict:
    """Both detect.py's on the demo video with one YOLOv5-written yolov5n checkpoint (4 classes), default flags:
    timed around each ``run()`` (a first round, then ``rounds`` with our export cached: the headline is their
    medians' ratio), then as whole processes (``rounds``, order alternating)."""
    data = check_dataset("shapes.yaml")
    video = Path(data["path"]) / "videos" / "shapes.mp4"
    w = tmp / "yolov5n-shapes.pt"
    ref.ask(do="checkpoint", cfg="yolov5n.yaml", nc=len(data["names"]), names=list(data["names"].values()), path=str(w))
    out = {"rounds": []}
    for r in range(1 + rounds):  # round 0: ours exports the checkpoint into the runtime cache (once per checkpoint)
        t_ref = ref.ask(do="detect", weights=str(w), source=str(video), project=str(tmp / "yolov5"))
        t0 = time.perf_counter()
        result = detect.run(weights=w, source=video, project=tmp / "ours")
        t_ours = time.perf_counter() - t0
        frames = result.frames
        out["rounds"].append({"frames": frames, "yolov5_s": t_ref, "ours_s": t_ours, "yolov5_fps": frames / t_ref,
                              "ours_fps": frames / t_ours, "ratio_fps": t_ref / t_ours})
        what = "first run, export included" if r == 0 else f"export cached, round {r}"
        print(f"detect on {video.name} ({what}): YOLOv5 {frames / t_ref:.1f} fps, ours {frames / t_ours:.1f} fps "
              f"({t_ref / t_ours:.2f}x)", flush=True)
    cached = out["rounds"][1:]  # the headline: a user's every run after the first
    out.update(frames=cached[-1]["frames"], yolov5_fps=float(np.median([c["yolov5_fps"] for c in cached])),
               ours_fps=float(np.median([c["ours_fps"] for c in cached])))
    out["ratio_fps"] = out["ours_fps"] / out["yolov5_fps"]
    print(f"detect on {video.name}, export cached, median of {len(cached)}: YOLOv5 {out['yolov5_fps']:.1f} fps, "
          f"ours {out['ours_fps']:.1f} fps ({out['ratio_fps']:.2f}x)", flush=True)
    out["process"] = detect_processes(python, folder, w, video, tmp, rounds)
    return out


def timed_rounds(command, tmp: Path, rounds: int, what: str) -> dict[str, list[float]]:
    """Wall seconds of ``command(side, round)`` run as a process for each side, ``rounds`` times, the order
    alternating so that a drift in load hits both sides alike; a failed process is an error with its stderr."""
    times = {"yolov5": [], "ours": []}
    for r in range(rounds):
        for side in (("yolov5", "ours") if r % 2 == 0 else ("ours", "yolov5")):
            t0 = time.perf_counter()
            p = subprocess.run(command(side, r), capture_output=True, text=True, cwd=tmp,
                               env=REF_ENV if side == "yolov5" else None)
            times[side].append(time.perf_counter() - t0)
            if p.returncode:
                raise RuntimeError(f"{side} {what} failed:\n{p.stderr[-2000:]}")
        print(f"{what}, round {r}: YOLOv5 {times['yolov5'][-1]:.1f} s, ours {times['ours'][-1]:.1f} s "
              f"(ours / YOLOv5 {times['ours'][-1] / times['yolov5'][-1]:.2f})", flush=True)
    return times


def detect_processes(python: str, folder: Path, w: Path, video: Path, tmp: Path, rounds: int) -> dict:
    """Whole-process wall of each side's ``python detect.py --weights W --source VIDEO`` (default flags; interpreter
    start, imports, model load, the video), ``rounds`` times with the order alternating; the ratio of the medians."""
    cmds = {"yolov5": [python, str(folder / "detect.py"), "--weights", str(w), "--source", str(video), "--device",
                       "cpu", "--project", str(tmp / "yolov5-cli")],
            "ours": [sys.executable, str(ROOT / "detect.py"), "--weights", str(w), "--source", str(video), "--project",
                     str(tmp / "ours-cli")]}
    times = timed_rounds(lambda side, r: cmds[side], tmp, rounds, "detect.py whole process")
    out = {"yolov5_s": times["yolov5"], "ours_s": times["ours"],
           "ratio": float(np.median(times["yolov5"]) / np.median(times["ours"]))}
    print(f"detect.py whole process, median of {rounds}: YOLOv5 {np.median(times['yolov5']):.1f} s, ours "
          f"{np.median(times['ours']):.1f} s ({out['ratio']:.2f}x)", flush=True)
    return out


def train_wall(python: str, folder: Path, tmp: Path, rounds: int) -> dict:
    """yolov5n, 320 px, batch 16, 2 epochs, 256 generated images: each side's train.py with default flags,
    ``rounds`` times, the order alternating; the ratio of the medians."""
    spec = {"path": str(tmp / "shapes256"), "train": "images/train", "val": "images/val",
            "names": {0: "circle", 1: "square", 2: "triangle", 3: "star"},
            "generate": {"generator": "shapes", "seed": 0, "imgsz": 320, "n_train": 256, "n_val": 32,
                         "classes": ["circle", "square", "triangle", "star"], "video_seconds": 0}}
    ours_yaml = tmp / "shapes256.yaml"
    ours_yaml.write_text(yaml.safe_dump(spec, sort_keys=False))
    check_dataset(str(ours_yaml))  # generated here, once, for both sides
    ref_yaml = tmp / "shapes256-yolov5.yaml"
    ref_yaml.write_text(yaml.safe_dump({k: spec[k] for k in ("path", "train", "val", "names")}, sort_keys=False))
    ref_train = folder / "train.py"
    cmds = {"yolov5": [python, str(ref_train), "--data", str(ref_yaml), "--cfg", "yolov5n.yaml", "--weights", "",
                       "--img", "320", "--batch-size", "16", "--epochs", "2", "--device", "cpu",
                       "--project", str(tmp / "train"), "--name", "yolov5"],
            "ours": [sys.executable, str(ROOT / "train.py"), "--data", str(ours_yaml), "--cfg", "yolov5n.yaml",
                     "--imgsz", "320", "--batch-size", "16", "--epochs", "2", "--project", str(tmp / "train"),
                     "--name", "ours"]}
    times = timed_rounds(lambda side, r: [*cmds[side][:-1], f"{side}{r}"], tmp, rounds, "train")  # a fresh folder
    out = {"yolov5_s": times["yolov5"], "ours_s": times["ours"],
           "ratios": [o / y for o, y in zip(times["ours"], times["yolov5"])]}
    out["ratio"] = float(np.median(times["ours"]) / np.median(times["yolov5"]))
    print(f"train 2 epochs, median of {rounds}: YOLOv5 {np.median(times['yolov5']):.1f} s, ours "
          f"{np.median(times['ours']):.1f} s ({out['ratio']:.2f}x)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--yolov5", required=True, help="YOLOv5 v7.0 checkout or the yolov5 pip package's folder")
    ap.add_argument("--python", default=sys.executable, help="interpreter that can import that YOLOv5")
    ap.add_argument("--tasks", nargs="+", default=["latency", "detect", "train"],
                    choices=["latency", "detect", "train"])
    ap.add_argument("--cfg", nargs="+", default=["yolov5n.yaml", "yolov5s.yaml"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[320, 640])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--train-rounds", type=int, default=2, help="train.py runs per side (order alternating)")
    ap.add_argument("--detect-rounds", type=int, default=3,
                    help="whole-process detect.py runs per side (order alternating)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", default=str(ROOT / "runs" / "bench" / "vs_yolov5.json"))
    opt = ap.parse_args()
    folder = Path(opt.yolov5).expanduser().resolve()
    opt.python = str(Path(opt.python).expanduser().absolute()) if os.sep in opt.python else opt.python
    if not (folder / "models" / "yolo.py").is_file():
        sys.exit(f"--yolov5 {folder}: not a YOLOv5 folder (models/yolo.py missing); see bench/README.md")
    torch.set_num_threads(opt.threads)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {opt.threads} torch thread(s) per side")
    peak = fp32_peak()
    print(f"CPU: {peak['cores']} usable core(s), {peak['isa']} at {peak['mhz']:.0f} MHz: nominal FP32 peak "
          f"{peak['gflop_s']:.0f} GFLOP/s" + (" (the CPU also has AMX-BF16: only the --half column uses it)"
                                             if peak["amx_bf16"] else ""))
    tmp = Path(tempfile.mkdtemp(prefix="vs_yolov5_"))
    os.environ[runtime.CACHE_ENV] = str(tmp / "runtime_cache")  # this run's exports stay in its own folder
    ref = Reference(opt.python, folder, opt.threads)
    out = {"load": load, "threads": opt.threads, "yolov5": str(folder), "cpu": peak}
    try:
        if "latency" in opt.tasks:
            out["latency"] = latency(ref, opt.cfg, opt.sizes, opt.rounds, opt.runs, tmp)
        if "detect" in opt.tasks:
            out["detect"] = detect_fps(ref, tmp, opt.python, folder, opt.detect_rounds)
    finally:
        ref.close()
    if "train" in opt.tasks:
        out["train"] = train_wall(opt.python, folder, tmp, opt.train_rounds)
    Path(opt.json).parent.mkdir(parents=True, exist_ok=True)
    Path(opt.json).write_text(json.dumps(out, indent=1))
    print(f"written {opt.json}")


if __name__ == "__main__":
    main()
