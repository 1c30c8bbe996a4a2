"""Export formats: one module per format holds its exporter and its loader and defines one ``ExportFormat``
(registry.py); export.py, models/backends.py and models/runtime.py read only the table ``FORMATS``.

A built-in format is one module here plus one entry below; any other module registers its own by calling
``register_format`` when it is imported (tests/toy_format.py)."""
from models.formats import ncnn, onnx, openvino, torchscript
from models.formats.registry import FORMATS, PYTORCH_SUFFIX, ExportFormat, ExportOptions, format_of, register_format

# The order is export.py's --include list and, among CPU runtimes, the preference of --backend auto (fastest first:
# bench/README.md "edge exports").
for _fmt in (torchscript.FORMAT, onnx.FORMAT, openvino.FORMAT, ncnn.FORMAT):
    register_format(_fmt)

__all__ = ["FORMATS", "PYTORCH_SUFFIX", "ExportFormat", "ExportOptions", "format_of", "register_format"]
