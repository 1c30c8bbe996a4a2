"""How cost grows with the work: training-step time and peak memory per head family against image size, objects
per image, classes and batch; assignment time against objects x predictions; dataset size against label-check
(cache) time, cache size and a data-only epoch; one convolution's time per pixel against its map size. Fits the
log-log exponent of each (least squares of log cost on log size), prints a table, names every super-linear tail with
its measured cause, and writes runs/bench/scaling.json and scaling.png.

    OMP_NUM_THREADS=1 nice python bench/scaling.py                  # the full run (~13 min on a loaded 2-core box)
    python bench/scaling.py --quick --cfg yolov5n.yaml              # seconds: two small points per axis
    python bench/scaling.py --cfg yolov5n.yaml rtmdet-tiny.yaml --parts train assigner

Times are CPU time of this process (``time.process_time``), not wall time: on a shared machine the wall clock
mostly measures the queue for a core, and an exponent is a ratio of two times from one run. Run it with one
thread (``OMP_NUM_THREADS=1`` or ``--threads 1``) so that CPU time is the work; the load average is recorded.

Training step: what train.py does per batch (bench/train_throughput.py's ``build_step`` / ``train_step``: forward,
the head's criterion, backward, clip, SGD), on a fixed synthetic batch with exactly the given objects per image.
One axis moves at a time from the base point (320 px, 10 objects, 80 classes, batch 1); the base point is measured
again last ("repeat": the run's noise). The image-size axis is fitted against pixels (side^2): exponent 1 is cost
linear in the pixels. ``tail`` is the slope between the last two points: a super-linear term shows there first,
where it outgrows the fixed costs.

Peak memory: each point runs in a child forked from this process (modules imported once; a forked child starts
its own RSS high-water mark at its current RSS). It reads ``getrusage(RUSAGE_SELF).ru_maxrss`` after the model,
optimizer and batch are built, runs the steps, and reports the growth of that mark: the step's own peak above the
built model (activations, gradients, optimizer state, loss and assignment temporaries). Minor page faults per
step are recorded beside it.

Assignment: each assigner of utils/assigners (SimOTA, DSLA, TAL when registered) alone on bench/assigner.py's
synthetic batches, over objects x predictions (image sizes give the predictions: strides 8/16/32), with its page
faults per call.

Dataset: N label files with 1-8 random boxes each and N tiny images (one 32 px JPEG encoded once, its bytes
written N times; the check opens and verifies every one), as ``images/`` + ``labels/`` on a RAM disk (/dev/shm
where it exists: the files' own cost, not the disk's); ``LoadImagesAndLabels`` built cold (label check + cache
write) and warm (cache read), the .cache file's size, and one data-only epoch (every item through
``__getitem__`` with mosaic on, no model) up to ``--epoch-max`` images.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from utils.assigners import ASSIGNERS  # noqa: E402

from bench.assigner import make_priors, synthetic_batch, time_assign  # noqa: E402
from bench.train_throughput import build_step, train_step  # noqa: E402

FAMILIES = ["yolov5n.yaml", "yolov5n-decoupled.yaml", "yolov5n-decoupled-af.yaml", "yolov5n-gfl.yaml",
            "rtmdet-tiny.yaml", "yolov5n-v8head.yaml"]
DEFAULT_CFGS = [c for c in FAMILIES if (ROOT / "models" / c).is_file()]
AXES = {"imgsz": [160, 320, 640, 1280], "objects": [1, 10, 100, 300], "nc": [4, 80, 1000], "batch": [1, 4, 16]}
BASE = {"imgsz": 320, "objects": 10, "nc": 80, "batch": 1}
QUICK_AXES = {"imgsz": [64, 256], "objects": [1, 8], "nc": [4, 16], "batch": [1, 2]}
QUICK_BASE = {"imgsz": 64, "objects": 1, "nc": 4, "batch": 1}
ASSIGN_OBJECTS, ASSIGN_IMGSZ = [1, 10, 100, 300], [160, 320, 640, 1280]
QUICK_ASSIGN_OBJECTS, QUICK_ASSIGN_IMGSZ = [2, 8], [64, 128]
DATASET_SIZES, QUICK_DATASET_SIZES = [1000, 10000, 100000], [50, 150]
STRIDES = [8, 16, 32]
CONV_CHANNELS, CONV_MAPS, QUICK_CONV_MAPS = 96, [40, 80, 160, 320], [16, 32]  # RTMDet-tiny's head width
SUPERLINEAR = 1.1  # a tail slope above this is reported with its cause
CAUSES = {  # measured causes, see bench/README.md "How cost grows"
    "imgsz": "per-pixel cost of the convolutions' weight gradients rises once a feature map outgrows the CPU caches "
             "(the conv part: backward ns/px vs map size); and (B, C, H, W) tensors over glibc's 32 MiB mmap "
             "ceiling are fresh mappings each step (page faults)",
    "assigner": "(B, G, N) temporaries over glibc's 32 MiB mmap ceiling are fresh mappings on every call: page "
                "faults per pair jump there (the faults column); MALLOC_MMAP_THRESHOLD_ raised removes them",
}
TINY_IMAGE_PX = 32
SHM = "/dev/shm"
PARTS = ["train", "assigner", "dataset", "conv"]


# ------------------------------------------------------------------ fits
def fit_exponent(xs: list[float], ys: list[float]) -> float | None:
    """Slope of the least-squares line of log y on log x; None with fewer than two usable points."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x and y and x > 0 and y > 0]
    if len({p[0] for p in pts}) < 2:
        return None
    return float(np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)[0])


