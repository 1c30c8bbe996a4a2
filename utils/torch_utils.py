"""Torch helpers: devices and torch.distributed, seeding, EMA, precise BN, the optimizer, model statistics
(parameters, GFLOPs) and per-layer profiling."""
from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from utils import LOGGER


def count_params(model: nn.Module) -> tuple[int, int]:
    """(parameters, parameters that require grad)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def thop_gflops(model: nn.Module, im: torch.Tensor) -> float | None:
    """GFLOPs of one forward on ``im`` as thop counts them (2 x multiply-accumulates); None without thop."""
    try:
        import thop
    except ImportError:
        return None
    macs = thop.profile(deepcopy(model), inputs=(im,), verbose=False)[0]
    return macs * 2 / 1e9


def model_flops(model: nn.Module, imgsz: int | tuple[int, int] = 640, ch: int = 3, stride: int = 32) -> float | None:
    """GFLOPs at ``imgsz``, measured on a ``stride``-sized input and scaled by area (as YOLOv5 reports)."""
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    p = next(model.parameters())
    im = torch.zeros(1, ch, stride, stride, device=p.device, dtype=p.dtype)
    flops = thop_gflops(model, im)
    return None if flops is None else flops * (h / stride) * (w / stride)


def model_info(model: nn.Module, name: str = "Model", imgsz: int = 640, ch: int = 3, stride: int = 32) -> dict:
    """Log and return ``{layers, parameters, gradients, gflops}`` in YOLOv5's summary-line form."""
    n_p, n_g = count_params(model)
    n_l = len(list(model.modules()))
    gflops = model_flops(model, imgsz, ch, stride)
    fs = f", {gflops:.1f} GFLOPs" if gflops is not None else ""
    LOGGER.info(f"{name} summary: {n_l} layers, {n_p} parameters, {n_g} gradients{fs}")
    return {"layers": n_l, "parameters": n_p, "gradients": n_g, "gflops": gflops}


def time_sync(device: torch.device | None = None) -> float:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def profile_module(m: nn.Module, x, n: int = 10) -> tuple[float, float | None]:
    """(mean forward ms over ``n`` runs, GFLOPs) of module ``m`` on input ``x``."""
    flops = thop_gflops(m, x) if isinstance(x, torch.Tensor) else None
    device = x.device if isinstance(x, torch.Tensor) else x[0].device
    with torch.no_grad():
        m(x)
        t0 = time_sync(device)
        for _ in range(n):
            m(x)
        dt = (time_sync(device) - t0) / n * 1000
    return dt, flops


def to_float(x):
    """``x`` with every reduced-precision floating tensor in it (nested lists, tuples, dicts) cast to FP32: a head's
    BF16 outputs go to its loss in FP32."""
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() and x.dtype != torch.float32 else x
    if isinstance(x, (list, tuple)):
        return type(x)(to_float(v) for v in x) if not hasattr(x, "_fields") else type(x)(*(to_float(v) for v in x))
    if isinstance(x, dict):
        return {k: to_float(v) for k, v in x.items()}
    return x


