"""Cross-check tal_assign, V8Head and V8Loss against Ultralytics' own code, run from a separate install.

    python bench/crosscheck_ultralytics.py --ultralytics /work/ultravenv/bin/python
    python bench/crosscheck_ultralytics.py --ultralytics /path/to/venv/lib/python3.11/site-packages

``--ultralytics``: a Python interpreter that can import ``ultralytics`` (this script then re-runs itself under it,
with this repo first on its path; the interpreter must also reach this repo's requirements, torch included), or a
site-packages folder holding ``ultralytics`` (appended to ``sys.path`` here, after ours). Ultralytics is AGPL: it is
never a dependency of this repo and nothing of it is copied; it is only imported and run.

Checks, each on random inputs over several seeds:
(a) ``tal_assign`` against ``TaskAlignedAssigner`` (topk 10, alpha 0.5, beta 6): per image, the positives and
    their gts must be identical, except in images where the reference's own metrics tie (equal alignment at a gt's
    k-th place among its candidates, or equal CIoU between the gts competing for a prior: which one torch's
    ``topk`` / ``max`` returns is unspecified); those are counted and left out. The soft targets (our
    ``matched_iou``, their ``target_scores`` max over classes) are compared on identical images. Run twice:
    Ultralytics >= 8.4 widens gt sides below its second stride (16 px) for the candidate test; ours does with
    ``min_size=16``; with their ``stride_val`` set to 0 it runs the rule without widening, ours the default.
    Batches mix image gt counts 0..30 (padded) and include a batch without any gt.
(b) ``V8Loss`` against ``v8DetectionLoss`` with Ultralytics' ``Detect`` weights loaded into ``V8Head`` (the same
    state_dict keys), the same features and targets: the three terms (box, cls, dfl) and the gradients of the
    head's weights, max |diff|; for the YOLOv8 and the YOLO11 class branch.
(c) ``V8Head.decode`` against ``Detect``'s inference output (boxes cxcywh px, class probabilities), max |diff|.
Also the head's parameter count against ``Detect``'s for nc 80, ch (64, 128, 256) in both variants.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from models.heads.v8 import V8Head  # noqa: E402
from utils.assigners import tal_assign  # noqa: E402
from utils.losses.v8 import V8_GAINS  # noqa: E402

STRIDES = (8, 16, 32)


# ---------------------------------------------------------------------------------------------------------------
# Finding Ultralytics
# ---------------------------------------------------------------------------------------------------------------
def import_ultralytics(location: str, script: str = __file__) -> types.SimpleNamespace | None:
    """The reference modules, or None after re-running ``script`` (this one by default) under the interpreter
    ``location``."""
    path = Path(location)
    if path.is_dir():
        if str(path) not in sys.path:
            sys.path.append(str(path))  # after ours: this repo's torch stays the one imported
    elif os.environ.get("HEADZOO_CROSSCHECK_CHILD") != "1":
        env = {**os.environ, "HEADZOO_CROSSCHECK_CHILD": "1", "YOLO_VERBOSE": "False",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        subprocess.run([str(path), script, *sys.argv[1:]], env=env, check=True)
        return None
    os.environ.setdefault("YOLO_VERBOSE", "False")
    import ultralytics
    from ultralytics.nn.modules.head import Detect
    from ultralytics.utils.loss import v8DetectionLoss
    from ultralytics.utils.tal import TaskAlignedAssigner
    return types.SimpleNamespace(version=ultralytics.__version__, path=Path(ultralytics.__file__).parent,
                                 Detect=Detect, v8DetectionLoss=v8DetectionLoss,
                                 TaskAlignedAssigner=TaskAlignedAssigner)


# ---------------------------------------------------------------------------------------------------------------
# Random inputs
# ---------------------------------------------------------------------------------------------------------------
def make_priors(imgsz: int) -> Tensor:
    """(N, 4) [cx, cy, s, s] of every cell centre, levels in order."""
    rows = []
    for s in STRIDES:
        n = imgsz // s
        y, x = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32),
                              indexing="ij")
        centre = (torch.stack((x, y), -1).view(-1, 2) + 0.5) * s
        rows.append(torch.cat((centre, torch.full_like(centre, float(s))), 1))
    return torch.cat(rows)


def trained_like(g: torch.Generator, priors: Tensor, gt_boxes: Tensor, gt_mask: Tensor) -> Tensor:
    """(B, N, 4) xyxy: a prior inside a gt predicts the smallest such gt with its side distances scaled by
    exp(0.3 x noise); elsewhere a box 1..4 strides from the prior per side."""
    px, py, stride = priors[:, 0], priors[:, 1], priors[:, 2:3]
    x1, y1, x2, y2 = (gt_boxes[..., i, None] for i in range(4))  # each (B, G, 1)
    inside = (px > x1) & (py > y1) & (x2 > px) & (y2 > py) & gt_mask[..., None]  # (B, G, N)
    area = ((x2 - x1) * (y2 - y1)).expand_as(inside).masked_fill(~inside, float("inf"))
    target = gt_boxes.gather(1, area.argmin(1)[..., None].expand(-1, -1, 4))  # (B, N, 4)
    centre = priors[:, :2].repeat(1, 2)  # (N, 4)
    dist = (target - centre) * torch.tensor([-1.0, -1.0, 1.0, 1.0])
    dist = dist.clamp(min=0.1) * torch.exp(0.3 * torch.randn(dist.shape, generator=g))
    far = stride * (1 + 3 * torch.rand(dist.shape, generator=g))
    dist = torch.where(inside.any(1)[..., None], dist, far)
    return centre + dist * torch.tensor([-1.0, -1.0, 1.0, 1.0])


def random_case(g: torch.Generator, counts: list[int], imgsz: int, nc: int, priors: Tensor,
                trained: bool) -> dict[str, Tensor]:
    """Padded gts (sides 2..imgsz/2 px: some below 16 px); predictions trained-like (``trained_like``) or near
    their priors a few strides wide, anywhere."""
    batch, max_gt = len(counts), max(counts)
    wh = torch.rand(batch, max_gt, 2, generator=g) * (imgsz / 2 - 2) + 2
    centre = torch.rand(batch, max_gt, 2, generator=g) * imgsz
    mask = torch.arange(max_gt)[None] < torch.tensor(counts)[:, None]
    gt_boxes = torch.cat((centre - wh / 2, centre + wh / 2), -1).clamp(0, imgsz) * mask[..., None]
    n, stride = priors.shape[0], priors[None, :, 2:]
    if trained:
        pred_boxes = trained_like(g, priors, gt_boxes, mask)
    else:
        pred_centre = priors[None, :, :2] + torch.randn(batch, n, 2, generator=g) * stride * 0.5
        pred_wh = stride * torch.exp(torch.randn(batch, n, 2, generator=g) * 0.7 + 1.0)
        pred_boxes = torch.cat((pred_centre - pred_wh / 2, pred_centre + pred_wh / 2), -1)
    return {"pred_boxes": pred_boxes, "pred_cls_logits": torch.randn(batch, n, nc, generator=g) * 2 - 2,
            "priors": priors, "gt_boxes": gt_boxes, "gt_mask": mask,
            "gt_labels": torch.randint(0, nc, (batch, max_gt), generator=g) * mask}


# ---------------------------------------------------------------------------------------------------------------
# (a) TAL
# ---------------------------------------------------------------------------------------------------------------
def reference_ties(assigner, case: dict[str, Tensor], scores: Tensor, topk: int) -> Tensor:
    """(B,) bool: images where the reference's choice depends on the order among equal values -- an alignment
    tie at a gt's k-th place that holds one of its candidates, or a prior claimed by several gts whose
    largest CIoU two of the image's gts share."""
    mask_gt = case["gt_mask"][..., None].float()
    assigner.bs, assigner.n_max_boxes = case["gt_boxes"].shape[:2]
    mask_pos, metric, overlaps = assigner.get_pos_mask(scores, case["pred_boxes"], case["gt_labels"][..., None],
                                                       case["gt_boxes"], case["priors"][:, :2], mask_gt)
    inside = assigner.select_candidates_in_gts(case["priors"][:, :2], case["gt_boxes"], mask_gt).bool()
    ranked = metric.sort(dim=-1, descending=True).values  # (B, G, N)
    kth, after = ranked[..., topk - 1:topk], ranked[..., topk:topk + 1]
    boundary = (kth == after) & ((metric == kth) & inside).any(-1, keepdim=True)  # (B, G, 1)
    boundary = (boundary.squeeze(-1) & case["gt_mask"]).any(-1)
    contested = mask_pos.sum(1) > 1  # (B, N)
    best = overlaps.amax(1, keepdim=True)
    shared = ((overlaps == best).sum(1) > 1) & contested
    return boundary | shared.any(-1)


