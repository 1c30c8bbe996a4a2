"""Train a detector on a dataset, with YOLOv5's flags, run folder and outputs.

    python train.py --cfg yolov5s-decoupled.yaml                       # the built-in shapes dataset
    python train.py --cfg yolov5n.yaml --data my.yaml --weights yolov5n.pt --epochs 50
    python train.py --resume                                           # continue the newest run
    python train.py --cfg yolov5n.yaml --epochs 10 --evolve 50         # 50 generations of hyp evolution
    torchrun --nproc_per_node 4 train.py --cfg yolov5s.yaml --batch-size 64 --device 0,1,2,3   # DDP, 16 per GPU

The loop knows no head: the model hands out its criterion (``model.criterion(hyp)``) and the loss
names that become the results.csv columns.
"""
from __future__ import annotations

import argparse
import logging
import math
import shutil
import sys
import time
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.optim import lr_scheduler
from tqdm import tqdm

import val as validate
from models.heads import all_hyp_keys
from models.heads.base import EpochState
from models.tv import is_torchvision_detector, torchvision_to_rows
from models.yolo import DetectionModel, head_class, load_cfg
from utils.data.augmentations import round_to_stride
from utils.data.dataloaders import (
    check_dataset,
    create_dataloader,
    label_wh,
    labels_to_class_weights,
    labels_to_image_weights,
)
from utils.evaluation.plots import plot_images, plot_labels
from utils.io.checkpoint import (
    disk_full_cause,
    load_checkpoint,
    transfer_weights,
)
from utils.io.files import find_in_dir, increment_path, latest_run, yaml_load, yaml_save
from utils.io.hyp import check_hyp, evolve_meta
from utils.io.lock import FolderLock
from utils.io.results import METRICS, truncate_results
from utils.torch_utils import (
    LOGGER,
    autocast_dtype,
    to_float,
    DistContext,
    ModelEMA,
    broadcast_object,
    cpu_training_plan,
    dist_backend,
    ema_schedule,
    init_distributed,
    init_seeds,
    main_process_first,
    plain_state,
    reduce_mean,
    select_device,
    smart_optimizer,
    time_sync,
    usable_cpus,
)
from utils.training import signals
from utils.training.evolve import evolve
from utils.training.faults import disk_full_message, stopped_message
from utils.training.hooks import EpochEnd, Hook, bn_batches, default_hooks, ordered  # noqa: F401 (bn_batches: train.bn_batches)
from utils.training.loggers import logger_hooks
from utils.training.options import check_opt, train_parser
from utils.training.schedules import multi_scale_size, one_cycle
from utils.training.signals import Interrupted

ROOT = Path(__file__).resolve().parent
NBS = 64  # nominal batch size: gradients are accumulated to it
def build_model(opt: argparse.Namespace, ckpt: dict | None, nc: int, names: dict, hyp: dict) -> DetectionModel:
    """The model of --cfg (or the checkpoint's YAML) with the --weights transferred into it (all of a --resume
    checkpoint; what the head keeps of another), the frozen layers (--freeze, the YAML's own) without gradients."""
    cfg = opt.cfg or (ckpt or {}).get("yaml")
    if not cfg:
        raise ValueError("give a model: --cfg yolov5s.yaml (or another YAML) and/or --weights file.pt")
    model = DetectionModel(cfg, ch=3, nc=nc, hyp=hyp, verbose=True)
    model.names = names
    if ckpt is not None:
        src = ckpt.get("ema") if ckpt.get("ema") is not None and not opt.resume else ckpt["model"]
        if ckpt["format"] == "state_dict" and is_torchvision_detector(src):  # fasterrcnn_*.pth: into our rows
            src = torchvision_to_rows(src, model.model)
        exclude = () if opt.resume else model.head.transfer_exclude(hyp, new_cfg=bool(opt.cfg))
        sd, report = transfer_weights(src, ckpt.get("yaml") or {}, model.state_dict(), model.yaml, exclude)
        model.load_state_dict(sd, strict=False)
        LOGGER.info(report.summary(opt.weights))
        for line in report.lines():
            LOGGER.info(line)
    freeze = [f"model.{x}." for x in (opt.freeze if len(opt.freeze) > 1 else range(opt.freeze[0]))]
    built_frozen = model.frozen_parameters()  # e.g. a torchvision trunk's untrained stages
    for k, v in model.named_parameters():
        v.requires_grad = k not in built_frozen
        if any(k.startswith(f) for f in freeze):
            LOGGER.info(f"freezing {k}")
            v.requires_grad = False
    return model


