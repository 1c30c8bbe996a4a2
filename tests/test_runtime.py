"""detect.py / val.py ``--backend``: a .pt on the CPU runs through a cached ONNX Runtime (or OpenVINO) export
(models/runtime.py: runtime_backend, cached_export), with the same detections as PyTorch."""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging

import pytest
import torch

from models import runtime
from models.backends import load_backend
from models.formats import FORMATS
from models.formats.core import TOLERANCE
from models.yolo import DetectionModel
from utils.boxes import postprocess
from utils.data.check_image import check_image
from utils.io.checkpoint import save_checkpoint

NAMES = {0: "circle", 1: "square", 2: "triangle"}
runtime_backend = functools.partial(runtime.runtime_backend, images=check_image)  # as val.py and detect.py call it
cached_export = functools.partial(runtime.cached_export, images=check_image)


def _checkpoint(path, cfg="yolov5n.yaml", seed=0):
    torch.manual_seed(seed)
    m = DetectionModel(cfg, nc=3)
    return save_checkpoint({"model": m.state_dict(), "ema": None, "yaml": m.yaml, "names": NAMES}, path)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(runtime.CACHE_ENV, str(folder))
    return folder


def test_auto_runs_a_pt_through_a_cached_onnx_export(tmp_path, cache, caplog):
    w = _checkpoint(tmp_path / "best.pt")
    with caplog.at_level(logging.INFO, logger="headzoo"):
        b = runtime_backend(w, torch.device("cpu"), backend="auto", imgsz=(96, 96))
    assert b.fmt == "onnx" and b.dynamic and b.weights.parent == cache
    assert "--backend auto: onnxruntime" in caplog.text
    files = sorted(p.name for p in cache.iterdir())
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="headzoo"):
        again = runtime_backend(w, torch.device("cpu"), backend="onnxruntime", imgsz=(64, 64))
    assert again.weights == b.weights and "exporting" not in caplog.text  # reused: one export, any size
    assert sorted(p.name for p in cache.iterdir()) == files
    im = torch.rand(2, 3, 96, 128)
    ref = runtime_backend(w, torch.device("cpu"), backend="torch")
    assert ref.fmt == "pytorch"
    got, want = b(im), ref(im)
    assert (got - want).abs().max() < TOLERANCE
    a, r = postprocess(got, False, 0.001), postprocess(want, False, 0.001)
    assert all(x.shape == y.shape for x, y in zip(a, r))


def test_a_cached_export_reads_the_checkpoint_once(tmp_path, cache, monkeypatch):
    """val.py / detect.py on a .pt whose export is cached: the checkpoint is read once (the head's flags: which
    runtime --backend auto picks, and the cache key), then the runtime loads the export; a static head's key still
    gets its size."""
    for cfg, backend, key in (("yolov5n.yaml", "auto", "-dynamic-"),
                              ("faster-rcnn-mnv3-fpn.yaml", "onnxruntime", "-64x64-")):
        w = _checkpoint(tmp_path / f"{cfg}.pt", cfg)
        runtime_backend(w, torch.device("cpu"), backend=backend, imgsz=(64, 64))  # makes the export
        reads, load = [], runtime.load_checkpoint
        monkeypatch.setattr(runtime, "load_checkpoint", lambda p, *a, **k: reads.append(p) or load(p, *a, **k))
        b = runtime_backend(w, torch.device("cpu"), backend=backend, imgsz=(64, 64))
        monkeypatch.setattr(runtime, "load_checkpoint", load)
        assert b.fmt == "onnx" and key in b.weights.name and reads == [w]


def test_a_changed_checkpoint_gets_a_new_export(tmp_path, cache):
    w = _checkpoint(tmp_path / "best.pt")
    first = runtime_backend(w, torch.device("cpu"), imgsz=(64, 64)).weights
    _checkpoint(w, seed=1)  # retrained: same name, other bytes
    second = runtime_backend(w, torch.device("cpu"), imgsz=(64, 64)).weights
    assert first != second and first.exists() and second.exists()


def test_static_heads_are_cached_per_size(tmp_path, cache):
    w = _checkpoint(tmp_path / "frcnn.pt", "faster-rcnn-mnv3-fpn.yaml")
    f, _ = cached_export(w, "onnxruntime", (64, 64))
    assert "-64x64-" in f.name


def test_exported_files_and_bad_choices(tmp_path, cache):
    w = _checkpoint(tmp_path / "best.pt")
    onnx_file, _ = cached_export(w, "onnxruntime", (64, 64))
    assert runtime_backend(onnx_file, torch.device("cpu"), backend="auto").fmt == "onnx"
    with pytest.raises(ValueError, match="--backend 'tensorrt' is not one of auto, torch, onnxruntime, openvino"):
        runtime_backend(w, torch.device("cpu"), backend="tensorrt")
    if importlib.util.find_spec("openvino") is None:
        with pytest.raises(ValueError, match="pip install openvino"):
            runtime_backend(w, torch.device("cpu"), backend="openvino")
    else:
        assert runtime_backend(w, torch.device("cpu"), backend="openvino", imgsz=(64, 64)).fmt == "openvino"


