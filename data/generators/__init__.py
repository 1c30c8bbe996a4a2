"""Synthetic dataset generators, selected by the ``generator`` key of a dataset YAML's ``generate:`` section."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from data.generators import shapes


def ensure_generated(root: str | Path, spec: dict, source: str = "", log: Callable[[str], None] = print) -> Path:
    """Generate the dataset described by ``spec`` (a YAML ``generate:`` mapping) into ``root`` unless it is
    already there with the same settings. ``source`` names the YAML file in errors."""
    spec = dict(spec)
    name = spec.pop("generator", "shapes")
    if name != "shapes":
        raise ValueError(f"{source or 'generate'}: unknown generator {name!r}; available: ['shapes']")
    cfg = shapes.ShapesConfig.from_dict(spec, source=source)
    return shapes.ensure(Path(root), cfg, log=log)
