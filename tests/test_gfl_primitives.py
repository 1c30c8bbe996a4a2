"""GFL primitives (integral, distance coder, QFL, DFL) and the Dynamic Soft Label Assigner: hand computations
and agreement with a per-image, per-gt loop reference of NanoDet's rules."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from utils.assigners import ASSIGNERS, Assignment, dsl_assign, get_assigner, simota_assign
from utils.assigners.simota import _simota_cls_cost
from utils.losses import bbox2distance, distance2bbox, distribution_focal_loss, integral, quality_focal_loss


# ---------------------------------------------------------------------------------------------------------------
# integral, distance coder
# ---------------------------------------------------------------------------------------------------------------
def test_integral_of_hand_made_distributions():
    reg_max = 7
    logits = torch.full((2, 4, reg_max + 1), -1e4)
    logits[0, :, 3] = 0.0  # all mass on bin 3
    logits[1, :, 2] = logits[1, :, 4] = 0.0  # half on 2, half on 4
    logits[1, 3] = torch.arange(reg_max + 1.0).log()  # p(i) proportional to i: mean = sum i^2 / sum i = 140 / 28
    out = integral(logits.reshape(2, -1), reg_max)
    assert out.shape == (2, 4)
    assert torch.allclose(out[0], torch.full((4,), 3.0))
    assert torch.allclose(out[1, :3], torch.full((3,), 3.0))
    assert math.isclose(float(out[1, 3]), 140 / 28, rel_tol=1e-6)
    assert integral(torch.zeros(5, 3, 4 * 17), 16).shape == (5, 3, 4)  # leading dims kept; uniform -> 8
    assert torch.allclose(integral(torch.zeros(1, 4 * 17), 16), torch.full((1, 4), 8.0))


def test_distance_coder_round_trip_and_clamp():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(50, 2, generator=g) * 100
    dist = torch.rand(50, 4, generator=g) * 40
    boxes = distance2bbox(points, dist)
    assert torch.allclose(boxes[:, :2], points - dist[:, :2]) and torch.allclose(boxes[:, 2:], points + dist[:, 2:])
    assert torch.allclose(bbox2distance(points, boxes), dist, atol=1e-4)
    assert torch.allclose(distance2bbox(points, bbox2distance(points, boxes)), boxes, atol=1e-4)
    # in bins with reg_max: clamped to [0, reg_max - eps]; a side behind the point gives 0
    points = torch.tensor([[10.0, 10.0]])
    box = torch.tensor([[12.0, 0.0, 30.0, 10.5]])  # left side is right of the point
    assert torch.allclose(bbox2distance(points, box, reg_max=7), torch.tensor([[0.0, 6.9, 6.9, 0.5]]))
    assert torch.allclose(bbox2distance(points, box, reg_max=7, eps=0.5), torch.tensor([[0.0, 6.5, 6.5, 0.5]]))


# ---------------------------------------------------------------------------------------------------------------
# QFL, DFL
# ---------------------------------------------------------------------------------------------------------------
def _bce(x: float, y: float) -> float:
    p = 1 / (1 + math.exp(-x))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_quality_focal_loss_hand_computed():
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.5]], requires_grad=True)
    labels = torch.tensor([1, -1])  # row 0: positive of class 1 with IoU 0.6; row 1: background
    scores = torch.tensor([0.6, 0.0])
    loss = quality_focal_loss(logits, labels, scores)
    row0 = _bce(0.3, 0) * _sig(0.3) ** 2 + _bce(-1.2, 0.6) * abs(0.6 - _sig(-1.2)) ** 2
    row1 = _bce(2.0, 0) * _sig(2.0) ** 2 + _bce(0.5, 0) * _sig(0.5) ** 2
    assert loss.shape == (2,)
    assert math.isclose(float(loss[0].detach()), row0, rel_tol=1e-5)
    assert math.isclose(float(loss[1].detach()), row1, rel_tol=1e-5)
    beta1 = quality_focal_loss(logits, labels, scores, beta=1.0)
    assert math.isclose(float(beta1[0].detach()), _bce(0.3, 0) * _sig(0.3) + _bce(-1.2, 0.6) * abs(0.6 - _sig(-1.2)),
                        rel_tol=1e-5)
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad != 0).all()
    # a positive whose score equals its probability has no loss on its class
    exact = quality_focal_loss(torch.tensor([[0.0]]), torch.tensor([0]), torch.tensor([0.5]))
    assert float(exact) == 0.0


def test_distribution_focal_loss_hand_computed():
    logits = torch.tensor([[0.2, 1.0, -0.5], [0.2, 1.0, -0.5], [0.2, 1.0, -0.5]])
    log_z = math.log(sum(math.exp(v) for v in (0.2, 1.0, -0.5)))
    ce = [log_z - v for v in (0.2, 1.0, -0.5)]  # cross-entropy of each bin
    target = torch.tensor([1.3, 1.0, 2.0])  # between bins 1 and 2; on bin 1; on the last bin (reg_max = 2)
    loss = distribution_focal_loss(logits, target)
    assert torch.allclose(loss, torch.tensor([0.7 * ce[1] + 0.3 * ce[2], ce[1], ce[2]]), atol=1e-6)


def test_loss_shapes_are_checked():
    with pytest.raises(ValueError, match="labels"):
        quality_focal_loss(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), torch.zeros(3))
    with pytest.raises(ValueError, match="labels"):
        quality_focal_loss(torch.zeros(3, 2), torch.zeros(3), torch.zeros(3))  # float labels
    with pytest.raises(ValueError, match="scores"):
        quality_focal_loss(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="logits"):
        quality_focal_loss(torch.zeros(3), torch.zeros(3, dtype=torch.long), torch.zeros(3))
    with pytest.raises(ValueError, match="dist_logits"):
        distribution_focal_loss(torch.zeros(4, 4, 8), torch.zeros(4))
    with pytest.raises(ValueError, match="target"):
        distribution_focal_loss(torch.zeros(4, 8), torch.zeros(4, 1))


# ---------------------------------------------------------------------------------------------------------------
# DSLA
# ---------------------------------------------------------------------------------------------------------------
def make_points(imgsz: int, strides: tuple[int, ...]) -> torch.Tensor:
    """(N, 4) [x * s, y * s, s, s]: NanoDet-Plus's prior points (cell top-left), row-major per level."""
    rows = []
    for s in strides:
        n = imgsz // s
        y, x = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        px, py = x.flatten().float() * s, y.flatten().float() * s
        rows.append(torch.stack((px, py, torch.full_like(px, s), torch.full_like(px, s)), 1))
    return torch.cat(rows)


