"""The assigners' name table and their options.

An assigner's options are its keyword-only arguments, with their defaults (``assigner_options``): the function
is the one place that declares them. A head row names the assigner, alone (``simota``) or with options
(``{name: simota, center_radius: 3.0}``); a hyp file sets an option under the assigner's name
(``simota_center_radius``). ``assigner_from`` binds both -- the row's over the hyp file's, since one hyp file
serves every arm of a comparison while a row is one model -- and passes them to the function unchanged.
"""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

from utils.assigners.base import Assignment
from utils.assigners.center import center_assign
from utils.assigners.dsl import dsl_assign
from utils.assigners.simota import simota_assign
from utils.assigners.tal import tal_assign

ASSIGNERS: dict[str, Callable[..., Assignment]] = {  # names usable in YAML rows
    "simota": simota_assign, "center": center_assign, "dsl": dsl_assign, "tal": tal_assign}


def get_assigner(name: str) -> Callable[..., Assignment]:
    """The assigner called ``name`` in ``ASSIGNERS``; a clear error naming the known ones."""
    if not isinstance(name, str) or name not in ASSIGNERS:
        raise ValueError(f"assigner {name!r} not known; use one of {', '.join(ASSIGNERS)}")
    return ASSIGNERS[name]


def assigner_options(name: str) -> dict[str, Any]:
    """Option name -> default of the assigner ``name``: its keyword-only arguments."""
    params = inspect.signature(get_assigner(name)).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def assigner_hyp_keys(names=None) -> tuple[str, ...]:
    """The hyp keys of the assigners ``names`` (default: all), ``<assigner>_<option>``."""
    return tuple(f"{n}_{k}" for n in (ASSIGNERS if names is None else names) for k in assigner_options(n))


def _check_value(name: str, key: str, value, default) -> None:
    """A bool option takes a bool, a number option a number (an int where the default is one)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:  # a float, or None where the assigner resolves the default itself
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = number or (value is None and default is None)
    if not ok:
        raise ValueError(f"assigner {name!r}: option {key!r} must be like its default {default!r}, got {value!r}")


def check_assigner_options(name: str, options: dict) -> None:
    """ValueError in one line for an unknown assigner, an unknown option (with the nearest one and the valid
    ones) or an option value of the wrong type."""
    known = assigner_options(name)
    for key, value in options.items():
        if key not in known:
            near = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            valid = ", ".join(f"{k}={v!r}" for k, v in known.items()) or "none"
            raise ValueError(f"assigner {name!r}: unknown option {key!r}{hint}; its options: {valid}")
        _check_value(name, key, value, known[key])


def parse_assigner(spec) -> tuple[str, dict]:
    """A head row's ``assigner`` argument -> (name, row options): ``simota`` or ``{name: simota, opt: value}``."""
    if isinstance(spec, dict):
        options = dict(spec)
        name = options.pop("name", None)
        if name is None:
            raise ValueError(f"assigner {spec!r}: a mapping needs 'name', e.g. {{name: simota, center_radius: 3.0}}")
    else:
        name, options = spec, {}
    check_assigner_options(name, options)
    return name, options


def assigner_from(name: str, hyp: dict | None = None, row_options: dict | None = None) -> partial:
    """The assigner ``name`` with its options bound: ``<name>_<option>`` keys of ``hyp``, then ``row_options``
    over them; options set nowhere keep the assigner's defaults. Called as the assigner is, without options."""
    hyp = hyp or {}
    options = {k: hyp[f"{name}_{k}"] for k in assigner_options(name) if f"{name}_{k}" in hyp}
    options.update(row_options or {})
    check_assigner_options(name, options)
    return partial(get_assigner(name), **options)
