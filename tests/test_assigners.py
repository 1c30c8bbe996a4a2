"""SimOTA assigner: hand-built cases and agreement with a per-image, per-gt loop reference."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from utils.assigners import Assignment, batched_box_iou, simota_assign


def make_priors(imgsz: int, strides: tuple[int, ...]) -> torch.Tensor:
    """(N, 4) [cx, cy, stride, stride] for square levels, row-major per level."""
    rows = []
    for s in strides:
        n = imgsz // s
        y, x = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        cx = (x.flatten().float() + 0.5) * s
        cy = (y.flatten().float() + 0.5) * s
        rows.append(torch.stack((cx, cy, torch.full_like(cx, s), torch.full_like(cx, s)), 1))
    return torch.cat(rows)


def random_case(seed: int, gt_counts: list[int], imgsz: int = 64, strides=(8, 16), nc: int = 3):
    """Random gts padded to max(gt_counts) (padding rows hold garbage) and predictions that sit near
    the gts so that IoUs, and hence dynamic k, vary."""
    g = torch.Generator().manual_seed(seed)
    priors = make_priors(imgsz, strides)
    B, N, G = len(gt_counts), priors.shape[0], max(gt_counts + [0])
    wh = torch.rand(B, G, 2, generator=g) * imgsz * 0.5 + 3
    c = torch.rand(B, G, 2, generator=g) * imgsz
    gt_boxes = torch.cat((c - wh / 2, c + wh / 2), -1)
    gt_labels = torch.randint(0, nc, (B, G), generator=g)
    gt_mask = torch.arange(G)[None] < torch.tensor(gt_counts)[:, None]
    # predictions: prior-centred boxes whose size is drawn around the gt sizes, jittered
    pwh = (torch.rand(B, N, 2, generator=g) * imgsz * 0.5 + 2)
    pc = priors[None, :, :2] + torch.randn(B, N, 2, generator=g) * priors[None, :, 2:] * 0.5
    pred_boxes = torch.cat((pc - pwh / 2, pc + pwh / 2), -1)
    cls = torch.randn(B, N, nc, generator=g) * 2
    obj = torch.randn(B, N, 1, generator=g) * 2
    return pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask


def reference_simota(pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask,
                     center_radius=2.5, candidate_topk=10, center_only=False):
    """Straightforward YOLOX-style SimOTA: loops over images and gts, candidate columns only."""
    B, N = pred_boxes.shape[:2]
    nc = cls.shape[-1]
    assigned = torch.full((B, N), -1, dtype=torch.long)
    matched_iou = torch.zeros(B, N)
    px, py, sx, sy = priors.unbind(1)
    for b in range(B):
        gt_idx = [i for i in range(gt_boxes.shape[1]) if gt_mask[b, i]]
        if not gt_idx:
            continue
        in_box, in_ctr = [], []
        for i in gt_idx:
            x1, y1, x2, y2 = gt_boxes[b, i].tolist()
            gcx, gcy = (x1 + x2) / 2, (y1 + y2) / 2
            rx, ry = sx * center_radius, sy * center_radius
            in_ctr.append((px > gcx - rx) & (px < gcx + rx) & (py > gcy - ry) & (py < gcy + ry))
            in_box.append((px > x1) & (px < x2) & (py > y1) & (py < y2))
        in_box, in_ctr = torch.stack(in_box), torch.stack(in_ctr)  # (g, N)
        if center_only:
            cand, ok = in_ctr.any(0), in_ctr
        else:
            cand, ok = (in_box | in_ctr).any(0), in_box & in_ctr
        cols = cand.nonzero().flatten()
        if cols.numel() == 0:
            continue
        ok = ok[:, cols]
        ious = torch.stack([batched_box_iou(gt_boxes[b, i][None, None], pred_boxes[b, cols][None])[0, 0]
                            for i in gt_idx])  # (g, C)
        p = (cls[b, cols].float().sigmoid() * obj[b, cols].float().sigmoid()).sqrt()  # (C, nc)
        onehot = F.one_hot(gt_labels[b, gt_idx], nc).float()  # (g, nc)
        cls_cost = F.binary_cross_entropy(p[None].expand(len(gt_idx), -1, -1),
                                          onehot[:, None].expand(-1, len(cols), -1), reduction="none").sum(-1)
        penalty = 1e6 if center_only else 1e5
        cost = cls_cost + 3.0 * -torch.log(ious + 1e-8) + penalty * (~ok).float()
        matching = torch.zeros_like(cost, dtype=torch.bool)
        n_k = min(candidate_topk, len(cols))
        for j in range(len(gt_idx)):
            k = max(1, int(ious[j].topk(n_k).values.sum()))
            matching[j, cost[j].topk(k, largest=False).indices] = True
        for col in range(len(cols)):
            owners = matching[:, col].nonzero().flatten()
            if len(owners) > 1:
                matching[:, col] = False
                matching[cost[:, col].argmin(), col] = True
            owners = matching[:, col].nonzero().flatten()
            if len(owners) == 1:
                j = owners.item()
                assigned[b, cols[col]] = gt_idx[j]
                matched_iou[b, cols[col]] = ious[j, col]
    return assigned, matched_iou


def one_image(gt_list, pred_boxes, priors, nc=2, labels=None, cls=None):
    """Batch of one image with the given gts and predictions; cls/obj logits zero unless given."""
    N = priors.shape[0]
    gt_boxes = torch.tensor(gt_list, dtype=torch.float32)[None]
    G = gt_boxes.shape[1]
    gt_labels = torch.zeros(1, G, dtype=torch.long) if labels is None else torch.tensor([labels])
    cls = torch.zeros(1, N, nc) if cls is None else cls
    return dict(pred_boxes=pred_boxes[None], pred_cls_logits=cls, pred_obj_logits=torch.zeros(1, N, 1),
                priors=priors, gt_boxes=gt_boxes, gt_labels=gt_labels, gt_mask=torch.ones(1, G, dtype=torch.bool))


def test_dynamic_k_hand_computed_and_noncandidates_ignored():
    priors = make_priors(64, (8,))  # 8x8 cells, centres 4, 12, ..., 60
    gt = [16.0, 16.0, 48.0, 48.0]  # centre 32: in-box and centre-square cells are centres 20..44 (4x4)
    cand = (priors[:, 0] > 16) & (priors[:, 0] < 48) & (priors[:, 1] > 16) & (priors[:, 1] < 48)
    assert int(cand.sum()) == 16
    u = torch.tensor([0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.05, 0.04, 0.03, 0.02, 0.01])
    width = torch.ones(64) * 32.0  # non-candidates predict the gt exactly (IoU 1): must not count
    width[cand] = 32.0 * u  # pred [16, 16, 16 + w, 48] lies inside the gt: IoU = w / 32
    pred = torch.stack((torch.full((64,), 16.0), torch.full((64,), 16.0), 16 + width, torch.full((64,), 48.0)), 1)
    res = simota_assign(**one_image([gt], pred, priors))
    k_hand = int(sum([0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]))  # top-10 sum 5.35 -> 5
    assert k_hand == 5
    assert int(res.num_fg) == k_hand
    expected = cand.nonzero().flatten()[:5]  # equal cls logits: cheapest = highest IoU
    assert torch.equal(res.fg_mask[0].nonzero().flatten(), expected)
    assert torch.allclose(res.matched_iou[0, expected], u[:5], atol=1e-5)
    assert (res.assigned_gt[0, expected] == 0).all()


def test_dynamic_k_with_fewer_candidates_than_topk_center_only():
    priors = make_priors(64, (8,))
    gt = [22.0, 22.0, 34.0, 34.0]  # centre 28 = a cell centre; +-1.5 strides -> 3x3 = 9 candidates
    cand = ((priors[:, 0] - 28).abs() < 12) & ((priors[:, 1] - 28).abs() < 12)
    assert int(cand.sum()) == 9
    pred = torch.tensor(gt).repeat(64, 1)
    pred[cand, 2] = 22 + 12 * 0.45  # IoU 0.45 on the 9 candidates, 1.0 elsewhere
    res = simota_assign(**one_image([gt], pred, priors), center_radius=1.5, center_only=True)
    assert int(res.num_fg) == int(9 * 0.45)  # top-min(10, 9) sum = 4.05 -> k = 4
    assert bool((res.fg_mask[0] <= cand).all())


def test_conflict_goes_to_cheapest_gt():
    priors = make_priors(64, (8,))
    gt = [16.0, 16.0, 48.0, 48.0]
    pred = torch.tensor(gt).repeat(64, 1) + torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    cls = torch.zeros(1, 64, 2)
    cls[..., 1] = 3.0  # class 1 is more confident everywhere -> the class-1 gt is cheaper on every cell
    res = simota_assign(**one_image([gt, gt], pred, priors, labels=[0, 1], cls=cls))
    assert int(res.num_fg) > 0
    assert set(res.assigned_gt[0][res.fg_mask[0]].tolist()) == {1}


def test_each_gt_with_candidates_gets_a_positive_and_cells_are_unique():
    priors = make_priors(128, (8, 16, 32))
    gts = [[4.0, 4.0, 30.0, 20.0], [70.0, 10.0, 120.0, 60.0], [20.0, 80.0, 40.0, 124.0], [90.0, 90.0, 94.0, 96.0]]
    g = torch.Generator().manual_seed(1)
    pred = torch.cat((priors[:, :2] - 10, priors[:, :2] + 10), 1) + torch.randn(priors.shape[0], 4, generator=g)
    res = simota_assign(**one_image(gts, pred, priors, labels=[0, 1, 0, 1]))
    owners = res.assigned_gt[0][res.fg_mask[0]]
    assert set(owners.tolist()) == {0, 1, 2, 3}
    assert res.assigned_gt.shape == (1, priors.shape[0])  # one owner per cell by construction
    assert torch.equal(res.num_fg, res.fg_mask.sum())


def test_empty_images_and_empty_batch():
    pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask = random_case(3, [4, 0, 2])
    res = simota_assign(pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask)
    assert not res.fg_mask[1].any() and res.fg_mask[0].any() and res.fg_mask[2].any()
    assert (res.matched_iou[~res.fg_mask] == 0).all()
    empty = simota_assign(pred_boxes, cls, obj, priors, gt_boxes[:, :0], gt_labels[:, :0], gt_mask[:, :0])
    assert (empty.assigned_gt == -1).all() and int(empty.num_fg) == 0
    assert empty.assigned_gt.shape == pred_boxes.shape[:2]


def test_padding_rows_never_assigned_and_do_not_change_the_result():
    pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask = random_case(5, [3, 3])
    base = simota_assign(pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask)
    # pad with copies of the real gts (worst case: garbage that overlaps everything) and wild labels
    pad_boxes = torch.cat((gt_boxes, gt_boxes, torch.tensor([0.0, 0.0, 64.0, 64.0]).expand(2, 1, 4)), 1)
    pad_labels = torch.cat((gt_labels, torch.full((2, 4), -7)), 1)
    pad_mask = torch.cat((gt_mask, torch.zeros(2, 4, dtype=torch.bool)), 1)
    padded = simota_assign(pred_boxes, cls, obj, priors, pad_boxes, pad_labels, pad_mask)
    assert (padded.assigned_gt < 3).all()
    assert torch.equal(padded.assigned_gt, base.assigned_gt)
    assert torch.equal(padded.matched_iou, base.matched_iou)


@pytest.mark.parametrize("center_only", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_loop_reference_on_random_batches(seed, center_only):
    case = random_case(seed, [5, 0, 9, 1, 3])
    radius = 1.5 if center_only else 2.5
    res = simota_assign(*case, center_radius=radius, center_only=center_only)
    ref_assigned, ref_iou = reference_simota(*case, center_radius=radius, center_only=center_only)
    assert torch.equal(res.assigned_gt, ref_assigned)
    assert torch.allclose(res.matched_iou, ref_iou, atol=1e-6)
    assert int(res.num_fg) == int((ref_assigned >= 0).sum()) > 0


def test_matches_reference_with_hundreds_of_objects():
    case = random_case(11, [300, 120], imgsz=320, strides=(8, 16, 32), nc=8)
    res = simota_assign(*case)
    ref_assigned, ref_iou = reference_simota(*case)
    assert torch.equal(res.assigned_gt, ref_assigned)
    assert torch.allclose(res.matched_iou, ref_iou, atol=1e-6)


def test_input_forms_dtypes_and_no_grad():
    pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask = random_case(7, [4, 2])
    cls.requires_grad_(True)
    res = simota_assign(pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask)
    assert isinstance(res, Assignment)
    assert not res.matched_iou.requires_grad
    assert res.assigned_gt.dtype == torch.long and res.num_fg.dim() == 0
    flat = simota_assign(pred_boxes, cls, obj[..., 0], priors, gt_boxes, gt_labels, gt_mask)
    assert torch.equal(flat.assigned_gt, res.assigned_gt)
    half = simota_assign(pred_boxes, cls.detach().bfloat16(), obj.bfloat16(), priors, gt_boxes, gt_labels, gt_mask)
    assert half.matched_iou.dtype == torch.float32 and torch.isfinite(half.matched_iou).all()


def test_bad_shapes_name_the_argument():
    pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask = random_case(0, [2])
    with pytest.raises(ValueError, match="priors"):
        simota_assign(pred_boxes, cls, obj, priors[:-1], gt_boxes, gt_labels, gt_mask)
    with pytest.raises(ValueError, match="gt_mask"):
        simota_assign(pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask.long())
    with pytest.raises(ValueError, match="pred_obj_logits"):
        simota_assign(pred_boxes, cls, obj.expand(-1, -1, 2), priors, gt_boxes, gt_labels, gt_mask)


def test_batched_box_iou_matches_torchvision():
    from torchvision.ops import box_iou
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 5, 4, generator=g) * 50
    b = torch.rand(2, 7, 4, generator=g) * 50
    a[..., 2:] += a[..., :2]
    b[..., 2:] += b[..., :2]
    ours = batched_box_iou(a, b)
    for i in range(2):
        assert torch.allclose(ours[i], box_iou(a[i], b[i]), atol=1e-6)
    assert not math.isnan(float(batched_box_iou(torch.zeros(1, 1, 4), torch.zeros(1, 1, 4))))


def test_label_outside_nc_is_a_clear_error():
    pred_boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask = random_case(0, [2], nc=3)
    with pytest.raises(ValueError, match="gt_labels"):
        simota_assign(pred_boxes, cls, obj, priors, gt_boxes, torch.full_like(gt_labels, 3), gt_mask)
