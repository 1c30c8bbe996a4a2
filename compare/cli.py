"""compare.py's command line: options, then plan -> train -> report."""
from __future__ import annotations

import argparse
import logging
import time

from compare.decide import DEFAULT_MARGIN, decide_all, pairs_of_interest, planned_seeds
from compare.plan import ROOT, resolve_pairs, setup_experiment
from compare.report import report
from compare.runner import RunsFailed, train_all
from compare.tracking import close_comparison, open_comparison
from utils import LOGGER
from utils.evaluation.sequential import ALPHA, MIN_SEEDS
from utils.io.lock import FolderLock
from utils.training import signals
from utils.training.signals import Interrupted

USAGE = """A/B-compare model configs on one training pipeline, with the run-to-run noise measured.

    python compare.py --cfg yolov5n.yaml yolov5n-decoupled.yaml yolov5n-decoupled-af.yaml --epochs 30 --seeds 3
    python compare.py --cfg yolov5n.yaml yolov5n-decoupled.yaml --data my.yaml --imgsz 320 --seeds 2 [train.py flags]
    python compare.py --resume              # finish the newest runs/compare/exp*: skip done runs, resume the rest
    python compare.py --cfg ... --jobs 2    # train 2 runs at once, each in its own process (CPU: 1 thread each)
    python compare.py --cfg ... --device 0,1,2,3   # 4 runs at once, one per GPU
    python compare.py --cfg yolov5n-decoupled.yaml 'yolov5n-decoupled.yaml --precise-bn 0'   # an arm's own flags
    python compare.py --cfg yolov5n.yaml yolov5n-decoupled.yaml --mlflow   # one MLflow parent run, a child per run
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
mAP50-95 with a 95% t-interval and a verdict (better / worse / within noise), see utils/evaluation/stats.py, the val-image
bootstrap beside it, and the TIDE error breakdown; ``--pairs ARM:BASE`` adds the same figures for other pairs.
Each figure is a statistic in compare/statistics/ (README "Extending": adding one is one file and one table line).
report.html has it all on one page that opens offline (sortable tables, the plots embedded). train.py's --mlflow
[URI] / --wandb [MODE] group the comparison in the tracker: an MLflow parent run (the report on it) with each arm x
seed a nested child tagged arm and seed, or one W&B group (compare/tracking.py).
"""


def parse_opt(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """compare.py's own options, and the rest (train.py flags, checked by train.py's parser)."""
    p = argparse.ArgumentParser(description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter,
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
    p.add_argument("--decide", action="store_true",
                   help="train seed rounds until every pair (each arm vs the first, and --pairs) is decided -- "
                        "better, worse or equivalent within --margin -- by a group-sequential t-test, or "
                        "--max-seeds is reached (--seeds is then ignored)")
    p.add_argument("--max-seeds", type=int, default=10, help="--decide: the most seeds a pair gets")
    p.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                   help="--decide: 'equivalent' when the difference is surely inside ±MARGIN mAP50-95 (0: off)")
    p.add_argument("--alpha", type=float, default=ALPHA, help="--decide: the false-verdict rate per pair")
    p.add_argument("--dry-run", action="store_true",
                   help="train nothing: per pair, the seeds a decision is expected to need, from the finished "
                        "seeds (a pilot of 2)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="train the runs as Ray tasks (pip install ray): on a local Ray instance, or the cluster at "
                        "ADDRESS (ray://host:10001, auto); one CPU (or GPU) per run")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once, each in its own process (usable cores // jobs torch threads, output in "
                        "<run>/train.log)")
    opt, train_args = p.parse_known_args(argv)
    if not opt.resume and not opt.cfg:
        p.error("give the cfgs to compare: --cfg yolov5n.yaml yolov5n-decoupled.yaml (or --resume)")
    if opt.seeds < 1:
        p.error(f"--seeds must be >= 1, got {opt.seeds}")
    if opt.max_seeds < MIN_SEEDS:
        p.error(f"--max-seeds must be >= {MIN_SEEDS} (the first look of --decide), got {opt.max_seeds}")
    if opt.margin < 0 or not 0 < opt.alpha < 0.5:
        p.error(f"--margin must be >= 0 and --alpha in (0, 0.5), got {opt.margin}, {opt.alpha}")
    opt.margin = opt.margin or None
    if opt.jobs < 1:
        p.error(f"--jobs must be >= 1, got {opt.jobs}")
    if opt.budget_time is not None and opt.budget_time <= 0:
        p.error(f"--budget-time must be > 0 minutes, got {opt.budget_time}")
    if opt.budget_epochs is not None:
        if opt.budget_epochs < 1:
            p.error(f"--budget-epochs must be >= 1, got {opt.budget_epochs}")
        train_args = [*train_args, "--epochs", str(opt.budget_epochs)]  # equal epochs: train.py's own flag
    return opt, train_args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    opt, train_args = parse_opt(argv)
    signals.install()  # SIGTERM like Ctrl-C: running runs stop with their last.pt, --resume continues
    lock = None
    try:
        exp, plan = setup_experiment(opt, train_args)
        pairs = resolve_pairs(opt.pairs or plan.get("pairs", []), plan["cfg"])  # a typo fails now, not later
        if opt.dry_run:
            plan.setdefault("decide", {"max_seeds": opt.max_seeds, "margin": opt.margin, "alpha": opt.alpha})
            for line in planned_seeds(exp, plan, pairs_of_interest(plan["cfg"], pairs)):
                LOGGER.info(line)
            return 0
        lock = FolderLock(exp, "compare folder")
        lock.acquire()
        open_comparison(exp, plan)  # train.py's --mlflow / --wandb: one parent run / group (compare/tracking.py)
        t0 = time.time()
        if "decide" in plan:
            LOGGER.info(f"compare --decide: {len(plan['cfg'])} cfgs, up to {plan['decide']['max_seeds']} seeds -> {exp}")
            decide_all(exp, plan, pairs_of_interest(plan["cfg"], pairs), opt.jobs, opt.ray)
        else:
            LOGGER.info(f"compare: {len(plan['cfg'])} cfgs x {plan['seeds']} seeds -> {exp}")
            train_all(exp, plan, opt.jobs, ray=opt.ray)
        LOGGER.info(f"training done in {(time.time() - t0) / 3600:.3f} hours")
        report(exp, plan, opt.latency_runs, opt.bootstrap, pairs)
        close_comparison(exp, plan)
    except (FileNotFoundError, ValueError) as e:
        LOGGER.error(f"error: {e}")
        return 2
    except RunsFailed as e:
        LOGGER.error(f"error: {e}")
        return 1
    except KeyboardInterrupt as e:
        LOGGER.error(f"interrupted{f' by {e}' if isinstance(e, Interrupted) else ''}: finished runs are kept, the "
                     f"others resume from their last.pt with python compare.py --resume")
        return e.exit_code if isinstance(e, Interrupted) else 130
    finally:
        if lock is not None:
            lock.release()
    return 0

