"""PyTorch Hub entry points, as YOLOv5's. Nothing is downloaded: weights are local files.

    model = torch.hub.load(".", "custom", path="runs/train/exp/weights/best.pt", source="local")  # or .onnx
    results = model(["a.jpg", pil_image, rgb_array])       # utils.hub.Detections
    model = torch.hub.load(".", "yolov5n_decoupled", nc=3, source="local")  # any models/*.yaml, random weights

``custom(path)`` loads a .pt checkpoint (ours or YOLOv5 v7.0's), .torchscript or .onnx through
models/backends.py, as detect.py does. Every ``models/<cfg>.yaml`` is an entry named after the file with '-' as
'_' (``yolov5n``, ``yolov5n_decoupled_af``, ``nanodet_plus_m``, ...). Models come wrapped in
``utils.hub.AutoShape`` unless ``autoshape=False``.
"""
import pathlib

dependencies = ["torch", "torchvision", "numpy", "cv2", "yaml", "PIL"]

_MODELS = pathlib.Path(__file__).resolve().parent / "models"


def custom(path, autoshape=True, device=None, half=False, fuse=True):
    """A trained model from ``path`` (.pt, .torchscript, .onnx) -> AutoShape; with ``autoshape=False`` the
    backend itself (``backend(im)``: (B, 3, H, W) in [0, 1] -> (B, N, 5 + nc) decoded, ``backend.model`` the
    DetectionModel of a .pt). ``device``: '' / None (CUDA if available), 'cpu', '0'; ``half``: FP16 .pt on CUDA;
    ``fuse``: fold BatchNorm into convolutions."""
    from models.backends import load_backend
    from utils.hub import AutoShape
    from utils.torch_utils import select_device

    p = pathlib.Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"custom(path={str(path)!r}): no such file ({p.resolve()}); weights are local "
                                f"files, nothing is downloaded")
    backend = load_backend(p, select_device(device or ""), half=half, fuse=fuse)
    return AutoShape(backend) if autoshape else backend


def _from_yaml(cfg: pathlib.Path, nc, autoshape, device, pretrained):
    from models.backends import backend_from_model
    from models.yolo import DetectionModel
    from utils.hub import AutoShape
    from utils.torch_utils import select_device

    if pretrained:
        raise ValueError(f"{_entry_name(cfg)}(pretrained=True): HeadZoo ships no weights and downloads nothing; "
                         f"load trained ones with custom(path='runs/train/exp/weights/best.pt')")
    dev = select_device(device or "")
    model = DetectionModel(cfg, nc=nc).to(dev)
    if not autoshape:
        return model
    return AutoShape(backend_from_model(model.fuse(), cfg, dev))


def _entry_name(cfg: pathlib.Path) -> str:
    return cfg.stem.replace("-", "_")


def _yaml_entry(cfg: pathlib.Path):
    def entry(nc=None, autoshape=True, device=None, pretrained=False):
        return _from_yaml(cfg, nc, autoshape, device, pretrained)

    entry.__name__ = entry.__qualname__ = _entry_name(cfg)
    entry.__doc__ = (f"{cfg.name} with random weights and ``nc`` classes (default: the YAML's) -> AutoShape; with "
                     f"``autoshape=False`` the DetectionModel. ``pretrained=True`` is an error: nothing downloads.")
    return entry


for _cfg in sorted(_MODELS.glob("*.yaml")):
    if not _entry_name(_cfg).isidentifier():
        raise ValueError(f"{_cfg}: the file name does not make a Python name for a hub entry ({_entry_name(_cfg)})")
    globals()[_entry_name(_cfg)] = _yaml_entry(_cfg)
