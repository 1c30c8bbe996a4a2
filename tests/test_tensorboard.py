"""TensorBoard logging (optional dependency): a run's folder gets the results.csv columns as scalars, the val
prediction plots as images and the model graph; without the package the logger is off and says so in one line."""
import logging
import sys

import pytest

from tests.test_train import run_py, train_args
from utils.io.tensorboard import TensorBoardLogger


def test_tensorboard_logs_scalars_images_and_graph(tiny_data, tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoard logging is optional: pip install tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = run_py("train.py", *train_args(tiny_data, tmp_path, "yolov5n.yaml", 1, "--noautoanchor"))
    assert out.returncode == 0, out.stderr[-3000:]
    events = list((tmp_path / "exp").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(events[0]), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95",
            "val/box_loss", "x/lr0", "x/lr1", "x/lr2"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("train/box_loss")] == [0]
    assert "val_batch0_pred" in tags["images"]
    assert tags["graph"], "the model graph was not logged"


def test_without_tensorboard_the_logger_is_off(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as without the package
    with caplog.at_level(logging.INFO):
        tb = TensorBoardLogger(tmp_path)
    assert tb.writer is None and "pip install tensorboard" in caplog.text
    tb.scalars({"x": 1.0}, 0)
    tb.close()
    assert not list(tmp_path.iterdir())
