"""EMA horizons side by side on one training run: the raw weights are the same whatever the EMA, so one run
that keeps several EMAs of them (each updated after every optimizer step, as train.py's) and validates each at
every epoch end measures what the EMA rule does to a head's val curve, with no second run and no noise from one.

    python bench/ema_horizon.py --cfg yolov5n-decoupled.yaml --seed 1 --epochs 20 --horizons 0 0.05 0.1 0.2 yolov5
    python bench/ema_horizon.py --cfg yolov5n.yaml --seed 1 --epochs 20 ...

Each horizon is a fraction of the run's optimizer updates (utils.torch_utils.ema_schedule's rule with that
fraction: tau = horizon / 5), ``0`` the raw weights (no EMA) and ``yolov5`` YOLOv5's decay 0.9999 / tau 2000.
The run itself trains and saves as train.py with the given flags (its own EMA is train.py's default); the
horizons are a training hook (utils/training/hooks.py) added to it.
Writes <run>/ema_horizon.json and prints, per horizon, each epoch's mAP50-95, the drops of mAP50 > 0.1 after
epoch 5 and best - final mAP50-95 (issue 13's stability figures).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import train  # noqa: E402
import val as validate  # noqa: E402
from utils.torch_utils import LOGGER, YOLOV5_EMA_DECAY, YOLOV5_EMA_TAU, ModelEMA  # noqa: E402
from utils.training.hooks import EpochEnd, Hook  # noqa: E402


class GrowingEMA(ModelEMA):
    """An EMA whose horizon is a fixed fraction ``f`` of the updates so far (decay 1 - 1 / (1 + f * updates),
    capped at YOLOv5's 0.9999): short while the weights change fast, long at the end of a run (the "EMA length
    relative to training time" of Karras et al., EDM2, 2024)."""

    def __init__(self, model, fraction: float):
        super().__init__(model)
        self.fraction = fraction

    def current_decay(self) -> float:
        return min(YOLOV5_EMA_DECAY, 1.0 - 1.0 / (1.0 + self.fraction * self.updates))


def horizon_schedule(name: str, total_updates: int) -> tuple[float, float]:
    """(decay, tau) of one horizon name: a fraction of the run's updates, 0 (raw weights) or 'yolov5'."""
    if name == "yolov5":
        return YOLOV5_EMA_DECAY, YOLOV5_EMA_TAU
    horizon = float(name) * total_updates
    if horizon <= 1:
        return 0.0, 1e-6
    return 1.0 - 1.0 / horizon, horizon / 5


class Horizons(Hook):
    """A training hook: one extra EMA per horizon, each updated after every optimizer step (after train.py's
    own) and validated after every epoch (after train.py's validation); the curves go to <run>/ema_horizon.json."""

    def __init__(self, horizons: list[str]):
        self.horizons = horizons
        self.extra: dict[str, ModelEMA] = {}
        self.curves: dict[str, list[dict]] = {name: [] for name in horizons}

    def before_train(self, trainer: train.Trainer) -> None:
        opt = trainer.opt
        updates = opt.epochs * math.ceil(len(trainer.train_loader) / max(round(train.NBS / opt.batch_size), 1))
        for name in self.horizons:
            if name.startswith("g"):  # g0.2: growing horizon, 20% of the updates so far
                self.extra[name] = GrowingEMA(trainer.model, float(name[1:]))
                LOGGER.info(f"horizon {name}: growing, {float(name[1:]):.0%} of the updates so far")
                continue
            ema = ModelEMA(trainer.model)
            ema.decay, ema.tau = horizon_schedule(name, updates)
            self.extra[name] = ema
            LOGGER.info(f"horizon {name}: decay {ema.decay:.4g}, tau {ema.tau:.4g}")

    def after_step(self, trainer: train.Trainer, ni: int, stepped: bool) -> None:
        if stepped:
            for ema in self.extra.values():
                ema.update(trainer.model)

    def after_epoch(self, trainer: train.Trainer, end: EpochEnd) -> None:
        opt = trainer.opt
        for name, ema in self.extra.items():
            ema.ema.on_epoch(train.EpochState(len(self.curves[name]), opt.epochs, trainer.dataset.mosaic))
            r = validate.run(trainer.data, batch_size=opt.batch_size * 2, imgsz=trainer.imgsz, model=ema.ema,
                             single_cls=opt.single_cls, dataloader=trainer.val_loader, save_dir=trainer.save_dir,
                             plots=False, criterion=trainer.criterion)
            self.curves[name].append({"p": r.mp, "r": r.mr, "map50": r.map50, "map": r.map,
                                      "maps": [round(float(x), 4) for x in r.maps],
                                      "val_loss": float(sum(r.losses))})
        (trainer.save_dir / "ema_horizon.json").write_text(json.dumps(self.curves, indent=1))


def stability(curve: list[dict]) -> tuple[int, float, float]:
    """(drops of mAP50 > 0.1 after epoch 5, best - final mAP50-95, final mAP50-95) of one curve."""
    m50 = [c["map50"] for c in curve]
    drops = sum(1 for e in range(6, len(m50)) if m50[e - 1] - m50[e] > 0.1)
    m = [c["map"] for c in curve]
    return drops, max(m) - m[-1], m[-1]


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--horizons", nargs="+", default=["0", "0.05", "0.1", "0.2", "yolov5"])
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    opt, rest = p.parse_known_args(argv)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    topt = train.resolve_opt(train.parse_opt(rest))
    hook = Horizons(opt.horizons)
    train.run(topt, hooks=[hook])
    print("\n| horizon | final decay | drops mAP50 > 0.1 after ep 5 | best - final mAP50-95 | final mAP50-95 | curve |")
    print("|---|---|---|---|---|---|")
    for name, curve in hook.curves.items():
        drops, gap, final = stability(curve)
        maps = " ".join(f"{c['map']:.3f}" for c in curve)
        decay = hook.extra[name].current_decay()
        print(f"| {name} | {decay:.4g} | {drops} | {gap:.4f} | {final:.3f} | {maps} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
