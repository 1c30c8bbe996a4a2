"""Training: the hooks train.py's Trainer calls (hooks.py)."""
