"""Cross-check our YOLOv8n/s, YOLO11n and YOLOv10n YAMLs against Ultralytics' own builds of the same names.

    python bench/crosscheck_ultralytics_models.py --ultralytics /work/ultravenv [--cfg yolov8n.yaml ...]

``--ultralytics``: a virtual environment (or its python) with the ``ultralytics`` package; it runs in its own
process (``REFERENCE`` below: our code, driving their package), never imported here. That process builds
``YOLO(cfg).model`` from Ultralytics' own YAML (the scale read from the name), draws random weights and
BatchNorm statistics, and hands back its state_dict, every row's parameter count and output, the eval output
for one random image, and its parameter and GFLOPs figures. Here the same name is built from our YAML, the
weights are copied row by row in state_dict order (each row's tensors must agree in number and shape), and
both forwards are compared: every row's output, then the decoded predictions (theirs ``(B, 4 + nc, N)`` xywh
pixels + class probabilities; ours ``(B, N, 4 + 1 + nc)`` with the objectness column 1.0; for an end-to-end head
(YOLOv10) theirs ``(B, 300, 6)`` rows [x1, y1, x2, y2, score, class], ours the same rows in the common layout: the
"class probabilities" figure is then the larger of the scores' max |diff| and the number of classes that differ).

GFLOPs: ours is YOLOv5's method (thop on a stride-sized image, scaled by area) on the unfused model, as
``models/yolo.py --cfg`` prints it; Ultralytics' ``info()`` profiles with its ultralytics-thop fork; its
published figures (8.7 / 28.6 / 6.5) are the fused model's. Each is printed.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from copy import deepcopy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch
from torchvision.ops import box_convert

from models.yolo import DetectionModel

PUBLISHED = {"yolov8n.yaml": (3_157_200, 8.7), "yolov8s.yaml": (11_166_560, 28.6), "yolo11n.yaml": (2_624_080, 6.5)}

# Run by the reference's python: argv = [input file, output file, cfg names...]
REFERENCE = r"""
import sys, torch
from ultralytics import YOLO
from ultralytics.utils.torch_utils import get_flops

def randomize(model, g):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g); m.bias.normal_(0, 0.1, generator=g)
                m.running_mean.normal_(0, 0.1, generator=g); m.running_var.uniform_(0.5, 1.5, generator=g)

def run(cfg, x):
    model = YOLO(cfg).model
    randomize(model, torch.Generator().manual_seed(0))
    if getattr(model.model[-1], "one2one_cv2", None) is not None:
        model.end2end = True  # infer the one-to-one branch, as its validator does by default (nms=False)
    model.eval()
    rows = {}
    for m in model.model:
        m.register_forward_hook(lambda mod, inp, out, i=m.i: rows.__setitem__(i, out))
    with torch.no_grad():
        y = model(x)
    raw = y[1] if isinstance(y, (tuple, list)) and len(y) > 1 and isinstance(y[1], dict) else {}
    raw = raw.get("one2one", raw)  # an end-to-end head: the branch it infers
    y = y[0] if isinstance(y, (tuple, list)) else y
    layer_out = {i: o for i, o in rows.items() if isinstance(o, torch.Tensor)}
    fused = YOLO(cfg).model.eval().fuse()
    return {"state_dict": list(model.state_dict().items()), "np": [int(m.np) for m in model.model],
            "rows": layer_out, "decoded": y, "params": sum(p.numel() for p in model.parameters()),
            "raw": {k: raw[k] for k in ("boxes", "scores") if k in raw},
            "params_fused": sum(p.numel() for p in fused.parameters()),
            "gflops": get_flops(model, 640), "gflops_fused": get_flops(fused, 640),
            "legacy": bool(getattr(model.model[-1], "legacy", True))}

x = torch.load(sys.argv[1])
torch.save({cfg: run(cfg, x) for cfg in sys.argv[3:]}, sys.argv[2])
"""


def reference_python(path: str) -> str:
    p = Path(path)
    return str(p / "bin" / "python") if p.is_dir() else str(p)


def run_reference(python: str, cfgs: list[str], x: torch.Tensor) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "x.pt", Path(tmp) / "ref.pt"
        torch.save(x, src)
        subprocess.run([python, "-c", REFERENCE, str(src), str(dst), *cfgs], check=True, cwd=tmp)
        return torch.load(dst, weights_only=False)


def copy_by_order(model: DetectionModel, ref_state: list) -> list[int]:
    """Copy the reference's tensors into ours row by row, in state_dict order; -> rows that did not line up."""
    ours = model.state_dict()
    bad, n_rows = [], len(model.model)
    for i in range(n_rows):
        mine = [k for k in ours if k.startswith(f"model.{i}.")]
        theirs = [(k, v) for k, v in ref_state if k.startswith(f"model.{i}.")]
        if len(mine) != len(theirs) or any(ours[a].shape != v.shape for a, (_, v) in zip(mine, theirs)):
            bad.append(i)
            continue
        for a, (_, v) in zip(mine, theirs):
            ours[a].copy_(v)
    model.load_state_dict(ours)
    return bad


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.shape == b.shape else float("nan")


