"""RTMDet (rtmdet-tiny.yaml, models/cspnext.py, models/heads/rtmdet.py, utils/losses/rtmdet.py): the size against
MMDetection's own build, the head's convolutions shared across levels with a BatchNorm per level, its box coder,
its criterion against a per-positive reference, and the options reaching the criterion."""
from __future__ import annotations

from copy import deepcopy

import pytest
import torch
import torch.nn.functional as F
from test_heads import targets_for  # tests/ is on sys.path under pytest
from torchvision.ops import generalized_box_iou

from models.cspnext import SepBNConv
from models.heads import all_hyp_keys
from models.heads.rtmdet import RTMDetHead
from models.yolo import DetectionModel, load_cfg
from utils.assigners import Assignment
from utils.boxes import decode_distance, encode_distance

# MMDetection 3.3.0's RTMDet-tiny built from configs/rtmdet/rtmdet_tiny_8xb32-300e_coco.py at nc=80
# (bench/crosscheck_rtmdet.py): CSPNeXt 2,348,700 + CSPNeXtPAFPN 2,188,944 + RTMDetSepBNHead 358,524. MMDetection's
# README rounds it to 4.8M, and gives 8.1 GFLOPs (multiply-accumulates) at 640.
RTMDET_TINY_PARAMS = {"backbone": 2_348_700, "neck": 2_188_944, "head": 358_524}
RTMDET_TINY_GMACS = 8.1


def tiny_rtmdet(nc: int = 3, **head) -> dict:
    cfg, _ = load_cfg("rtmdet-tiny.yaml")
    cfg = {**cfg, "nc": nc, "width_multiple": 0.125}
    args = {"feat": 64, "stacked": 2, "exp_on_reg": False, "share_conv": True, "pred_kernel": 1,
            "assigner": {"name": "dsl", "soft_center_radius": 3.0}} | head
    cfg["head"][-1][3] = ["nc", *args.values()]
    return cfg


def test_rtmdet_tiny_size_equals_mmdetection():
    model = DetectionModel("rtmdet-tiny.yaml")
    parts = {"backbone": range(12), "neck": range(12, 29), "head": range(29, 30)}
    counts = {k: sum(p.numel() for i in rows for p in model.model[i].parameters()) for k, rows in parts.items()}
    assert counts == RTMDET_TINY_PARAMS
    assert model.deploy_params() == sum(RTMDET_TINY_PARAMS.values()) == 4_896_168
    gmacs = model.info()["gflops"] / 2  # ours counts 2 x multiply-accumulates
    assert gmacs == pytest.approx(RTMDET_TINY_GMACS, rel=0.02)


def test_head_shares_conv_weights_and_keeps_a_batchnorm_per_level():
    torch.manual_seed(0)
    model = DetectionModel(tiny_rtmdet())
    head = model.head
    for tower in (head.cls_convs, head.reg_convs):
        for conv in tower:
            assert isinstance(conv, SepBNConv) and len(conv.conv) == 1 and len(conv.bn) == head.nl
    # a loss on the last level alone reaches the shared conv weights, and no level's BatchNorm but the last one's
    model.train()
    out = model(torch.rand(2, 3, 64, 64))
    out[-1].square().mean().backward()
    first = head.cls_convs[0]
    assert first.conv[0].weight.grad.abs().sum() > 0
    assert first.bn[-1].weight.grad.abs().sum() > 0
    assert all(bn.weight.grad is None or bn.weight.grad.abs().sum() == 0 for bn in first.bn[:-1])
    # changing the shared weights moves every level; changing level 0's BatchNorm moves level 0 only
    model.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)[1]
        first.bn[0].bias.add_(1.0)
        after_bn = model(x)[1]
        first.conv[0].weight.mul_(2.0)
        after_conv = model(x)[1]
    assert not torch.equal(after_bn[0], before[0]) and all(torch.equal(a, b) for a, b in zip(after_bn[1:], before[1:]))
    assert all(not torch.equal(a, b) for a, b in zip(after_conv, after_bn))