def exponents(xs: list[float], ys: list[float]) -> dict[str, float | None]:
    """``fit`` over every point and ``tail`` between the last two (sorted by x)."""
    pts = sorted(zip(xs, ys))
    return {"fit": fit_exponent(xs, ys), "tail": fit_exponent(*zip(*pts[-2:])) if len(pts) >= 2 else None}


def axis_x(axis: str, value: int) -> int:
    """The size an axis is fitted against: pixels for the image size, the value itself otherwise."""
    return value * value if axis == "imgsz" else value


# ------------------------------------------------------------------ isolation
def maxrss_mb() -> float:
    """This process's RSS high-water mark in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def minor_faults() -> int:
    """Minor page faults of this process so far: memory touched for the first time since it was mapped."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _child(conn, fn, args) -> None:
    try:
        conn.send(fn(*args))
    except Exception as e:  # noqa: BLE001 - reported to the parent, which records the point as failed
        conn.send({"error": f"{type(e).__name__}: {e}"})
    finally:
        conn.close()


def run_isolated(fn, *args, timeout: float = 600.0) -> dict:
    """``fn(*args)`` in a forked child (its own RSS high-water mark); in this process where fork is missing."""
    if "fork" not in mp.get_all_start_methods():
        return {**fn(*args), "peak_mb": None}
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args))
    proc.start()
    child.close()
    try:
        out = parent.recv() if parent.poll(timeout) else {"error": f"no answer in {timeout:.0f} s"}
    except EOFError:
        out = {"error": "child died"}
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    return out


# ------------------------------------------------------------------ training steps
def measure_step(cfg: str, point: dict, steps: int, warmup: int, seed: int, threads: int | None) -> dict:
    """One point, meant for a fresh child: median ms of ``steps`` training steps and the peak RSS growth."""
    if threads:
        torch.set_num_threads(threads)
    opt = argparse.Namespace(seed=seed, channels_last=True, compile=None, nc=point["nc"], imgsz=point["imgsz"],
                             batch_size=point["batch"], min_objects=point["objects"], max_objects=point["objects"])
    setup = build_step(cfg, opt, torch.device("cpu"))
    base = maxrss_mb()
    wall, cpu, faults = [], [], []
    for _ in range(warmup + steps):
        t0, f0 = time.process_time(), minor_faults()
        wall.append(train_step(setup))
        cpu.append((time.process_time() - t0) * 1000)
        faults.append(minor_faults() - f0)
    return {"cpu_ms": statistics.median(cpu[warmup:]), "wall_ms": statistics.median(wall[warmup:]),
            "cpu_times_ms": cpu[warmup:], "faults": statistics.median(faults[warmup:]),
            "peak_mb": maxrss_mb() - base, "targets": int(setup.targets.shape[0])}


def train_points(axes: dict, base: dict) -> list[tuple[str, dict]]:
    """(axis, point) pairs: the base point (axis 'base'), each axis's other values, the base point again (axis
    'repeat': not fitted; its difference from the first is the run's noise)."""
    pts = [("base", dict(base))]
    for axis, values in axes.items():
        pts += [(axis, {**base, axis: v}) for v in values if v != base[axis]]
    return [*pts, ("repeat", dict(base))]


