"""Every bench/ script imports and answers --help, and the EMA-horizon bench (a training hook) runs a tiny
training: a bench script can no longer rot unseen (bench/README.md lists them)."""
import json
import os
import runpy
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
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


def test_gpu_check_commands_exist_and_it_refuses_a_machine_without_cuda(tmp_path):
    """bench/gpu_check.sh on the CPU: its --dry-run commands name scripts and flags that exist (checked against each
    script's own parser), a bad argument is one line, and a real run without CUDA stops at once saying so."""
    import subprocess

    from test_docs import flags_in, script_flags
    out = subprocess.run(["bash", "bench/gpu_check.sh", "--dry-run", "--yolov5", "Y", "--python", "P"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == 8
    for line in out:
        tokens = line.split()
        script = next(t for t in tokens if t.endswith(".py"))
        args = tokens[tokens.index(script) + 1:]
        missing = [f for f in flags_in(args) if f not in script_flags(script)]
        assert not missing, f"{script} has no {missing}: {line}"
    bad = subprocess.run(["bash", "bench/gpu_check.sh", "--nope"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument '--nope'" in bad.stderr
    if not torch.cuda.is_available():
        env = {**os.environ, "OUT": str(tmp_path / "gpu"), "PYTHON": sys.executable}
        cpu = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True, env=env)
        assert cpu.returncode == 2 and "no CUDA device" in cpu.stderr


def test_scaling_quick_run_fits_every_exponent(tmp_path, monkeypatch, capsys):
    """bench/scaling.py --quick: every point measured (training steps in forked children with their peak memory,
    assigners, generated datasets), an exponent per family x axis, assigner and dataset quantity in the JSON, the
    plot written; costs that must grow with the work do."""
    out = tmp_path / "scaling.json"
    argv = ["--quick", "--cfg", "yolov5n.yaml", "--threads", "1", "--json", str(out), "--workdir", str(tmp_path)]
    assert run_script(BENCH / "scaling.py", argv, monkeypatch) == 0
    res = json.loads(out.read_text())
    assert all("error" not in r and r["peak_mb"] >= 0 for r in res["train"]), [r for r in res["train"] if "error" in r]
    per_axis = res["exponents"]["train"]["yolov5n.yaml"]
    assert set(per_axis) == {"imgsz", "objects", "nc", "batch"}
    assert all(isinstance(e[k]["fit"], float) for e in per_axis.values() for k in ("time", "memory"))
    assigner = res["exponents"]["assigner"]
    assert {"box_or_center", "dsl"} <= set(assigner)
    assert all(isinstance(e[k]["fit"], float) for e in assigner.values() for k in ("objects", "priors"))
    dataset = res["exponents"]["dataset"]
    assert set(dataset) == {"cold_cpu_s", "warm_cpu_s", "cache_bytes", "epoch_cpu_s"}
    assert 0.5 < dataset["cache_bytes"]["fit"] < 1.1  # the cache holds every label: it grows with the images
    assert set(res["exponents"]["conv"]) == {"fwd", "bwd"}
    assert (tmp_path / "scaling.png").stat().st_size > 10_000
    assert "exponents of training-step time" in capsys.readouterr().out
