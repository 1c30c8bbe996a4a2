"""train.py's --multi-scale, --image-weights, --evolve and the optional Albumentations step: each changes what it
should, draws only from (seed, epoch, ...)-seeded generators, and is off by default."""
import logging
import sys
import types
from pathlib import Path

import numpy as np
import yaml

import train
from models.heads import Detect
from utils.data.augmentations import Albumentations
from utils.data.dataloaders import (
    check_dataset,
    create_dataloader,
    labels_to_class_weights,
    labels_to_image_weights,
)
from utils.io.hyp import evolve_meta, mutate_hyp, read_evolve_csv

ROOT = Path(__file__).resolve().parents[1]
HYP = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())


def train_argv(data: Path, project: Path, name: str, *extra: str) -> list[str]:
    return ["--cfg", "yolov5n.yaml", "--data", str(data), "--epochs", "1", "--imgsz", "64", "--batch-size", "4",
            "--workers", "0", "--noplots", "--noautoanchor", "--project", str(project), "--name", name, *extra]


# ------------------------------------------------------------------ --multi-scale
def test_multi_scale_sizes_seeded_in_range_on_stride():
    sizes = [train.multi_scale_size(640, 32, seed=0, epoch=1, batch=i) for i in range(40)]
    assert all(s % 32 == 0 and 320 <= s <= 960 for s in sizes), sizes
    assert len(set(sizes)) > 5
    assert sizes == [train.multi_scale_size(640, 32, seed=0, epoch=1, batch=i) for i in range(40)]
    assert sizes != [train.multi_scale_size(640, 32, seed=1, epoch=1, batch=i) for i in range(40)]
    assert sizes != [train.multi_scale_size(640, 32, seed=0, epoch=2, batch=i) for i in range(40)]


def test_multi_scale_training_sizes_repeat_with_the_seed(tiny_data, tmp_path, monkeypatch):
    seen = []
    rescale = train.Trainer.rescale

    def spy(self, imgs, epoch, i):
        out = rescale(self, imgs, epoch, i)
        seen.append(tuple(out.shape[2:]))
        return out

    monkeypatch.setattr(train.Trainer, "rescale", spy)
    runs = []
    for name in ("a", "b"):
        seen.clear()
        assert train.main(train_argv(tiny_data, tmp_path, name, "--multi-scale", "--noval")) == 0
        runs.append(list(seen))
    assert runs[0] == runs[1] and len(runs[0]) == 4  # 16 images, batch 4
    assert len(set(runs[0])) > 1 and all(h % 32 == 0 and w % 32 == 0 and 32 <= h <= 96 for h, w in runs[0])
    seen.clear()
    assert train.main(train_argv(tiny_data, tmp_path, "off", "--noval")) == 0
    assert seen == []  # off by default: batches keep --imgsz


# ------------------------------------------------------------------ --image-weights
def test_image_weights_favour_rare_classes_and_repeat_with_the_seed(tiny_data):
    data = check_dataset(tiny_data)
    loader, ds = create_dataloader(data["train"], 64, 4, 32, hyp=HYP, augment=True, shuffle=True, seed=3,
                                   workers=0, names=data["names"])
    nc = len(data["names"])
    counts = np.bincount(np.concatenate([lb[:, 0] for lb in ds.labels]).astype(int), minlength=nc)
    rare = int(np.argmin(np.where(counts > 0, counts, counts.max() + 1)))
    holders = [i for i, lb in enumerate(ds.labels) if (lb[:, 0] == rare).any()]
    sampler = loader.sampler
    assert list(sampler) == [(int(i), 0, True) for i in np.random.default_rng([3, 0]).permutation(ds.n)]  # off
    sampler.weights = labels_to_image_weights(ds.labels, nc, labels_to_class_weights(ds.labels, nc))
    draws = []
    for epoch in range(1, 40):
        ds.set_epoch(epoch)
        draws.append([k[0] for k in sampler])
    drawn = np.concatenate(draws)
    assert len(draws[0]) == ds.n and len(set(draws[0])) < ds.n  # n draws with replacement
    assert np.isin(drawn, holders).mean() > 1.5 * len(holders) / ds.n
    ds.set_epoch(5)
    assert [k[0] for k in sampler] == draws[4]


