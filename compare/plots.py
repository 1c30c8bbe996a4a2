"""Plot helpers the statistics share: a headless figure, seed bands, the Pareto front, labels moved apart."""
from __future__ import annotations

import numpy as np

from compare.summary import ArmSummary


def figure(ncols: int = 1):
    """A matplotlib Figure on the Agg canvas (no display, no pyplot state) and its ``ncols`` axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7 * ncols, 5), tight_layout=True)
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def seed_curves(arm: ArmSummary, attr: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs (E,), values (seeds, E) with nan where a seed logged no such epoch)."""
    epochs = np.unique(np.concatenate([r.epochs for r in arm.runs.values()]))
    y = np.full((len(arm.runs), len(epochs)), np.nan)
    for i, r in enumerate(arm.runs.values()):
        y[i, np.searchsorted(epochs, r.epochs)] = getattr(r, attr)
    return epochs, y


def plot_band(ax, arm: ArmSummary, attr: str) -> None:
    """Mean over seeds as a line, the seeds' min-max as a band; epochs no seed logged a value of (a head without a
    validation loss: all of them) are left out."""
    epochs, y = seed_curves(arm, attr)
    logged = np.isfinite(y).any(0)
    if not logged.any():
        return
    epochs, y = epochs[logged], y[:, logged]
    line = ax.plot(epochs, np.nanmean(y, 0), marker=".", linewidth=2, label=f"{arm.name} (n={len(y)})")[0]
    if len(y) > 1:
        ax.fill_between(epochs, np.nanmin(y, 0), np.nanmax(y, 0), color=line.get_color(), alpha=0.2, linewidth=0)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (lower or equal x = cost, higher or equal y = accuracy, one of
    them strictly), ordered by x."""
    keep = [i for i, (x, y) in enumerate(points)
            if not any(x2 <= x and y2 >= y and (x2, y2) != (x, y) for x2, y2 in points)]
    return sorted(keep, key=lambda i: points[i][0])


def spread_labels(fig, labels: list, gap: float = 1.0) -> None:
    """Move point labels (annotations offset in points) down, top label first, until none overlaps another:
    arms with close latency and mAP (a head and its assigner swap) would otherwise print one name over the other."""
    fig.canvas.draw()  # final layout, so that the extents below are the saved ones
    renderer = fig.canvas.get_renderer()
    placed = []
    for t in sorted(labels, key=lambda t: -t.axes.transData.transform(t.xy)[1]):
        for _ in range(len(labels)):
            box = t.get_window_extent(renderer)
            hit = next((b for b in placed if box.overlaps(b)), None)
            if hit is None:
                break
            x, y = t.xyann  # points
            t.xyann = (x, y - (box.y1 - hit.y0) * 72 / fig.dpi - gap)
        placed.append(t.get_window_extent(renderer))
