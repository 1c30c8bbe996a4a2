"""The built-in ``shapes`` detection dataset and its demo video, generated deterministically.

Each image depends only on (seed, split, index), so a larger version of the dataset keeps the
images of a smaller one. Difficulty: 8 classes whose colours are random (colour never gives the
class away), sizes from ``min_size`` px to ``max_size`` of the image (log-uniform), aspect ratios
and rotations, overlap with bounded occlusion, crowded and empty images, textured noisy
backgrounds with clutter lines, and blur.

Shape shorthand:
    H, W: image height and width      n: objects in one image      k: polygon vertices
Images are HWC uint8 BGR; labels are float32 (n, 5) ``cls cx cy w h`` normalised (YOLO rows).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

CLASS_NAMES = ("circle", "ring", "square", "triangle", "star", "cross", "hexagon", "ellipse")
SPLITS = {"train": 0, "val": 1}
GENERATOR_VERSION = 1
MARKER = "generate.json"
# aspect-ratio range (long/short before rotation) per class; circle and square stay exact
ASPECT = {"circle": (1.0, 1.0), "ring": (1.0, 1.25), "square": (1.0, 1.0), "triangle": (0.8, 1.25),
          "star": (1.0, 1.2), "cross": (1.0, 1.3), "hexagon": (1.0, 1.2), "ellipse": (1.6, 2.8)}
SUBPIXEL = 4  # cv2 drawing shift: vertices at 1/16 px


@dataclass(frozen=True)
class ShapesConfig:
    """Generation knobs (the ``generate:`` section of data/shapes.yaml); unknown keys are errors."""

    seed: int = 0
    imgsz: int = 320
    n_train: int = 1000
    n_val: int = 250
    min_objects: int = 1  # objects per image ~ log-uniform in [min_objects, max_objects]
    max_objects: int = 40
    empty: float = 0.05  # fraction of images with no object
    min_size: float = 6.0  # px, longest box side
    max_size: float = 0.5  # fraction of imgsz, longest box side
    occlusion: float = 0.4  # the most of an object's area later objects may hide
    noise: float = 8.0  # max std of per-pixel noise (0-255 scale)
    blur: float = 0.3  # probability of a gaussian blur
    blur_sigma: float = 1.5  # max blur sigma, px
    clutter: int = 8  # max unlabelled background lines and arcs
    stripes: float = 0.4  # probability of a striped background
    texture: float = 0.5  # probability of a fine-textured background
    min_contrast: float = 60.0  # min RGB distance between object colour and the local background
    class_colour: float = 0.0  # probability that an object takes its class's hue (else any colour)
    classes: tuple[str, ...] = CLASS_NAMES  # the shapes drawn, class i = classes[i]; hues 180 * i / len(classes)
    video_seconds: float = 10.0  # 0: no video
    video_fps: int = 25
    video_size: tuple[int, int] = (512, 320)  # (w, h)
    video_objects: int = 12

    def __post_init__(self) -> None:
        checks = {
            "imgsz": self.imgsz >= 32, "n_train": self.n_train >= 1, "n_val": self.n_val >= 1,
            "min_objects": 1 <= self.min_objects <= self.max_objects,
            "max_objects": self.max_objects >= 1, "empty": 0 <= self.empty <= 1,
            "min_size": 2 <= self.min_size,
            "max_size": 0 < self.max_size <= 1 and self.max_size * self.imgsz >= self.min_size,
            "occlusion": 0 <= self.occlusion < 1, "noise": self.noise >= 0, "blur": 0 <= self.blur <= 1,
            "blur_sigma": self.blur_sigma >= 0.5, "clutter": self.clutter >= 0,
            "stripes": 0 <= self.stripes <= 1, "texture": 0 <= self.texture <= 1,
            "min_contrast": self.min_contrast >= 0, "class_colour": 0 <= self.class_colour <= 1,
            "video_seconds": self.video_seconds >= 0, "video_fps": self.video_fps >= 1,
            "video_size": len(self.video_size) == 2 and min(self.video_size) >= 32,
            "video_objects": self.video_objects >= 0,
            "classes": len(self.classes) >= 1 and len(set(self.classes)) == len(self.classes)
            and set(self.classes) <= set(CLASS_NAMES),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
            raise ValueError(f"shapes generator: invalid value for {values}"
                             + (f" (classes: distinct names from {list(CLASS_NAMES)})" if "classes" in bad else ""))

    @classmethod
    def from_dict(cls, spec: dict, source: str = "") -> ShapesConfig:
        """Build from a YAML mapping; ``source`` (file name) goes into the error for unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"{source or 'generate'}: unknown shapes generator key(s) {unknown}; "
                             f"valid keys: {sorted(known)}")
        spec = dict(spec)
        for k in ("video_size", "classes"):
            if k in spec:
                spec[k] = tuple(spec[k])
        return cls(**spec)


