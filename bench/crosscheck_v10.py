"""Cross-check V10Head and V10Loss (YOLOv10's end-to-end head) against Ultralytics' own code, from a separate install.

    python bench/crosscheck_v10.py --ultralytics /work/ultravenv/bin/python

``--ultralytics`` as in bench/crosscheck_ultralytics.py (an interpreter that imports ``ultralytics``, or its
site-packages folder). Ultralytics is AGPL: it is only imported and run, never a dependency of this repo.

The reference heads: ``v10Detect`` (YOLOv10's, the depthwise-separable class branch: our variant ``yolo11``) and
``Detect(end2end=True)`` with ``legacy`` set (YOLOv8's class branch: our ``yolov8``). Their state_dict (biases and
BatchNorm statistics moved off their init values) is loaded into ``V10Head`` as it is. On the same features and
targets, over several seeds:
(a) the loss: ``E2EDetectLoss`` (YOLOv10's loss: v8 loss with TAL topk 10 on the one-to-many branch plus topk 1 on the
    one-to-one branch; its items the per-term sums) against ``V10Loss``: the total, the summed items and each branch's
    three terms, max |diff|; the gradients of every head weight and of the input features (the one-to-one branch sees
    detached features in both); with Ultralytics' TAL widening of gt sides under 16 px (our ``tal_min_size`` 16) and
    without it (their ``stride_val`` 0, ours the default);
(b) eval: Ultralytics' end-to-end output (one-to-one branch, top-300 predictions then top-300 (prediction, class)
    pairs; rows [x1, y1, x2, y2, score, class]) against ``V10Head.decode``: boxes, scores and classes row by row.
    Images whose reference scores tie (equal values at the first cut or among the selected pairs: ``topk`` leaves
    their order open; ours takes them in index order) are counted, with those whose rows match anyway as a set
    ("same"), and left out of the row comparison;
(c) parameters: the head at nc 80, ch (64, 128, 256), in training and deployed (their ``fuse()``, which drops the
    one-to-many branch, against our deploy count); the whole yolov8n-v10head.yaml against Ultralytics' yolov8n.yaml
    built with ``end2end: True``.
"""
from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torchvision.ops import box_convert  # noqa: E402

from bench.crosscheck_ultralytics import (  # noqa: E402
    STRIDES,
    import_ultralytics,
    load_into,
    random_targets,
)
from models.heads.v10 import V10Head  # noqa: E402
from models.yolo import DetectionModel  # noqa: E402
from utils.losses.v8 import V8_GAINS  # noqa: E402

TERMS = ("box_loss", "cls_loss", "dfl_loss")


def reference(location: str) -> types.SimpleNamespace | None:
    ref = import_ultralytics(location, __file__)
    if ref is None:
        return None
    from ultralytics.nn.modules.head import v10Detect
    from ultralytics.nn.tasks import DetectionModel as RefModel
    from ultralytics.utils.loss import E2EDetectLoss
    ref.v10Detect, ref.E2EDetectLoss, ref.RefModel = v10Detect, E2EDetectLoss, RefModel
    return ref


def paired_heads(ref, variant: str, nc: int, ch: tuple[int, ...]) -> tuple[nn.Module, V10Head]:
    """Ultralytics' end-to-end head for ``variant`` and our V10Head holding its weights."""
    torch.manual_seed(0)
    if variant == "yolo11":
        theirs = ref.v10Detect(nc=nc, ch=ch)
    else:
        ref.Detect.legacy = True
        theirs = ref.Detect(nc=nc, end2end=True, ch=ch)
        ref.Detect.legacy = False
    theirs.end2end = True  # infer the one-to-one branch (a built model sets this from its YAML)
    return load_into(theirs, V10Head(nc, 16, variant, ch=list(ch)))


class Wrapper(nn.Module):  # what v8DetectionLoss reads of a model: its args, its last row, a parameter
    def __init__(self, detect: nn.Module):
        super().__init__()
        self.model = nn.ModuleList([detect])
        self.args = types.SimpleNamespace(box=V8_GAINS["v8_box"], cls=V8_GAINS["v8_cls"], dfl=V8_GAINS["v8_dfl"])


