"""A/B-compare model configs on one training pipeline, with the run-to-run noise measured.

    python compare.py --cfg yolov5n.yaml yolov5n-decoupled.yaml yolov5n-decoupled-af.yaml --epochs 30 --seeds 3
    python compare.py --cfg yolov5n.yaml yolov5n-decoupled.yaml --data my.yaml --imgsz 320 --seeds 2 [train.py flags]
    python compare.py --resume              # finish the newest runs/compare/exp*: skip done runs, resume the rest
    python compare.py --cfg ... --jobs 2    # train 2 runs at once, each in its own process (CPU: 1 thread each)
    python compare.py --cfg ... --device 0,1,2,3   # 4 runs at once, one per GPU
    python compare.py --cfg yolov5n-decoupled.yaml 'yolov5n-decoupled.yaml --precise-bn 0'   # an arm's own flags
    python compare.py --cfg yolov5n.yaml yolov5n-decoupled.yaml yolov5n-decoupled-af.yaml \
        --pairs yolov5n-decoupled-af:yolov5n-decoupled   # also report af minus decoupled, beside each vs the first

Every arm is trained by train.py's Trainer with the same data, hyp, schedule and image size: any flag of train.py
is passed through and applied to every arm alike; only the model YAML differs, unless an arm carries flags of its
own (``'cfg.yaml --flag value'`` in one quoted argument; its folder is then ``<cfg stem>_flag_value``). For seed s (0 .. --seeds - 1) every
arm runs with ``--seed s``, so arms see the same images in the same order with the same augmentation draws, and rows
the cfgs share (backbone, neck) start from the same initial weights: the runs of one seed are a pair. Runs land in
``runs/compare/exp{N}/<cfg stem>/seed<s>/`` (train.py's run layout inside) plus ``compare.json`` per run (seconds
per epoch, a hash of each epoch's first batch). A re-run with ``--name expN --exist-ok`` or ``--resume`` skips
finished runs and resumes interrupted ones from their last.pt. With ``--jobs N`` up to N runs train at once, each in
its own process with (usable cores // N) torch threads, no loader workers (train.py's CPU rule on that share), and
its output in ``<run>/train.log``: small models use CPU cores poorly, so on a 2-core CPU two one-thread runs finish
a comparison ~1.3x sooner than one two-thread run at a time (the report's train seconds per epoch are then those
of a shared machine). With ``--device 0,1,2,3`` (several GPUs) the runs are spread over the GPUs: max(--jobs,
number of GPUs) at once, each run on one GPU, the least busy.

The report (report.md, report.csv, map_vs_epoch.png, loss_curves.png, speed_accuracy.png in the exp folder) has,
per cfg, parameters and GFLOPs (thop at the run's imgsz, unfused), latency (batch 1, fused, median), train seconds
per epoch and final/best mAP as mean ± std over seeds; per cfg against the first, the paired difference in final
mAP50-95 with a 95% t-interval and a verdict (better / worse / within noise), see utils/stats.py, the val-image
bootstrap beside it, and the TIDE error breakdown; ``--pairs ARM:BASE`` adds the same figures for other pairs.
"""
from __future__ import annotations

import argparse
import csv
import gc
import hashlib
import json
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import shlex
import sys
import time
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

import train
import val as validate
from models.yolo import DetectionModel
from utils.evaluation.bootstrap import BootstrapResult, match_images, paired_bootstrap
from utils.evaluation.metrics import fitness
from utils.evaluation.stats import PairedDifference, mean_std, paired_difference
from utils.evaluation.tide import ERRORS, TideResult, tide_errors
from utils.io.checkpoint import load_checkpoint
from utils.io.files import increment_path, yaml_load, yaml_save
from utils.torch_utils import CPUS_ENV, LOGGER, time_sync, usable_cpus
from utils.training.hooks import EpochEnd, Hook

ROOT = Path(__file__).resolve().parent
RECORD = "compare.json"  # per run: imgsz, and per epoch train/val seconds and the first batch's hash
VERB = {"new": "training", "interrupted": "resuming interrupted run"}  # run_state -> what train_all does
SET_BY_COMPARE = ("cfg", "seed", "project", "name", "exist_ok", "resume")  # train.py options compare.py owns