def random_case(seed: int, gt_counts: list[int], imgsz: int = 96, strides=(8, 16), nc: int = 3, obj: bool = False):
    """Random gts padded to max(gt_counts) (padding rows hold garbage boxes and labels) and predictions
    around the prior points, so that IoUs, dynamic k and conflicts vary."""
    g = torch.Generator().manual_seed(seed)
    priors = make_points(imgsz, strides)
    B, N, G = len(gt_counts), priors.shape[0], max(gt_counts + [0])
    wh = torch.rand(B, G, 2, generator=g) * imgsz * 0.5 + 2
    c = torch.rand(B, G, 2, generator=g) * imgsz
    gt_boxes = torch.cat((c - wh / 2, c + wh / 2), -1)
    gt_mask = torch.arange(G)[None] < torch.tensor(gt_counts)[:, None]
    gt_labels = torch.randint(0, nc, (B, G), generator=g).masked_fill(~gt_mask, 99)
    gt_boxes = torch.where(gt_mask[..., None], gt_boxes, torch.tensor([0.0, 0.0, imgsz, imgsz]))
    dist = torch.rand(B, N, 4, generator=g) * imgsz * 0.3 + 1
    pred_boxes = distance2bbox(priors[:, :2] + torch.randn(B, N, 2, generator=g) * 3, dist)
    cls = torch.randn(B, N, nc, generator=g) * 2
    obj_logits = torch.randn(B, N, 1, generator=g) * 2 if obj else None
    return pred_boxes, cls, obj_logits, priors, gt_boxes, gt_labels, gt_mask


