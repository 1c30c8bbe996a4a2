"""A comparison in the experiment trackers: train.py's ``--mlflow [URI]`` / ``--wandb [MODE]`` given to compare.py
reach every run (they are train.py flags) and group them.

- MLflow: one parent run per exp folder (named after it, in the experiment 'HeadZoo-compare', or the --project
  folder's name) and each arm x seed a child run nested under it (tags ``comparison``, ``arm``, ``seed``); after
  the report, the parent gets the report files as artifacts, each arm's final mAP50-95 as a metric and its
  verdict as a tag, and is closed.
- W&B: every run of the comparison in one group (``<exp>-<date>``), tagged ``arm:<name>`` and ``seed:<s>``; after
  the report, a run of job type 'report' in the group holds report.csv as a table, report.html and the files.

The exp folder's tracking.json keeps the parent run and the group, so a re-run or --resume adds to them; each run
folder's tracking.json gets its place in the group before it trains (utils/training/loggers/base.py).
"""
from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

from compare.plan import arm_name, run_dir
from utils import LOGGER
from utils.training.loggers import LOGGERS, read_tracking, update_tracking
from utils.training.loggers.base import project_name
from utils.training.loggers.mlflow_logger import experiment_id, mlflow_client
from utils.training.loggers.wandb_logger import wandb_module

REPORT_FILES = ("report.md", "report.html", "report.csv", "pairs.csv")


def trackers(plan: dict) -> dict:
    """The tracker flags the comparison's recipe sets: {name: the flag's value}."""
    recipe = plan.get("recipe", {})
    return {k: recipe[k] for k in LOGGERS if recipe.get(k) not in (None, False)}


def open_comparison(exp: Path, plan: dict) -> None:
    """Before training: the MLflow parent run and the W&B group of the comparison (made once, then reused)."""
    asked = trackers(plan)
    if not asked:
        return
    record = read_tracking(exp)
    experiment = record.get("experiment") or project_name(exp.parent, ("runs", "compare"), "HeadZoo-compare")
    update_tracking(exp, "experiment", experiment)
    if "mlflow" in asked:
        client, uri = mlflow_client(record.get("mlflow", {}).get("tracking_uri") or asked["mlflow"])
        run_id = record.get("mlflow", {}).get("id")
        if run_id:
            client.update_run(run_id, status="RUNNING")
        else:
            run = client.create_run(experiment_id(client, experiment), run_name=exp.name,
                                    tags={"comparison": exp.name, "save_dir": str(exp)})
            run_id = run.info.run_id
            client.log_param(run_id, "cfg", " | ".join(plan["cfg"]))
            client.log_param(run_id, "train_args", " ".join(plan["train_args"]))
        update_tracking(exp, "mlflow", {"id": run_id, "tracking_uri": uri})
        LOGGER.info(f"MLflow: comparison {exp.name} is run {run_id} in {uri}, its runs nested under it")
    if "wandb" in asked:
        wandb_module()  # a missing package is an error now, not after the first run's set-up
        group = record.get("wandb", {}).get("group") or f"{exp.name}-{datetime.now():%Y%m%d-%H%M%S}"
        update_tracking(exp, "wandb", {"group": group})
        LOGGER.info(f"W&B: comparison {exp.name} is the group {group} of project {experiment}")


def place_run(exp: Path, cfg: str, seed: int) -> None:
    """A new run's tracking.json: its place in the comparison (nothing when the comparison is not tracked)."""
    record = read_tracking(exp)
    if "experiment" not in record:
        return
    arm = arm_name(cfg)
    group = {"experiment": record["experiment"], "run_name": f"{exp.name}/{arm}/seed{seed}",
             "tags": {"comparison": exp.name, "arm": arm, "seed": str(seed)}}
    if "mlflow" in record:
        group["mlflow"] = {"tracking_uri": record["mlflow"]["tracking_uri"], "parent_run_id": record["mlflow"]["id"]}
    if "wandb" in record:
        group["wandb"] = {"group": record["wandb"]["group"]}
    run = run_dir(exp, cfg, seed)
    run.mkdir(parents=True, exist_ok=True)
    (run / "tracking.json").unlink(missing_ok=True)  # a killed attempt's run ids: this is a new run
    update_tracking(run, "group", group)


def report_rows(exp: Path) -> list[dict]:
    with open(exp / "report.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def close_comparison(exp: Path, plan: dict) -> None:
    """After the report: the report in the trackers (see the module's docstring); the MLflow parent run closed. A
    tracker's failure here is a warning: the report is written."""
    try:
        send_report(exp, trackers(plan), read_tracking(exp))
    except Exception as e:  # noqa: BLE001 (a tracker's client raises many kinds; the report is on disk)
        LOGGER.warning(f"trackers: sending the report failed ({type(e).__name__}: {e}); it is in {exp}")


def send_report(exp: Path, asked: dict, record: dict) -> None:
    files = [exp / f for f in REPORT_FILES if (exp / f).is_file()]
    plots = sorted(exp.glob("*.png"))
    if "mlflow" in asked and "mlflow" in record:
        client, _ = mlflow_client(record["mlflow"]["tracking_uri"])
        run_id = record["mlflow"]["id"]
        for row in report_rows(exp):
            name = arm_name(row["cfg"])
            if row.get("final_map_mean"):
                client.log_metric(run_id, f"final_mAP_0.5-0.95/{name}", float(row["final_map_mean"]))
            client.set_tag(run_id, f"verdict/{name}", row.get("verdict", ""))
        for f in files:
            client.log_artifact(run_id, str(f))
        for f in plots:
            client.log_artifact(run_id, str(f), "plots")
        client.set_terminated(run_id, "FINISHED")
    if "wandb" in asked and "wandb" in record:
        report_run(exp, record, asked["wandb"], files, plots)


def report_run(exp: Path, record: dict, mode, files: list[Path], plots: list[Path]) -> None:
    """The W&B group's 'report' run: report.csv as a table, report.html as a page, the files as an artifact."""
    wandb = wandb_module()
    rows = report_rows(exp)
    run = wandb.init(project=record["experiment"], name=f"{exp.name}/report", group=record["wandb"]["group"],
                     job_type="report", dir=str(exp), mode=mode if isinstance(mode, str) else None,
                     reinit="create_new")
    columns = list(rows[0]) if rows else []
    logged = {"report": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])}
    if (exp / "report.html").is_file():
        logged["report_html"] = wandb.Html((exp / "report.html").read_text(encoding="utf-8"))
    logged.update({f"plots/{p.stem}": wandb.Image(str(p)) for p in plots})
    run.log(logged)
    art = wandb.Artifact(f"{record['wandb']['group']}-report", type="report")
    for f in [*files, *plots]:
        art.add_file(str(f), name=f.name)
    run.log_artifact(art)
    run.finish()
