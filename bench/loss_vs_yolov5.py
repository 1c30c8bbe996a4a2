"""One set of weights, each side's own training batches: our loss on our loader's batches beside YOLOv5 v7.0's
loss on its loader's, and how often a batch image carries a box over (nearly) the whole image.

    python bench/loss_vs_yolov5.py --weights runs/parity/yolov5/seed0/weights/last.pt \\
        --data runs/parity/data-ours.yaml --yolov5 .refvenv/lib/python3.11/site-packages/yolov5 \\
        --python .refvenv/bin/python

The weights are a YOLOv5-written checkpoint (both sides read it: ours through its YOLOv5 reader), in training
mode (BatchNorm on batch statistics, as the training loss is computed) without gradients. Each side draws
``--epochs`` epochs of augmented training batches (hyp.scratch-low: mosaic, no mixup; batch 16, ``--imgsz``) from
the data YAML's train split and computes its own loss (YOLOv5's ``ComputeLoss``; ours ``model.criterion``). Printed:
per side the mean per-batch box / obj / cls loss with its standard error, and the share of images holding a box
of width and height >= ``--full`` of the image. On the built-in generator's data no object can be that large
(largest object half the image side, mosaic scale at most 1.5), so such a box is the mosaic fake box of
bench/README.md "Mosaic fake boxes". ``--sides ours`` runs without YOLOv5.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.yolo import DetectionModel  # noqa: E402
from utils.data.dataloaders import check_dataset, create_dataloader  # noqa: E402
from utils.io.checkpoint import load_checkpoint  # noqa: E402
from utils.io.files import yaml_load  # noqa: E402

HYP = ROOT / "data" / "hyps" / "hyp.scratch-low.yaml"

# The reference side: YOLOv5's own loader and loss in its own interpreter; prints one JSON line.
WORKER = r'''
import json, sys, torch, yaml
from pathlib import Path
root, weights, train, hyp_file, imgsz, epochs, seed, full = sys.argv[1:9]
imgsz, epochs, seed, full = int(imgsz), int(epochs), int(seed), float(full)
torch.set_num_threads(1)
sys.path.insert(0, str(Path(root).resolve().parent))
from yolov5.utils.dataloaders import create_dataloader
from yolov5.utils.general import init_seeds
from yolov5.utils.loss import ComputeLoss
ckpt = torch.load(weights, map_location="cpu")
model = (ckpt.get("ema") or ckpt["model"]).float()
hyp = yaml.safe_load(open(hyp_file))
nl, nc = model.model[-1].nl, model.nc
hyp["box"] *= 3 / nl; hyp["cls"] *= nc / 80 * 3 / nl; hyp["obj"] *= (imgsz / 640) ** 2 * 3 / nl  # as its train.py
hyp["label_smoothing"] = 0.0
model.hyp = hyp
init_seeds(seed, deterministic=True)
loader, _ = create_dataloader(train, imgsz, 16, 32, hyp=hyp, augment=True, workers=0, shuffle=True, seed=seed)
compute_loss = ComputeLoss(model)
model.train()
items, images, fake = [], 0, 0
with torch.no_grad():
    for _ in range(epochs):
        for imgs, targets, _, _ in loader:
            _, li = compute_loss(model(imgs.float() / 255), targets)
            items.append(li.tolist())
            big = targets[(targets[:, 4] >= full) & (targets[:, 5] >= full), 0].unique()
            images += len(imgs); fake += len(big)
print(json.dumps({"items": items, "images": images, "fake_images": fake}), flush=True)
'''


def ours(weights: Path, train, names: dict, imgsz: int, epochs: int, seed: int, full: float) -> dict:
    model = DetectionModel.from_checkpoint(load_checkpoint(weights)).float().train()
    hyp = yaml_load(HYP)
    criterion = model.criterion(hyp, imgsz)
    loader, dataset = create_dataloader(train, imgsz, 16, int(model.stride.max()), hyp=hyp, augment=True, workers=0,
                                        shuffle=True, seed=seed, names=names)
    items, images, fake = [], 0, 0
    with torch.no_grad():
        for epoch in range(epochs):
            dataset.set_epoch(epoch)
            for imgs, targets, _, _ in loader:
                _, li = criterion(model(imgs.float() / 255, targets), targets)
                items.append(li.tolist())
                big = targets[(targets[:, 4] >= full) & (targets[:, 5] >= full), 0].unique()
                images += len(imgs)
                fake += len(big)
    return {"items": items, "images": images, "fake_images": fake}


def yolov5(python: str, folder: Path, weights: Path, train: str, imgsz: int, epochs: int, seed: int,
           full: float) -> dict:
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([python, "-c", WORKER, str(folder), str(weights), train, str(HYP), str(imgsz), str(epochs),
                        str(seed), str(full)], capture_output=True, text=True, env=env)
    if p.returncode:
        raise RuntimeError(f"the YOLOv5 worker failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def summary(side: str, r: dict) -> dict:
    a = np.array(r["items"])  # (batches, 3): box, obj, cls
    mean, se = a.mean(0), a.std(0, ddof=1) / np.sqrt(len(a))
    out = {"side": side, "batches": len(a), "images": r["images"], "fake_images": r["fake_images"],
           "fake_rate": r["fake_images"] / max(r["images"], 1),
           **{f"{k}": float(m) for k, m in zip(("box", "obj", "cls"), mean)},
           **{f"{k}_se": float(s) for k, s in zip(("box", "obj", "cls"), se)}}
    print(f"{side:>7}: {out['batches']} batches, box {out['box']:.5f} ± {out['box_se']:.5f}, obj {out['obj']:.5f} "
          f"± {out['obj_se']:.5f}, cls {out['cls']:.5f} ± {out['cls_se']:.5f} (mean ± s.e. per batch); images "
          f"with a whole-image box: {out['fake_images']} of {out['images']} ({100 * out['fake_rate']:.2f}%)",
          flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="a YOLOv5 v7.0 checkpoint (last.pt / best.pt)")
    ap.add_argument("--data", required=True, help="our data YAML (train split; YOLOv5 reads the same folder)")
    ap.add_argument("--yolov5", default="", help="YOLOv5 v7.0 checkout or the yolov5 pip package's folder")
    ap.add_argument("--python", default=sys.executable, help="interpreter that can import that YOLOv5")
    ap.add_argument("--sides", nargs="+", default=["ours", "yolov5"], choices=["ours", "yolov5"])
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--epochs", type=int, default=3, help="epochs of batches per side")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full", type=float, default=0.99, help="a box this share of the image wide and high")
    ap.add_argument("--json", default="", help="write the figures here too")
    opt = ap.parse_args()
    torch.set_num_threads(1)
    data = check_dataset(opt.data)
    train = data["train"] if isinstance(data["train"], str) else data["train"][0]
    weights = Path(opt.weights).resolve()
    print(f"weights {weights}; {opt.epochs} epochs of training batches per side, seed {opt.seed}", flush=True)
    rows = []
    if "ours" in opt.sides:
        rows.append(summary("ours", ours(weights, train, data["names"], opt.imgsz, opt.epochs, opt.seed, opt.full)))
    if "yolov5" in opt.sides:
        folder = Path(opt.yolov5).expanduser().resolve()
        if not (folder / "utils" / "loss.py").is_file():
            sys.exit(f"--yolov5 {folder}: not a YOLOv5 folder (utils/loss.py missing); see bench/README.md")
        python = str(Path(opt.python).expanduser().absolute()) if os.sep in opt.python else opt.python
        rows.append(summary("yolov5", yolov5(python, folder, weights, str(train), opt.imgsz, opt.epochs, opt.seed,
                                             opt.full)))
    if len(rows) == 2:
        print(f"box loss ours / YOLOv5: {rows[0]['box'] / rows[1]['box']:.3f}")
    if opt.json:
        Path(opt.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