def reference_dsl(pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask, topk=13, iou_factor=3.0,
                  soft_center_radius=0.0):
    """NanoDet's DSLA written plainly: loops over images and gts, valid-prior columns only, the full
    (V, nc) soft-label BCE per gt. Equal costs: the lower prior index first (stable sort), as dsl_assign.
    Returns (assigned (B, N), matched IoU (B, N), per image {gt: k}, per image {gt: set of claimed priors})."""
    B, N = pred_boxes.shape[:2]
    nc = cls.shape[-1]
    assigned, matched_iou = torch.full((B, N), -1, dtype=torch.long), torch.zeros(B, N)
    ks, claims = [{} for _ in range(B)], [{} for _ in range(B)]
    px, py = priors[:, 0], priors[:, 1]
    for b in range(B):
        gt_idx = [i for i in range(gt_boxes.shape[1]) if gt_mask[b, i]]
        inside = [(px - gt_boxes[b, i, 0] > 0) & (py - gt_boxes[b, i, 1] > 0) & (gt_boxes[b, i, 2] - px > 0)
                  & (gt_boxes[b, i, 3] - py > 0) for i in gt_idx]
        if not gt_idx or not torch.stack(inside).any():
            continue
        cols = torch.stack(inside).any(0).nonzero().flatten()
        ious = box_iou(gt_boxes[b, gt_idx], pred_boxes[b, cols])  # (g, V)
        x = cls[b, cols].float()
        p = x.sigmoid() if obj is None else x.sigmoid() * obj[b, cols].float().sigmoid()
        costs = []
        for j, i in enumerate(gt_idx):
            soft = F.one_hot(gt_labels[b, i], nc).float()[None] * ious[j, :, None]  # (V, nc)
            bce = (F.binary_cross_entropy_with_logits(x, soft, reduction="none") if obj is None
                   else F.binary_cross_entropy(p, soft, reduction="none"))
            cost = (bce * (soft - p).abs() ** 2).sum(-1) + iou_factor * -torch.log(ious[j] + 1e-7)
            if soft_center_radius > 0:
                centre = (gt_boxes[b, i, :2] + gt_boxes[b, i, 2:]) / 2
                d = ((priors[cols, :2] - centre) ** 2).sum(-1).sqrt() / priors[cols, 2]
                cost = cost + 10 ** (d - soft_center_radius).clamp(max=30)
            costs.append(cost)
        cost = torch.stack(costs)  # (g, V)
        matching = torch.zeros_like(cost, dtype=torch.bool)
        for j, i in enumerate(gt_idx):
            k = max(1, int(ious[j].topk(min(topk, len(cols))).values.sum()))
            chosen = torch.sort(cost[j], stable=True).indices[:k]
            matching[j, chosen] = True
            ks[b][i], claims[b][i] = k, set(cols[chosen].tolist())
        for v in range(len(cols)):
            if matching[:, v].sum() > 1:
                matching[:, v] = False
                matching[cost[:, v].argmin(), v] = True
            if matching[:, v].any():
                j = int(matching[:, v].nonzero())
                assigned[b, cols[v]], matched_iou[b, cols[v]] = gt_idx[j], ious[j, v]
    return assigned, matched_iou, ks, claims


def _options(seed: int) -> dict:
    return {0: {}, 1: {"soft_center_radius": 3.0}, 2: {"topk": 5, "iou_factor": 1.0}}[seed % 3]


@pytest.mark.parametrize("seed", range(30))
def test_dsl_matches_loop_reference(seed):
    g = torch.Generator().manual_seed(1000 + seed)
    batch = 1 + seed % 3
    counts = torch.randint(0, 31, (batch,), generator=g).tolist()
    if seed % 5 == 0:
        counts[0] = 0  # an image without gts beside others
    case = random_case(seed, counts, nc=[1, 3, 5][seed % 3], obj=seed % 4 == 3)
    options = _options(seed)
    res = dsl_assign(*case, **options)
    ref_assigned, ref_iou, ks, claims = reference_dsl(*case, **options)
    assert torch.equal(res.assigned_gt, ref_assigned)
    assert torch.allclose(res.matched_iou, ref_iou, atol=1e-6)
    assert int(res.num_fg) == int((ref_assigned >= 0).sum())
    # per gt: it claims exactly k = max(1, int(sum of its top-k IoUs)) priors, and keeps k - lost + won
    pred_boxes, priors, gt_boxes = case[0], case[3], case[4]
    topk = options.get("topk", 13)
    for b in range(batch):
        owner = res.assigned_gt[b]
        claim_count = torch.zeros(priors.shape[0], dtype=torch.long)
        for prior_set in claims[b].values():
            claim_count[list(prior_set)] += 1
        for i, prior_set in claims[b].items():
            x1, y1, x2, y2 = gt_boxes[b].T[:, :counts[b], None]
            valid = ((priors[:, 0] > x1) & (priors[:, 1] > y1) & (x2 > priors[:, 0]) & (y2 > priors[:, 1])).any(0)
            iou = box_iou(gt_boxes[b, i:i + 1], pred_boxes[b, valid])[0]
            assert len(prior_set) == ks[b][i] == max(1, int(iou.topk(min(topk, len(iou))).values.sum()))
            kept = {p for p in prior_set if owner[p] == i}
            won = set((owner == i).nonzero().flatten().tolist()) - prior_set
            assert all(claim_count[p] > 1 for p in prior_set - kept)  # lost only in conflicts
            assert all(claim_count[p] > 1 for p in won)  # won only in conflicts
            assert int((owner == i).sum()) == ks[b][i] - len(prior_set - kept) + len(won)


