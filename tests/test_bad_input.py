"""Inputs that used to crash with a traceback (or train silently on a wrong value) are one-line errors naming the
input and what is allowed: malformed YAML (hyp, data, model), out-of-range train.py flags, files that are not
checkpoints given to train/val/detect/export, and pickles that ask for code. All fail before any training."""
from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import pytest
import torch

import detect
import export
import train
import val
from utils.io.checkpoint import load_checkpoint
from utils.io.files import yaml_load

ROOT = Path(__file__).resolve().parents[1]


def _error_line(caplog) -> str:
    """The one ERROR record the entry point logged; it must be a single line."""
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "\n" not in errors[0] and "Traceback" not in caplog.text
    return errors[0]


def _train(tiny_data: Path, tmp_path: Path, *extra: str) -> int:
    return train.main(["--cfg", "yolov5n.yaml", "--data", str(tiny_data), "--epochs", "1", "--imgsz", "64",
                       "--batch-size", "2", "--workers", "0", "--project", str(tmp_path), "--name", "exp", *extra])


# ------------------------------------------------------------------------------------------------ YAML
BROKEN_YAML = "lr0: 0.01\nlrf: [0.1, 0.2\nmomentum: 0.937\n"  # unclosed flow sequence


def test_malformed_yaml_names_file_line_and_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN_YAML)
    with pytest.raises(ValueError) as e:
        yaml_load(bad)
    assert str(e.value) == (f"{bad}:3:9: invalid YAML: expected ',' or ']', but got ':' "
                            f"(while parsing a flow sequence started on line 2)")
    bad.write_text("a: 1\n  b: 2\n")
    with pytest.raises(ValueError, match=r"bad.yaml:2:4: invalid YAML: mapping values are not allowed here$"):
        yaml_load(bad)
    bad.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(ValueError, match="bad.yaml: not a UTF-8 text file"):
        yaml_load(bad)


@pytest.mark.parametrize("flag", ["--hyp", "--data", "--cfg"])
def test_train_malformed_yaml_is_one_line(flag, tiny_data, tmp_path, caplog):
    bad = tmp_path / "broken.yaml"
    bad.write_text(BROKEN_YAML)
    assert _train(tiny_data, tmp_path, flag, str(bad)) == 2  # the last --flag given wins
    assert _error_line(caplog) == (f"error: {bad}:3:9: invalid YAML: expected ',' or ']', but got ':' "
                                   f"(while parsing a flow sequence started on line 2)")


# ------------------------------------------------------------------------------------------------ train.py flags
@pytest.mark.parametrize("flag, value, rule", [
    ("--batch-size", "0", ">= 1 (total batch size)"),
    ("--batch-size", "-1", ">= 1 (total batch size)"),
    ("--imgsz", "-5", ">= 1 (image size in pixels, rounded up to a multiple of the model's max stride)"),
    ("--imgsz", "0", ">= 1 (image size in pixels, rounded up to a multiple of the model's max stride)"),
    ("--epochs", "0", ">= 1 (epochs to train)"),
    ("--epochs", "-3", ">= 1 (epochs to train)"),
    ("--workers", "-1", ">= 0 (max dataloader workers, 0 loads in the main process)"),
])
def test_train_flag_out_of_range_is_one_line(flag, value, rule, tiny_data, tmp_path, caplog):
    assert _train(tiny_data, tmp_path, flag, value) == 2
    assert _error_line(caplog) == f"error: {flag} {value}: must be an integer {rule}"
    assert not (tmp_path / "exp").exists()  # rejected before the run folder is made


# ------------------------------------------------------------------------------------------------ checkpoints
def _not_checkpoints(folder: Path) -> dict[str, Path]:
    good = folder / "good.pt"
    torch.save({"model": {"w": torch.zeros(3)}}, good)
    files = {"empty": b"", "truncated": good.read_bytes()[: good.stat().st_size // 2], "text": b"hello world\n",
             "junk": bytes(range(200, 256)) * 4, "plain_pickle": pickle.dumps({"model": 1})}
    out = {}
    for name, data in files.items():
        (folder / f"{name}.pt").write_bytes(data)
        out[name] = folder / f"{name}.pt"
    return out


EXPECTED = "expected a .pt written by train.py (torch.save of a dict of state_dicts) or a YOLOv5 v7.0 .pt"


@pytest.mark.parametrize("kind, why", [
    ("empty", "the file is empty"),
    ("truncated", "torch.load: RuntimeError: PytorchStreamReader failed reading zip archive: failed finding "
                  "central directory"),
    ("text", "torch.load: KeyError: 101"),
    ("junk", "torch.load: UnpicklingError: invalid load key, '\\xc8'."),
    ("plain_pickle", "torch.load: RuntimeError: Invalid magic number; corrupt file?"),
])
def test_not_a_checkpoint_message(kind, why, tmp_path):
    path = _not_checkpoints(tmp_path)[kind]
    with pytest.raises(ValueError) as e:
        load_checkpoint(path)
    assert str(e.value) == f"{path} is not a checkpoint ({why}); {EXPECTED}"


@pytest.mark.parametrize("tool", ["train", "val", "detect", "export"])
def test_every_entry_point_says_not_a_checkpoint(tool, tiny_data, tmp_path, caplog):
    files = _not_checkpoints(tmp_path)
    for kind in ("empty", "truncated", "junk"):
        caplog.clear()
        w = str(files[kind])
        if tool == "train":
            rc = _train(tiny_data, tmp_path, "--weights", w)
        elif tool == "val":
            rc = val.main(["--weights", w, "--data", str(tiny_data), "--project", str(tmp_path)])
        elif tool == "detect":
            rc = detect.main(["--weights", w, "--source", str(tmp_path / "good.pt"), "--project", str(tmp_path)])
        else:
            rc = export.main(["--weights", w])
        assert rc == 2, (tool, kind)
        line = _error_line(caplog)
        assert line.startswith(f"error: {w} is not a checkpoint (") and line.endswith(EXPECTED), line


class _System:
    """Unpickles as a call of os.system."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


def test_pickle_asking_for_os_system_is_refused_and_named(tiny_data, tmp_path, caplog):
    path = tmp_path / "evil.pt"
    torch.save({"model": _System(tmp_path / "pwned"), "epoch": 3}, path)
    with pytest.raises(ValueError) as e:
        load_checkpoint(path)
    system = f"{os.system.__module__}.system"  # posix.system (nt.system on Windows)
    assert not (tmp_path / "pwned").exists()
    assert str(e.value) == (f"{path} is not a checkpoint ('model'/'ema' holds a pickled {system}, neither a "
                            f"state_dict readable with weights_only=True nor a pickled YOLOv5 model; refused: it asks "
                            f"for {system}, outside the allow-list (nothing was run)); {EXPECTED}")
    assert val.main(["--weights", str(path), "--data", str(tiny_data), "--project", str(tmp_path)]) == 2
    assert system in _error_line(caplog) and not (tmp_path / "pwned").exists()
