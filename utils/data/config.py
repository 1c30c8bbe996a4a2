"""Dataset YAMLs and file lists: ``check_dataset`` (a data YAML resolved, its splits checked, a generated dataset
written on first use), the images of a split and their label files (YOLOv5's images/ -> labels/ rule)."""
from __future__ import annotations

import glob
import os
from pathlib import Path

from utils import LOGGER
from utils.data.annotations import coco_names, resolve_spec, spec_exists, spec_kind
from utils.data.sources import IMG_FORMATS
from utils.io.files import find_in_dir, list_files, yaml_read

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ dataset YAMLs
def resolve_data_yaml(data: str | Path) -> Path:
    """A dataset YAML path: as given if it exists, else the bare name (``.yaml`` optional) in data/."""
    return find_in_dir(data, ROOT / "data", "dataset YAML").resolve()


def _names_dict(names, source: Path) -> dict[int, str]:
    if isinstance(names, (list, tuple)):
        return {i: str(n) for i, n in enumerate(names)}
    if isinstance(names, dict) and all(isinstance(k, int) for k in names):
        return {k: str(names[k]) for k in sorted(names)}
    raise ValueError(f"{source}: 'names' must be a list or a {{int: name}} mapping, got {names!r}")


def _resolve_split(value, root: Path, key: str, source: Path) -> str | dict | list:
    """A split as absolute paths: a YOLO path (folder, glob, .txt list), a COCO/VOC entry (a mapping,
    utils/data/annotations.py) or a list of those."""
    if isinstance(value, (str, Path)):
        return str((root / value).resolve()) if "*" not in str(value) else str(root / value)
    if isinstance(value, dict):
        return resolve_spec(value, root, key, source)
    if isinstance(value, (list, tuple)) and value:
        return [_resolve_split(v, root, key, source) for v in value]
    raise ValueError(f"{source}: '{key}' must be a path, a {{coco: ..}} / {{voc: ..}} entry or a list of them, "
                     f"got {value!r}")


def _split_present(value) -> bool:
    return spec_exists(value) if spec_kind(value) else bool(glob.glob(value))


def _names_from_coco(d: dict, root: Path, source: Path) -> dict:
    """``names`` may be left out when a split is a COCO JSON: its categories, sorted by id."""
    for k in ("val", "train"):
        entries = d.get(k) if isinstance(d.get(k), list) else [d.get(k)]
        spec = next((e for e in entries if spec_kind(e) == "coco"), None)
        if spec is not None:
            spec = resolve_spec(spec, root, k, source)
            if Path(spec["coco"]).is_file():
                return {**d, "names": coco_names(spec["coco"])}
    return d


def check_dataset(data: str | Path) -> dict:
    """Load a dataset YAML (a path, or a name in data/) and return it with absolute ``path``, ``train``,
    ``val`` (``test``), ``names`` as {int: str} and ``nc``. A split is a YOLO path or a COCO/VOC entry
    (utils/data/annotations.py). A YAML with a ``generate:`` section has its dataset generated on first use;
    otherwise a missing val path is an error (nothing is downloaded unasked: data/download.py does it on request)."""
    yaml_file = resolve_data_yaml(data)
    d = yaml_read(yaml_file)
    if not isinstance(d, dict):
        raise ValueError(f"{yaml_file}: expected a mapping with train/val/names, got {type(d).__name__}")
    root = Path(d.get("path") or "") if isinstance(d.get("path") or "", str) else Path()
    root = root if root.is_absolute() else (ROOT / root).resolve()
    if "names" not in d:
        d = _names_from_coco(d, root, yaml_file)
    missing_keys = [k for k in ("train", "val", "names") if k not in d]
    if missing_keys:
        raise ValueError(f"{yaml_file}: missing key(s) {missing_keys} (need train, val, names; names may be "
                         f"left out when a split is a COCO JSON)")
    names = _names_dict(d["names"], yaml_file)
    if not names:
        raise ValueError(f"{yaml_file}: 'names' lists no class")
    if "nc" in d and d["nc"] != len(names):
        raise ValueError(f"{yaml_file}: nc={d['nc']!r} but {len(names)} names are listed")
    empty = [k for k in ("train", "val") if not d[k]]
    if empty:
        raise ValueError(f"{yaml_file}: {' and '.join(repr(k) for k in empty)} must be a path or a list of paths, "
                         f"got nothing")
    if not isinstance(d.get("path") or "", str):
        raise ValueError(f"{yaml_file}: 'path' must be a folder path, got {d['path']!r}")
    root = Path(d.get("path") or "")
    root = root if root.is_absolute() else (ROOT / root).resolve()
    out = {**d, "path": str(root), "names": names, "nc": len(names), "yaml_file": str(yaml_file)}
    for k in ("train", "val", "test"):
        if d.get(k):
            out[k] = _resolve_split(d[k], root, k, yaml_file)
    if "generate" in d:
        from data.generators import (
            ensure_generated,  # data/ is optional for users of real datasets only
        )

        ensure_generated(root, d["generate"], source=str(yaml_file), log=LOGGER.info, names=list(names.values()))
    vals = out["val"] if isinstance(out["val"], list) else [out["val"]]
    missing = [v for v in vals if not _split_present(v)]
    if missing:
        name = yaml_file.stem if yaml_file.parent == ROOT / "data" else yaml_file
        how = f"download it with `python data/download.py {name}`" if d.get("download") else "put the dataset"
        raise FileNotFoundError(
            f"{yaml_file}: dataset not found, missing {missing}. Nothing is downloaded unasked: {how} under {root} "
            f"or change 'path' in {yaml_file.name}")
    return out


# ------------------------------------------------------------------ file lists
def list_images(path: str | Path | list) -> list[str]:
    """Sorted image files of a directory (recursive), a glob, a ``.txt`` list (lines relative to the list's
    folder, taken as written so a wrong format is reported by the checks, not hidden) or a list of those."""
    return sorted(list_files(path, IMG_FORMATS, recursive=True))


def img2label_paths(im_files: list[str]) -> list[str]:
    """YOLOv5's rule: the last ``/images/`` of the path becomes ``/labels/`` and the suffix ``.txt``."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return [sb.join(x.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt" for x in im_files]
