"""Cross-check our DSLA, SimOTA and GFL primitives against the reference implementations, run from their source.

    python bench/crosscheck_reference.py --nanodet /tmp/nanodet_ref --yolox /tmp/yolox_main /tmp/yolox_030

``--nanodet``: an extracted RangiLyu/nanodet snapshot (``git archive``); its ``DynamicSoftLabelAssigner``,
``QualityFocalLoss``, ``DistributionFocalLoss``, ``Integral`` and ``box_transform`` are run on the same random
inputs as ``dsl_assign`` and ``utils.losses.gfl``. ``--yolox``: one or more extracted Megvii-BaseDetection/YOLOX
snapshots; ``YOLOXHead.get_assignments`` of each is run per image beside ``simota_assign``: a snapshot with
``get_geometry_constraint`` (main since PR #1589) against ``center_only=True, center_radius=1.5``, an older one
(<= 0.3.0) against the default rule. The reference modules are loaded from those folders at run time, with
empty stub packages in place of their package ``__init__`` files (which import training dependencies) and a
stub ``loguru``; nothing of them is copied here.

Assignments must be identical (the table counts mismatching predictions) except where the reference's own cost
matrix has equal costs at some gt's k-th cheapest place ("tied" cases): which of those candidates it takes is
``torch.topk``'s unspecified order among equal values (CPU: partial_sort or nth_element by size; CUDA: another),
which no batched rule reproduces (ours: the lower prior index first for DSLA; topk's order for SimOTA). The
matched IoUs are compared where both pick the same gt; losses agree to float32 rounding.
YOLOX works on cxcywh boxes: coordinates are drawn on a 1/8 px lattice so that both box forms are exact.
Prints one row per check: cases, compared values, mismatches and the largest absolute difference.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import sys
import types
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch
from torch import Tensor

from utils.assigners import dsl_assign, simota_assign
from utils.losses.gfl import bbox2distance, distance2bbox, distribution_focal_loss, integral, quality_focal_loss


# ---------------------------------------------------------------------------------------------------------------
# Loading the references from their folders
# ---------------------------------------------------------------------------------------------------------------
def _stub_package(name: str, path: Path) -> None:
    """An empty package ``name`` whose submodules load from ``path`` (its own ``__init__`` is not run)."""
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    sys.modules[name] = module


def _load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _class_from_source(path: Path, class_name: str, namespace: dict) -> type:
    """Execute just the class ``class_name`` of the file at ``path`` (its module imports GUI/data deps)."""
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    exec(compile(ast.Module([node], type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102 (their class)
    return namespace[class_name]


def load_nanodet(root: Path) -> types.SimpleNamespace:
    package = root / "nanodet"
    for name in ("nanodet", "nanodet.util", "nanodet.model", "nanodet.model.loss", "nanodet.model.head",
                 "nanodet.model.head.assigner"):
        _stub_package(name, package.joinpath(*name.split(".")[1:]))
    dsl = importlib.import_module("nanodet.model.head.assigner.dsl_assigner")
    gfocal = importlib.import_module("nanodet.model.loss.gfocal_loss")
    box_transform = importlib.import_module("nanodet.util.box_transform")
    integral_cls = _class_from_source(package / "model" / "head" / "gfl_head.py", "Integral",
                                      {"torch": torch, "nn": torch.nn, "F": torch.nn.functional})
    return types.SimpleNamespace(DynamicSoftLabelAssigner=dsl.DynamicSoftLabelAssigner,
                                 QualityFocalLoss=gfocal.QualityFocalLoss,
                                 DistributionFocalLoss=gfocal.DistributionFocalLoss, Integral=integral_cls,
                                 distance2bbox=box_transform.distance2bbox,
                                 bbox2distance=box_transform.bbox2distance)


def load_yolox_head(root: Path) -> type:
    """``YOLOXHead`` of the snapshot at ``root``; the ``yolox`` modules are dropped from sys.modules afterwards
    so that another snapshot can be loaded under the same names."""
    package = root / "yolox"
    sys.modules.setdefault("loguru", types.SimpleNamespace(logger=None))
    _stub_package("yolox", package)
    _stub_package("yolox.models", package / "models")
    utils = types.ModuleType("yolox.utils")
    boxes = _load_file("yolox.utils.boxes", package / "utils" / "boxes.py")
    compat = package / "utils" / "compat.py"
    utils.bboxes_iou = boxes.bboxes_iou
    utils.cxcywh2xyxy = getattr(boxes, "cxcywh2xyxy", None)
    utils.meshgrid = _load_file("yolox.utils.compat", compat).meshgrid if compat.exists() else torch.meshgrid
    utils.visualize_assign = None
    sys.modules["yolox.utils"] = utils
    try:
        return importlib.import_module("yolox.models.yolo_head").YOLOXHead
    finally:
        for name in [n for n in sys.modules if n == "yolox" or n.startswith("yolox.")]:
            del sys.modules[name]


# ---------------------------------------------------------------------------------------------------------------
# Random cases
# ---------------------------------------------------------------------------------------------------------------
def make_priors(imgsz: int, strides: tuple[int, ...], offset: float) -> Tensor:
    """(N, 4) [x, y, s, s] with x = (col + offset) * s per level, row-major as the heads concatenate them."""
    rows = []
    for s in strides:
        n = -(-imgsz // s)
        y, x = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32),
                              indexing="ij")
        x, y = (x.flatten() + offset) * s, (y.flatten() + offset) * s
        rows.append(torch.stack((x, y, torch.full_like(x, s), torch.full_like(x, s)), 1))
    return torch.cat(rows)


def random_gts(g: torch.Generator, counts: list[int], imgsz: int, nc: int, lattice: float | None):
    """Padded gts (B, G, 4) xyxy inside the image (sides 2 px .. 0.8 imgsz), labels, mask; padding rows
    hold garbage boxes and labels. ``lattice``: round coordinates to multiples of it."""
    batch, num_gt = len(counts), max(counts)
    wh = torch.rand(batch, num_gt, 2, generator=g) ** 2 * (0.8 * imgsz - 2) + 2
    x1y1 = torch.rand(batch, num_gt, 2, generator=g) * (imgsz - wh)
    boxes = torch.cat((x1y1, x1y1 + wh), -1)
    if lattice:
        boxes = (boxes / lattice).round() * lattice
        boxes[..., 2:] = torch.maximum(boxes[..., 2:], boxes[..., :2] + lattice)
    labels = torch.randint(0, nc, (batch, num_gt), generator=g)
    mask = torch.arange(num_gt)[None] < torch.tensor(counts)[:, None]
    boxes = torch.where(mask[..., None], boxes, torch.rand(batch, num_gt, 4, generator=g) * imgsz)
    return boxes, labels.masked_fill(~mask, 7 * nc), mask


def trained_like_predictions(g: torch.Generator, priors: Tensor, gt_boxes: Tensor, gt_mask: Tensor,
                             max_reach: float | None, lattice: float | None) -> Tensor:
    """(B, N, 4) xyxy: a prior inside a gt predicts that gt's box (the smallest one containing it) with its
    four side distances scaled by exp(0.35 * noise); elsewhere a random box of 0.5..4 strides per side."""
    px, py, stride = priors[:, 0], priors[:, 1], priors[:, 2]
    x1, y1, x2, y2 = (gt_boxes[..., i, None] for i in range(4))
    inside = (px > x1) & (py > y1) & (x2 > px) & (y2 > py) & gt_mask[..., None]  # (B, G, N)
    area = ((x2 - x1) * (y2 - y1)).expand_as(inside).masked_fill(~inside, float("inf"))
    best = area.argmin(dim=1)  # (B, N)
    target = gt_boxes.gather(1, best[..., None].expand(-1, -1, 4))  # (B, N, 4)
    dist = bbox2distance(priors[:, :2], target).clamp(min=0) * torch.exp(0.35 * torch.randn(target.shape, generator=g))
    far = stride[:, None] * (0.5 + 3.5 * torch.rand(target.shape, generator=g))
    dist = torch.where(inside.any(dim=1)[..., None], dist, far)
    if max_reach is not None:
        dist = torch.minimum(dist, stride[:, None] * max_reach)
    boxes = distance2bbox(priors[:, :2].expand_as(dist[..., :2]), dist)
    if lattice:
        boxes = (boxes / lattice).round() * lattice
        boxes[..., 2:] = torch.maximum(boxes[..., 2:], boxes[..., :2] + lattice)
    return boxes


def random_logits(g: torch.Generator, batch: int, num_priors: int, nc: int, channels: int | None = None) -> Tensor:
    """Logits around -2 with a spread of 0.5, 2 or 4, or as a fresh head's (bias -4.595, spread 0.01)."""
    choice = int(torch.randint(0, 4, (1,), generator=g))
    scale, bias = [(0.5, -2.0), (2.0, -2.0), (4.0, -2.0), (0.01, -4.595)][choice]
    return torch.randn(batch, num_priors, channels or nc, generator=g) * scale + bias