def test_image_weights_follow_class_map():
    labels = [np.array([[0, .5, .5, .1, .1]]), np.array([[1, .5, .5, .1, .1], [1, .2, .2, .1, .1]]),
              np.zeros((0, 5))]
    cw = labels_to_class_weights(labels, 3)
    np.testing.assert_allclose(cw, np.array([1, 0.5, 1]) / 2.5)  # absent class 2 counts as one instance
    iw = labels_to_image_weights(labels, 3, cw * (1 - np.array([1.0, 0.0, 0.0])) ** 2)  # class 0 solved
    np.testing.assert_allclose(iw, [0.0, 0.4, 0.0])


# ------------------------------------------------------------------ --evolve
def test_mutation_respects_bounds_keeps_keys_and_is_seeded():
    hyp, meta = {**HYP, "head_only_key": 7.0}, evolve_meta(Detect.hyp_ranges)
    for s in range(30):
        out = mutate_hyp(hyp, np.random.default_rng(s), meta)
        assert list(out) == list(hyp) and out["head_only_key"] == 7.0
        for k, (_, lo, hi) in meta.items():
            if k in out:
                assert lo <= out[k] <= hi, (k, out[k])
        assert {k for k in hyp if out[k] != hyp[k]} - {k for k, m in meta.items() if m[0]} == set()
    a, b = mutate_hyp(hyp, np.random.default_rng(1), meta), mutate_hyp(hyp, np.random.default_rng(1), meta)
    assert a == b and a != hyp and a != mutate_hyp(hyp, np.random.default_rng(2), meta)


def test_evolve_two_generations_then_resume(tiny_data, tmp_path, caplog):
    argv = train_argv(tiny_data, tmp_path, "evo", "--evolve", "2")
    assert train.main(argv) == 0
    run = tmp_path / "evo"
    header, rows = read_evolve_csv(run / "evolve.csv")
    assert rows.shape[0] == 2 and header[:4] == ["metrics/precision", "metrics/recall", "metrics/mAP_0.5",
                                                 "metrics/mAP_0.5:0.95"]
    assert header[-len(HYP):] == list(HYP) and (rows[0, -len(HYP):] != rows[1, -len(HYP):]).any()  # gen 1 mutated
    best = yaml.safe_load((run / "hyp_evolve.yaml").read_text())
    assert list(best) == list(HYP) and (run / "evolve.png").stat().st_size > 0
    text = (run / "evolve.csv").read_text()
    caplog.clear()
    caplog.set_level(logging.INFO, logger="headzoo")
    assert train.main(argv) == 0  # re-run: both generations done, nothing trained again
    assert (run / "evolve.csv").read_text() == text and "2 of 2 generations done" in caplog.text


# ------------------------------------------------------------------ Albumentations (optional package)
def fake_albumentations(seeds: list[int]) -> types.ModuleType:
    """A stand-in for the package: each transform records its p; the pipeline records its seed and inverts."""
    mod = types.ModuleType("albumentations")
    mod.__version__ = "2.0.0"

    def make(name):
        def init(self, p=0.5, **kw):
            self.p, self.kw = p, kw
        return type(name, (), {"__init__": init})

    for name in ("Blur", "MedianBlur", "ToGray", "CLAHE", "RandomBrightnessContrast", "RandomGamma",
                 "ImageCompression"):
        setattr(mod, name, make(name))

    class Compose:
        def __init__(self, steps):
            self.steps = steps

        def set_random_seed(self, seed):
            seeds.append(seed)

        def __call__(self, image):
            return {"image": 255 - image}

    mod.Compose = Compose
    return mod


def test_albumentations_missing_is_a_no_op_with_one_log_line(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "albumentations", None)  # import fails as when not installed
    caplog.set_level(logging.INFO, logger="headzoo")
    albu = Albumentations()
    assert "albumentations: not installed" in caplog.text
    im, rng = np.full((8, 8, 3), 7, np.uint8), np.random.default_rng(0)
    state = rng.bit_generator.state
    assert albu(im, rng) is im and rng.bit_generator.state == state


