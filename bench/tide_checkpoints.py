"""TIDE error breakdown (Bolya et al., ECCV 2020; utils/evaluation/tide.py) of one or more checkpoints side by
side, on the same val (or train) split, with val.py's thresholds on PyTorch: e.g. a run's best.pt against its
last.pt, to see which error type grows when a head's mAP falls late in training.

    python bench/tide_checkpoints.py --weights runs/train/exp/weights/best.pt runs/train/exp/weights/last.pt \
        [--data shapes.yaml] [--imgsz 160] [--task val]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import val as validate  # noqa: E402
from utils.evaluation.tide import ERRORS, tide_errors  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", nargs="+", required=True)
    ap.add_argument("--data", default="shapes.yaml")
    ap.add_argument("--imgsz", type=int, default=None, help="default: the dataset's imgsz")
    ap.add_argument("--task", default="val", choices=["val", "train", "test"])
    ap.add_argument("--batch-size", type=int, default=32)
    opt = ap.parse_args()
    rows = []
    for w in opt.weights:
        res = validate.run(data=opt.data, weights=w, batch_size=opt.batch_size, imgsz=opt.imgsz, task=opt.task,
                           workers=0, project=ROOT / "runs/bench", name="tide_checkpoints", exist_ok=True,
                           plots=False, backend="torch", collect=True)
        t = tide_errors([p for p, _ in res.per_image], [lb for _, lb in res.per_image])
        rows.append({"weights": w, "ap50": 100 * t.ap50, **{e: 100 * t.dap[e] for e in ERRORS},
                     "FP": 100 * t.dap_fp, "FN": 100 * t.dap_fn, "counts": t.counts})
    cols = ["ap50", *ERRORS, "FP", "FN"]
    print(f"\nTIDE on {opt.data} {opt.task} (dAP50 in AP points; in brackets the detections of each error type, the labels never found for Missed)")
    print("| weights | " + " | ".join("AP50" if c == "ap50" else c for c in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for r in rows:
        cells = [f"{r[c]:.2f}" + (f" ({r['counts'][c]:,})" if c in r["counts"] else "") for c in cols]
        print(f"| {r['weights']} | " + " | ".join(cells) + " |")
    out = ROOT / "runs/bench/tide_checkpoints.json"
    out.write_text(json.dumps(rows, indent=1))
    print(f"\n{out}")


if __name__ == "__main__":
    main()
