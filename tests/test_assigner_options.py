"""Assigner options from the head row or the hyp file, passed through unchanged to any head's assigner; the
hyp keys a head owns (and their --evolve ranges); the union of every head's keys that a hyp file may hold."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml
from test_gfl import tiny_gfl  # tests/ is on sys.path under pytest
from test_heads import targets_for

from models.heads import HEADS, Detect, all_hyp_keys
from models.yolo import DetectionModel, load_cfg
from utils.assigners import (
    ASSIGNERS,
    assigner_from,
    assigner_hyp_keys,
    assigner_options,
    dsl_assign,
    parse_assigner,
    simota_assign,
)
from utils.io.hyp import PIPELINE_RANGES, check_hyp, evolve_meta

ROOT = Path(__file__).resolve().parents[1]
HYP = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
INPUTS = ["pred_boxes", "pred_cls_logits", "pred_obj_logits", "priors", "gt_boxes", "gt_labels", "gt_mask"]
# utils/io/hyp.py's EVOLVE_META before the heads owned their ranges: YOLOv5 v7.0's table
YOLOV5_EVOLVE_META = {
    "lr0": (1, 1e-5, 1e-1), "lrf": (1, 0.01, 1.0), "momentum": (0.3, 0.6, 0.98), "weight_decay": (1, 0.0, 0.001),
    "warmup_epochs": (1, 0.0, 5.0), "warmup_momentum": (1, 0.0, 0.95), "warmup_bias_lr": (1, 0.0, 0.2),
    "box": (1, 0.02, 0.2), "cls": (1, 0.2, 4.0), "cls_pw": (1, 0.5, 2.0), "obj": (1, 0.2, 4.0),
    "obj_pw": (1, 0.5, 2.0), "iou_t": (0, 0.1, 0.7), "anchor_t": (1, 2.0, 8.0), "anchors": (2, 2.0, 10.0),
    "fl_gamma": (0, 0.0, 2.0), "hsv_h": (1, 0.0, 0.1), "hsv_s": (1, 0.0, 0.9), "hsv_v": (1, 0.0, 0.9),
    "degrees": (1, 0.0, 45.0), "translate": (1, 0.0, 0.9), "scale": (1, 0.0, 0.9), "shear": (1, 0.0, 10.0),
    "perspective": (0, 0.0, 0.001), "flipud": (1, 0.0, 1.0), "fliplr": (0, 0.0, 1.0), "mosaic": (1, 0.0, 1.0),
    "mixup": (1, 0.0, 1.0), "copy_paste": (1, 0.0, 1.0)}


def tiny_af(assigner="simota") -> dict:
    cfg, _ = load_cfg("yolov5n-decoupled-af.yaml")
    cfg = {**cfg, "nc": 3, "width_multiple": 0.125, "depth_multiple": 0.33}
    cfg["head"][-1][3] = ["nc", 256, False, assigner]
    return cfg


def assignment(cfg: dict, hyp: dict, seed: int = 0):
    """(the criterion's assigner, the inputs it was called with, its Assignment) on one fixed batch."""
    torch.manual_seed(seed)
    model = DetectionModel(cfg).train()
    crit = model.criterion(hyp, 64)
    calls = []

    def spy(*args):
        calls.append((args, crit_assigner(*args)))
        return calls[-1][1]
    crit_assigner, crit.assigner = crit.assigner, spy
    with torch.no_grad():
        crit(model(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))), targets_for(2))
    return crit_assigner, *calls[0]


def same(a, b) -> bool:
    return torch.equal(a.assigned_gt, b.assigned_gt) and torch.equal(a.matched_iou, b.matched_iou)


# ------------------------------------------------------------------ the options and their declaration
def test_every_assigner_takes_the_contract_inputs_then_keyword_only_options():
    for name, fn in ASSIGNERS.items():
        params = list(inspect.signature(fn).parameters.values())
        assert [p.name for p in params[:7]] == INPUTS, name
        assert all(p.kind is p.KEYWORD_ONLY and p.default is not p.empty for p in params[7:]), name


def test_declared_defaults_are_the_references():
    assert assigner_options("simota") == {"center_radius": None, "candidate_topk": 10, "iou_weight": 3.0,
                                          "center_only": False}  # radius None: 2.5, or 1.5 with center_only
    assert assigner_options("dsl") == {"topk": 13, "iou_factor": 3.0, "soft_center_radius": 0.0}  # NanoDet's
    assert assigner_options("center") == {"center_radius": 1.5}
    assert "simota_center_radius" in assigner_hyp_keys() and "dsl_topk" in assigner_hyp_keys(["dsl"])


def test_assigner_from_reads_its_own_hyp_keys_and_the_row_wins():
    hyp = {**HYP, "simota_center_radius": 3.0, "dsl_topk": 5, "center_center_radius": 1.0}
    assert assigner_from("simota", hyp).keywords == {"center_radius": 3.0}
    assert assigner_from("dsl", hyp).keywords == {"topk": 5}
    assert assigner_from("simota", hyp, {"center_radius": 2.0, "center_only": True}).keywords == {
        "center_radius": 2.0, "center_only": True}
    assert assigner_from("simota").func is simota_assign and assigner_from("simota").keywords == {}


