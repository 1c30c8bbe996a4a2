"""Throughput of the training dataloader (mosaic on) against the training step it has to feed.

    python bench/dataloader.py                                # shapes dataset, 320 px, batch 16, 0 and 2 workers
    python bench/dataloader.py --workers 0 2 4 --batches 40 --imgsz 640 --cfg yolov5s.yaml
    python bench/dataloader.py --no-train                     # loader only

Loader: images/s in steady state (after the first batch, which includes worker start-up) and the
start-up time. Training: images/s of forward + loss + backward + SGD step of ``--cfg`` on one fixed
batch (so it is the model's speed, not the loader's; median of the steps). Combined: the same steps
fed by the loader with the most workers asked for. Prints a table and writes runs/bench/dataloader.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402

from utils.data.dataloaders import check_dataset, create_dataloader  # noqa: E402


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="shapes.yaml", help="dataset YAML")
    p.add_argument("--hyp", default=str(ROOT / "data" / "hyps" / "hyp.scratch-low.yaml"), help="hyperparameter YAML")
    p.add_argument("--imgsz", type=int, default=320, help="training image size (px)")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch")
    p.add_argument("--batches", type=int, default=30, help="batches timed per loader setting")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="worker counts to time")
    p.add_argument("--cfg", default="yolov5n.yaml", help="model whose training step is timed")
    p.add_argument("--steps", type=int, default=10, help="training steps timed (after 2 untimed)")
    p.add_argument("--no-train", action="store_true", help="time the loader only")
    p.add_argument("--json", default=str(ROOT / "runs" / "bench" / "dataloader.json"), help="output JSON")
    return p.parse_args(argv)


def time_loader(data: dict, hyp: dict, opt: argparse.Namespace, workers: int) -> dict:
    """Steady-state images/s of ``opt.batches`` batches (the first batch is timed apart as start-up)."""
    t0 = time.perf_counter()
    loader, dataset = create_dataloader(data["train"], opt.imgsz, opt.batch_size, 32, hyp=hyp, augment=True,
                                        workers=workers, shuffle=True, names=data["names"], prefix="bench: ")
    n, t_first, t_end = 0, None, None
    while n < opt.batches:
        for imgs, _, _, _ in loader:
            if t_first is None:
                t_first = time.perf_counter()
            else:
                n += 1
            if n >= opt.batches:
                break
    t_end = time.perf_counter()
    return {"workers": workers, "images_per_s": n * opt.batch_size / (t_end - t_first),
            "startup_s": t_first - t0, "batches": n}


def build_train_step(cfg: str, nc: int, hyp: dict, imgsz: int):
    """A closure doing one SGD step on (imgs uint8, targets), and a note on the loss used."""
    from models.yolo import DetectionModel

    model = DetectionModel(cfg, nc=nc).train()
    try:
        import utils.losses  # noqa: F401

        criterion, note = model.criterion(hyp, imgsz=imgsz), "real loss (utils.losses)"
    except ImportError:
        criterion, note = None, "STAND-IN loss (sum of raw output means): utils.losses not importable"
    opt = torch.optim.SGD(model.parameters(), lr=hyp["lr0"], momentum=hyp["momentum"], nesterov=True)

    def step(imgs: torch.Tensor, targets: torch.Tensor) -> float:
        raw = model(imgs.float() / 255)
        loss = criterion(raw, targets)[0] if criterion else sum(r.mean() for r in raw)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step, note


def time_train(data: dict, hyp: dict, opt: argparse.Namespace) -> dict:
    loader, _ = create_dataloader(data["train"], opt.imgsz, opt.batch_size, 32, hyp=hyp, augment=True, workers=0,
                                  shuffle=True, names=data["names"], prefix="bench: ")
    imgs, targets, _, _ = next(iter(loader))
    step, note = build_train_step(opt.cfg, data["nc"], hyp, opt.imgsz)
    for _ in range(2):
        step(imgs, targets)
    times = []
    for _ in range(opt.steps):
        t0 = time.perf_counter()
        step(imgs, targets)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)  # robust to other processes on a shared machine
    return {"cfg": opt.cfg, "images_per_s": opt.batch_size / med, "step_s_median": med, "step_s_max": max(times),
            "loss": note, "torch_threads": torch.get_num_threads()}


def time_combined(data: dict, hyp: dict, opt: argparse.Namespace, workers: int) -> dict:
    """Training steps fed by the loader: the throughput a training run would see."""
    loader, _ = create_dataloader(data["train"], opt.imgsz, opt.batch_size, 32, hyp=hyp, augment=True,
                                  workers=workers, shuffle=True, names=data["names"], prefix="bench: ")
    step, _ = build_train_step(opt.cfg, data["nc"], hyp, opt.imgsz)
    n, t0 = -2, None
    while n < opt.steps:
        for imgs, targets, _, _ in loader:
            step(imgs, targets)
            n += 1
            if n == 0:
                t0 = time.perf_counter()
            if n >= opt.steps:
                break
    return {"workers": workers, "images_per_s": opt.steps * opt.batch_size / (time.perf_counter() - t0)}


def main(opt: argparse.Namespace) -> dict:
    data = check_dataset(opt.data)
    with open(opt.hyp, encoding="utf-8") as f:
        hyp = yaml.safe_load(f)
    res = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
           "imgsz": opt.imgsz, "batch_size": opt.batch_size,
           "loader": [time_loader(data, hyp, opt, w) for w in opt.workers]}
    if not opt.no_train:
        res["train"] = time_train(data, hyp, opt)
        res["combined"] = time_combined(data, hyp, opt, max(opt.workers))
    print_table(res)
    Path(opt.json).parent.mkdir(parents=True, exist_ok=True)
    Path(opt.json).write_text(json.dumps(res, indent=1))
    print(f"wrote {opt.json}")
    return res


def print_table(res: dict) -> None:
    print(f"\n{'what':<40}{'images/s':>10}{'start-up s':>12}")
    for r in res["loader"]:
        what = f"loader, mosaic, {r['workers']} workers"
        print(f"{what:<40}{r['images_per_s']:>10.1f}{r['startup_s']:>12.2f}")
    if "train" in res:
        t = res["train"]
        print(f"{'train step ' + t['cfg'] + ' (fixed batch)':<40}{t['images_per_s']:>10.1f}{'':>12}")
        c = res["combined"]
        what = f"train step fed by loader, {c['workers']} workers"
        print(f"{what:<40}{c['images_per_s']:>10.1f}")
        print(f"loss: {t['loss']}; torch threads {t['torch_threads']}; imgsz {res['imgsz']}, "
              f"batch {res['batch_size']}")


if __name__ == "__main__":
    main(parse_opt())