def test_albumentations_hook_after_geometry_seeded_boxes_unchanged(tiny_data, monkeypatch):
    data = check_dataset(tiny_data)
    monkeypatch.setitem(sys.modules, "albumentations", None)
    _, plain = create_dataloader(data["train"], 64, 4, 32, hyp=HYP, augment=True, seed=0, workers=0,
                                 names=data["names"])
    seeds = []
    monkeypatch.setitem(sys.modules, "albumentations", fake_albumentations(seeds))
    _, albu = create_dataloader(data["train"], 64, 4, 32, hyp=HYP, augment=True, seed=0, workers=0,
                                names=data["names"])
    val = create_dataloader(data["val"], 64, 4, 32, hyp=HYP, workers=0, names=data["names"])[1]
    steps = albu.albumentations.transform.steps
    assert [type(t).__name__ for t in steps][-1] == "ImageCompression" and {t.p for t in steps} == {0.01}
    assert steps[-1].kw == {"quality_range": (75, 100)} and val.albumentations is None
    for key in [(i, 0, True) for i in range(4)] + [(5, 1, False)]:
        im0, lb0 = plain[key][:2]
        im1, lb1 = albu[key][:2]
        assert (lb0 == lb1).all() and not (im0 == im1).all()  # same geometry and boxes, other pixels
    albu[(2, 0, True)]
    assert len(seeds) == 6 and seeds[5] == seeds[2] and len(set(seeds[:5])) == 5  # seeded by (seed, epoch, index)


# ------------------------------------------------------------------ --amp
def test_amp_resolves_per_device(monkeypatch, caplog):
    import torch

    from utils import torch_utils
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert torch_utils.autocast_dtype(None, cuda) is torch.float16  # YOLOv5: AMP on CUDA by default
    assert torch_utils.autocast_dtype(False, cuda) is None
    for native in (False, True):
        monkeypatch.setattr(torch_utils, "cpu_has_bf16", lambda n=native: n)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            assert torch_utils.autocast_dtype(None, cpu) is None  # FP32 on a CPU by default ...
            assert torch_utils.autocast_dtype(False, cpu) is None
            assert torch_utils.autocast_dtype(True, cpu) is torch.bfloat16  # ... BF16 autocast when asked
        assert ("emulated and slower" in caplog.text) is not native
        assert ("computes BF16 natively" in caplog.text) is native


def test_to_float_casts_nested_outputs():
    import torch

    from utils.torch_utils import to_float
    out = to_float({"a": [torch.ones(2, dtype=torch.bfloat16), (torch.zeros(1, dtype=torch.float16), 3)],
                    "b": torch.arange(3)})
    assert out["a"][0].dtype == torch.float32 and out["a"][1][0].dtype == torch.float32 and out["a"][1][1] == 3
    assert out["b"].dtype == torch.int64


def test_amp_on_the_cpu_trains_bf16_and_is_recorded(tiny_data, tmp_path, monkeypatch):
    import torch
    seen = []
    real = train.amp_loss

    def spy(net, criterion, imgs, targets, dtype, device_type):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            seen.append(net(imgs, targets)[0].dtype if dtype is not None else torch.float32)
        return real(net, criterion, imgs, targets, dtype, device_type)

    monkeypatch.setattr(train, "amp_loss", spy)
    for flag, dtype in (("--amp", torch.bfloat16), ("--no-amp", torch.float32)):
        seen.clear()
        name = flag.strip("-")
        assert train.main(train_argv(tiny_data, tmp_path, name, flag)) == 0
        opt = yaml.safe_load((tmp_path / name / "opt.yaml").read_text())
        assert opt["amp"] is (flag == "--amp") and set(seen) == {dtype}
        rows = (tmp_path / name / "results.csv").read_text().splitlines()
        assert len(rows) == 2 and "nan" not in rows[1].lower()
