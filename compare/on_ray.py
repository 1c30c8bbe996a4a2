"""``compare.py --ray [ADDRESS]``: the runs of a comparison as Ray tasks (https://docs.ray.io), on a local Ray
instance (no address) or a running cluster (``ray://host:10001`` or ``auto``).

Each run is one task asking for 1 CPU (1 torch thread, no loader workers: train.py's CPU rule on that share), or
1 GPU and 1 CPU when the recipe's --device is CUDA (Ray picks the GPU and sets CUDA_VISIBLE_DEVICES). A task is
the same ``train_run`` as the local pool's, its output in the run's train.log, so run folders, resume (a
re-run skips finished runs and resumes interrupted ones) and the report are the same; on a cluster the exp folder
and the dataset must be on a filesystem every node sees under the same path. Ray is optional (``pip install
ray``); the local ``--jobs`` pool stays the default.
"""
from __future__ import annotations

from pathlib import Path

from compare.plan import ROOT, run_dir
from compare.runner import VERB, RunsFailed, _last_line, _train_logged, done_line
from utils import LOGGER


def _ray():
    try:
        import ray
    except ImportError as e:
        raise ValueError("--ray needs the optional package 'ray', which is not installed: pip install ray") from e
    return ray


def _task(exp: Path, cfg: str, seed: int, train_args: list[str], state: str, budget_min: float | None) -> None:
    _train_logged(exp, cfg, seed, train_args, state, 1, None, budget_min, own_signals=False)


def train_on_ray(exp: Path, plan: dict, todo: list[tuple], address: str) -> None:
    """Train ``todo`` ((tag, cfg, seed, state) per run) as Ray tasks; failed runs are reported with their logs once
    the others are done; Ctrl-C cancels the tasks (their last.pt stays resumable)."""
    ray = _ray()
    cuda = str(plan["recipe"].get("device", "")).strip().lower() not in ("", "cpu")
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}})
    resources = ray.cluster_resources()
    LOGGER.info(f"--ray: {len(todo)} runs as Ray tasks on {address} ({resources.get('CPU', 0):g} CPUs, "
                f"{resources.get('GPU', 0):g} GPUs), one {'GPU' if cuda else 'CPU'} each; each run's output goes to its "
                f"train.log")
    task = ray.remote(num_cpus=1, num_gpus=1 if cuda else 0, max_retries=0)(_task)
    pending = {}
    for tag, cfg, seed, state in todo:
        LOGGER.info(f"{tag}: {VERB[state]} -> {run_dir(exp, cfg, seed)} (Ray task)")
        ref = task.remote(exp, cfg, seed, plan["train_args"], state, plan.get("budget_min"))
        pending[ref] = (tag, run_dir(exp, cfg, seed))
    failed = []
    try:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            tag, run = pending.pop(ref)
            try:
                ray.get(ref)
                LOGGER.info(done_line(tag, run))
            except ray.exceptions.RayError as e:
                failed.append(f"{tag}: {type(e).__name__}, {_last_line(run / 'train.log')} (see {run / 'train.log'})")
                LOGGER.error(f"failed: {failed[-1]}")
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    if failed:
        raise RunsFailed(f"{len(failed)} of {len(todo)} runs failed:\n" + "\n".join(failed))