def one_gt_inputs(pred_boxes, cls, priors, gt_boxes) -> dict:
    """Keyword inputs of ``dsl_assign`` for one image with one gt of class 0 and no objectness."""
    return {"pred_boxes": pred_boxes, "pred_cls_logits": cls, "pred_obj_logits": None, "priors": priors,
            "gt_boxes": gt_boxes, "gt_labels": torch.zeros(1, 1, dtype=torch.long),
            "gt_mask": torch.ones(1, 1, dtype=torch.bool)}


def test_dynamic_k_hand_computed_and_fewer_valid_priors_than_topk():
    priors = make_points(64, (8,))  # points 0, 8, ..., 56
    gt = torch.tensor([[[12.0, 12.0, 44.0, 44.0]]])  # holds the points 16..40 per axis: 4 x 4 = 16 valid
    valid = (priors[:, 0] > 12) & (priors[:, 0] < 44) & (priors[:, 1] > 12) & (priors[:, 1] < 44)
    assert int(valid.sum()) == 16
    u = torch.tensor([0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.05, 0.04, 0.03, 0.02, 0.01])
    width = torch.full((64,), 32.0)  # invalid priors predict the gt exactly (IoU 1): must not count
    width[valid] = 32.0 * u  # pred [12, 12, 12 + w, 44] lies inside the gt: IoU = w / 32
    pred = torch.stack((torch.full((64,), 12.0), torch.full((64,), 12.0), 12 + width, torch.full((64,), 44.0)), 1)
    inputs = one_gt_inputs(pred[None], torch.zeros(1, 64, 2), priors, gt)
    res = dsl_assign(**inputs)
    assert int(sum(u[:13])) == 5  # top-13 sum 5.47
    assert int(res.num_fg) == 5
    expected = valid.nonzero().flatten()[:5]  # equal cls logits: cheapest = highest IoU
    assert torch.equal(res.fg_mask[0].nonzero().flatten(), expected)
    assert torch.allclose(res.matched_iou[0, expected], u[:5], atol=1e-5)
    # 4 valid priors only: top-min(13, 4) IoUs, 4 x 0.9 = 3.6 -> k = 3
    inputs["gt_boxes"] = torch.tensor([[[12.0, 12.0, 28.0, 28.0]]])  # holds the points 16, 24 per axis
    small_valid = (priors[:, 0] > 12) & (priors[:, 0] < 28) & (priors[:, 1] > 12) & (priors[:, 1] < 28)
    pred = torch.tensor([12.0, 12.0, 28.0, 28.0]).repeat(64, 1)
    pred[small_valid, 2] = 12 + 16 * 0.9
    inputs["pred_boxes"] = pred[None]
    res = dsl_assign(**inputs)
    assert int(res.num_fg) == 3 and bool((res.fg_mask[0] <= small_valid).all())


