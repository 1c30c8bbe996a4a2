"""Run folders and small file helpers."""
from __future__ import annotations

import os
import re
from pathlib import Path

import yaml


def increment_path(path: str | Path, exist_ok: bool = False, mkdir: bool = False) -> Path:
    """runs/train/exp -> runs/train/exp2, exp3, ... (the first free one) unless ``exist_ok``."""
    path = Path(path)
    if path.exists() and not exist_ok:
        stem, suffix = (path.with_suffix(""), path.suffix) if path.is_file() else (path, "")
        n = 2
        while Path(f"{stem}{n}{suffix}").exists():
            n += 1
        path = Path(f"{stem}{n}{suffix}")
    if mkdir:
        path.mkdir(parents=True, exist_ok=True)
    return path


def latest_run(search_dir: str | Path = "runs", pattern: str = "last.pt") -> Path:
    """The most recently written ``pattern`` file below ``search_dir``, for a bare ``--resume``."""
    found = [p for p in Path(search_dir).rglob(pattern)]
    if not found:
        raise FileNotFoundError(f"--resume: no {pattern} found below {Path(search_dir).resolve()}; "
                                f"pass the checkpoint path, e.g. --resume runs/train/exp/weights/last.pt")
    return max(found, key=os.path.getmtime)


def yaml_load(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as f:
        d = yaml.safe_load(f)
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a YAML mapping, got {type(d).__name__}")
    return d


def yaml_save(path: str | Path, data: dict) -> None:
    plain = {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(plain, f, sort_keys=False)


def find_in_dir(name: str | Path, folder: Path, kind: str) -> Path:
    """A file by path, or by bare name inside ``folder`` (e.g. ``hyp.scratch-low.yaml`` in data/hyps)."""
    p = Path(name)
    if p.is_file():
        return p
    for candidate in (folder / p.name, folder / f"{p.name}.yaml"):
        if candidate.is_file():
            return candidate
    available = ", ".join(sorted(x.name for x in folder.glob("*.yaml")))
    raise FileNotFoundError(f"{kind} '{name}' not found as a file or in {folder} (available: {available})")


def safe_filename(s: str) -> str:
    return re.sub(r"[^\w.-]+", "_", s)
