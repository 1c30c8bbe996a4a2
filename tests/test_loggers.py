"""Experiment trackers (train.py --mlflow / --wandb, compare.py grouping): a 2-epoch training and a 2-arm x 1-seed
comparison read back through MLflow's own client and W&B's offline run files; the logger hook's resume and failure
paths on a stand-in trainer. mlflow and wandb are test requirements (requirements-dev.txt): these tests run in CI,
never skipped (imported where used, so that collecting the suite stays quick)."""
import csv
import json
import os
import shutil
import struct
import subprocess
import sys
from argparse import Namespace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from utils.training.hooks import EpochEnd
from utils.training.loggers import MLflowLogger, WandbLogger, logger_hooks
from utils.training.loggers.base import metric_name, project_name, read_tracking

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "2", "--imgsz", "64", "--batch-size", "4", "--workers", "0", "--noautoanchor"]


def client(db: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{db}")


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, its tables made once (MLflow's migrations take seconds); tests copy it."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    client(path).search_experiments()
    return path


def tracker_env(tmp: Path) -> dict:
    """No MLflow URI from outside, W&B's own folders under ``tmp`` (nothing in the home folder, nothing sent)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "WANDB_"))}
    return {**env, "OMP_NUM_THREADS": "1", **{f"WANDB_{k}_DIR": str(tmp / f"wandb_{k.lower()}")
                                              for k in ("CACHE", "CONFIG", "DATA")}}


def run_script(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, str(ROOT / script), *args], check=False, cwd=cwd, capture_output=True,
                         text=True, timeout=600, env=tracker_env(cwd))
    assert out.returncode == 0, out.stderr[-4000:]
    return out


def artifacts(store, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for a in store.list_artifacts(run_id, path):
        found |= artifacts(store, run_id, a.path) if a.is_dir else {a.path}
    return found


def wandb_records(run_file: Path) -> list:
    """The protobuf records of an offline run's .wandb file (a LevelDB-style log: 7-byte header, 32 KiB blocks of
    chunks, each checksum u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, chunk, records = run_file.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if n == 0 and kind == 0:  # block padding
            pos += left
            continue
        chunk += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(chunk)
            records.append(rec)
            chunk = b""
    return records


def wandb_run(folder: Path) -> dict:
    """An offline run under ``folder``/wandb: its run record, history rows by step, artifacts' files, image files."""
    (run_dir,) = (folder / "wandb").glob("offline-run-*")
    (run_file,) = run_dir.glob("run-*.wandb")
    out = {"dir": run_dir, "history": {}, "artifacts": {}, "images": list((run_dir / "files" / "media").rglob("*.*"))}
    for rec in wandb_records(run_file):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run"] = rec.run
        elif kind == "history":
            row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
            out["history"][row["_step"]] = row
        elif kind == "artifact":
            out["artifacts"][rec.artifact.type] = sorted(m.path for m in rec.artifact.manifest.contents)
    return out


def results_rows(run: Path) -> list[dict]:
    with open(run / "results.csv") as f:
        return [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_training_run_in_mlflow_default_store_and_wandb_offline(tiny_data, tmp_path, mlflow_db):
    """--mlflow bare: MLflow's default store of the working directory (./mlflow.db, what `mlflow ui` opens there)."""
    shutil.copy(mlflow_db, tmp_path / "mlflow.db")
    run_script("train.py", "--cfg", "yolov5n.yaml", "--data", str(tiny_data), *TINY, "--project",
               str(tmp_path / "proj"), "--name", "exp", "--mlflow", "--wandb", "offline", cwd=tmp_path)
    run, rows = tmp_path / "proj" / "exp", results_rows(tmp_path / "proj" / "exp")
    store = client(tmp_path / "mlflow.db")
    (found,) = store.search_runs([store.get_experiment_by_name("proj").experiment_id])
    assert found.info.run_name == "exp" and found.info.status == "FINISHED"
    assert read_tracking(run)["mlflow"]["id"] == found.info.run_id
    assert found.data.params["epochs"] == "2" and found.data.params["hyp/lr0"] == "0.01"
    for col in ("train/box_loss", "metrics/mAP_0.5:0.95", "val/obj_loss", "x/lr0"):
        history = store.get_metric_history(found.info.run_id, metric_name(col))
        assert [m.step for m in history] == [0, 1]
        assert [m.value for m in history] == pytest.approx([r[col] for r in rows], rel=1e-4)  # csv has 5 digits
    assert {"results.csv", "opt.yaml", "hyp.yaml", "weights/best.pt", "weights/last.pt", "plots/results.png",
            "plots/confusion_matrix.png", "plots/val_batch0_pred.jpg"} <= artifacts(store, found.info.run_id)
    local = store.download_artifacts(found.info.run_id, "weights/best.pt", str(tmp_path))
    assert torch.load(local, weights_only=True)["epoch"] == -1  # the stripped, final checkpoint

    w = wandb_run(run)
    assert (w["run"].project, w["run"].display_name) == ("proj", "exp")
    assert sorted(w["history"]) == [0, 1]
    assert [w["history"][e]["train/box_loss"] for e in (0, 1)] == pytest.approx([r["train/box_loss"] for r in rows],
                                                                                rel=1e-4)
    assert {"results.png", "confusion_matrix.png", "val_batch0_pred.jpg"} <= set(w["history"][1]["Results/captions"])
    assert len(w["images"]) == w["history"][1]["Results/count"] >= 5
    assert {"best.pt", "last.pt", "results.csv", "opt.yaml", "hyp.yaml"} <= set(w["artifacts"]["model"])


def test_comparison_is_one_parent_run_and_one_group(tiny_data, tmp_path, mlflow_db):
    """2 arms x 1 seed: one MLflow parent run with a child per run (tags arm, seed) and the report's files; one W&B
    group holding both runs and the report run."""
    db = tmp_path / "store.db"
    shutil.copy(mlflow_db, db)
    cfgs = ["yolov5n.yaml", "yolov5n-decoupled.yaml"]
    run_script("compare.py", "--cfg", *cfgs, "--seeds", "1", "--data", str(tiny_data), *TINY, "--epochs", "1",
               "--noplots", "--latency-runs", "0", "--bootstrap", "0", "--project", str(tmp_path / "cmp"),
               "--mlflow", f"sqlite:///{db}", "--wandb", "offline", cwd=tmp_path)
    exp = tmp_path / "cmp" / "exp"
    store = client(db)
    runs = store.search_runs([store.get_experiment_by_name("cmp").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.data.tags["arm"]: r for r in runs if r is not parent}
    assert parent.info.run_name == "exp" and parent.info.status == "FINISHED"
    assert {"report.html", "report.md", "report.csv"} <= artifacts(store, parent.info.run_id)
    assert set(parent.data.metrics) == {"final_mAP_0.5-0.95/yolov5n", "final_mAP_0.5-0.95/yolov5n-decoupled"}
    assert parent.data.tags["verdict/yolov5n"] == "baseline"
    assert sorted(children) == ["yolov5n", "yolov5n-decoupled"]
    for arm, child in children.items():
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id and child.data.tags["seed"] == "0"
        assert child.info.run_name == f"exp/{arm}/seed0" and child.info.status == "FINISHED"
        (row,) = results_rows(exp / arm / "seed0")
        assert child.data.metrics["metrics/mAP_0.5-0.95"] == pytest.approx(row["metrics/mAP_0.5:0.95"], abs=1e-5)
        assert {"weights/best.pt", "results.csv"} <= artifacts(store, child.info.run_id)

    group = read_tracking(exp)["wandb"]["group"]
    for arm in children:
        w = wandb_run(exp / arm / "seed0")
        assert (w["run"].run_group, w["run"].project) == (group, "cmp")
        assert {"arm:" + arm, "seed:0"} <= set(w["run"].tags)
    report = wandb_run(exp)
    assert report["run"].run_group == group and report["run"].job_type == "report"
    assert "report.html" in report["artifacts"]["report"]


# ---------------------------------------------------------------------------------------------- the hook alone
def stand_in_trainer(tmp_path: Path, resume: bool = False) -> SimpleNamespace:
    opt = Namespace(resume=resume, project=str(tmp_path / "runs" / "train"), hyp={"lr0": 0.01}, epochs=3)
    return SimpleNamespace(main=True, save_dir=tmp_path, opt=opt, loss_names=["box"])


def epoch_end(epoch: int, box: float) -> EpochEnd:
    results = SimpleNamespace(metrics=lambda: [0.5, 0.4, 0.3, 0.2], losses=[box / 2])
    return EpochEnd(epoch, 3, torch.tensor([box]), [0.01, 0.01, 0.01], 1.0, results=results)


def test_resume_continues_the_same_mlflow_run(tmp_path, mlflow_db):
    shutil.copy(mlflow_db, tmp_path / "m.db")
    first = MLflowLogger(str(tmp_path / "m.db"))  # a path ending in .db: that SQLite file
    first.before_train(stand_in_trainer(tmp_path))
    first.after_epoch(stand_in_trainer(tmp_path), epoch_end(0, 0.9))  # then the process is killed
    run_id = read_tracking(tmp_path)["mlflow"]["id"]
    again, trainer = MLflowLogger(str(tmp_path / "m.db")), stand_in_trainer(tmp_path, resume=True)
    again.before_train(trainer)
    again.after_epoch(trainer, epoch_end(1, 0.7))
    again.after_train(trainer)
    store = client(tmp_path / "m.db")
    assert len(store.search_runs([store.get_experiment_by_name("HeadZoo").experiment_id])) == 1
    history = store.get_metric_history(run_id, "train/box_loss")
    assert [(m.step, round(m.value, 6)) for m in history] == [(0, 0.9), (1, 0.7)]
    assert store.get_run(run_id).info.status == "FINISHED"


def test_a_tracker_failing_mid_run_is_switched_off_and_training_goes_on(tmp_path, mlflow_db, caplog):
    shutil.copy(mlflow_db, tmp_path / "m.db")
    logger = MLflowLogger(f"sqlite:///{tmp_path / 'm.db'}")
    trainer = stand_in_trainer(tmp_path)
    logger.before_train(trainer)

    def broken(*args, **kwargs):
        raise ConnectionError("server gone")

    logger.client.log_batch = broken
    logger.after_epoch(trainer, epoch_end(0, 0.9))
    assert not logger.active and "logging epoch metrics failed (ConnectionError: server gone)" in caplog.text
    logger.after_epoch(trainer, epoch_end(1, 0.8))  # off: no second error
    assert caplog.text.count("server gone") == 1


def test_tracker_flags_and_names(tmp_path, monkeypatch):
    assert logger_hooks(Namespace(mlflow=False, wandb=False)) == []
    hooks = logger_hooks(Namespace(mlflow=f"sqlite:///{tmp_path / 'x.db'}", wandb="offline"))
    assert [type(h) for h in hooks] == [MLflowLogger, WandbLogger] and hooks[1].mode == "offline"
    assert WandbLogger(True).mode is None  # bare --wandb: W&B's own choice
    with pytest.raises(ValueError, match="--wandb sometimes: expected one of online, offline, disabled"):
        WandbLogger("sometimes")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import fails as without the package
    with pytest.raises(ValueError, match="--mlflow needs the optional package 'mlflow': pip install mlflow"):
        logger_hooks(Namespace(mlflow=True, wandb=False))
    assert metric_name("metrics/mAP_0.5:0.95") == "metrics/mAP_0.5-0.95" and metric_name("x/lr0") == "x/lr0"
    assert project_name(ROOT / "runs" / "train") == "HeadZoo" and project_name("/data/my-runs") == "my-runs"


def test_tracker_flags_pass_through_compare_and_do_not_change_the_pairing(tmp_path):
    """--mlflow URI / --wandb MODE reach train.py through compare.py; adding them to a finished comparison's folder
    (--exist-ok) keeps its runs paired, as they change no training."""
    import compare

    opt, rest = compare.parse_opt(["--cfg", "a.yaml", "--project", str(tmp_path), "--epochs", "2"])
    compare.setup_experiment(opt, rest)
    opt, rest = compare.parse_opt(["--cfg", "a.yaml", "--project", str(tmp_path), "--epochs", "2", "--exist-ok",
                                   "--mlflow", "sqlite:///x.db", "--wandb", "offline"])
    exp, plan = compare.setup_experiment(opt, rest)
    assert exp == tmp_path / "exp" and plan["recipe"]["mlflow"] == "sqlite:///x.db"
    assert plan["recipe"]["wandb"] == "offline"
    assert compare.train_recipe(["--mlflow"])["mlflow"] is True and compare.train_recipe([])["mlflow"] is False
