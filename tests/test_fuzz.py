"""Property-based fuzzing (hypothesis) of the parsers that meet arbitrary input: label files, YAML files (data,
hyp, model), hyp checking, checkpoint files and model YAML dicts. Every generated input ends in a result or in
one of our one-line errors (ValueError / FileNotFoundError with a single-line message), never another exception.
Inputs that found bugs are kept as ``@example``s. ``FUZZ_EXAMPLES=2000`` runs a longer hunt."""
import copy
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from models.yolo import DetectionModel, load_cfg
from utils.data.labels import parse_label_file
from utils.io.checkpoint import load_checkpoint
from utils.io.files import yaml_load, yaml_read
from utils.io.hyp import PIPELINE_KEYS, check_hyp

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))  # more for a longer hunt: FUZZ_EXAMPLES=2000 pytest ...
# derandomized: CI runs the same inputs every time (a longer hunt: FUZZ_EXAMPLES, or drop derandomize locally)
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True,
                database=None)
OURS = (ValueError, FileNotFoundError)


def one_line(e: BaseException) -> None:
    assert isinstance(e, OURS), f"{type(e).__name__}: {e}"
    assert "\n" not in str(e).strip(), f"not one line: {e}"


def write(data: bytes, suffix: str) -> Path:
    with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as f:
        f.write(data)
    return Path(f.name)


# ---------------------------------------------------------------------------------------------- label files
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 100),
                    st.sampled_from(["nan", "inf", "-0", "1e309", "0x10", "", "1,5", "+.5"]))
rows = st.lists(st.lists(numbers, min_size=0, max_size=9).map(lambda r: " ".join(map(str, r))), max_size=6)


@FAST
@given(text=st.one_of(rows.map("\n".join), st.text(max_size=200)), nc=st.one_of(st.none(), st.integers(1, 10)))
@example(text="0 0.5 0.5 0.2 0.2\n1 nan 0.5 0.1 0.1", nc=2)
def test_label_files_parse_or_report(text, nc):
    path = write(text.encode("utf-8", "surrogatepass"), ".txt")
    try:
        item = parse_label_file(str(path), nc)
    finally:
        path.unlink()
    if item.labels is not None:  # usable: (n, 5) finite, classes in range, boxes inside the image
        lb = item.labels
        assert lb.ndim == 2 and lb.shape[1] == 5 and np.isfinite(lb).all()
        assert ((lb[:, 1:] >= 0) & (lb[:, 1:] <= 1)).all()
        assert nc is None or (lb[:, 0] < nc).all()
    else:
        assert item.issues and all(len(i) == 3 and "\n" not in i[2] for i in item.issues)


@FAST
@given(data=st.binary(max_size=300))
def test_label_files_of_any_bytes(data):
    path = write(data, ".txt")
    try:
        item = parse_label_file(str(path), 3)
    finally:
        path.unlink()
    assert item.labels is not None or item.issues


# ---------------------------------------------------------------------------------------------- YAML and hyp
yaml_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)


@FAST
@given(data=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
                      yaml_values.map(lambda v: yaml.safe_dump(v).encode())))
@example(data=b"a: [1, 2\nb: 3")
@example(data=b"\xff\xfe")
def test_yaml_files_read_or_one_line_error(data):
    path = write(data, ".yaml")
    try:
        for reader in (yaml_read, yaml_load):
            try:
                reader(path)
            except Exception as e:  # noqa: BLE001 (what the test checks)
                one_line(e)
    finally:
        path.unlink()


@FAST
@given(extra=st.dictionaries(st.one_of(st.text(max_size=12), st.integers()), yaml_values, max_size=5),
       drop=st.lists(st.sampled_from(PIPELINE_KEYS), max_size=3))
@example(extra={"\n": None}, drop=[])  # printed raw, the key broke the one-line error
def test_hyp_check_accepts_or_names_the_key(extra, drop):
    hyp = yaml_load(Path(__file__).resolve().parents[1] / "data" / "hyps" / "hyp.scratch-low.yaml")
    hyp.update(extra)
    for k in drop:
        hyp.pop(k, None)
    from models.heads import all_hyp_keys

    try:
        check_hyp(hyp, all_hyp_keys(), "hyp.yaml")
    except Exception as e:  # noqa: BLE001
        one_line(e)


# ---------------------------------------------------------------------------------------------- checkpoints
def zip_with(member: bytes) -> bytes:
    """A torch.save-like zip archive whose data.pkl is ``member``."""
    path = write(b"", ".pt")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", member)
        z.writestr("archive/version", "3\n")
    data = path.read_bytes()
    path.unlink()
    return data


