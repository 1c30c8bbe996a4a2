"""The experiment: its arms (a model YAML, optionally with its own train.py flags), the pairs asked for, the
train.py recipe every arm shares, and the folder layout ``<exp>/<arm name>/seed<s>/``."""
from __future__ import annotations

import argparse
import os
import re
import shlex
from pathlib import Path

import train
from utils import LOGGER
from utils.io.files import increment_path, yaml_load, yaml_save

ROOT = Path(__file__).resolve().parents[1]
SET_BY_COMPARE = ("cfg", "seed", "project", "name", "exist_ok", "resume")  # train.py options compare.py owns
TRACKERS = ("mlflow", "wandb")  # train.py options that log a run without changing it: not part of the pairing


def train_recipe(train_args: list[str]) -> dict:
    """train.py's options for ``train_args`` without the ones compare.py sets per run; an error when the
    caller tried to set one of those (they would break the pairing or the run layout)."""
    given, default = vars(train.parse_opt(train_args)), vars(train.parse_opt([]))
    owned = [k for k in SET_BY_COMPARE if given[k] != default[k]]
    if owned:
        raise ValueError(f"compare.py sets {', '.join('--' + k.replace('_', '-') for k in owned)} itself: "
                         f"use --seeds N (seeds 0..N-1), --project/--name/--exist-ok/--resume of compare.py")
    return {k: str(v) if isinstance(v, Path) else v for k, v in given.items() if k not in SET_BY_COMPARE}


def newest_experiment(project: Path) -> Path:
    found = sorted(project.glob("*/compare.yaml"), key=os.path.getmtime)
    if not found:
        raise FileNotFoundError(f"--resume: no compare.yaml below {project}; give the folder, e.g. "
                                f"--resume runs/compare/exp2")
    return found[-1].parent


def setup_experiment(opt: argparse.Namespace, train_args: list[str]) -> tuple[Path, dict]:
    """The exp folder and its plan ``{cfg, seeds, train_args, recipe}``, saved as compare.yaml. A reused folder
    must have been made with the same train.py recipe (cfgs and seeds may grow)."""
    if opt.resume:
        exp = newest_experiment(Path(opt.project)) if opt.resume is True else Path(opt.resume)
        if not (exp / "compare.yaml").is_file():
            raise FileNotFoundError(f"--resume {opt.resume}: {exp / 'compare.yaml'} not found")
        plan = yaml_load(exp / "compare.yaml")
        if train_args or opt.cfg:
            LOGGER.warning(f"--resume: using the cfgs, seeds and train.py flags of {exp / 'compare.yaml'}; "
                           f"ignoring {' '.join((opt.cfg or []) + train_args)}")
        return exp, plan
    exp = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
    stems = [arm_name(c) for c in opt.cfg]
    if len(set(stems)) != len(stems):
        raise ValueError(f"--cfg {' '.join(opt.cfg)}: two arms share a name (cfg file stem + own flags); runs are "
                         f"stored by it")
    for arm in opt.cfg:
        train_recipe(split_arm(arm)[1])  # an arm's own flags are train.py flags too, and may not set seed etc.
    plan = {"cfg": list(opt.cfg), "seeds": opt.max_seeds if opt.decide else opt.seeds,
            "train_args": list(train_args), "recipe": train_recipe(train_args), "budget_min": opt.budget_time,
            "pairs": list(opt.pairs)}
    if opt.decide:
        plan["decide"] = {"max_seeds": opt.max_seeds, "margin": opt.margin, "alpha": opt.alpha}
    old = exp / "compare.yaml"
    if old.is_file():
        before = {**train_recipe([]), **yaml_load(old).get("recipe", {})}  # a flag added since: its default then
        diff = sorted(k for k in set(before) | set(plan["recipe"])
                      if before.get(k) != plan["recipe"].get(k) and k not in TRACKERS)
        if diff:
            changes = "; ".join(f"{k}: {before.get(k)!r} then, {plan['recipe'].get(k)!r} now" for k in diff)
            raise ValueError(f"{old} was made with other train.py options ({changes}); runs of another recipe "
                             f"are not paired: use a new --name")
    exp.mkdir(parents=True, exist_ok=True)
    yaml_save(old, plan)
    return exp, plan


def split_arm(arm: str) -> tuple[str, list[str]]:
    """An arm of --cfg: a model YAML, optionally followed (in one quoted argument) by train.py flags for this
    arm only: ``"yolov5n-decoupled.yaml --precise-bn 0"`` -> ``("yolov5n-decoupled.yaml", ["--precise-bn", "0"])``."""
    parts = shlex.split(arm)
    if not parts:
        raise ValueError("--cfg: an empty arm")
    return parts[0], parts[1:]


def arm_name(arm: str) -> str:
    """Folder and label of an arm: the cfg's file stem, then its own flags (``yolov5n-decoupled_precise-bn_0``)."""
    cfg, flags = split_arm(arm)
    return "_".join([Path(cfg).stem, *(re.sub(r"[^\w.+-]", "", f.lstrip("-")) for f in flags)])


def resolve_pairs(pairs: list[str], cfgs: list[str]) -> list[tuple[str, str]]:
    """``--pairs ARM:BASE`` items -> (arm, base) cfgs of ``cfgs``; each side named by its cfg as given or its
    folder name (``arm_name``). An error names the item and the arms there are."""
    names = {**{arm_name(c): c for c in cfgs}, **{c: c for c in cfgs}}
    out = []
    for item in pairs:
        arm, sep, base = item.rpartition(":")
        if not sep or arm not in names or base not in names or names[arm] == names[base]:
            raise ValueError(f"--pairs {item}: expected ARM:BASE, two different arms of --cfg "
                             f"({', '.join(arm_name(c) for c in cfgs)})")
        out.append((names[arm], names[base]))
    return out


def run_dir(exp: Path, cfg: str, seed: int) -> Path:
    return exp / arm_name(cfg) / f"seed{seed}"
