"""Where a collapsed epoch's damage sits: val mAP of one run's checkpoints mixed part by part.

    python bench/checkpoint_mix.py --good runs/train/exp/weights/epoch6.pt --bad runs/train/exp/weights/epoch7.pt

For a good and a bad checkpoint of one run (their EMA weights), validates: each as saved; the plain average of the
two; the bad weights with the good head's BatchNorm statistics; the bad body with the good head; the good body with
the bad head; and each with every BatchNorm's statistics re-estimated on the val images themselves (a diagnostic
only: val images never feed training). "Head" is the last YAML row. Prints a table, writes runs/bench/checkpoint_mix.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import val as validate  # noqa: E402
from models.yolo import DetectionModel  # noqa: E402
from utils.data.dataloaders import check_dataset, create_dataloader  # noqa: E402
from utils.io.checkpoint import load_checkpoint  # noqa: E402
from utils.io.files import yaml_load  # noqa: E402
from utils.torch_utils import precise_bn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def mixes(good: dict, bad: dict, head: str) -> dict[str, dict]:
    """Named state_dicts built from the good and the bad EMA weights; ``head`` is the head rows' key prefix."""
    def take(base: dict, other: dict, pick) -> dict:
        return {k: other[k] if pick(k) else v for k, v in base.items()}

    avg = {k: (v.float() + bad[k].float()) / 2 if v.dtype.is_floating_point else v for k, v in good.items()}
    return {"good": good, "bad": bad, "average of good and bad": avg,
            "bad, head BN statistics of good": take(bad, good, lambda k: k.startswith(head) and "running" in k),
            "bad body + good head": take(bad, good, lambda k: k.startswith(head)),
            "good body + bad head": take(good, bad, lambda k: k.startswith(head))}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--good", required=True, help="a checkpoint that validates well")
    p.add_argument("--bad", required=True, help="a checkpoint of the same run that collapsed")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench" / "checkpoint_mix.json"))
    opt = p.parse_args(argv)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    good, bad = load_checkpoint(opt.good), load_checkpoint(opt.bad)
    run = Path(opt.good).parent.parent
    ropt, hyp = yaml_load(run / "opt.yaml"), yaml_load(run / "hyp.yaml")
    data, bs, imgsz = check_dataset(ropt["data"]), int(ropt["batch_size"]) * 2, int(ropt["imgsz"])
    probe = DetectionModel(good["yaml"])
    loader = create_dataloader(data["val"], imgsz, bs, max(int(probe.stride.max()), 32), hyp=hyp, rect=True, pad=0.5,
                               workers=0, prefix="val: ", names=data["names"])[0]
    head = f"model.{len(probe.model) - 1}."
    rows = []
    weights = [c["ema"] if c.get("ema") is not None else c["model"] for c in (good, bad)]  # finished runs: model
    for name, sd in mixes(*weights, head).items():
        for val_stats in (False, True):
            if val_stats and name not in ("good", "bad"):
                continue
            model = DetectionModel(good["yaml"])
            model.load_state_dict({k: v.float() for k, v in sd.items()})
            if val_stats:
                precise_bn(model, (b[0].float() / 255 for b in loader))
                name = f"{name}, BN statistics of the val images"
            r = validate.run(data, batch_size=bs, imgsz=imgsz, model=model, dataloader=loader, plots=False)
            rows.append({"model": name, "map50": r.map50, "map": r.map})
    print("\n| model | mAP50 | mAP50-95 |\n|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['map50']:.3f} | {r['map']:.3f} |")
    Path(opt.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opt.out).write_text(json.dumps({"good": opt.good, "bad": opt.bad, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
