"""The export-format record and its table: everything export.py, models/backends.py and models/runtime.py know
about a format is one ``ExportFormat``, registered once by the module that writes and reads it.

Shape shorthand: B batch, H/W input height/width, N predictions, nc classes.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the record only refers to these; importing them here would be circular
    import torch

    from models.backends import Backend
    from models.yolo import DetectionModel

PYTORCH_SUFFIX = ".pt"  # a checkpoint: not an export format, loaded by models/backends.py itself


@dataclass(frozen=True)
class ExportOptions:
    """The export flags a format may read (``export.py --dynamic --half --opset --simplify``)."""

    dynamic: bool = False  # any batch size and input size
    half: bool = False  # FP16 weights and inputs (CUDA)
    opset: int = 17  # ONNX opset
    simplify: bool = False  # ONNX: onnxsim


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    ``export(model, im, file, meta, options) -> file``: writes the export-mode ``model`` traced at ``im``
    ``(B, 3, H, W)`` to ``file`` (a file, or a folder for a suffix that does not start with '.') with ``meta``
    (models/backends.py: stride, names, shape, dynamic, half, suppressed). ``load(path, device, half, fuse) ->
    Backend``: reads it back behind the one interface val.py and detect.py run.
    """

    name: str  # the --include key: 'onnx'
    suffix: str  # the file suffix ('.onnx') or the folder name's ending ('_openvino_model')
    title: str  # how messages name it: 'ONNX'; the log prefix is 'ONNX:'
    export: Callable[[DetectionModel, torch.Tensor, Path, dict, ExportOptions], Path]
    load: Callable[[Path, torch.device, bool, bool], Backend]
    tool: Callable[[ExportOptions], str]  # what the export runs with, for the log: 'torch 2.5.1, opset 17'
    packages: tuple[str, ...] = ()  # optional packages the export imports (module name = pip name)
    runtime: str | None = None  # a CPU runtime for a .pt: its --backend name, also its package ('onnxruntime')
    dynamic: bool = True  # can export --dynamic (any batch size and input size)
    half: bool = True  # can export --half (FP16 on CUDA)
    batch: int | None = None  # the one batch size it exports (ncnn: 1); None: any
    bf16: Callable[[], bool] | None = None  # --half on a CPU: computes in BF16 where this says the CPU can

    @property
    def prefix(self) -> str:
        return f"{self.title}:"

    @property
    def folder(self) -> bool:
        return not self.suffix.startswith(".")

    @property
    def pip(self) -> str:
        return f"pip install {' '.join(self.packages)}"

    def path_for(self, weights: Path) -> Path:
        """Where the export of ``weights`` goes: best.pt -> best.onnx, best_openvino_model/."""
        return weights.with_name(weights.stem + self.suffix)


FORMATS: dict[str, ExportFormat] = {}  # --include name -> record, in registration order


def register_format(fmt: ExportFormat) -> ExportFormat:
    """Add ``fmt`` to FORMATS (export.py's --include choices, models/backends.py's suffixes, --backend runtimes);
    its name and suffix must be new."""
    if fmt.name != fmt.name.lower() or not fmt.name.isidentifier() or fmt.name == "pytorch":
        raise ValueError(f"export format name {fmt.name!r}: use a lower-case identifier such as 'onnx', not 'pytorch' "
                         f"(a .pt's Backend.fmt)")
    if not fmt.suffix.startswith((".", "_")) or fmt.suffix == PYTORCH_SUFFIX:
        raise ValueError(f"export format {fmt.name!r}: suffix {fmt.suffix!r} must be a file suffix ('.onnx') or a "
                         f"folder ending ('_openvino_model'), and not {PYTORCH_SUFFIX}")
    for other in FORMATS.values():
        if fmt.name == other.name or fmt.suffix == other.suffix or (fmt.runtime and fmt.runtime == other.runtime):
            raise ValueError(f"export format {fmt.name!r} ({fmt.suffix}, runtime {fmt.runtime}) clashes with the "
                             f"registered {other.name!r} ({other.suffix}, runtime {other.runtime})")
    FORMATS[fmt.name] = fmt
    return fmt


def format_of(path: Path) -> ExportFormat | None:
    """The registered format whose suffix ``path`` has (a file suffix, or a folder-name ending); None if none."""
    return next((f for f in FORMATS.values() if path.name.endswith(f.suffix) and path.name != f.suffix), None)