@FAST
@given(data=st.one_of(st.binary(max_size=400), st.binary(max_size=200).map(zip_with),
                      yaml_values.map(lambda v: zip_with(pickle.dumps(v, protocol=2))),
                      yaml_values.map(lambda v: pickle.dumps(v, protocol=2))))
@example(data=b"")
@example(data=b"PK\x03\x04")
@example(data=zip_with(b"\x80\x02}q\x00(X\x01\x00\x00\x00aQ."))  # a dict as persistent id: torch's AssertionError
@example(data=b"\x8d\x00\x00\x00\x00\x00\x00\x00\x01")  # BINBYTES8 of a huge length: MemoryError
def test_checkpoint_files_load_or_one_line_error(data):
    path = write(data, ".pt")
    try:
        ckpt = load_checkpoint(path)
        assert isinstance(ckpt, dict)
    except Exception as e:  # noqa: BLE001
        one_line(e)
    finally:
        path.unlink()


# ---------------------------------------------------------------------------------------------- model YAML
BASE = load_cfg("yolov5n.yaml")[0]
row_edits = st.tuples(st.sampled_from(["backbone", "head"]), st.integers(0, 30), st.integers(0, 3),
                      st.one_of(st.none(), st.booleans(), st.integers(-3, 30), st.floats(-2, 3), st.text(max_size=8),
                                st.lists(st.integers(-3, 30), max_size=3),
                                st.sampled_from(["Conv", "C3", "Detect", "nn.Upsample", "Concat", "SPPF", "Nope"])))
# values stay small: a width_multiple of 100 is a valid model of billions of weights (a CI run was OOM-killed by
# one), not a parser fault
top_edits = st.tuples(st.sampled_from(["nc", "depth_multiple", "width_multiple", "anchors", "activation", "ch", "zzz"]),
                      st.one_of(st.none(), st.integers(-2, 4), st.floats(-1, 2), st.text(max_size=6),
                                st.lists(st.integers(-5, 50), max_size=7)))


@settings(max_examples=max(EXAMPLES // 3, 20), deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True, database=None)
@given(rows=st.lists(row_edits, max_size=3), tops=st.lists(top_edits, max_size=2))
@example(rows=[("head", 17, 3, [16]), ("head", 17, 3, [16])], tops=[])  # found: Concat over dim 16, an IndexError
@example(rows=[("head", 2, 2, "')y\n")], tops=[])  # found: a module name with a line break, printed raw
@example(rows=[], tops=[("ch", [5])])  # found: ch not an int, a TypeError in the stride probe
@example(rows=[("head", 14, 2, [])], tops=[])  # found: a list as the last row's module, TypeError (unhashable)
def test_model_yaml_builds_or_one_line_error(rows, tops):
    cfg = copy.deepcopy(BASE)
    for part, i, j, value in rows:
        layer = cfg[part][i % len(cfg[part])]
        layer[j] = value
    for key, value in tops:
        cfg[key] = value
    try:
        DetectionModel(cfg, verbose=False)
    except Exception as e:  # noqa: BLE001
        one_line(e)


# ---------------------------------------------------------------------------------------------- data YAML
data_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 10), st.floats(), st.text(max_size=12),
                        st.lists(st.one_of(st.text(max_size=6), st.integers(-2, 5), st.none()), max_size=4),
                        st.dictionaries(st.one_of(st.integers(-2, 5), st.text(max_size=4)),
                                        st.one_of(st.text(max_size=6), st.integers(), st.none()), max_size=4))


@FAST
@given(spec=st.dictionaries(st.sampled_from(["path", "train", "val", "test", "names", "nc", "imgsz", "other"]),
                            data_values, max_size=7))
@example(spec={"train": "images/train", "val": "images/val", "names": {0: "a", "x": "b"}})
@example(spec={"names": [], "path": None, "train": None, "val": None, "nc": "\n"})  # found: nc printed raw
@example(spec={"names": ["a"], "path": True, "train": "a", "val": "b"})  # found: TypeError from Path(True)
@example(spec={"names": ["a"], "path": None, "train": None, "val": None})  # found: TypeError on val None
def test_data_yaml_checks_or_one_line_error(spec):
    """check_dataset on any data YAML (without a generate: section: that one writes a dataset): a dataset dict or
    one of our one-line errors."""
    from utils.data.config import check_dataset

    path = write(yaml.safe_dump(spec).encode(), ".yaml")
    try:
        check_dataset(str(path))
    except Exception as e:  # noqa: BLE001
        one_line(e)
    finally:
        path.unlink()