def test_empty_batch_images_without_valid_priors_and_padding():
    case = random_case(3, [4, 0, 2])
    pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask = case
    res = dsl_assign(*case)
    assert not res.fg_mask[1].any() and res.fg_mask[0].any() and res.fg_mask[2].any()
    assert (res.matched_iou[~res.fg_mask] == 0).all()
    empty = dsl_assign(pred_boxes, cls, obj, priors, gt_boxes[:, :0], gt_labels[:, :0], gt_mask[:, :0])
    assert isinstance(empty, Assignment) and (empty.assigned_gt == -1).all() and int(empty.num_fg) == 0
    assert empty.assigned_gt.shape == pred_boxes.shape[:2]
    # a gt between prior points (none strictly inside it) in an image of its own: no valid prior, no positive
    tiny = torch.tensor([[[9.0, 9.0, 15.0, 15.0]]]).expand(3, 1, 4)
    none = dsl_assign(pred_boxes, cls, obj, priors, tiny, gt_labels[:, :1].clamp(max=2), torch.ones(3, 1, dtype=bool))
    assert not none.fg_mask.any()
    # padding rows (garbage boxes covering everything, wild labels) change nothing
    pad_boxes = torch.cat((gt_boxes, torch.tensor([0.0, 0.0, 96.0, 96.0]).expand(3, 2, 4)), 1)
    pad_labels = torch.cat((gt_labels, torch.full((3, 2), -7)), 1)
    pad_mask = torch.cat((gt_mask, torch.zeros(3, 2, dtype=torch.bool)), 1)
    padded = dsl_assign(pred_boxes, cls, obj, priors, pad_boxes, pad_labels, pad_mask)
    assert torch.equal(padded.assigned_gt, res.assigned_gt) and torch.equal(padded.matched_iou, res.matched_iou)


def test_only_valid_priors_are_assigned_and_a_lone_gt_gets_k():
    pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask = random_case(8, [1, 1])
    res = dsl_assign(pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask)
    x1, y1, x2, y2 = gt_boxes[:, 0].T[..., None]  # each (B, 1)
    inside = (priors[:, 0] > x1) & (priors[:, 1] > y1) & (x2 > priors[:, 0]) & (y2 > priors[:, 1])  # (B, N)
    assert bool((res.fg_mask <= inside).all())
    for b in range(2):
        iou = box_iou(gt_boxes[b, :1], pred_boxes[b, inside[b]])[0]
        assert int(res.fg_mask[b].sum()) == max(1, int(iou.topk(min(13, len(iou))).values.sum())) >= 1


def test_soft_center_prior_changes_the_cost():
    # one gt, every valid prior predicts the same box with the same logits: only the centre prior separates them
    priors = make_points(64, (8,))
    gt = torch.tensor([[[4.0, 4.0, 60.0, 60.0]]])  # centre (32, 32); 7 x 7 = 49 valid points
    pred = torch.tensor([10.0, 10.0, 54.0, 54.0]).repeat(1, 64, 1)  # IoU 0.617 everywhere -> k = int(13 x 0.617) = 8
    inputs = one_gt_inputs(pred, torch.zeros(1, 64, 1), priors, gt)
    plain, centred = dsl_assign(**inputs), dsl_assign(**inputs, soft_center_radius=3.0)
    assert int(plain.num_fg) == int(centred.num_fg) == 8
    assert not torch.equal(plain.assigned_gt, centred.assigned_gt)
    # the 8 nearest points to the centre: distances 0 (1 point), 8 (4 points), then 3 of the 4 at 11.3
    dist = (priors[:, :2] - 32).norm(dim=1)[centred.fg_mask[0]]
    assert int((dist <= 8).sum()) == 5 and float(dist.max()) < 11.4
    assert torch.equal(centred.assigned_gt, reference_dsl(*inputs.values(), soft_center_radius=3.0)[0])


def test_objectness_multiplies_the_class_probability():
    pred_boxes, cls, _, priors, gt_boxes, gt_labels, gt_mask = random_case(4, [6, 9], obj=False)
    certain = dsl_assign(pred_boxes, cls, torch.full_like(cls[..., :1], 30.0), priors, gt_boxes, gt_labels, gt_mask)
    # sigmoid(30) == 1.0 in float32: p = sigmoid(cls); BCE on that probability ~ BCE with logits
    alone = dsl_assign(pred_boxes, cls, None, priors, gt_boxes, gt_labels, gt_mask)
    assert torch.equal(certain.assigned_gt, alone.assigned_gt)
    low = dsl_assign(pred_boxes, cls, torch.full_like(cls[..., :1], -3.0), priors, gt_boxes, gt_labels, gt_mask)
    assert torch.equal(low.assigned_gt, reference_dsl(pred_boxes, cls, torch.full_like(cls[..., :1], -3.0), priors,
                                                      gt_boxes, gt_labels, gt_mask)[0])


