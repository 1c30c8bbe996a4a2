"""Training the runs of a plan: a run's state on disk (new, interrupted, finished), the Recorder hook that writes
``compare.json`` (seconds per epoch, the first batch's digest, the --budget-time stop) and the scheduler (in this
process, or ``--jobs`` / several GPUs in spawned worker processes)."""
from __future__ import annotations

import gc
import hashlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import sys
from pathlib import Path

import torch

import train
from compare.plan import arm_name, run_dir, split_arm
from compare.tracking import place_run
from utils import LOGGER
from utils.io.checkpoint import load_checkpoint
from utils.io.results import MAP, MAP50, read_results
from utils.torch_utils import CPUS_ENV, usable_cpus
from utils.training import signals
from utils.training.hooks import EpochEnd, Hook

RECORD = "compare.json"  # per run: imgsz, and per epoch train/val seconds and the first batch's hash
VERB = {"new": "training", "interrupted": "resuming interrupted run"}  # run_state -> what train_all does


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch stored in a checkpoint (-1 when training finished), None when there is no file."""
    return int(load_checkpoint(path).get("epoch", -1)) if path.is_file() else None


def run_state(run: Path, epochs: int) -> str:
    """'finished' (results.csv has every epoch and best.pt exists, or training stopped early and stripped
    last.pt), 'interrupted' (last.pt holds a resumable epoch) or 'new'. A run with every epoch logged and no
    weights/ folder at all is 'finished' too: its weights were deleted to keep the folder small (docs/comparing.md,
    "Keeping a comparison small"), and the report reads its results.csv and compare.json."""
    weights = run / "weights"
    logged = {int(r["epoch"]) for r in read_results(run / "results.csv")}
    if ((weights / "best.pt").is_file() or not weights.exists()) and logged and set(range(epochs)) <= logged:
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
        place_run(exp, cfg, seed)  # its MLflow parent run / W&B group when the comparison is tracked
        model_cfg, arm_flags = split_arm(cfg)
        args = [*train_args, *arm_flags, "--cfg", model_cfg, "--seed", str(seed), "--project", str(run.parent), "--name", run.name,
                "--exist-ok"]
        opt = train.resolve_opt(train.parse_opt(args))
    if device is not None and gpu_list(opt.device):
        opt.device = device
    Path(opt.save_dir).mkdir(parents=True, exist_ok=True)
    train.run(opt, hooks=[Recorder(budget_min)])
    gc.collect()


def train_all(exp: Path, plan: dict, jobs: int = 1, cfgs: list[str] | None = None, seeds: int | None = None,
              ray: str | None = None) -> None:
    """Every cfg x seed (or ``cfgs`` x seeds 0 .. ``seeds`` - 1), seed-major (all arms of seed 0 first, so an early
    stop leaves complete pairs); with ``jobs`` > 1, that many at once in worker processes; with a --device listing
    several GPUs, at least one run per GPU at once, each on one; with ``ray`` (an address, or 'local'), as Ray
    tasks (compare/on_ray.py)."""
    epochs = int(plan["recipe"]["epochs"])
    order = [(seed, cfg) for seed in range(int(plan["seeds"] if seeds is None else seeds))
             for cfg in (plan["cfg"] if cfgs is None else cfgs)]
    todo = []  # (tag, cfg, seed, state) of the runs left to train
    for k, (seed, cfg) in enumerate(order, 1):
        run = run_dir(exp, cfg, seed)
        state = run_state(run, epochs)
        tag = f"[{k}/{len(order)}] {arm_name(cfg)} seed {seed}"
        if state == "finished":
            LOGGER.info(f"{tag}: skipping finished run {run}")
        else:
            todo.append((tag, cfg, seed, state))
    if ray is not None:
        from compare.on_ray import train_on_ray

        if todo:
            train_on_ray(exp, plan, todo, ray)
        return
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
                  device: str | None = None, budget_min: float | None = None, own_signals: bool = True) -> None:
    """train_run in a worker process with ``threads`` torch threads, everything it prints (logging, tqdm,
    warnings, a traceback) appended to the run's train.log; ``own_signals``: SIGTERM / SIGINT stop the run cleanly
    (not in a Ray worker, whose signals are Ray's)."""
    log = run_dir(exp, cfg, seed) / "train.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    f = open(log, "a", encoding="utf-8")  # noqa: SIM115 (stays open as the process's stdout/stderr)
    os.dup2(f.fileno(), 1)
    os.dup2(f.fileno(), 2)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    if own_signals:
        signals.install()  # the parent's terminate() on Ctrl-C: this run stops with its last.pt
    torch.set_num_threads(threads)
    os.environ.update({"OMP_NUM_THREADS": str(threads), CPUS_ENV: str(threads)})  # the run's share of the cores
    train_run(exp, cfg, seed, train_args, state, device, budget_min)


def _last_line(path: Path) -> str:
    lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines() if path.is_file() else []
    return lines[-1].strip() if lines else "no output"


def done_line(tag: str, run: Path) -> str:
    """'<tag>: done, mAP50 .., mAP50-95 ..' from the run's last results.csv row."""
    rows = read_results(run / "results.csv")
    last = rows[-1] if rows else {}
    return f"{tag}: done" + (f", mAP50 {last[MAP50]:.3f}, mAP50-95 {last[MAP]:.3f}" if MAP50 in last else "")


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
                LOGGER.info(done_line(tag, run))
    except KeyboardInterrupt:
        for proc in running:  # a terminal's Ctrl-C reached them too; a signal to this process alone did not
            proc.terminate()
        for proc in running:
            proc.join(30)
        raise
    if failed:
        raise RunsFailed(f"{len(failed)} of {len(todo)} runs failed:\n" + "\n".join(failed))