def check_tal(ref, seeds: int, min_size: float) -> dict:
    """Ours against TaskAlignedAssigner over ``seeds`` batches; ``min_size`` 16 against Ultralytics as its loss
    builds it (strides 8/16/32), 0 against it with the widening off (``stride_val = 0``)."""
    out = {"images": 0, "tied": 0, "identical": 0, "predictions": 0, "pred_mismatch": 0, "score_diff": 0.0,
           "tied_same": 0}
    topk, nc, imgsz = 10, 6, 256
    priors = make_priors(imgsz)
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        counts = [0] * 3 if seed == 0 else torch.randint(0, 31, (6,), generator=g).tolist()
        if max(counts) == 0 and seed:
            counts[0] = 1
        case = random_case(g, counts if max(counts) else [1, 0, 0], imgsz, nc, priors, trained=seed % 3 != 2)
        if seed == 0:  # a batch without a single gt: G = 0
            case["gt_boxes"], case["gt_labels"] = case["gt_boxes"][:, :0], case["gt_labels"][:, :0]
            case["gt_mask"] = case["gt_mask"][:, :0]
        assigner = ref.TaskAlignedAssigner(topk=topk, num_classes=nc, alpha=0.5, beta=6.0, stride=list(STRIDES))
        if not min_size:
            assigner.stride_val = 0.0  # no side is below 0: Ultralytics' rule without the widening
        scores = case["pred_cls_logits"].sigmoid()
        _, _, target_scores, fg, gt_idx = assigner(scores, case["pred_boxes"], case["priors"][:, :2],
                                                   case["gt_labels"][..., None].float(), case["gt_boxes"],
                                                   case["gt_mask"][..., None].float())
        ours = tal_assign(case["pred_boxes"], case["pred_cls_logits"], None, case["priors"], case["gt_boxes"],
                          case["gt_labels"], case["gt_mask"], topk=topk, min_size=min_size)
        theirs = torch.where(fg, gt_idx, -1)
        tied = (reference_ties(assigner, case, scores, topk) if case["gt_boxes"].shape[1]
                else torch.zeros(len(counts), dtype=torch.bool))
        same = (ours.assigned_gt == theirs).all(-1)
        out["images"] += len(same)
        out["tied"] += int(tied.sum())
        out["identical"] += int((same & ~tied).sum())
        out["tied_same"] += int((same & tied).sum())
        out["predictions"] += int(ours.assigned_gt[~tied].numel())
        out["pred_mismatch"] += int((ours.assigned_gt != theirs)[~tied].sum())
        keep = same & ~tied
        if keep.any():
            diff = (ours.matched_iou - target_scores.float().amax(-1)).abs()[keep].max()
            out["score_diff"] = max(out["score_diff"], float(diff))
    return out


