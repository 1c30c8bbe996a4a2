"""YOLOv5's hyperparameter evolution (``train.py --evolve N``): generation g trains a short run on a mutation of a
parent drawn from the best generations so far and appends its results and hyp to evolve.csv.

The training itself is the caller's (``train_generation(opt, hyp, save_dir) -> {results.csv metric: value}``), so
this module runs any trainer; the mutation table (key -> gain, limits) is the caller's too: the pipeline's keys
plus the ones the model's head reads.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from utils import LOGGER
from utils.evaluation.metrics import fitness
from utils.evaluation.plots import plot_evolve
from utils.io.files import yaml_load
from utils.io.hyp import append_evolve_csv, mutate_hyp, read_evolve_csv
from utils.io.results import MAP

EVOLVE_TAG = 0x4556  # seed-sequence tag: these draws never share a stream with the data's
EVOLVE_PARENTS = 5  # the parent is drawn from the best 5 generations, weighted by fitness (YOLOv5)
TrainGeneration = Callable[[argparse.Namespace, dict, Path], dict]


def evolve(opt: argparse.Namespace, train_generation: TrainGeneration, meta: dict) -> None:
    """Generations ``done .. opt.evolve - 1`` into ``opt.save_dir``: each trains ``train_generation`` on the
    base hyp (the first) or a mutation (``meta``: key -> (gain, low, high), ``utils.io.hyp.evolve_meta``) of a parent
    from the best so far, and appends its results and hyp to evolve.csv; hyp_evolve.yaml holds the best
    generation's hyp, evolve.png each key against fitness. Generations already in evolve.csv are not run again,
    so re-running the command continues it."""
    save_dir = Path(opt.save_dir)
    csv = save_dir / "evolve.csv"
    base = yaml_load(opt.hyp)
    done = len(read_evolve_csv(csv)[1])
    LOGGER.info(f"evolve: {done} of {opt.evolve} generations done in {save_dir}")
    for gen in range(done, opt.evolve):
        hyp = evolve_hyp(base, csv, opt.seed, gen, meta)
        results = train_generation(opt, hyp, save_dir / "generations" / f"gen{gen}")
        append_evolve_csv(csv, results, {k: v for k, v in hyp.items() if _is_number(v)})
        header, rows = read_evolve_csv(csv)
        fits = fitness(rows)
        write_best_hyp(save_dir / "hyp_evolve.yaml", header, rows, fits, len(results), base)
        LOGGER.info(f"evolve: generation {gen + 1}/{opt.evolve} fitness {fits[-1]:.5f}, best {fits.max():.5f}")
    header, rows = read_evolve_csv(csv)
    plot_evolve(csv, header.index(MAP) + 1 + sum(h.startswith("val/") for h in header), fitness(rows))
    LOGGER.info(f"evolve: results in {csv}, best hyp in {save_dir / 'hyp_evolve.yaml'}; use it with "
                f"--hyp {save_dir / 'hyp_evolve.yaml'}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def evolve_hyp(base: dict, csv: Path, seed: int, gen: int, meta: dict) -> dict:
    """Generation ``gen``'s hyp: ``base`` for the first, else the mutation (``meta``) of a parent drawn from the
    best EVOLVE_PARENTS rows of ``csv`` with weights fitness - min + 1e-6; every draw from (seed, gen)."""
    header, rows = read_evolve_csv(csv)
    if not len(rows):
        return dict(base)
    rng = np.random.default_rng([seed, gen, EVOLVE_TAG])
    fits = fitness(rows)
    top = np.argsort(-fits)[:EVOLVE_PARENTS]
    w = fits[top] - fits[top].min() + 1e-6
    row = rows[top[rng.choice(len(top), p=w / w.sum())]]
    parent = {k: (float(row[header.index(k)]) if k in header else v) for k, v in base.items()}
    return mutate_hyp(parent, rng, meta)


def write_best_hyp(path: Path, header: list[str], rows: np.ndarray, fits: np.ndarray, n_results: int,
                   base: dict) -> None:
    """hyp_evolve.yaml: the fittest generation's hyp (non-numeric keys from ``base``) under a comment header."""
    best = int(np.argmax(fits))
    hyp = {k: (float(rows[best, header.index(k)]) if k in header[n_results:] else v) for k, v in base.items()}
    title = f"# HeadZoo hyperparameter evolution: best of {len(rows)} generations (generation {best}), "
    lines = [title + f"fitness {fits[best]:.5f}"] + [f"# {k}: {rows[best, j]:.5g}" for j, k in
                                                     enumerate(header[:n_results])]
    path.write_text("\n".join(lines) + "\n" + yaml.safe_dump(hyp, sort_keys=False))
