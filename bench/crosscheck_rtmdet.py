"""Cross-check rtmdet-tiny.yaml against MMDetection's own RTMDet-tiny, built from its config and run beside ours.

    /work/mmvenv/bin/python bench/crosscheck_rtmdet.py --mmdet-site /work/mmvenv/lib/python3.11/site-packages

``--mmdet-site``: a site-packages folder holding ``mmdet`` 3.3.0, ``mmengine`` and ``mmcv`` (``mmcv-lite``, the
build without compiled ops, is enough); it is put on ``sys.path`` at run time and nothing of it is copied here. Run
with a Python whose torch is ours (a venv whose ``.pth`` points at this repo's site-packages). mmcv-lite lacks
``mmcv._ext``: it is stubbed with functions that raise, and none of the modules compared calls one (NMS, RoIAlign
are not on this path).

Checks, one printed row each: parameter counts of backbone, neck and head (ours: rows 0-11, 12-28, 29); then
MMDetection's weights (randomised, BatchNorm statistics included) copied into ours module by module, and on the same
random images: the neck's three maps, the head's class logits and box distances (px), the decoded boxes, and the
two loss terms on random targets (MMDetection's ``loss_by_feat`` against ``RTMDetLoss``), with their max |diff|.
Both models run in eval mode (MMDetection's config builds SyncBN, which trains only with a process group); our
BatchNorm eps is set to MMDetection's 1e-5 for the comparison. Last, FLOPs at 640 by MMDetection's own counter
(``mmengine.analysis``: multiply-accumulates) beside ours.
"""
from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch
from torch import nn

from models.yolo import DetectionModel
from utils.boxes import xywh2xyxy
from utils.torch_utils import thop_gflops

# MMDetection submodule -> our row of rtmdet-tiny.yaml (their state_dict order within each pair is ours)
ROWS = {"backbone.stem.0": 0, "backbone.stem.1": 1, "backbone.stem.2": 2, "backbone.stage1.0": 3,
        "backbone.stage1.1": 4, "backbone.stage2.0": 5, "backbone.stage2.1": 6, "backbone.stage3.0": 7,
        "backbone.stage3.1": 8, "backbone.stage4.0": 9, "backbone.stage4.1": 10, "backbone.stage4.2": 11,
        "neck.reduce_layers.0": 12, "neck.top_down_blocks.0": 15, "neck.reduce_layers.1": 16,
        "neck.top_down_blocks.1": 19, "neck.downsamples.0": 20, "neck.bottom_up_blocks.0": 22,
        "neck.downsamples.1": 23, "neck.bottom_up_blocks.1": 25, "neck.out_convs.0": 26, "neck.out_convs.1": 27,
        "neck.out_convs.2": 28}


def load_mmdet(site: Path):
    """MMDetection's RTMDet-tiny built from its config, with ``mmcv._ext`` stubbed."""
    sys.path.append(str(site))
    ext = types.ModuleType("mmcv._ext")

    def missing(name):
        if name.startswith("__"):
            raise AttributeError(name)

        def op(*args, **kwargs):
            raise RuntimeError(f"compiled mmcv op {name} is not available (mmcv-lite)")
        return op
    ext.__getattr__ = missing
    sys.modules["mmcv._ext"] = ext
    import mmdet
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    register_all_modules()
    cfg = Config.fromfile(str(Path(mmdet.__file__).parent / ".mim/configs/rtmdet/rtmdet_tiny_8xb32-300e_coco.py"))
    cfg.model.backbone.init_cfg = None  # no pretrained download
    return MODELS.build(cfg.model), mmdet.__version__


def count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@torch.no_grad()
def randomise(ref: nn.Module, g: torch.Generator) -> None:
    """Every parameter and BatchNorm statistic random (so that a wrong copy shows); box distances biased to 1-4
    strides so that the predicted boxes overlap the targets."""
    for name, t in ref.state_dict().items():
        if not t.is_floating_point():
            continue
        if name.endswith("running_var"):
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        elif name.endswith(("running_mean", "bn.bias", "bn.weight")):
            t.copy_(torch.randn(t.shape, generator=g) * 0.1 + (1.0 if name.endswith("weight") else 0.0))
        else:
            t.copy_(torch.randn(t.shape, generator=g) * 0.05)
    for conv in ref.bbox_head.rtm_reg:
        conv.bias.copy_(torch.rand(4, generator=g) * 3 + 1)


@torch.no_grad()
def copy_weights(ref: nn.Module, ours: DetectionModel) -> None:
    """Module by module (``ROWS``; the head by name: shared conv from level 0, BatchNorm per level)."""
    ref_modules = dict(ref.named_modules())
    for name, row in ROWS.items():
        src, dst = list(ref_modules[name].state_dict().values()), list(ours.model[row].state_dict().values())
        if len(src) != len(dst) or any(a.shape != b.shape for a, b in zip(src, dst)):
            raise ValueError(f"{name} -> row {row}: tensors differ in count or shape")
        for a, b in zip(src, dst):
            b.copy_(a)
    rh, oh = ref.bbox_head, ours.head
    for tower in ("cls_convs", "reg_convs"):
        for i, conv in enumerate(getattr(oh, tower)):
            conv.conv[0].load_state_dict(getattr(rh, tower)[0][i].conv.state_dict())
            for level, bn in enumerate(conv.bn):
                bn.load_state_dict(getattr(rh, tower)[level][i].bn.state_dict())
    for pred in ("rtm_cls", "rtm_reg"):
        getattr(oh, pred).load_state_dict(getattr(rh, pred).state_dict())


