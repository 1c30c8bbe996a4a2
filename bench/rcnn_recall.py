"""Where a FasterRCNNHead checkpoint loses its objects: how many val labels have an anchor at IoU >= 0.5 / 0.7 (the
row's anchors at the image's size: fixed before any training), the RPN's recall of the labels (best proposal IoU >=
0.5 / 0.7) and the RoI head's class for the labelled boxes themselves (background counts as wrong).

    python bench/rcnn_recall.py --weights runs/train/exp/weights/best.pt [--data shapes.yaml] [--images 100]
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.yolo import DetectionModel  # noqa: E402
from utils.data.dataloaders import check_dataset  # noqa: E402
from utils.io.checkpoint import load_checkpoint  # noqa: E402


def checkpoint_args(doc: str, head: str) -> tuple[argparse.Namespace, dict, DetectionModel]:
    """--weights (a checkpoint whose head is ``head``), --data, --images -> (options, checkpoint, model in eval)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", default="shapes.yaml")
    ap.add_argument("--images", type=int, default=100)
    opt = ap.parse_args()
    ckpt = load_checkpoint(opt.weights)
    model = DetectionModel.from_checkpoint(ckpt).eval()
    if type(model.head).__name__ != head:
        sys.exit(f"{opt.weights}: not a {head} model")
    return opt, ckpt, model


def labelled_val_images(data: str, n: int) -> Iterator[tuple[Path, np.ndarray]]:
    """The first ``n`` val images of ``data`` and their label rows ``(k, 5)``; images without labels are skipped."""
    val = Path(check_dataset(data)["val"])
    for f in sorted(p for p in val.iterdir() if p.suffix.lower() in (".jpg", ".png"))[:n]:
        label = Path(str(f).replace("/images/", "/labels/")).with_suffix(".txt")
        rows = np.loadtxt(label, ndmin=2) if label.is_file() and label.stat().st_size else np.zeros((0, 5))
        if len(rows):
            yield f, rows


def main() -> None:
    opt, _, model = checkpoint_args(__doc__, "FasterRCNNHead")
    head, n, hit5, hit7, right, anc5, anc7, images = model.head, 0, 0, 0, 0, 0, 0, 0
    for f, rows in labelled_val_images(opt.data, opt.images):
        images += 1
        im = cv2.imread(str(f))[:, :, ::-1].copy()  # (H, W, 3) RGB; the built-in images are stride multiples
        h, w = im.shape[:2]
        xywh = torch.tensor(rows[:, 1:], dtype=torch.float32) * torch.tensor([w, h, w, h])
        gt = torch.cat((xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2), 1)
        with torch.no_grad():
            feats, images_ = head._inputs(model._features(torch.from_numpy(im).permute(2, 0, 1)[None].float() / 255))
            proposals, _ = head.rpn(images_, feats)
            best = box_iou(gt, proposals[0]).amax(1)
            prior = box_iou(gt, head.rpn.anchor_generator(images_, list(feats.values()))[0]).amax(1)
            rh = head.roi_heads
            logits, _ = rh.box_predictor(rh.box_head(rh.box_roi_pool(feats, [gt], images_.image_sizes)))
        n += len(gt)
        hit5, hit7 = hit5 + int((best >= 0.5).sum()), hit7 + int((best >= 0.7).sum())
        anc5, anc7 = anc5 + int((prior >= 0.5).sum()), anc7 + int((prior >= 0.7).sum())
        right += int((logits.argmax(1) - 1 == torch.from_numpy(rows[:, 0]).long()).sum())
    print(f"{opt.weights}: {n} labels in {images} images; an anchor at IoU >= 0.5 for {anc5 / n:.3f}, >= 0.7 for "
          f"{anc7 / n:.3f}; RPN recall {hit5 / n:.3f} at IoU >= 0.5, "
          f"{hit7 / n:.3f} at >= 0.7; RoI head: right class for {right / n:.3f} of the labelled boxes")


if __name__ == "__main__":
    main()
