"""Training throughput of model configs: images/s of full training steps, without data loading.

    python bench/train_throughput.py                          # yolov5n, -decoupled, -decoupled-af at 320, batch 16
    python bench/train_throughput.py --cfg yolov5s.yaml yolox-s.yaml --imgsz 640 --batch-size 8 --steps 5

One step is what train.py does per batch (channels_last unless ``--no-channels-last``; ``--compile`` as train.py): forward in train mode, the head's own criterion
(``model.criterion(hyp, imgsz)``: target building, assignment, loss terms), backward, gradient clipping (norm 10)
and an SGD step (YOLOv5's three parameter groups, hyp.scratch-low), at train.py's precision (``--amp/--no-amp``:
FP16 autocast on CUDA, FP32 on a CPU unless ``--amp``, BF16 autocast). Inputs are
synthetic and fixed: random images and ``--min-objects`` .. ``--max-objects`` boxes per image (uniform count, sides
8 px .. imgsz/3, random classes of ``--nc``). The first ``--warmup`` steps are not timed. Prints a table (median
and p90 ms per step, images/s at the median) and writes runs/bench/train_throughput.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from models.yolo import DetectionModel  # noqa: E402
from utils.io.files import yaml_load  # noqa: E402
from train import amp_loss  # noqa: E402
from utils.torch_utils import autocast_dtype, select_device, smart_optimizer, time_sync  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CFGS = ["yolov5n.yaml", "yolov5n-decoupled.yaml", "yolov5n-decoupled-af.yaml"]


def synthetic_targets(batch: int, imgsz: int, nc: int, min_objects: int, max_objects: int,
                      g: torch.Generator) -> Tensor:
    """(M, 6) normalised ``[image, class, cx, cy, w, h]`` as the dataloader yields them, boxes inside the image."""
    counts = torch.randint(min_objects, max_objects + 1, (batch,), generator=g)
    img = torch.repeat_interleave(torch.arange(batch), counts).float()
    m = img.shape[0]
    wh = (torch.rand(m, 2, generator=g) * (imgsz / 3 - 8) + 8) / imgsz
    xy = torch.rand(m, 2, generator=g) * (1 - wh) + wh / 2
    cls = torch.randint(0, nc, (m,), generator=g).float()
    return torch.cat((img[:, None], cls[:, None], xy, wh), 1)


@dataclass
class StepSetup:
    """What one training step needs, built once: the model (and its compiled form), criterion, SGD optimizer,
    grad scaler and one fixed synthetic batch."""

    model: DetectionModel
    net: torch.nn.Module
    criterion: object
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    imgs: Tensor
    targets: Tensor
    device: torch.device
    amp_dtype: torch.dtype | None  # train.py's precision: FP16 (CUDA), BF16 (CPU, --amp) or None (FP32)


def build_step(cfg: str, opt: argparse.Namespace, device: torch.device) -> StepSetup:
    """Model ``cfg`` (``opt.nc`` classes) in train mode and a batch of ``opt.batch_size`` images of ``opt.imgsz`` px
    with ``opt.min_objects`` .. ``opt.max_objects`` boxes each, seeded by ``opt.seed``."""
    g = torch.Generator().manual_seed(opt.seed)
    torch.manual_seed(opt.seed)
    fmt = torch.channels_last if opt.channels_last else torch.contiguous_format
    model = DetectionModel(cfg, nc=opt.nc).to(device, memory_format=fmt).train()
    net = torch.compile(model, backend=opt.compile) if opt.compile else model
    hyp = yaml_load(ROOT / "data" / "hyps" / "hyp.scratch-low.yaml")
    optimizer = smart_optimizer(model, "SGD", hyp["lr0"], hyp["momentum"], hyp["weight_decay"])
    imgs = torch.rand(opt.batch_size, 3, opt.imgsz, opt.imgsz, generator=g).to(device).contiguous(memory_format=fmt)
    targets = synthetic_targets(opt.batch_size, opt.imgsz, opt.nc, opt.min_objects, opt.max_objects, g).to(device)
    dtype = autocast_dtype(getattr(opt, "amp", None), device)  # train.py's choice; callers' own opts: the default
    scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)  # as train.py: BF16 needs no scaling
    return StepSetup(model, net, model.criterion(hyp, opt.imgsz), optimizer, scaler, imgs, targets, device, dtype)


def train_step(s: StepSetup) -> float:
    """ms of one training step: forward, loss, backward, clip (norm 10), SGD step, at train.py's precision."""
    t0 = time_sync(s.device)
    loss, _ = amp_loss(s.net, s.criterion, s.imgs, s.targets, s.amp_dtype, s.device.type)  # targets reach R-CNN
    s.scaler.scale(loss).backward()
    s.scaler.unscale_(s.optimizer)
    torch.nn.utils.clip_grad_norm_(s.model.parameters(), max_norm=10.0)
    s.scaler.step(s.optimizer)
    s.scaler.update()
    s.optimizer.zero_grad()
    return (time_sync(s.device) - t0) * 1000


