"""Run folders and small file helpers."""
from __future__ import annotations

import difflib
import glob
import os
import re
from pathlib import Path

import yaml

from utils import LOGGER


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


def default_weights(train_dir: str | Path) -> Path:
    """``--weights`` when none is given (detect.py, val.py): the newest ``train_dir/*/weights/best.pt`` by
    modification time, logged; none is one line saying what to train or pass."""
    found = sorted(Path(train_dir).glob("*/weights/best.pt"), key=os.path.getmtime)
    if not found:
        raise FileNotFoundError(f"no --weights given and no trained model to default to ({train_dir}/*/weights/"
                                f"best.pt): train one first (python train.py --cfg yolov5n.yaml) or pass "
                                f"--weights FILE (.pt, .torchscript or .onnx)")
    LOGGER.info(f"--weights not given: using the newest trained model, {found[-1]}")
    return found[-1]


def yaml_read(path: str | Path):
    """The value of a YAML file (any type). A syntax error is one ValueError line: file, line, column, problem."""
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ValueError(_yaml_error(path, e)) from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None


def _yaml_error(path: str | Path, e: yaml.YAMLError) -> str:
    """'file:line:column: invalid YAML: problem (context started on line n)', 1-based as editors count."""
    mark = getattr(e, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and cmark and (not mark or cmark.line != mark.line):
        context = f"{context} started on line {cmark.line + 1}"
    return f"{where}: invalid YAML: {problem}" + (f" ({context})" if context else "")


def yaml_load(path: str | Path) -> dict:
    """A YAML file that must hold a mapping (hyp, opt and compare files)."""
    d = yaml_read(path)
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a YAML mapping, got {type(d).__name__}")
    return d


def yaml_save(path: str | Path, data: dict) -> None:
    plain = {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(plain, f, sort_keys=False)


def find_in_dir(name: str | Path, folder: Path, kind: str, recursive: bool = False) -> Path:
    """A file by path, or by bare name (``.yaml`` optional) inside ``folder`` (and its subfolders with
    ``recursive``): model YAMLs in models/, dataset YAMLs in data/, hyp files in data/hyps. A miss is a clear
    error naming the nearest names."""
    p = Path(name)
    if p.is_file():
        return p
    fname = p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml"
    pool = sorted(folder.rglob("*.y*ml") if recursive else folder.glob("*.y*ml"))
    found = [f for f in pool if f.name == fname]
    if found:
        return found[0]
    names = sorted({f.name for f in pool})
    near = difflib.get_close_matches(fname, names, n=3)
    hint = f"did you mean {', '.join(near)}?" if near else f"available: {', '.join(names)}"
    raise FileNotFoundError(f"{kind} '{name}' not found as a file or by name in {folder} ({hint})")


def list_files(source: str | Path | list, suffixes: tuple[str, ...], recursive: bool = False,
               check_listed: bool = False) -> list[str]:
    """Files with one of ``suffixes`` (lower case, no dot) from a directory (its subfolders too with
    ``recursive``) or a glob, sorted, or a file; or the lines of a ``.txt`` list in their order (paths relative
    to the list's folder, blank and ``#`` lines skipped), taken as written unless ``check_listed`` (then a
    missing one is an error naming the line). A list of sources gives them one after another. Files of other
    suffixes are counted in the log."""
    files: list[str] = []
    other = 0
    for src in source if isinstance(source, (list, tuple)) else [source]:
        s, p = str(src), Path(src)
        if p.is_file() and p.suffix.lower() == ".txt":
            files += _read_list(p, check_listed)
            continue
        if any(c in s for c in "*?["):
            found = [f for f in glob.glob(s, recursive=True) if Path(f).is_file()]
            if not found:
                raise FileNotFoundError(f"glob {s!r} matches no files")
        elif p.is_dir():
            found = ([f for f in glob.glob(str(p / "**" / "*"), recursive=True) if Path(f).is_file()] if recursive
                     else [str(x) for x in p.iterdir() if x.is_file()])
        elif p.is_file():
            found = [s]
        else:
            raise FileNotFoundError(f"source {s!r} does not exist")
        keep = [f for f in found if f.rsplit(".", 1)[-1].lower() in suffixes]
        other += len(found) - len(keep)
        files += sorted(keep)
    if other:
        LOGGER.info(f"{source}: ignored {other} file(s) whose suffix is not one of {', '.join(suffixes)}")
    return [os.path.normpath(f) for f in files]


def _read_list(path: Path, check: bool) -> list[str]:
    """Paths of a ``.txt`` list, one a line; relative paths are relative to the list's folder."""
    files = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        f = Path(line) if Path(line).is_absolute() else path.parent / line
        if check and not f.is_file():
            raise FileNotFoundError(f"{path}:{lineno}: {line!r} is not a file")
        files.append(str(f))
    return files


def safe_filename(s: str) -> str:
    return re.sub(r"[^\w.-]+", "_", s)