def wrap_model(model: DetectionModel, opt: argparse.Namespace, dist: DistContext,
               device: torch.device) -> tuple[DetectionModel, torch.nn.Module]:
    """(model, what batches go through): under torchrun the model in DistributedDataParallel (its constructor
    broadcasts rank 0's weights and buffers, AutoAnchor's anchors included), with --sync-bn its BatchNorms
    SyncBatchNorm first (the EMA copy keeps plain BatchNorm: it is only run on rank 0); one process: the model."""
    if not dist.ddp:
        if opt.sync_bn:
            LOGGER.warning("--sync-bn: one process has no BatchNorm statistics to sync, ignored (torchrun)")
        return model, model
    if opt.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the same model, its BNs swapped
        LOGGER.info(f"--sync-bn: BatchNorm statistics synced over {dist.world_size} processes")
    LOGGER.info(f"DDP: {dist.world_size} processes, {opt.batch_size // dist.world_size} images each of a batch of "
                f"{opt.batch_size}")
    ids = [device.index] if device.type == "cuda" else None
    return model, DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)


def build_loaders(opt: argparse.Namespace, data: dict, imgsz: int, gs: int, hyp: dict, dist: DistContext,
                  device: torch.device) -> tuple:
    """(train loader, train dataset, val loader or None): the train loader gives this rank its share of each batch,
    rank 0 alone gets a val loader. On a CPU the cores go to the model's threads first (``cpu_training_plan``)."""
    cache = None if opt.cache in (None, "none") else opt.cache
    if device.type == "cpu":  # cores to compute first (cpu_training_plan's rule)
        threads, workers = cpu_training_plan(opt.workers, opt.batch_size // dist.world_size, dist.local_world_size)
        torch.set_num_threads(threads)
        LOGGER.info(f"CPU: {threads} torch thread(s), {workers} dataloader worker(s) on {usable_cpus()} usable "
                    f"core(s) (--workers caps the workers; OMP_NUM_THREADS sets the threads)")
    else:  # YOLOv5's rule: the GPU computes, the cores load
        cpus = max(usable_cpus() // dist.local_world_size, 1)  # a node's cores are shared by its processes
        workers = min(opt.workers, opt.batch_size // dist.world_size, cpus)
    with main_process_first(dist):  # rank 0 writes the label cache, the others read it
        train_loader, dataset = create_dataloader(
            data["train"], imgsz, opt.batch_size, gs, hyp=hyp, augment=True, cache=cache, rect=opt.rect,
            workers=workers, shuffle=True, single_cls=opt.single_cls, seed=opt.seed, prefix="train: ",
            names=data["names"], rank=dist.rank, world_size=dist.world_size)
    if not dist.main:
        return train_loader, dataset, None
    val_loader = create_dataloader(data["val"], imgsz, opt.batch_size * 2, gs, hyp=hyp,
                                   cache=None if opt.noval else cache, rect=True, pad=0.5, workers=workers,
                                   single_cls=opt.single_cls, prefix="val: ", names=data["names"])[0]
    return train_loader, dataset, val_loader


def checked_labels(dataset, nc: int, train: str, data: str) -> np.ndarray:
    """Every label of the train set, (n, 5); an error when there is none or a class is not below ``nc``."""
    labels = np.concatenate([lb for lb in dataset.labels if len(lb)] or [np.zeros((0, 5))], 0)
    if len(labels) == 0:
        raise ValueError(f"no labels found in {train}: training needs labelled images")
    if labels[:, 0].max() >= nc:
        raise ValueError(f"label class {int(labels[:, 0].max())} exceeds nc={nc} in {data}; classes are 0 to "
                         f"{nc - 1}")
    return labels


def size_ema(ema: ModelEMA, opt: argparse.Namespace, batches: int) -> None:
    """EMA decay and tau for this run's length (``ema_schedule``), unless --ema-decay/--ema-tau fix them."""
    updates = opt.epochs * math.ceil(batches / max(round(NBS / opt.batch_size), 1))
    ema.decay, ema.tau = ema_schedule(updates, opt.ema_decay, opt.ema_tau)
    LOGGER.info(f"EMA: decay {ema.decay:.4g}, tau {ema.tau:.4g} updates (~{updates} updates in {opt.epochs} "
                f"epochs); precise BN: {opt.precise_bn} train batches before each validation")


def amp_loss(net: torch.nn.Module, criterion, imgs: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype | None,
             device_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's loss under the run's precision: CUDA FP16 autocast as YOLOv5 (the loss inside it), CPU BF16 (the
    model in BF16, its outputs cast back and the loss in FP32), or FP32 (``dtype`` None)."""
    if dtype is torch.bfloat16:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(imgs, targets)
        return criterion(to_float(out), targets)
    with torch.autocast(device_type, enabled=dtype is not None):
        return criterion(net(imgs, targets), targets)


class Trainer:
    """One training run: set up, then epochs of batches, each followed by its hooks (validate, log, save: see
    utils/training/hooks.py for the events and the built-in hooks), then the hooks' end of the run.

    Under torchrun (DDP) every rank trains on its share of each batch; rank 0 alone runs the epoch-end and run-end
    hooks (writes the run folder, logs, validates, plots, saves) and keeps the EMA (from its model, whose weights
    DDP keeps equal on every rank), and its end-of-epoch decisions (stop, the per-class mAPs --image-weights reads)
    go to all. ``hooks`` are added to the built-in ones (``default_hooks``) and run in order of priority."""

    def __init__(self, opt: argparse.Namespace, hooks: list[Hook] | tuple = ()):
        self.opt = opt
        self.hooks = ordered([*default_hooks(opt), *logger_hooks(opt), *hooks])
        self.dist = DistContext.current()  # rank 0 of 1 unless launched by torchrun
        self.main = self.dist.main
        self.save_dir = Path(opt.save_dir)
        self.wdir = self.save_dir / "weights"
        if self.main:
            self.wdir.mkdir(parents=True, exist_ok=True)
        self.csv = self.save_dir / "results.csv"
        self.device = select_device(opt.device, opt.batch_size, self.dist.local_rank, self.dist.local_world_size)
        self.amp_dtype = autocast_dtype(opt.amp, self.device)  # FP16 (CUDA), BF16 (CPU, --amp) or None (FP32)
        self.amp = opt.amp = self.amp_dtype is not None  # opt.yaml and checkpoints record the precision trained at
        LOGGER.info(f"Precision: {str(self.amp_dtype)[6:]} autocast" if self.amp else "Precision: FP32")
        self.hyp = yaml_load(opt.hyp) if isinstance(opt.hyp, (str, Path)) else dict(opt.hyp)
        init_seeds(opt.seed, deterministic=True)
        with main_process_first(self.dist):  # the first use of a generated dataset writes it
            self.data = check_dataset(opt.data)
        self.nc = 1 if opt.single_cls else int(self.data["nc"])
        self.names = {0: "item"} if opt.single_cls else dict(self.data["names"])
        self.ckpt = load_checkpoint(opt.weights) if opt.weights else None
        self.model = build_model(opt, self.ckpt, self.nc, self.names, self.hyp)
        self.memory_format = torch.channels_last if opt.channels_last else torch.contiguous_format
        self.model.to(self.device, memory_format=self.memory_format)
        check_hyp(self.hyp, all_hyp_keys(), str(opt.hyp))  # every head's keys: one hyp file serves every arm
        self.gs = max(int(self.model.stride.max()), 32)
        self.imgsz = round_to_stride(opt.imgsz, self.gs, floor=2 * self.gs)
        if self.imgsz != opt.imgsz:
            LOGGER.warning(f"--imgsz {opt.imgsz} must be a multiple of max stride {self.gs}, updating to {self.imgsz}")
        self.accumulate = max(round(NBS / opt.batch_size), 1)
        self.hyp["weight_decay"] *= opt.batch_size * self.accumulate / NBS
        self.optimizer = smart_optimizer(self.model, opt.optimizer, self.hyp["lr0"], self.hyp["momentum"],
                                         self.hyp["weight_decay"])
        self.lf = (one_cycle(1, self.hyp["lrf"], opt.epochs) if opt.cos_lr
                   else lambda x: (1 - x / opt.epochs) * (1.0 - self.hyp["lrf"]) + self.hyp["lrf"])
        self.scheduler = lr_scheduler.LambdaLR(self.optimizer, lr_lambda=self.lf)
        self.ema = ModelEMA(self.model)
        self.start_epoch, self.best_fitness = 0, 0.0
        self.best_validated = False  # best.pt is the final epoch's EMA and that validation made the final report
        if opt.resume:
            self._restore_training_state()
        self.train_loader, self.dataset, self.val_loader = build_loaders(opt, self.data, self.imgsz, self.gs,
                                                                         self.hyp, self.dist, self.device)
        labels = checked_labels(self.dataset, self.nc, self.data["train"], opt.data)
        if self.main and not opt.resume:
            self._first_look(labels)
        size_ema(self.ema, opt, len(self.train_loader))
        self.model, self.net = wrap_model(self.model, opt, self.dist, self.device)  # net: the model, or it in DDP
        if opt.compile:  # the EMA copy (validation) and the checkpoints keep the plain module
            LOGGER.info(f"--compile: torch.compile(backend={opt.compile!r}); the first batches compile (timed below)")
            self.net = torch.compile(self.net, backend=opt.compile)
        self.criterion = self.model.criterion(self.hyp, self.imgsz, opt.label_smoothing)
        self.loss_names = list(self.criterion.loss_names)
        self.maps = np.zeros(self.nc)  # per-class mAP50-95 of the last validation (--image-weights)

    # ------------------------------------------------------------------ set-up
    def _restore_training_state(self) -> None:
        ckpt = self.ckpt
        if ckpt.get("epoch", -1) < 0 or ckpt.get("optimizer") is None:
            raise ValueError(f"{self.opt.weights} training is finished, nothing to resume; start a new run "
                             f"with --weights {self.opt.weights}")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.best_fitness = float(ckpt.get("best_fitness") or 0.0)
        if ckpt.get("ema") is not None:
            self.ema.ema.load_state_dict({k: v.float() for k, v in ckpt["ema"].items()})
            self.ema.updates = int(ckpt.get("updates") or 0)
        self.start_epoch = int(ckpt["epoch"]) + 1
        LOGGER.info(f"Resuming training from {self.opt.weights} at epoch {self.start_epoch} of {self.opt.epochs}")
        if self.main:
            truncate_results(self.csv, self.start_epoch)

    def _first_look(self, labels: np.ndarray) -> None:
        """Rank 0 of a new run: the labels plot and AutoAnchor (its anchors reach the other ranks with DDP)."""
        if not self.opt.noplots:
            plot_labels(labels, self.names, self.save_dir)
        if not self.opt.noautoanchor:
            wh = label_wh(self.dataset.shapes, self.dataset.labels, self.imgsz, np.random.default_rng(self.opt.seed))
            self.model.head.fit_priors(wh, self.hyp)

    # ------------------------------------------------------------------ the story of a run
    def call(self, event: str, *args) -> None:
        """Every hook's ``event`` (utils/training/hooks.py), in order."""
        for hook in self.hooks:
            getattr(hook, event)(self, *args)

    def fit(self) -> validate.ValResult | None:
        """Train; the last validation's results (None on DDP ranks other than 0, which do not validate)."""
        opt = self.opt
        self.nb = nb = len(self.train_loader)
        self.nw = max(round(self.hyp["warmup_epochs"] * nb), 100) if self.hyp["warmup_epochs"] > 0 else -1
        self.scheduler.last_epoch = self.start_epoch - 1
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)  # BF16 needs no scaling
        self.last_opt_step = -1
        LOGGER.info(f"Image sizes {self.imgsz} train, {self.imgsz} val\nUsing {self.train_loader.num_workers} "
                    f"dataloader workers\nLogging results to {self.save_dir}\nStarting training for "
                    f"{opt.epochs} epochs...")
        self.call("before_train")
        t0, results = time.time(), None
        for epoch in range(self.start_epoch, opt.epochs):
            t_epoch = time_sync(self.device)
            mloss = self.train_epoch(epoch)
            train_s = time_sync(self.device) - t_epoch
            lrs = [g["lr"] for g in self.optimizer.param_groups]
            self.scheduler.step()
            stop = False
            if self.main:
                end = EpochEnd(epoch, opt.epochs, mloss, lrs, train_s)
                self.call("after_epoch", end)
                results, stop = end.results, end.stop
            stop, self.maps = broadcast_object((stop, self.maps) if self.main else None)  # rank 0's, on every rank
            if stop:
                break
        LOGGER.info(f"\n{epoch - self.start_epoch + 1} epochs completed in {(time.time() - t0) / 3600:.3f} hours.")
        if self.main:
            self.call("after_train")
            LOGGER.info(f"Results saved to {self.save_dir}")
        return results

    def begin_epoch(self, epoch: int) -> None:
        """Epoch set-up: the loader's epoch, mosaic closing, image weights, the head's epoch-switched behaviour."""
        opt = self.opt
        self.net.train()
        self.dataset.set_epoch(epoch)
        if opt.close_mosaic and epoch >= opt.epochs - opt.close_mosaic and self.dataset.mosaic:
            LOGGER.info(f"Closing mosaic/mixup for the last {opt.close_mosaic} epochs")
            self.dataset.close_mosaic()
        if opt.image_weights:
            self.weight_images()
        state = EpochState(epoch, opt.epochs, mosaic=self.dataset.mosaic)
        self.model.on_epoch(state)  # the head's epoch-switched behaviour (and the EMA copy's, for validation)
        self.ema.ema.on_epoch(state)
        self.criterion.on_epoch(state)
        self.call("before_epoch", epoch)

    def weight_images(self) -> None:
        """--image-weights (YOLOv5): a class weighs its normalised inverse label frequency x (1 - its last
        mAP50-95)^2, an image the sum over its labels; the sampler draws the epoch's images in proportion to it."""
        cw = labels_to_class_weights(self.dataset.labels, self.nc) * (1 - self.maps) ** 2  # YOLOv5's x nc / nc cancel
        self.train_loader.sampler.weights = labels_to_image_weights(self.dataset.labels, self.nc, cw)

    def rescale(self, imgs: torch.Tensor, epoch: int, i: int) -> torch.Tensor:
        """--multi-scale: the batch resized (bilinear) to ``multi_scale_size``; labels are normalised, unchanged."""
        sz = multi_scale_size(self.imgsz, self.gs, self.opt.seed, epoch, i)
        sf = sz / max(imgs.shape[2:])
        if sf == 1:
            return imgs
        ns = [math.ceil(x * sf / self.gs) * self.gs for x in imgs.shape[2:]]
        return F.interpolate(imgs, size=ns, mode="bilinear", align_corners=False)

    def train_epoch(self, epoch: int) -> torch.Tensor:
        opt, nb = self.opt, len(self.train_loader)
        self.begin_epoch(epoch)
        mloss = torch.zeros(len(self.loss_names), device=self.device)
        header = ("%11s" * 2 + "%11s" * len(self.loss_names) + "%11s" * 2) % (
            "Epoch", "mem", *self.loss_names, "Instances", "Size")
        LOGGER.info(header)
        pbar = tqdm(enumerate(self.train_loader), total=nb, bar_format="{l_bar}{bar:10}{r_bar}",
                    disable=not self.main)
        self.optimizer.zero_grad()
        for i, (imgs, targets, paths, _) in pbar:
            ni = i + nb * epoch
            imgs = imgs.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format).float() / 255
            targets = targets.to(self.device)
            if opt.multi_scale:
                imgs = self.rescale(imgs, epoch, i)
            self.warmup(ni, epoch)
            step = ni - self.last_opt_step >= self.accumulate
            self.call("before_step", ni)
            items = self.forward_backward(imgs, targets, sync=step)
            if step:
                self.optimizer_step()
                self.last_opt_step = ni
            self.call("after_step", ni, step)
            mloss = (mloss * i + items) / (i + 1)
            mem = f"{torch.cuda.memory_reserved() / 1e9 if self.device.type == 'cuda' else 0:.3g}G"
            pbar.set_description(("%11s" * 2 + "%11.4g" * (len(self.loss_names) + 2)) % (
                f"{epoch}/{opt.epochs - 1}", mem, *mloss.tolist(), targets.shape[0], imgs.shape[-1]))
            if self.main and not opt.noplots and ni - nb * self.start_epoch < 3:
                plot_images(imgs, targets, paths, self.save_dir / f"train_batch{ni - nb * self.start_epoch}.jpg",
                            self.names)
        return reduce_mean(mloss)  # DDP: over all ranks' images, as one process with the total batch logs it

    def forward_backward(self, imgs: torch.Tensor, targets: torch.Tensor, sync: bool) -> torch.Tensor:
        """Loss terms of a batch, and its gradients added to the accumulated ones. Under DDP, gradients are
        all-reduced (averaged over ranks) only on a batch that ends with an optimizer step (``sync``), and the loss
        is scaled by the world size: the criterion's total sums over a rank's images, so the average over ranks
        would otherwise be 1 / world size of one process's gradient on the whole batch."""
        no_sync = self.dist.ddp and not sync
        with self.net.no_sync() if no_sync else nullcontext():
            loss, items = amp_loss(self.net, self.criterion, imgs, targets, self.amp_dtype, self.device.type)
            self.scaler.scale(loss * self.dist.world_size).backward()
        return items

    def warmup(self, ni: int, epoch: int) -> None:
        """Linear warmup of lr (bias lr falls from warmup_bias_lr), momentum and accumulation."""
        if ni > self.nw:
            return
        xi = [0, self.nw]
        self.accumulate = max(1, int(np.interp(ni, xi, [1, NBS / self.opt.batch_size]).round()))
        for j, g in enumerate(self.optimizer.param_groups):
            start = self.hyp["warmup_bias_lr"] if j == 0 else 0.0
            g["lr"] = np.interp(ni, xi, [start, g["initial_lr"] * self.lf(epoch)])
            if "momentum" in g:
                g["momentum"] = np.interp(ni, xi, [self.hyp["warmup_momentum"], self.hyp["momentum"]])
            elif "betas" in g:
                g["betas"] = (np.interp(ni, xi, [self.hyp["warmup_momentum"], self.hyp["momentum"]]), g["betas"][1])

    def optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=10.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()

    # ------------------------------------------------------------------ what hooks call
    def evaluate(self, model: DetectionModel | None, final: bool = False) -> validate.ValResult:
        """val.py on this run's val loader with its criterion (the final validation also prints per-class results
        and draws the plots); ``model`` None: the all-zero result of an epoch that is not validated (--noval)."""
        if model is None:
            return validate.ValResult(0.0, 0.0, 0.0, 0.0, [0.0] * len(self.loss_names), np.zeros(self.nc),
                                      (0.0, 0.0, 0.0))
        return validate.run(self.data, batch_size=self.opt.batch_size * 2, imgsz=self.imgsz, model=model,
                            single_cls=self.opt.single_cls, dataloader=self.val_loader, save_dir=self.save_dir,
                            plots=final and not self.opt.noplots, verbose=final, criterion=self.criterion)

    def load_weights(self, path: Path) -> DetectionModel:
        """A checkpoint of this run (its EMA weights) as a model on the run's device."""
        return DetectionModel.from_checkpoint(load_checkpoint(path)).to(self.device)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, epoch: int) -> dict:
        return {"epoch": epoch, "best_fitness": self.best_fitness, "model": plain_state(self.model),
                "ema": plain_state(self.ema.ema), "updates": self.ema.updates,
                "optimizer": self.optimizer.state_dict(), "yaml": self.model.yaml, "names": self.names,
                "opt": {k: str(v) if isinstance(v, Path) else v for k, v in vars(self.opt).items()},
                "date": datetime.now().isoformat()}


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    return train_parser(__doc__, ROOT / "runs" / "train").parse_args(argv)


def resume_opt(opt: argparse.Namespace) -> argparse.Namespace:
    """--resume: the run's own options (its opt.yaml), with its last.pt as the weights. Reads files only."""
    last = latest_run(ROOT / "runs") if opt.resume is True else Path(opt.resume)
    if not last.is_file():
        raise FileNotFoundError(f"--resume {opt.resume}: checkpoint not found")
    run_opt = yaml_load(last.parent.parent / "opt.yaml")
    opt = argparse.Namespace(**{**vars(opt), **run_opt})
    opt.weights, opt.resume, opt.cfg = str(last), True, ""
    return opt


def resolve_opt(opt: argparse.Namespace) -> argparse.Namespace:
    """Apply --resume (the run's own options), check the flags, resolve names, pick the run folder."""
    if opt.resume and opt.evolve:
        raise ValueError("--resume and --evolve cannot be combined: re-run the --evolve command to continue it")
    if opt.resume:
        return resume_opt(opt)
    check_opt(opt)
    opt.hyp = str(find_in_dir(opt.hyp, ROOT / "data" / "hyps", "hyperparameter file"))
    if not opt.imgsz:
        opt.imgsz = int(check_dataset(opt.data).get("imgsz", 640))
    if opt.evolve:  # one folder per --project/--name, re-used so that a re-run continues the evolution
        project = ROOT / "runs" / "evolve" if opt.project == str(ROOT / "runs" / "train") else Path(opt.project)
        opt.save_dir = str(project / opt.name)
    else:
        opt.save_dir = str(increment_path(Path(opt.project) / opt.name, opt.exist_ok))
    return opt


# ------------------------------------------------------------------ torchrun (DDP)
def start_distributed(opt: argparse.Namespace, ctx: DistContext) -> None:
    """Check the options against the launch (one-line errors, raised on every rank before any waits for the
    others), then join the process group: NCCL on GPUs, gloo on CPU unless --dist-backend says otherwise."""
    run = resume_opt(opt) if opt.resume else opt  # a resumed run keeps its device, batch size and flags
    if opt.evolve:
        raise ValueError("--evolve trains its generations one after another in one process: run it with "
                         "python train.py, not torchrun")
    if run.batch_size % ctx.world_size:
        fit = ctx.world_size * max(run.batch_size // ctx.world_size, 1)
        raise ValueError(f"--batch-size {run.batch_size} is the total over the {ctx.world_size} processes and must "
                         f"be a multiple of it, e.g. --batch-size {fit}")
    device = select_device(run.device, run.batch_size, ctx.local_rank, ctx.local_world_size)
    backend = dist_backend(getattr(run, "dist_backend", "auto"), device)
    if getattr(run, "sync_bn", False) and device.type != "cuda":
        raise ValueError(f"--sync-bn with device {device}: torch's SyncBatchNorm syncs CUDA tensors only; drop "
                         f"--sync-bn on CPU (each process then keeps its own BatchNorm statistics)")
    init_distributed(backend, device)
    LOGGER.info(f"DDP: rank {ctx.rank} of {ctx.world_size} on {device}, backend {backend}")


def resolve_opt_on_main(opt: argparse.Namespace, ctx: DistContext) -> argparse.Namespace:
    """resolve_opt on rank 0 alone (it may generate the dataset, and it picks a new run folder), its result, or
    its error, sent to every rank."""
    if not ctx.ddp:
        return resolve_opt(opt)
    result = None
    if ctx.main:
        try:
            result = resolve_opt(opt)
        except (FileNotFoundError, ValueError) as e:
            result = e
    result = broadcast_object(result)
    if isinstance(result, Exception):
        raise result
    return result


# ------------------------------------------------------------------ one --evolve generation
def evolve_table(opt: argparse.Namespace) -> dict:
    """--evolve's mutation table: the pipeline's keys and the ones the model's head reads (``Head.hyp_ranges``)."""
    cfg = opt.cfg or (load_checkpoint(opt.weights).get("yaml") if opt.weights else None)
    return evolve_meta(head_class(load_cfg(cfg)[0]).hyp_ranges if cfg else {})


def train_generation(opt: argparse.Namespace, hyp: dict, save_dir: Path) -> dict[str, float]:
    """One generation's short run (its folder rebuilt if a killed run left one): final-epoch val results."""
    shutil.rmtree(save_dir, ignore_errors=True)
    gopt = argparse.Namespace(**{**vars(opt), "hyp": hyp, "save_dir": str(save_dir), "noval": True, "nosave": True,
                                 "noplots": True, "evolve": None, "mlflow": False,
                                 "wandb": False})  # a generation is not tracked: evolve.csv is its record
    trainer = Trainer(gopt)
    res = trainer.fit()
    shutil.rmtree(trainer.wdir, ignore_errors=True)  # results.csv stays; the weights are not the product
    return {**dict(zip(METRICS, res.metrics())), **{f"val/{n}_loss": v for n, v in zip(trainer.loss_names, res.losses)}}


def run(opt: argparse.Namespace, hooks: list[Hook] | tuple = ()) -> validate.ValResult | None:
    """Train one run of resolved options (``resolve_opt``) with ``hooks`` added to the built-in ones; a new run
    (not --resume) first writes its hyp.yaml and opt.yaml. The final validation's results (None off rank 0)."""
    with FolderLock(opt.save_dir) if DistContext.current().main else nullcontext():  # one process per run folder
        trainer = Trainer(opt, hooks)
        if trainer.main and not opt.resume:
            yaml_save(Path(opt.save_dir) / "hyp.yaml",
                      yaml_load(opt.hyp) if isinstance(opt.hyp, (str, Path)) else opt.hyp)
            yaml_save(Path(opt.save_dir) / "opt.yaml", vars(opt))
        return trainer.fit()


def main(argv: list[str] | None = None) -> int:
    ctx = DistContext.from_env()  # torchrun's environment; rank 0 of 1 for python train.py
    logging.basicConfig(level=logging.INFO if ctx.main else logging.WARNING, format="%(message)s")
    opt = parse_opt(argv)
    signals.install()  # SIGTERM / SIGINT -> Interrupted: last.pt kept, the resume command printed
    try:
        if ctx.ddp:
            start_distributed(opt, ctx)
        opt = resolve_opt_on_main(opt, ctx)
        save_dir = Path(opt.save_dir)
        if ctx.main:
            save_dir.mkdir(parents=True, exist_ok=True)
        if opt.evolve:
            with FolderLock(save_dir, "evolve folder"):
                yaml_save(save_dir / "opt.yaml", vars(opt))
                evolve(opt, train_generation, evolve_table(opt))
            return 0
        run(opt)
    except (FileNotFoundError, ValueError) as e:
        LOGGER.error(f"{'' if ctx.main else f'rank {ctx.rank}: '}error: {e}")
        return 2
    except OSError as e:
        if disk_full_cause(e) is None or not ctx.main:
            raise
        LOGGER.error(disk_full_message(Path(opt.save_dir), e))
        return 2
    except Interrupted as e:
        if ctx.main and getattr(opt, "save_dir", None):
            LOGGER.error(stopped_message(Path(opt.save_dir), e) if not opt.evolve else
                         f"stopped by {e}: finished generations are in evolve.csv; re-run the command to continue")
        return e.exit_code
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
