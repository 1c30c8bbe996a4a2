"""Synthetic dataset generators, selected by the ``generator`` key of a dataset YAML's ``generate:`` section."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from data.generators import shapes


def ensure_generated(root: str | Path, spec: dict, source: str = "", log: Callable[[str], None] = print,
                     names: list[str] | None = None) -> Path:
    """Generate the dataset described by ``spec`` (a YAML ``generate:`` mapping) into ``root`` unless it is
    already there with the same settings. ``names`` (the YAML's class names, in order) must be as many as the
    classes it draws and, when they are shape names, those shapes in the same order. ``source`` names the YAML
    file in errors."""
    spec = dict(spec)
    name = spec.pop("generator", "shapes")
    if name != "shapes":
        raise ValueError(f"{source or 'generate'}: unknown generator {name!r}; available: ['shapes']")
    cfg = shapes.ShapesConfig.from_dict(spec, source=source)
    if names is not None and (len(names) != len(cfg.classes) or
                              set(names) <= set(shapes.CLASS_NAMES) and list(names) != list(cfg.classes)):
        raise ValueError(f"{source or 'generate'}: names {list(names)} do not match the generated classes "
                         f"{list(cfg.classes)} (generate.classes, default all of {list(shapes.CLASS_NAMES)})")
    return shapes.ensure(Path(root), cfg, log=log)