def bench_train(opt: argparse.Namespace, axes: dict, base: dict) -> list[dict]:
    rows = []
    print(f"\ntraining steps: base {base}, {opt.warmup} warm-up + {opt.steps} timed steps per point")
    print(f"{'cfg':<28}{'axis':>8}{'value':>7}{'targets':>8}{'CPU ms':>9}{'wall ms':>9}{'faults':>8}{'peak MiB':>10}")
    for cfg in opt.cfg:
        for axis, point in train_points(axes, base):
            t0 = time.perf_counter()
            out = run_isolated(measure_step, cfg, point, opt.steps, opt.warmup, opt.seed, opt.threads)
            row = {"cfg": cfg, "axis": axis, **point, "wall_s": time.perf_counter() - t0, **out}
            rows.append(row)
            value = point[axis] if axis in axes else ""
            if "error" in out:
                print(f"{cfg:<28}{axis:>8}{value:>7}  failed: {out['error']}", flush=True)
                continue
            peak = "-" if out["peak_mb"] is None else f"{out['peak_mb']:.0f}"
            print(f"{cfg:<28}{axis:>8}{value:>7}{out['targets']:>8}{out['cpu_ms']:>9.0f}{out['wall_ms']:>9.0f}"
                  f"{out['faults']:>8.0f}{peak:>10}", flush=True)
    return rows


def repeat_noise(rows: list[dict]) -> dict:
    """cfg -> CPU time of the repeated base point / the first."""
    first = {r["cfg"]: r["cpu_ms"] for r in rows if r["axis"] == "base" and "error" not in r}
    return {r["cfg"]: r["cpu_ms"] / first[r["cfg"]] for r in rows
            if r["axis"] == "repeat" and "error" not in r and r["cfg"] in first}


def train_exponents(rows: list[dict], axes: dict, base: dict) -> dict:
    """cfg -> axis -> {time: {fit, tail}, memory: {fit, tail}} from the base point and the axis's points."""
    out = {}
    for cfg in dict.fromkeys(r["cfg"] for r in rows):
        ok = [r for r in rows if r["cfg"] == cfg and "error" not in r]
        out[cfg] = {}
        for axis in axes:
            pts = sorted((axis_x(axis, r[axis]), r) for r in ok if r["axis"] in ("base", axis))
            xs = [x for x, _ in pts]
            out[cfg][axis] = {"time": exponents(xs, [r["cpu_ms"] for _, r in pts]),
                              "memory": exponents(xs, [r["peak_mb"] for _, r in pts])}
    return out


# ------------------------------------------------------------------ assignment
def bench_assigners(opt: argparse.Namespace, objects: list[int], sizes: list[int]) -> list[dict]:
    rules = ["box_or_center" if r == "simota" else r for r in opt.assigners]
    print(f"\nassignment alone: batch 1, nc {BASE['nc']}, {opt.assign_runs} timed calls per point")
    print(f"{'rule':>15}{'objects':>8}{'max_gt':>7}{'priors':>8}{'CPU ms':>11}{'faults':>10}")
    rows = []
    for imgsz in sizes:
        priors = make_priors(imgsz, STRIDES)
        for n in objects:
            inputs = synthetic_batch(1, imgsz, BASE["nc"], n, priors, opt.seed)
            for rule in rules:
                f0 = minor_faults()
                times, num_fg = time_assign(inputs, opt.assign_runs, 1, rule, clock=time.process_time)
                row = {"rule": rule, "objects": n, "max_gt": int(inputs["gt_boxes"].shape[1]), "imgsz": imgsz,
                       "priors": int(priors.shape[0]), "num_fg": num_fg, "cpu_ms": statistics.median(times),
                       "faults": (minor_faults() - f0) / (opt.assign_runs + 1)}
                rows.append(row)
                print(f"{rule:>15}{n:>8}{row['max_gt']:>7}{row['priors']:>8}{row['cpu_ms']:>11.2f}{row['faults']:>10.0f}",
                      flush=True)
    return rows


