"""Paired bootstrap over validation images: equals ap_per_class on resampled sets, 0 inside for identical arms,
outside for a degraded arm, reproducible by seed."""
import numpy as np
import pytest
import torch

from utils.evaluation.bootstrap import ImageStats, map_per_threshold, match_images, paired_bootstrap, resample_counts
from utils.evaluation.metrics import ap_per_class


def synthetic(seed=0, n_images=40, objects=6, nc=3, background=20, jitter=0.04):
    """Per image labels (m, 5) and detections (n, 6): jittered labels (85% found, some wrong class) + background."""
    rng = np.random.default_rng(seed)
    labels, preds = [], []
    for _ in range(n_images):
        m = int(rng.poisson(objects))
        xy = rng.uniform(0, 500, (m, 2))
        lab = np.column_stack((rng.integers(0, nc, m), xy, xy + rng.uniform(20, 140, (m, 2))))
        found = lab[rng.random(m) < 0.85]
        side = np.tile(found[:, 3:5] - found[:, 1:3], 2)
        cls = np.where(rng.random(len(found)) < 0.1, rng.integers(0, nc, len(found)), found[:, 0])
        det = np.column_stack((found[:, 1:] + rng.normal(0, jitter, side.shape) * side, rng.uniform(0.3, 1, len(found)),
                               cls))
        bxy = rng.uniform(0, 500, (background, 2))
        bg = np.column_stack((bxy, bxy + rng.uniform(10, 100, (background, 2)), rng.uniform(0, 0.5, background),
                              rng.integers(0, nc, background)))
        det = np.concatenate((det, bg))
        labels.append(torch.tensor(lab, dtype=torch.float32).reshape(-1, 5))
        preds.append(torch.tensor(det[np.argsort(-det[:, 4])], dtype=torch.float32))
    return preds, labels


@pytest.fixture(scope="module")
def arm():
    preds, labels = synthetic()
    return preds, labels, match_images(preds, labels)


def reference(st: ImageStats, image_index: np.ndarray, close: bool) -> tuple[float, float]:
    """ap_per_class (mAP50, mAP50-95) on the images listed (repeats allowed), built physically."""
    det = np.concatenate([np.flatnonzero(st.image == i) for i in image_index])
    gt = np.concatenate([np.flatnonzero(st.target_image == i) for i in image_index])
    res = ap_per_class(st.tp[det], st.conf[det], st.pred_cls[det], st.target_cls[gt], close_at_full_recall=close)
    return res.mean_results()[2:]


@pytest.mark.parametrize("close", [True, False])
def test_identity_resample_is_ap_per_class(arm, close):
    st = arm[2]
    got = map_per_threshold(st, np.ones((1, st.n_images)), close)[0]
    map50, map_ = reference(st, np.arange(st.n_images), close)
    assert got[0] == pytest.approx(map50, abs=1e-12) and got.mean() == pytest.approx(map_, abs=1e-12)


@pytest.mark.parametrize("close", [True, False])
def test_resample_is_ap_per_class_on_the_resampled_set(arm, close):
    st = arm[2]
    counts = resample_counts(st.n_images, 4, seed=7)
    got = map_per_threshold(st, counts, close)
    for row, c in zip(got, counts):
        map50, map_ = reference(st, np.repeat(np.arange(st.n_images), c), close)
        assert row[0] == pytest.approx(map50, abs=1e-12) and row.mean() == pytest.approx(map_, abs=1e-12)


def test_full_set_difference_is_ap_per_class_difference(arm):
    _, labels, a = arm
    b = match_images(synthetic(jitter=0.08)[0], labels)
    res = paired_bootstrap(a, b, n_boot=50, seed=0)
    ref_a, ref_b = (reference(s, np.arange(s.n_images), True) for s in (a, b))
    assert res.a == pytest.approx(ref_a, abs=1e-12) and res.b == pytest.approx(ref_b, abs=1e-12)
    assert res.map.diff == pytest.approx(ref_b[1] - ref_a[1], abs=1e-12)
    assert res.map50.diff == pytest.approx(ref_b[0] - ref_a[0], abs=1e-12)


def test_identical_arms_contain_zero(arm):
    res = paired_bootstrap(arm[2], arm[2], n_boot=200, seed=0)
    assert not res.map.excludes_zero and not res.map50.excludes_zero
    assert np.all(res.diffs == 0)


def test_dropping_half_the_true_positives_excludes_zero(arm):
    preds, labels, a = arm
    degraded = []
    for i, p in enumerate(preds):
        tp = a.tp[a.image == i, 0]
        drop = np.flatnonzero(tp)[::2]  # every other true positive at IoU 0.5
        degraded.append(p[np.setdiff1d(np.arange(len(p)), drop)])
    res = paired_bootstrap(a, match_images(degraded, labels), n_boot=200, seed=0)
    assert res.map.excludes_zero and res.map.high < 0
    assert res.map50.excludes_zero and res.map50.high < 0
    assert res.map.low <= res.map.diff <= res.map.high


def test_jittered_boxes_exclude_zero_for_map50_95(arm):
    preds, labels, a = arm
    rng = np.random.default_rng(1)
    jittered = []
    for p in preds:
        q = p.clone()
        side = (q[:, 2:4] - q[:, 0:2]).repeat(1, 2)
        q[:, :4] += torch.tensor(rng.normal(0, 0.08, q[:, :4].shape), dtype=torch.float32) * side
        jittered.append(q)
    res = paired_bootstrap(a, match_images(jittered, labels), n_boot=200, seed=0)
    assert res.map.excludes_zero and res.map.high < 0


def test_seed_reproduces(arm):
    a = arm[2]
    b = match_images(synthetic(jitter=0.08)[0], arm[1])
    r1, r2 = (paired_bootstrap(a, b, n_boot=100, seed=3) for _ in range(2))
    r3 = paired_bootstrap(a, b, n_boot=100, seed=4)
    assert np.array_equal(r1.diffs, r2.diffs) and r1.map == r2.map
    assert not np.array_equal(r1.diffs, r3.diffs)


def test_resample_counts():
    counts = resample_counts(30, 500, seed=0)
    assert counts.shape == (500, 30) and np.all(counts.sum(1) == 30)
    assert np.array_equal(counts, resample_counts(30, 500, seed=0))
    assert abs(counts.mean() - 1) < 0.05


def test_from_per_image_matches_val_stats_layout():
    correct = [torch.tensor([[True] * 10, [False] * 10]), torch.zeros((0, 10), dtype=torch.bool)]
    conf, pred_cls = [torch.tensor([0.9, 0.3]), torch.zeros(0)], [torch.tensor([1.0, 0.0]), torch.zeros(0)]
    st = ImageStats.from_per_image(correct, conf, pred_cls, [torch.tensor([1.0]), torch.tensor([0.0])])
    assert st.n_images == 2 and st.tp.shape == (2, 10)
    assert st.image.tolist() == [0, 0] and st.target_image.tolist() == [0, 1]
    assert st.gt_count(2).tolist() == [[0, 1], [1, 0]]
    # class 1: one TP -> AP 1; class 0: its label unfound, one FP -> AP 0
    assert map_per_threshold(st, np.ones((1, 2)), close_at_full_recall=False)[0] == pytest.approx(np.full(10, 0.5))


def test_arms_on_different_sets_are_refused(arm):
    preds, labels, a = arm
    other = match_images(preds[:-1], labels[:-1])
    with pytest.raises(ValueError, match="same validation set"):
        paired_bootstrap(a, other)