def cpu_has_bf16() -> bool:
    """This CPU computes BF16 natively (AVX512-BF16 or AMX, from /proc/cpuinfo's flags on Linux; False elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(amp: bool | None, device: torch.device) -> torch.dtype | None:
    """--amp / --no-amp -> the autocast dtype of training (None: FP32). CUDA: FP16 unless --no-amp (YOLOv5). CPU:
    BF16 only with --amp (a warning where the CPU has no native BF16, which makes it slower than FP32); without the
    flag FP32, and a log line saying --amp is available where the CPU computes BF16 natively."""
    if device.type == "cuda":
        return None if amp is False else torch.float16
    if device.type != "cpu" or not amp:
        if amp is None and device.type == "cpu" and cpu_has_bf16():
            LOGGER.info("This CPU computes BF16 natively: --amp trains with BF16 autocast (off by default: "
                        "docs/training.md)")
        return None
    if not cpu_has_bf16():
        LOGGER.warning("WARNING: --amp on a CPU without AVX512-BF16 or AMX: BF16 autocast is emulated and slower "
                       "than FP32 here")
    return torch.bfloat16


def select_device(device: str = "", batch_size: int = 0, local_rank: int = 0,
                  local_world_size: int = 1) -> torch.device:
    """'' (CUDA if available, else CPU), 'cpu', '0', 'cuda:0' or a list '0,1,2,3'; a CUDA request without CUDA is a
    clear error. Under torchrun (``local_world_size`` processes on this node) process ``local_rank`` takes the
    ``local_rank``-th GPU of the list (of all GPUs for ''); one process given a list trains on its first GPU."""
    d = str(device).strip().lower().replace("cuda:", "")
    if d in ("", "none"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if local_world_size == 1:
            return torch.device("cuda:0")
        d = ",".join(str(i) for i in range(torch.cuda.device_count()))
    if d == "cpu":
        return torch.device("cpu")
    if d == "mps":
        return torch.device("mps")
    ids = [x for x in d.split(",") if x]
    if not ids or not all(x.isdigit() for x in ids):
        raise ValueError(f"--device {device!r} not understood: use '', 'cpu' or CUDA indices like '0' or '0,1,2,3'")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {device} requested but CUDA is not available on this machine; use --device cpu")
    if len(ids) < local_world_size:
        raise ValueError(f"--device {device}: {len(ids)} GPU(s) for {local_world_size} processes on this node "
                         f"(torchrun --nproc_per_node): give one GPU per process")
    if local_world_size == 1 and len(ids) > 1:
        LOGGER.warning(f"--device {device}: one process uses one GPU, cuda:{ids[0]}; to train on all of them run "
                       f"torchrun --nproc_per_node {len(ids)} train.py ... --device {device}")
    index = int(ids[local_rank])
    if index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    return torch.device(f"cuda:{index}")


# ------------------------------------------------------------------ CPU cores
CPUS_ENV = "HEADZOO_CPUS"  # cores one run may use (compare.py --jobs sets it for each run it starts)


def usable_cpus() -> int:
    """Cores this process may use: $HEADZOO_CPUS if set, else its CPU affinity (a container's or taskset's
    limit, which os.cpu_count() ignores)."""
    if os.environ.get(CPUS_ENV):
        return max(1, int(os.environ[CPUS_ENV]))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_training_plan(workers: int, batch_size: int, processes: int = 1) -> tuple[int, int]:
    """(torch threads, dataloader workers) for training on the CPU, from the cores this process may use
    (``usable_cpus() // processes``). The rule, from bench/README.md "Issue 18's acceptance runs": the model's
    threads get the cores first, because an OpenMP parallel region waits for its slowest thread and a loader
    process that takes a core from it stalls every step (2 cores: 2 threads + 2 workers ran 1.12x the wall of
    2 threads + 0 workers); loading in the main process costs ~15% of a yolov5n step, less with the image cache.
    Up to 2 cores: every core computes, workers 0. More: ``cores // 4`` of them load, the rest compute (not
    measured: the development VM has 2 cores). $OMP_NUM_THREADS, when set, fixes the threads; workers never
    exceed ``workers``."""
    cores = max(1, usable_cpus() // max(processes, 1))
    env = os.environ.get("OMP_NUM_THREADS")
    threads = max(1, int(env)) if env else (cores if cores <= 2 else cores - cores // 4)
    return threads, max(0, min(workers, batch_size, cores - threads))


# ------------------------------------------------------------------ torch.distributed (torchrun)
DIST_TIMEOUT = timedelta(hours=3)  # rank 0 validates and saves alone while the other ranks wait for its decision


@dataclass(frozen=True)
class DistContext:
    """This process's place in a torchrun launch: ``rank`` of ``world_size`` processes, ``local_rank`` of
    ``local_world_size`` on this node. Outside torchrun: rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def ddp(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DistContext:
        """From torchrun's RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE."""
        env = os.environ
        world = int(env.get("WORLD_SIZE", 1))
        return cls(int(env.get("RANK", 0)), world, int(env.get("LOCAL_RANK", 0)),
                   int(env.get("LOCAL_WORLD_SIZE", world)))

    @classmethod
    def current(cls) -> DistContext:
        """The launch this process trains in: from the environment once the process group is up, else one process."""
        return cls.from_env() if dist.is_available() and dist.is_initialized() else cls()


def dist_backend(requested: str, device: torch.device) -> str:
    """'auto': NCCL on CUDA devices, gloo otherwise; an explicit choice is checked against the device."""
    backend = ("nccl" if device.type == "cuda" else "gloo") if requested == "auto" else requested
    if backend == "nccl" and device.type != "cuda":
        raise ValueError(f"--dist-backend nccl with device {device}: NCCL moves CUDA tensors only; use "
                         f"--dist-backend gloo (or auto) on CPU")
    if backend == "nccl" and not dist.is_nccl_available():
        raise ValueError("--dist-backend nccl: this torch build has no NCCL; use --dist-backend gloo")
    return backend


def init_distributed(backend: str, device: torch.device) -> None:
    """Join the process group of a torchrun launch (MASTER_ADDR/MASTER_PORT rendezvous from the environment)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=DIST_TIMEOUT)


def broadcast_object(obj, src: int = 0):
    """``obj`` as rank ``src`` has it (any picklable object), on every rank; unchanged outside a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over the ranks (``t`` itself outside a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()


@contextmanager
def main_process_first(ctx: DistContext) -> Iterator[None]:
    """Run the block on rank 0 first, then on each node's local rank 0, then on the other ranks, so that files
    it writes (a generated dataset, label caches) are written once per file system and read by the rest."""
    stage = 0 if ctx.main else 1 if ctx.local_rank == 0 else 2
    for _ in range(stage if ctx.ddp else 0):
        dist.barrier()
    yield
    for _ in range(2 - stage if ctx.ddp else 0):
        dist.barrier()


def init_seeds(seed: int = 0, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True


YOLOV5_EMA_DECAY, YOLOV5_EMA_TAU = 0.9999, 2000.0
EMA_RUN_FRACTION = 0.2  # the EMA's horizon, as a fraction of the run's optimizer updates (capped at YOLOv5's)


def ema_schedule(total_updates: int, decay: float | None = None, tau: float | None = None) -> tuple[float, float]:
    """(decay, tau) of the weights' EMA for a run of ``total_updates`` optimizer updates.

    YOLOv5 uses decay 0.9999 (an averaging horizon of 1 / (1 - decay) = 10,000 updates) ramped in with tau
    2000 updates, sized for COCO (300 epochs of ~1,850 updates). On a run of a few hundred updates the ramp
    never finishes (decay 0.15 after 320 updates), so the "EMA" is the last step's weights, and a bad last
    step is what gets validated and saved. The rule: horizon = 20% of the run's updates, capped at YOLOv5's
    10,000 (so runs of 50,000 updates or more, COCO's included, get exactly 0.9999 / 2000), tau = horizon / 5
    (YOLOv5's 2000 / 10,000). On the built-in dataset (32 updates per epoch) a 20-epoch run averages over four
    epochs (decay 0.992, tau 25.6), a 10-epoch run over two (0.984, 12.8). The fraction was measured
    (bench/ema_horizon.py, bench/README.md): 5% left the decoupled head drifting 0.06 below its best at the end
    of a 20-epoch run, 20% made its curve monotonic and cost the coupled head nothing against YOLOv5's EMA at 10
    and 20 epochs. ``decay``/``tau`` given by the user win (``--ema-decay 0.9999 --ema-tau 2000``: YOLOv5's exact
    behaviour).
    """
    yolov5_horizon = 1.0 / (1.0 - YOLOV5_EMA_DECAY)
    horizon = min(yolov5_horizon, max(EMA_RUN_FRACTION * total_updates, 1.0))
    auto_decay = 1.0 - 1.0 / horizon if horizon > 1 else 0.0
    auto_tau = max(horizon * YOLOV5_EMA_TAU / yolov5_horizon, 1e-6)
    return (auto_decay if decay is None else float(decay)), (auto_tau if tau is None else float(tau))


class ModelEMA:
    """Exponential moving average of a model's float state, decay ramped by 1 - exp(-updates / tau).
    ``ema_schedule`` sizes decay and tau to a run."""

    def __init__(self, model: nn.Module, decay: float = YOLOV5_EMA_DECAY, tau: float = YOLOV5_EMA_TAU,
                 updates: int = 0):
        self.ema = deepcopy(model).eval()
        self.updates, self.decay, self.tau = updates, decay, tau
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        msd = model.state_dict()
        keys = [k for k, v in self.ema.state_dict().items() if v.dtype.is_floating_point]
        ema, src = self.ema.state_dict(), [msd[k].detach() for k in keys]
        # one fused call per dtype/device group instead of two small ops per tensor (~350 for yolov5n)
        torch._foreach_lerp_([ema[k] for k in keys], src, 1 - d)


def plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``model``'s state_dict in contiguous memory (a channels_last model's conv weights included), so a
    checkpoint reads the same whatever memory format the model trained in."""
    return {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def precise_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Re-estimate every BatchNorm's running statistics as the plain average over ``batches`` (float image
    tensors on the model's device), as detectron2's PreciseBN hook does, with torch's
    ``swa_utils.update_bn``. The running statistics of a model trained with BN momentum 0.03 trail its
    weights by ~33 batches; a model validated right after a fast change of its weights is then judged with
    stale statistics. Returns the number of batches used."""
    count = 0

    def counted():
        nonlocal count
        for x in batches:
            count += 1
            yield x

    torch.optim.swa_utils.update_bn(counted(), model)
    return count


def smart_optimizer(model: nn.Module, name: str = "SGD", lr: float = 0.001, momentum: float = 0.9,
                    decay: float = 1e-5) -> torch.optim.Optimizer:
    """Three parameter groups as YOLOv5: [0] biases (no decay), [1] weights (decay), [2] norm weights (no decay)."""
    biases, weights, norm_weights = [], [], []
    norm_types = tuple(v for k, v in nn.__dict__.items() if "Norm" in k and isinstance(v, type))
    for module in model.modules():
        for p_name, p in module.named_parameters(recurse=False):
            if p_name == "bias":
                biases.append(p)
            elif isinstance(module, norm_types):
                norm_weights.append(p)
            else:
                weights.append(p)
    if name == "SGD":
        opt = torch.optim.SGD(biases, lr=lr, momentum=momentum, nesterov=True)
    elif name == "Adam":
        opt = torch.optim.Adam(biases, lr=lr, betas=(momentum, 0.999))
    elif name == "AdamW":
        opt = torch.optim.AdamW(biases, lr=lr, betas=(momentum, 0.999), weight_decay=0.0)
    else:
        raise ValueError(f"optimizer {name!r} not supported; use SGD, Adam or AdamW")
    opt.add_param_group({"params": weights, "weight_decay": decay})
    opt.add_param_group({"params": norm_weights, "weight_decay": 0.0})
    LOGGER.info(f"optimizer: {name}(lr={lr}) with parameter groups {len(norm_weights)} weight(decay=0.0), "
                f"{len(weights)} weight(decay={decay}), {len(biases)} bias")
    return opt