def random_targets(batch: int, size: int, nc: int, g: torch.Generator) -> torch.Tensor:
    rows = []
    for b in range(batch):
        for _ in range(int(torch.randint(1, 9, (1,), generator=g))):
            wh = torch.rand(2, generator=g) * 0.4 + 0.03
            xy = torch.rand(2, generator=g) * (1 - wh) + wh / 2
            rows.append(torch.cat((torch.tensor([b, float(torch.randint(0, nc, (1,), generator=g))]), xy, wh)))
    return torch.stack(rows)


def mmdet_losses(ref, cls_scores, bbox_preds, targets: torch.Tensor, batch: int, size: int) -> tuple[float, float]:
    from mmengine.structures import InstanceData
    gts, metas = [], []
    for b in range(batch):
        t = targets[targets[:, 0] == b]
        gts.append(InstanceData(bboxes=xywh2xyxy(t[:, 2:6] * size), labels=t[:, 1].long()))
        metas.append({"img_shape": (size, size), "pad_shape": (size, size), "batch_input_shape": (size, size)})
    losses = ref.bbox_head.loss_by_feat(list(cls_scores), list(bbox_preds), gts, metas)
    return float(sum(losses["loss_cls"])), float(sum(losses["loss_bbox"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mmdet-site", type=Path, required=True, help="site-packages with mmdet, mmengine, mmcv")
    parser.add_argument("--batches", type=int, default=4, help="random batches for outputs and losses")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--flops", action="store_true", help="also count MMDetection's FLOPs at 640 (slow)")
    opt = parser.parse_args(argv)
    ref, version = load_mmdet(opt.mmdet_site)
    ours = DetectionModel("rtmdet-tiny.yaml")
    print(f"MMDetection {version}, RTMDet-tiny nc=80 | ours models/rtmdet-tiny.yaml")
    print(f"{'check':<34}{'MMDetection':>14}{'ours':>14}{'max |diff|':>14}")
    parts = {"backbone": range(12), "neck": range(12, 29), "bbox_head": range(29, 30)}
    for part, rows in parts.items():
        print(f"{'params ' + part:<34}{count(getattr(ref, part)):>14,}{sum(count(ours.model[i]) for i in rows):>14,}")
    print(f"{'params total':<34}{count(ref):>14,}{count(ours):>14,}")

    g = torch.Generator().manual_seed(0)
    randomise(ref, g)
    copy_weights(ref, ours)
    for m in ours.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-5
    ref.eval(), ours.eval()
    worst: dict[str, float] = {}
    loss_rows = []
    crit = ours.criterion({})
    nc, size = ours.head.nc, opt.imgsz
    for _ in range(opt.batches):
        imgs = torch.rand(2, 3, size, size, generator=g)
        targets = random_targets(2, size, nc, g)
        with torch.no_grad():
            feats = ref.neck(ref.backbone(imgs))
            cls_scores, bbox_preds = ref.bbox_head(feats)
            our_feats = ours._features(imgs)
            raw = ours.head(our_feats)
            decoded = ours.head.decode(raw)
        diffs = {"neck maps": max(float((a - b).abs().max()) for a, b in zip(feats, our_feats)),
                 "head class logits": max(float((c - r[:, :nc]).abs().max()) for c, r in zip(cls_scores, raw)),
                 "head box distances (px)": max(float((b - r[:, nc:] * s).abs().max())
                                                for b, r, s in zip(bbox_preds, raw, ours.head.stride))}
        priors = ref.bbox_head.prior_generator.grid_priors([c.shape[2:] for c in cls_scores], device="cpu")
        from mmdet.structures.bbox import distance2bbox
        ref_boxes = torch.cat([distance2bbox(p, b.permute(0, 2, 3, 1).reshape(2, -1, 4))
                               for p, b in zip(priors, bbox_preds)], 1)
        diffs["decoded boxes xyxy (px)"] = float((ref_boxes - xywh2xyxy(decoded[..., :4])).abs().max())
        for k, v in diffs.items():
            worst[k] = max(worst.get(k, 0.0), v)
        ref_qfl, ref_giou = mmdet_losses(ref, cls_scores, bbox_preds, targets, 2, size)
        _, items = crit(raw, targets)
        from utils.losses.gfl import GFL_NOMINAL_BATCH
        qfl, giou = (float(v) * GFL_NOMINAL_BATCH for v in items)
        loss_rows.append((ref_qfl, qfl, ref_giou, giou))
    for k, v in worst.items():
        print(f"{k:<34}{'':>14}{'':>14}{v:>14.3g}")
    for i, (rq, q, rg, gi) in enumerate(loss_rows):
        print(f"{f'batch {i} loss qfl':<34}{rq:>14.6f}{q:>14.6f}{abs(rq - q):>14.3g}")
        print(f"{f'batch {i} loss giou (x2.0)':<34}{rg:>14.6f}{gi:>14.6f}{abs(rg - gi):>14.3g}")
    ours_gflops = thop_gflops(ours, torch.zeros(1, 3, 640, 640))
    ref_gmacs = ""
    if opt.flops:
        from mmengine.analysis import get_model_complexity_info
        ref.eval()
        info = get_model_complexity_info(ref, inputs=(torch.zeros(1, 3, 640, 640),), show_table=False,
                                         show_arch=False)
        ref_gmacs = f"{info['flops'] / 1e9:.2f}"
    print(f"{'GMACs at 640 (FLOPs/2 for ours)':<34}{ref_gmacs:>14}{ours_gflops / 2:>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
