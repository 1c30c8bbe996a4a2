"""Soak: detect.py on a live stream for a long time must not grow in memory.

    python bench/soak_stream.py                         # 10,000 320 px frames of a loopback MJPEG stream at 60 fps
    python bench/soak_stream.py --frames 50000 --save   # longer, and writing the annotated mp4 too

A loopback MJPEG server (tests/mjpeg_server.py) serves ``--frames`` frames at ``--fps``; ``detect.run`` reads them
as a live stream (reader thread, newest frame kept) through a fresh yolov5n .pt on PyTorch, while a thread samples
this process's resident memory (Linux /proc) every ``--every`` seconds. The figure: RSS growth per 10,000
frames, the least-squares slope of RSS against frames processed after the first ``--warmup`` share of the run
(allocator pools, the first batches' caches), beside the RSS at the start and the end. Prints a table and writes
runs/bench/soak_stream.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import detect  # noqa: E402
from models.yolo import DetectionModel  # noqa: E402
from tests.mjpeg_server import MJPEGServer  # noqa: E402
from utils.data.sources import StreamConfig  # noqa: E402
from utils.io.checkpoint import save_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    """This process's resident set size in MB (Linux /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


class Sampler(threading.Thread):
    """(seconds since start, RSS MB) every ``every`` seconds until stopped."""

    def __init__(self, every: float):
        super().__init__(daemon=True)
        self.every, self.samples, self._stop_event = every, [], threading.Event()

    def run(self) -> None:
        t0 = time.perf_counter()
        while not self._stop_event.is_set():
            self.samples.append((time.perf_counter() - t0, rss_mb()))
            self._stop_event.wait(self.every)

    def stop(self) -> list[tuple[float, float]]:
        self._stop_event.set()
        self.join()
        return self.samples


def soak(frames: int, fps: float, imgsz: int, every: float, warmup: float, save: bool, out: Path,
         size: int | None = None) -> dict:
    """One soak (see the module docstring): its figures as a dict."""
    weights = out / "yolov5n.pt"
    m = DetectionModel("yolov5n.yaml", nc=8)
    save_checkpoint({"model": m.state_dict(), "ema": None, "yaml": m.yaml, "names": dict(enumerate("abcdefgh")),
                     "epoch": -1}, weights)
    config = StreamConfig(give_up_s=1.0, backoff_initial_s=0.05, backoff_max_s=0.2, open_timeout_s=5,
                          read_timeout_s=2.0)
    with MJPEGServer([frames], fps=fps, size=(size or imgsz, size or imgsz), lifetime_s=frames / fps + 60) as server:
        sampler = Sampler(every)
        sampler.start()
        t0 = time.perf_counter()
        res = detect.run(weights, server.url, imgsz=imgsz, backend="torch", nosave=not save, project=out,
                         name="soak", exist_ok=True, stream_config=config)
        seconds = time.perf_counter() - t0
        samples = np.array(sampler.stop())
    t, mb = samples[:, 0], samples[:, 1]
    done = t / max(t[-1], 1e-9) * res.frames  # frames processed, taken as even over the run
    keep = done >= warmup * res.frames
    slope = float(np.polyfit(done[keep], mb[keep], 1)[0]) if keep.sum() > 2 else float("nan")
    return {"frames_served": frames, "frames_processed": res.frames, "seconds": round(seconds, 1),
            "fps": round(res.frames / seconds, 1), "rss_start_mb": round(float(mb[keep][0]), 1),
            "rss_end_mb": round(float(mb[-1]), 1), "rss_peak_mb": round(float(mb.max()), 1),
            "growth_mb_per_10k_frames": round(slope * 10_000, 2), "samples": int(len(mb)), "save": save,
            "end": res.end}


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=10_000, help="frames the stream serves")
    p.add_argument("--fps", type=float, default=60.0, help="the stream's frame rate")
    p.add_argument("--imgsz", type=int, default=64, help="inference size")
    p.add_argument("--size", type=int, default=320, help="the stream's frame size (square)")
    p.add_argument("--every", type=float, default=0.5, help="seconds between memory samples")
    p.add_argument("--warmup", type=float, default=0.2, help="share of the run left out of the slope")
    p.add_argument("--save", action="store_true", help="also write the annotated mp4")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    opt = parse_opt(argv)
    with tempfile.TemporaryDirectory() as tmp:
        row = soak(opt.frames, opt.fps, opt.imgsz, opt.every, opt.warmup, opt.save, Path(tmp), opt.size)
    for k, v in row.items():
        print(f"{k:>26}: {v}")
    out = ROOT / "runs" / "bench" / "soak_stream.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=1))
    return row


if __name__ == "__main__":
    main()
