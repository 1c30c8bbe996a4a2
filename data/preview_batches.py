"""Save training batches exactly as train.py would see them (mosaic and all), with their boxes drawn.

    python data/preview_batches.py                          # 4 batches of the built-in shapes dataset
    python data/preview_batches.py --data coco128.yaml --hyp data/hyps/hyp.scratch-high.yaml --n 2 --imgsz 640
    python data/preview_batches.py --no-mosaic              # as in the last epochs after close_mosaic()

Writes <out>/train_batch{0..n-1}.jpg (the train_batch0.jpg kind of image) and <out>/labels.jpg.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from utils.data.dataloaders import check_dataset, create_dataloader  # noqa: E402
from utils.evaluation.plots import plot_images, plot_labels  # noqa: E402


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="shapes.yaml", help="dataset YAML (path or name in data/)")
    p.add_argument("--hyp", default=str(ROOT / "data" / "hyps" / "hyp.scratch-low.yaml"), help="hyperparameter YAML")
    p.add_argument("--imgsz", type=int, default=320, help="training image size (px)")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (16 tiles at most are drawn)")
    p.add_argument("--n", type=int, default=4, help="number of batches to save")
    p.add_argument("--seed", type=int, default=0, help="sampler and augmentation seed")
    p.add_argument("--epoch", type=int, default=0, help="epoch whose order and augmentation to show")
    p.add_argument("--workers", type=int, default=0, help="dataloader workers")
    p.add_argument("--no-mosaic", action="store_true", help="mosaic/mixup off, as after close_mosaic()")
    p.add_argument("--out", default=str(ROOT / "runs" / "preview"), help="output folder")
    return p.parse_args(argv)


def main(opt: argparse.Namespace) -> list[Path]:
    data = check_dataset(opt.data)
    with open(opt.hyp, encoding="utf-8") as f:
        hyp = yaml.safe_load(f)
    loader, dataset = create_dataloader(data["train"], opt.imgsz, opt.batch_size, 32, hyp=hyp, augment=True,
                                        workers=opt.workers, shuffle=True, seed=opt.seed, names=data["names"],
                                        prefix="train: ")
    dataset.set_epoch(opt.epoch)
    if opt.no_mosaic:
        dataset.close_mosaic()
    out = Path(opt.out)
    saved = []
    for i, (imgs, targets, paths, _) in enumerate(loader):
        if i >= opt.n:
            break
        saved.append(out / f"train_batch{i}.jpg")
        plot_images(imgs, targets, paths, saved[-1], names=data["names"])
    saved.append(plot_labels(np.concatenate(dataset.labels, 0), data["names"], out))
    print("saved " + ", ".join(str(p) for p in saved))
    return saved


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(parse_opt())
