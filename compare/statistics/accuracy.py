"""Accuracy: final and best mAP50 / mAP50-95 per arm, mean ± std over seeds; the mAP and loss curves."""
from __future__ import annotations

from pathlib import Path

from compare.plots import figure, plot_band
from compare.statistics.base import Statistic, fmt_mean_std
from compare.summary import ArmSummary, Comparison

WHAT = (("final50", "final_map50", "final mAP50"), ("best50", "best_map50", "best mAP50"),
        ("final", "final_map", "final mAP50-95"), ("best", "best_map", "best mAP50-95"))  # stat, CSV, report.md


class Accuracy(Statistic):
    name = "accuracy"
    columns = tuple(f"{csv}_{m}" for _, csv, _ in WHAT for m in ("mean", "std"))
    how_to_read = """\
- mAP values are on the val set, 0-1, as `mean ± std` over the seeds (sample std). *final* is the last epoch's
  validation (EMA weights); *best* is the epoch of best fitness (0.1 mAP50 + 0.9 mAP50-95), the one saved as best.pt,
  so it is biased upward by picking the maximum of a noisy curve.
- Loss curves: each head family has its own loss terms and gains, so compare a curve's shape, not its level across
  families."""

    def row(self, cmp: Comparison, arm: ArmSummary) -> dict:
        row = {}
        for key, csv, _ in WHAT:
            row[f"{csv}_mean"], row[f"{csv}_std"] = arm.stat(key)
        return row

    def headers(self, cmp: Comparison) -> list[str]:
        return [h for _, _, h in WHAT]

    def cells(self, cmp: Comparison, arm: ArmSummary) -> list[str]:
        return [fmt_mean_std(*arm.stat(key)) for key, _, _ in WHAT]

    def plots(self, cmp: Comparison) -> list[Path]:
        return plot_curves(cmp.exp, cmp.arms)


def plot_curves(exp: Path, arms: list[ArmSummary]) -> list[Path]:
    """map_vs_epoch.png (mAP50-95) and loss_curves.png (total train and val loss) with seed bands."""
    fig, (ax,) = figure()
    for a in arms:
        plot_band(ax, a, "map")
    ax.set(xlabel="epoch", ylabel="mAP50-95 (val)", title="mAP50-95 vs epoch: mean over seeds, band = min-max")
    ax.legend()
    fig.savefig(exp / "map_vs_epoch.png", dpi=150)
    fig, axes = figure(2)
    for ax, attr, title in zip(axes, ("train_loss", "val_loss"), ("train loss (sum of terms)", "val loss")):
        for a in arms:
            plot_band(ax, a, attr)
        ax.set(xlabel="epoch", ylabel="loss", title=f"{title}: mean over seeds, band = min-max")
        ax.legend()
    fig.savefig(exp / "loss_curves.png", dpi=150)
    return [exp / "map_vs_epoch.png", exp / "loss_curves.png"]