# ---------------------------------------------------------------------------------------------------------------
# (b), (c) the head, its loss and its decode
# ---------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def trained_like_weights(head: nn.Module) -> None:
    """Biases and BatchNorm statistics moved off their init values (in place)."""
    for name, p in head.named_parameters():
        if p.requires_grad and name.endswith("bias"):
            p.add_(torch.randn_like(p) * 0.5)
    for m in head.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)


def paired_heads(ref, variant: str, nc: int, ch: tuple[int, ...]) -> tuple[nn.Module, V8Head]:
    """Ultralytics' Detect (legacy = the YOLOv8 class branch) and our V8Head holding its weights."""
    ref.Detect.legacy = variant == "yolov8"
    torch.manual_seed(0)
    theirs = ref.Detect(nc=nc, ch=ch)
    return load_into(theirs, V8Head(nc, 16, variant, ch=list(ch)))


def load_into(theirs: nn.Module, ours: nn.Module) -> tuple[nn.Module, nn.Module]:
    """Ultralytics' head with strides 8/16/32 and trained-like weights, loaded into ours (the same state_dict keys)."""
    theirs.stride = torch.tensor([float(s) for s in STRIDES])
    theirs.bias_init()
    trained_like_weights(theirs)
    ours.initialize(theirs.stride.clone())
    missing, unexpected = ours.load_state_dict(theirs.state_dict(), strict=False)
    if missing or unexpected:
        raise SystemExit(f"state_dict keys differ: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return theirs, ours


def random_targets(g: torch.Generator, batch: int, nc: int) -> Tensor:
    """(M, 6) [image, class, cx, cy, w, h] normalised; image 1 of each batch has none (padding in the batch)."""
    rows = []
    for b in range(batch):
        n = 0 if b == 1 else int(torch.randint(1, 12, (1,), generator=g))
        wh = torch.rand(n, 2, generator=g) * 0.5 + 0.01
        xy = torch.rand(n, 2, generator=g) * (1 - wh) + wh / 2
        cls = torch.randint(0, nc, (n, 1), generator=g).float()
        rows.append(torch.cat((torch.full((n, 1), float(b)), cls, xy, wh), 1))
    return torch.cat(rows)


def check_loss_and_decode(ref, variant: str, seeds: int, tal_min_size: float) -> dict:
    """Max |diff| of the three loss terms, of the head's gradients and of the decoded outputs over ``seeds``."""
    nc, ch, imgsz, batch = 7, (32, 64, 128), 128, 4
    theirs, ours = paired_heads(ref, variant, nc, ch)

    class Wrapper(nn.Module):  # what v8DetectionLoss reads of a model: its args, its last row, a parameter
        def __init__(self, detect):
            super().__init__()
            self.model = nn.ModuleList([detect])
            self.args = types.SimpleNamespace(box=V8_GAINS["v8_box"], cls=V8_GAINS["v8_cls"], dfl=V8_GAINS["v8_dfl"])

    ref_loss = ref.v8DetectionLoss(Wrapper(theirs))
    our_loss = ours.criterion({"tal_min_size": tal_min_size})
    if not tal_min_size:
        ref_loss.assigner.stride_val = 0.0
    out = {"terms": [0.0, 0.0, 0.0], "terms_scale": [0.0, 0.0, 0.0], "grad": 0.0, "grad_scale": 0.0,
           "box": 0.0, "cls": 0.0, "params": [sum(p.numel() for p in theirs.parameters()),
                                             sum(p.numel() for p in ours.parameters())]}
    for seed in range(seeds):
        g = torch.Generator().manual_seed(100 + seed)
        feats = [torch.randn(batch, c, imgsz // s, imgsz // s, generator=g) for c, s in zip(ch, STRIDES)]
        targets = random_targets(g, batch, nc)
        theirs.train(), ours.train()
        theirs.zero_grad(), ours.zero_grad()
        ref_total, ref_items = ref_loss(theirs([f.clone() for f in feats]),
                                        {"batch_idx": targets[:, 0], "cls": targets[:, 1], "bboxes": targets[:, 2:]})
        ref_total.sum().backward()
        total, items = our_loss(ours([f.clone() for f in feats]), targets)
        total.backward()
        ref_terms = torch.stack([ref_items[k] for k in ("box_loss", "cls_loss", "dfl_loss")])
        for i in range(3):
            out["terms"][i] = max(out["terms"][i], float((items[i] - ref_terms[i]).abs()))
            out["terms_scale"][i] = max(out["terms_scale"][i], float(ref_terms[i].abs()))
        grads = dict(theirs.named_parameters())
        for name, p in ours.named_parameters():
            if p.grad is not None:
                out["grad"] = max(out["grad"], float((p.grad - grads[name].grad).abs().max()))
                out["grad_scale"] = max(out["grad_scale"], float(grads[name].grad.abs().max()))
        theirs.eval(), ours.eval()
        with torch.no_grad():
            y_ref = theirs([f.clone() for f in feats])[0].transpose(1, 2)  # (B, N, 4 + nc)
            y = ours.decode(ours(feats))
        out["box"] = max(out["box"], float((y[..., :4] - y_ref[..., :4]).abs().max()))
        out["cls"] = max(out["cls"], float((y[..., 5:] - y_ref[..., 4:]).abs().max()))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ultralytics", required=True, help="a python that imports ultralytics, or its site-packages")
    ap.add_argument("--seeds", type=int, default=40, help="random batches for the assigner check")
    ap.add_argument("--loss-seeds", type=int, default=5, help="random batches for the loss / decode check")
    opt = ap.parse_args(argv)
    ref = import_ultralytics(opt.ultralytics)
    if ref is None:  # ran in the child
        return
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    print(f"torch {torch.__version__}; ultralytics {ref.version} from {ref.path}")
    print("\n(a) tal_assign vs TaskAlignedAssigner (topk 10, alpha 0.5, beta 6; 256 px, 1344 priors, nc 6)")
    print(f"{'rule':<34}{'images':>7}{'tied':>6}{'(same)':>7}{'untied':>7}{'identical':>10}{'preds compared':>16}"
          f"{'differ':>8}{'max |d score|':>15}")
    for label, min_size in (("widened to 16 px (their loss's)", 16.0), ("no widening (stride_val 0)", 0.0)):
        r = check_tal(ref, opt.seeds, min_size)
        print(f"{label:<34}{r['images']:>7}{r['tied']:>6}{r['tied_same']:>7}{r['images'] - r['tied']:>7}"
              f"{r['identical']:>10}{r['predictions']:>16}{r['pred_mismatch']:>8}{r['score_diff']:>15.2e}", flush=True)
    print("\n(b) V8Loss vs v8DetectionLoss, (c) V8Head.decode vs Detect (their weights in ours; max |diff|, with the "
          "largest reference value)")
    print(f"{'variant / TAL rule':<28}{'params ours/theirs':>20}{'box':>18}{'cls':>18}{'dfl':>18}{'grads':>18}"
          f"{'decode box px':>15}{'decode cls':>12}")
    for variant in ("yolov8", "yolo11"):
        for min_size in (16.0, 0.0):
            r = check_loss_and_decode(ref, variant, opt.loss_seeds, min_size)
            terms = [f"{d:.1e} /{s:.3f}" for d, s in zip(r["terms"], r["terms_scale"])]
            print(f"{variant + (' widened' if min_size else ' plain'):<28}{r['params'][1]:>10,}/{r['params'][0]:>9,}"
                  f"{terms[0]:>18}{terms[1]:>18}{terms[2]:>18}{r['grad']:>9.1e} /{r['grad_scale']:.3f}"
                  f"{r['box']:>15.1e}{r['cls']:>12.1e}", flush=True)
    counts = []
    for variant in ("yolov8", "yolo11"):
        theirs, ours = paired_heads(ref, variant, 80, (64, 128, 256))
        counts.append(f"{variant} {sum(p.numel() for p in ours.parameters()):,} / "
                      f"{sum(p.numel() for p in theirs.parameters()):,}")
    print("\nhead parameters, nc 80, ch (64, 128, 256), ours / Detect: " + "; ".join(counts))


if __name__ == "__main__":
    main()
