"""FCOS and RetinaNet (torchvision) as YAML heads (models/heads/tv_dense.py): exact parameter counts against
torchvision's builders (and, for the MobileNetV3 variants torchvision has no builder for, its classes on its mobilenet
FPN backbone), torchvision's state_dicts loading into the rows with the same detections, the same losses and gradients
on the same batch, the class mapping (no background logit), the static ONNX export."""
from __future__ import annotations

import re
from functools import partial

import pytest
import torch
from torchvision.models import mobilenet_v3_large
from torchvision.models.detection import (FCOS, RetinaNet, fcos_resnet50_fpn, retinanet_resnet50_fpn,
                                          retinanet_resnet50_fpn_v2)
from torchvision.models.detection.retinanet import RetinaNetHead as TVRetinaNetHead
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _mobilenet_extractor
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from models.heads.tv_dense import FCOSHead, RetinaNetHead
from models.tv import IMAGENET_MEAN, IMAGENET_STD, torchvision_to_rows
from models.yolo import DetectionModel
from utils.boxes import postprocess
from utils.io.checkpoint import save_checkpoint, transfer_weights
from utils.losses.tv import DENSE_ITEM_SCALE

SIZE = 128  # a multiple of P7's stride: every level's anchors on its own grid


def _mnv3_backbone() -> torch.nn.Module:
    """The backbone of torchvision's fasterrcnn_mobilenet_v3_large_fpn (no weights: plain BatchNorm, all trained)."""
    return _mobilenet_extractor(mobilenet_v3_large(weights=None, norm_layer=torch.nn.BatchNorm2d), True, 6)


