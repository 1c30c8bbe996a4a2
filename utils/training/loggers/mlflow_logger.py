"""MLflow (``--mlflow [URI]``, optional package ``pip install mlflow``): the run's flags and hyperparameters as
params, each epoch's results.csv row as metrics (step = epoch), its plots, results.csv, opt.yaml, hyp.yaml and
weights as artifacts.

Where it goes: ``--mlflow URI`` (an MLflow tracking URI: ``http://host:5000``, ``sqlite:///path.db``; a path ending
in ``.db`` is taken as that SQLite file), else MLflow's own default, as every MLflow script has it: the
``MLFLOW_TRACKING_URI`` environment variable, else ``sqlite:///mlflow.db`` in the current directory (MLflow >= 3.7;
older MLflow and folders that already have an ``./mlruns`` store: ``./mlruns``), with artifacts under ``./mlruns``
-- the store that ``mlflow ui`` opens when started in the same directory. Only MLflow's client is used
(``MlflowClient``, no process-global active run), so several runs of one process (compare.py) do not mix.
"""
from __future__ import annotations

import time
from pathlib import Path

from utils import LOGGER
from utils.training.loggers.base import ExperimentLogger, metric_name, project_name

PARAM_CHARS = 6000  # MLflow's limit on a param value
BATCH = 100  # params per log_batch call (MLflow's limit)


def mlflow_client(uri: str | bool | None):
    """(MlflowClient, its tracking URI) for ``--mlflow``'s value: True / None: MLflow's default; a URI; a path
    ending in .db: that SQLite file. A ValueError without the package."""
    try:
        import mlflow
        from mlflow import MlflowClient
    except ImportError as e:
        raise ValueError("--mlflow needs the optional package 'mlflow': pip install mlflow") from e
    if isinstance(uri, str) and uri.endswith(".db") and "://" not in uri:
        uri = f"sqlite:///{Path(uri).resolve()}"
    uri = uri if isinstance(uri, str) and uri else mlflow.get_tracking_uri()
    return MlflowClient(tracking_uri=uri), uri


def experiment_id(client, name: str) -> str:
    """The id of the MLflow experiment ``name``, created when new."""
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else client.create_experiment(name)


class MLflowLogger(ExperimentLogger):
    name = "mlflow"

    def __init__(self, uri: str | bool | None = None):
        super().__init__()
        self.client, self.uri = mlflow_client(uri)
        self.run_id = ""

    def start(self, trainer, params: dict, group: dict | None, resume_id: str | None) -> dict:
        from mlflow.entities import Param

        group = group or {}
        uri = group.get("mlflow", {}).get("tracking_uri")
        if uri and uri != self.uri:  # a comparison's children go to the store of their parent run
            self.client, self.uri = mlflow_client(uri)
        try:
            if resume_id:
                self.run_id = resume_id
                self.client.update_run(resume_id, status="RUNNING")
            else:
                exp = experiment_id(self.client, group.get("experiment") or project_name(trainer.opt.project))
                tags = dict(group.get("tags", {}))
                if group.get("mlflow", {}).get("parent_run_id"):
                    tags["mlflow.parentRunId"] = group["mlflow"]["parent_run_id"]  # nested under it in the UI
                run = self.client.create_run(exp, run_name=group.get("run_name") or trainer.save_dir.name,
                                             tags={**tags, "save_dir": str(trainer.save_dir)})
                self.run_id = run.info.run_id
                items = [Param(k[:250], str(v)[:PARAM_CHARS]) for k, v in params.items()]
                for i in range(0, len(items), BATCH):
                    self.client.log_batch(self.run_id, params=items[i:i + BATCH])
        except Exception as e:  # a bad URI, a server down: the one-line error the user needs
            raise ValueError(f"--mlflow {self.uri}: MLflow could not start the run ({type(e).__name__}: {e})") from e
        LOGGER.info(f"MLflow: run {self.run_id} in {self.uri}; view with: mlflow ui --backend-store-uri {self.uri}")
        return {"id": self.run_id, "tracking_uri": self.uri}

    def log_metrics(self, values: dict[str, float], epoch: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(metric_name(k), float(v), now, epoch)
                                                    for k, v in values.items()])

    def log_files(self, plots: list[Path], files: list[Path], weights: list[Path], epoch: int) -> None:
        for f in plots:
            self.client.log_artifact(self.run_id, str(f), "plots")
        for f in files:
            self.client.log_artifact(self.run_id, str(f))
        for f in weights:
            self.client.log_artifact(self.run_id, str(f), "weights")

    def finish(self) -> None:
        self.client.set_terminated(self.run_id, "FINISHED")
