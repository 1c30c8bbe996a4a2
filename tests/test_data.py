"""Dataset YAMLs, label checks and their cache, the built-in dataset, batch layout, pairing and epoch control."""
import hashlib
import io
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from data.generators import shapes
from utils.data import dataloaders as dl
from utils.data import labels as labels_module
from utils.data.dataloaders import check_dataset, create_dataloader, img2label_paths, list_images

TINY = dict(imgsz=96, n_train=12, n_val=4, video_seconds=0)
HYP = yaml.safe_load((Path(__file__).resolve().parents[1] / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes") / "shapes"
    shapes.generate(root, shapes.ShapesConfig(**TINY), workers=1, log=lambda s: None)
    return root


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in (".jpg", ".txt")}


# ------------------------------------------------------------------ built-in dataset
def test_generation_is_deterministic_and_prefix_stable(tmp_path):
    a, b, big = tmp_path / "a", tmp_path / "b", tmp_path / "big"
    shapes.generate(a, shapes.ShapesConfig(**TINY), workers=1, log=lambda s: None)
    shapes.generate(b, shapes.ShapesConfig(**TINY), workers=2, log=lambda s: None)
    assert digest(a) == digest(b) and len(digest(a)) == 2 * (12 + 4)
    shapes.generate(big, shapes.ShapesConfig(**{**TINY, "n_train": 16}), workers=1, log=lambda s: None)
    big_digest = digest(big)
    assert all(big_digest[k] == v for k, v in digest(a).items())  # a larger version keeps the smaller one's images
    other = shapes.ShapesConfig(**{**TINY, "seed": 1})
    assert not np.array_equal(shapes.render_image(other, "train", 0)[0], cv2.imread(str(a / "images/train/000000.jpg")))


def test_shapes_difficulty_features():
    cfg = shapes.ShapesConfig(imgsz=160, n_train=60)
    labels = [shapes.render_image(cfg, "train", i)[1] for i in range(60)]
    counts = np.array([len(lb) for lb in labels])
    allb = np.concatenate(labels)
    assert set(allb[:, 0].astype(int)) == set(range(8))
    assert counts.max() >= 15 and counts.min() <= 2  # crowded and sparse or empty images
    side = allb[:, 3:5].max(1) * 160
    assert side.min() < 12 and side.max() > 50
    assert ((allb[:, 1:5] >= 0) & (allb[:, 1:5] <= 1)).all()



def test_shapes_knobs_objects_background_and_class_colour():
    rng = np.random.default_rng(0)
    cfg = shapes.ShapesConfig(imgsz=160, min_objects=4, max_objects=12, empty=0.0)
    counts = [len(shapes._sample_objects(rng, cfg)) for _ in range(200)]
    assert min(counts) == 4 and max(counts) == 12
    def detail(stripes: float, texture: float) -> float:  # high-frequency energy of a background
        bg = shapes.background(np.random.default_rng(1), 64, 64, clutter=0, stripes=stripes, texture=texture)
        return float(np.abs(cv2.Laplacian(bg, cv2.CV_32F)).mean())
    assert detail(0.0, 0.0) < 1.0 < detail(1.0, 1.0)  # plain: a smooth two-colour field only
    for cls in range(len(shapes.CLASS_NAMES)):  # a class hue comes back as that hue (+- 6, OpenCV's 0-180 scale)
        want = 180 * cls / len(shapes.CLASS_NAMES)
        bgr = shapes._object_colour(rng, np.zeros(3), 0.0, hue=want)
        got = cv2.cvtColor(bgr.astype(np.uint8)[None, None], cv2.COLOR_BGR2HSV)[0, 0, 0]
        assert min(abs(got - want), 180 - abs(got - want)) <= 8
    default = shapes.ShapesConfig(**TINY)
    same = shapes.ShapesConfig(**TINY, min_objects=1, stripes=0.4, texture=0.5, class_colour=0.0)
    assert np.array_equal(shapes.render_image(default, "val", 3)[0], shapes.render_image(same, "val", 3)[0])
    with pytest.raises(ValueError, match="min_objects"):
        shapes.ShapesConfig(min_objects=5, max_objects=4)


def test_shapes_class_subset(tmp_path):
    cfg = shapes.ShapesConfig(**TINY, classes=("star", "square"), class_colour=1.0, occlusion=0.0, noise=0.0,
                              min_objects=4, max_objects=8, empty=0.0)
    labels = np.concatenate([shapes.render_image(cfg, "train", i)[1] for i in range(12)])
    assert set(labels[:, 0].astype(int)) == {0, 1}
    img, lb = shapes.render_image(cfg, "train", 0)
    assert len(lb) >= 3
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    for c, x, y, _, _ in lb:  # box centres are inside a star or a square: their hue is the class's of 2 (0 or 90)
        h = int(hsv[int(y * cfg.imgsz), int(x * cfg.imgsz), 0])
        assert min(abs(h - 90 * c), 180 - abs(h - 90 * c)) <= 10
    with pytest.raises(ValueError, match="classes"):
        shapes.ShapesConfig(classes=("star", "blob"))
    with pytest.raises(ValueError, match="classes"):
        shapes.ShapesConfig(classes=("star", "star"))
    base = {"path": str(tmp_path / "ds"), "train": "images/train", "val": "images/val",
            "generate": {**TINY, "n_train": 2, "n_val": 1, "classes": ["star", "square"]}}
    for names in (["square", "star"], ["star", "square", "circle"]):
        with pytest.raises(ValueError, match="do not match the generated classes"):
            check_dataset(write_yaml(tmp_path / "bad.yaml", {**base, "names": names}))
    assert check_dataset(write_yaml(tmp_path / "ok.yaml", {**base, "names": ["star", "square"]}))["nc"] == 2

def test_video_written(tmp_path):
    cfg = shapes.ShapesConfig(video_seconds=1, video_fps=10, video_size=(96, 64), video_objects=3)
    path = shapes.write_video(tmp_path / "v.mp4", cfg)
    cap = cv2.VideoCapture(str(path))
    n, ok, frame = 0, True, None
    while ok:
        ok, f = cap.read()
        n += ok
        frame = f if ok else frame
    assert n == 10 and frame.shape == (64, 96, 3)


def test_generator_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown shapes generator key.*'n_trian'"):
        shapes.ShapesConfig.from_dict({"n_trian": 5}, source="my.yaml")


# ------------------------------------------------------------------ dataset YAMLs
def write_yaml(path: Path, d: dict) -> Path:
    path.write_text(yaml.safe_dump(d))
    return path


def test_check_dataset_generates_once_and_resolves(tmp_path):
    root = tmp_path / "ds"
    f = write_yaml(tmp_path / "s.yaml", {"path": str(root), "train": "images/train", "val": "images/val",
                                         "names": ["a", "b"] + [f"c{i}" for i in range(6)],
                                         "generate": {"generator": "shapes", **TINY, "n_train": 5, "n_val": 2}})
    d = check_dataset(f)
    assert d["nc"] == 8 and d["names"][0] == "a" and isinstance(list(d["names"])[0], int)
    assert d["train"] == str(root / "images" / "train") and Path(d["val"]).is_dir()
    assert len(list_images(d["train"])) == 5
    marker = (root / shapes.MARKER).stat().st_mtime_ns
    check_dataset(f)
    assert (root / shapes.MARKER).stat().st_mtime_ns == marker  # not regenerated
    write_yaml(f, {**yaml.safe_load(f.read_text()), "generate": {**TINY, "n_train": 7, "n_val": 2}})
    assert len(list_images(check_dataset(f)["train"])) == 7  # new settings regenerate


def test_check_dataset_bare_name_and_missing_real_dataset(tmp_path):
    d = yaml.safe_load((dl.ROOT / "data" / "coco128.yaml").read_text())
    root = (dl.ROOT / d["path"]).resolve()
    name = "coco128.yaml"
    if root.exists():  # a machine that has coco128: the same YAML pointing where nothing is
        root = tmp_path / "coco128"
        name = tmp_path / "coco128.yaml"
        name.write_text(yaml.safe_dump({**d, "path": str(root)}))
    with pytest.raises(FileNotFoundError, match="Nothing is downloaded unasked.*python data/download.py coco128") as e:
        check_dataset(name)
    assert str(root) in str(e.value)
    assert dl.resolve_data_yaml("VOC") == dl.ROOT / "data" / "VOC.yaml"
    assert len(yaml.safe_load((dl.ROOT / "data" / "coco.yaml").read_text())["names"]) == 80
    with pytest.raises(FileNotFoundError, match="not found"):
        check_dataset("no_such_dataset.yaml")


def test_check_dataset_nc_mismatch(tmp_path):
    f = write_yaml(tmp_path / "x.yaml", {"path": str(tmp_path), "train": ".", "val": ".", "names": ["a"], "nc": 2})
    with pytest.raises(ValueError, match="nc=2 but 1 names"):
        check_dataset(f)


def test_file_lists(tmp_path):
    (tmp_path / "images" / "sub").mkdir(parents=True)
    for name in ("a.jpg", "sub/b.PNG", "notes.md"):
        (tmp_path / "images" / name).write_bytes(b"x")
    (tmp_path / "list.txt").write_text("./images/a.jpg\nimages/sub/b.PNG\n")
    assert [Path(f).name for f in list_images(tmp_path / "images")] == ["a.jpg", "b.PNG"]
    assert list_images(tmp_path / "list.txt") == list_images(tmp_path / "images")
    assert len(list_images([str(tmp_path / "images" / "*.jpg"), tmp_path / "list.txt"])) == 3
    assert img2label_paths(["/d/images/x/images/1.jpg"]) == ["/d/images/x/labels/1.txt"]


# ------------------------------------------------------------------ label checks
def save_png(path: Path, h: int = 40, w: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))