class Row:
    """One table row: cases (images for the assigners), of which with a tie at some gt's k-th cheapest cost,
    compared values, mismatching values, cases with a mismatch and of which tied, largest |difference|."""

    def __init__(self, name: str):
        self.name, self.cases, self.values, self.mismatches, self.max_diff = name, 0, 0, 0, 0.0
        self.tied_cases, self.bad_cases, self.bad_tied_cases = 0, 0, 0

    def add(self, values: int, mismatches: int = 0, diff: float = 0.0, tied: bool = False) -> None:
        self.cases += 1
        self.values += values
        self.mismatches += mismatches
        self.tied_cases += tied
        self.bad_cases += mismatches > 0
        self.bad_tied_cases += mismatches > 0 and tied
        self.max_diff = max(self.max_diff, diff)


def capture_matching(obj, method: str, store: list) -> None:
    """Record the (cost, IoU) matrices the reference's dynamic-k matching ``method`` of ``obj`` receives."""
    original = getattr(obj, method)

    def recording(cost, ious, *args):
        store.append((cost.clone(), ious.clone()))
        return original(cost, ious, *args)

    setattr(obj, method, recording)


def tie_at_kth(cost: Tensor, ious: Tensor, topk: int) -> bool:
    """Whether some gt's dynamic k-th cheapest cost equals its (k+1)-th in the reference's own matrices
    ``(G, C)``: then which candidates it takes is up to ``torch.topk``'s unspecified order among equal values
    (CPU: partial_sort when 64 k <= C, nth_element otherwise; CUDA: another), so no rule reproduces it."""
    if cost.shape[1] < 2:
        return False
    k = ious.topk(min(topk, ious.shape[1]), dim=1).values.sum(1).int().clamp(min=1).long()  # (G,)
    ordered = cost.sort(dim=1).values
    kth = ordered.gather(1, (k - 1)[:, None])
    after = ordered.gather(1, k.clamp(max=cost.shape[1] - 1)[:, None])
    return bool(((kth == after) & (k < cost.shape[1])[:, None]).any())