def ref_ties(theirs: nn.Module, feats: list[Tensor]) -> Tensor:
    """(B,) bool: images whose reference selection depends on the order among equal scores."""
    with torch.no_grad():
        dense = theirs._inference(theirs.forward_head(feats, **theirs.one2one)).transpose(1, 2)  # (B, N, 4 + nc)
    scores = dense[..., 4:]
    k = min(theirs.max_det, scores.shape[1])
    best = scores.amax(-1).sort(dim=1, descending=True).values  # (B, N)
    cut = best[:, k - 1] == best[:, k] if best.shape[1] > k else torch.zeros(len(best), dtype=torch.bool)
    top = scores.amax(-1).topk(k, dim=1).indices
    pairs = scores.gather(1, top[..., None].expand(-1, -1, scores.shape[-1])).flatten(1).sort(1, descending=True)
    equal = (pairs.values[:, :k + 1].diff(dim=1) == 0).any(1)
    return cut | equal


def check_loss_and_eval(ref, variant: str, seeds: int, tal_min_size: float) -> dict:
    nc, ch, imgsz, batch = 7, (32, 64, 128), 256, 4  # 1344 predictions per image: the first top-300 cut is real
    theirs, ours = paired_heads(ref, variant, nc, ch)
    ref_loss = ref.E2EDetectLoss(Wrapper(theirs))
    our_loss = ours.criterion({"tal_min_size": tal_min_size})
    if not tal_min_size:
        ref_loss.one2many.assigner.stride_val = ref_loss.one2one.assigner.stride_val = 0.0
    out = {"total": 0.0, "total_scale": 0.0, "sum": 0.0, "o2m": 0.0, "o2o": 0.0, "term_scale": 0.0, "grad": 0.0,
           "grad_scale": 0.0, "feat_grad": 0.0, "images": 0, "tied": 0, "tied_same": 0, "rows": 0, "box": 0.0, "score": 0.0,
           "cls_differ": 0}
    for seed in range(seeds):
        g = torch.Generator().manual_seed(200 + seed)
        feats = [torch.randn(batch, c, imgsz // s, imgsz // s, generator=g) for c, s in zip(ch, STRIDES)]
        targets = random_targets(g, batch, nc)
        batch_ref = {"batch_idx": targets[:, 0], "cls": targets[:, 1], "bboxes": targets[:, 2:]}
        f_ref, f_ours = ([f.clone().requires_grad_() for f in feats] for _ in range(2))
        theirs.train(), ours.train()
        theirs.zero_grad(), ours.zero_grad()
        preds = theirs(f_ref)
        ref_total, ref_items = ref_loss(preds, batch_ref)
        ref_total.sum().backward()
        with torch.no_grad():
            branch = [torch.stack([loss(preds[k], batch_ref)[1][t] for t in TERMS]) for loss, k in
                      ((ref_loss.one2many, "one2many"), (ref_loss.one2one, "one2one"))]
        total, items = our_loss(ours(f_ours), targets)
        total.backward()
        out["total"] = max(out["total"], float((total.detach() - ref_total.sum().detach()).abs()))
        out["total_scale"] = max(out["total_scale"], float(ref_total.sum().detach().abs()))
        summed = torch.stack([ref_items[t] for t in TERMS])
        out["sum"] = max(out["sum"], float((items[:3] + items[3:] - summed).abs().max()))
        out["o2m"] = max(out["o2m"], float((items[:3] - branch[0]).abs().max()))
        out["o2o"] = max(out["o2o"], float((items[3:] - branch[1]).abs().max()))
        out["term_scale"] = max(out["term_scale"], float(summed.abs().max()))
        grads = dict(theirs.named_parameters())
        for name, p in ours.named_parameters():
            if p.grad is not None:
                out["grad"] = max(out["grad"], float((p.grad - grads[name].grad).abs().max()))
                out["grad_scale"] = max(out["grad_scale"], float(grads[name].grad.abs().max()))
        for a, b in zip(f_ours, f_ref):
            out["feat_grad"] = max(out["feat_grad"], float((a.grad - b.grad).abs().max()))
        compare_eval(theirs, ours, feats, out)
    return out


def as_set(rows: Tensor) -> Tensor:
    """(K, 6) [x1, y1, x2, y2, score, class] rows in one order: by class, then rounded box."""
    key = torch.cat((rows[:, 5:6], rows[:, :4].round(decimals=2)), 1).double()
    order = torch.tensor(sorted(range(len(rows)), key=lambda i: key[i].tolist()), dtype=torch.long)
    return rows[order]


def compare_eval(theirs: nn.Module, ours: V10Head, feats: list[Tensor], out: dict) -> None:
    """Row-by-row comparison of the end-to-end outputs on the images without reference ties."""
    theirs.eval(), ours.eval()
    with torch.no_grad():
        y_ref = theirs([f.clone() for f in feats])[0]  # (B, K, 6) x1 y1 x2 y2 score class
        y = ours.decode(ours(feats))  # (B, K, 5 + nc)
    tied = ref_ties(theirs, feats)
    score, cls = y[..., 5:].max(-1)
    box = box_convert(y[..., :4], "cxcywh", "xyxy")
    mine = torch.cat((box, score[..., None], cls[..., None].float()), -1)
    same = torch.tensor([as_set(a).shape == as_set(b).shape and bool((as_set(a) - as_set(b)).abs().max() < 1e-3)
                         for a, b in zip(mine, y_ref)])  # the same rows in any order
    out["images"] += len(tied)
    out["tied"] += int(tied.sum())
    out["tied_same"] += int((tied & same).sum())
    keep = ~tied
    if not keep.any():
        return
    out["rows"] += int(y[keep].shape[0] * y.shape[1])
    out["box"] = max(out["box"], float((box - y_ref[..., :4])[keep].abs().max()))
    out["score"] = max(out["score"], float((score - y_ref[..., 4])[keep].abs().max()))
    out["cls_differ"] += int((cls.float() != y_ref[..., 5])[keep].sum())


def param_counts(ref) -> list[str]:
    lines = []
    for variant in ("yolov8", "yolo11"):
        theirs, ours = paired_heads(ref, variant, 80, (64, 128, 256))
        train = (sum(p.numel() for p in ours.parameters()), sum(p.numel() for p in theirs.parameters()))
        ours.strip_training_modules()
        theirs.fuse()
        deploy = (sum(p.numel() for p in ours.parameters()), sum(p.numel() for p in theirs.parameters()))
        lines.append(f"head {variant:<7} nc 80, ch (64, 128, 256): training {train[0]:,} / {train[1]:,}; "
                     f"deployed {deploy[0]:,} / {deploy[1]:,}")
    ours = DetectionModel("yolov8n-v10head.yaml")
    cfg = ref.yaml_model_load("yolov8n.yaml")
    theirs = ref.RefModel({**cfg, "end2end": True}, verbose=False)
    train = (sum(p.numel() for p in ours.parameters()), sum(p.numel() for p in theirs.parameters()))
    theirs.model[-1].fuse()
    lines.append(f"yolov8n-v10head.yaml / Ultralytics yolov8n.yaml + end2end: training {train[0]:,} / {train[1]:,}; "
                 f"deployed {ours.deploy_params():,} / {sum(p.numel() for p in theirs.parameters()):,}")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ultralytics", required=True, help="a python that imports ultralytics, or its site-packages")
    ap.add_argument("--seeds", type=int, default=4, help="random batches per variant and TAL rule")
    opt = ap.parse_args(argv)
    ref = reference(opt.ultralytics)
    if ref is None:  # ran in the child
        return
    from ultralytics.nn.tasks import yaml_model_load
    ref.yaml_model_load = yaml_model_load
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    print(f"torch {torch.__version__}; ultralytics {ref.version} from {ref.path}")
    print("\n(a) V10Loss vs E2EDetectLoss, (b) V10Head.decode vs the end-to-end Detect output; their weights in ours, "
          "max |diff| (with the largest reference value)")
    print(f"{'variant / TAL rule':<20}{'total':>20}{'items (sum)':>20}{'o2m terms':>11}{'o2o terms':>11}"
          f"{'weight grads':>20}{'feat grads':>12}{'images':>8}{'tied':>6}{'(same)':>7}{'rows':>7}{'box px':>10}{'score':>10}"
          f"{'cls differ':>12}")
    for variant in ("yolo11", "yolov8"):
        for min_size in (16.0, 0.0):
            r = check_loss_and_eval(ref, variant, opt.seeds, min_size)
            print(f"{variant + (' widened' if min_size else ' plain'):<20}"
                  f"{r['total']:>9.1e} /{r['total_scale']:>9.3f}{r['sum']:>9.1e} /{r['term_scale']:>9.3f}"
                  f"{r['o2m']:>11.1e}{r['o2o']:>11.1e}{r['grad']:>9.1e} /{r['grad_scale']:>9.3f}{r['feat_grad']:>12.1e}"
                  f"{r['images']:>8}{r['tied']:>6}{r['tied_same']:>7}{r['rows']:>7}{r['box']:>10.1e}{r['score']:>10.1e}"
                  f"{r['cls_differ']:>12}", flush=True)
    print("\n(c) parameters, ours / Ultralytics'")
    for line in param_counts(ref):
        print(line)


if __name__ == "__main__":
    main()
