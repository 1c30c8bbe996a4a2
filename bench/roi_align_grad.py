"""RoIAlign's training backward on the CPU: torchvision's kernel against FasterRCNNHead's matmul backward.

    python bench/roi_align_grad.py                  # 1,024 RoIs x 256 channels, maps 5..40 cells a side, 1 thread
    python bench/roi_align_grad.py --rois 512 --sizes 10 20 --threads 2
    python bench/roi_align_grad.py --sizes --step-cfg faster-rcnn-mnv3-fpn.yaml   # whole training steps only

Per square map size: ms of one backward (median of --runs) through ``torchvision.ops.roi_align`` and through
``models.heads.rcnn._RoIAlignMatmulGrad`` (the same forward), their ratio, and the largest gradient difference.
RoIs are random boxes of 1/8 .. 1/2 of the image side, 7x7 bins, sampling ratio 2 (torchvision's Faster R-CNN).
The ratio decides ``SEPARABLE_MAX_CELLS``: the matmul backward is used up to the map size where it stops winning.
With ``--step-cfg``, whole training steps of that cfg (bench/train_throughput.py's step: forward, loss, backward,
SGD; batch 16 at --imgsz, synthetic boxes) are timed with the matmul backward off and on, in alternating rounds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torchvision.ops import roi_align  # noqa: E402

from bench.train_throughput import time_steps  # noqa: E402
from models.heads import rcnn  # noqa: E402
from models.heads.rcnn import _RoIAlignMatmulGrad  # noqa: E402


def backward_ms(pool, f: torch.Tensor, rois: torch.Tensor, grad: torch.Tensor, runs: int) -> tuple[float, torch.Tensor]:
    times = []
    for _ in range(runs + 1):
        f.grad = None
        out = pool(f, rois, (7, 7), 1 / 32, 2)
        t0 = time.perf_counter()
        out.backward(grad)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times[1:]), f.grad.clone()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rois", type=int, default=1024, help="RoIs (64 per image x 16 images: mnv3-FPN training)")
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--sizes", type=int, nargs="*", default=[5, 10, 16, 20, 25, 32], help="map sides in cells")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--step-cfg", default="", help="also time whole training steps of this model YAML")
    ap.add_argument("--imgsz", type=int, default=160, help="--step-cfg's image size (the built-in dataset's)")
    ap.add_argument("--rounds", type=int, default=2, help="--step-cfg: rounds of (off, on), 5 timed steps each")
    opt = ap.parse_args(argv)
    torch.set_num_threads(opt.threads)
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {opt.rois} RoIs x {opt.channels} "
          f"channels over {opt.images} images, 7x7 bins, sampling 2")
    print(f"{'map':>7}{'torchvision ms':>16}{'matmul ms':>11}{'speed-up':>10}{'max |diff|':>12}")
    for s in opt.sizes:
        side = s * 32.0  # image pixels at stride 32
        f = torch.randn(opt.images, opt.channels, s, s, generator=g, requires_grad=True)
        wh = side * (1 / 8 + 3 / 8 * torch.rand(opt.rois, 2, generator=g))
        xy = (side - wh) * torch.rand(opt.rois, 2, generator=g)
        img = torch.randint(0, opt.images, (opt.rois, 1), generator=g).float()
        rois = torch.cat((img, xy, xy + wh), 1)
        grad = torch.randn(opt.rois, opt.channels, 7, 7, generator=g)
        tv_ms, tv_grad = backward_ms(lambda *a: roi_align(*a), f, rois, grad, opt.runs)
        mm_ms, mm_grad = backward_ms(_RoIAlignMatmulGrad.apply, f, rois, grad, opt.runs)
        diff = (tv_grad - mm_grad).abs().max().item()
        print(f"{f'{s}x{s}':>7}{tv_ms:>16.1f}{mm_ms:>11.1f}{tv_ms / mm_ms:>9.1f}x{diff:>12.2e}", flush=True)
    if opt.step_cfg:
        time_training_steps(opt)


def time_training_steps(opt: argparse.Namespace) -> None:
    """Median ms of whole training steps of --step-cfg with torchvision's backward (the limit set to 0 cells)
    and with the matmul backward, rounds alternating so that a drifting machine hits both alike."""
    step = argparse.Namespace(seed=0, channels_last=True, compile=None, nc=8, imgsz=opt.imgsz, batch_size=16,
                              min_objects=2, max_objects=12, warmup=1, steps=5)
    limit, times = rcnn.SEPARABLE_MAX_CELLS, {"torchvision": [], "matmul": []}
    try:
        for _ in range(opt.rounds):
            for name, cells in (("torchvision", 0), ("matmul", limit)):
                rcnn.SEPARABLE_MAX_CELLS = cells
                times[name] += time_steps(opt.step_cfg, step, torch.device("cpu"))[0]
    finally:
        rcnn.SEPARABLE_MAX_CELLS = limit
    tv, mm = statistics.median(times["torchvision"]), statistics.median(times["matmul"])
    print(f"{opt.step_cfg} at {opt.imgsz} px, batch 16: training step {tv:.0f} ms with torchvision's RoIAlign "
          f"backward, {mm:.0f} ms with the matmul one ({tv / mm:.2f}x; medians of {len(times['matmul'])} steps)")


if __name__ == "__main__":
    main()
