"""Training hooks (utils/training/hooks.py): the events a caller's hook sees, in order, and what it may change."""
import pytest
from toy_hook import EventLog

import train
from utils.training.hooks import Hook, default_hooks, ordered


def opt_for(data, tmp_path, *extra):
    return train.resolve_opt(train.parse_opt([
        "--cfg", "yolov5n.yaml", "--data", str(data), "--imgsz", "64", "--batch-size", "8", "--workers", "0",
        "--noautoanchor", "--noplots", "--project", str(tmp_path), "--name", "exp", *extra]))


def test_a_hook_sees_every_event_in_order_and_can_stop_the_run(tiny_data, tmp_path):
    opt = opt_for(tiny_data, tmp_path, "--epochs", "3", "--nosave")
    early, late = EventLog(priority=25), EventLog(stop_after=0)  # before and after Validation (30)
    train.run(opt, hooks=[late, early])
    ev = late.events
    assert ev[0] == ("before_train",) and ev[-1] == ("after_train", True)  # --nosave: a stopping epoch is saved
    assert [e[0] for e in ev[1:-1]] == ["before_epoch"] + ["before_step", "after_step"] * 2 + ["after_epoch"]
    assert [e[1] for e in ev if e[0] == "before_step"] == [0, 1]  # 16 images, batch 8
    _, epoch, validated, fit, timed = ev[-2]
    assert epoch == 0 and validated and fit is not None and timed  # sees the validated epoch
    assert early.events[-2][2:4] == (False, None)  # priority 25 runs before the validation
    rows = (tmp_path / "exp" / "results.csv").read_text().splitlines()
    assert len(rows) == 2  # header and epoch 0: the hook stopped the run
    assert (tmp_path / "exp" / "hyp.yaml").is_file() and (tmp_path / "exp" / "opt.yaml").is_file()


def test_hooks_run_by_priority_and_must_be_hooks(tiny_data, tmp_path):
    class Late(Hook):
        priority = 99

    class First(Hook):
        priority = 0

    opt = opt_for(tiny_data, tmp_path, "--epochs", "1")
    hooks = ordered([*default_hooks(opt), Late(), First()])
    assert isinstance(hooks[0], First) and isinstance(hooks[-1], Late)
    assert [type(h).__name__ for h in hooks[1:-1]] == ["EMAUpdate", "PreciseBN", "Validation", "BestFitness",
                                                       "ResultsCSV", "TensorBoard", "Checkpointer"]
    with pytest.raises(TypeError, match="utils.training.hooks.Hook"):
        ordered([object()])