def jpeg_bytes(h: int = 40, w: int = 60, exif_orientation: int | None = None) -> bytes:
    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))
    buf = io.BytesIO()
    exif = Image.Exif()
    if exif_orientation:
        exif[0x0112] = exif_orientation
    im.save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


BAD_CASES = {  # image name -> label text (None: no label file)
    "good.png": "0 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n",
    "columns.png": "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n",
    "nonnum.png": "0 0.5 zz 0.2 0.2\n",
    "outside.png": "0 0.5 0.5 0.2 0.2\n0 1.5 0.5 0.2 0.2\n1 1.005 0.5 0.02 0.2\n",
    "zero.png": "0 0.5 0.5 0.0 0.2\n1 0.3 0.3 0.1 0.1\n",
    "classhigh.png": "7 0.5 0.5 0.2 0.2\n",
    "classneg.png": "-1 0.5 0.5 0.2 0.2\n",
    "dup.png": "0 0.5 0.5 0.2 0.2\n2 0.1 0.1 0.1 0.1\n0 0.5 0.5 0.2 0.2\n",
    "polygon.png": "1 0.1 0.1 0.3 0.1 0.3 0.4\n",
    "missing.png": None,
    "empty.png": "",
    "small.png": "0 0.5 0.5 0.2 0.2\n",
    "corrupt.jpg": "0 0.5 0.5 0.2 0.2\n",
    "truncated.jpg": "0 0.5 0.5 0.2 0.2\n",
    "gif.png": "0 0.5 0.5 0.2 0.2\n",
    "exif.jpg": "0 0.5 0.5 0.2 0.2\n",
}