# ---------------------------------------------------------------------------------------------
# Options and the experiment folder
# ---------------------------------------------------------------------------------------------
def parse_opt(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """compare.py's own options, and the rest (train.py flags, checked by train.py's parser)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--cfg", nargs="+", default=None,
                   help="model YAMLs, the first the baseline of the pairs; an arm may carry its own train.py flags "
                        "in one quoted argument: 'yolov5n-decoupled.yaml --precise-bn 0'")
    p.add_argument("--seeds", type=int, default=3, help="seeds per cfg: 0 .. seeds-1, the same for every cfg")
    p.add_argument("--project", default=str(ROOT / "runs" / "compare"))
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true", help="reuse project/name: skip finished runs, resume the rest")
    p.add_argument("--resume", nargs="?", const=True, default=False,
                   help="finish the newest compare folder (or the one given) with its own cfgs, seeds and flags")
    p.add_argument("--latency-runs", type=int, default=50, help="timed forwards per cfg and device (0: skip)")
    p.add_argument("--budget-epochs", type=int, default=None,
                   help="every arm trains this many epochs (the default rule; the same as --epochs N)")
    p.add_argument("--budget-time", type=float, default=None, metavar="MIN",
                   help="every arm trains for MIN minutes of wall-clock (train + val), stopping at the first epoch "
                        "end past it; the LR schedule stays planned over --epochs")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="paired bootstrap resamples of the val images per seed and pair (0: skip)")
    p.add_argument("--pairs", nargs="+", default=[], metavar="ARM:BASE",
                   help="more pairs for the report, beside every arm against the first: ARM minus BASE, each an arm "
                        "of --cfg by its cfg or folder name, e.g. yolov5n-decoupled-af:yolov5n-decoupled")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once, each in its own process (usable cores // jobs torch threads, output in "
                        "<run>/train.log)")
    opt, train_args = p.parse_known_args(argv)
    if not opt.resume and not opt.cfg:
        p.error("give the cfgs to compare: --cfg yolov5n.yaml yolov5n-decoupled.yaml (or --resume)")
    if opt.seeds < 1:
        p.error(f"--seeds must be >= 1, got {opt.seeds}")
    if opt.jobs < 1:
        p.error(f"--jobs must be >= 1, got {opt.jobs}")
    if opt.budget_time is not None and opt.budget_time <= 0:
        p.error(f"--budget-time must be > 0 minutes, got {opt.budget_time}")
    if opt.budget_epochs is not None:
        if opt.budget_epochs < 1:
            p.error(f"--budget-epochs must be >= 1, got {opt.budget_epochs}")
        train_args = [*train_args, "--epochs", str(opt.budget_epochs)]  # equal epochs: train.py's own flag
    return opt, train_args


def train_recipe(train_args: list[str]) -> dict:
    """train.py's options for ``train_args`` without the ones compare.py sets per run; an error when the
    caller tried to set one of those (they would break the pairing or the run layout)."""
    given, default = vars(train.parse_opt(train_args)), vars(train.parse_opt([]))
    owned = [k for k in SET_BY_COMPARE if given[k] != default[k]]
    if owned:
        raise ValueError(f"compare.py sets {', '.join('--' + k.replace('_', '-') for k in owned)} itself: "
                         f"use --seeds N (seeds 0..N-1), --project/--name/--exist-ok/--resume of compare.py")
    return {k: str(v) if isinstance(v, Path) else v for k, v in given.items() if k not in SET_BY_COMPARE}


def newest_experiment(project: Path) -> Path:
    found = sorted(project.glob("*/compare.yaml"), key=os.path.getmtime)
    if not found:
        raise FileNotFoundError(f"--resume: no compare.yaml below {project}; give the folder, e.g. "
                                f"--resume runs/compare/exp2")
    return found[-1].parent


def setup_experiment(opt: argparse.Namespace, train_args: list[str]) -> tuple[Path, dict]:
    """The exp folder and its plan ``{cfg, seeds, train_args, recipe}``, saved as compare.yaml. A reused folder
    must have been made with the same train.py recipe (cfgs and seeds may grow)."""
    if opt.resume:
        exp = newest_experiment(Path(opt.project)) if opt.resume is True else Path(opt.resume)
        if not (exp / "compare.yaml").is_file():
            raise FileNotFoundError(f"--resume {opt.resume}: {exp / 'compare.yaml'} not found")
        plan = yaml_load(exp / "compare.yaml")
        if train_args or opt.cfg:
            LOGGER.warning(f"--resume: using the cfgs, seeds and train.py flags of {exp / 'compare.yaml'}; "
                           f"ignoring {' '.join((opt.cfg or []) + train_args)}")
        return exp, plan
    exp = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
    stems = [arm_name(c) for c in opt.cfg]
    if len(set(stems)) != len(stems):
        raise ValueError(f"--cfg {' '.join(opt.cfg)}: two arms share a name (cfg file stem + own flags); runs are "
                         f"stored by it")
    for arm in opt.cfg:
        train_recipe(split_arm(arm)[1])  # an arm's own flags are train.py flags too, and may not set seed etc.
    plan = {"cfg": list(opt.cfg), "seeds": opt.seeds, "train_args": list(train_args),
            "recipe": train_recipe(train_args), "budget_min": opt.budget_time}
    old = exp / "compare.yaml"
    if old.is_file():
        before = {**train_recipe([]), **yaml_load(old).get("recipe", {})}  # a flag added since: its default then
        diff = sorted(k for k in set(before) | set(plan["recipe"]) if before.get(k) != plan["recipe"].get(k))
        if diff:
            changes = "; ".join(f"{k}: {before.get(k)!r} then, {plan['recipe'].get(k)!r} now" for k in diff)
            raise ValueError(f"{old} was made with other train.py options ({changes}); runs of another recipe "
                             f"are not paired: use a new --name")
    exp.mkdir(parents=True, exist_ok=True)
    yaml_save(old, plan)
    return exp, plan


# ---------------------------------------------------------------------------------------------
# One run: its state on disk, and training it (new, or resumed from last.pt)
# ---------------------------------------------------------------------------------------------
def read_results(path: Path) -> list[dict[str, float]]:
    """Rows of a YOLOv5-style results.csv (padded headers stripped) as floats; [] when there is none."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        return [{k.strip(): float(v) for k, v in row.items() if k is not None} for row in rows]
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: unreadable row ({e}); delete the run folder to retrain it") from e


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch stored in a checkpoint (-1 when training finished), None when there is no file."""
    return int(load_checkpoint(path).get("epoch", -1)) if path.is_file() else None


def run_state(run: Path, epochs: int) -> str:
    """'finished' (results.csv has every epoch and best.pt exists, or training stopped early and stripped
    last.pt), 'interrupted' (last.pt holds a resumable epoch) or 'new'."""
    weights = run / "weights"
    logged = {int(r["epoch"]) for r in read_results(run / "results.csv")}
    if (weights / "best.pt").is_file() and set(range(epochs)) <= logged:
        return "finished"
    last_epoch = checkpoint_epoch(weights / "last.pt")
    if last_epoch is None:
        return "new"
    return "finished" if last_epoch < 0 else "interrupted"


def batch_digest(imgs: torch.Tensor, targets: torch.Tensor, paths) -> str:
    """sha1 of a batch's image names, targets and pixels: equal digests mean the same data and augmentation."""
    h = hashlib.sha1("\n".join(Path(p).name for p in paths).encode())
    h.update(targets.detach().cpu().float().numpy().tobytes())
    h.update(imgs.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _FirstBatchDigest:
    """Wraps the train loader: yields its batches unchanged and keeps the digest of each pass's first batch."""

    def __init__(self, loader):
        self.loader, self.num_workers, self.digest = loader, loader.num_workers, None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == 0:
                self.digest = batch_digest(*batch[:3])
            yield batch


class Recorder(Hook):
    """Writes ``compare.json`` beside results.csv after every epoch: the train and val seconds of the epoch and
    the digest of its first batch (the pairing check); with ``budget_min``, the --budget-time check: the run's
    train + val seconds so far (resumed epochs included) against the budget; past it, the run stops after this
    epoch as an early stop does (saved by the Checkpointer, which runs after this hook)."""

    def __init__(self, budget_min: float | None = None):
        self.budget_s = None if budget_min is None else 60 * float(budget_min)
        self.record: dict = {}
        self.record_file: Path | None = None

    def before_train(self, trainer: train.Trainer) -> None:
        self.record_file = trainer.save_dir / RECORD
        old = json.loads(self.record_file.read_text()) if trainer.opt.resume and self.record_file.is_file() else {}
        self.record = {"imgsz": trainer.imgsz, "device": str(trainer.device), "epochs": old.get("epochs", {})}
        trainer.train_loader = _FirstBatchDigest(trainer.train_loader)

    def after_epoch(self, trainer: train.Trainer, end: EpochEnd) -> None:
        self.record["epochs"][str(end.epoch)] = {"train_s": end.train_s, "first_batch_sha1": trainer.train_loader.digest,
                                                 "val_s": end.val_s, "precise_bn_s": end.bn_s}
        if self.budget_s is not None:
            used = sum(e.get("train_s", 0.0) + e.get("val_s", 0.0) for e in self.record["epochs"].values())
            stopped = bool(used >= self.budget_s and not end.final)
            self.record["budget"] = {"minutes": self.budget_s / 60, "used_s": used, "epochs_reached": end.epoch + 1,
                                     "stopped": stopped}
            if stopped and not end.stop:
                LOGGER.info(f"--budget-time: {used / 60:.2f} of {self.budget_s / 60:g} min used after epoch "
                            f"{end.epoch}: stopping")
            end.stop = end.stop or stopped
        tmp = self.record_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.record, indent=1))
        os.replace(tmp, self.record_file)


