"""YOLOv8/YOLO11 blocks (models/c2f.py): parameter counts from the architecture's formulas, shapes, the
attention's maths against torch's own scaled-dot-product attention, and the whole models against Ultralytics'
printed figures at nc=80."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from models.c2f import C2PSA, Attention, BottleneckK, C2f, C3k, C3k2, PSABlock
from models.yolo import DetectionModel, load_cfg


def conv(c1: int, c2: int, k: int = 1, g: int = 1) -> int:
    """Parameters of Conv: a bias-free k x k conv (groups g) and BatchNorm's weight and bias."""
    return c1 // g * c2 * k * k + 2 * c2


def bottleneck(c: int, e: float) -> int:  # 3x3 -> 3x3, hidden int(c * e)
    return conv(c, int(c * e), 3) + conv(int(c * e), c, 3)


def c3k(c1: int, c2: int, n: int, e: float = 0.5) -> int:  # two 1x1 branches, n full-width bottlenecks, 1x1 out
    h = int(c2 * e)
    return 2 * conv(c1, h) + conv(2 * h, c2) + n * bottleneck(h, 1.0)


def split_stack(c1: int, c2: int, c: int, blocks: list[int]) -> int:  # 1x1 to 2c, blocks, 1x1 over (2 + n) c
    return conv(c1, 2 * c) + conv((2 + len(blocks)) * c, c2) + sum(blocks)