def time_steps(cfg: str, opt: argparse.Namespace, device: torch.device) -> tuple[list[float], int]:
    """ms of each timed training step of ``cfg`` and the number of target boxes in the batch."""
    setup = build_step(cfg, opt, device)
    times = [train_step(setup) for _ in range(opt.warmup + opt.steps)]
    if opt.compile:
        print(f"{cfg}: first step {times[0] / 1000:.1f} s (torch.compile backend {opt.compile!r} included)")
    return times[opt.warmup:], setup.targets.shape[0]


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cfg", nargs="+", default=DEFAULT_CFGS)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--nc", type=int, default=8, help="classes (8: the built-in shapes dataset)")
    ap.add_argument("--min-objects", type=int, default=10, help="fewest boxes per image")
    ap.add_argument("--max-objects", type=int, default=40, help="most boxes per image")
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per cfg")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or a CUDA index")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                    help="model and images in channels_last, as train.py trains (default)")
    ap.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                    help="torch.compile the model (bare: inductor); the first step's time is printed")
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                    help="train.py's --amp/--no-amp: default FP16 autocast on CUDA, FP32 on a CPU; --amp on a CPU: "
                         "BF16 autocast (emulated, slower, without AVX512-BF16/AMX)")
    ap.add_argument("--json", default=str(ROOT / "runs" / "bench" / "train_throughput.json"))
    opt = ap.parse_args(argv)
    if not 0 <= opt.min_objects <= opt.max_objects:
        ap.error(f"need 0 <= --min-objects <= --max-objects, got {opt.min_objects} and {opt.max_objects}")
    if opt.threads:
        torch.set_num_threads(opt.threads)
    device = select_device(opt.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    dtype = autocast_dtype(opt.amp, device)
    precision = f"{str(dtype)[6:]} autocast" if dtype else "FP32"
    print(f"{device.type.upper()}: {where}, torch {torch.__version__}, {torch.get_num_threads()} threads, {precision}; "
          f"batch {opt.batch_size}, {opt.imgsz} px, {opt.min_objects}-{opt.max_objects} objects/image, nc {opt.nc}")
    print(f"{'cfg':<28}{'targets':>8}{'median ms':>11}{'p90 ms':>9}{'images/s':>10}")
    rows = []
    for cfg in opt.cfg:
        t, n_targets = time_steps(cfg, opt, device)
        t.sort()
        med = statistics.median(t)
        row = {"cfg": cfg, "imgsz": opt.imgsz, "batch": opt.batch_size, "targets": n_targets,
               "median_ms": med, "p90_ms": t[int(0.9 * (len(t) - 1))], "images_per_s": opt.batch_size * 1000 / med,
               "steps": opt.steps}
        rows.append(row)
        print(f"{cfg:<28}{n_targets:>8}{med:>11.0f}{row['p90_ms']:>9.0f}{row['images_per_s']:>10.1f}", flush=True)
    Path(opt.json).parent.mkdir(parents=True, exist_ok=True)
    Path(opt.json).write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                                          "device": str(device), "precision": precision, "rows": rows}, indent=2))
    print(f"wrote {opt.json}")
    return rows


if __name__ == "__main__":
    main()
