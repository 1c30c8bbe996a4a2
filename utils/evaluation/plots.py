"""Image and label plots: batch mosaics with boxes (train_batch0.jpg) and label statistics (labels.jpg).

Shape shorthand:
    B: images      M: boxes      H, W: image size
``plot_images`` reads a batch as the dataloader gives it: images (B, 3, H, W) uint8 RGB (or float 0-1) and
targets (M, 6) ``image_index cls cx cy w h`` (normalised or pixels), or (M, 7) with a trailing confidence
for predictions. Matplotlib is used through its object API only (no pyplot state, no backend switch).
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

PALETTE = ((255, 56, 56), (255, 157, 151), (255, 112, 31), (255, 178, 29), (207, 210, 49), (72, 249, 10),
           (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168), (0, 194, 255),
           (52, 69, 147), (100, 115, 255), (0, 24, 236), (132, 56, 255), (82, 0, 133), (203, 56, 255),
           (255, 149, 200), (255, 55, 199))  # RGB


def class_colour(c: int, bgr: bool = False) -> tuple[int, int, int]:
    """The palette colour of class ``c`` (RGB, or BGR for cv2 drawing)."""
    r, g, b = PALETTE[int(c) % len(PALETTE)]
    return (b, g, r) if bgr else (r, g, b)


def _to_numpy(x) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _tile_grid(images: np.ndarray, max_size: int, max_subplots: int) -> tuple[np.ndarray, int, float]:
    """Paste up to ``max_subplots`` CHW RGB images into a white square grid; returns (BGR mosaic, cols, scale)."""
    bs, _, h, w = images.shape
    bs = min(bs, max_subplots)
    ns = math.ceil(bs**0.5)
    if images.max() <= 1.0 and images.dtype != np.uint8:
        images = images * 255
    mosaic = np.full((ns * h, ns * w, 3), 255, np.uint8)
    for i in range(bs):
        x, y = w * (i % ns), h * (i // ns)
        mosaic[y:y + h, x:x + w] = images[i].transpose(1, 2, 0)[..., ::-1].clip(0, 255).astype(np.uint8)
    scale = max_size / ns / max(h, w)
    if scale < 1:
        size = (math.ceil(scale * ns * w), math.ceil(scale * ns * h))
        mosaic = cv2.resize(mosaic, size, interpolation=cv2.INTER_AREA)
    return mosaic, ns, min(scale, 1.0)


def plot_images(images, targets, paths=None, fname: str | Path | None = "images.jpg",
                names: dict[int, str] | None = None, max_size: int = 1920, max_subplots: int = 16,
                conf_thres: float = 0.25) -> np.ndarray:
    """Draw a batch as a grid (at most 16 tiles, 1920 px) with class-coloured boxes and names, the file name
    on each tile; predictions (7 columns) below ``conf_thres`` are skipped. Saves to ``fname`` unless None
    and returns the BGR mosaic."""
    images, targets = _to_numpy(images), _to_numpy(targets).reshape(-1, targets.shape[-1] if len(targets) else 6)
    bs, _, h, w = images.shape
    mosaic, ns, scale = _tile_grid(images, max_size, max_subplots)
    th, tw = int(h * scale), int(w * scale)
    fs = max(0.3, min(th, tw) / 640)
    for i in range(min(bs, max_subplots)):
        x0, y0 = int(tw * (i % ns)), int(th * (i // ns))
        cv2.rectangle(mosaic, (x0, y0), (x0 + tw, y0 + th), (255, 255, 255), 2)
        if paths is not None and i < len(paths):
            cv2.putText(mosaic, Path(paths[i]).name[:40], (x0 + 4, y0 + int(14 * fs / 0.5)), cv2.FONT_HERSHEY_SIMPLEX,
                        fs, (220, 220, 220), 1, cv2.LINE_AA)
        t = targets[targets[:, 0] == i]
        if len(t):
            _draw_boxes(mosaic, t, (x0, y0), (tw, th), scale, names, conf_thres, fs)
    if fname is not None:
        Path(fname).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(fname), mosaic)
    return mosaic


def _draw_boxes(mosaic: np.ndarray, t: np.ndarray, origin: tuple[int, int], tile: tuple[int, int], scale: float,
                names: dict[int, str] | None, conf_thres: float, fs: float) -> None:
    """Boxes of one tile: ``t`` (m, 6 or 7) rows of one image."""
    conf = t[:, 6] if t.shape[1] > 6 else None
    boxes = t[:, 2:6].copy()
    if len(boxes) and boxes.max() <= 1.01:  # normalised
        boxes[:, [0, 2]] *= tile[0]
        boxes[:, [1, 3]] *= tile[1]
    else:
        boxes *= scale
    xyxy = np.concatenate((boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2), 1) + (origin * 2)
    finite = np.isfinite(xyxy).all(1)  # an early model may predict an infinite box (exp decode): not drawable
    t, xyxy, conf = t[finite], xyxy[finite].clip(-(2 ** 15), 2 ** 15), None if conf is None else conf[finite]
    for j, (c, b) in enumerate(zip(t[:, 1].astype(int), xyxy.round().astype(int))):
        if conf is not None and conf[j] < conf_thres:
            continue
        colour = class_colour(c, bgr=True)
        cv2.rectangle(mosaic, tuple(b[:2]), tuple(b[2:]), colour, 1, cv2.LINE_AA)
        text = (names or {}).get(c, str(c)) + ("" if conf is None else f" {conf[j]:.1f}")
        cv2.putText(mosaic, text, (int(b[0]), max(int(b[1]) - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX, fs * 0.8, colour, 1,
                    cv2.LINE_AA)


def plot_labels(labels: np.ndarray, names: dict[int, str] | None = None, save_dir: str | Path = ".") -> Path:
    """labels.jpg: instances per class, 1,000 boxes drawn at one centre, centre (x, y) and size (w, h)
    histograms. ``labels``: (N, 5) ``cls cx cy w h`` normalised (all images concatenated)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = _to_numpy(labels).reshape(-1, 5)
    c, b = labels[:, 0].astype(int), labels[:, 1:]
    nc = max(int(c.max()) + 1 if len(c) else 0, len(names or {}))
    fig = Figure(figsize=(8, 8), tight_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.subplots(2, 2).ravel()
    ax[0].bar(range(nc), np.bincount(c, minlength=nc), color=[np.array(class_colour(i)) / 255 for i in range(nc)])
    ax[0].set_ylabel("instances")
    ax[0].set_xticks(range(nc), [(names or {}).get(i, str(i)) for i in range(nc)], rotation=90, fontsize=8)
    canvas = np.full((1000, 1000, 3), 255, np.uint8)
    for cls, (w, h) in zip(c[:1000], b[:1000, 2:]):
        x1, y1, x2, y2 = (np.array([0.5 - w / 2, 0.5 - h / 2, 0.5 + w / 2, 0.5 + h / 2]) * 1000).astype(int)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), class_colour(cls), 1)
    ax[1].imshow(canvas)
    ax[1].axis("off")
    ax[2].hist2d(b[:, 0], b[:, 1], bins=50, range=[[0, 1], [0, 1]], cmap="Blues")
    ax[2].set_xlabel("x")
    ax[2].set_ylabel("y")
    ax[3].hist2d(b[:, 2], b[:, 3], bins=50, range=[[0, 1], [0, 1]], cmap="Blues")
    ax[3].set_xlabel("width")
    ax[3].set_ylabel("height")
    out = Path(save_dir) / "labels.jpg"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=200)
    return out


