"""train.py's command line: its flags with their defaults, and the ranges a flag's value must be in."""
from __future__ import annotations

import argparse
from pathlib import Path

PRECISE_BN_BATCHES = 0  # --precise-bn default: off; it lowered good epochs (bench/README.md, the collapses section)


def train_parser(description: str, project: Path) -> argparse.ArgumentParser:
    """train.py's flags: YOLOv5 v7.0's, with its defaults, and ours (README "Training and validation")."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=str, default="", help="initial weights: our .pt or a YOLOv5 v7.0 .pt")
    p.add_argument("--cfg", type=str, default="", help="model YAML (path or name in models/)")
    p.add_argument("--data", type=str, default="shapes.yaml", help="dataset YAML (path or name in data/)")
    p.add_argument("--hyp", type=str, default="hyp.scratch-low.yaml", help="hyperparameters (path or data/hyps/)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16, help="total batch size")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=None,
                   help="train/val image size (default: the dataset YAML's imgsz, else 640)")
    p.add_argument("--rect", action="store_true", help="rectangular training")
    p.add_argument("--resume", nargs="?", const=True, default=False, help="resume the newest run, or a last.pt")
    p.add_argument("--nosave", action="store_true", help="only save the final checkpoint")
    p.add_argument("--noval", action="store_true", help="only validate the final epoch")
    p.add_argument("--noautoanchor", action="store_true", help="disable AutoAnchor")
    p.add_argument("--noplots", action="store_true", help="save no plot files")
    p.add_argument("--cache", type=str, nargs="?", const="ram", default="auto", choices=["auto", "ram", "disk", "none"],
                   help="image cache: auto (default: ram when the images take <= 25%% of free memory), ram, disk, none")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 (one per torchrun process), or cpu")
    p.add_argument("--sync-bn", action="store_true", help="DDP: SyncBatchNorm, statistics over all GPUs' images")
    p.add_argument("--dist-backend", choices=["auto", "nccl", "gloo"], default="auto",
                   help="DDP backend (torchrun): auto = nccl on GPUs, gloo on CPU")
    p.add_argument("--single-cls", action="store_true", help="train multi-class data as single-class")
    p.add_argument("--optimizer", type=str, choices=["SGD", "Adam", "AdamW"], default="SGD")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers")
    p.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="torch.compile the model for training (bare: inductor; off by default, bench/README.md: on "
                        "2 CPU cores ~10%% a yolov5n step for ~75 s of compiling, ~5 s with inductor's cache warm)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision: FP16 autocast on CUDA (the default there, as YOLOv5); BF16 autocast on a CPU "
                        "(off by default until shown accuracy-equivalent; fast only where the CPU has AVX512-BF16 "
                        "or AMX). --no-amp: FP32 everywhere")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="train in channels_last memory format (default; 1.2x per CPU step on yolov5n, bench/README)")
    p.add_argument("--project", default=str(project))
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--cos-lr", action="store_true", help="cosine LR scheduler")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--patience", type=int, default=100, help="EarlyStopping patience (epochs without improvement)")
    p.add_argument("--freeze", nargs="+", type=int, default=[0], help="freeze layers: backbone=10, first3=0 1 2")
    p.add_argument("--save-period", type=int, default=-1, help="save a checkpoint every x epochs (disabled if < 1)")
    p.add_argument("--seed", type=int, default=0, help="global training seed")
    p.add_argument("--close-mosaic", type=int, default=0, help="turn mosaic/mixup off for the last N epochs")
    p.add_argument("--ema-decay", type=float, default=None,
                   help="EMA decay (default: sized to the run, see utils/torch_utils.ema_schedule; YOLOv5: 0.9999)")
    p.add_argument("--ema-tau", type=float, default=None,
                   help="EMA ramp-up in optimizer updates (default: sized to the run; YOLOv5: 2000)")
    p.add_argument("--precise-bn", type=int, default=PRECISE_BN_BATCHES,
                   help="train batches to re-estimate BatchNorm statistics on before each validation (0: off)")
    p.add_argument("--multi-scale", action="store_true", help="vary the batch image size in 0.5-1.5 x imgsz")
    p.add_argument("--image-weights", action="store_true", help="draw images weighted by their classes' rarity")
    p.add_argument("--evolve", type=int, nargs="?", const=300, default=None,
                   help="evolve the hyperparameters for N generations (bare: 300) in runs/evolve/<name>")
    p.add_argument("--mlflow", nargs="?", const=True, default=False, metavar="URI",
                   help="log the run to MLflow (pip install mlflow): bare, MLflow's default store (MLFLOW_TRACKING_URI, "
                        "else ./mlflow.db, what `mlflow ui` opens there); or a tracking URI (http://host:5000, a .db file)")
    p.add_argument("--wandb", nargs="?", const=True, default=False, metavar="MODE",
                   help="log the run to Weights & Biases (pip install wandb): offline (no account; wandb sync later), "
                        "online, or bare: W&B's own choice (WANDB_MODE, else online after `wandb login`)")
    return p


# flag: (lowest allowed value, what it is); values below are one-line errors, not a crash or a silent fix-up
FLAG_RANGES = {"epochs": (1, "epochs to train"), "batch_size": (1, "total batch size"),
               "imgsz": (1, "image size in pixels, rounded up to a multiple of the model's max stride"),
               "workers": (0, "max dataloader workers, 0 loads in the main process"),
               "evolve": (1, "generations of hyperparameter evolution")}


def check_opt(opt: argparse.Namespace) -> None:
    """ValueError naming the first flag outside its range (``FLAG_RANGES``)."""
    for key, (low, what) in FLAG_RANGES.items():
        value = getattr(opt, key)
        if value is not None and value < low:
            raise ValueError(f"--{key.replace('_', '-')} {value}: must be an integer >= {low} ({what})")
