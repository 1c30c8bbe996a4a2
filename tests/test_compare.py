"""compare.py end to end on a tiny generated dataset (report rows, pairing by seed, skip/resume on re-run), its
run-state and option checks, and utils/stats.py (t-interval against scipy, verdicts)."""
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import stats as sps

import compare
from compare import plots
from compare.statistics.accuracy import plot_curves
from utils.evaluation.stats import (
    NO_INTERVAL,
    mean_std,
    paired_difference,
    t_interval,
    verdict,
)
from utils.io.results import read_results

ROOT = Path(__file__).resolve().parents[1]
CFGS = ["yolov5n.yaml", "yolov5n-decoupled.yaml"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def compare_args(data: Path, project: Path, *extra: str, cfgs=CFGS, epochs: int = 1, seeds: int = 2) -> list[str]:
    return ["--cfg", *cfgs, "--data", str(data), "--epochs", str(epochs), "--seeds", str(seeds), "--imgsz", "64",
            "--batch-size", "4", "--workers", "0", "--noautoanchor", "--noplots", "--project", str(project),
            "--latency-runs", "3", *extra]


def run_compare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "compare.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=ENV)


def first_batch(run: Path, epoch: int = 0) -> str:
    return json.loads((run / "compare.json").read_text())["epochs"][str(epoch)]["first_batch_sha1"]


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def compared(tiny_data, tmp_path_factory):
    """Two cfgs x 2 seeds x 1 epoch, 2 runs at a time in worker processes, then the same command again with
    --exist-ok (the in-process path, which finds nothing left to train)."""
    project = tmp_path_factory.mktemp("compare")
    first = run_compare(*compare_args(tiny_data, project, "--jobs", "2"))
    assert first.returncode == 0, first.stderr[-3000:]
    exp = project / "exp"
    mtimes = {p: p.stat().st_mtime_ns for p in exp.glob("*/seed*/weights/best.pt")}
    again = run_compare(*compare_args(tiny_data, project, "--exist-ok"))
    return exp, first, again, mtimes


def test_layout_and_report_rows(compared):
    exp, first, _, _ = compared
    for cfg in CFGS:
        for s in (0, 1):
            run = exp / Path(cfg).stem / f"seed{s}"
            assert (run / "weights" / "best.pt").is_file() and (run / "results.csv").is_file()
            assert yaml.safe_load((run / "opt.yaml").read_text())["seed"] == s
            assert "Starting training" in (run / "train.log").read_text(encoding="utf-8")  # the worker's output
    with open(exp / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["cfg"] for r in rows] == CFGS
    assert [r["head"] for r in rows] == ["Detect", "DetectDcoupleHead"]
    for r in rows:
        assert r["seeds"] == "2" and r["imgsz"] == "64"
        assert int(r["params"]) > 1e6 and float(r["gflops"]) > 0 and float(r["cpu_ms"]) > 0
        assert float(r["train_s_per_epoch"]) > 0
        assert 0 <= float(r["final_map_mean"]) <= float(r["final_map50_mean"]) + 1e-9 <= 1 + 1e-9
    assert int(rows[1]["params"]) > int(rows[0]["params"])  # the decoupled head is the bigger one
    assert rows[0]["verdict"] == "baseline" and rows[0]["d_map_mean"] == ""
    assert rows[1]["verdict"] in ("better", "worse", "within noise") and rows[1]["d_map_seeds"] == "0 1"
    lo, mean, hi = (float(rows[1][k]) for k in ("d_map_lo", "d_map_mean", "d_map_hi"))
    assert lo <= mean <= hi
    md = (exp / "report.md").read_text(encoding="utf-8")
    assert "| yolov5n.yaml | Detect |" in md and "| yolov5n-decoupled.yaml | DetectDcoupleHead |" in md
    assert f"**{rows[1]['verdict']}**" in md and "How to read" in md
    for png in ("map_vs_epoch.png", "loss_curves.png", "speed_accuracy.png"):
        assert (exp / png).stat().st_size > 1000
    log = first.stdout + first.stderr
    assert "yolov5n-decoupled seed 1: training" in log and "2 at a time" in log
    assert log.count(": done, mAP50 ") == 4 and "Starting training" not in log


def test_ctrl_c_stops_worker_runs_and_starts_no_more(tiny_data, tmp_path):
    args = compare_args(tiny_data, tmp_path, "--jobs", "2", epochs=50)
    proc = subprocess.Popen([sys.executable, str(ROOT / "compare.py"), *args], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # not inherited-ignored
    logs = [tmp_path / "exp" / Path(cfg).stem / "seed0" / "train.log" for cfg in CFGS]
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not all(
            f.is_file() and "Starting training" in f.read_text(encoding="utf-8") for f in logs):
        time.sleep(0.1)
    assert proc.poll() is None, "compare.py ended before Ctrl-C"
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole process group
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "compare.py --resume" in out
    assert not list(tmp_path.glob("exp/*/seed1")), "a queued run started after Ctrl-C"


def test_failed_worker_runs_are_reported(tiny_data, tmp_path):
    out = run_compare(*compare_args(tiny_data, tmp_path, "--jobs", "2", cfgs=["missing-a.yaml", "missing-b.yaml"],
                                    seeds=1))
    assert out.returncode == 1
    log = out.stdout + out.stderr
    assert "2 of 2 runs failed" in log and "missing-a" in log and "Traceback" not in log
    assert "Traceback" in (tmp_path / "exp" / "missing-a" / "seed0" / "train.log").read_text(encoding="utf-8")


def test_same_seed_same_data_across_arms(compared):
    exp = compared[0]
    digests = {(cfg, s): first_batch(exp / Path(cfg).stem / f"seed{s}") for cfg in CFGS for s in (0, 1)}
    assert all(digests.values())
    for s in (0, 1):
        assert digests[(CFGS[0], s)] == digests[(CFGS[1], s)], f"seed {s}: arms saw different first batches"
    assert digests[(CFGS[0], 0)] != digests[(CFGS[0], 1)], "seeds 0 and 1 gave the same data order"


def test_rerun_skips_finished_runs(compared):
    exp, _, again, mtimes = compared
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert log.count("skipping finished run") == 4 and "Starting training" not in log
    assert len(mtimes) == 4 and all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    assert (exp / "report.md").is_file()


def test_killed_run_resumes_from_last_pt(tiny_data, tmp_path):
    args = compare_args(tiny_data, tmp_path, cfgs=["yolov5n.yaml"], epochs=3, seeds=1)
    proc = subprocess.Popen([sys.executable, str(ROOT / "compare.py"), *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = tmp_path / "exp" / "yolov5n" / "seed0"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (run / "weights" / "last.pt").exists():
        time.sleep(0.05)
    assert proc.poll() is None, "compare.py ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert compare.run_state(run, 3) == "interrupted"
    out = run_compare(*args, "--exist-ok")
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "resuming interrupted run" in log and "Resuming training" in log
    assert [int(r["epoch"]) for r in read_results(run / "results.csv")] == [0, 1, 2]
    assert compare.run_state(run, 3) == "finished"
    assert sorted(json.loads((run / "compare.json").read_text())["epochs"]) == ["0", "1", "2"]


# ---------------------------------------------------------------------------------------------- pieces
def write_results(run: Path, epochs: int) -> None:
    run.mkdir(parents=True, exist_ok=True)
    head = ["epoch", "train/box_loss", "metrics/precision", "metrics/recall", "metrics/mAP_0.5",
            "metrics/mAP_0.5:0.95", "val/box_loss", "x/lr0"]
    lines = [",".join("%20s" % h for h in head)] + [",".join(["%20i" % e] + ["%20.5g" % 0.1] * 7)
                                                   for e in range(epochs)]
    (run / "results.csv").write_text("\n".join(lines) + "\n")


def test_run_state(tmp_path):
    import torch

    run = tmp_path / "run"
    assert compare.run_state(run, 2) == "new"
    write_results(run, 1)
    assert compare.run_state(run, 2) == "new"  # rows but no checkpoint: killed before the first save
    (run / "weights").mkdir()
    torch.save({"model": {}, "epoch": 0}, run / "weights" / "last.pt")
    assert compare.run_state(run, 2) == "interrupted"
    torch.save({"model": {}, "epoch": -1}, run / "weights" / "best.pt")
    assert compare.run_state(run, 2) == "interrupted"  # best.pt but an epoch missing
    write_results(run, 2)
    assert compare.run_state(run, 2) == "finished"
    (run / "results.csv").unlink()
    torch.save({"model": {}, "epoch": -1}, run / "weights" / "last.pt")
    assert compare.run_state(run, 2) == "finished"  # early stop: last.pt stripped


def test_options_compare_owns_are_refused(tmp_path, caplog):
    opt, rest = compare.parse_opt(["--cfg", "a.yaml", "b.yaml", "--epochs", "3", "--rect", "--seeds", "2"])
    assert opt.cfg == ["a.yaml", "b.yaml"] and opt.seeds == 2 and rest == ["--epochs", "3", "--rect"]
    recipe = compare.train_recipe(rest)
    assert recipe["epochs"] == 3 and recipe["rect"] is True and "seed" not in recipe and "cfg" not in recipe
    for bad in (["--seed", "4"], ["--cfg", "x.yaml"]):
        with pytest.raises(ValueError, match="compare.py sets"):
            compare.train_recipe(bad)
    assert compare.main(["--cfg", "yolov5n.yaml", "--seed", "3", "--project", str(tmp_path)]) == 2
    assert "use --seeds N" in caplog.text and not list(tmp_path.iterdir())


def test_changed_recipe_in_reused_folder_is_an_error(tmp_path):
    opt, rest = compare.parse_opt(["--cfg", "a.yaml", "--project", str(tmp_path), "--epochs", "2"])
    exp, plan = compare.setup_experiment(opt, rest)
    assert exp == tmp_path / "exp" and plan["recipe"]["epochs"] == 2
    opt, rest = compare.parse_opt(["--cfg", "a.yaml", "--project", str(tmp_path), "--epochs", "3", "--exist-ok"])
    with pytest.raises(ValueError, match="epochs: 2 then, 3 now"):
        compare.setup_experiment(opt, rest)
    opt, rest = compare.parse_opt(["--cfg", "a.yaml", "--project", str(tmp_path), "--epochs", "3"])
    assert compare.setup_experiment(opt, rest)[0] == tmp_path / "exp2"  # no --exist-ok: a new folder


def fake_run(run: Path, maps: list[float], ckpt: dict) -> None:
    """A finished run: results.csv with mAP50-95 ``maps`` per epoch (mAP50 = 2x), compare.json, best.pt."""
    from utils.io.checkpoint import save_checkpoint

    run.mkdir(parents=True)
    head = ["epoch", "train/box_loss", "train/cls_loss", "metrics/precision", "metrics/recall", "metrics/mAP_0.5",
            "metrics/mAP_0.5:0.95", "val/box_loss", "val/cls_loss", "x/lr0"]
    rows = [[e, 1 - m, 0.5, 0.5, 0.5, 2 * m, m, 1 - m, 0.4, 0.01] for e, m in enumerate(maps)]
    (run / "results.csv").write_text("\n".join([",".join(head)] + [",".join(map(str, r)) for r in rows]) + "\n")
    record = {"imgsz": 64, "epochs": {str(e): {"train_s": 2.0 + e, "val_s": 0.1} for e in range(len(maps))}}
    (run / "compare.json").write_text(json.dumps(record))
    save_checkpoint(ckpt, run / "weights" / "best.pt")


def test_report_from_finished_runs(tmp_path):
    from models.yolo import DetectionModel

    exp, cfgs = tmp_path / "exp", ["yolov5n.yaml", "yolov5n-decoupled.yaml"]
    finals = {cfgs[0]: [0.30, 0.32, 0.34], cfgs[1]: [0.33, 0.34, 0.37]}  # B beats A on every seed by 0.02-0.03
    for cfg in cfgs:
        m = DetectionModel(cfg, nc=2)
        ckpt = {"model": m.state_dict(), "ema": None, "yaml": m.yaml, "names": {0: "a", 1: "b"}, "epoch": -1}
        for s, final in enumerate(finals[cfg]):
            fake_run(compare.run_dir(exp, cfg, s), [0.1, 0.5, final], ckpt)  # best epoch 1, final epoch 2
    plan = {"cfg": cfgs, "seeds": 3, "train_args": ["--epochs", "3"], "recipe": compare.train_recipe(["--epochs", "3"])}
    arms = compare.report(exp, plan, latency_runs=0).arms
    assert [a.head for a in arms] == ["Detect", "DetectDcoupleHead"]
    with open(exp / "report.csv") as f:
        a, b = list(csv.DictReader(f))
    assert float(a["final_map_mean"]) == pytest.approx(0.32) and float(a["final_map_std"]) == pytest.approx(0.02)
    assert float(a["best_map_mean"]) == pytest.approx(0.5) and float(a["best_map50_mean"]) == pytest.approx(1.0)
    assert float(a["train_s_per_epoch"]) == pytest.approx(3.0) and a["cpu_ms"] == ""
    assert float(b["d_map_mean"]) == pytest.approx(np.mean([0.03, 0.02, 0.03]))
    assert b["verdict"] == "better" and 0 < float(b["d_map_lo"]) < float(b["d_map_hi"])
    md = (exp / "report.md").read_text(encoding="utf-8")
    assert "0.320 ± 0.020" in md and "seed 1: +0.0200" in md and "**better**" in md
    for png in ("map_vs_epoch.png", "loss_curves.png", "speed_accuracy.png"):
        assert (exp / png).stat().st_size > 1000


def test_runs_whose_weights_were_deleted_still_count(tiny_data, tmp_path):
    """docs/comparing.md, "Keeping a comparison small": a finished run's weights/ folder deleted leaves it finished
    (results.csv and compare.json are what the report and --decide read), params and GFLOPs then come from the cfg
    (the same count as from best.pt) and latency is left out; a run with an epoch missing is not finished."""
    import shutil

    from models.yolo import DetectionModel

    exp, cfgs = tmp_path / "exp", ["yolov5n.yaml", "yolov5n-decoupled.yaml"]
    for cfg in cfgs:
        m = DetectionModel(cfg, nc=8)  # tiny_data's classes
        ckpt = {"model": m.state_dict(), "ema": None, "yaml": m.yaml, "names": dict(enumerate("abcdefgh")), "epoch": -1}
        for s, final in enumerate([0.30, 0.34] if cfg == cfgs[0] else [0.33, 0.36]):
            run = compare.run_dir(exp, cfg, s)
            fake_run(run, [0.1, final], ckpt)
            (run / "opt.yaml").write_text(yaml.safe_dump({"cfg": cfg, "data": str(tiny_data), "imgsz": 64}))
    plan = {"cfg": cfgs, "seeds": 2, "train_args": ["--epochs", "2"], "recipe": compare.train_recipe(["--epochs", "2"])}
    kept = compare.report(exp, plan, latency_runs=0, n_boot=0).arms
    for w in exp.glob("*/seed*/weights"):
        shutil.rmtree(w)
    assert all(compare.run_state(r, 2) == "finished" for r in exp.glob("*/seed*"))
    assert compare.run_state(compare.run_dir(exp, cfgs[0], 0), 3) == "new"  # epoch 2 never logged
    pruned = compare.report(exp, plan, latency_runs=5, n_boot=0).arms
    assert [(a.params, a.gflops, a.head) for a in pruned] == [(a.params, a.gflops, a.head) for a in kept]
    assert all(a.weights is None for a in pruned)
    with open(exp / "report.csv") as f:
        a, b = list(csv.DictReader(f))
    assert a["cpu_ms"] == "" and float(b["d_map_mean"]) == pytest.approx(0.025)
    md = (exp / "report.md").read_text(encoding="utf-8")
    assert "no val-image bootstrap (--bootstrap 0)" in md and "images nan" not in md
    assert "TIDE, final checkpoints)\n\nnot available: no run has final detections" in md


# ---------------------------------------------------------------------------------------------- utils/stats
@pytest.mark.parametrize("values", [[0.01, 0.03], [0.2, -0.1, 0.05], [1.0, 1.5, 0.7, 1.2, 0.9, 1.1]])
@pytest.mark.parametrize("level", [0.95, 0.9])
def test_t_interval_matches_scipy(values, level):
    x = np.array(values)
    lo, hi = t_interval(values, level)
    ref = sps.t.interval(level, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    assert lo == pytest.approx(ref[0], rel=1e-9) and hi == pytest.approx(ref[1], rel=1e-9)


def test_t_interval_textbook_quantiles():
    for n, t975 in ((2, 12.706), (3, 4.303), (5, 2.776)):  # Student's t table, two-sided 95%
        x = np.arange(n, dtype=float)
        lo, hi = t_interval(x)
        assert (hi - lo) / 2 == pytest.approx(t975 * x.std(ddof=1) / math.sqrt(n), rel=1e-3)


def test_interval_excludes_zero_iff_paired_t_test_rejects():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 7))
        a = rng.normal(0.4, 0.02, n)
        b = a + rng.normal(rng.normal(0, 0.01), 0.01, n)
        pd = paired_difference(dict(enumerate(a)), dict(enumerate(b)))
        p = sps.ttest_rel(b, a).pvalue
        assert (pd.verdict != "within noise") == (p < 0.05)
        assert pd.verdict in ("within noise", "better" if pd.mean > 0 else "worse")


def test_verdicts_and_pairing():
    assert verdict((0.001, 0.02)) == "better" and verdict((-0.03, -0.01)) == "worse"
    assert verdict((-0.01, 0.02)) == "within noise" and verdict((0.0, 0.02)) == "within noise"
    assert verdict(None) == NO_INTERVAL
    pd = paired_difference({0: 0.30, 1: 0.35, 2: 0.40}, {0: 0.31, 1: 0.36, 2: 0.415, 5: 0.9})
    assert pd.seeds == (0, 1, 2) and pd.diffs == pytest.approx((0.01, 0.01, 0.015))  # seed 5 has no partner
    assert pd.verdict == "better" and "95% CI" in pd.describe() and "n=3" in pd.describe()
    one = paired_difference({0: 0.3}, {0: 0.5})
    assert one.interval is None and one.verdict == NO_INTERVAL and NO_INTERVAL in one.describe()
    assert math.isnan(one.std) and one.mean == pytest.approx(0.2)
    same = paired_difference({0: 0.3, 1: 0.4}, {0: 0.3, 1: 0.4})
    assert same.interval == (0.0, 0.0) and same.verdict == "within noise"
    with pytest.raises(ValueError, match="no seed in common"):
        paired_difference({0: 0.3}, {1: 0.3})
    assert mean_std([0.2, 0.4]) == pytest.approx((0.3, math.sqrt(0.02)))
    assert math.isnan(mean_std([0.2])[1]) and all(math.isnan(v) for v in mean_std([]))


# ---------------------------------------------------------------------------------------------- bench smoke
def test_bench_latency_modes_and_train_throughput(tmp_path):
    from bench import latency, train_throughput

    rows = latency.main(["--cfg", "yolov5n.yaml", "--imgsz", "64", "--batch", "1", "2", "--modes", *latency.MODES,
                         "--runs", "1", "--warmup", "1", "--nc", "2", "--json", str(tmp_path / "lat.json")])
    assert [(r["mode"], r["batch"]) for r in rows] == [(m, b) for m in latency.MODES for b in (1, 2)]
    assert all(r["median_ms"] > 0 for r in rows)
    assert json.loads((tmp_path / "lat.json").read_text())["rows"] == rows
    rows = train_throughput.main(["--cfg", "yolov5n-decoupled-af.yaml", "--imgsz", "64", "--batch-size", "2",
                                  "--steps", "1", "--warmup", "0", "--json", str(tmp_path / "tt.json")])
    assert rows[0]["images_per_s"] > 0 and 20 <= rows[0]["targets"] <= 80
    rows = train_throughput.main(["--cfg", "yolov5n.yaml", "--imgsz", "64", "--batch-size", "2", "--steps", "1",
                                  "--warmup", "0", "--amp", "--json", str(tmp_path / "tt_amp.json")])
    assert rows[0]["images_per_s"] > 0 and json.loads((tmp_path / "tt_amp.json").read_text())["precision"] == \
        "bfloat16 autocast"


def test_bench_ort_threads_times_every_mode(tmp_path):
    from bench import ort_threads

    rows = ort_threads.main(["--hw", "64", "96", "--threads", "2", "--rounds", "1", "--calls", "2",
                             "--json", str(tmp_path / "ort.json")])
    assert len(rows) == 5 and all(r["ms_per_frame"] > 0 for r in rows)
    assert "2 at once, one 1-thread session" in {r["mode"] for r in rows}


def test_an_arm_may_carry_its_own_train_flags():
    import compare
    assert compare.split_arm("yolov5n-decoupled.yaml --precise-bn 0 --ema-tau 2000") == (
        "yolov5n-decoupled.yaml", ["--precise-bn", "0", "--ema-tau", "2000"])
    assert compare.arm_name("models/yolov5n.yaml") == "yolov5n"
    assert compare.arm_name("yolov5n-decoupled.yaml --precise-bn 0") == "yolov5n-decoupled_precise-bn_0"
    with pytest.raises(ValueError, match="--seed"):
        compare.setup_experiment(compare.parse_opt(["--cfg", "yolov5n.yaml", "yolov5n.yaml --seed 3"])[0], [])


def test_stability_counts_collapses_after_epoch_5_and_the_lost_end():
    import numpy as np

    import compare
    m50 = np.array([0.1, 0.05, 0.3, 0.5, 0.6, 0.7, 0.8, 0.65, 0.9, 0.91])  # -0.05 at epoch 1 (early), -0.15 at 7
    r = compare.RunSummary(epochs=np.arange(10), map50=m50, map=m50 / 2, train_loss=m50, val_loss=m50,
                           final=(0.91, 0.455), best=(0.91, 0.455), train_s=1.0, first_batch={}, imgsz=64)
    assert r.drops() == 1 and r.drops(after=0, by=0.04) == 2
    assert r.best_minus_final() == 0.0
    r.map = np.array([0.1, 0.2, 0.5, 0.4])
    assert abs(r.best_minus_final() - 0.1) < 1e-12


def hand_made_labels(n_images: int = 40) -> list[torch.Tensor]:
    """Per image 3 labels (class, x1, y1, x2, y2) of 10-20 px boxes in a 60 px image."""
    g = torch.Generator().manual_seed(0)
    labels = []
    for _ in range(n_images):
        xy = torch.rand(3, 2, generator=g) * 40
        wh = 10 + 10 * torch.rand(3, 2, generator=g)
        labels.append(torch.cat((torch.randint(0, 2, (3, 1), generator=g).float(), xy, xy + wh), 1))
    return labels


def hand_made_runs(exp: Path, finals: dict[str, list[float]], dets: dict[str, list], labels: list) -> None:
    """Finished runs of each arm (one per final mAP50-95 in ``finals[arm]``) whose cached final detections are
    ``dets[arm]``, so that the report's TIDE and bootstrap read them instead of running val.py."""
    from models.yolo import DetectionModel

    for arm, maps in finals.items():
        m = DetectionModel(compare.split_arm(arm)[0], nc=2)
        ckpt = {"model": m.state_dict(), "ema": None, "yaml": m.yaml, "names": {0: "a", 1: "b"}, "epoch": -1}
        for s, final in enumerate(maps):
            run = compare.run_dir(exp, arm, s)
            fake_run(run, [0.1, final], ckpt)
            torch.save(list(zip(dets[arm], labels)), run / compare.DETECTIONS)


def test_report_explains_with_tide_and_two_noises(tmp_path):
    """Hand-made final detections: arm A finds every label, arm B misses every label of half the images. TIDE
    puts B's loss in Missed (and FN), the image bootstrap puts the difference below 0, the verdict needs both."""
    exp, cfgs = tmp_path / "exp", ["yolov5n.yaml", "yolov5n-decoupled.yaml"]
    labels = hand_made_labels()
    perfect = [torch.cat((lb[:, 1:], torch.full((3, 1), 0.9), lb[:, :1]), 1) for lb in labels]
    dets = {cfgs[0]: perfect, cfgs[1]: [d if i % 2 else d[:0] for i, d in enumerate(perfect)]}
    hand_made_runs(exp, {cfgs[0]: [0.50, 0.52], cfgs[1]: [0.30, 0.31]}, dets, labels)
    plan = {"cfg": cfgs, "seeds": 2, "train_args": ["--epochs", "2"], "recipe": compare.train_recipe(["--epochs", "2"])}
    cmp = compare.report(exp, plan, latency_runs=0, n_boot=200)
    tide_a, tide_b = (cmp.results["tide"][c][0] for c in cfgs)
    assert tide_a.ap50 == pytest.approx(1.0) and all(v == pytest.approx(0) for v in tide_a.dap.values())
    assert tide_b.dap["Missed"] > 0.2 and tide_b.dap["Cls"] == 0 and tide_b.dap_fn > 0.2
    boot, noise = cmp.results["bootstrap"][cfgs[1], cfgs[0]]
    assert all(r.map.high < 0 for r in boot.values())  # test-set noise cannot undo half the images missed
    assert noise["verdict"] == "worse" and noise["dominant"] in ("training (seeds)", "test set (images)")
    md = (exp / "report.md").read_text(encoding="utf-8")
    assert "## Two noises" in md and "## Why: error breakdown" in md and "**worse**" in md
    assert "## Chosen pairs" not in md and not (exp / "pairs.csv").exists()
    assert (exp / "tide.png").is_file()
    with open(exp / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[1]["tide_missed"]) > 20 and rows[1]["verdict_both_noises"] == "worse"


def test_pairs_report_any_two_arms_with_both_noises_and_tide(tmp_path):
    """--pairs ARM:BASE beyond the first arm: A finds every label, B misses half the images, C (an arm with its own
    flags) finds what A finds. C minus A: zero on every resample and seed -> within noise; B minus C: worse, the
    loss in Missed; the names resolve by cfg or folder name, and a wrong name is a one-line error."""
    a, b, c = "yolov5n.yaml", "yolov5n-decoupled.yaml", "yolov5n.yaml --precise-bn 0"
    exp, labels = tmp_path / "exp", hand_made_labels()
    perfect = [torch.cat((lb[:, 1:], torch.full((3, 1), 0.9), lb[:, :1]), 1) for lb in labels]
    dets = {a: perfect, b: [d if i % 2 else d[:0] for i, d in enumerate(perfect)], c: perfect}
    hand_made_runs(exp, {a: [0.50, 0.52, 0.51], b: [0.30, 0.31, 0.33], c: [0.50, 0.52, 0.51]}, dets, labels)
    pairs = compare.resolve_pairs(["yolov5n_precise-bn_0:yolov5n", "yolov5n-decoupled.yaml:yolov5n_precise-bn_0"],
                                  [a, b, c])
    assert pairs == [(c, a), (b, c)]
    plan = {"cfg": [a, b, c], "seeds": 3, "train_args": ["--epochs", "2"],
            "recipe": compare.train_recipe(["--epochs", "2"])}
    compare.report(exp, plan, latency_runs=0, n_boot=200, pairs=pairs)
    with open(exp / "pairs.csv") as f:
        same, worse = list(csv.DictReader(f))
    assert (same["arm"], same["base"]) == (c, a) and float(same["d_map_mean"]) == 0
    assert same["verdict_both_noises"] == "within noise" and float(same["boot_half_width"]) == 0
    assert float(same["d_tide_ap50"]) == 0 and float(same["d_tide_missed"]) == 0
    assert (worse["arm"], worse["base"]) == (b, c) and worse["verdict_both_noises"] == "worse"
    assert float(worse["d_map_hi"]) < 0 and float(worse["d_tide_missed"]) > 20 and float(worse["d_tide_cls"]) == 0
    md = (exp / "report.md").read_text(encoding="utf-8")
    start = md.index("## Chosen pairs")
    section = md[start:md.index("\n## ", start + 1)]
    assert "**yolov5n-decoupled** vs yolov5n_precise-bn_0" in section and "**worse**" in section
    assert "| yolov5n-decoupled − yolov5n_precise-bn_0 |" in section
    for bad in ("yolov5n-gfl:yolov5n", "yolov5n:yolov5n.yaml", "yolov5n"):
        with pytest.raises(ValueError, match=f"--pairs {bad}: expected ARM:BASE"):
            compare.resolve_pairs([bad], [a, b, c])


def test_curves_leave_out_a_head_without_validation_loss(tmp_path):
    """A head that reports no validation loss (GFL, Faster R-CNN: NaN columns) gets no line in the val-loss panel
    and no numpy all-NaN warning; the others are drawn."""
    import warnings

    from models.yolo import DetectionModel

    exp, cfgs = tmp_path / "exp", ["yolov5n.yaml", "yolov5n-decoupled.yaml"]
    for cfg in cfgs:
        m = DetectionModel(cfg, nc=2)
        ckpt = {"model": m.state_dict(), "ema": None, "yaml": m.yaml, "names": {0: "a", 1: "b"}, "epoch": -1}
        for s in range(2):
            run = compare.run_dir(exp, cfg, s)
            fake_run(run, [0.1, 0.2, 0.3], ckpt)
            if cfg == cfgs[1]:  # its val/*_loss columns are nan, as a head without a validation loss logs them
                lines = (run / "results.csv").read_text().splitlines()
                lines[1:] = [",".join(v if i < 7 or i > 8 else "nan" for i, v in enumerate(ln.split(",")))
                             for ln in lines[1:]]
                (run / "results.csv").write_text("\n".join(lines) + "\n")
    arms = [compare.summarise_arm(exp, cfg, 2) for cfg in cfgs]
    assert np.isnan(arms[1].runs[0].val_loss).all() and np.isfinite(arms[0].runs[0].val_loss).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_curves(exp, arms)
    assert (exp / "loss_curves.png").stat().st_size > 1000


def test_pareto_front():
    pts = [(10.0, 0.5), (20.0, 0.6), (15.0, 0.4), (30.0, 0.6), (5.0, 0.3)]
    assert plots.pareto_front(pts) == [4, 0, 1]  # (15, .4) is beaten by (10, .5); (30, .6) by (20, .6)


def test_spread_labels_moves_overlapping_names_apart_only():
    """Two arms at almost the same point (a head and its assigner swap) get readable names; a lone one keeps its
    place."""
    fig, (ax,) = plots.figure()
    ax.plot([13.7, 14.3, 9.7], [0.725, 0.720, 0.643], "o")
    ax.set(xscale="log", xlim=(6, 250), ylim=(0.25, 0.78))  # the matrix report's axes (Faster R-CNN at 186 ms, 0.30)
    names = ["yolov5n-decoupled-af", "yolov5n-decoupled-af-dsl", "yolov5n"]
    labels = [ax.annotate(n, xy, textcoords="offset points", xytext=(6, 6), fontsize=8)
              for n, xy in zip(names, [(13.7, 0.725), (14.3, 0.720), (9.7, 0.643)])]
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    assert labels[0].get_window_extent(renderer).overlaps(labels[1].get_window_extent(renderer))  # the problem
    plots.spread_labels(fig, labels)
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(boxes[i].overlaps(boxes[j]) for i in range(3) for j in range(i + 1, 3))
    assert labels[0].xyann == (6, 6) and labels[2].xyann == (6, 6)  # the top one and the lone one stay


def test_budget_time_stops_each_arm_within_an_epoch_and_records_it(tiny_data, tmp_path):
    """A budget shorter than one epoch: every arm stops after its first epoch (the first epoch end past the
    budget), reports it, and the run counts as finished (a re-run trains nothing)."""
    args = compare_args(tiny_data, tmp_path, "--budget-time", "0.0001", epochs=3, seeds=1)
    first = run_compare(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    exp = tmp_path / "exp"
    for cfg in CFGS:
        run = exp / Path(cfg).stem / "seed0"
        budget = json.loads((run / "compare.json").read_text())["budget"]
        assert budget["epochs_reached"] == 1 and budget["stopped"] and budget["used_s"] > 0.006
        assert len(read_results(run / "results.csv")) == 1 and compare.run_state(run, 3) == "finished"
    md = (exp / "report.md").read_text(encoding="utf-8")
    assert "budget 0.0001 min" in md and "--budget-time 0.0001" in md
    with open(exp / "report.csv") as f:
        assert all(float(r["onnx_ms"]) > 0 for r in csv.DictReader(f))  # ONNX Runtime latency beside PyTorch's
    again = run_compare(*args, "--exist-ok")
    assert again.returncode == 0 and "skipping finished run" in again.stdout + again.stderr


def test_a_statistic_plugs_in_as_one_file(tmp_path):
    """tests/toy_statistic.py, registered here, reaches report.csv, pairs.csv, report.md (summary table, its
    section, the chosen pair's line, "how to read") and draws its plot; the built-in figures stay as they were."""
    from compare.statistics import STATISTICS, register, unregister
    from tests.toy_statistic import MedianFinal

    a, b = "yolov5n.yaml", "yolov5n-decoupled.yaml"
    exp, labels = tmp_path / "exp", hand_made_labels(8)
    perfect = [torch.cat((lb[:, 1:], torch.full((3, 1), 0.9), lb[:, :1]), 1) for lb in labels]
    hand_made_runs(exp, {a: [0.50, 0.52, 0.60], b: [0.30, 0.31, 0.45]}, {a: perfect, b: perfect}, labels)
    plan = {"cfg": [a, b], "seeds": 3, "train_args": ["--epochs", "2"], "recipe": compare.train_recipe(["--epochs", "2"])}
    with pytest.raises(TypeError, match="must subclass"):
        register(object())
    register(MedianFinal())
    try:
        with pytest.raises(ValueError, match="registered already"):
            register(MedianFinal())
        compare.report(exp, plan, latency_runs=0, n_boot=0, pairs=[(b, a)])
    finally:
        unregister("median_final")
    assert [s.name for s in STATISTICS] == ["speed", "accuracy", "seeds", "sequential", "budget", "estimators",
                                            "bootstrap", "tide", "stability"]
    with open(exp / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[-1] == "final_map_median"
    assert [float(r["final_map_median"]) for r in rows] == pytest.approx([0.52, 0.31])
    assert float(rows[1]["final_map_mean"]) == pytest.approx(np.mean([0.30, 0.31, 0.45]))
    with open(exp / "pairs.csv") as f:
        (pair,) = list(csv.DictReader(f))
    assert float(pair["d_map_median"]) == pytest.approx(-0.21) and pair["verdict"] == "worse"
    md = (exp / "report.md").read_text(encoding="utf-8")
    assert "| median final mAP50-95 |" in md and "## Median over seeds" in md and "- yolov5n-decoupled: 0.3100" in md
    assert "medians differ by -0.2100" in md and "- Median: the median over seeds" in md and "![median](median.png)" in md
    assert (exp / "median.png").stat().st_size > 500


def test_decide_stops_each_pair_at_its_look_and_reports_it(tmp_path):
    """--decide on finished hand-made runs (nothing to train): B beats A by ~0.05 from seed 0 -> 'better' at the
    first look (3 seeds), kept even though B's later seeds fall behind; C equals A within ±0.003 -> 'equivalent
    within ±0.02' at 3 seeds; D is noise around A -> still open after 4 seeds, so the round-5 runs are what it
    asks to train. decide.json, report.md and report.csv say so."""
    from compare.decide import DECISIONS, decide_all, pairs_of_interest, replay
    from models.yolo import DetectionModel

    a, b, c, d = "yolov5n.yaml", "yolov5n-decoupled.yaml", "yolov5n.yaml --precise-bn 0", "yolov5n.yaml --patience 9"
    exp = tmp_path / "exp"
    base = [0.30, 0.32, 0.31, 0.33, 0.30, 0.31]
    finals = {a: base, b: [x + 0.05 + 0.004 * (i % 2) for i, x in enumerate(base[:3])] + [0.2, 0.2, 0.2],
              c: [x + 0.003 * (-1) ** i for i, x in enumerate(base)],
              d: [x + dx for x, dx in zip(base, (0.03, -0.03, 0.02, -0.025))]}
    for arm, maps in finals.items():
        m = DetectionModel(compare.split_arm(arm)[0], nc=2)
        ckpt = {"model": m.state_dict(), "ema": None, "yaml": m.yaml, "names": {0: "a", 1: "b"}, "epoch": -1}
        for s, final in enumerate(maps):
            fake_run(compare.run_dir(exp, arm, s), [0.1, final], ckpt)
    plan = {"cfg": [a, b, c, d], "seeds": 10, "train_args": ["--epochs", "2"],
            "recipe": compare.train_recipe(["--epochs", "2"]), "decide": {"max_seeds": 10, "margin": 0.02, "alpha": 0.05}}
    pairs = pairs_of_interest(plan["cfg"], [(c, b)])
    assert pairs == [(b, a), (c, a), (d, a), (c, b)]
    decided = decide_all(exp, plan, pairs[:2])
    assert decided[(b, a)]["verdict"] == "better" and decided[(b, a)]["seeds"] == 3
    assert decided[(c, a)]["verdict"] == "equivalent" and decided[(c, a)]["seeds"] == 3
    assert "look 3" in decided[(b, a)]["rule"]
    record = json.loads((exp / DECISIONS).read_text())
    assert [(r["arm"], r["verdict"], r["seeds"]) for r in record["pairs"]] == [(b, "better", 3), (c, "equivalent", 3)]
    decided, n = replay(exp, plan, [(d, a)])  # D: noise around A, 4 seeds finished: open, round 5 to train
    assert decided == {} and n == 5
    cmp = compare.report(exp, plan, latency_runs=0, n_boot=0)
    md = (exp / "report.md").read_text(encoding="utf-8")
    assert "## Sequential decisions and seeds needed" in md and "equivalent within ±0.02" in md
    with open(exp / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["seq_verdict"] for r in rows] == ["", "better", "equivalent", ""]
    assert [r["seq_seeds"] for r in rows] == ["", "3", "3", ""] and cmp.results["sequential"]["margin"] == 0.02
    # the cost: both arms' runs of seeds 0-2, (2.0 + 0.1) + (3.0 + 0.1) s each (fake_run's compare.json)
    assert float(rows[1]["seq_run_hours"]) == pytest.approx(6 * 5.2 / 3600) and rows[3]["seq_run_hours"] == ""
    assert "(Pocock, nominal level" in md and ", 6 runs, 0.01 run-hours)" in md
    assert "--decide --max-seeds 10 --margin 0.02 --epochs 2`" in md and "seeds 0..5;" in md  # 6 seeds trained
    # the table's verdict is the sequential one (B's later seeds do not undo it; D is open), not the plain interval's
    table = [line for line in md.splitlines() if line.startswith("| yolov5n")][:4]  # the first table: one row an arm
    assert [line.rsplit("|", 2)[1].strip() for line in table] == ["baseline", "better at 3 seeds", "equivalent at 3 seeds",
                                                                   "open"]
    assert md.count("at a fixed n, not corrected for the looks; the verdict is --decide's") == 3


def test_verdict_per_budget_and_still_rising(tmp_path):
    """A climbs steadily to 0.5; B starts high, ends at 0.6, but takes twice as long per epoch: B wins at 25% and
    100% of the epochs, loses at equal wall-clock (within A's time B finishes 3 epochs: 0.45 vs 0.5); A is still
    rising at the end, B's last quarter too; a plateaued C is not."""
    from compare.statistics.budget import budget_differences, still_rising
    from compare.summary import Pair
    from models.yolo import DetectionModel

    a, b, c = "yolov5n.yaml", "yolov5n-decoupled.yaml", "yolov5n.yaml --precise-bn 0"
    exp = tmp_path / "exp"
    curves = {a: [0.1, 0.2, 0.3, 0.4, 0.5], b: [0.3, 0.35, 0.45, 0.5, 0.6], c: [0.3, 0.5, 0.5, 0.5, 0.5]}
    for arm, maps in curves.items():
        m = DetectionModel(compare.split_arm(arm)[0], nc=2)
        ckpt = {"model": m.state_dict(), "ema": None, "yaml": m.yaml, "names": {0: "a", 1: "b"}, "epoch": -1}
        for s in range(3):
            run = compare.run_dir(exp, arm, s)
            fake_run(run, [x + 0.01 * s for x in maps], ckpt)
            if arm == b:  # twice as slow per epoch
                record = json.loads((run / "compare.json").read_text())
                for e in record["epochs"].values():
                    e["train_s"] *= 2
                (run / "compare.json").write_text(json.dumps(record))
    arms = {cfg: compare.summarise_arm(exp, cfg, 3) for cfg in curves}
    d = budget_differences(Pair(arms[b], arms[a]))
    assert list(d) == ["25% (epoch 2)", "50% (epoch 3)", "75% (epoch 4)", "100% (epoch 5)", "equal wall-clock"]
    assert d["25% (epoch 2)"] == pytest.approx({0: 0.15, 1: 0.15, 2: 0.15})
    assert d["100% (epoch 5)"] == pytest.approx({0: 0.1, 1: 0.1, 2: 0.1})
    assert d["equal wall-clock"] == pytest.approx({0: -0.05, 1: -0.05, 2: -0.05})
    assert still_rising(arms[a]) and still_rising(arms[b]) and still_rising(arms[c]) is False
    plan = {"cfg": [a, b, c], "seeds": 3, "train_args": ["--epochs", "5"], "recipe": compare.train_recipe(["--epochs", "5"])}
    compare.report(exp, plan, latency_runs=0, n_boot=0)
    with open(exp / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["still_rising"] for r in rows] == ["yes", "yes", "no"]
    assert float(rows[1]["d_map_equal_time"]) == pytest.approx(-0.05) and float(rows[1]["d_map_half_epochs"]) > 0
    assert float(rows[2]["sd_final"]) == pytest.approx(0.0, abs=1e-12)  # C - A: the seeds' offsets cancel
    md = (exp / "report.md").read_text(encoding="utf-8")
    assert "## Estimators" in md and "## The verdict per budget" in md and (exp / "difference_vs_epoch.png").stat().st_size > 1000


def test_last_k_estimator_averages_out_epoch_noise():
    """Arm B = A + 0.02 plus validation noise that flips sign every epoch: the final epoch's paired sd carries the
    noise, the mean of the last 3 / 5 epochs much less of it."""
    from compare.statistics.estimators import paired_sd
    from compare.summary import ArmSummary, Pair, RunSummary

    def run(curve):
        m = np.asarray(curve)
        return RunSummary(epochs=np.arange(len(m)), map50=2 * m, map=m, train_loss=m, val_loss=m, final=(0, m[-1]),
                          best=(0, m.max()), train_s=1.0, first_batch={}, imgsz=64)

    rng = np.random.default_rng(0)
    base = np.linspace(0.1, 0.4, 10)
    a = {s: run(base) for s in range(6)}
    b = {s: run(base + 0.02 + rng.choice([-1, 1]) * 0.03 * (-1) ** np.arange(10)) for s in range(6)}
    pair = Pair(ArmSummary("b", "B", b, 64, 1, 1.0), ArmSummary("a", "A", a, 64, 1, 1.0))
    (_, sd1), (_, sd3), (m5, sd5) = (paired_sd(pair, k) for k in (1, 3, 5))
    assert sd3 < 0.5 * sd1 and sd5 < 0.5 * sd1 and m5 == pytest.approx(0.02, abs=0.01)


def test_ray_gives_the_same_report_as_the_local_pool(compared, tiny_data, tmp_path):
    """The fixture's comparison (2 cfgs x 2 seeds, --jobs 2) again through a local Ray instance: the same run
    folders and the same report figures (timings aside)."""
    pytest.importorskip("ray")
    exp_jobs = compared[0]
    out = run_compare(*compare_args(tiny_data, tmp_path, "--ray"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Ray task" in out.stderr and "--ray: 4 runs as Ray tasks on local" in out.stderr
    exp = tmp_path / "exp"
    for cfg in CFGS:
        for s in (0, 1):
            assert (exp / Path(cfg).stem / f"seed{s}" / "train.log").is_file()
            assert read_results(compare.run_dir(exp, cfg, s) / "results.csv") == \
                read_results(compare.run_dir(exp_jobs, cfg, s) / "results.csv")
    timing = {"train_s_per_epoch", "cpu_ms", "onnx_ms", "gpu_ms", "d_map_equal_time"}
    with open(exp / "report.csv") as f, open(exp_jobs / "report.csv") as g:
        ray_rows, job_rows = list(csv.DictReader(f)), list(csv.DictReader(g))
    assert [{k: v for k, v in r.items() if k not in timing} for r in ray_rows] == \
        [{k: v for k, v in r.items() if k not in timing} for r in job_rows]


def test_dry_run_plans_seeds_from_a_pilot(tmp_path):
    """--dry-run's lines: from a 2-seed pilot the seeds a decision is expected to need (the same figure as
    seeds_needed on the pilot's mean and sd); with 1 seed, the advice to train the pilot first."""
    from compare.decide import planned_seeds
    from models.yolo import DetectionModel
    from utils.evaluation.sequential import seeds_needed

    a, b, c = "yolov5n.yaml", "yolov5n-decoupled.yaml", "yolov5n.yaml --precise-bn 0"
    exp = tmp_path / "exp"
    for arm, maps in {a: [0.30, 0.34], b: [0.35, 0.41], c: [0.31]}.items():
        m = DetectionModel(compare.split_arm(arm)[0], nc=2)
        ckpt = {"model": m.state_dict(), "ema": None, "yaml": m.yaml, "names": {0: "a", 1: "b"}, "epoch": -1}
        for s, final in enumerate(maps):
            fake_run(compare.run_dir(exp, arm, s), [0.1, final], ckpt)
    plan = {"cfg": [a, b, c], "seeds": 2, "recipe": compare.train_recipe(["--epochs", "2"]),
            "decide": {"max_seeds": 10, "margin": 0.01, "alpha": 0.05}}
    lines = planned_seeds(exp, plan, [(b, a), (c, a)])
    n = seeds_needed(0.06, float(np.std([0.05, 0.07], ddof=1)), 10, 0.01)
    assert lines[0].startswith("yolov5n-decoupled vs yolov5n: from 2 seeds, mean difference +0.0600") and f"~{n} seeds" in lines[0]
    assert "1 finished seed(s); train a pilot of 2 first" in lines[1]
