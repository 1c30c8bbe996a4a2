"""The training/validation dataset and dataloader (data YAMLs: utils/data/config.py; label checks and their
cache: utils/data/labels.py; both re-exported here; COCO JSON and VOC XML splits: utils/data/annotations.py).

Shape shorthand:
    B: images in a batch      M: boxes in a batch      n: boxes in one image
    H, W: batch image size    h0, w0: original image size      h, w: size after the long-side resize
A batch is ``(imgs, targets, paths, shapes)``:
    imgs     uint8 (B, 3, H, W) RGB
    targets  float32 (M, 6) ``image_index cls cx cy w h``, box normalised by (W, H)
    paths    tuple of B str
    shapes   tuple of B ``((h0, w0), ((h / h0, w / w0), (padw, padh)))``, None for mosaic images
Label files hold rows ``cls cx cy w h`` normalised (or ``cls x1 y1 x2 y2 ...`` polygons, turned into boxes).

Pairing: every item's random draws come from ``np.random.default_rng([seed, epoch, index])`` and the
sampler's order (a permutation, or with ``image_weights`` a weighted draw with replacement) from ``[seed, epoch]``, and the sampler hands ``(index, epoch, mosaic_on)`` keys to the
workers, so two runs with the same seed see the same images and the same augmentation whatever the
number of workers, and ``close_mosaic()`` reaches persistent workers at the next epoch.
"""
from __future__ import annotations

import math
import os
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from utils import LOGGER
from utils.boxes import xywhn2xyxy, xyxy2xywhn
from utils.data.annotations import load_split
from utils.data.augmentations import (
    Albumentations,
    augment_hsv,
    letterbox,
    mixup,
    mosaic4,
    random_flips,
    random_perspective,
)
from utils.data.config import (  # noqa: F401
    ROOT,
    check_dataset,
    img2label_paths,
    list_images,
    resolve_data_yaml,
)
from utils.data.labels import (  # noqa: F401 (re-exported)
    ISSUES,
    NUM_THREADS,
    CheckResult,
    ItemCheck,
    LabelReport,
    _cache_path,
    check_labels,
    parse_label_file,
    verify_image_label,
)

AUTO_CACHE_SHARE = 0.25  # --cache auto (the default): cache in RAM when the images take at most this share of it
ALBUMENTATIONS_TAG = 0x414C  # its own seed stream: installing the package shifts no other augmentation draw
AUG_KEYS = ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective",
            "flipud", "fliplr", "mosaic", "mixup")


# ------------------------------------------------------------------ dataset
def _check_hyp(hyp: dict | None, augment: bool) -> dict:
    if not augment:
        return dict(hyp or {})
    if hyp is None:
        raise ValueError("augment=True needs hyp (e.g. the contents of data/hyps/hyp.scratch-low.yaml)")
    missing = [k for k in AUG_KEYS if k not in hyp]
    if missing:
        raise KeyError(f"hyp is missing augmentation key(s) {missing} (see data/hyps/hyp.scratch-low.yaml)")
    if hyp.get("copy_paste", 0) > 0:
        LOGGER.info("copy_paste > 0 ignored: it needs polygon segments and labels here are boxes")
    return dict(hyp)