def split_arm(arm: str) -> tuple[str, list[str]]:
    """An arm of --cfg: a model YAML, optionally followed (in one quoted argument) by train.py flags for this
    arm only: ``"yolov5n-decoupled.yaml --precise-bn 0"`` -> ``("yolov5n-decoupled.yaml", ["--precise-bn", "0"])``."""
    parts = shlex.split(arm)
    if not parts:
        raise ValueError("--cfg: an empty arm")
    return parts[0], parts[1:]


def arm_name(arm: str) -> str:
    """Folder and label of an arm: the cfg's file stem, then its own flags (``yolov5n-decoupled_precise-bn_0``)."""
    cfg, flags = split_arm(arm)
    return "_".join([Path(cfg).stem, *(re.sub(r"[^\w.+-]", "", f.lstrip("-")) for f in flags)])


def resolve_pairs(pairs: list[str], cfgs: list[str]) -> list[tuple[str, str]]:
    """``--pairs ARM:BASE`` items -> (arm, base) cfgs of ``cfgs``; each side named by its cfg as given or its
    folder name (``arm_name``). An error names the item and the arms there are."""
    names = {**{arm_name(c): c for c in cfgs}, **{c: c for c in cfgs}}
    out = []
    for item in pairs:
        arm, sep, base = item.rpartition(":")
        if not sep or arm not in names or base not in names or names[arm] == names[base]:
            raise ValueError(f"--pairs {item}: expected ARM:BASE, two different arms of --cfg "
                             f"({', '.join(arm_name(c) for c in cfgs)})")
        out.append((names[arm], names[base]))
    return out


def run_dir(exp: Path, cfg: str, seed: int) -> Path:
    return exp / arm_name(cfg) / f"seed{seed}"


def gpu_list(device: str) -> list[str]:
    """The CUDA indices of a --device that lists several (``'0,1,2,3'`` -> ``['0', '1', '2', '3']``), else []."""
    ids = [x.strip() for x in str(device).lower().replace("cuda:", "").split(",") if x.strip()]
    return ids if len(ids) > 1 and all(x.isdigit() for x in ids) else []


def least_busy(gpus: list[str], busy: list[str]) -> str:
    """The GPU of ``gpus`` with the fewest runs in ``busy`` (the GPUs of the running runs), the first on a tie."""
    return min(gpus, key=busy.count)


def train_run(exp: Path, cfg: str, seed: int, train_args: list[str], state: str, device: str | None = None,
              budget_min: float | None = None) -> None:
    """Train one arm x seed in this process, as train.py's main would (new run, or --resume of its last.pt);
    ``device`` (one GPU) replaces a --device that lists several; ``budget_min`` stops it at the first epoch end
    past that many minutes."""
    run = run_dir(exp, cfg, seed)
    if state == "interrupted":
        opt = train.resolve_opt(train.parse_opt([*train_args, "--resume", str(run / "weights" / "last.pt")]))
        opt.save_dir = str(run)  # the folder may have moved since opt.yaml was written
    else:
        for stale in (run / "results.csv", run / RECORD):  # rows of a run killed before its first checkpoint
            if stale.is_file():
                LOGGER.info(f"removing {stale} of a run that saved no checkpoint")
                stale.unlink()
        model_cfg, arm_flags = split_arm(cfg)
        args = [*train_args, *arm_flags, "--cfg", model_cfg, "--seed", str(seed), "--project", str(run.parent), "--name", run.name,
                "--exist-ok"]
        opt = train.resolve_opt(train.parse_opt(args))
    if device is not None and gpu_list(opt.device):
        opt.device = device
    Path(opt.save_dir).mkdir(parents=True, exist_ok=True)
    train.run(opt, hooks=[Recorder(budget_min)])
    gc.collect()


def train_all(exp: Path, plan: dict, jobs: int = 1) -> None:
    """Every cfg x seed, seed-major (all arms of seed 0 first, so an early stop leaves complete pairs); with
    ``jobs`` > 1, that many at once in worker processes; with a --device listing several GPUs, at least one run
    per GPU at once, each on one."""
    epochs = int(plan["recipe"]["epochs"])
    order = [(seed, cfg) for seed in range(int(plan["seeds"])) for cfg in plan["cfg"]]
    todo = []  # (tag, cfg, seed, state) of the runs left to train
    for k, (seed, cfg) in enumerate(order, 1):
        run = run_dir(exp, cfg, seed)
        state = run_state(run, epochs)
        tag = f"[{k}/{len(order)}] {arm_name(cfg)} seed {seed}"
        if state == "finished":
            LOGGER.info(f"{tag}: skipping finished run {run}")
        else:
            todo.append((tag, cfg, seed, state))
    gpus = gpu_list(plan["recipe"].get("device", ""))
    jobs = max(jobs, len(gpus))
    if jobs > 1 and len(todo) > 1:
        train_in_workers(exp, plan["train_args"], todo, jobs, gpus, plan.get("budget_min"))
        return
    for tag, cfg, seed, state in todo:
        LOGGER.info(f"\n{'=' * 30} {tag}: {VERB[state]} -> {run_dir(exp, cfg, seed)}")
        train_run(exp, cfg, seed, plan["train_args"], state, gpus[0] if gpus else None, plan.get("budget_min"))


class RunsFailed(RuntimeError):
    """Runs trained in worker processes failed; each run's train.log has its traceback."""


def _train_logged(exp: Path, cfg: str, seed: int, train_args: list[str], state: str, threads: int,
                  device: str | None = None, budget_min: float | None = None) -> None:
    """train_run in a worker process with ``threads`` torch threads, everything it prints (logging, tqdm,
    warnings, a traceback) appended to the run's train.log."""
    log = run_dir(exp, cfg, seed) / "train.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    f = open(log, "a", encoding="utf-8")  # noqa: SIM115 (stays open as the process's stdout/stderr)
    os.dup2(f.fileno(), 1)
    os.dup2(f.fileno(), 2)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    torch.set_num_threads(threads)
    os.environ.update({"OMP_NUM_THREADS": str(threads), CPUS_ENV: str(threads)})  # the run's share of the cores
    train_run(exp, cfg, seed, train_args, state, device, budget_min)


def _last_line(path: Path) -> str:
    lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines() if path.is_file() else []
    return lines[-1].strip() if lines else "no output"


