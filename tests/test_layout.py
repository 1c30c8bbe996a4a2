"""Imports flow one way (STYLE.md): entry points -> models/utils; utils never imports models; models never
import data loading (utils.data), evaluation (metrics, plots) or cv2; models/common.py imports torch only."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = {"train", "val", "detect", "export", "compare"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("path", sorted((ROOT / "utils").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_utils_never_import_models_or_entry_points(path):
    bad = {m for m in imported_modules(path) if top(m) in {"models"} | ENTRY_POINTS}
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", sorted((ROOT / "models").rglob("*.py")), ids=lambda p: p.name)
def test_models_never_import_data_plots_metrics_cv2(path):
    forbidden = {"cv2", "matplotlib", "utils.data", "utils.evaluation"} | ENTRY_POINTS
    bad = {m for m in imported_modules(path) if top(m) in forbidden or m in forbidden
           or any(m.startswith(f + ".") for f in forbidden)}
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_common_imports_torch_only():
    mods = {top(m) for m in imported_modules(ROOT / "models" / "common.py")}
    assert mods <= {"torch", "math", "__future__"}, mods


def test_no_general_grab_bag():
    assert not (ROOT / "utils" / "general.py").exists()


def test_utils_is_grouped_by_concern():
    """The folders are the map (README "Layout"): data, losses, assigners, evaluation, io, hub, plus three
    shared modules; a new module goes into the folder of its concern."""
    top_level = sorted(p.name for p in (ROOT / "utils").glob("*.py"))
    assert top_level == ["__init__.py", "autoanchor.py", "boxes.py", "torch_utils.py"], top_level
    for pkg in ("data", "losses", "assigners", "evaluation", "io", "hub"):
        assert (ROOT / "utils" / pkg / "__init__.py").is_file(), pkg


def test_losses_flow_to_assigners_to_boxes():
    """losses -> assigners -> boxes, never back."""
    for path in (ROOT / "utils" / "assigners").rglob("*.py"):
        assert not any(m.startswith("utils.losses") for m in imported_modules(path)), path
    boxes = imported_modules(ROOT / "utils" / "boxes.py")
    assert not any(m.startswith(("utils.losses", "utils.assigners")) for m in boxes)