# ---------------------------------------------------------------- shape geometry
def _circle(r: float, k: int = 64) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, k, endpoint=False)
    return np.stack((np.cos(t), np.sin(t)), 1) * r


def _regular(k: int, phase: float = -np.pi / 2) -> np.ndarray:
    t = np.arange(k) * 2 * np.pi / k + phase
    return np.stack((np.cos(t), np.sin(t)), 1)


def unit_shape(name: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Contours (k, 2) of one shape around the origin, about unit size; contour 0 is the outline,
    any further contour is a hole."""
    if name in ("circle", "ellipse"):
        return [_circle(1.0)]
    if name == "ring":
        return [_circle(1.0), _circle(rng.uniform(0.45, 0.7))]
    if name == "square":
        return [np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)]
    if name == "triangle":
        b = rng.uniform(0.75, 1.45)
        return [np.array([[0, -1], [b, 1], [-b, 1]], np.float64)]
    if name == "star":
        pts = _regular(10)
        pts[1::2] *= rng.uniform(0.38, 0.52)
        return [pts]
    if name == "cross":
        t = rng.uniform(0.22, 0.4)
        return [np.array([[-t, -1], [t, -1], [t, -t], [1, -t], [1, t], [t, t], [t, 1], [-t, 1], [-t, t],
                          [-1, t], [-1, -t], [-t, -t]], np.float64)]
    if name == "hexagon":
        return [_regular(6, phase=rng.uniform(0, np.pi / 3))]
    raise ValueError(f"unknown shape {name!r}; known: {CLASS_NAMES}")


def shape_contours(name: str, size: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Contours of shape ``name`` stretched by its aspect range, rotated at random and scaled so the
    longest side of its bounding box is ``size`` px (centred on the origin)."""
    contours = unit_shape(name, rng)
    lo, hi = ASPECT[name]
    a = np.sqrt(rng.uniform(lo, hi))
    angle = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(angle), np.sin(angle)
    m = np.array([[a, 0], [0, 1 / a]]) @ np.array([[c, -s], [s, c]]).T  # stretch, then rotate (row vectors)
    contours = [p @ m for p in contours]
    lo_xy, hi_xy = contours[0].min(0), contours[0].max(0)
    scale = size / max(hi_xy - lo_xy)
    centre = (lo_xy + hi_xy) / 2
    return [(p - centre) * scale for p in contours]


def render_mask(contours: list[np.ndarray], h: int, w: int, offset: np.ndarray) -> np.ndarray:
    """Anti-aliased float32 (h, w) coverage of the contours translated by ``offset`` (holes cut out)."""
    mask = np.zeros((h, w), np.uint8)
    pts = [np.round((p + offset) * (1 << SUBPIXEL)).astype(np.int32) for p in contours]
    cv2.fillPoly(mask, pts[:1], 255, lineType=cv2.LINE_AA, shift=SUBPIXEL)
    if len(pts) > 1:
        cv2.fillPoly(mask, pts[1:], 0, lineType=cv2.LINE_AA, shift=SUBPIXEL)
    return mask.astype(np.float32) / 255.0


# ---------------------------------------------------------------- images
def background(rng: np.random.Generator, h: int, w: int, clutter: int, stripes: float = 0.4,
               texture: float = 0.5) -> np.ndarray:
    """A float32 (h, w, 3) background: two-colour smooth field, optional stripes and fine texture,
    and unlabelled clutter lines and arcs."""
    c1, c2 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    field = rng.uniform(0, 1, (int(rng.integers(2, 7)), int(rng.integers(2, 7)))).astype(np.float32)
    t = np.clip(cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1)[..., None]
    img = c1 + (c2 - c1) * t
    if rng.random() < stripes:
        a, period, amp = rng.uniform(0, np.pi), rng.uniform(6, 40), rng.uniform(5, 25)
        k = np.float32(2 * np.pi / period)
        xs, ys = np.arange(w, dtype=np.float32)[None], np.arange(h, dtype=np.float32)[:, None]
        phase = xs * (k * np.cos(a)) + ys * (k * np.sin(a))
        img += (np.float32(amp) * np.sin(phase))[..., None]
    if rng.random() < texture:  # fine texture
        cell = int(rng.integers(2, 9))
        tex = rng.normal(0, rng.uniform(4, 20), (h // cell + 1, w // cell + 1, 3)).astype(np.float32)
        img += cv2.resize(tex, (w, h), interpolation=cv2.INTER_LINEAR)
    for _ in range(int(rng.integers(0, clutter + 1))):
        colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
        p = rng.uniform(-0.1, 1.1, 4) * (w, h, w, h)
        thick = int(rng.integers(1, 3))
        if rng.random() < 0.5:
            cv2.line(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), colour, thick, cv2.LINE_AA)
        else:
            axes = (int(rng.uniform(5, w / 3)), int(rng.uniform(5, h / 3)))
            start = rng.uniform(0, 360)
            cv2.ellipse(img, (int(p[0]), int(p[1])), axes, rng.uniform(0, 180), start, start + rng.uniform(30, 200),
                        colour, thick, cv2.LINE_AA)
    return img


def _object_colour(rng: np.random.Generator, local_mean: np.ndarray, min_contrast: float,
                   hue: float | None = None) -> np.ndarray:
    """A BGR colour at least ``min_contrast`` from ``local_mean`` (best of 8 tries): any colour, or one of
    OpenCV hue ``hue`` (0-180) +- 6 with random saturation and value."""
    if hue is None:
        cand = rng.uniform(0, 255, (8, 3))
    else:
        hsv = np.stack((np.full(8, hue) + rng.uniform(-6, 6, 8), rng.uniform(110, 255, 8), rng.uniform(90, 255, 8)), 1)
        hsv[:, 0] %= 180
        cand = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2BGR)[0].astype(np.float64)
    dist = np.linalg.norm(cand - local_mean, axis=1)
    ok = np.flatnonzero(dist >= min_contrast)
    return cand[ok[0]] if len(ok) else cand[dist.argmax()]


def _paint(img: np.ndarray, alpha: np.ndarray, roi: tuple[int, int, int, int], colour: np.ndarray,
           rng: np.random.Generator) -> None:
    """Blend a colour with a mild linear shading into ``img[roi]`` through ``alpha``, in place."""
    y0, y1, x0, x1 = roi
    h, w = y1 - y0, x1 - x0
    g = rng.uniform(-25, 25, 2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = (g[0] * (xx / max(w, 1) - 0.5) + g[1] * (yy / max(h, 1) - 0.5))[..., None]
    fill = colour.astype(np.float32) + shade
    a = alpha[..., None]
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - a) + fill * a


def _sample_objects(rng: np.random.Generator, cfg: ShapesConfig) -> list[tuple[int, float]]:
    """(class, size px) of the objects to try in one image; sizes are capped in crowded images."""
    if rng.random() < cfg.empty:
        return []
    n = int(np.exp(rng.uniform(np.log(cfg.min_objects), np.log(cfg.max_objects + 1))))
    n = min(max(n, cfg.min_objects), cfg.max_objects)
    hi = min(cfg.max_size * cfg.imgsz, cfg.imgsz * np.sqrt(1.2 / n))
    lo = min(cfg.min_size, hi)
    sizes = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    classes = rng.integers(0, len(cfg.classes), n)
    return list(zip(classes.tolist(), sizes.tolist()))


def _place(rng: np.random.Generator, contours: list[np.ndarray], s: int, idmap: np.ndarray, visible: list[int],
           area: list[int], occlusion: float, tries: int = 4):
    """Find a position where the new object hides at most ``occlusion`` of every earlier object.
    Returns (offset, roi, alpha, box xyxy) or None."""
    lo, hi = contours[0].min(0), contours[0].max(0)
    bw, bh = hi - lo
    for _ in range(tries):
        cx = rng.uniform(0.2 * bw, s - 0.2 * bw) if s > 0.4 * bw else s / 2
        cy = rng.uniform(0.2 * bh, s - 0.2 * bh) if s > 0.4 * bh else s / 2
        x0, y0 = max(int(np.floor(cx + lo[0])) - 1, 0), max(int(np.floor(cy + lo[1])) - 1, 0)
        x1, y1 = min(int(np.ceil(cx + hi[0])) + 2, s), min(int(np.ceil(cy + hi[1])) + 2, s)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        alpha = render_mask(contours, y1 - y0, x1 - x0, np.array([cx - x0, cy - y0]))
        solid = alpha > 0.5
        if solid.sum() < 4:
            continue
        hidden = idmap[y0:y1, x0:x1][solid]
        hidden = np.bincount(hidden[hidden >= 0], minlength=len(visible))
        if len(visible) and ((np.asarray(visible) - hidden) < (1 - occlusion) * np.asarray(area)).any():
            continue
        box = np.clip([cx + lo[0], cy + lo[1], cx + hi[0], cy + hi[1]], 0, s)
        return (y0, y1, x0, x1), alpha, solid, hidden, box
    return None


def render_image(cfg: ShapesConfig, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` of ``split``: uint8 (s, s, 3) BGR and float32 (n, 5) ``cls cx cy w h`` normalised."""
    rng = np.random.default_rng([cfg.seed, SPLITS[split], index])
    s = cfg.imgsz
    img = background(rng, s, s, cfg.clutter, cfg.stripes, cfg.texture)
    idmap = np.full((s, s), -1, np.int32)
    visible: list[int] = []
    area: list[int] = []
    labels = []
    for cls, size in _sample_objects(rng, cfg):
        contours = shape_contours(cfg.classes[cls], size, rng)
        placed = _place(rng, contours, s, idmap, visible, area, cfg.occlusion)
        if placed is None:
            continue
        (y0, y1, x0, x1), alpha, solid, hidden, box = placed
        for j, lost in enumerate(hidden.tolist()):
            visible[j] -= lost
        idmap[y0:y1, x0:x1][solid] = len(visible)
        visible.append(int(solid.sum()))
        area.append(int(solid.sum()))
        hue = 180 * cls / len(cfg.classes) if cfg.class_colour and rng.random() < cfg.class_colour else None
        colour = _object_colour(rng, img[y0:y1, x0:x1][solid].mean(0), cfg.min_contrast, hue)
        _paint(img, alpha, (y0, y1, x0, x1), colour, rng)
        x1, y1, x2, y2 = box / s
        labels.append((cls, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1))
    img = _finish(img, rng, cfg.noise, cfg.blur, cfg.blur_sigma)
    return img, np.array(labels, np.float32).reshape(-1, 5)


def _finish(img: np.ndarray, rng: np.random.Generator, noise: float, blur: float, blur_sigma: float) -> np.ndarray:
    """Optional blur, then zero-mean pixel noise of a random std up to ``noise``; float -> uint8."""
    if rng.random() < blur:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, blur_sigma))
    if noise > 0:
        sigma = np.float32(rng.uniform(0, noise))
        u = rng.random((2, *img.shape), dtype=np.float32)  # triangular noise: std = sigma, cheaper than normal
        img = img + (u[0] + u[1] - 1) * (sigma * np.float32(6**0.5))
    return cv2.convertScaleAbs(np.clip(img, 0, 255))


# ---------------------------------------------------------------- files
def _write_split(args: tuple[ShapesConfig, str, int, int, str]) -> int:
    cfg, split, start, stop, root = args
    im_dir, lb_dir = Path(root) / "images" / split, Path(root) / "labels" / split
    for i in range(start, stop):
        img, labels = render_image(cfg, split, i)
        cv2.imwrite(str(im_dir / f"{i:06d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        rows = "".join(f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels.tolist())
        (lb_dir / f"{i:06d}.txt").write_text(rows)
    return stop - start


def _blend(frame: np.ndarray, contours: list[np.ndarray], colour: np.ndarray) -> None:
    """Paint contours given in frame pixels with a flat colour, only inside their box, in place."""
    h, w = frame.shape[:2]
    lo, hi = contours[0].min(0), contours[0].max(0)
    x0, y0 = max(int(lo[0]) - 1, 0), max(int(lo[1]) - 1, 0)
    x1, y1 = min(int(hi[0]) + 2, w), min(int(hi[1]) + 2, h)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return
    a = render_mask(contours, y1 - y0, x1 - x0, np.array([-x0, -y0]))[..., None]
    frame[y0:y1, x0:x1] = frame[y0:y1, x0:x1] * (1 - a) + colour * a


def write_video(path: Path, cfg: ShapesConfig) -> Path:
    """A ``video_seconds`` mp4 ('mp4v') of shapes drifting, spinning and bouncing over a fixed background."""
    w, h = cfg.video_size
    rng = np.random.default_rng([cfg.seed, 2, 0])
    bg = background(rng, h, w, cfg.clutter, cfg.stripes, cfg.texture)
    k = cfg.video_objects
    cls = rng.integers(0, len(cfg.classes), k)
    size = np.exp(rng.uniform(np.log(max(cfg.min_size, 12)), np.log(min(h, w) * 0.3), k))
    pos = rng.uniform(0.15, 0.85, (k, 2)) * (w, h)
    vel = rng.uniform(-3, 3, (k, 2))
    spin = rng.uniform(-0.05, 0.05, k)
    shapes = [shape_contours(cfg.classes[c], float(s), rng) for c, s in zip(cls, size)]
    colours = rng.uniform(0, 255, (k, 3)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), cfg.video_fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter could not open {path} with codec 'mp4v'")
    for f in range(int(round(cfg.video_seconds * cfg.video_fps))):
        frame = bg.copy()
        for j in range(k):
            c, s_ = np.cos(spin[j] * f), np.sin(spin[j] * f)
            contours = [p @ np.array([[c, -s_], [s_, c]]).T + pos[j] for p in shapes[j]]
            _blend(frame, contours, colours[j])
        writer.write(_finish(frame, rng, cfg.noise / 2, 0.0, 1.0))
        pos += vel
        out = (pos < 0) | (pos > (w, h))
        vel[out] *= -1
    writer.release()
    return path


def generate(root: Path, cfg: ShapesConfig, workers: int | None = None, log=print) -> Path:
    """Write the dataset to ``root`` (images/{train,val}, labels/{train,val}, videos/shapes.mp4,
    generate.json) through a temporary folder renamed into place, so a half-written dataset is never
    seen. An existing ``root`` is replaced only if it was written by this generator."""
    root = Path(root).resolve()
    if root.exists() and not (root / MARKER).exists():
        raise FileExistsError(f"{root} exists and was not made by the shapes generator (no {MARKER}); "
                              f"move it away or point 'path' elsewhere")
    t0 = time.time()
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for split in SPLITS:
        (tmp / "images" / split).mkdir(parents=True)
        (tmp / "labels" / split).mkdir(parents=True)
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    _render_all(cfg, tmp, workers)
    if cfg.video_seconds > 0:
        write_video(tmp / "videos" / "shapes.mp4", cfg)
    (tmp / MARKER).write_text(json.dumps(marker(cfg), indent=1))
    if is_current(root, cfg):  # another process finished the same dataset meanwhile: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        _swap_into_place(tmp, root)
    video = f" and a {cfg.video_seconds:g} s video" if cfg.video_seconds > 0 else ""
    log(f"shapes: generated {cfg.n_train} train + {cfg.n_val} val images{video} in {root} ({time.time() - t0:.1f}s)")
    return root


def _render_all(cfg: ShapesConfig, tmp: Path, workers: int) -> None:
    chunk = 50
    jobs = [(cfg, split, a, min(a + chunk, n), str(tmp))
            for split, n in (("train", cfg.n_train), ("val", cfg.n_val)) for a in range(0, n, chunk)]
    total = cfg.n_train + cfg.n_val
    with tqdm(total=total, desc="Generating shapes images", disable=total < 200) as bar:
        if workers <= 1 or len(jobs) == 1:
            for job in jobs:
                bar.update(_write_split(job))
            return
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for n in pool.map(_write_split, jobs):
                bar.update(n)


def _swap_into_place(tmp: Path, root: Path) -> None:
    old = root.with_name(f"{root.name}.old-{os.getpid()}")
    if root.exists():
        os.replace(root, old)
    try:
        os.replace(tmp, root)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def marker(cfg: ShapesConfig) -> dict:
    """What generate.json holds: the generator version and the full config."""
    return {"generator": "shapes", "version": GENERATOR_VERSION, "config": json.loads(json.dumps(asdict(cfg)))}


def is_current(root: Path, cfg: ShapesConfig) -> bool:
    """True when ``root`` holds a complete dataset generated with exactly ``cfg``."""
    try:
        return json.loads((Path(root) / MARKER).read_text()) == marker(cfg)
    except (OSError, ValueError):
        return False


def ensure(root: Path, cfg: ShapesConfig, log=print) -> Path:
    """Generate the dataset into ``root`` unless it is already there with the same config."""
    if not is_current(root, cfg):
        generate(root, cfg, log=log)
    return Path(root)