def train_in_workers(exp: Path, train_args: list[str], todo: list[tuple], jobs: int, gpus: list[str] = (),
                     budget_min: float | None = None) -> None:
    """Train ``todo`` in order, ``jobs`` at a time, one spawned process per run (no CUDA or thread state is
    forked), each on the least busy of ``gpus`` when given. A failed run is reported with its log once the others
    are done. Ctrl-C stops the running runs (their last.pt stays resumable) and starts no new one."""
    threads = max(1, usable_cpus() // jobs)
    LOGGER.info(f"training {len(todo)} runs, {jobs} at a time, {threads} torch thread(s) each; each run's output "
                f"goes to its train.log")
    ctx = multiprocessing.get_context("spawn")
    pending, running, failed = list(todo), {}, []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                tag, cfg, seed, state = pending.pop(0)
                run = run_dir(exp, cfg, seed)
                gpu = least_busy(gpus, [g for _, _, g in running.values()]) if gpus else None
                LOGGER.info(f"{tag}: {VERB[state]} -> {run}" + (f" on GPU {gpu}" if gpu is not None else ""))
                proc = ctx.Process(target=_train_logged,
                                   args=(exp, cfg, seed, train_args, state, threads, gpu, budget_min))
                proc.start()
                running[proc] = (tag, run, gpu)
            multiprocessing.connection.wait([proc.sentinel for proc in running])
            for proc in [proc for proc in running if proc.exitcode is not None]:
                tag, run, _ = running.pop(proc)
                if proc.exitcode:
                    failed.append(f"{tag}: exit code {proc.exitcode}, {_last_line(run / 'train.log')} "
                                  f"(see {run / 'train.log'})")
                    LOGGER.error(f"failed: {failed[-1]}")
                    continue
                rows = read_results(run / "results.csv")
                last = rows[-1] if rows else {}
                LOGGER.info(f"{tag}: done" + (f", mAP50 {last['metrics/mAP_0.5']:.3f}, mAP50-95 "
                                              f"{last['metrics/mAP_0.5:0.95']:.3f}" if "metrics/mAP_0.5" in last else ""))
    except KeyboardInterrupt:
        for proc in running:  # a terminal's Ctrl-C reached them too; a signal to this process alone did not
            proc.terminate()
        for proc in running:
            proc.join(30)
        raise
    if failed:
        raise RunsFailed(f"{len(failed)} of {len(todo)} runs failed:\n" + "\n".join(failed))


# ---------------------------------------------------------------------------------------------
# What the runs say: per run, per cfg
# ---------------------------------------------------------------------------------------------
STABLE_AFTER, DROP = 5, 0.1  # a collapse: after epoch 5, val mAP50 falls by more than 0.1 in one epoch


@dataclass
class RunSummary:
    """One finished run: its curves (per logged epoch), final and best-fitness rows, seconds per epoch."""

    epochs: np.ndarray       # (E,)
    map50: np.ndarray        # (E,)
    map: np.ndarray          # (E,) mAP50-95
    train_loss: np.ndarray   # (E,) sum of the train/*_loss columns
    val_loss: np.ndarray     # (E,) sum of the val/*_loss columns
    final: tuple[float, float]  # (mAP50, mAP50-95) of the last epoch
    best: tuple[float, float]   # (mAP50, mAP50-95) of the epoch of best fitness (best.pt)
    train_s: float           # median train seconds per epoch (nan without compare.json)
    first_batch: dict[int, str]  # epoch -> digest of its first batch
    imgsz: int | None
    bn_s: float = math.nan   # median precise-BN seconds per epoch (nan: not recorded)

    def drops(self, after: int = STABLE_AFTER, by: float = DROP) -> int:
        """Epochs after ``after`` whose val mAP50 fell by more than ``by`` from the epoch before: collapses."""
        d = self.map50[:-1] - self.map50[1:]
        return int(((d > by) & (self.epochs[1:] > after)).sum())

    def best_minus_final(self) -> float:
        """Highest mAP50-95 of any epoch minus the final one: what the end of the run lost."""
        return float(self.map.max() - self.map[-1])


def summarise_run(run: Path) -> RunSummary:
    rows = read_results(run / "results.csv")
    if not rows:
        raise ValueError(f"{run / 'results.csv'} has no rows: the run did not train an epoch")

    def col(name: str) -> np.ndarray:
        return np.array([r[name] for r in rows])

    def loss(prefix: str) -> np.ndarray:
        return np.array([sum(v for k, v in r.items() if k.startswith(prefix) and k.endswith("_loss")) for r in rows])

    m50, m = col("metrics/mAP_0.5"), col("metrics/mAP_0.5:0.95")
    fi = fitness(np.stack((col("metrics/precision"), col("metrics/recall"), m50, m), 1))
    b = int(fi.argmax())
    record = json.loads((run / RECORD).read_text()) if (run / RECORD).is_file() else {"epochs": {}}
    train_s = [e["train_s"] for e in record["epochs"].values() if "train_s" in e]
    bn_s = [e["precise_bn_s"] for e in record["epochs"].values() if "precise_bn_s" in e]
    return RunSummary(epochs=col("epoch").astype(int), map50=m50, map=m, train_loss=loss("train/"),
                      val_loss=loss("val/"), final=(float(m50[-1]), float(m[-1])), best=(float(m50[b]), float(m[b])),
                      train_s=float(np.median(train_s)) if train_s else math.nan,
                      first_batch={int(k): e.get("first_batch_sha1") for k, e in record["epochs"].items()},
                      imgsz=record.get("imgsz"), bn_s=float(np.median(bn_s)) if bn_s else math.nan)


@dataclass
class ArmSummary:
    """One cfg over its seeds, with the model's size and speed."""

    cfg: str
    head: str
    runs: dict[int, RunSummary]
    imgsz: int
    params: int
    gflops: float | None
    latency: dict[str, dict] = field(default_factory=dict)  # device kind -> {median_ms, p10_ms, p90_ms}
    pair: PairedDifference | None = None  # final mAP50-95 minus the first cfg's, per seed
    tide: dict[int, TideResult] = field(default_factory=dict)  # seed -> error breakdown of the final checkpoint
    boot: dict[int, BootstrapResult] = field(default_factory=dict)  # seed -> image bootstrap vs the first cfg

    def stat(self, what: str) -> tuple[float, float]:
        """mean, std over seeds of 'final50', 'final', 'best50', 'best' or 'train_s'."""
        pick = {"final50": lambda r: r.final[0], "final": lambda r: r.final[1], "best50": lambda r: r.best[0],
                "best": lambda r: r.best[1], "train_s": lambda r: r.train_s}[what]
        return mean_std([pick(r) for r in self.runs.values()])


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
    """Batch-1 ms of the checkpoint's ONNX Runtime export at ``imgsz`` on the CPU (export.py's cached export, as
    detect.py and val.py run a .pt by default); None when onnxruntime is not installed."""
    import export
    from models.backends import load_backend

    try:
        file, _ = export.cached_export(weights, "onnxruntime", (imgsz, imgsz))
    except ValueError as e:  # the optional package missing: one line, no ONNX column
        LOGGER.info(f"ONNX Runtime latency not measured: {e}")
        return None
    backend = load_backend(file, "cpu")
    return time_forward(backend, torch.zeros(1, 3, imgsz, imgsz), torch.device("cpu"), runs)


def summarise_arm(exp: Path, cfg: str, seeds: int, latency_runs: int) -> ArmSummary:
    """Runs of ``cfg`` that finished, and its params / GFLOPs / latency from the first seed's best.pt."""
    runs = {s: summarise_run(run_dir(exp, cfg, s)) for s in range(seeds)
            if (run_dir(exp, cfg, s) / "results.csv").is_file()}
    if not runs:
        raise ValueError(f"{cfg}: no run with a results.csv under {exp / arm_name(cfg)}")
    first = next(iter(runs))
    best = run_dir(exp, cfg, first) / "weights" / "best.pt"
    model = DetectionModel.from_checkpoint(load_checkpoint(best)).eval()
    imgsz = runs[first].imgsz or int(yaml_load(best.parent.parent / "opt.yaml")["imgsz"])
    info = model.info(imgsz)  # one counter (thop, unfused) for every arm
    arm = ArmSummary(cfg=cfg, head=str(model.yaml["head"][-1][2]), runs=runs, imgsz=imgsz,
                     params=int(info["parameters"]), gflops=info["gflops"])
    if latency_runs > 0:
        torch.use_deterministic_algorithms(False)  # training set them for reproducibility; timing wants speed
        torch.backends.cudnn.deterministic = False
        devices = [torch.device("cpu")] + ([torch.device("cuda:0")] if torch.cuda.is_available() else [])
        for d in devices:
            arm.latency[d.type] = measure_latency(model, imgsz, d, latency_runs)
        onnx = measure_onnx_latency(best, imgsz, latency_runs)
        if onnx is not None:
            arm.latency["onnx"] = onnx
    return arm


def pair_against_first(arms: list[ArmSummary]) -> None:
    """Set ``arm.pair`` of every arm after the first: final mAP50-95 minus the first arm's, same seed paired."""
    base = {s: r.final[1] for s, r in arms[0].runs.items()}
    for arm in arms[1:]:
        arm.pair = paired_difference(base, {s: r.final[1] for s, r in arm.runs.items()})


# ---------------------------------------------------------------------------------------------
# Why an arm wins (TIDE) and the test-set noise (paired image bootstrap)
# ---------------------------------------------------------------------------------------------
DETECTIONS = "final_detections.pt"  # per run: the final checkpoint's val detections and labels, per image


def final_detections(run: Path, recipe: dict, imgsz: int) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Per val image, the final checkpoint's detections (n, 6) and the labels (m, 5), xyxy in original pixels:
    last.pt (the EMA weights the last epoch validated) through val.py with the same thresholds and loader, on
    PyTorch. Cached in the run folder (remade when last.pt is newer); None for a run without last.pt."""
    cache, last = run / DETECTIONS, run / "weights" / "last.pt"
    if cache.is_file() and (not last.is_file() or cache.stat().st_mtime >= last.stat().st_mtime):
        return torch.load(cache, weights_only=True)
    if not last.is_file():
        return None
    res = validate.run(data=recipe["data"], weights=str(last), batch_size=2 * int(recipe["batch_size"]),
                       imgsz=imgsz, workers=0, single_cls=bool(recipe.get("single_cls")), project=run,
                       name="final_val", exist_ok=True, plots=False, backend="torch", collect=True)
    torch.save(res.per_image, cache)
    return res.per_image


@dataclass
class ChosenPair:
    """A pair asked for with --pairs: ``arm`` minus ``base`` in final mAP50-95 per shared seed, and each shared
    seed's val-image bootstrap."""

    arm: ArmSummary
    base: ArmSummary
    diff: PairedDifference
    boot: dict[int, BootstrapResult] = field(default_factory=dict)


def bootstrap_pair(stats: dict, base: ArmSummary, arm: ArmSummary, n_boot: int) -> dict[int, BootstrapResult]:
    """seed -> ``arm`` minus ``base`` over ``n_boot`` resamples of the val images, for every seed both have
    detections of (the same val images, resampled together)."""
    if n_boot <= 0:
        return {}
    return {s: paired_bootstrap(stats[base.cfg, s], stats[arm.cfg, s], n_boot=n_boot, seed=s)
            for s in arm.runs if (base.cfg, s) in stats and (arm.cfg, s) in stats}


def analyse_errors(exp: Path, plan: dict, arms: list[ArmSummary], n_boot: int) -> dict:
    """Fill ``arm.tide`` (every run with detections) and ``arm.boot`` (against the first arm, see
    ``bootstrap_pair``); return the per-image match statistics by (cfg, seed), for other pairs."""
    stats = {}
    for a in arms:
        for s, r in a.runs.items():
            dets = final_detections(run_dir(exp, a.cfg, s), plan["recipe"], a.imgsz)
            if dets is None:
                continue
            preds, labels = [d for d, _ in dets], [lb for _, lb in dets]
            a.tide[s] = tide_errors(preds, labels)
            stats[a.cfg, s] = match_images(preds, labels)
    for a in arms[1:]:
        a.boot = bootstrap_pair(stats, arms[0], a, n_boot)
    return stats


def chosen_pairs(arms: list[ArmSummary], pairs: list[tuple[str, str]], stats: dict, n_boot: int) -> list[ChosenPair]:
    """The --pairs (arm cfg, base cfg) with their seed differences and image bootstraps."""
    by_cfg = {a.cfg: a for a in arms}
    out = []
    for arm_cfg, base_cfg in pairs:
        arm, base = by_cfg[arm_cfg], by_cfg[base_cfg]
        diff = paired_difference({s: r.final[1] for s, r in base.runs.items()},
                                 {s: r.final[1] for s, r in arm.runs.items()})
        out.append(ChosenPair(arm, base, diff, bootstrap_pair(stats, base, arm, n_boot)))
    return out


def tide_mean(arm: ArmSummary) -> dict[str, float]:
    """AP50 and the dAPs (ERRORS, FP, FN) of an arm, mean over its seeds, in AP points (0-100) as TIDE reports."""
    rows = [{"AP50": t.ap50, **t.dap, "FP": t.dap_fp, "FN": t.dap_fn} for t in arm.tide.values()]
    return {k: 100 * float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


def tide_delta_rows(pairs: list[ChosenPair]) -> list[str]:
    """Per chosen pair, arm minus base in AP50 and each dAP (mean over each arm's seeds)."""
    keys = ["AP50", *ERRORS, "FP", "FN"]
    lines = ["| arm − base | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for p in pairs:
        a, b = tide_mean(p.arm), tide_mean(p.base)
        if a and b:
            lines.append(f"| {arm_name(p.arm.cfg)} − {arm_name(p.base.cfg)} | "
                         + " | ".join(f"{a[k] - b[k]:+.2f}" for k in keys) + " |")
    return lines if len(lines) > 2 else []


def tide_table(arms: list[ArmSummary]) -> list[str]:
    keys = ["AP50", *ERRORS, "FP", "FN"]
    lines = ["| arm | seeds | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
    first = tide_mean(arms[0])
    for a in arms:
        m = tide_mean(a)
        if not m:
            continue
        lines.append(f"| {arm_name(a.cfg)} | {len(a.tide)} | " + " | ".join(f"{m[k]:.2f}" for k in keys) + " |")
        if a is not arms[0] and first:
            lines.append(f"| Δ vs {arm_name(arms[0].cfg)} | | " + " | ".join(f"{m[k] - first[k]:+.2f}" for k in keys)
                         + " |")
    return lines


def two_noises(arm: ArmSummary) -> dict:
    """``noise_summary`` of an arm against the first."""
    return noise_summary(arm.pair, arm.boot)


def noise_summary(p: PairedDifference | None, boot: dict[int, BootstrapResult]) -> dict:
    """A pair's seed interval (training noise), its image-bootstrap intervals (test-set noise, per seed), the
    verdict that needs both to exclude 0 on the same side, and which noise is the wider."""
    seed_lo, seed_hi = p.interval if p is not None and p.interval else (math.nan, math.nan)
    boots = [boot[s].map for s in sorted(boot)]
    boot_half = float(np.mean([(b.high - b.low) / 2 for b in boots])) if boots else math.nan
    seed_half = (seed_hi - seed_lo) / 2
    both = "within noise"
    if boots and not math.isnan(seed_lo):
        if seed_lo > 0 and all(b.low > 0 for b in boots):
            both = "better"
        elif seed_hi < 0 and all(b.high < 0 for b in boots):
            both = "worse"
    dominant = "-" if math.isnan(seed_half) or math.isnan(boot_half) else \
        "training (seeds)" if seed_half > boot_half else "test set (images)" if boot_half > seed_half else "neither"
    return {"boots": {s: boot[s].map for s in sorted(boot)}, "seed_half": seed_half, "boot_half": boot_half,
            "verdict": both if boots else "no bootstrap", "dominant": dominant}


def plot_tide(exp: Path, arms: list[ArmSummary]) -> Path | None:
    """tide.png: per error type (and FP / FN) the dAP of each arm, grouped bars (mean over seeds)."""
    means = [(a, tide_mean(a)) for a in arms if a.tide]
    if not means:
        return None
    keys = [*ERRORS, "FP", "FN"]
    fig, (ax,) = _figure()
    width = 0.8 / len(means)
    for i, (a, m) in enumerate(means):
        ax.bar(np.arange(len(keys)) + (i - (len(means) - 1) / 2) * width, [m[k] for k in keys], width,
               label=f"{arm_name(a.cfg)} (AP50 {m['AP50']:.1f})")
    ax.set_xticks(np.arange(len(keys)), keys)
    ax.set(ylabel="dAP50 (AP points) if fixed", title="TIDE error breakdown, final checkpoints, mean over seeds")
    ax.legend()
    fig.savefig(exp / "tide.png", dpi=150)
    return exp / "tide.png"


# ---------------------------------------------------------------------------------------------
# The report: report.csv, report.md and three plots
# ---------------------------------------------------------------------------------------------
CSV_COLUMNS = ["cfg", "head", "seeds", "imgsz", "params", "gflops", "cpu_ms", "onnx_ms", "gpu_ms", "train_s_per_epoch",
               "final_map50_mean", "final_map50_std", "best_map50_mean", "best_map50_std", "final_map_mean",
               "final_map_std", "best_map_mean", "best_map_std", "d_map_mean", "d_map_lo", "d_map_hi", "d_map_seeds",
               "verdict", "boot_half_width", "noise_dominant", "verdict_both_noises", "tide_ap50",
               *[f"tide_{k.lower()}" for k in (*ERRORS, "FP", "FN")]]


def csv_row(arm: ArmSummary) -> dict:
    row = {"cfg": arm.cfg, "head": arm.head, "seeds": len(arm.runs), "imgsz": arm.imgsz, "params": arm.params,
           "gflops": arm.gflops, "cpu_ms": arm.latency.get("cpu", {}).get("median_ms"),
           "onnx_ms": arm.latency.get("onnx", {}).get("median_ms"),
           "gpu_ms": arm.latency.get("cuda", {}).get("median_ms"), "train_s_per_epoch": arm.stat("train_s")[0]}
    for key, name in (("final50", "final_map50"), ("best50", "best_map50"), ("final", "final_map"),
                      ("best", "best_map")):
        row[f"{name}_mean"], row[f"{name}_std"] = arm.stat(key)
    p = arm.pair
    if p is None:
        row.update(d_map_mean=None, d_map_lo=None, d_map_hi=None, d_map_seeds="", verdict="baseline")
    else:
        lo, hi = p.interval or (None, None)
        row.update(d_map_mean=p.mean, d_map_lo=lo, d_map_hi=hi, d_map_seeds=" ".join(map(str, p.seeds)),
                   verdict=p.verdict)
        noise = two_noises(arm)
        row.update(boot_half_width=noise["boot_half"], noise_dominant=noise["dominant"],
                   verdict_both_noises=noise["verdict"])
    m = tide_mean(arm)
    row.update({f"tide_{k.lower()}": m.get(k) for k in ("AP50", *ERRORS, "FP", "FN")})
    return {k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in row.items()}


def write_csv(path: Path, arms: list[ArmSummary]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        w.writerows(csv_row(a) for a in arms)
    return path


def fmt_mean_std(mean: float, std: float, digits: int = 3) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(arms: list[ArmSummary]) -> list[str]:
    gpu = any("cuda" in a.latency for a in arms)
    head = ["cfg", "head", "params", "GFLOPs", "CPU ms", "ONNX Runtime ms"] + (["GPU ms"] if gpu else []) + [
        "train s/epoch", "final mAP50", "best mAP50", "final mAP50-95", "best mAP50-95", "Δ mAP50-95 vs first",
        "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in arms:
        lat = [f"{a.latency[k]['median_ms']:.1f}" if k in a.latency else "-" for k in ("cpu", "onnx", "cuda")][:2 + gpu]
        pair = ("-", "baseline") if a.pair is None else (a.pair.describe(), a.pair.verdict)
        maps = [fmt_mean_std(*a.stat(k)) for k in ("final50", "best50", "final", "best")]
        cells = [a.cfg, a.head, f"{a.params:,}", "-" if a.gflops is None else f"{a.gflops:.2f}", *lat,
                 fmt_mean_std(*a.stat("train_s"), digits=2), *maps, *pair]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


HOW_TO_READ = """\
## How to read this

- mAP values are on the val set, 0-1, as `mean ± std` over the seeds (sample std). *final* is the last epoch's
  validation (EMA weights); *best* is the epoch of best fitness (0.1 mAP50 + 0.9 mAP50-95), the one saved as best.pt,
  so it is biased upward by picking the maximum of a noisy curve.
- Pairs: for seed s every arm saw the same images in the same order with the same augmentation, so
  `d_s = mAP50-95(cfg, s) - mAP50-95(first cfg, s)` (final epoch) cancels the noise both arms share. The interval is
  `mean(d) ± t(0.975, n-1) · sd(d) / √n` over the n paired seeds. **better** / **worse**: the whole 95% interval is
  above / below 0; **within noise**: it contains 0 — these seeds cannot tell the two apart (more seeds or epochs
  narrow it). With one seed there is no interval and no verdict.
- Speed: batch 1, BatchNorm fused, eval forward without NMS (a suppressing head's own NMS included), median of the
  timed runs at the run's imgsz ({latency}), in PyTorch and through the checkpoint's ONNX Runtime export (what
  detect.py and val.py run on a CPU by default); GFLOPs by thop (2 × MACs, unfused; a two-stage model measured at
  the imgsz itself) for every arm at the same imgsz; the dashed line joins the Pareto front (no other arm both
  faster and more accurate). train s/epoch: median over
  epochs of the training part of an epoch (data loading, forward, loss, backward, optimizer; no validation),
  mean over seeds — comparable only between runs on the same machine and load.
- Loss curves: each head family has its own loss terms and gains, so compare a curve's shape, not its level across
  families.
- Two noises: the seed interval above is training noise (another seed, another model). The val-image bootstrap is
  test-set noise: the val images are resampled with replacement (the same resample for both arms of a seed) and
  both arms' mAP50-95 recomputed; its 95% percentile interval of the difference says how much of it another val
  set of the same size could undo. "better" / "worse" there need both intervals (the seeds', every seed's
  bootstrap) to exclude 0 on the same side; the wider half-width says which noise limits the comparison.
- TIDE (Bolya et al., ECCV 2020): dAP50 in AP points that fixing each error type would recover (Cls: right box,
  wrong class; Loc: right class, IoU 0.1-0.5; Both; Dupe: duplicate; Bkg: on background; Missed: label never
  found) and fixing all false positives (FP) / all false negatives (FN), on the final checkpoint, mean over seeds
  (utils/evaluation/tide.py).
"""


def stability_table(arms: list[ArmSummary]) -> list[str]:
    """Per run: collapses (val mAP50 falling by > 0.1 in one epoch after epoch 5), the highest minus the final
    mAP50-95, and the precise-BN seconds per epoch."""
    lines = ["| arm | seed | epochs | collapses after epoch 5 | worst one-epoch mAP50 fall | best − final mAP50-95 | "
             "precise BN s/epoch |", "|---|---|---|---|---|---|---|"]
    for a in arms:
        for s, r in a.runs.items():
            fall = float(np.max(r.map50[:-1] - r.map50[1:], initial=0.0))
            bn = "-" if math.isnan(r.bn_s) else f"{r.bn_s:.1f}"
            lines.append(f"| {arm_name(a.cfg)} | {s} | {len(r.epochs)} | {r.drops()} | {fall:+.3f} | "
                         f"{r.best_minus_final():.4f} | {bn} |")
    return lines


def noise_line(arm: ArmSummary, base: ArmSummary, p: PairedDifference, boot: dict[int, BootstrapResult]) -> str:
    """One pair: the seed interval, each seed's image-bootstrap interval, the verdict needing both, the wider noise."""
    n = noise_summary(p, boot)
    boots = ", ".join(f"seed {s}: {b.diff:+.4f} [{b.low:+.4f}, {b.high:+.4f}]" for s, b in n["boots"].items())
    return (f"- **{arm_name(arm.cfg)}** vs {arm_name(base.cfg)}: seeds {p.describe()}; val-image bootstrap (95%, "
            f"{next(iter(boot.values())).n_boot if boot else 0} resamples) {boots or '-'} -> **{n['verdict']}**; "
            f"half-widths: seeds {n['seed_half']:.4f}, images {n['boot_half']:.4f}: the wider is {n['dominant']}")


def noise_lines(arms: list[ArmSummary]) -> list[str]:
    return [noise_line(a, arms[0], a.pair, a.boot) for a in arms[1:]]


def pairs_section(pairs: list[ChosenPair]) -> list[str]:
    """report.md's --pairs section: per pair its seeds, both noises and verdict, then the TIDE differences."""
    if not pairs:
        return []
    lines = ["## Chosen pairs (--pairs: final mAP50-95, paired by seed; both noises)", ""]
    for p in pairs:
        per_seed = ", ".join(f"seed {s}: {d:+.4f}" for s, d in zip(p.diff.seeds, p.diff.diffs))
        lines.append(f"{noise_line(p.arm, p.base, p.diff, p.boot)} (seeds alone: **{p.diff.verdict}**; {per_seed})")
    tide = tide_delta_rows(pairs)
    return lines + (["", "TIDE, arm minus base (dAP50 in AP points, mean over each arm's seeds):", "", *tide]
                    if tide else []) + [""]


PAIR_COLUMNS = ["arm", "base", "d_map_mean", "d_map_lo", "d_map_hi", "d_map_seeds", "verdict", "boot_half_width",
                "noise_dominant", "verdict_both_noises", *[f"d_tide_{k.lower()}" for k in ("AP50", *ERRORS, "FP", "FN")]]


def write_pairs_csv(path: Path, pairs: list[ChosenPair]) -> Path:
    """pairs.csv: a row per --pairs pair (differences are arm minus base)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=PAIR_COLUMNS)
        w.writeheader()
        for p in pairs:
            lo, hi = p.diff.interval or (None, None)
            noise = noise_summary(p.diff, p.boot)
            a, b = tide_mean(p.arm), tide_mean(p.base)
            row = {"arm": p.arm.cfg, "base": p.base.cfg, "d_map_mean": p.diff.mean, "d_map_lo": lo, "d_map_hi": hi,
                   "d_map_seeds": " ".join(map(str, p.diff.seeds)), "verdict": p.diff.verdict,
                   "boot_half_width": noise["boot_half"], "noise_dominant": noise["dominant"],
                   "verdict_both_noises": noise["verdict"],
                   **{f"d_tide_{k.lower()}": (a[k] - b[k] if a and b else None) for k in ("AP50", *ERRORS, "FP", "FN")}}
            w.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v for k, v in row.items()})
    return path


def write_markdown(path: Path, exp: Path, plan: dict, arms: list[ArmSummary], latency_runs: int,
                   pairs: list[ChosenPair] = ()) -> Path:
    r = plan["recipe"]
    budget = ["--budget-time", f"{plan['budget_min']:g}"] if plan.get("budget_min") else []
    command = " ".join(["python compare.py --cfg", *plan["cfg"], "--seeds", str(plan["seeds"]), *budget,
                        *plan["train_args"]])
    lines = [f"# compare: {exp.name}", "", f"`{command}`", "",
             f"data `{r['data']}`, hyp `{Path(r['hyp']).name}`, {r['epochs']} epochs, batch {r['batch_size']}, "
             f"imgsz {arms[0].imgsz}, seeds 0..{int(plan['seeds']) - 1}; {datetime.now():%Y-%m-%d %H:%M}"
             + (f"; budget {plan['budget_min']:g} min of train + val per run (--budget-time; epochs reached per run "
                f"in the stability table)" if plan.get("budget_min") else ""), "",
             *markdown_table(arms), "", "## Against the first cfg (final mAP50-95, paired by seed)", ""]
    for a in arms[1:]:
        p = a.pair
        per_seed = ", ".join(f"seed {s}: {d:+.4f}" for s, d in zip(p.seeds, p.diffs))
        lines.append(f"- **{arm_name(a.cfg)}** vs {arm_name(arms[0].cfg)}: {p.describe()} -> **{p.verdict}** "
                     f"({per_seed})")
    lines += ["", "## Two noises: training (seeds) and test set (val images)", "", *noise_lines(arms), "",
              *pairs_section(pairs),
              "## Why: error breakdown (TIDE, final checkpoints)", "", *(tide_table(arms) if any(a.tide for a in arms)
                                                                              else ["not available (no last.pt)"]),
              "", "![TIDE](tide.png)" if any(a.tide for a in arms) else "",
              "", "## Stability per run", "", *stability_table(arms),
              "", "![mAP50-95 vs epoch](map_vs_epoch.png)", "", "![loss curves](loss_curves.png)", "",
              "![speed vs accuracy](speed_accuracy.png)", "",
              HOW_TO_READ.format(latency=f"{latency_runs} runs" if latency_runs else "latency not measured")]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _figure(ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7 * ncols, 5), tight_layout=True)
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def seed_curves(arm: ArmSummary, attr: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs (E,), values (seeds, E) with nan where a seed logged no such epoch)."""
    epochs = np.unique(np.concatenate([r.epochs for r in arm.runs.values()]))
    y = np.full((len(arm.runs), len(epochs)), np.nan)
    for i, r in enumerate(arm.runs.values()):
        y[i, np.searchsorted(epochs, r.epochs)] = getattr(r, attr)
    return epochs, y


def plot_band(ax, arm: ArmSummary, attr: str) -> None:
    """Mean over seeds as a line, the seeds' min-max as a band; epochs no seed logged a value of (a head without a
    validation loss: all of them) are left out."""
    epochs, y = seed_curves(arm, attr)
    logged = np.isfinite(y).any(0)
    if not logged.any():
        return
    epochs, y = epochs[logged], y[:, logged]
    line = ax.plot(epochs, np.nanmean(y, 0), marker=".", linewidth=2, label=f"{arm_name(arm.cfg)} (n={len(y)})")[0]
    if len(y) > 1:
        ax.fill_between(epochs, np.nanmin(y, 0), np.nanmax(y, 0), color=line.get_color(), alpha=0.2, linewidth=0)


def plot_curves(exp: Path, arms: list[ArmSummary]) -> list[Path]:
    """map_vs_epoch.png (mAP50-95) and loss_curves.png (total train and val loss) with seed bands."""
    fig, (ax,) = _figure()
    for a in arms:
        plot_band(ax, a, "map")
    ax.set(xlabel="epoch", ylabel="mAP50-95 (val)", title="mAP50-95 vs epoch: mean over seeds, band = min-max")
    ax.legend()
    fig.savefig(exp / "map_vs_epoch.png", dpi=150)
    fig, axes = _figure(2)
    for ax, attr, title in zip(axes, ("train_loss", "val_loss"), ("train loss (sum of terms)", "val loss")):
        for a in arms:
            plot_band(ax, a, attr)
        ax.set(xlabel="epoch", ylabel="loss", title=f"{title}: mean over seeds, band = min-max")
        ax.legend()
    fig.savefig(exp / "loss_curves.png", dpi=150)
    return [exp / "map_vs_epoch.png", exp / "loss_curves.png"]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (lower or equal x = cost, higher or equal y = accuracy, one of
    them strictly), ordered by x."""
    keep = [i for i, (x, y) in enumerate(points)
            if not any(x2 <= x and y2 >= y and (x2, y2) != (x, y) for x2, y2 in points)]
    return sorted(keep, key=lambda i: points[i][0])


def spread_labels(fig, labels: list, gap: float = 1.0) -> None:
    """Move point labels (annotations offset in points) down, top label first, until none overlaps another:
    arms with close latency and mAP (a head and its assigner swap) would otherwise print one name over the other."""
    fig.canvas.draw()  # final layout, so that the extents below are the saved ones
    renderer = fig.canvas.get_renderer()
    placed = []
    for t in sorted(labels, key=lambda t: -t.axes.transData.transform(t.xy)[1]):
        for _ in range(len(labels)):
            box = t.get_window_extent(renderer)
            hit = next((b for b in placed if box.overlaps(b)), None)
            if hit is None:
                break
            x, y = t.xyann  # points
            t.xyann = (x, y - (box.y1 - hit.y0) * 72 / fig.dpi - gap)
        placed.append(t.get_window_extent(renderer))


def plot_speed_accuracy(exp: Path, arms: list[ArmSummary]) -> Path:
    """Final mAP50-95 (± std over seeds) against CPU latency (p10-p90 bars), or GFLOPs without latency."""
    fig, (ax,) = _figure()
    timed = all("cpu" in a.latency for a in arms)
    labels = []
    for a in arms:
        mean, std = a.stat("final")
        if timed:
            lat = a.latency["cpu"]
            x, xerr = lat["median_ms"], [[lat["median_ms"] - lat["p10_ms"]], [lat["p90_ms"] - lat["median_ms"]]]
        else:
            x, xerr = a.gflops or 0.0, None
        ax.errorbar(x, mean, xerr=xerr, yerr=0.0 if math.isnan(std) else std, fmt="o", capsize=4,
                    label=arm_name(a.cfg))
        labels.append(ax.annotate(arm_name(a.cfg), (x, mean), textcoords="offset points", xytext=(6, 6), fontsize=8))
    points = [((a.latency["cpu"]["median_ms"] if timed else a.gflops or 0.0), a.stat("final")[0]) for a in arms]
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


# ---------------------------------------------------------------------------------------------
# The story of a comparison
# ---------------------------------------------------------------------------------------------
def report(exp: Path, plan: dict, latency_runs: int, n_boot: int = 1000,
           pairs: list[tuple[str, str]] = ()) -> list[ArmSummary]:
    """Summaries of every arm, written out as report.md / report.csv / the plots; ``pairs`` (--pairs, resolved:
    (arm cfg, base cfg)) add a section to report.md and pairs.csv."""
    arms = [summarise_arm(exp, cfg, int(plan["seeds"]), latency_runs) for cfg in plan["cfg"]]
    pair_against_first(arms)
    stats = analyse_errors(exp, plan, arms, n_boot)
    chosen = chosen_pairs(arms, list(pairs), stats, n_boot)
    write_csv(exp / "report.csv", arms)
    if chosen:
        write_pairs_csv(exp / "pairs.csv", chosen)
    write_markdown(exp / "report.md", exp, plan, arms, latency_runs, chosen)
    plot_curves(exp, arms)
    plot_speed_accuracy(exp, arms)
    plot_tide(exp, arms)
    for line in markdown_table(arms):
        LOGGER.info(line)
    LOGGER.info(f"\nReport: {exp / 'report.md'} ({exp / 'report.csv'}, {'pairs.csv, ' if chosen else ''}"
                f"map_vs_epoch.png, loss_curves.png, speed_accuracy.png, tide.png)")
    return arms


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    opt, train_args = parse_opt(argv)
    try:
        exp, plan = setup_experiment(opt, train_args)
        pairs = resolve_pairs(opt.pairs, plan["cfg"])  # a typo fails now, not after the training
        LOGGER.info(f"compare: {len(plan['cfg'])} cfgs x {plan['seeds']} seeds -> {exp}")
        t0 = time.time()
        train_all(exp, plan, opt.jobs)
        LOGGER.info(f"training done in {(time.time() - t0) / 3600:.3f} hours")
        report(exp, plan, opt.latency_runs, opt.bootstrap, pairs)
    except (FileNotFoundError, ValueError) as e:
        LOGGER.error(f"error: {e}")
        return 2
    except RunsFailed as e:
        LOGGER.error(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        LOGGER.error("interrupted: finished runs are kept, the others resume from their last.pt with "
                     "python compare.py --resume")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
