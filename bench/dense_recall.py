"""Where a RetinaNetHead checkpoint loses its objects: per val label, the anchors torchvision's matcher makes positive
(IoU >= fg_iou_thresh, or the label's best anchor when none reaches it: "low-quality" positives), and what the trained
model predicts at those anchors -- the decoded box's IoU with the label and the label's class score. Boxes right and
scores low points at classification; scores high and boxes wrong, at regression; few or low-IoU positives, at the
assignment (the anchors and the grid, fixed before any training). Last, the scale of the signal the head passes on:
the standard deviation of the FPN maps and of each tower block's output (over the images read).

    python bench/dense_recall.py --weights runs/train/exp/weights/best.pt [--data shapes.yaml] [--images 100]
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rcnn_recall import checkpoint_args, labelled_val_images  # noqa: E402
from utils.data.augmentations import letterbox  # noqa: E402


def quantiles(x: torch.Tensor) -> str:
    if not len(x):
        return "none"
    q = torch.quantile(x.float(), torch.tensor([0.25, 0.5, 0.75]))
    return "quartiles " + " / ".join(f"{v:.2f}" for v in q.tolist())


def main() -> None:
    opt, ckpt, model = checkpoint_args(__doc__, "RetinaNetHead")
    head = model.head
    size = int(-(-int(ckpt["opt"]["imgsz"]) // int(model.stride.max())) * int(model.stride.max()))  # as train.py
    images, n, n_pos, n_low, pos_iou, box_iou_pos, score_pos, best_score = 0, 0, [], [], [], [], [], []
    towers = {"FPN": [], "classification_head": [], "regression_head": []}  # per image: std per map / tower block
    for f, rows in labelled_val_images(opt.data, opt.images):
        images += 1
        im0 = cv2.imread(str(f))
        im, ratio, (dw, dh) = letterbox(im0, size, auto=False)
        h0, w0 = im0.shape[:2]
        xywh = torch.tensor(rows[:, 1:], dtype=torch.float32) * torch.tensor([w0, h0, w0, h0]) * ratio[0]
        gt = torch.cat((xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2), 1) + torch.tensor(
            [dw, dh, dw, dh])
        cls = torch.from_numpy(rows[:, 0]).long()
        x = torch.from_numpy(im[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            feats = model._features(x)
            out = head.head(feats)
            anchors = head.anchor_generator(head._images(feats), feats)[0]  # (A, 4) xyxy px
            boxes = head.box_coder.decode_single(out["bbox_regression"][0], anchors)
            scores = out["cls_logits"][0].sigmoid()  # (A, nc)
            towers["FPN"].append([f.std().item() for f in feats])
            for name in ("classification_head", "regression_head"):
                a, stds = feats[0], []
                for block in getattr(head.head, name).conv:  # Conv2d (+ GroupNorm in version 2) + ReLU
                    a = block(a)
                    stds.append(a.std().item())
                towers[name].append(stds)
        iou = box_iou(gt, anchors)  # (G, A)
        matched = head.proposal_matcher(iou)  # (A,) gt index, or -1 background / -2 between thresholds
        for g in range(len(gt)):
            pos = matched == g
            n_pos.append(int(pos.sum()))
            n_low.append(int(pos.any() and iou[g][pos].max() < head.proposal_matcher.high_threshold))
            pos_iou.append(iou[g][pos])
            box_iou_pos.append(box_iou(gt[g:g + 1], boxes[pos])[0])
            score_pos.append(scores[pos, cls[g]])
            best_score.append(scores[:, cls[g]].max())
        n += len(gt)
    cat = torch.cat
    npos = torch.tensor(n_pos, dtype=torch.float32)
    bi, sp = cat(box_iou_pos), cat(score_pos)
    print(f"{opt.weights}: {n} labels in {images} images at {size} px; matcher IoU >= "
          f"{head.proposal_matcher.high_threshold} (background < {head.proposal_matcher.low_threshold})")
    print(f"  positives per label: mean {npos.mean():.2f}, none {(npos == 0).float().mean():.3f}; labels whose "
          f"positives are all low-quality (the best anchor, IoU below the threshold): {np.mean(n_low):.3f}")
    print(f"  anchor IoU of the positives: {quantiles(cat(pos_iou))}")
    print(f"  trained boxes at the positives, IoU with the label: {quantiles(bi)}; >= 0.5 for "
          f"{(bi >= 0.5).float().mean():.3f}")
    print(f"  trained score of the label's class at the positives: {quantiles(sp)}; the label's class, best score "
          f"over all anchors: {quantiles(torch.stack(best_score))}")
    for name, v in towers.items():
        what = "FPN maps (per level)" if name == "FPN" else f"{name} tower on level 0 (per block)"
        print(f"  std of the {what}: " + ", ".join(f"{x:.3f}" for x in np.mean(v, 0)))


if __name__ == "__main__":
    main()
