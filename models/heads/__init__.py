"""Name -> class table of detection heads usable as the last row of a model YAML.

Adding a head is one line here."""
from models.heads.base import Head
from models.heads.detect import Detect, DetectDcoupleHead
from models.heads.gfl import GFLHead, NanoDetPlusHead
from models.heads.rcnn import FasterRCNNHead
from models.heads.rtmdet import RTMDetHead
from models.heads.tv_dense import FCOSHead, RetinaNetHead
from models.heads.v8 import V8Head
from models.heads.v10 import V10Head
from models.heads.yolox import YOLOXHead
from utils.assigners import assigner_hyp_keys

HEADS: dict[str, type[Head]] = {
    "Detect": Detect,
    "DetectDcoupleHead": DetectDcoupleHead,
    "YOLOXHead": YOLOXHead,
    "GFLHead": GFLHead,
    "NanoDetPlusHead": NanoDetPlusHead,  # the same class under NanoDet's name
    "FasterRCNNHead": FasterRCNNHead,  # torchvision's two-stage detector
    "RTMDetHead": RTMDetHead,
    "V8Head": V8Head,  # YOLOv8 / YOLO11 (Ultralytics' Detect)
    "V10Head": V10Head,  # YOLOv10's NMS-free head (Ultralytics' v10Detect)
    "FCOSHead": FCOSHead,  # torchvision's FCOS and RetinaNet above the backbone
    "RetinaNetHead": RetinaNetHead,
}


def all_hyp_keys() -> tuple[str, ...]:
    """The head-specific hyp keys a hyp file may hold: every registered head's and every assigner's (one hyp file
    serves every arm of a comparison; each head reads only its own). For ``utils.io.hyp.check_hyp``."""
    keys = {k for head in HEADS.values() for k in head.hyp_keys} | set(assigner_hyp_keys())
    return tuple(sorted(keys))