def check(cfg: str, ref: dict, x: torch.Tensor) -> None:
    model = DetectionModel(cfg)
    ours_np = [int(m.np) for m in model.model]
    row_np = [i for i, (a, b) in enumerate(zip(ours_np, ref["np"])) if a != b]
    bad = copy_by_order(model, ref["state_dict"])
    model.eval()
    rows = {}
    for m in model.model:
        m.register_forward_hook(lambda mod, inp, out, i=m.i: rows.__setitem__(i, out))
    with torch.no_grad():
        y, raw = model(x)
    raw = torch.cat([r.flatten(2) for r in raw], 2)  # (B, 4 x reg_max + nc, N)
    r4 = 4 * model.head.reg_max
    raw_diff = max(max_abs(raw[:, :r4], ref["raw"]["boxes"]), max_abs(raw[:, r4:], ref["raw"]["scores"])) \
        if ref["raw"] else float("nan")
    shared = [i for i in ref["rows"] if isinstance(rows.get(i), torch.Tensor) and i not in bad]
    shapes = [i for i in shared if rows[i].shape != ref["rows"][i].shape]
    row_diff = max((max_abs(rows[i], ref["rows"][i]) for i in shared), default=float("nan"))
    dec = ref["decoded"]  # (B, 4 + nc, N); an end-to-end head's (B, 300, 6) [x1, y1, x2, y2, score, class] rows
    if model.suppressed:
        score, cls = y[..., 5:].max(-1)
        box_diff = max_abs(box_convert(y[..., :4], "cxcywh", "xyxy"), dec[..., :4])
        cls_diff = max(max_abs(score, dec[..., 4]), float((cls.float() != dec[..., 5]).sum()))
        moved = (box_convert(y[..., :4], "cxcywh", "xyxy") - dec[..., :4]).abs().amax(-1) > 1e-3
        tied = (dec[..., 4:5] == dec[..., 4][:, None, :]).sum(-1) > 1  # (B, K) rows sharing their score
        print(f"  end-to-end rows: {int(moved.sum())} of {moved.numel()} with another box, all of them among the "
              f"{int(tied.sum())} rows whose score another row shares: {bool((tied | ~moved).all())}")
    else:
        box_diff = max_abs(y[..., :4], dec[:, :4].transpose(1, 2))
        cls_diff = max_abs(y[..., 5:], dec[:, 4:].transpose(1, 2))
    params = sum(p.numel() for p in model.parameters())
    info = model.info()
    fused = deepcopy(model).fuse().info()
    pub_params, pub_gflops = PUBLISHED.get(cfg, (None, None))
    print(f"\n{cfg}: parameters ours {params:,} / Ultralytics {ref['params']:,} / published {f'{pub_params:,}' if pub_params else '-'}"
          f" -> {'equal' if params == ref['params'] else 'DIFFERENT'}")
    print(f"  rows with different parameter counts: {row_np or 'none'} of {len(ours_np)}; rows whose tensors did "
          f"not line up for copying: {bad or 'none'}; output shapes differing: {shapes or 'none'}")
    print(f"  max |diff| over rows' outputs ({len(shared)} rows before the head): {row_diff:.3g}; head's raw box "
          f"and class logits: {raw_diff:.3g}; decoded boxes (px): {box_diff:.3g}; class probabilities: {cls_diff:.3g}"
          f"  (input {tuple(x.shape)})")
    print(f"  fused: parameters ours {fused['parameters']:,} / Ultralytics {ref['params_fused']:,}")
    print(f"  GFLOPs at 640: ours {info['gflops']:.3f} unfused / {fused['gflops']:.3f} fused; Ultralytics info() "
          f"{ref['gflops']:.3f} unfused / {ref['gflops_fused']:.3f} fused; published {pub_gflops} (fused)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ultralytics", required=True, help="virtual environment (or python) with ultralytics")
    parser.add_argument("--cfg", nargs="+", default=list(PUBLISHED), help="model YAML names known to both")
    parser.add_argument("--imgsz", type=int, default=256, help="input size of the output comparison")
    opt = parser.parse_args(argv)
    x = torch.rand(1, 3, opt.imgsz, opt.imgsz, generator=torch.Generator().manual_seed(0))
    refs = run_reference(reference_python(opt.ultralytics), opt.cfg, x)
    for cfg in opt.cfg:
        check(cfg, refs[cfg], x)
    return 0


if __name__ == "__main__":
    sys.exit(main())
