"""Export a detector to TorchScript, ONNX, OpenVINO, ncnn or any registered format (models/formats), then check each
against PyTorch on a real image.

    python export.py --weights best.pt --include torchscript onnx --imgsz 320
    python export.py --weights best.pt --include onnx --dynamic     # any batch size and input size
    python export.py --weights best.pt --include openvino ncnn      # pip install openvino / pnnx ncnn first
    python detect.py --weights best.onnx                            # val.py and detect.py run the files
    python val.py --weights best_openvino_model                     # ... and the folders

Files are written beside the weights (best.pt -> best.torchscript, best.onnx) with the class names, stride,
input shape, ``dynamic`` and ``half`` in their metadata (see models/backends.py). Each format is one module of
models/formats (its exporter, its loader, its flags: OpenVINO and ncnn export FP32 only, ncnn batch 1 at a fixed
size); the export itself and its check are models/formats/core.py, shared with --backend's cached exports
(models/runtime.py). This script adds the command line; the check image is a picture from the shapes generator
(utils/data/check_image.py).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from models.formats import FORMATS, ExportOptions
from models.formats.core import TOLERANCE, export_weights
from utils.data.check_image import check_image
from utils.torch_utils import LOGGER, select_device

ROOT = Path(__file__).resolve().parent


def run(weights: str | Path, include: list[str] = ("torchscript",), imgsz: list[int] | None = None,
        batch_size: int = 1, device: str = "cpu", half: bool = False, dynamic: bool = False,
        simplify: bool = False, opset: int = 17, out: Path | None = None) -> dict[str, tuple[Path, float]]:
    """Export ``weights`` to each format in ``include`` -> {format: (file, largest difference to PyTorch)}; the
    files go beside ``weights`` (``best.onnx``), or to ``out`` when one format is asked for; ``imgsz`` None: the
    size the checkpoint was trained at (else 640)."""
    t0 = time.time()
    options = ExportOptions(dynamic=dynamic, half=half, opset=opset, simplify=simplify)
    results = export_weights(Path(weights), list(include), list(imgsz) if imgsz else None, batch_size,
                             select_device(device), options, check_image, out)
    last = list(results.values())[-1][0]
    LOGGER.info(f"\nExport complete ({time.time() - t0:.1f}s)\nResults saved to {last.parent.resolve()}"
                f"\nDetect:   python detect.py --weights {last}\nValidate: python val.py --weights {last}")
    return results


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    needs = "; ".join(f"{f.name} needs {f.pip}" for f in FORMATS.values() if f.packages)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=str, required=True, help="model.pt path (ours or YOLOv5's)")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=None,
                   help="image (h, w) (default: the size the checkpoint was trained at, else 640)")
    p.add_argument("--batch-size", type=int, default=1, help="batch size")
    p.add_argument("--device", default="cpu", help="cuda device, i.e. 0, or cpu")
    p.add_argument("--half", action="store_true", help="FP16 half-precision export (CUDA only)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch size and input size")
    p.add_argument("--simplify", action="store_true", help="ONNX: simplify the model (needs onnxsim)")
    p.add_argument("--opset", type=int, default=17, help="ONNX: opset version")
    p.add_argument("--include", nargs="+", default=["torchscript"],
                   help=f"one or more of {', '.join(FORMATS)} ({needs})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    opt = parse_opt(argv)
    try:
        results = run(**vars(opt))
    except (FileNotFoundError, ValueError) as e:
        LOGGER.error(f"error: {e}")
        return 2
    limit = TOLERANCE * (10 if opt.half else 1)
    return 1 if any(d > limit for _, d in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