def test_an_unwritable_cache_falls_back_to_pytorch(tmp_path, monkeypatch, caplog):
    w = _checkpoint(tmp_path / "best.pt")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # the cache folder's path is a file: mkdir fails as on a read-only disk
    monkeypatch.setenv(runtime.CACHE_ENV, str(blocker / "cache"))
    with caplog.at_level(logging.WARNING, logger="headzoo"):
        b = runtime_backend(w, torch.device("cpu"), imgsz=(64, 64))
    assert b.fmt == "pytorch" and "cannot write the onnxruntime export" in caplog.text


@pytest.fixture
def two_backends(tmp_path, cache):
    """(ONNX Runtime, PyTorch) backends of one checkpoint, with torch on 2 threads (the tests run on 1)."""
    w = _checkpoint(tmp_path / "best.pt")
    backends = (runtime_backend(w, torch.device("cpu"), backend="onnxruntime", imgsz=(64, 64)),
                runtime_backend(w, torch.device("cpu"), backend="torch"))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield backends
    torch.set_num_threads(before)


def test_torch_ops_around_a_cpu_runtime_run_on_one_thread(two_backends):
    """host_threads(): one torch thread while ONNX Runtime owns the cores, the caller's count restored after
    (also after an error); PyTorch backends keep their threads."""
    ort_backend, torch_backend = two_backends
    with ort_backend.host_threads():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError), ort_backend.host_threads():
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
    with torch_backend.host_threads():
        assert torch.get_num_threads() == 2


def test_concurrent_calls_share_the_threads_and_give_the_same_outputs(two_backends):
    """Backend.concurrent(n): ONNX Runtime on the CPU gives a backend whose calls, from n threads at once, each on
    threads // n intra-op threads, return what the all-threads session returns; PyTorch, too few threads or one
    call give None."""
    from concurrent.futures import ThreadPoolExecutor

    ort_backend, torch_backend = two_backends
    assert torch_backend.concurrent(2) is None and ort_backend.concurrent(1) is None
    assert ort_backend.concurrent(3) is None  # 3 calls on 2 threads would oversubscribe the cores
    pair = ort_backend.concurrent(2)
    assert pair is not None and pair.run_fn is not ort_backend.run_fn and pair.concurrent(2) is None
    ims = [torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(k)) for k in range(6)]
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(pair, ims))
    for im, out in zip(ims, outs):
        torch.testing.assert_close(out, ort_backend(im), rtol=1e-4, atol=1e-4)
    torch.set_num_threads(1)
    assert ort_backend.concurrent(2) is None


def test_half_on_the_cpu_falls_back_to_fp32_with_a_reason(tmp_path, cache, monkeypatch, caplog):
    w = _checkpoint(tmp_path / "best.pt")
    cpu = torch.device("cpu")
    with caplog.at_level(logging.WARNING, logger="headzoo"):
        b = runtime_backend(w, cpu, half=True, backend="torch")
    assert b.fmt == "pytorch" and not b.fp16 and not b.bf16
    assert "--half on the CPU: it runs BF16 through OpenVINO only" in caplog.text
    caplog.clear()
    monkeypatch.setattr(runtime, "_installed", lambda runtime: runtime != "openvino")
    with caplog.at_level(logging.WARNING, logger="headzoo"):
        b = runtime_backend(w, cpu, half=True, backend="auto", imgsz=(64, 64))
    assert b.fmt == "onnx" and "it needs OpenVINO" in caplog.text  # FP32 on the default runtime
    caplog.clear()
    monkeypatch.setattr(runtime, "_installed", lambda runtime: True)
    monkeypatch.setitem(FORMATS, "openvino", dataclasses.replace(FORMATS["openvino"], bf16=lambda: False))
    with caplog.at_level(logging.WARNING, logger="headzoo"):
        runtime_backend(w, cpu, half=True, backend="torch")
        runtime._cpu_half(w, "auto")
    assert "this CPU has no BF16" in caplog.text
    onnx_file = cached_export(w, "onnxruntime", (64, 64))[0]
    with pytest.raises(ValueError, match="only OpenVINO models run reduced precision"):
        load_backend(onnx_file, cpu, half=True)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="optional: pip install openvino")
def test_half_on_a_bf16_cpu_runs_openvino_close_to_fp32(tmp_path, cache, caplog):
    from models.formats.openvino import cpu_bf16
    w = _checkpoint(tmp_path / "best.pt")
    if not cpu_bf16():  # this CPU has no BF16 (AVX512-BF16 or AMX): --half warns and runs FP32
        with caplog.at_level(logging.WARNING):
            b = runtime_backend(w, torch.device("cpu"), half=True, backend="auto", imgsz=(64, 64))
        assert not b.bf16 and "no BF16" in caplog.text
        return
    b = runtime_backend(w, torch.device("cpu"), half=True, backend="auto", imgsz=(64, 64))
    assert b.fmt == "openvino" and b.bf16 and "BF16" in b.describe()
    im = torch.rand(1, 3, 64, 96)
    got, want = b(im), runtime_backend(w, torch.device("cpu"), backend="torch")(im)
    torch.testing.assert_close(got[..., :4], want[..., :4], rtol=0.05, atol=0.5)  # boxes, px: BF16 keeps ~3 digits
    torch.testing.assert_close(got[..., 4:], want[..., 4:], rtol=0, atol=0.03)  # objectness and class scores