REFERENCES = {  # our YAML -> torchvision's model (num_classes logits)
    "fcos-r50-fpn.yaml": lambda k: fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=k),
    "retinanet-r50-fpn.yaml": lambda k: retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=k),
    "fcos-mnv3-fpn.yaml": lambda k: FCOS(_mnv3_backbone(), k,
                                         anchor_generator=AnchorGenerator(((32,), (32,), (64,)), ((1.0,),) * 3)),
    "retinanet-mnv3-fpn.yaml": lambda k: RetinaNet(_mnv3_backbone(), k, anchor_generator=AnchorGenerator(
        ((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3)),
    "retinanet-r50-fpn-v2.yaml": lambda k: retinanet_resnet50_fpn_v2(weights=None, weights_backbone=None,
                                                                     num_classes=k),
    "retinanet-mnv3-fpn-v2.yaml": lambda k: RetinaNet(_mnv3_backbone(), k, anchor_generator=AnchorGenerator(
        ((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3), head=_v2_head(k)),
}
COUNTS = {"fcos-r50-fpn.yaml": 32_322_720, "retinanet-r50-fpn.yaml": 34_068_119,  # torchvision's builders, nc 91
          "fcos-mnv3-fpn.yaml": 9_385_360, "retinanet-mnv3-fpn.yaml": 12_444_609,
          "retinanet-r50-fpn-v2.yaml": 38_198_935, "retinanet-mnv3-fpn-v2.yaml": 12_446_657}


def _v2_head(nc: int) -> torch.nn.Module:
    """torchvision's retinanet_resnet50_fpn_v2 head (as that builder makes it) for 15 anchors per location."""
    head = TVRetinaNetHead(256, 15, nc, norm_layer=partial(torch.nn.GroupNorm, 32))
    head.regression_head._loss_type = "giou"
    return head


def _reference(cfg: str, nc: int) -> torch.nn.Module:
    """torchvision's model with BatchNorm statistics measured on random images and class biases at 0 (random weights
    then give scores near 0.5: detections to compare), in eval, its resize an identity at SIZE."""
    torch.manual_seed(0)
    tv = REFERENCES[cfg](nc).train()
    with torch.no_grad():
        for _ in range(2):
            tv.backbone(torch.rand(2, 3, SIZE, SIZE))
        tv.head.classification_head.cls_logits.bias.zero_()
    tv.transform = GeneralizedRCNNTransform(SIZE, SIZE, list(IMAGENET_MEAN), list(IMAGENET_STD))
    return tv.eval()


def _ours(cfg: str, tv: torch.nn.Module, nc: int) -> DetectionModel:
    model = DetectionModel(cfg, nc=nc, verbose=False)
    model.load_state_dict(torchvision_to_rows(tv.state_dict(), model.model))
    return model


def _targets() -> torch.Tensor:
    """[image, class, cx, cy, w, h] normalised: small and large boxes, every class."""
    return torch.tensor([[0, 0, 0.5, 0.5, 0.4, 0.3], [0, 1, 0.25, 0.3, 0.2, 0.25],
                         [1, 2, 0.6, 0.4, 0.5, 0.6], [1, 1, 0.3, 0.7, 0.1, 0.15]])


def _torchvision_targets(targets: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """The same boxes as torchvision takes them: xyxy px, labels = our classes (no background logit)."""
    out = []
    for i in range(int(targets[:, 0].max()) + 1):
        t = targets[targets[:, 0] == i]
        xy, wh = t[:, 2:4] * SIZE, t[:, 4:6] * SIZE
        out.append({"boxes": torch.cat((xy - wh / 2, xy + wh / 2), 1), "labels": t[:, 1].long()})
    return out


@pytest.mark.parametrize("cfg", list(REFERENCES))
def test_torchvision_coco_state_dict_loads_whole_with_the_same_detections(cfg):
    """At torchvision's COCO class count (91 logits, no background logit) the parameter counts are torchvision's, its
    state_dict fills every tensor of the YAML model (loaded the way train.py --weights loads it), and both give the
    same detections on the same batch (torchvision's resize an identity)."""
    tv = _reference(cfg, nc=91)
    n = sum(p.numel() for p in tv.parameters())
    model = DetectionModel(cfg, nc=91, verbose=False)
    assert n == COUNTS[cfg] and sum(p.numel() for p in model.parameters()) == n and model.deploy_params() == n
    sd, report = transfer_weights(torchvision_to_rows(tv.state_dict(), model.model), {}, model.state_dict(),
                                  model.yaml)
    assert report.transferred == len(model.state_dict()) and not report.fresh
    model.load_state_dict(sd)
    model.eval()
    for m in (tv, model.head):
        m.detections_per_img = 10_000  # no cut among tied scores
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        ref = tv(list(x))
        _, ours = model(x)
    assert all(len(r["boxes"]) > 10 for r in ref)
    for r, o in zip(ref, ours):
        assert torch.equal(r["labels"], o["labels"])  # our class k is torchvision's label k
        torch.testing.assert_close(o["boxes"], r["boxes"], rtol=0, atol=1e-4)
        torch.testing.assert_close(o["scores"], r["scores"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("cfg", ["fcos-mnv3-fpn.yaml", "retinanet-mnv3-fpn.yaml",  # the R50 rows: the same code
                                 "retinanet-mnv3-fpn-v2.yaml"])
def test_training_losses_and_gradients_equal_torchvision_on_the_same_batch(cfg):
    tv = _reference(cfg, nc=3).train()
    model = _ours(cfg, tv, nc=3).train()
    x, targets = torch.rand(2, 3, SIZE, SIZE), _targets()
    ref = tv(list(x), _torchvision_targets(targets))
    out = model(x, targets)
    assert set(out.losses) == set(ref) and all(torch.equal(out.losses[k], ref[k]) for k in ref)
    crit = model.criterion({}, SIZE)
    total, items = crit(out, targets)
    assert crit.loss_names == (("cls", "box", "ctr") if "fcos" in cfg else ("cls", "box"))
    torch.testing.assert_close(items * DENSE_ITEM_SCALE, torch.stack([ref[k] for k in crit.terms.values()]))
    assert torch.isclose(total, items.sum() * 2)
    total.backward()
    sum(ref.values()).backward()
    ref_grads = torchvision_to_rows({k: p.grad for k, p in tv.named_parameters() if p.grad is not None}, model.model)
    grads = {k: p.grad * DENSE_ITEM_SCALE / 2 for k, p in model.named_parameters() if p.grad is not None}
    assert set(grads) == set(ref_grads) and len(grads) > 100
    for k, g in grads.items():
        torch.testing.assert_close(g, ref_grads[k], rtol=1e-4, atol=1e-7, msg=k)


def test_coco_state_dict_transfers_all_but_the_class_logits_to_another_class_count():
    """... including RetinaNet's head keys as torchvision's version-1 files name them (its COCO_V1 weights)."""
    tv = REFERENCES["retinanet-mnv3-fpn.yaml"](91)
    v1 = {re.sub(r"(_head\.conv\.)(\d)\.0\.", lambda m: f"{m[1]}{2 * int(m[2])}.", k): v
          for k, v in tv.state_dict().items()}
    assert "head.classification_head.conv.6.weight" in v1 and "head.regression_head.conv.2.bias" in v1
    model = DetectionModel("retinanet-mnv3-fpn.yaml", nc=80, verbose=False)
    _, report = transfer_weights(torchvision_to_rows(v1, model.model), {}, model.state_dict(), model.yaml)
    assert report.transferred == len(model.state_dict()) - 2  # cls_logits weight and bias
    assert model.head.head.classification_head.cls_logits.out_channels == 15 * 80  # 15 anchors x nc


def test_decode_keeps_class_indices_and_precise_bn_forward_runs():
    head = DetectionModel("retinanet-mnv3-fpn.yaml", nc=4, verbose=False).head
    raw = [{"boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0]]), "scores": torch.tensor([0.9]),
            "labels": torch.tensor([0])},  # torchvision's label 0 is our class 0 (no background)
           {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}]
    y = head.decode(raw)
    assert y.shape == (2, head.detections_per_img, 9) and y[1].abs().sum() == 0
    torch.testing.assert_close(y[0, 0], torch.tensor([20.0, 40.0, 20.0, 40.0, 1.0, 0.9, 0.0, 0.0, 0.0]))
    dets = postprocess(y, suppressed=True, conf_thres=0.001)
    torch.testing.assert_close(dets[0], torch.tensor([[10.0, 20.0, 30.0, 60.0, 0.9, 0.0]]))
    model = DetectionModel("fcos-mnv3-fpn.yaml", nc=2, verbose=False).train()
    assert set(model(torch.rand(2, 3, 64, 64))) == {"cls_logits", "bbox_regression", "bbox_ctrness"}


@pytest.mark.parametrize("cfg", ["fcos-mnv3-fpn.yaml", "retinanet-mnv3-fpn.yaml"])
def test_onnx_export_gives_the_same_detections(cfg, tmp_path):
    """A static graph (dynamic_export = False, as Faster R-CNN's: tests/test_rcnn.py checks the refusal of --dynamic)
    with torchvision's postprocessing in it, checked by export.py on detections: the class branch re-drawn so that
    scores spread (RetinaNet's initialisation ties them all near 0.5, and ties may keep other boxes in another
    runtime)."""
    import export
    tv = _reference(cfg, nc=3)
    torch.manual_seed(1)
    with torch.no_grad():
        for m in tv.head.classification_head.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight)
    model = _ours(cfg, tv, nc=3).eval()
    with torch.no_grad():
        y = model(torch.rand(1, 3, 64, 64))[0]
    assert (y[..., 4] > 0).sum() > 10  # detections to compare
    w = save_checkpoint({"model": model.state_dict(), "ema": None, "yaml": model.yaml,
                         "names": {0: "a", 1: "b", 2: "c"}}, tmp_path / "m.pt")
    f, diff = export.run(w, include=["onnx"], imgsz=[64, 64])["onnx"]
    assert f.is_file() and diff < 1e-3


def test_bad_rows_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown option 'score_tresh' \\(did you mean 'score_thresh'"):
        FCOSHead(3, None, {"score_tresh": 0.1}, [64] * 5)
    with pytest.raises(ValueError, match="one anchor size per level"):
        FCOSHead(3, [[8, 16]] * 5, None, [64] * 5)
    with pytest.raises(ValueError, match="same number of anchors per location"):
        RetinaNetHead(3, [[32], [64, 80]], None, None, [64, 64])
    with pytest.raises(ValueError, match="2 anchor size lists .* for 3 input levels"):
        RetinaNetHead(3, [[32], [64]], None, None, [64, 64, 64])
    with pytest.raises(ValueError, match="unknown option 'fg_iou'"):
        RetinaNetHead(3, None, None, {"fg_iou": 0.5}, [64] * 5)
    with pytest.raises(ValueError, match="version must be 1 or 2"):
        RetinaNetHead(3, None, None, {"version": 3}, [64] * 5)


def test_v2_head_is_torchvisions_normalised_giou_head():
    """RetinaNetHead's `version: 2` builds what torchvision's retinanet_resnet50_fpn_v2 has above its FPN (GroupNorm
    in both towers, GIoU box loss); version 1 keeps its plain convolutions and the L1 loss."""
    v1, v2 = (RetinaNetHead(3, None, None, o, [64] * 5) for o in (None, {"version": 2}))
    norms = [sum(isinstance(m, torch.nn.GroupNorm) for m in h.head.modules()) for h in (v1, v2)]
    assert norms == [0, 8] and v2.head.regression_head._loss_type == "giou"
    assert v1.head.regression_head._loss_type == "l1"
