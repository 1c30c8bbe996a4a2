"""The README and docs/ stay true: every relative link points at a file that exists (and a #fragment at one of
its headings), and every command-line flag they name exists in that script's argparse parser (a flag in a
`python script.py ...` command must be that script's; a flag quoted alone in prose must be some script's)."""
from __future__ import annotations

import argparse
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ENTRY_POINTS = ["train.py", "val.py", "detect.py", "export.py", "compare.py", "models/yolo.py"]
# flags of tools that are not ours, named in the docs (torchrun's launcher, pip, TensorBoard, pytest)
FOREIGN = {"--nproc_per_node", "--nnodes", "--node_rank", "--master_addr", "--master_port", "--logdir",
           "--no-deps", "--dry-run-pip", "--headless"}
PYTHON = re.compile(r"(^|/)python3?$")


class _Parsed(BaseException):  # BaseException: a script's `except Exception` must not swallow it
    def __init__(self, parser: argparse.ArgumentParser, known_only: bool):
        self.parser, self.known_only = parser, known_only


def script_flags(script: str, cache: dict[str, set[str]] = {}) -> set[str]:  # noqa: B006 - a deliberate memo
    """The option strings of ``script``'s parser, caught at its first parse_args call (nothing else runs). A script
    that parses with parse_known_args hands the rest to train.py (compare.py, bench/ema_horizon.py): train.py's
    flags are its flags too."""
    if script not in cache:
        path = ROOT / script
        assert path.is_file(), f"the docs run {script}, which does not exist"

        def catch(known_only):
            def parse(self, *args, **kwargs):
                raise _Parsed(self, known_only)
            return parse

        mp = pytest.MonkeyPatch()
        mp.setattr(argparse.ArgumentParser, "parse_args", catch(False))
        mp.setattr(argparse.ArgumentParser, "parse_known_args", catch(True))
        mp.setattr(sys, "argv", [str(path)])
        mp.syspath_prepend(str(path.parent))
        try:
            runpy.run_path(str(path), run_name="__main__")
            raise AssertionError(f"{script} never parsed its arguments")
        except _Parsed as p:
            flags, forwards = {s for a in p.parser._actions for s in a.option_strings}, p.known_only
        finally:
            mp.undo()
        cache[script] = flags | (script_flags("train.py") if forwards and script != "train.py" else set())
    return cache[script]


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```(?:bash|sh|shell)?\n(.*?)```", text, flags=re.S)


def commands(text: str) -> list[list[str]]:
    """The shell commands of a doc's code blocks and inline code spans, as token lists."""
    lines = []
    for block in code_blocks(text):
        lines += block.replace("\\\n", " ").splitlines()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    lines += [span for span in re.findall(r"`([^`\n]+)`", prose) if re.search(r"(^|\s)(python3?|torchrun)\s", span)]
    out = []
    for line in lines:
        line = re.sub(r"(^|\s)#.*$", "", line)  # comments
        for part in re.split(r"&&|;|\|", line):
            try:
                tokens = shlex.split(part.replace("[", " ").replace("]", " "))
            except ValueError:  # an unbalanced quote in prose
                tokens = part.replace("[", " ").replace("]", " ").split()
            if tokens:
                out.append(tokens)
    return out


def script_of(tokens: list[str]) -> tuple[str | None, list[str]]:
    """(script, its arguments) for `python script.py ...` / `torchrun ... script.py ...`; (None, []) otherwise."""
    if not tokens or not (PYTHON.search(tokens[0]) or tokens[0] == "torchrun"):
        return None, []
    for i, t in enumerate(tokens[1:], 1):
        if t.endswith(".py"):
            return t, tokens[i + 1:]
        if t == "-m":  # python -m pytest, -m venv: not ours
            return None, []
    return None, []


def flags_in(args: list[str]) -> list[str]:
    return [a.split("=")[0] for a in args if re.fullmatch(r"--[a-z][a-z0-9_-]*(=.*)?", a)]


def test_every_relative_link_resolves():
    bad = []
    for doc in DOCS:
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            file, _, fragment = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            if not path.exists():
                bad.append(f"{doc.relative_to(ROOT)}: ({target}) -> no such file")
            elif fragment and path.suffix == ".md" and fragment not in anchors(path):
                bad.append(f"{doc.relative_to(ROOT)}: ({target}) -> no heading #{fragment} in {file or doc.name}")
    assert not bad, "\n".join(bad)


def anchors(md: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    heads = re.findall(r"^#+\s+(.*)$", re.sub(r"```.*?```", "", md.read_text(), flags=re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_every_flag_in_a_command_is_the_scripts():
    bad = []
    for doc in DOCS:
        for tokens in commands(doc.read_text()):
            script, args = script_of(tokens)
            if script is None:
                continue
            known = script_flags(script)
            bad += [f"{doc.relative_to(ROOT)}: {script} has no {f} ({' '.join(tokens)[:100]})"
                    for f in flags_in(args) if f not in known]
    assert not bad, "\n".join(bad)


def test_every_flag_named_in_prose_exists():
    known = set(FOREIGN)
    scripts = set(ENTRY_POINTS)
    for doc in DOCS:
        scripts |= {s for s, _ in map(script_of, commands(doc.read_text())) if s}
    for script in sorted(scripts):
        known |= script_flags(script)
    bad = []
    for doc in DOCS:
        prose = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        for span in re.findall(r"`([^`\n]+)`", prose):
            if script_of(span.split())[0]:
                continue  # a whole command: checked against its own script above
            bad += [f"{doc.relative_to(ROOT)}: `{span}` names {f}, which no script has"
                    for f in flags_in(span.replace("[", " ").replace("]", " ").split()) if f not in known]
    assert not bad, "\n".join(bad)


def test_readme_first_screen_is_short():
    """The first screen (up to the second section) answers what, why and how in about 200 words."""
    text = (ROOT / "README.md").read_text()
    first = re.sub(r"```.*?```|<!--.*?-->", " ", text.split("\n## ")[0] + text.split("\n## ")[1], flags=re.S)
    assert len(first.split()) <= 260, f"README's first screen has {len(first.split())} words"
    assert len(re.sub(r"```.*?```", " ", text, flags=re.S).split()) <= 1500


def test_readme_python_api_runs_as_written_on_a_trained_checkpoint(tiny_data, tmp_path, monkeypatch):
    """README's Python API block, run from a folder laid out as the quick start leaves it (runs/train/exp and the
    built-in dataset beside the repo), finds the checkpoint and the image and letterboxes to the training size."""
    import shutil

    import yaml

    import train
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    assert train.main(["--cfg", "yolov5n.yaml", "--data", str(tiny_data), "--epochs", "1", "--imgsz", "64",
                       "--batch-size", "8", "--workers", "0", "--project", "runs/train", "--name", "exp"]) == 0
    data = yaml.safe_load(tiny_data.read_text())
    image = sorted((Path(data["path"]) / "images" / "val").glob("*.jpg"))[0]
    (tmp_path / "datasets" / "shapes" / "images" / "val").mkdir(parents=True)
    shutil.copy(image, tmp_path / "datasets" / "shapes" / "images" / "val" / "000000.jpg")
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Python API\n.*?```python\n(.*?)```", text, flags=re.S).group(1)
    assert 'torch.hub.load(".", ' in block
    scope: dict = {}
    exec(block.replace('torch.hub.load(".", ', f'torch.hub.load({str(ROOT)!r}, '), scope)  # noqa: S102
    assert max(scope["results"].s[2:]) == 64  # the size it was trained at, not 640