def test_unknown_or_mistyped_option_is_a_one_line_error():
    with pytest.raises(ValueError) as e:
        assigner_from("simota", {}, {"center_radious": 3.0})
    msg = str(e.value)
    assert "\n" not in msg and msg == (
        "assigner 'simota': unknown option 'center_radious' (did you mean 'center_radius'?); its options: "
        "center_radius=None, candidate_topk=10, iou_weight=3.0, center_only=False")
    with pytest.raises(ValueError, match="assigner 'dsl': option 'topk' must be like its default 13, got 2.5"):
        assigner_from("dsl", {"dsl_topk": 2.5})
    with pytest.raises(ValueError, match="option 'center_only' must be like its default False, got 'yes'"):
        parse_assigner({"name": "simota", "center_only": "yes"})
    with pytest.raises(ValueError, match="needs 'name'"):
        parse_assigner({"center_radius": 3.0})
    with pytest.raises(ValueError, match="assigner 'hungarian' not known; use one of simota, center, dsl"):
        parse_assigner("hungarian")


def test_unknown_option_in_a_yaml_row_names_the_row():
    cfg = tiny_gfl(assigner={"name": "simota", "center_radious": 3.0})
    with pytest.raises(ValueError, match=r"row \d+ \(GFLHead\).*assigner 'simota': unknown option 'center_radious'"):
        DetectionModel(cfg)


def test_row_options_are_yaml_flow_mappings():
    row = yaml.safe_load("[[17, 20, 23], 1, GFLHead, [nc, 32, 1, 3, 7, 10, {name: simota, center_radius: 3.0}, 1]]")
    head = DetectionModel({**tiny_gfl(), "head": [*tiny_gfl()["head"][:-1], row]}).head
    assert head.assigner == "simota" and head.assigner_options == {"center_radius": 3.0}
    assert head.criterion({}).assigner.keywords == {"center_radius": 3.0}


# ------------------------------------------------------------------ any head honours them
def test_simota_under_gfl_head_honours_the_hyp_radius():
    """GFLHead passed no options to its assigner: simota_center_radius was ignored there."""
    fn, args, default = assignment(tiny_gfl(assigner="simota"), {})
    _, args_small, small = assignment(tiny_gfl(assigner="simota"), {"simota_center_radius": 0.5})
    assert fn.keywords == {} and same(default, simota_assign(*args, center_radius=2.5))
    assert same(small, simota_assign(*args_small, center_radius=0.5))
    assert not same(small, default)
    priors, gt_boxes = args_small[3], args_small[4]  # (N, 4) [px, py, sx, sy], (B, G, 4) xyxy
    b, n = small.fg_mask.nonzero(as_tuple=True)
    centre = (gt_boxes[b, small.assigned_gt[b, n], :2] + gt_boxes[b, small.assigned_gt[b, n], 2:]) / 2
    assert len(n) and ((priors[n, :2] - centre).abs() < 0.5 * priors[n, 2:]).all()  # within 0.5 strides
    _, _, row = assignment(tiny_gfl(assigner={"name": "simota", "center_radius": 0.5}), {"simota_center_radius": 2.5})
    assert same(row, small)  # the row's option over the hyp's


@pytest.mark.parametrize("hyp, old_options", [({}, {"center_radius": 2.5, "center_only": False}),
                                              ({"simota_center_only": True}, {"center_radius": 1.5, "center_only": True}),
                                              ({"simota_center_radius": 2.0}, {"center_radius": 2.0, "center_only": False})])
def test_yolox_simota_assigns_as_before(hyp, old_options):
    """YOLOXLoss used to build these options itself (radius 1.5 with center_only, else 2.5)."""
    _, args, res = assignment(tiny_af(), {**HYP, **hyp})
    assert same(res, simota_assign(*args, **old_options))


@pytest.mark.parametrize("cfg", [tiny_gfl(), tiny_af("dsl")], ids=["GFLHead", "YOLOXHead"])
def test_dsl_assigns_as_before(cfg):
    _, args, res = assignment(cfg, HYP)
    assert same(res, dsl_assign(*args, topk=13, iou_factor=3.0, soft_center_radius=0.0))


# ------------------------------------------------------------------ hyp keys and --evolve ranges
def test_detect_evolve_table_is_yolov5s():
    assert evolve_meta(Detect.hyp_ranges) == YOLOV5_EVOLVE_META
    assert evolve_meta(HEADS["YOLOXHead"].hyp_ranges) == PIPELINE_RANGES  # no YOLOv5 gains mutated for it
    with pytest.raises(ValueError, match="may not re-range the pipeline's keys: lr0"):
        evolve_meta({"lr0": (1, 0.0, 1.0)})


def test_each_head_ranges_only_its_own_keys():
    for name, head in HEADS.items():
        assert set(head.hyp_ranges) <= set(head.hyp_keys), name
    for name in ("YOLOXHead", "GFLHead"):
        assert set(assigner_hyp_keys()) <= set(HEADS[name].hyp_keys), name


def test_hyp_check_accepts_every_heads_keys_and_names_the_nearest():
    keys = all_hyp_keys()
    for path in sorted((ROOT / "data" / "hyps").glob("*.yaml")):
        check_hyp(yaml.safe_load(path.read_text()), keys, path.name)  # one file serves every arm
    check_hyp({**HYP, "simota_center_only": True, "dsl_topk": 9}, keys)
    with pytest.raises(ValueError, match=r"unknown key 'simota_center_radious' \(did you mean 'simota_center_radius'"):
        check_hyp({**HYP, "simota_center_radious": 3.0}, keys)
    with pytest.raises(ValueError, match=r"unknown key 'fl_gama' \(did you mean 'fl_gamma'\?\)"):
        check_hyp({**HYP, "fl_gama": 1.5}, keys)