def _max_abs(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


# ---------------------------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------------------------
def check_dsl(ref: types.SimpleNamespace, n_cases: int, seed: int, duplicates: bool = False) -> tuple[Row, Row]:
    """NanoDet's DSLA per image vs ``dsl_assign`` on the padded batch: owner of every prior, matched IoU."""
    owners, ious = Row("DSLA assigned gt" + (" (duplicate gts)" if duplicates else "")), Row("DSLA matched IoU")
    assigner, seen = ref.DynamicSoftLabelAssigner(topk=13, iou_factor=3.0), []
    capture_matching(assigner, "dynamic_k_matching", seen)
    for case in range(n_cases):
        g = torch.Generator().manual_seed(seed + case)
        imgsz = int(torch.tensor([64, 128, 160, 320, 416])[torch.randint(0, 5, (1,), generator=g)])
        nc = int(torch.tensor([1, 3, 8, 20, 80])[torch.randint(0, 5, (1,), generator=g)])
        counts = torch.randint(1, 31, (int(torch.randint(1, 4, (1,), generator=g)),), generator=g).tolist()
        priors = make_priors(imgsz, (8, 16, 32, 64), offset=0.0)  # NanoDet-Plus: the cell's top-left point
        gt_boxes, gt_labels, gt_mask = random_gts(g, counts, imgsz, nc, lattice=None)
        if duplicates:  # every second gt repeats the previous one (box and class): exact cost ties
            gt_boxes[:, 1::2], gt_labels[:, 1::2] = gt_boxes[:, 0:-1:2], gt_labels[:, 0:-1:2]
            gt_mask[:, 1::2] &= gt_mask[:, 0:-1:2]
        pred_boxes = trained_like_predictions(g, priors, gt_boxes, gt_mask, max_reach=7.0, lattice=None)
        cls = random_logits(g, len(counts), priors.shape[0], nc)
        ours = dsl_assign(pred_boxes, cls, None, priors, gt_boxes, gt_labels, gt_mask)
        for b, n in enumerate(counts):
            seen.clear()
            res = assigner.assign(cls[b], priors, pred_boxes[b], gt_boxes[b, :n], gt_labels[b, :n])
            ref_gt = res.gt_inds - 1  # NanoDet: 0 = background, i + 1 = gt i
            fg = (ref_gt >= 0) & (ours.assigned_gt[b] == ref_gt)  # IoUs of the same pairs
            diff = _max_abs(ours.matched_iou[b][fg], res.max_overlaps[fg])
            tied = bool(seen) and tie_at_kth(seen[0][0].T, seen[0][1].T, 13)  # NanoDet's are (V, G)
            owners.add(priors.shape[0], int((ours.assigned_gt[b] != ref_gt).sum()), tied=tied)
            ious.add(int(fg.sum()), 0, diff)
    return owners, ious


def check_gfl_losses(ref: types.SimpleNamespace, n_cases: int, seed: int) -> list[Row]:
    """QFL, DFL, the integral and the distance coder vs NanoDet's, per element (no reduction)."""
    rows = {k: Row(k) for k in ("QFL per sample", "DFL per sample", "integral", "distance2bbox",
                                "bbox2distance (reg_max)")}
    qfl, dfl = ref.QualityFocalLoss(beta=2.0, reduction="none"), ref.DistributionFocalLoss(reduction="none")
    for case in range(n_cases):
        g = torch.Generator().manual_seed(seed + case)
        m, nc = int(torch.randint(1, 300, (1,), generator=g)), int(torch.randint(1, 81, (1,), generator=g))
        logits = torch.randn(m, nc, generator=g) * 3 - 2
        labels = torch.randint(-1, nc, (m,), generator=g)
        scores = torch.rand(m, generator=g) * (labels >= 0)
        ref_labels = torch.where(labels >= 0, labels, nc)  # NanoDet: background = nc
        rows["QFL per sample"].add(m, 0, _max_abs(quality_focal_loss(logits, labels, scores),
                                                  qfl(logits, (ref_labels, scores))))
        reg_max = int(torch.tensor([7, 16])[torch.randint(0, 2, (1,), generator=g)])
        dist_logits = torch.randn(m, 4 * (reg_max + 1), generator=g) * 2
        target = torch.rand(m * 4, generator=g) * (reg_max - 0.1)
        target[::5] = target[::5].floor()  # whole-bin targets too
        per_side = dist_logits.reshape(-1, reg_max + 1)
        rows["DFL per sample"].add(4 * m, 0, _max_abs(distribution_focal_loss(per_side, target),
                                                      dfl(per_side, target)))
        rows["integral"].add(4 * m, 0, _max_abs(integral(dist_logits, reg_max), ref.Integral(reg_max)(dist_logits)))
        points = torch.rand(m, 2, generator=g) * 320
        dist = torch.rand(m, 4, generator=g) * 100
        rows["distance2bbox"].add(4 * m, 0, _max_abs(distance2bbox(points, dist), ref.distance2bbox(points, dist)))
        boxes = ref.distance2bbox(points, dist - 20)  # some sides behind the point: clamped to 0
        rows["bbox2distance (reg_max)"].add(4 * m, 0, _max_abs(bbox2distance(points, boxes / 8, reg_max),
                                                               ref.bbox2distance(points, boxes / 8, reg_max)))
    return list(rows.values())


def _yolox_one_image(head, main_style: bool, b: int, n: int, pred_boxes: Tensor, cls: Tensor, obj: Tensor,
                     priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor) -> tuple[Tensor, Tensor]:
    """YOLOX's (N,) owner (-1 background) and matched IoU for image ``b``, called as its loss does."""
    def cxcywh(x):
        return torch.cat(((x[..., :2] + x[..., 2:]) / 2, x[..., 2:] - x[..., :2]), -1)

    stride = priors[None, :, 2]
    x_shifts, y_shifts = priors[None, :, 0] / stride - 0.5, priors[None, :, 1] / stride - 0.5
    gt, classes, preds = cxcywh(gt_boxes[b, :n]), gt_labels[b, :n].float(), cxcywh(pred_boxes[b])
    if main_style:
        out = head.get_assignments(b, n, gt, classes, preds, stride, x_shifts, y_shifts, cls, obj)
    else:
        out = head.get_assignments(b, n, priors.shape[0], gt, classes, preds, stride, x_shifts, y_shifts,
                                   cls, None, obj, None, None)
    _, fg_mask, pred_ious, matched_gt, _ = out
    owner = torch.full((priors.shape[0],), -1, dtype=torch.long)
    iou = torch.zeros(priors.shape[0])
    owner[fg_mask], iou[fg_mask] = matched_gt, pred_ious.float()
    return owner, iou


def check_simota(head_cls: type, n_cases: int, seed: int) -> tuple[Row, Row, bool]:
    """YOLOX's per-image ``get_assignments`` vs ``simota_assign`` with the matching rule."""
    main_style = hasattr(head_cls, "get_geometry_constraint")
    rule = "center_only r1.5 vs main" if main_style else "default r2.5 vs <=0.3.0"
    owners, ious = Row(f"SimOTA assigned gt ({rule})"), Row(f"SimOTA matched IoU ({rule})")
    for case in range(n_cases):
        g = torch.Generator().manual_seed(seed + case)
        imgsz = int(torch.tensor([64, 128, 160, 320, 416])[torch.randint(0, 5, (1,), generator=g)])
        nc = int(torch.tensor([1, 3, 8, 20, 80])[torch.randint(0, 5, (1,), generator=g)])
        counts = torch.randint(1, 31, (int(torch.randint(1, 4, (1,), generator=g)),), generator=g).tolist()
        head, seen = head_cls(nc, width=0.125), []
        capture_matching(head, "simota_matching" if main_style else "dynamic_k_matching", seen)
        priors = make_priors(imgsz, (8, 16, 32), offset=0.5)  # YOLOX: cell centres
        gt_boxes, gt_labels, gt_mask = random_gts(g, counts, imgsz, nc, lattice=0.125)
        pred_boxes = trained_like_predictions(g, priors, gt_boxes, gt_mask, max_reach=None, lattice=0.125)
        cls = random_logits(g, len(counts), priors.shape[0], nc)
        obj = random_logits(g, len(counts), priors.shape[0], nc, channels=1)
        options = {"center_only": True, "center_radius": 1.5} if main_style else {}
        ours = simota_assign(pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask, **options)
        for b, n in enumerate(counts):
            seen.clear()
            ref_owner, ref_iou = _yolox_one_image(head, main_style, b, n, pred_boxes, cls, obj, priors,
                                                  gt_boxes, gt_labels)
            fg = (ref_owner >= 0) & (ours.assigned_gt[b] == ref_owner)  # IoUs of the same pairs
            tied = bool(seen) and tie_at_kth(seen[0][0], seen[0][1], 10)
            owners.add(priors.shape[0], int((ours.assigned_gt[b] != ref_owner).sum()), tied=tied)
            ious.add(int(fg.sum()), 0, _max_abs(ours.matched_iou[b][fg], ref_iou[fg]))
    return owners, ious, main_style


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nanodet", type=Path, help="extracted RangiLyu/nanodet snapshot")
    ap.add_argument("--yolox", type=Path, nargs="*", default=[], help="extracted Megvii-BaseDetection/YOLOX snapshots")
    ap.add_argument("--cases", type=int, default=60, help="random batches per check (1-3 images, 1-30 gts each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    opt = ap.parse_args(argv)
    torch.set_num_threads(opt.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)  # YOLOX's torch.cuda.amp.autocast
    rows = []
    if opt.nanodet:
        ref = load_nanodet(opt.nanodet)
        rows += check_dsl(ref, opt.cases, opt.seed)
        rows += check_dsl(ref, max(opt.cases // 3, 1), opt.seed + 10_000, duplicates=True)[:1]
        rows += check_gfl_losses(ref, opt.cases, opt.seed)
    for path in opt.yolox:
        rows += check_simota(load_yolox_head(path), opt.cases, opt.seed)[:2]
    print(f"torch {torch.__version__}; references: nanodet={opt.nanodet}, yolox={[str(p) for p in opt.yolox]}")
    print(f"{'check':<48}{'cases':>7}{'tied':>6}{'values':>10}{'mismatch':>10}{'bad cases':>11}{'bad+tied':>10}"
          f"{'max |diff|':>12}")
    for row in rows:
        print(f"{row.name:<48}{row.cases:>7}{row.tied_cases:>6}{row.values:>10}{row.mismatches:>10}"
              f"{row.bad_cases:>11}{row.bad_tied_cases:>10}{row.max_diff:>12.3g}")
    return rows


if __name__ == "__main__":
    main()
