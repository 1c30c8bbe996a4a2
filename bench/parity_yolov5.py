"""Does our train.py train yolov5n like YOLOv5 v7.0's own train.py? Both, several seeds each, on one generated set.

    python bench/parity_yolov5.py --yolov5 .refvenv/lib/python3.11/site-packages/yolov5 --python .refvenv/bin/python
    python bench/parity_yolov5.py ... --sides ours --ours-root ../headzoo-old --ours-tag ours-old   # another checkout
    python bench/parity_yolov5.py ... --report-only                                               # tables only

Each side's own train.py, default flags but for the shared recipe: yolov5n from scratch, ``--imgsz`` 320, batch 16,
``--epochs`` 10, SGD with hyp.scratch-low, one process per run with ``--threads`` torch threads (``--jobs`` runs at
once). Ours runs with YOLOv5's EMA (``--ema-decay 0.9999 --ema-tau 2000``) so that both sides follow one recipe;
``--ours-args`` adds or overrides flags. The data: the built-in dataset's generator settings (data/shapes.yaml) at
``--imgsz`` px with ``--n-train`` / ``--n-val`` images, written once under ``--project``. Runs are resumable: a run whose results.csv has every
epoch is skipped, an unfinished one is trained again from scratch.

Prints and writes (``<project>/parity.md``, ``parity.json``) per side and seed the final epoch's val mAP50,
mAP50-95 and training box/obj/cls losses, and per side their mean and sample standard deviation. The val mAP is
given twice: as each train.py logged it, and with one validator for both sides (our val.py, PyTorch, on each run's
last.pt; cached in ``<run>/val_one_validator.json``). The second is the one to compare: YOLOv5 v7.0's NMS gives up
after 0.5 + 0.05 x batch seconds ("NMS time limit ... exceeded"; the count per run is in the table) and the images
of the batch it had not reached get no detections, which on a slow or loaded CPU costs most of its mAP.

Nothing is downloaded: bench/README.md says how to set up the YOLOv5 environment (``--python``).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils.data.dataloaders import check_dataset  # noqa: E402
from utils.io.files import yaml_read  # noqa: E402

# results.csv columns of the two train.py's: (YOLOv5 v7.0 name, ours)
COLUMNS = {"box": ("train/box_loss", "train/box_loss"), "obj": ("train/obj_loss", "train/obj_loss"),
           "cls": ("train/cls_loss", "train/cls_loss"), "mAP50": ("metrics/mAP_0.5", "metrics/mAP_0.5"),
           "mAP50-95": ("metrics/mAP_0.5:0.95", "metrics/mAP_0.5:0.95")}
# YOLOv5 v7.0 pickles modules into its checkpoints; torch >= 2.6 loads weights only unless told otherwise
REF_ENV = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


def make_data(project: Path, imgsz: int, n_train: int, n_val: int) -> tuple[Path, Path]:
    """The generated set (the built-in dataset's generator settings, data/shapes.yaml, at ``imgsz`` with ``n_train``
    / ``n_val`` images), and a data YAML for each side (YOLOv5's has no ``generate`` section)."""
    builtin = yaml_read(ROOT / "data" / "shapes.yaml")
    generate = {**builtin["generate"], "imgsz": imgsz, "n_train": n_train, "n_val": n_val, "video_seconds": 0}
    spec = {"path": str(project / f"shapes{n_train}-{imgsz}"), "train": "images/train", "val": "images/val",
            "names": builtin["names"], "generate": generate}
    ours = project / "data-ours.yaml"
    ours.write_text(yaml.safe_dump(spec, sort_keys=False))
    check_dataset(str(ours))  # generated here, once, for both sides
    ref = project / "data-yolov5.yaml"
    ref.write_text(yaml.safe_dump({k: spec[k] for k in ("path", "train", "val", "names")}, sort_keys=False))
    return ours, ref


def read_results(csv_file: Path) -> list[dict[str, float]]:
    """results.csv rows of either train.py (both pad names and values with spaces)."""
    if not csv_file.is_file():
        return []
    with open(csv_file, newline="") as f:
        return [{k.strip(): float(v) for k, v in row.items() if k is not None and v not in (None, "")}
                for row in csv.DictReader(f)]


def run_one(side: str, seed: int, cmd: list[str], run_dir: Path, epochs: int, env: dict, cwd: Path) -> str:
    if len(read_results(run_dir / "results.csv")) >= epochs:
        return f"{side} seed {seed}: finished earlier, skipped"
    t0 = time.time()
    log = run_dir.parent / f"{run_dir.name}.log"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    if p.returncode:
        return f"{side} seed {seed}: FAILED (exit {p.returncode}), see {log}"
    return f"{side} seed {seed}: {time.time() - t0:.0f} s"


def one_validator(run: Path, data: Path, imgsz: int) -> dict[str, float]:
    """The run's last.pt through our val.py (PyTorch: no export; no NMS time limit), once."""
    cached = run / "val_one_validator.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    import val as validate  # late: only the runs' re-validation needs it

    r = validate.run(str(data), weights=str(run / "weights" / "last.pt"), batch_size=32, imgsz=imgsz, workers=0,
                     backend="torch", plots=False, save_dir=run / "val_one_validator")
    out = {"mAP50 (val.py)": float(r.map50), "mAP50-95 (val.py)": float(r.map)}
    cached.write_text(json.dumps(out))
    return out


def summarise(project: Path, sides: list[str], seeds: list[int], epochs: int, data: Path, imgsz: int) -> dict:
    out = {}
    for side in sides:
        rows = {}
        for seed in seeds:
            run = project / side / f"seed{seed}"
            res = read_results(run / "results.csv")
            if len(res) >= epochs:
                k = 0 if side == "yolov5" else 1
                rows[seed] = {name: res[epochs - 1][cols[k]] for name, cols in COLUMNS.items()}
                rows[seed].update(one_validator(run, data, imgsz))
                log = run.parent / f"{run.name}.log"
                rows[seed]["nms_limit"] = log.read_text(errors="replace").count("NMS time limit") if log.is_file() else 0
        stats = {}
        for name in [*COLUMNS, "mAP50 (val.py)", "mAP50-95 (val.py)"]:
            v = np.array([r[name] for r in rows.values()])
            stats[name] = {"mean": float(v.mean()) if len(v) else None,
                           "std": float(v.std(ddof=1)) if len(v) > 1 else None}
        out[side] = {"seeds": rows, "stats": stats}
    return out


def write_report(project: Path, summary: dict, opt: argparse.Namespace) -> str:
    head = (f"yolov5n from scratch, {opt.n_train} generated images at {opt.imgsz} px ({opt.n_val} val), batch 16, "
            f"{opt.epochs} epochs, hyp.scratch-low, {opt.threads} torch thread(s) per run; final epoch's figures")
    lines = [head, "", "| side | seed | val.py mAP50 | val.py mAP50-95 | logged mAP50 | logged mAP50-95 | NMS time "
                       "limits hit | train box | train obj | train cls |", "|---|---|---|---|---|---|---|---|---|---|"]
    for side, s in summary.items():
        for seed, r in s["seeds"].items():
            lines.append(f"| {side} | {seed} | {r['mAP50 (val.py)']:.4f} | {r['mAP50-95 (val.py)']:.4f} | "
                         f"{r['mAP50']:.4f} | {r['mAP50-95']:.4f} | {r['nms_limit']} | {r['box']:.5f} | "
                         f"{r['obj']:.5f} | {r['cls']:.5f} |")
    lines += ["", "| side | seeds | val.py mAP50 | val.py mAP50-95 | logged mAP50 | logged mAP50-95 | train box | "
                  "train obj | train cls |", "|---|---|---|---|---|---|---|---|---|"]
    for side, s in summary.items():
        def f(name, digits):
            m, sd = s["stats"][name]["mean"], s["stats"][name]["std"]
            return "-" if m is None else f"{m:.{digits}f}" + ("" if sd is None else f" ± {sd:.{digits}f}")
        lines.append(f"| {side} | {','.join(map(str, s['seeds'])) or '-'} | {f('mAP50 (val.py)', 3)} | "
                     f"{f('mAP50-95 (val.py)', 3)} | {f('mAP50', 3)} | {f('mAP50-95', 3)} | "
                     f"{f('box', 5)} | {f('obj', 5)} | {f('cls', 5)} |")
    text = "\n".join(lines) + "\n(mean ± sample std over the seeds)\n"
    (project / "parity.md").write_text(text)
    (project / "parity.json").write_text(json.dumps(summary, indent=1))
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--yolov5", default="", help="YOLOv5 v7.0 checkout or the yolov5 pip package's folder")
    ap.add_argument("--python", default=sys.executable, help="interpreter that can import that YOLOv5")
    ap.add_argument("--sides", nargs="+", default=["yolov5", "ours"], choices=["yolov5", "ours"])
    ap.add_argument("--ours-root", default=str(ROOT), help="the HeadZoo checkout whose train.py is 'ours'")
    ap.add_argument("--ours-tag", default="ours", help="folder and table name of our side (e.g. ours-old)")
    ap.add_argument("--ours-args", default="--ema-decay 0.9999 --ema-tau 2000", help="extra flags of our train.py")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-val", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once")
    ap.add_argument("--project", default=str(ROOT / "runs" / "parity"))
    ap.add_argument("--report-only", action="store_true", help="train nothing; tables from the finished runs")
    opt = ap.parse_args()
    project = Path(opt.project).resolve()
    opt.python = str(Path(opt.python).expanduser().absolute()) if os.sep in opt.python else opt.python
    project.mkdir(parents=True, exist_ok=True)
    ours_yaml, ref_yaml = make_data(project, opt.imgsz, opt.n_train, opt.n_val)
    env = {**os.environ, "OMP_NUM_THREADS": str(opt.threads), "MKL_NUM_THREADS": str(opt.threads)}
    common = ["--cfg", "yolov5n.yaml", "--weights", "", "--img", str(opt.imgsz), "--batch-size", "16",
              "--epochs", str(opt.epochs), "--device", "cpu", "--exist-ok", "--noplots"]
    sides = [("yolov5" if s == "yolov5" else opt.ours_tag) for s in opt.sides]
    jobs = []
    for seed in opt.seeds:
        for side in sides:
            run_dir = project / side / f"seed{seed}"
            if side == "yolov5":
                folder = Path(opt.yolov5).expanduser().resolve()
                if not (folder / "train.py").is_file():
                    sys.exit(f"--yolov5 {folder}: not a YOLOv5 folder (train.py missing); see bench/README.md")
                cmd = [opt.python, str(folder / "train.py"), "--data", str(ref_yaml), *common, "--seed", str(seed),
                       "--project", str(run_dir.parent), "--name", run_dir.name]
                jobs.append((side, seed, cmd, run_dir, opt.epochs, {**REF_ENV, **env}, project))
            else:
                root = Path(opt.ours_root).resolve()
                cmd = [sys.executable, str(root / "train.py"), "--data", str(ours_yaml), *common, "--seed", str(seed),
                       "--project", str(run_dir.parent), "--name", run_dir.name, *opt.ours_args.split()]
                jobs.append((side, seed, cmd, run_dir, opt.epochs, env, root))
    if not opt.report_only:
        print(f"{len(jobs)} runs, {opt.jobs} at once, {opt.threads} thread(s) each; logs beside the run folders "
              f"in {project}", flush=True)
        with ThreadPoolExecutor(opt.jobs) as pool:
            for msg in pool.map(lambda j: run_one(*j), jobs):
                print(msg, flush=True)
    print(write_report(project, summarise(project, sides, opt.seeds, opt.epochs, ours_yaml, opt.imgsz), opt))


if __name__ == "__main__":
    main()
