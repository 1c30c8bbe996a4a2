"""Download a dataset on request: the files of a data YAML's ``download:`` list, resumable and checksum-verified,
unpacked into the YAML's ``path``. Nothing else in HeadZoo downloads.

    python data/download.py coco128        # 7 MB: COCO train2017's first 128 images, YOLO labels
    python data/download.py coco           # 20 GB: COCO 2017 train/val images and the official JSON annotations
    python data/download.py voc            # 2.9 GB: Pascal VOC 2007 trainval+test and 2012 trainval (XML)
    python data/download.py my.yaml --keep # any data YAML with a download: list; keep the archives

An interrupted run resumes where it stopped (run the same command again).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from utils import LOGGER  # noqa: E402
from utils.data.config import resolve_data_yaml  # noqa: E402
from utils.io.download import DownloadError, download_dataset, parse_assets  # noqa: E402
from utils.io.files import yaml_read  # noqa: E402


def dataset_yaml(name: str) -> Path:
    """A data YAML by path or by name in data/, the name's case ignored (``voc`` -> data/VOC.yaml)."""
    by_lower = {p.stem.lower(): p for p in (ROOT / "data").glob("*.yaml")}
    return by_lower.get(name.lower().removesuffix(".yaml")) or resolve_data_yaml(name)


def download(data: str, keep: bool = False, **fetch_kw) -> Path:
    """Fetch the dataset of data YAML ``data`` into its path; returns that folder."""
    yaml_file = dataset_yaml(data)
    d = yaml_read(yaml_file)
    if not isinstance(d, dict) or not d.get("download"):
        raise ValueError(f"{yaml_file}: no 'download' list, nothing to fetch")
    assets = parse_assets(d["download"], str(yaml_file))
    root = Path(d.get("path") or yaml_file.stem)
    root = root if root.is_absolute() else (ROOT / root).resolve()
    LOGGER.info(f"{yaml_file.name}: {len(assets)} file(s) into {root}")
    return download_dataset(root, assets, keep=keep, **fetch_kw)


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="dataset YAML with a download: list (path, or name in data/: coco, coco128, voc)")
    p.add_argument("--keep", action="store_true", help="keep the downloaded archives after unpacking")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    opt = parse_opt(argv)
    try:
        root = download(opt.data, opt.keep)
    except (DownloadError, ValueError, FileNotFoundError) as e:
        LOGGER.error(f"ERROR: {e}")
        return 1
    LOGGER.info(f"done: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
