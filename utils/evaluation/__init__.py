"""Evaluation: detection metrics (mAP, confusion matrix), compare.py's statistics, plots and box drawing."""
