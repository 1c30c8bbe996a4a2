"""Precise BN and the run-sized EMA (issue: the decoupled head's validation collapses).

The mechanism: a model validated with BatchNorm running statistics that do not match its weights scores
badly although its weights are fine; re-estimating the statistics on train batches restores it."""
import math

import pytest
import torch

import train
import val as validate
from utils.training.hooks import refresh_bn
from utils.torch_utils import YOLOV5_EMA_DECAY, YOLOV5_EMA_TAU, ema_schedule, precise_bn


def make_trainer(data, tmp_path, *extra):
    opt = train.parse_opt(["--cfg", "yolov5n-decoupled.yaml", "--data", str(data), "--epochs", "2", "--imgsz", "64",
                           "--batch-size", "4", "--workers", "0", "--noautoanchor", "--noplots",
                           "--project", str(tmp_path), "--name", "exp", *extra])
    return train.Trainer(train.resolve_opt(opt))


def val_loss(t) -> float:
    r = validate.run(t.data, batch_size=8, imgsz=t.imgsz, model=t.ema.ema, dataloader=t.val_loader,
                     save_dir=t.save_dir, plots=False, criterion=t.criterion)
    return float(sum(r.losses))


def bn_stats(model):
    return [torch.cat([m.running_mean, m.running_var]).clone() for m in model.modules()
            if isinstance(m, torch.nn.BatchNorm2d)]


def test_corrupted_bn_statistics_validate_badly_and_precise_bn_restores_them(tiny_data, tmp_path):
    t = make_trainer(tiny_data, tmp_path, "--precise-bn", "4")
    refresh_bn(t, 0)  # statistics that match the weights
    good = val_loss(t)
    reference = bn_stats(t.ema.ema)
    g = torch.Generator().manual_seed(0)
    stale = [torch.rand(4, 3, 64, 64, generator=g) * 3 for _ in range(2)]  # statistics of other inputs
    precise_bn(t.ema.ema, stale)
    corrupted = val_loss(t)
    assert corrupted > 1.5 * good, (good, corrupted)
    seconds = refresh_bn(t, 0)
    assert val_loss(t) == pytest.approx(good, rel=1e-4)
    for a, b in zip(bn_stats(t.ema.ema), reference):  # same batches, same statistics
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert seconds > 0


def test_precise_bn_leaves_the_training_data_untouched(tiny_data, tmp_path):
    """Drawing the BN batches must not move the train loader's order or augmentation draws."""
    t = make_trainer(tiny_data, tmp_path)
    t.dataset.set_epoch(0)
    before = next(iter(t.train_loader))[0]
    list(train.bn_batches(t.dataset, 4, 2, 0, 0, t.device))
    t.dataset.set_epoch(0)
    assert torch.equal(next(iter(t.train_loader))[0], before)
    batches = list(train.bn_batches(t.dataset, 4, 3, 0, 1, t.device))
    assert len(batches) == 3 and batches[0].dtype == torch.float32 and float(batches[0].max()) <= 1.0


def test_precise_bn_off_and_models_without_batchnorm():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.GroupNorm(2, 4))
    drawn = []

    def batches():
        drawn.append(1)
        yield torch.rand(2, 3, 4, 4)

    assert precise_bn(model, batches()) == 0 and not drawn  # nothing to estimate: no batch is even loaded


def test_ema_schedule_keeps_yolov5_on_long_runs_and_engages_on_short_ones():
    coco = 300 * math.ceil(118287 / 64)
    assert ema_schedule(coco) == pytest.approx((YOLOV5_EMA_DECAY, YOLOV5_EMA_TAU))  # YOLOv5's on COCO-length runs
    assert ema_schedule(50_000) == pytest.approx((YOLOV5_EMA_DECAY, YOLOV5_EMA_TAU))  # 20% reaches YOLOv5's cap
    decay, tau = ema_schedule(20 * 32)  # the built-in dataset, 20 epochs: four epochs of updates
    assert 1 / (1 - decay) == pytest.approx(128) and tau == pytest.approx(128 / 5)
    assert decay * (1 - math.exp(-128 / tau)) > 0.99 * decay  # engaged within the first four epochs
    assert 1 / (1 - ema_schedule(10 * 32)[0]) == pytest.approx(64)  # 10 epochs: two epochs
    assert ema_schedule(640, decay=0.9999, tau=2000) == (0.9999, 2000)  # YOLOv5's exact behaviour on request
    assert ema_schedule(4) == (0.0, pytest.approx(0.2))  # too short to average: the EMA is the model


def test_decoupled_head_group_norm_row_builds_and_fuses():
    import yaml

    from models.yolo import DetectionModel
    cfg = yaml.safe_load(open(train.ROOT / "models" / "yolov5n-decoupled.yaml"))
    cfg["head"][-1][3] = ["nc", "anchors", 256, "gn"]
    model = DetectionModel(cfg, nc=4).eval()
    gn = [m for m in model.head.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(gn) == 15 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.head.modules())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        y = model(x)[0]
        model.fuse()
        torch.testing.assert_close(model(x)[0], y, rtol=1e-3, atol=1e-2)
    cfg["head"][-1][3] = ["nc", "anchors", 256, "ln"]
    with pytest.raises(ValueError, match="norm 'ln' not understood"):
        DetectionModel(cfg, nc=4)
