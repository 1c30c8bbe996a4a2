"""Training hooks: what a run does besides training, as objects the Trainer calls at six events.

The Trainer (train.py) owns the loop: set-up, epochs of batches (forward, backward, warmup, optimizer step), the
lr schedule. Everything else is a hook: the EMA update, precise BN, validation, early stopping and the best
fitness, results.csv, TensorBoard, checkpoints and the --compile report, and whatever a caller adds
(``train.run(opt, hooks=[...])``: compare.py's per-epoch record and time budget, bench/ema_horizon.py's extra EMAs,
a logger). In the spirit of detectron2's ``HookBase`` and YOLOv5's callbacks.

Events, in a run's order (``trainer`` is the Trainer; its attributes are the run's state):

    before_train(trainer)                 set-up done, before the first epoch (every rank)
    before_epoch(trainer, epoch)          the epoch's loader and head state set (every rank)
    before_step(trainer, ni)              batch ``ni`` (counted over the run) loaded, before its forward (every rank)
    after_step(trainer, ni, stepped)      its backward done; ``stepped``: the optimizer stepped (every rank)
    after_epoch(trainer, end)             the epoch's batches done and the lr scheduled (rank 0 only)
    after_train(trainer)                  the last epoch done or stopped (rank 0 only)

``end`` (``EpochEnd``) carries the epoch's figures from hook to hook: the hooks fill in the validation results,
the fitness and the stop decision in turn, and the Trainer sends rank 0's ``stop`` to every rank. Hooks run in
the order of their ``priority`` (lower first; equal: the order given). The built-in ones:

    10 EMAUpdate        after_step: the EMA follows the model (rank 0)
    20 PreciseBN        after_epoch: the EMA's BatchNorm statistics re-estimated (--precise-bn N)
    30 Validation       after_epoch: the EMA on the val set -> end.results, end.fitness; after_train: best.pt
    40 BestFitness      after_epoch: early stopping (--patience) -> end.stop; the best fitness so far
    50 ResultsCSV       after_epoch: a results.csv row; after_train: results.png
    55 TensorBoard      before_train: the graph; after_epoch: the row's scalars; after_train: the val images
    60 (a caller's hook, by default: it sees the validated, logged epoch before it is saved and may set end.stop)
    70 Checkpointer     after_epoch: last.pt / best.pt / epoch{N}.pt; after_train: optimizer stripped
    75 (--mlflow, --wandb) after_epoch: the row's metrics; after_train: plots, files, weights (utils/training/loggers/)
    80 CompileReport    before_step / after_step: --compile's first-step and compiled-step times
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from utils import LOGGER
from utils.evaluation.metrics import fitness
from utils.evaluation.plots import plot_results
from utils.io.checkpoint import load_checkpoint, save_checkpoint
from utils.io.results import results_header
from utils.io.tensorboard import TensorBoardLogger
from utils.torch_utils import has_batchnorm, precise_bn, time_sync
from utils.training.signals import deferred

Trainer = Any  # train.Trainer: its attributes are the run's state (utils never imports an entry point)

EVENTS = ("before_train", "before_epoch", "before_step", "after_step", "after_epoch", "after_train")


@dataclass
class EpochEnd:
    """One epoch's figures as they pass from hook to hook at ``after_epoch``."""

    epoch: int
    epochs: int  # of the run (the last epoch is epochs - 1)
    mloss: torch.Tensor  # mean training loss terms (criterion.loss_names), over every rank's images
    lrs: list[float]  # the epoch's learning rates per parameter group
    train_s: float  # seconds of the epoch's batches
    results: Any = None  # Validation: the EMA's val.ValResult (zeros when not validated)
    fitness: float | None = None  # Validation: 0.1 mAP50 + 0.9 mAP50-95
    stop: bool = False  # BestFitness, or any hook: end the run after this epoch
    bn_s: float = 0.0  # PreciseBN: seconds
    val_s: float = 0.0  # Validation: seconds
    extra: dict[str, Any] = field(default_factory=dict)  # a caller's hooks' own figures

    @property
    def final(self) -> bool:
        """The run's last scheduled epoch."""
        return self.epoch + 1 == self.epochs


class Hook:
    """A training hook: override the events it needs; every event is a no-op here."""

    priority = 60

    def before_train(self, trainer: Trainer) -> None:
        pass

    def before_epoch(self, trainer: Trainer, epoch: int) -> None:
        pass

    def before_step(self, trainer: Trainer, ni: int) -> None:
        pass

    def after_step(self, trainer: Trainer, ni: int, stepped: bool) -> None:
        pass

    def after_epoch(self, trainer: Trainer, end: EpochEnd) -> None:
        pass

    def after_train(self, trainer: Trainer) -> None:
        pass


class EMAUpdate(Hook):
    """The EMA (``trainer.ema``, sized to the run at set-up) follows the model after every optimizer step, on rank
    0: the only EMA that is validated and saved."""

    priority = 10

    def after_step(self, trainer: Trainer, ni: int, stepped: bool) -> None:
        if stepped and trainer.main:
            trainer.ema.update(trainer.model)


