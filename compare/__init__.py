"""A/B comparison of model configs on one training pipeline (``python compare.py``; compare/cli.py has the usage).

    plan.py        the arms, pairs, shared train.py recipe and the folder layout
    runner.py      training the runs (resumable; --jobs / several GPUs in worker processes), compare.json
    summary.py     RunSummary, ArmSummary, Pair, Comparison: what the runs say
    statistics/    one module per statistic (speed, accuracy, seed interval, bootstrap, TIDE, stability),
                   registered in statistics.STATISTICS; base.py is the contract
    report.py      report.csv, pairs.csv, report.md assembled from the statistics
    report_html.py report.html: report.md, report.csv and the plots as one offline page, sortable tables
    tracking.py    train.py's --mlflow / --wandb for a comparison: one MLflow parent run / W&B group
    plots.py       figure helpers the statistics share
"""
from compare.cli import main, parse_opt
from compare.plan import (
           arm_name,
           resolve_pairs,
           run_dir,
           setup_experiment,
           split_arm,
           train_recipe,
)
from compare.report import report
from compare.runner import RECORD, Recorder, gpu_list, least_busy, run_state, train_all
from compare.summary import (
           DETECTIONS,
           ArmSummary,
           Comparison,
           Pair,
           RunSummary,
           summarise_arm,
           summarise_run,
)

__all__ = ["DETECTIONS", "RECORD", "ArmSummary", "Comparison", "Pair", "Recorder", "RunSummary", "arm_name",
           "gpu_list", "least_busy", "main", "parse_opt", "report", "resolve_pairs", "run_dir", "run_state",
           "setup_experiment", "split_arm", "summarise_arm", "summarise_run", "train_all", "train_recipe"]
