"""The same dataset as YOLO txt, COCO JSON and VOC XML trains to the same figures: writes the COCO and VOC copies
(data/convert.py), trains each for --epochs with one seed, and prints the last results.csv row of each with the
largest difference to the YOLO run.

    python bench/dataset_formats.py                        # the built-in shapes dataset, 2 epochs, yolov5n, 160 px
    python bench/dataset_formats.py --out /tmp/formats --epochs 1
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from data.convert import convert  # noqa: E402


def last_row(results_csv: Path) -> dict[str, float]:
    with open(results_csv) as f:
        rows = list(csv.DictReader(f, skipinitialspace=True))
    return {k.strip(): float(v) for k, v in rows[-1].items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="shapes.yaml", help="source dataset YAML")
    p.add_argument("--cfg", default="yolov5n.yaml", help="model YAML")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--img", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "runs" / "formats"), help="folder for the copies and the runs")
    opt = p.parse_args(argv)
    out = Path(opt.out)
    datas = {"yolo": opt.data, **{to: str(convert(opt.data, to, out / f"data-{to}")) for to in ("coco", "voc")}}
    rows = {}
    for fmt, data in datas.items():
        subprocess.run([sys.executable, str(ROOT / "train.py"), "--data", data, "--cfg", opt.cfg, "--epochs",
                        str(opt.epochs), "--img", str(opt.img), "--workers", "0", "--seed", str(opt.seed),
                        "--project", str(out / "runs"), "--name", fmt, "--exist-ok"], check=True)
        rows[fmt] = last_row(out / "runs" / fmt / "results.csv")
    keys = ("metrics/mAP_0.5", "metrics/mAP_0.5:0.95", "metrics/precision", "metrics/recall", "val/box_loss")
    print(f"{'format':8s}" + "".join(f"{k.split('/')[-1]:>14s}" for k in keys))
    for fmt, row in rows.items():
        print(f"{fmt:8s}" + "".join(f"{row[k]:14.6f}" for k in keys))
    for fmt in ("coco", "voc"):
        diff = max(abs(rows[fmt][k] - rows["yolo"][k]) for k in rows["yolo"] if k in rows[fmt])
        print(f"{fmt} vs yolo: max |diff| over every results.csv column of the last epoch = {diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
