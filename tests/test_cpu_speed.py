"""Issue 18's training defaults on the CPU: the thread/worker rule, the automatic RAM image cache, channels_last
training with contiguous checkpoints, the EMA's fused update, the final epoch's validation standing in for
best.pt's, and --compile seeing the same batches as eager."""
import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.data import dataloaders
from utils.data.dataloaders import check_dataset, create_dataloader
from utils.torch_utils import CPUS_ENV, ModelEMA, cpu_training_plan, plain_state, usable_cpus

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("cores", "omp", "workers", "batch", "expected"), [
    (1, None, 8, 16, (1, 0)),   # one core computes
    (2, None, 8, 16, (2, 0)),   # this machine: both cores compute, the main process loads
    (4, None, 8, 16, (3, 1)),   # a quarter of the cores load
    (16, None, 8, 16, (12, 4)),
    (16, None, 2, 16, (12, 2)),  # --workers caps them
    (16, None, 8, 2, (12, 2)),   # so does the batch
    (8, "2", 8, 16, (2, 6)),     # OMP_NUM_THREADS fixes the threads, the other cores load
    (2, "1", 8, 16, (1, 1)),
])
def test_cpu_training_plan_rule(monkeypatch, cores, omp, workers, batch, expected):
    monkeypatch.setenv(CPUS_ENV, str(cores))
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert usable_cpus() == cores
    assert cpu_training_plan(workers, batch) == expected
    threads, loaders = cpu_training_plan(workers, batch, processes=2)  # torchrun: each process gets half
    assert threads + loaders <= max(cores // 2, 1) or omp is not None


def test_usable_cpus_follows_affinity(monkeypatch):
    monkeypatch.delenv(CPUS_ENV, raising=False)
    assert usable_cpus() == len(__import__("os").sched_getaffinity(0))


def test_cache_auto_keeps_small_sets_in_ram_and_skips_large_ones(tiny_data, monkeypatch, caplog):
    data = check_dataset(str(tiny_data))
    _, plain = create_dataloader(data["train"], 64, 4, 32, hyp=None, augment=False, workers=0)
    _, cached = create_dataloader(data["train"], 64, 4, 32, hyp=None, augment=False, workers=0, cache="auto")
    assert all(im is None for im in plain.ims) and all(im is not None for im in cached.ims)
    for i in (0, 5):  # the cache holds exactly what loading would give
        a, b = plain[i], cached[i]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    monkeypatch.setattr(dataloaders, "AUTO_CACHE_SHARE", 1e-12)
    with caplog.at_level("INFO"):
        _, skipped = create_dataloader(data["train"], 64, 4, 32, hyp=None, augment=False, workers=0, cache="auto")
    assert all(im is None for im in skipped.ims)
    assert "--cache auto: images not cached" in caplog.text
    with pytest.raises(ValueError, match="cache must be"):
        create_dataloader(data["train"], 64, 4, 32, cache="gpu", workers=0)


def test_ema_update_is_the_weighted_average():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ema = ModelEMA(model, decay=0.9, tau=1.0)
    before = {k: v.clone() for k, v in ema.ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    d = ema.current_decay()
    for k, v in ema.ema.state_dict().items():
        if v.dtype.is_floating_point:
            torch.testing.assert_close(v, d * before[k] + (1 - d) * model.state_dict()[k])
        else:  # e.g. num_batches_tracked: not averaged
            assert torch.equal(v, before[k])


def test_channels_last_model_matches_contiguous_and_saves_contiguous():
    from models.yolo import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolov5n.yaml", nc=4).train()
    x = torch.rand(2, 3, 64, 64)
    ref = model(x)
    cl = model.to(memory_format=torch.channels_last)
    assert cl.model[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(ref, cl(x.contiguous(memory_format=torch.channels_last))):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    state = plain_state(cl)
    assert all(v.is_contiguous() for v in state.values())
    assert state["model.0.conv.weight"].data_ptr() != cl.model[0].conv.weight.data_ptr()  # a copy


def run_train(data: Path, project: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    args = ["--cfg", "yolov5n.yaml", "--data", str(data), "--epochs", "1", "--imgsz", "64", "--batch-size", "4",
            "--project", str(project), "--name", name, "--noautoanchor", *extra]
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def train_losses(run: Path) -> list[float]:
    with open(run / "results.csv") as f:
        row = next(csv.DictReader(f))
    return [float(v) for k, v in row.items() if k.strip().startswith("train/")]


def test_one_epoch_run_validates_once_with_plots_and_compile_sees_the_same_batches(tiny_data, tmp_path):
    out = run_train(tiny_data, tmp_path, "eager")
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "its validation above is the final one" in log and "Validating" not in log
    threads, workers = cpu_training_plan(8, 4)  # the rule, in this environment (OMP_NUM_THREADS=1 in tests)
    assert f"CPU: {threads} torch thread(s), {workers} dataloader worker(s)" in log
    run = tmp_path / "eager"
    for f in ("confusion_matrix.png", "PR_curve.png", "val_batch0_pred.jpg", "results.png"):
        assert (run / f).is_file(), f
    ckpt = torch.load(run / "weights" / "best.pt", weights_only=True)
    assert all(v.is_contiguous() for v in ckpt["model"].values())
    # --compile with the eager backend runs the same arithmetic: identical batches give identical losses
    comp = run_train(tiny_data, tmp_path, "compiled", "--compile", "eager", "--noplots")
    assert comp.returncode == 0, comp.stderr[-3000:]
    assert "--compile: first step" in comp.stdout + comp.stderr
    np.testing.assert_allclose(train_losses(tmp_path / "compiled"), train_losses(run), rtol=1e-5)