def test_unshared_head_has_a_conv_per_level_and_fuse_keeps_outputs():
    torch.manual_seed(0)
    shared, unshared = DetectionModel(tiny_rtmdet()), DetectionModel(tiny_rtmdet(share_conv=False))
    head = shared.head
    conv_weights = sum(c.conv[0].weight.numel() for c in [*head.cls_convs, *head.reg_convs])
    assert conv_weights == 2 * (32 * 8 + 8 * 8) * 9  # two towers of two 3x3 convs: 32 in (the neck), 8 wide
    assert unshared.deploy_params() - shared.deploy_params() == (unshared.head.nl - 1) * conv_weights
    for model in (shared, unshared):
        for m in model.modules():  # statistics that differ per level, so that a wrong fold shows
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
        model.eval()
        x = torch.rand(1, 3, 96, 64)
        with torch.no_grad():
            y = model(x)[0]
            fused = deepcopy(model).fuse()
            assert all(len(c.conv) == model.head.nl and c.bn is None for c in fused.head.cls_convs)
            torch.testing.assert_close(fused(x)[0], y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("exp", [False, True])
def test_distance_coder_round_trip(exp):
    points = torch.tensor([[16.0, 8.0], [40.0, 40.0]])
    boxes = torch.tensor([[2.0, 1.0, 30.0, 21.0], [10.0, 33.0, 64.0, 41.0]])
    reg = encode_distance(boxes, points, 8.0, exp)
    torch.testing.assert_close(decode_distance(reg, points, 8.0, exp), boxes)
    assert torch.equal(decode_distance(torch.ones(1, 4), points[:1], 8.0), torch.tensor([[8.0, 0.0, 24.0, 16.0]]))


def test_decode_layout_and_prior_points_at_cell_corners():
    model = DetectionModel(tiny_rtmdet()).eval()
    raw = [torch.zeros(1, 7, 64 // int(s), 64 // int(s)) for s in model.head.stride]
    y = model.head.decode(raw)  # zero distances: a zero-size box on each cell's top-left corner
    assert y.shape == (1, 64 + 16 + 4, 8) and torch.equal(y[0, :2, :2], torch.tensor([[0.0, 0.0], [8.0, 0.0]]))
    assert torch.equal(y[..., 2:4], torch.zeros_like(y[..., 2:4]))
    assert torch.equal(y[..., 4], torch.ones_like(y[..., 4]))


def reference_terms(cls, pred_box, gt_boxes, gt_labels, assigned) -> tuple[float, float]:
    """Per prior and per positive (loops): QFL(beta 2) and 1 - GIoU weighted by the IoU, / the sum of IoUs."""
    qfl = giou = norm = 0.0
    for b in range(cls.shape[0]):
        for n in range(cls.shape[1]):
            p = cls[b, n].sigmoid()
            negative = F.binary_cross_entropy_with_logits(cls[b, n], torch.zeros_like(p), reduction="none") * p ** 2
            j = int(assigned.assigned_gt[b, n])
            if j < 0:
                qfl += float(negative.sum())
                continue
            c, s = int(gt_labels[b, j]), float(assigned.matched_iou[b, n])
            own = F.binary_cross_entropy_with_logits(cls[b, n, c], torch.tensor(s)) * abs(s - float(p[c])) ** 2
            qfl += float(negative.sum() - negative[c] + own)
            giou += s * float(1 - generalized_box_iou(pred_box[b, n][None], gt_boxes[b, j][None])[0, 0])
            norm += s
    norm = max(norm, 1.0)
    return qfl / norm, 2.0 * giou / norm


def test_criterion_terms_match_a_per_positive_reference():
    g = torch.Generator().manual_seed(0)
    model = DetectionModel(tiny_rtmdet())
    crit = model.criterion({})
    cls = torch.randn(2, 12, 3, generator=g)
    xy = torch.rand(2, 12, 2, generator=g) * 40
    pred_box = torch.cat((xy, xy + 5 + torch.rand(2, 12, 2, generator=g) * 20), -1)
    gt_boxes = torch.tensor([[[0.0, 0, 30, 30], [20, 20, 60, 50]], [[5, 5, 25, 45], [0, 0, 0, 0]]])
    gt_labels = torch.tensor([[0, 2], [1, 0]])
    assigned_gt = torch.full((2, 12), -1)
    assigned_gt[0, [1, 4, 7]] = torch.tensor([0, 1, 1])
    assigned_gt[1, [0, 9]] = 0
    matched_iou = torch.rand(2, 12, generator=g) * (assigned_gt >= 0)
    assigned = Assignment(assigned_gt, matched_iou, (assigned_gt >= 0).sum())
    items = crit.terms(cls, pred_box, gt_boxes, gt_labels, assigned)
    torch.testing.assert_close(items, torch.tensor(reference_terms(cls, pred_box, gt_boxes, gt_labels, assigned)))


def test_training_step_finite_with_gradients_and_empty_images():
    torch.manual_seed(0)
    model = DetectionModel(tiny_rtmdet()).train()
    crit = model.criterion({})
    assert crit.loss_names == ("qfl", "giou")
    loss, items = crit(model(torch.rand(2, 3, 64, 64)), targets_for(2))
    assert torch.isfinite(loss) and (items > 0).all()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert sum(float(p.grad.abs().sum()) for p in model.head.rtm_reg.parameters()) > 0
    loss, items = crit(model(torch.rand(2, 3, 64, 64)), torch.zeros((0, 6)))
    assert torch.isfinite(loss) and items[0] > 0 and items[1] == 0


def test_options_reach_the_criterion():
    model = DetectionModel(tiny_rtmdet())
    crit = model.criterion({"rtmdet_giou": 5.0, "dsl_topk": 7})
    assert crit.giou_weight == 5.0 and crit.qfl_weight == 1.0
    assert crit.assigner.keywords == {"topk": 7, "soft_center_radius": 3.0}  # hyp, then the row
    assert set(RTMDetHead.hyp_ranges) <= set(RTMDetHead.hyp_keys) <= set(all_hyp_keys())
    default = DetectionModel(tiny_rtmdet(assigner=None)).criterion({})
    assert default.assigner.keywords == {"soft_center_radius": 3.0}  # left out: RTMDet's DSLA
    with pytest.raises(ValueError, match="share_conv"):
        DetectionModel(tiny_rtmdet(share_conv="yes"))