def assigner_exponents(rows: list[dict]) -> dict:
    """rule -> objects (at the most priors), priors (at the most objects) and both (a plane over all points)."""
    out = {}
    for rule in dict.fromkeys(r["rule"] for r in rows):
        mine = [r for r in rows if r["rule"] == rule]
        most_priors, most_objects = max(r["priors"] for r in mine), max(r["objects"] for r in mine)
        by_obj = [r for r in mine if r["priors"] == most_priors]
        by_pri = [r for r in mine if r["objects"] == most_objects]
        a = np.array([[1.0, math.log(r["max_gt"]), math.log(r["priors"])] for r in mine])
        coef = np.linalg.lstsq(a, np.log([r["cpu_ms"] for r in mine]), rcond=None)[0]
        out[rule] = {"objects": exponents([r["max_gt"] for r in by_obj], [r["cpu_ms"] for r in by_obj]),
                     "priors": exponents([r["priors"] for r in by_pri], [r["cpu_ms"] for r in by_pri]),
                     "plane": {"objects": float(coef[1]), "priors": float(coef[2])}}
    return out


# ------------------------------------------------------------------ one convolution
def bench_conv(opt: argparse.Namespace, maps: list[int]) -> list[dict]:
    """CPU ns per output pixel of one 3x3 convolution (``CONV_CHANNELS`` in and out, channels_last, batch 1),
    forward and backward, by map size: the kernel behind the image-size tail."""
    print(f"\none {CONV_CHANNELS}->{CONV_CHANNELS} 3x3 convolution, channels_last, batch 1: CPU ns per pixel")
    print(f"{'map px':>8}{'MiB':>7}{'forward':>9}{'backward':>10}")
    torch.manual_seed(opt.seed)
    conv = torch.nn.Conv2d(CONV_CHANNELS, CONV_CHANNELS, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
    rows = []
    for hw in maps:
        x = torch.randn(1, CONV_CHANNELS, hw, hw).contiguous(memory_format=torch.channels_last).requires_grad_()
        fwd, bwd = [], []
        for _ in range(opt.steps + 1):  # the first call is not kept
            t0 = time.process_time()
            y = conv(x)
            t1 = time.process_time()
            y.backward(torch.ones_like(y))
            fwd.append(t1 - t0)
            bwd.append(time.process_time() - t1)
        row = {"map_px": hw, "map_mib": x.numel() * 4 / 2**20, "fwd_ns_px": statistics.median(fwd[1:]) * 1e9 / hw**2,
               "bwd_ns_px": statistics.median(bwd[1:]) * 1e9 / hw**2}
        rows.append(row)
        print(f"{hw:>8}{row['map_mib']:>7.1f}{row['fwd_ns_px']:>9.0f}{row['bwd_ns_px']:>10.0f}", flush=True)
    return rows


def conv_exponents(rows: list[dict]) -> dict:
    """Exponents of the conv's forward and backward time (not per pixel) against pixels."""
    px = [r["map_px"] ** 2 for r in rows]
    return {k: exponents(px, [r[f"{k}_ns_px"] * p for r, p in zip(rows, px)]) for k in ("fwd", "bwd")}


# ------------------------------------------------------------------ dataset size
def write_dataset(root: Path, n: int, seed: int) -> float:
    """``n`` image/label pairs under ``root`` (images/, labels/); seconds taken. Every image is the same tiny JPEG,
    encoded once and written ``n`` times."""
    import io

    from PIL import Image

    t0 = time.perf_counter()
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (TINY_IMAGE_PX, TINY_IMAGE_PX, 3), np.uint8)).save(buf, "jpeg", quality=90)
    jpeg = buf.getvalue()
    counts = rng.integers(1, 9, n)
    rows = np.concatenate((rng.integers(0, 8, (counts.sum(), 1)), rng.uniform(0.3, 0.7, (counts.sum(), 2)),
                           rng.uniform(0.05, 0.5, (counts.sum(), 2))), 1)
    lines = [f"{int(r[0])} {r[1]:.5f} {r[2]:.5f} {r[3]:.5f} {r[4]:.5f}\n" for r in rows]
    start = np.concatenate(([0], np.cumsum(counts)))
    for i in range(n):
        name = f"{i:06d}"
        (root / "images" / f"{name}.jpg").write_bytes(jpeg)
        (root / "labels" / f"{name}.txt").write_text("".join(lines[start[i]:start[i + 1]]))
    return time.perf_counter() - t0


