"""Datasets and inputs: YOLO-format datasets and their loader (dataloaders), augmentation, detect.py's sources (images, videos, streams)."""
