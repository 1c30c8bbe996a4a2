import os
import sys
from pathlib import Path

# Tests use tiny models: one intra-op thread each (inherited by the subprocesses they start) avoids thread
# oversubscription, which slows small workloads on a busy 2-core machine by an order of magnitude.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
