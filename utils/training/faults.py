"""What a stopped run tells its user in one line: preempted (a signal) or out of disk space; each names what is
kept and how to continue (train.py's main prints them)."""
from __future__ import annotations

from pathlib import Path

from utils.io.checkpoint import DiskFull, load_checkpoint
from utils.training.signals import Interrupted


def disk_full_message(save_dir: Path, e: OSError) -> str:
    """One line: what could not be written and why, what is kept, how to continue."""
    last = save_dir / "weights" / "last.pt"
    kept = f"{last} (epoch {int(load_checkpoint(last).get('epoch', -1))}) is intact" if last.is_file() else \
        "no checkpoint was written yet"
    what = str(e) if isinstance(e, DiskFull) else f"cannot write {e.filename or 'a file'}: {e.strerror}"
    return (f"error: {what}; {kept}; free space, then resume with: python train.py --resume {last}"
            if last.is_file() else f"error: {what}; {kept}; free space and start the run again")


def stopped_message(save_dir: Path, e: Interrupted) -> str:
    """What a signal left: the epoch last.pt holds and the resume command, or that no epoch finished."""
    last = save_dir / "weights" / "last.pt"
    epoch = int(load_checkpoint(last).get("epoch", -1)) if last.is_file() else None
    if epoch is None:
        return f"stopped by {e}: no epoch finished, nothing to resume in {save_dir}; start the run again"
    if epoch < 0:
        return f"stopped by {e} after training finished: {last} is the final checkpoint"
    return (f"stopped by {e}: the epoch in flight is abandoned; {last} holds epoch {epoch} (atomically written); "
            f"resume with: python train.py --resume {last}")
