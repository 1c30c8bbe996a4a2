"""Precise BN on saved checkpoints: val mAP with the BatchNorm statistics as saved, and re-estimated on N train
batches, per checkpoint, with the seconds each re-estimation took. It picks --precise-bn's default and checks
whether a collapsed epoch is a matter of BN statistics or of the weights.

    python bench/precise_bn.py --weights runs/train/exp/weights/epoch7.pt [epoch6.pt ...] --batches 0 4 8 16 32
    python bench/precise_bn.py --weights ... --head-only     # re-estimate only the head's BatchNorms

Each checkpoint is validated as train.py validates it (its EMA weights, the run's data, imgsz and batch size,
rect val batches). The BN batches are the run's train batches with the checkpoint's epoch's augmentation
(train.bn_batches), so N here is --precise-bn N in train.py. Writes runs/bench/precise_bn.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import train  # noqa: E402
import val as validate  # noqa: E402
from models.yolo import DetectionModel  # noqa: E402
from utils.io.checkpoint import load_checkpoint  # noqa: E402
from utils.data.dataloaders import check_dataset, create_dataloader  # noqa: E402
from utils.io.files import yaml_load  # noqa: E402
from utils.torch_utils import LOGGER, precise_bn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def measure(weights: Path, batch_counts: list[int], head_only: bool, mosaic: bool = True) -> list[dict]:
    ckpt = load_checkpoint(weights)
    opt = yaml_load(weights.parent.parent / "opt.yaml")
    hyp = yaml_load(weights.parent.parent / "hyp.yaml")
    data = check_dataset(opt["data"])
    bs, imgsz, seed, epoch = int(opt["batch_size"]), int(opt["imgsz"]), int(opt["seed"]), int(ckpt.get("epoch", -1))
    if epoch < 0:  # a finished run's last.pt / best.pt: take the last epoch's augmentation
        epoch = int(opt["epochs"]) - 1
    model0 = DetectionModel.from_checkpoint(ckpt)
    gs = max(int(model0.stride.max()), 32)
    val_loader = create_dataloader(data["val"], imgsz, bs * 2, gs, hyp=hyp, rect=True, pad=0.5, workers=0,
                                   prefix="val: ", names=data["names"])[0]
    _, dataset = create_dataloader(data["train"], imgsz, bs, gs, hyp=hyp, augment=True, workers=0, shuffle=True,
                                   seed=seed, prefix="train: ", names=data["names"])
    criterion = model0.criterion(hyp, imgsz)
    rows = []
    for n in batch_counts:
        model = DetectionModel.from_checkpoint(ckpt)
        t0 = time.perf_counter()
        if n > 0:
            target = model.head if head_only else model
            precise_bn(target, train.bn_batches(dataset, bs, n, seed, epoch, torch.device("cpu"), mosaic))
        dt = time.perf_counter() - t0
        r = validate.run(data, batch_size=bs * 2, imgsz=imgsz, model=model, dataloader=val_loader, plots=False,
                         criterion=criterion)
        rows.append({"weights": str(weights), "epoch": epoch, "batches": n, "head_only": head_only, "mosaic": mosaic,
                     "seconds": round(dt, 2), "map50": r.map50, "map": r.map, "val_loss": float(sum(r.losses))})
        LOGGER.info(f"{weights.name}: {n:3d} BN batches ({dt:5.1f} s) -> mAP50 {r.map50:.3f}, mAP50-95 {r.map:.3f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", nargs="+", required=True, help="checkpoints of one train.py run (epochN.pt, last.pt)")
    p.add_argument("--batches", nargs="+", type=int, default=[0, 4, 8, 16, 32], help="0: the statistics as saved")
    p.add_argument("--head-only", action="store_true", help="re-estimate only the head's BatchNorm statistics")
    p.add_argument("--no-mosaic", action="store_true", help="BN batches without mosaic/mixup (val-like images)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench" / "precise_bn.json"))
    opt = p.parse_args(argv)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    rows = [row for w in opt.weights for row in measure(Path(w), opt.batches, opt.head_only, not opt.no_mosaic)]
    print("\n| checkpoint | epoch | BN batches | seconds | mAP50 | mAP50-95 | val loss |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {Path(r['weights']).name} | {r['epoch']} | {r['batches']}{' (head)' if r['head_only'] else ''}{'' if r['mosaic'] else ' no mosaic'} | "
              f"{r['seconds']:.1f} | {r['map50']:.3f} | {r['map']:.3f} | {r['val_loss']:.4f} |")
    Path(opt.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opt.out).write_text(json.dumps({"torch_threads": torch.get_num_threads(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
