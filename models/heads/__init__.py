"""Name -> class table of detection heads usable as the last row of a model YAML.

Adding a head is one line here."""
from models.heads.base import Head
from models.heads.detect import Detect, DetectDcoupleHead
from models.heads.gfl import GFLHead, NanoDetPlusHead
from models.heads.rcnn import FasterRCNNHead
from models.heads.yolox import YOLOXHead

HEADS: dict[str, type[Head]] = {
    "Detect": Detect,
    "DetectDcoupleHead": DetectDcoupleHead,
    "YOLOXHead": YOLOXHead,
    "GFLHead": GFLHead,
    "NanoDetPlusHead": NanoDetPlusHead,  # the same class under NanoDet's name
    "FasterRCNNHead": FasterRCNNHead,  # torchvision's two-stage detector
}
