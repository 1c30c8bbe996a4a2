"""Files: checkpoints (weights_only loading, YOLOv5 .pt reading, weight transfer), run folders, YAML, name lookup, file lists."""