@pytest.fixture()
def bad_dataset(tmp_path) -> Path:
    im_dir, lb_dir = tmp_path / "images" / "train", tmp_path / "labels" / "train"
    lb_dir.mkdir(parents=True)
    for name, label in BAD_CASES.items():
        if name.endswith(".png"):
            save_png(im_dir / name, *((8, 8) if name == "small.png" else (40, 40)))
        if label is not None:
            (lb_dir / name).with_suffix(".txt").write_text(label)
    (im_dir / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not a jpeg at all" * 4)
    full = jpeg_bytes()
    (im_dir / "truncated.jpg").write_bytes(full[: len(full) * 2 // 3])
    Image.new("RGB", (20, 20)).save(im_dir / "gif.png", "GIF")
    (im_dir / "exif.jpg").write_bytes(jpeg_bytes(40, 60, exif_orientation=6))
    return tmp_path


def test_label_checks_count_and_name_every_case(bad_dataset, caplog):
    caplog.set_level(logging.INFO, logger="headzoo")
    ds = dl.LoadImagesAndLabels(bad_dataset / "images" / "train", img_size=64, names={0: "a", 1: "b", 2: "c"})
    r = ds.report
    corrupt = {"columns", "nonnum", "classhigh", "classneg", "small", "corrupt", "truncated", "gif"}
    assert (r.total, r.corrupt, r.missing) == (len(BAD_CASES), len(corrupt), 1)
    assert r.empty == 1 and r.found == len(BAD_CASES) - 1
    assert sorted(Path(f).stem for f in ds.im_files) == sorted({Path(n).stem for n in BAD_CASES} - corrupt)
    expect = {"columns": 1, "non_numeric": 1, "class_id": 2, "too_small": 1, "corrupt_image": 2, "format": 1,
              "out_of_bounds": 1, "clipped": 1, "zero_area": 1, "duplicate": 1}
    assert r.counts == expect
    ex = r.examples
    assert "columns.txt:2: 4 columns" in ex["columns"][0]
    assert "nonnum.txt:1: value 'zz'" in ex["non_numeric"][0]
    assert "outside.txt:2:" in ex["out_of_bounds"][0] and "outside.txt:3:" in ex["clipped"][0]
    assert "zero.txt:1:" in ex["zero_area"][0] and "dup.txt:3:" in ex["duplicate"][0]
    assert any("classhigh.txt:1: class id 7" in e for e in ex["class_id"])
    assert any("truncated" in e for e in ex["corrupt_image"]) and "'gif'" in ex["format"][0]
    labels = {Path(f).stem: lb for f, lb in zip(ds.im_files, ds.labels)}
    assert len(labels["outside"]) == 2 and labels["outside"][1, 1] + labels["outside"][1, 3] / 2 == pytest.approx(1.0)
    assert len(labels["zero"]) == 1 and len(labels["dup"]) == 2 and len(labels["missing"]) == 0
    np.testing.assert_allclose(labels["polygon"], [[1, 0.2, 0.25, 0.2, 0.3]], atol=1e-6)
    summary = [m for m in caplog.messages if "found" in m]
    assert summary and f"{len(BAD_CASES) - 1} found, 1 missing, 1 empty, {len(corrupt)} corrupt" in summary[0]
    assert any("WARNING: 1 duplicate label row(s) dropped" in m for m in caplog.messages)


def test_exif_rotation_respected(bad_dataset):
    ds = dl.LoadImagesAndLabels(bad_dataset / "images" / "train", img_size=60, names={0: "a", 1: "b", 2: "c"})
    i = [Path(f).name for f in ds.im_files].index("exif.jpg")
    assert tuple(ds.shapes[i]) == (40, 60)  # stored 60 wide x 40 high, displayed rotated
    im, hw0, _ = ds.load_image(i)
    assert hw0 == (60, 40) and im.shape[:2] == (60, 40)


def test_cache_reused_stale_and_unreadable_rebuilt(bad_dataset, monkeypatch, caplog):
    src = bad_dataset / "images" / "train"
    names = {0: "a", 1: "b", 2: "c"}
    dl.LoadImagesAndLabels(src, img_size=64, names=names)
    cache = bad_dataset / "labels" / "train.cache"
    assert cache.is_file()
    real_run = labels_module._run_checks
    calls = []
    monkeypatch.setattr(labels_module, "_run_checks", lambda *a: calls.append(1) or real_run(*a))
    ds = dl.LoadImagesAndLabels(src, img_size=64, names=names)
    assert calls == [] and ds.report.counts["duplicate"] == 1  # served from the cache
    (bad_dataset / "labels" / "train" / "dup.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # size changes
    ds = dl.LoadImagesAndLabels(src, img_size=64, names=names)
    assert calls == [1] and "duplicate" not in ds.report.counts
    cache.write_bytes(b"garbage")
    caplog.set_level(logging.INFO, logger="headzoo")
    ds = dl.LoadImagesAndLabels(src, img_size=64, names=names)
    assert calls == [1, 1] and any("unreadable" in m and "rebuilding" in m for m in caplog.messages)
    dl.LoadImagesAndLabels(src, img_size=64, names={0: "a"})  # nc is part of the key
    assert len(calls) == 3


# ------------------------------------------------------------------ batches
def test_batch_layout_train(tiny_shapes):
    loader, ds = create_dataloader(tiny_shapes / "images" / "train", 64, 4, 32, hyp=HYP, augment=True, workers=0,
                                   shuffle=True, names=dict(enumerate(shapes.CLASS_NAMES)))
    imgs, targets, paths, shp = next(iter(loader))
    assert imgs.dtype == torch.uint8 and imgs.shape == (4, 3, 64, 64)
    assert targets.dtype == torch.float32 and targets.shape[1] == 6 and len(targets) > 0
    assert set(targets[:, 0].long().tolist()) <= {0, 1, 2, 3}
    assert ((targets[:, 2:] >= 0) & (targets[:, 2:] <= 1)).all() and (targets[:, 1] < 8).all()
    assert len(paths) == 4 and all(isinstance(p, str) and Path(p).is_file() for p in paths)
    assert shp == (None,) * 4  # mosaic images have no single original shape
    assert ds.names[0] == "circle" and ds.shapes.shape == (12, 2) and len(ds.label_files) == 12
    assert all(lb.dtype == np.float32 and lb.shape[1] == 5 for lb in ds.labels)


def test_batch_layout_val_maps_back_to_originals(tiny_shapes):
    loader, ds = create_dataloader(tiny_shapes / "images" / "val", 64, 2, 32, rect=True, workers=0)
    for imgs, targets, paths, shp in loader:
        for i, ((h0, w0), ((rh, rw), (padw, padh))) in enumerate(shp):
            t = targets[targets[:, 0] == i, 2:].numpy()
            H, W = imgs.shape[2:]
            x = (t[:, 0] * W - padw) / rw / w0  # back to normalised original coordinates
            j = ds.im_files.index(paths[i])
            np.testing.assert_allclose(x, ds.labels[j][:, 1], atol=2e-3)
        assert imgs.shape[2] % 32 == 0 and imgs.shape[3] % 32 == 0


def batches(loader, epoch):
    loader.dataset.set_epoch(epoch)
    return [(i.clone(), t.clone(), p) for i, t, p, _ in loader]


def test_pairing_independent_of_workers_and_epoch_control(tiny_shapes):
    kw = dict(hyp={**HYP, "mixup": 0.5}, augment=True, shuffle=True, seed=3)
    l0, _ = create_dataloader(tiny_shapes / "images" / "train", 64, 4, 32, workers=0, **kw)
    l2, ds2 = create_dataloader(tiny_shapes / "images" / "train", 64, 4, 32, workers=2, **kw)
    for epoch in (0, 1):
        a, b = batches(l0, epoch), batches(l2, epoch)
        assert [x[2] for x in a] == [x[2] for x in b]
        assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert [x[2] for x in batches(l0, 0)] != [x[2] for x in batches(l0, 1)]
    l3, _ = create_dataloader(tiny_shapes / "images" / "train", 64, 4, 32, workers=0, **{**kw, "seed": 4})
    assert not torch.equal(batches(l3, 0)[0][0], batches(l0, 0)[0][0])
    # close_mosaic reaches the persistent workers: letterboxed items carry their original shape again
    assert all(s is None for _, _, _, shp in l2 for s in shp)
    workers = l2._iterator._workers
    ds2.close_mosaic()
    assert all(s is not None for _, _, _, shp in l2 for s in shp)
    assert l2._iterator._workers is workers  # same worker processes


def test_epoch_advances_without_set_epoch(tiny_shapes):
    loader, ds = create_dataloader(tiny_shapes / "images" / "train", 64, 4, 32, hyp=HYP, augment=True, workers=0,
                                   shuffle=True, seed=1)
    first = [p for _, _, p, _ in loader]
    second = [p for _, _, p, _ in loader]
    ds.set_epoch(1)
    assert first != second and second == [p for _, _, p, _ in loader]


def test_cache_ram_and_disk_give_the_same_items(tiny_shapes, tmp_path):
    kw = dict(hyp=HYP, augment=True, workers=0, shuffle=True)
    ref = batches(create_dataloader(tiny_shapes / "images" / "val", 64, 2, 32, **kw)[0], 0)
    ram = batches(create_dataloader(tiny_shapes / "images" / "val", 64, 2, 32, cache="ram", **kw)[0], 0)
    disk = batches(create_dataloader(tiny_shapes / "images" / "val", 64, 2, 32, cache="disk", **kw)[0], 0)
    assert len(list((tiny_shapes / "images" / "val").glob("*.npy"))) == 4
    for x, y, z in zip(ref, ram, disk):
        assert torch.equal(x[0], y[0]) and torch.equal(x[0], z[0]) and torch.equal(x[1], z[1])
    for f in (tiny_shapes / "images" / "val").glob("*.npy"):
        f.unlink()


def test_training_needs_hyp_and_labels(tiny_shapes):
    with pytest.raises(ValueError, match="needs hyp"):
        create_dataloader(tiny_shapes / "images" / "train", 64, 4, 32, augment=True)
    with pytest.raises(KeyError, match="mosaic"):
        create_dataloader(tiny_shapes / "images" / "train", 64, 4, 32, augment=True,
                          hyp={k: v for k, v in HYP.items() if k != "mosaic"})