def test_dsl_is_registered_and_no_grad():
    assert ASSIGNERS["dsl"] is dsl_assign and get_assigner("dsl") is dsl_assign
    pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask = random_case(7, [4, 2])
    cls.requires_grad_(True)
    res = dsl_assign(pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask)
    assert not res.matched_iou.requires_grad and res.assigned_gt.dtype == torch.long and res.num_fg.dim() == 0
    half = dsl_assign(pred_boxes.bfloat16(), cls.detach().bfloat16(), obj, priors, gt_boxes, gt_labels, gt_mask)
    assert half.matched_iou.dtype == torch.float32 and torch.isfinite(half.matched_iou).all()


def test_dsl_bad_inputs_name_the_argument():
    pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask = random_case(0, [2], nc=3)
    with pytest.raises(ValueError, match="priors"):
        dsl_assign(pred_boxes, cls, obj, priors[:-1], gt_boxes, gt_labels, gt_mask)
    with pytest.raises(ValueError, match="pred_boxes"):
        dsl_assign(pred_boxes[0], cls, obj, priors, gt_boxes, gt_labels, gt_mask)
    with pytest.raises(ValueError, match="pred_cls_logits"):
        dsl_assign(pred_boxes, cls[:, :-1], obj, priors, gt_boxes, gt_labels, gt_mask)
    with pytest.raises(ValueError, match="pred_obj_logits"):
        dsl_assign(pred_boxes, cls, cls, priors, gt_boxes, gt_labels, gt_mask)
    with pytest.raises(ValueError, match="gt_boxes"):
        dsl_assign(pred_boxes, cls, obj, priors, gt_boxes[..., :3], gt_labels, gt_mask)
    with pytest.raises(ValueError, match="gt_mask"):
        dsl_assign(pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask.long())
    with pytest.raises(ValueError, match="gt_labels"):
        dsl_assign(pred_boxes, cls, obj, priors, gt_boxes, torch.full_like(gt_labels, 3), gt_mask)
    with pytest.raises(ValueError, match="topk"):
        dsl_assign(pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask, topk=0)
    with pytest.raises(ValueError, match="soft_center_radius"):
        dsl_assign(pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask, soft_center_radius=-1.0)


# ---------------------------------------------------------------------------------------------------------------
# SimOTA without objectness
# ---------------------------------------------------------------------------------------------------------------
def test_simota_without_objectness_scores_by_class_alone():
    pred_boxes, cls, _, priors, gt_boxes, gt_labels, gt_mask = random_case(5, [7, 12], nc=1)
    priors = priors + torch.tensor([4.0, 4.0, 0.0, 0.0])  # SimOTA's priors are cell centres
    # nc = 1 and obj = cls: sqrt(sigmoid(x) * sigmoid(x)) == sigmoid(x) exactly in float32 (sqrt(a * a) == a)
    alone = simota_assign(pred_boxes, cls, None, priors, gt_boxes, gt_labels, gt_mask)
    squared = simota_assign(pred_boxes, cls, cls, priors, gt_boxes, gt_labels, gt_mask)
    assert int(alone.num_fg) > 0
    assert torch.equal(alone.assigned_gt, squared.assigned_gt) and torch.equal(alone.matched_iou, squared.matched_iou)
    # any nc: the cls cost is BCE(sigmoid(cls), one-hot) summed over classes
    cls3 = torch.randn(2, priors.shape[0], 4, generator=torch.Generator().manual_seed(0)) * 3
    labels = torch.tensor([[0, 3], [2, 1]])
    cost = _simota_cls_cost(cls3, None, labels)  # (B, G, N)
    onehot = F.one_hot(labels, 4).float()[:, :, None].expand(-1, -1, priors.shape[0], -1)
    expected = F.binary_cross_entropy(cls3.sigmoid()[:, None].expand_as(onehot), onehot, reduction="none").sum(-1)
    assert torch.allclose(cost, expected, atol=1e-5)
