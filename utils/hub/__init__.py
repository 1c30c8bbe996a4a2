"""The Python API of ``hubconf.py`` (YOLOv5's PyTorch Hub interface): ``AutoShape`` takes images in any common
form and returns ``Detections``. The model behind it is any loaded backend (``models.backends.Backend``); it is
built by hubconf.py, so nothing here imports ``models``."""
from utils.hub.autoshape import AutoShape, Predictor
from utils.hub.detections import Detections

__all__ = ["AutoShape", "Detections", "Predictor"]