def measure_dataset(root: Path, epoch: bool) -> dict:
    """Cold and warm dataset construction, the cache's size, and (``epoch``) one data-only epoch with mosaic."""
    from utils.data.dataloaders import LoadImagesAndLabels
    from utils.io.files import yaml_load

    out = {}
    for key in ("cold", "warm"):  # the first builds the cache, the second reads it
        t0, c0 = time.perf_counter(), time.process_time()
        LoadImagesAndLabels(root / "images", img_size=TINY_IMAGE_PX)
        out[f"{key}_s"], out[f"{key}_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    out["cache_bytes"] = (root / "labels.cache").stat().st_size
    if epoch:
        hyp = yaml_load(ROOT / "data" / "hyps" / "hyp.scratch-low.yaml")
        ds = LoadImagesAndLabels(root / "images", img_size=TINY_IMAGE_PX, augment=True, hyp=hyp)
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(len(ds)):
            ds[i]
        out["epoch_s"], out["epoch_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    return out


def bench_dataset(opt: argparse.Namespace, sizes: list[int]) -> list[dict]:
    print(f"\ndataset size: {TINY_IMAGE_PX} px images, 1-8 boxes each; construction cold (check + cache) and warm")
    print(f"{'images':>8}{'write s':>9}{'cold s':>8}{'CPU s':>8}{'warm s':>8}{'CPU s':>8}{'cache KiB':>11}"
          f"{'epoch s':>9}{'CPU s':>8}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="scaling-", dir=opt.workdir) as tmp:
        for n in sizes:
            root = Path(tmp) / f"n{n}"
            write_s = write_dataset(root, n, opt.seed)
            out = measure_dataset(root, n <= opt.epoch_max)
            rows.append({"images": n, "write_s": write_s, **out})
            ep = f"{out['epoch_s']:>9.1f}{out['epoch_cpu_s']:>8.1f}" if "epoch_s" in out else f"{'-':>9}{'-':>8}"
            print(f"{n:>8}{write_s:>9.1f}{out['cold_s']:>8.2f}{out['cold_cpu_s']:>8.2f}{out['warm_s']:>8.2f}"
                  f"{out['warm_cpu_s']:>8.2f}{out['cache_bytes'] / 1024:>11.0f}{ep}", flush=True)
            shutil.rmtree(root)
    return rows


def dataset_exponents(rows: list[dict]) -> dict:
    xs = [r["images"] for r in rows]
    out = {k: exponents(xs, [r[k] for r in rows]) for k in ("cold_cpu_s", "warm_cpu_s", "cache_bytes")}
    ep = [r for r in rows if "epoch_cpu_s" in r]
    out["epoch_cpu_s"] = exponents([r["images"] for r in ep], [r["epoch_cpu_s"] for r in ep])
    return out


# ------------------------------------------------------------------ report
def _fmt(e: dict | None) -> str:
    if not e or e.get("fit") is None:
        return "-"
    return f"{e['fit']:.2f} ({e['tail']:.2f})"


def print_table(result: dict) -> None:
    ex = result["exponents"]
    if ex.get("train"):
        axes = list(next(iter(ex["train"].values())))
        print("\nexponents of training-step time and peak memory, fit (tail); image size against pixels")
        print("| cfg | " + " | ".join(f"time {a}" for a in axes) + " | " + " | ".join(f"mem {a}" for a in axes) + " |")
        print("|---|" + "---|" * (2 * len(axes)))
        for cfg, per_axis in ex["train"].items():
            print(f"| {cfg} | " + " | ".join(_fmt(per_axis[a]["time"]) for a in axes) + " | "
                  + " | ".join(_fmt(per_axis[a]["memory"]) for a in axes) + " |")
    if ex.get("assigner"):
        print("\nexponents of assignment time, fit (tail): objects at the most priors, priors at the most objects")
        for rule, e in ex["assigner"].items():
            plane = e["plane"]
            print(f"{rule:>15}  objects {_fmt(e['objects']):>13}  priors {_fmt(e['priors']):>13}  "
                  f"plane {plane['objects']:.2f} / {plane['priors']:.2f}")
    if ex.get("dataset"):
        print("\nexponents against dataset size, fit (tail): " + ", ".join(
            f"{k} {_fmt(v)}" for k, v in ex["dataset"].items()))
    if ex.get("conv"):
        print("\nexponents of one convolution against pixels, fit (tail): " + ", ".join(
            f"{k} {_fmt(v)}" for k, v in ex["conv"].items()))
    if result.get("noise"):
        print("\nnoise: the base point measured again at the end, CPU time repeat / first: " + ", ".join(
            f"{cfg} {v:.2f}" for cfg, v in result["noise"].items()))
    for line in superlinear(ex):
        print(line)


def superlinear(ex: dict) -> list[str]:
    """One line per tail slope above ``SUPERLINEAR``, with the measured cause where one is known."""
    found = [(f"{cfg} {axis}", e["time"]["tail"], axis) for cfg, per_axis in ex.get("train", {}).items()
             for axis, e in per_axis.items()]
    found += [(f"{rule} {axis}", e[axis]["tail"], "assigner") for rule, e in ex.get("assigner", {}).items()
              for axis in ("objects", "priors")]
    found += [(f"dataset {k}", e["tail"], "dataset") for k, e in ex.get("dataset", {}).items()]
    lines = [f"  {name}: tail {tail:.2f}" for name, tail, _ in found if tail is not None and tail > SUPERLINEAR]
    causes = {kind for _, tail, kind in found if tail is not None and tail > SUPERLINEAR}
    if not lines:
        return []
    return ["\nsuper-linear tails (> %.1f):" % SUPERLINEAR, *lines,
            *(f"  cause ({k}): {CAUSES.get(k, 'not yet explained')}" for k in sorted(causes))]


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _loglog(ax, xlabel: str, ylabel: str) -> None:
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)


def _plot_train(grid, result: dict) -> None:
    """Rows 0 and 1: step CPU time and peak RSS growth against each axis, one line per cfg."""
    rows = [r for r in result["train"] if "error" not in r]
    for j, axis in enumerate(result["axes"]):
        for k, (key, label) in enumerate((("cpu_ms", "step CPU ms"), ("peak_mb", "peak RSS growth MiB"))):
            for cfg in dict.fromkeys(r["cfg"] for r in rows):
                pts = sorted((r[axis], r[key]) for r in rows if r["cfg"] == cfg and r["axis"] in ("base", axis))
                grid[k, j].plot(*zip(*pts), marker="o", label=cfg.removesuffix(".yaml") if j == 0 else None)
            _loglog(grid[k, j], "image side px" if axis == "imgsz" else axis, label)


def _plot_assign(ax_objects, ax_priors, rows: list[dict]) -> None:
    for rule in dict.fromkeys(r["rule"] for r in rows):
        mine = [r for r in rows if r["rule"] == rule]
        top_p, top_o = max(r["priors"] for r in mine), max(r["objects"] for r in mine)
        ax_objects.plot(*zip(*sorted((r["max_gt"], r["cpu_ms"]) for r in mine if r["priors"] == top_p)),
                        marker="o", label=f"{rule}, {top_p} priors")
        ax_priors.plot(*zip(*sorted((r["priors"], r["cpu_ms"]) for r in mine if r["objects"] == top_o)),
                       marker="o", label=f"{rule}, ~{top_o} objects")
    _loglog(ax_objects, "objects (padded G)", "assignment CPU ms")
    _loglog(ax_priors, "predictions (priors)", "assignment CPU ms")


def _plot_dataset(ax_time, ax_size, rows: list[dict]) -> None:
    for key, label in (("cold_cpu_s", "cold (check + cache)"), ("warm_cpu_s", "warm (cache read)"),
                       ("epoch_cpu_s", "data-only epoch")):
        pts = [(r["images"], r[key]) for r in rows if key in r]
        if pts:
            ax_time.plot(*zip(*pts), marker="o", label=label)
    if rows:
        ax_size.plot([r["images"] for r in rows], [r["cache_bytes"] / 1024 for r in rows], marker="o")
    _loglog(ax_time, "images", "CPU s")
    _loglog(ax_size, "images", "label cache KiB")


def _plot_conv(ax, rows: list[dict]) -> None:
    for key, label in (("fwd_ns_px", "forward"), ("bwd_ns_px", "backward")):
        if rows:
            ax.plot([r["map_px"] for r in rows], [r[key] for r in rows], marker="o", label=label)
    _loglog(ax, f"map side px ({CONV_CHANNELS}->{CONV_CHANNELS} 3x3 conv)", "CPU ns per pixel")


def plot(result: dict, path: Path) -> None:
    """Log-log panels: step time and peak memory per axis (one line per cfg); assignment; dataset; the conv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(3, 5, figsize=(22, 12))
    _plot_train(grid, result)
    for k in (0, 1):
        grid[k, 4].axis("off")
    _plot_assign(grid[2, 0], grid[2, 1], result["assigner"])
    _plot_dataset(grid[2, 2], grid[2, 3], result["dataset"])
    _plot_conv(grid[2, 4], result["conv"])
    meta = result["meta"]
    fig.suptitle(f"How cost grows (CPU time; torch {meta['torch']}, {meta['threads']} thread(s), load average "
                 f"{meta['load_start']} -> {meta['load_end']})")
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cfg", nargs="+", default=DEFAULT_CFGS, help="model configs, one per head family")
    ap.add_argument("--parts", nargs="+", default=PARTS, choices=PARTS)
    ap.add_argument("--axes", nargs="+", default=list(AXES), choices=list(AXES), help="training-step axes to move")
    ap.add_argument("--quick", action="store_true", help="two small points per axis, two timed steps (seconds)")
    ap.add_argument("--steps", type=int, default=None, help="timed training steps per point (default 3; quick 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1)")
    ap.add_argument("--assigners", nargs="+", default=[a for a in ("simota", "dsl", "tal") if a in ASSIGNERS])
    ap.add_argument("--assign-runs", type=int, default=None, help="timed calls per point (default 5; quick 1)")
    ap.add_argument("--dataset-sizes", type=int, nargs="+", default=None, help="images (default 1k 10k 100k)")
    ap.add_argument("--epoch-max", type=int, default=10000, help="data-only epochs only up to this many images")
    ap.add_argument("--workdir", default=SHM if os.path.isdir(SHM) else None,
                    help=f"where the generated datasets go (default: {SHM}, a RAM disk, where it exists; else the temp "
                         "folder)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--json", default=str(ROOT / "runs" / "bench" / "scaling.json"))
    ap.add_argument("--plot", default=None, help="PNG path (default: beside --json, scaling.png); 'none' skips it")
    opt = ap.parse_args(argv)
    opt.steps = opt.steps or (2 if opt.quick else 3)
    opt.warmup = 1 if opt.warmup is None else opt.warmup
    opt.assign_runs = opt.assign_runs or (1 if opt.quick else 5)
    opt.dataset_sizes = opt.dataset_sizes or (QUICK_DATASET_SIZES if opt.quick else DATASET_SIZES)
    return opt


def main(argv: list[str] | None = None) -> dict:
    opt = parse_args(argv)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    axes, base = (QUICK_AXES, QUICK_BASE) if opt.quick else (AXES, BASE)
    axes = {a: v for a, v in axes.items() if a in opt.axes}
    t0 = time.perf_counter()
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or
            platform.machine(), "cpus": os.cpu_count(), "load_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
            "quick": opt.quick, "steps": opt.steps, "warmup": opt.warmup, "memory": "fork per point, ru_maxrss "
            "growth after the model, optimizer and batch are built"}
    print(f"CPU {meta['cpu']} x{meta['cpus']}, torch {meta['torch']}, {meta['threads']} thread(s), "
          f"load average {meta['load_start']}")
    result = {"meta": meta, "axes": axes, "base": base, "train": [], "assigner": [], "dataset": [], "conv": []}
    if "train" in opt.parts:
        result["train"] = bench_train(opt, axes, base)
    if "assigner" in opt.parts:
        sizes = (QUICK_ASSIGN_OBJECTS, QUICK_ASSIGN_IMGSZ) if opt.quick else (ASSIGN_OBJECTS, ASSIGN_IMGSZ)
        result["assigner"] = bench_assigners(opt, *sizes)
    if "dataset" in opt.parts:
        result["dataset"] = bench_dataset(opt, opt.dataset_sizes)
    if "conv" in opt.parts:
        result["conv"] = bench_conv(opt, QUICK_CONV_MAPS if opt.quick else CONV_MAPS)
    meta["load_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    meta["wall_s"] = time.perf_counter() - t0
    result["exponents"] = {"train": train_exponents(result["train"], axes, base) if result["train"] else {},
                           "assigner": assigner_exponents(result["assigner"]) if result["assigner"] else {},
                           "dataset": dataset_exponents(result["dataset"]) if result["dataset"] else {},
                           "conv": conv_exponents(result["conv"]) if result["conv"] else {}}
    result["noise"] = repeat_noise(result["train"])
    print_table(result)
    out = Path(opt.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nload average {meta['load_start']} -> {meta['load_end']}, {meta['wall_s'] / 60:.1f} min; wrote {out}")
    if opt.plot != "none":
        png = Path(opt.plot) if opt.plot else out.with_suffix(".png")
        plot(result, png)
        print(f"wrote {png}")
    return result


if __name__ == "__main__":
    main()
