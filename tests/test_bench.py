"""Every bench/ script imports and answers --help, and the EMA-horizon bench (a training hook) runs a tiny
training: a bench script can no longer rot unseen (bench/README.md lists them)."""
import json
import runpy
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py"))


def run_script(path: Path, argv: list[str], monkeypatch) -> int:
    monkeypatch.setattr(sys, "argv", [str(path), *argv])
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as e:
        return int(e.code or 0)
    return 0


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bench_script_answers_help(script, monkeypatch, capsys):
    assert run_script(script, ["--help"], monkeypatch) == 0
    assert "usage:" in capsys.readouterr().out


def test_ema_horizon_runs_a_tiny_training(tiny_data, tmp_path, monkeypatch, capsys):
    argv = ["--horizons", "0", "yolov5", "--cfg", "yolov5n.yaml", "--data", str(tiny_data), "--epochs", "2",
            "--imgsz", "64", "--batch-size", "8", "--workers", "0", "--noautoanchor", "--noplots",
            "--project", str(tmp_path), "--name", "exp"]
    assert run_script(BENCH / "ema_horizon.py", argv, monkeypatch) == 0
    curves = json.loads((tmp_path / "exp" / "ema_horizon.json").read_text())
    assert set(curves) == {"0", "yolov5"} and all(len(c) == 2 for c in curves.values())
    assert "| horizon |" in capsys.readouterr().out