class LoadImagesAndLabels(Dataset):
    """Images and labels (YOLO txt, COCO JSON or VOC XML) with YOLOv5's augmentation (see the module docstring for the item
    layout and the pairing rules). Index with an int, or with the sampler's ``(index, epoch, mosaic_on)``."""

    def __init__(self, path, img_size: int = 640, batch_size: int = 16, augment: bool = False,
                 hyp: dict | None = None, rect: bool = False, cache: str | None = None, single_cls: bool = False, stride: int = 32,
                 pad: float = 0.0, seed: int = 0, names: dict[int, str] | None = None, prefix: str = "") -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.img_size, self.augment, self.rect, self.stride, self.seed = img_size, augment, rect, stride, seed
        self.hyp = _check_hyp(hyp, augment)
        self.mosaic = augment and not rect  # the strong augmentation (mosaic + mixup); see close_mosaic()
        self.epoch = 0
        im_files, label_files, res = load_split(path, names, prefix)  # YOLO labels, COCO JSON or VOC XML
        if not im_files:
            raise FileNotFoundError(f"{prefix}no images found in {path}")
        self.report = res.report
        keep = np.flatnonzero(res.usable)
        if len(keep) == 0:
            raise ValueError(f"{prefix}no usable images in {path}: {res.report.summary()}")
        self.im_files = [im_files[i] for i in keep]
        self.label_files = [label_files[i] for i in keep]
        self.labels = [res.labels[i] for i in keep]
        self.shapes = np.asarray(res.shapes)[keep]  # (n, 2) w, h
        if augment and not any(len(lb) for lb in self.labels):
            raise ValueError(f"{prefix}no labels in {path}, cannot train: {res.report.summary()}")
        if single_cls:
            for lb in self.labels:
                lb[:, 0] = 0
        n_cls = max((int(lb[:, 0].max()) + 1 for lb in self.labels if len(lb)), default=0)
        self.names = dict(names) if names else {i: str(i) for i in range(n_cls)}
        self.n = len(self.im_files)
        self.batch = np.arange(self.n) // batch_size  # batch index of each image
        self.batch_shapes = None
        if rect:
            self._sort_for_rect(batch_size, pad)
        self.ims: list[np.ndarray | None] = [None] * self.n
        self.im_hw0: list[tuple[int, int] | None] = [None] * self.n
        self.im_hw: list[tuple[int, int] | None] = [None] * self.n
        self.npy_files = [str(Path(f).with_suffix(".npy")) for f in self.im_files]
        self.albumentations = Albumentations() if augment else None
        if cache:
            self.cache_images(cache, prefix)

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        """Epoch of the next iteration (order and augmentation draws). Iterating the loader without it
        advances the epoch by one each time, so both styles give the same sequence."""
        self.epoch = int(epoch)

    def close_mosaic(self) -> None:
        """Switch mosaic and mixup off from the next epoch on (e.g. the last 15 epochs of YOLOX)."""
        self.mosaic = False

    def _sort_for_rect(self, batch_size: int, pad: float) -> None:
        """Order images by aspect ratio and give each batch the smallest stride-aligned shape that fits it."""
        ar = self.shapes[:, 1] / self.shapes[:, 0]  # h / w
        order = ar.argsort()
        self.im_files = [self.im_files[i] for i in order]
        self.label_files = [self.label_files[i] for i in order]
        self.labels = [self.labels[i] for i in order]
        self.shapes, ar = self.shapes[order], ar[order]
        nb = int(self.batch[-1]) + 1
        shapes = np.ones((nb, 2))
        for i in range(nb):
            ari = ar[self.batch == i]
            if ari.max() < 1:
                shapes[i] = ari.max(), 1
            elif ari.min() > 1:
                shapes[i] = 1, 1 / ari.min()
        self.batch_shapes = (np.ceil(shapes * self.img_size / self.stride + pad).astype(int) * self.stride)

    # -------------------------------------------------------------- image loading
    def load_image(self, i: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """Image i resized so its long side is img_size: (im BGR, (h0, w0), (h, w))."""
        if self.ims[i] is not None:
            return self.ims[i], self.im_hw0[i], self.im_hw[i]
        f = self.im_files[i]
        im = np.load(self.npy_files[i]) if os.path.isfile(self.npy_files[i]) else cv2.imread(f)
        if im is None:
            raise FileNotFoundError(f"image {f} unreadable (it passed the label checks: changed since?)")
        h0, w0 = im.shape[:2]
        r = self.img_size / max(h0, w0)
        if r != 1:
            interp = cv2.INTER_LINEAR if (self.augment or r > 1) else cv2.INTER_AREA
            im = cv2.resize(im, (math.ceil(w0 * r), math.ceil(h0 * r)), interpolation=interp)
        return im, (h0, w0), im.shape[:2]

    def cache_images(self, cache: str, prefix: str = "") -> None:
        """'ram': keep resized images in memory (if they fit); 'disk': save decoded originals as .npy; 'auto': 'ram'
        when the resized images take at most ``AUTO_CACHE_SHARE`` of the available memory (all of this machine's
        training processes together), else no cache. Mosaic reads each image about four times an epoch: the
        cache saves those decodes and resizes (bench/README.md, issue 18)."""
        if cache not in ("ram", "disk", "auto"):
            raise ValueError(f"cache must be 'ram', 'disk', 'auto' or None, got {cache!r}")
        if cache in ("ram", "auto") and not self._fits_in_ram(prefix, AUTO_CACHE_SHARE if cache == "auto" else 1.0):
            return
        cache = "ram" if cache == "auto" else cache
        fn = self._save_npy if cache == "disk" else self.load_image
        nbytes = 0
        with ThreadPool(NUM_THREADS) as pool:
            bar = tqdm(enumerate(pool.imap(fn, range(self.n))), total=self.n,
                       desc=f"{prefix}Caching images ({cache})", disable=self.n < 200)
            for i, x in bar:
                if cache == "disk":
                    nbytes += os.path.getsize(self.npy_files[i])
                else:
                    self.ims[i], self.im_hw0[i], self.im_hw[i] = x
                    nbytes += x[0].nbytes
        LOGGER.info(f"{prefix}cached {self.n} images ({nbytes / 1e9:.2f} GB {cache})")

    def _save_npy(self, i: int) -> None:
        if not os.path.isfile(self.npy_files[i]):
            im = cv2.imread(self.im_files[i])
            if im is None:
                raise FileNotFoundError(f"image {self.im_files[i]} unreadable while caching to disk")
            np.save(self.npy_files[i], im)

    def _fits_in_ram(self, prefix: str, share: float = 1.0, safety: float = 0.1) -> bool:
        """Estimate the cache size from up to 30 images; it fits when it is below ``share`` of MemAvailable (Linux),
        counted once per training process on this machine (torchrun's LOCAL_WORLD_SIZE)."""
        k = min(self.n, 30)
        sample = sum(self.load_image(i)[0].nbytes for i in range(k))
        need = sample * self.n / k * (1 + safety) * int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        try:
            with open("/proc/meminfo") as f:
                avail = next(int(x.split()[1]) * 1024 for x in f if x.startswith("MemAvailable"))
        except (OSError, StopIteration):
            return share >= 1.0  # unknown memory: an explicit --cache ram is obeyed, 'auto' does not cache
        if need < avail * share:
            return True
        what = "--cache auto: images not cached" if share < 1 else "WARNING: not caching images"
        LOGGER.warning(f"{prefix}{what}: {need / 1e9:.1f} GB needed, {avail * share / 1e9:.1f} GB allowed "
                       f"({share:.0%} of {avail / 1e9:.1f} GB available)")
        return False

    # -------------------------------------------------------------- items
    def _key(self, key) -> tuple[int, int, bool]:
        if isinstance(key, (tuple, list)):
            index, epoch, strong = key
            return int(index), int(epoch), bool(strong)
        return int(key), self.epoch, self.mosaic

    def __getitem__(self, key):
        index, epoch, strong = self._key(key)
        rng = np.random.default_rng([self.seed, epoch, index])
        hyp = self.hyp
        if self.augment and strong and rng.random() < hyp["mosaic"]:
            img, labels = self._load_mosaic(index, rng)
            shapes = None
            if rng.random() < hyp["mixup"]:
                img2, labels2 = self._load_mosaic(int(rng.integers(self.n)), rng)
                img, labels = mixup(img, labels, img2, labels2, rng)
        else:
            img, labels, shapes = self._load_letterboxed(index, rng)
        nl = len(labels)
        if nl:
            labels[:, 1:5] = xyxy2xywhn(labels[:, 1:5], w=img.shape[1], h=img.shape[0], clip=True, eps=1e-3)
        if self.augment:
            img = self.albumentations(img, np.random.default_rng([self.seed, epoch, index, ALBUMENTATIONS_TAG]))
            augment_hsv(img, hyp["hsv_h"], hyp["hsv_s"], hyp["hsv_v"], rng)
            img = random_flips(img, labels, hyp["flipud"], hyp["fliplr"], rng)
        out = np.zeros((nl, 6), np.float32)
        out[:, 1:] = labels
        img = np.ascontiguousarray(img.transpose(2, 0, 1)[::-1])  # HWC BGR -> CHW RGB
        return torch.from_numpy(img), torch.from_numpy(out), self.im_files[index], shapes

    def _perspective(self, img: np.ndarray, labels: np.ndarray, rng: np.random.Generator, border: tuple[int, int]):
        h = self.hyp
        return random_perspective(img, labels, rng=rng, degrees=h["degrees"], translate=h["translate"],
                                  scale=h["scale"], shear=h["shear"], perspective=h["perspective"], border=border)

    def _load_letterboxed(self, index: int, rng: np.random.Generator):
        img, (h0, w0), (h, w) = self.load_image(index)
        shape = tuple(int(x) for x in self.batch_shapes[self.batch[index]]) if self.rect else self.img_size
        img, ratio, pad = letterbox(img, shape, auto=False, scaleup=self.augment)
        shapes = (h0, w0), ((h / h0, w / w0), pad)
        labels = self.labels[index].copy()
        if len(labels):
            labels[:, 1:] = xywhn2xyxy(labels[:, 1:], ratio[0] * w, ratio[1] * h, padw=pad[0], padh=pad[1])
        if self.augment:
            img, labels = self._perspective(img, labels, rng, border=(0, 0))
        return img, labels, shapes

    def _load_mosaic(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """4-image mosaic around ``index`` (3 partners drawn from rng), warped and cropped to img_size."""
        s = self.img_size
        indices = [index] + rng.integers(0, self.n, 3).tolist()
        rng.shuffle(indices)
        ims, labels = [], []
        for i in indices:
            im, _, (h, w) = self.load_image(i)
            lb = self.labels[i].copy()
            if len(lb):
                lb[:, 1:] = xywhn2xyxy(lb[:, 1:], w, h)
            ims.append(im)
            labels.append(lb)
        img4, labels4 = mosaic4(ims, labels, s, rng)
        return self._perspective(img4, labels4, rng, border=(-(s // 2), -(s // 2)))

    @staticmethod
    def collate_fn(batch):
        """Stack images; give each target row its image index."""
        ims, labels, paths, shapes = zip(*batch)
        for i, lb in enumerate(labels):
            lb[:, 0] = i
        return torch.stack(ims, 0), torch.cat(labels, 0), paths, shapes


class SeededSampler(Sampler):
    """Yields ``(index, epoch, mosaic_on)`` keys: a permutation drawn from (seed, epoch) when shuffling,
    else 0..n-1; with ``weights`` set (n,) (``--image-weights``), n indices drawn with replacement in
    proportion to them from (seed, epoch). State is read from the main process's dataset at the start of
    each epoch, so ``set_epoch`` and ``close_mosaic`` reach persistent workers without rebuilding them.

    Under DDP (``world_size`` > 1) every rank draws the same global order and keeps its share of it: of each
    global batch (``batch_size`` consecutive keys, the total over ranks) the ``rank``-th of ``world_size``
    equal slices, so the ranks' batches j together are batch j of a single process with that total batch. A
    short last batch is padded with its own keys to a multiple of ``world_size`` (every rank then has as many
    batches, and with rect they share the batch's shape)."""

    def __init__(self, dataset: LoadImagesAndLabels, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1,
                 batch_size: int = 1) -> None:
        if world_size > 1 and batch_size % world_size:
            raise ValueError(f"total batch size {batch_size} is not a multiple of the {world_size} processes")
        self.dataset, self.shuffle, self.seed = dataset, shuffle, seed
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.weights: np.ndarray | None = None

    def __len__(self) -> int:
        n, w, b = len(self.dataset), self.world_size, self.batch_size
        return n if w == 1 else n // b * (b // w) + math.ceil(n % b / w)

    def __iter__(self) -> Iterator[tuple[int, int, bool]]:
        ds = self.dataset
        epoch, strong = ds.epoch, ds.mosaic
        ds.epoch = epoch + 1
        n = len(ds)
        rng = np.random.default_rng([self.seed, epoch])
        if self.weights is not None:
            order = rng.choice(n, size=n, replace=True, p=self.weights / self.weights.sum())
        else:
            order = rng.permutation(n) if self.shuffle else np.arange(n)
        return iter([(int(i), epoch, strong) for i in self.shard(order)])

    def shard(self, order: np.ndarray) -> np.ndarray:
        """This rank's keys of the global ``order`` (all of them for one process)."""
        w, b = self.world_size, self.batch_size
        if w == 1:
            return order
        parts = []
        for start in range(0, len(order), b):
            batch = order[start:start + b]
            batch = np.resize(batch, math.ceil(len(batch) / w) * w)  # a short last batch padded with its own keys
            k = len(batch) // w
            parts.append(batch[self.rank * k:(self.rank + 1) * k])
        return np.concatenate(parts)


def labels_to_class_weights(labels: list[np.ndarray], nc: int) -> np.ndarray:
    """(nc,) inverse class frequencies of the labels (per image (n, 5) ``cls ...``), normalised to sum 1; an
    absent class counts as one instance (YOLOv5's ``labels_to_class_weights``)."""
    classes = np.concatenate([lb[:, 0] for lb in labels if len(lb)] or [np.zeros(0)]).astype(int)
    counts = np.bincount(classes, minlength=nc)[:nc].astype(float)
    counts[counts == 0] = 1
    weights = 1 / counts
    return weights / weights.sum()


def labels_to_image_weights(labels: list[np.ndarray], nc: int, class_weights: np.ndarray) -> np.ndarray:
    """(n,) per image: the sum of ``class_weights`` (nc,) over its labels (0 for a background image)."""
    counts = np.array([np.bincount(lb[:, 0].astype(int), minlength=nc)[:nc] for lb in labels])  # (n, nc)
    return (counts * class_weights.reshape(1, nc)).sum(1)


def _worker_init(worker_id: int) -> None:
    cv2.setNumThreads(0)
    torch.set_num_threads(1)


def label_wh(shapes: np.ndarray, labels: list[np.ndarray], imgsz: int, rng: np.random.Generator) -> np.ndarray:
    """(L, 2) label widths/heights in pixels at ``imgsz`` (long side), jittered by U(0.9, 1.1) per image:
    the data a head fits its priors to (``Head.fit_priors``, AutoAnchor for the anchor heads).

    shapes: (n, 2) image (w, h); labels: per image (m, 5) ``[cls, cx, cy, w, h]`` normalised.
    """
    scaled = imgsz * shapes / shapes.max(1, keepdims=True)
    scale = rng.uniform(0.9, 1.1, size=(scaled.shape[0], 1))
    parts = [lb[:, 3:5] * s for s, lb in zip(scaled * scale, labels) if len(lb)]
    return np.concatenate(parts, 0).astype(np.float32) if parts else np.zeros((0, 2), np.float32)


def create_dataloader(path, imgsz: int, batch_size: int, stride: int, hyp: dict | None = None, augment: bool = False,
                      cache: str | None = None, pad: float = 0.0, rect: bool = False, workers: int = 8,
                      shuffle: bool = False, single_cls: bool = False, seed: int = 0, prefix: str = "",
                      names: dict[int, str] | None = None, rank: int = 0,
                      world_size: int = 1) -> tuple[DataLoader, LoadImagesAndLabels]:
    """YOLOv5's dataloader. ``path``: dir, glob, .txt list or a list of them. ``names`` (from check_dataset)
    enables the class-id check (< nc) and names the classes. Workers are persistent; call
    ``dataset.set_epoch(e)`` before each epoch (or just iterate: the epoch advances by itself). Under DDP
    ``batch_size`` is the total: this ``rank`` loads its ``batch_size / world_size`` share of each batch
    (``SeededSampler``)."""
    if rect and shuffle:
        LOGGER.warning(f"{prefix}WARNING: rect=True is incompatible with shuffle, setting shuffle=False")
        shuffle = False
    dataset = LoadImagesAndLabels(path, imgsz, batch_size, augment=augment, hyp=hyp, rect=rect, cache=cache,
                                  single_cls=single_cls, stride=int(stride), pad=pad, seed=seed, names=names,
                                  prefix=prefix)
    sampler = SeededSampler(dataset, shuffle, seed, rank, world_size, batch_size)
    batch_size = batch_size // world_size if world_size > 1 else min(batch_size, len(dataset))
    nw = min(os.cpu_count() or 1, batch_size if batch_size > 1 else 0, workers)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=nw,
                        pin_memory=torch.cuda.is_available(), collate_fn=LoadImagesAndLabels.collate_fn,
                        persistent_workers=nw > 0, worker_init_fn=_worker_init if nw > 0 else None)
    return loader, dataset
