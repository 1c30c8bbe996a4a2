import os
import signal
import sys
from pathlib import Path

# Tests use tiny models: one intra-op thread each (inherited by the subprocesses they start) avoids thread
# oversubscription, which slows small workloads on a busy 2-core machine by an order of magnitude.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A dataset YAML whose `generate:` section makes a tiny shapes dataset (16 train / 8 val at 64 px)."""
    root = tmp_path_factory.mktemp("tiny")
    names = ["circle", "ring", "square", "triangle", "star", "cross", "hexagon", "ellipse"]
    spec = {"path": str(root / "shapes"), "train": "images/train", "val": "images/val",
            "names": dict(enumerate(names)),
            "generate": {"generator": "shapes", "seed": 1, "imgsz": 64, "n_train": 16, "n_val": 8,
                         "max_objects": 4, "min_size": 8, "video_seconds": 0}}
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def ctrl_c():
    """Make ``_thread.interrupt_main()`` raise KeyboardInterrupt: a process started as a background job inherits
    SIGINT ignored, and then Python neither installs its handler nor delivers a simulated Ctrl-C."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


GPU_WORDS = ("gpu", "cuda")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (the CI environment variable, set by .ci/run) a skipped test is a failure unless its reason names a
    GPU: CI installs every optional package (requirements-dev.txt), so any other skip is a path never exercised."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)
        if not any(w in reason.lower() for w in GPU_WORDS):
            report.outcome = "failed"
            report.longrepr = f"skipped in CI, which must run every test not needing a GPU: {reason}"