# ---------------------------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------------------------
def plot_results(csv_file: str | Path) -> Path:
    """results.png beside ``csv_file``: every column of a YOLOv5-style results.csv against epoch (2 rows), the
    train losses on top, the metrics and val losses below, raw values with a smoothed line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    csv_file = Path(csv_file)
    rows = [ln.split(",") for ln in csv_file.read_text().splitlines() if ln.strip()]
    header = [h.strip() for h in rows[0]]
    data = np.array([[float(v) for v in r] for r in rows[1:]], dtype=float).reshape(-1, len(header))
    cols = [i for i, h in enumerate(header) if h != "epoch" and not h.startswith("x/")]
    ncol = math.ceil(len(cols) / 2)
    fig = Figure(figsize=(3 * ncol, 6), tight_layout=True)
    FigureCanvasAgg(fig)
    epochs = data[:, header.index("epoch")] if "epoch" in header else np.arange(len(data))
    for k, i in enumerate(cols):
        ax = fig.add_subplot(2, ncol, k + 1)
        y = data[:, i]
        ax.set_title(header[i], fontsize=12)
        if np.isnan(y).all():  # a head that declares its validation loss unavailable logs NaN
            ax.text(0.5, 0.5, "not available\nfor this head", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([]), ax.set_yticks([])
            continue
        ax.plot(epochs, y, marker=".", linewidth=2, markersize=8, label="results")
        if len(y) >= 3:
            w = max(3, len(y) // 5) | 1
            ys = np.convolve(np.pad(y, w // 2, mode="edge"), np.ones(w) / w, mode="valid")
            ax.plot(epochs, ys, ":", label="smooth", linewidth=2)
    fig.axes[0].legend()
    out = csv_file.with_name("results.png")
    fig.savefig(out, dpi=200)
    return out


def plot_evolve(csv_file: str | Path, first_hyp_column: int, fitness_values: np.ndarray) -> Path:
    """evolve.png beside ``csv_file``: each hyperparameter column (from ``first_hyp_column`` on) against the
    generations' fitness, the best generation marked with a cross (YOLOv5's evolve plot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    csv_file = Path(csv_file)
    lines = [ln.split(",") for ln in csv_file.read_text().splitlines() if ln.strip()]
    keys = [h.strip() for h in lines[0]][first_hyp_column:]
    data = np.array([[float(v) for v in r] for r in lines[1:]], dtype=float)[:, first_hyp_column:]
    best = int(np.argmax(fitness_values))
    ncol = math.ceil(len(keys) ** 0.5)
    fig = Figure(figsize=(2.5 * ncol, 2.5 * math.ceil(len(keys) / ncol)), tight_layout=True)
    FigureCanvasAgg(fig)
    for j, k in enumerate(keys):
        ax = fig.add_subplot(math.ceil(len(keys) / ncol), ncol, j + 1)
        ax.scatter(data[:, j], fitness_values, c=fitness_values, cmap="viridis", alpha=0.8, edgecolors="none")
        ax.plot(data[best, j], fitness_values[best], "k+", markersize=15)
        ax.set_title(f"{k} = {data[best, j]:.3g}", fontsize=9)
        ax.tick_params(labelsize=6)
    out = csv_file.with_name("evolve.png")
    fig.savefig(out, dpi=120)
    return out