def bn_batches(dataset, batch_size: int, n: int, seed: int, epoch: int, device: torch.device,
               mosaic: bool | None = None):
    """``n`` train batches with ``epoch``'s augmentation (images drawn from a permutation of their own), as float
    tensors on ``device``, for precise BN. The train loader's order and augmentation draws are untouched.
    ``mosaic=False``: each image letterboxed on its own (the rest of the augmentation kept), the input
    distribution the model is validated and deployed on; None: as the training epoch has it."""
    order = np.random.default_rng([seed, epoch, 0x42]).permutation(len(dataset))[:n * batch_size]
    mosaic = dataset.mosaic if mosaic is None else mosaic
    keys = [(int(i), epoch, mosaic) for i in order]
    for k in range(0, len(keys), batch_size):
        imgs = dataset.collate_fn([dataset[key] for key in keys[k:k + batch_size]])[0]
        yield imgs.to(device, non_blocking=True).float() / 255


def refresh_bn(trainer: Trainer, epoch: int) -> float:
    """Precise BN: the EMA model's BatchNorm statistics re-estimated on --precise-bn train batches without mosaic
    (each train image letterboxed on its own, as val and deployment see images), in place, so validation and the
    saved weights use statistics that match the weights and the inputs. Returns the seconds it took (0: off)."""
    opt = trainer.opt
    if opt.precise_bn <= 0 or not has_batchnorm(trainer.ema.ema):
        return 0.0
    t0 = time.time()
    batches = bn_batches(trainer.dataset, opt.batch_size, opt.precise_bn, opt.seed, epoch, trainer.device,
                         mosaic=False)
    n = precise_bn(trainer.ema.ema, batches)
    seconds = time.time() - t0
    LOGGER.info(f"precise BN: statistics re-estimated on {n} train batches in {seconds:.1f} s")
    return seconds


class PreciseBN(Hook):
    priority = 20

    def after_epoch(self, trainer: Trainer, end: EpochEnd) -> None:
        end.bn_s = refresh_bn(trainer, end.epoch)


class Validation(Hook):
    """The EMA on the val set after every epoch (the final one with per-class results and plots; --noval: the
    final one only, zeros before), its fitness, and the per-class mAPs --image-weights reads (``trainer.maps``).
    After the run, best.pt is validated with plots unless it is the final epoch's EMA validated a moment ago."""

    priority = 30

    def after_epoch(self, trainer: Trainer, end: EpochEnd) -> None:
        t0 = time_sync(trainer.device)
        validated = end.final or not trainer.opt.noval
        end.results = trainer.evaluate(trainer.ema.ema if validated else None, final=end.final)
        if validated:
            trainer.maps = np.asarray(end.results.maps, dtype=float)
        end.val_s = time_sync(trainer.device) - t0
        end.fitness = float(fitness(np.array(end.results.metrics()).reshape(1, -1))[0])

    def after_train(self, trainer: Trainer) -> None:
        best = trainer.wdir / "best.pt"
        if trainer.best_validated:  # the same weights, validated with plots a moment ago: not again
            LOGGER.info(f"{best} is the final epoch's EMA: its validation above is the final one")
        elif best.exists() and not trainer.opt.noval:
            LOGGER.info(f"\nValidating {best}...")
            trainer.evaluate(trainer.load_weights(best), final=True)


class EarlyStopping:
    """Stop when fitness has not improved for ``patience`` epochs (0 disables)."""

    def __init__(self, patience: int = 30):
        self.best_fitness, self.best_epoch = 0.0, 0
        self.patience = patience or float("inf")

    def __call__(self, epoch: int, fitness_value: float) -> bool:
        if fitness_value >= self.best_fitness:
            self.best_epoch, self.best_fitness = epoch, fitness_value
        stop = epoch - self.best_epoch >= self.patience
        if stop:
            LOGGER.info(f"Stopping training early: no improvement in the last {self.patience} epochs; best "
                        f"results at epoch {self.best_epoch}. Use --patience 0 to disable.")
        return stop


class BestFitness(Hook):
    """Early stopping (--patience) and the run's best fitness (``trainer.best_fitness``, kept in checkpoints);
    ``trainer.best_validated``: the final epoch is the best, so its validation is the final report."""

    priority = 40

    def __init__(self, patience: int):
        self.stopper = EarlyStopping(patience)

    def after_epoch(self, trainer: Trainer, end: EpochEnd) -> None:
        end.stop = self.stopper(end.epoch, end.fitness) or end.stop
        trainer.best_validated = end.final and end.fitness >= trainer.best_fitness  # best.pt gets this epoch
        trainer.best_fitness = max(trainer.best_fitness, end.fitness)


def csv_values(end: EpochEnd) -> list[float]:
    """One epoch's results.csv values, the epoch first."""
    return [end.epoch, *end.mloss.tolist(), *end.results.metrics(), *end.results.losses, *end.lrs]