def attention(dim: int, heads: int, ratio: float = 0.5) -> int:  # qkv 1x1, projection 1x1, depthwise 3x3 pe
    kd = int(dim // heads * ratio)
    return conv(dim, dim + 2 * kd * heads) + conv(dim, dim) + conv(dim, dim, 3, g=dim)


def psa_block(c: int) -> int:  # attention (one head per 64 channels) and a c -> 2c -> c feed-forward
    return attention(c, max(c // 64, 1)) + conv(c, 2 * c) + conv(2 * c, c)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("c1, c2, n, shortcut", [(16, 32, 1, True), (24, 16, 3, False), (32, 32, 2, True)])
def test_c2f_formula_and_shape(c1, c2, n, shortcut):
    m = C2f(c1, c2, n, shortcut)
    c = c2 // 2
    assert n_params(m) == split_stack(c1, c2, c, [bottleneck(c, 1.0)] * n)
    assert m(torch.rand(2, c1, 12, 10)).shape == (2, c2, 12, 10)
    assert all(b.add == shortcut for b in m.m)  # full-width bottlenecks: the residual follows the flag alone


@pytest.mark.parametrize("c1, c2, n, use_c3k, e", [(16, 32, 1, False, 0.25), (32, 64, 2, False, 0.5),
                                                    (32, 32, 1, True, 0.5), (48, 64, 2, True, 0.25)])
def test_c3k2_formula_and_shape(c1, c2, n, use_c3k, e):
    m = C3k2(c1, c2, n, use_c3k, e)
    c = int(c2 * e)
    inner = c3k(c, c, 2) if use_c3k else bottleneck(c, 0.5)
    assert n_params(m) == split_stack(c1, c2, c, [inner] * n)
    assert all(isinstance(b, C3k if use_c3k else BottleneckK) for b in m.m)
    assert m(torch.rand(1, c1, 8, 16)).shape == (1, c2, 8, 16)


def test_c3k_formula_kernels_and_residual():
    m = C3k(16, 24, 3, k=3)
    assert n_params(m) == c3k(16, 24, 3)
    assert {b.cv1.conv.kernel_size for b in m.m} == {(3, 3)} and all(b.add for b in m.m)
    assert n_params(C3k(16, 24, 1, k=5)) == 2 * conv(16, 12) + conv(24, 24) + 2 * conv(12, 12, 5)


@pytest.mark.parametrize("c, n", [(64, 1), (128, 2), (256, 1)])
def test_c2psa_formula_heads_and_shape(c, n):
    m = C2PSA(c, c, n)
    assert n_params(m) == conv(c, c) + conv(c, c) + n * psa_block(c // 2)
    assert {b.attn.num_heads for b in m.m} == {max(c // 2 // 64, 1)}
    assert {b.attn.key_dim for b in m.m} == {c // 2 // max(c // 2 // 64, 1) // 2}  # attention ratio 0.5
    assert m(torch.rand(2, c, 5, 7)).shape == (2, c, 5, 7)


def test_attention_is_scaled_dot_product_attention_plus_positional_encoding():
    torch.manual_seed(0)
    m = Attention(64, num_heads=2, attn_ratio=0.5).eval()
    x = torch.rand(2, 64, 6, 5)
    with torch.no_grad():
        qkv = m.qkv(x).view(2, 2, 16 + 16 + 32, 30)
        q, k, v = (t.transpose(-2, -1) for t in qkv.split((16, 16, 32), dim=2))  # (B, nh, N, d)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(-2, -1).reshape(2, 64, 6, 5)
        pe = m.pe(v.transpose(-2, -1).reshape(2, 64, 6, 5))
        expected = m.proj(attended + pe)
        assert torch.allclose(m(x), expected, atol=1e-5)
        x2 = x.clone()
        x2[..., 0, 0] += 1.0  # one position changes: attention spreads it to every other position
        assert (m(x2) - m(x)).abs().amax(dim=1)[0, 5, 4] > 0


def test_psa_block_residuals():
    block = PSABlock(32, num_heads=1)
    nn.init.zeros_(block.ffn[1].bn.weight)
    nn.init.zeros_(block.ffn[1].bn.bias)
    nn.init.zeros_(block.attn.proj.bn.weight)
    nn.init.zeros_(block.attn.proj.bn.bias)
    x = torch.rand(1, 32, 4, 4)
    assert torch.equal(block.eval()(x), x)  # both branches silenced: the identity


def test_bad_widths_are_one_line_errors():
    with pytest.raises(ValueError, match="must equal input channels"):
        C2PSA(64, 32)
    with pytest.raises(ValueError, match="multiple of its number of heads"):
        Attention(100, num_heads=3)


def test_max_channels_caps_before_the_width_gain():
    cfg, _ = load_cfg("yolov5n.yaml")
    capped = DetectionModel({**cfg, "max_channels": 512}, verbose=False)
    # rows 7 and 8 ask for 1024 channels: capped at 512, then x 0.25 -> 128 (uncapped: 256)
    assert capped.model[7].conv.out_channels == 128 and capped.model[8].cv3.conv.out_channels == 128
    assert DetectionModel(cfg, verbose=False).model[7].conv.out_channels == 256
    with pytest.raises(ValueError, match="max_channels"):
        DetectionModel({**cfg, "max_channels": 0}, verbose=False)


# Ultralytics' figures at nc=80: the totals as its cfg/models/v8/yolov8.yaml and 11/yolo11.yaml scale comments print
# them (docs.ultralytics.com rounds them to 3.2M, 11.2M, 2.6M), the rows from its own build's layer table
# (``YOLO("yolov8n.yaml")``, ultralytics 8.4)
ULTRALYTICS_PARAMS = {"yolov8n.yaml": 3_157_200, "yolov8s.yaml": 11_166_560, "yolo11n.yaml": 2_624_080}
ULTRALYTICS_ROWS = {
    "yolov8n.yaml": [464, 4672, 7360, 18560, 49664, 73984, 197632, 295424, 460288, 164608, 0, 0, 148224, 0, 0, 37248,
                     36992, 0, 123648, 147712, 0, 493056, 897664],
    "yolo11n.yaml": [464, 4672, 6640, 36992, 26080, 147712, 87040, 295424, 346112, 164608, 249728, 0, 0, 111296, 0, 0,
                     32096, 36992, 0, 86720, 147712, 0, 378880, 464912],
}


@pytest.mark.parametrize("cfg", sorted(ULTRALYTICS_PARAMS))
def test_parameter_counts_equal_ultralytics(cfg):
    model = DetectionModel(cfg)
    assert sum(p.numel() for p in model.parameters()) == ULTRALYTICS_PARAMS[cfg]
    if cfg in ULTRALYTICS_ROWS:
        assert [int(m.np) for m in model.model] == ULTRALYTICS_ROWS[cfg]
    assert model.stride.tolist() == [8, 16, 32]


def test_yolo11n_rows_follow_the_scale():
    model = DetectionModel("yolo11n.yaml")
    # depth 0.50: every C3k2 holds round(2 x 0.5) = 1 block; c3k only in the rows that ask for it (6, 8, 22)
    c3k2 = {m.i: m for m in model.model if isinstance(m, C3k2)}
    assert {i for i, m in c3k2.items() if isinstance(m.m[0], C3k)} == {6, 8, 22}
    assert all(len(m.m) == 1 for m in c3k2.values())
    assert isinstance(model.model[10], C2PSA) and len(model.model[10].m) == 1
    assert model.model[10].m[0].attn.num_heads == 2  # 1024 x 0.25 = 256 channels, half of them attended: 128 / 64