class ResultsCSV(Hook):
    """A results.csv row per epoch (a resumed run's file was cut to the epochs kept at set-up); results.png."""

    priority = 50

    def after_epoch(self, trainer: Trainer, end: EpochEnd) -> None:
        values = csv_values(end)
        new = not trainer.csv.exists()
        with open(trainer.csv, "a", newline="") as f:
            if new:
                f.write(",".join("%20s" % k for k in results_header(trainer.loss_names)) + "\n")
            f.write(",".join(["%20i" % end.epoch] + ["%20.5g" % v for v in values[1:]]) + "\n")

    def after_train(self, trainer: Trainer) -> None:
        if not trainer.opt.noplots and trainer.csv.exists():
            plot_results(trainer.csv)


class TensorBoard(Hook):
    """The run in TensorBoard (``tensorboard --logdir runs/train``): the graph, every results.csv row's scalars and
    the final validation's images; a no-op off rank 0 or without the package (utils/io/tensorboard.py)."""

    priority = 55

    def __init__(self):
        self.tb: TensorBoardLogger | None = None

    def before_train(self, trainer: Trainer) -> None:
        self.tb = TensorBoardLogger(trainer.save_dir, enabled=trainer.main)
        self.tb.graph(trainer.model, trainer.imgsz)

    def after_epoch(self, trainer: Trainer, end: EpochEnd) -> None:
        self.tb.scalars(dict(zip(results_header(trainer.loss_names)[1:], csv_values(end)[1:])), end.epoch)

    def after_train(self, trainer: Trainer) -> None:
        if trainer.best_validated or ((trainer.wdir / "best.pt").exists() and not trainer.opt.noval):
            self.tb.images(sorted(trainer.save_dir.glob("val_batch*_pred.jpg")), trainer.opt.epochs - 1)
        self.tb.close()


class Checkpointer(Hook):
    """last.pt after every epoch (--nosave: the final or stopping one only), best.pt when the epoch is the best so
    far, epoch{N}.pt every --save-period epochs; after the run, last.pt and best.pt lose the optimizer and keep the
    EMA as their model (YOLOv5's strip_optimizer)."""

    priority = 70

    def after_epoch(self, trainer: Trainer, end: EpochEnd) -> None:
        opt = trainer.opt
        if opt.nosave and not (end.final or end.stop):
            return
        ckpt = trainer.checkpoint(end.epoch)
        with deferred():  # a SIGTERM / Ctrl-C waits for the epoch's checkpoints (utils/training/signals.py)
            save_checkpoint(ckpt, trainer.wdir / "last.pt")
            if trainer.best_fitness == end.fitness:
                save_checkpoint(ckpt, trainer.wdir / "best.pt")
            if opt.save_period > 0 and end.epoch % opt.save_period == 0:
                save_checkpoint(ckpt, trainer.wdir / f"epoch{end.epoch}.pt")

    def after_train(self, trainer: Trainer) -> None:
        with deferred():
            for f in (trainer.wdir / "last.pt", trainer.wdir / "best.pt"):
                if f.exists():
                    ckpt = load_checkpoint(f)
                    ckpt.update(model=ckpt["ema"], ema=None, optimizer=None, updates=0, epoch=-1)
                    save_checkpoint(ckpt, f)


class CompileReport(Hook):
    """--compile: the first step's time (tracing and code generation included), the compile overhead (first minus
    second) and a compiled step's time, logged after the second step (bench/README.md: --compile). A step is the
    forward and backward and, on a batch that ends an accumulation, the optimizer step and the EMA update."""

    priority = 80

    def __init__(self):
        self.t0, self.first = 0.0, 0.0

    def _k(self, trainer: Trainer, ni: int) -> int:
        return ni - trainer.nb * trainer.start_epoch  # step of this process's run (a resumed run counts anew)

    def before_step(self, trainer: Trainer, ni: int) -> None:
        if self._k(trainer, ni) < 2:
            self.t0 = time_sync(trainer.device)

    def after_step(self, trainer: Trainer, ni: int, stepped: bool) -> None:
        k = self._k(trainer, ni)
        if k >= 2:
            return
        seconds = time_sync(trainer.device) - self.t0
        if k == 0:
            self.first = seconds
            return
        LOGGER.info(f"--compile: first step {self.first:.1f} s (compilation {self.first - seconds:.1f} s), "
                    f"compiled step {seconds:.2f} s")


def default_hooks(opt) -> list[Hook]:
    """The hooks every run has, from train.py's options."""
    hooks = [EMAUpdate(), PreciseBN(), Validation(), BestFitness(opt.patience), ResultsCSV(), TensorBoard(),
             Checkpointer()]
    return hooks + ([CompileReport()] if opt.compile else [])


def ordered(hooks: list[Hook]) -> list[Hook]:
    """Hooks by priority, stable: equal priorities keep the order given."""
    for h in hooks:
        if not isinstance(h, Hook):
            raise TypeError(f"a training hook must subclass utils.training.hooks.Hook, got {type(h).__name__}")
    return sorted(hooks, key=lambda h: h.priority)
