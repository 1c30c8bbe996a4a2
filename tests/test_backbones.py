"""NanoDet-Plus-m's ShuffleNetV2 trunk and Ghost-PAN neck (models/backbones.py): outputs, widths, parameter counts
and local weight loading. Offline: torchvision builders are only ever called with weights=None."""
import pytest
import torch
import torchvision
from torch import nn

from models.backbones import GhostPAN, ShuffleNetV2

# Parameter counts of NanoDet's own modules (RangiLyu/nanodet @ be9b4a9001d7f9b6fc89c2df31ae8d428e35b4f0), built with
# config/nanodet-plus-m_320.yml's arguments: ShuffleNetV2(model_size, out_stages=[2, 3, 4], activation="LeakyReLU",
# pretrain=False) and GhostPAN([116, 232, 464], 96, kernel_size=5, use_depthwise=True, activation="LeakyReLU", ...).
# Ours matched them exactly, and with NanoDet's tensors loaded the outputs were identical (max |diff| 0.0).
SHUFFLENET_PARAMS = {"0.5x": 143_136, "1.0x": 776_420, "1.5x": 1_755_680, "2.0x": 3_342_052}
SHUFFLENET_CHANNELS = {"0.5x": [48, 96, 192], "1.0x": [116, 232, 464], "1.5x": [176, 352, 704],
                       "2.0x": [244, 488, 976]}
GHOSTPAN_PARAMS = {  # GhostPAN([116, 232, 464], 96, k=5, ...) keyword arguments -> parameters
    (("num_extra_level", 1),): 282_048,  # NanoDet-Plus-m
    (("num_extra_level", 0),): 258_048,
    (("num_extra_level", 2),): 306_048,
    (("num_extra_level", 1), ("use_res", True)): 356_160,
    (("num_extra_level", 1), ("expand", 2)): 339_840,
}
# NanoDetPlusHead(80 classes, 96 channels, 2 stacked dw5x5 + pw1x1, 4 levels) counts 139_456 in the reference:
# total NanoDet-Plus-m 776_420 + 282_048 + 139_456 = 1_197_924 (the README rounds to 1.17M).
NECK_IN = [116, 232, 464]


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def trunk_maps(size: int, channels: list[int] = NECK_IN) -> list[torch.Tensor]:
    return [torch.randn(1, c, -(-size // s), -(-size // s)) for c, s in zip(channels, (8, 16, 32))]


@pytest.mark.parametrize("width", list(SHUFFLENET_PARAMS))
def test_shufflenet_outputs_and_params(width):
    m = ShuffleNetV2(width=width).eval()
    assert n_params(m) == SHUFFLENET_PARAMS[width]
    assert m.out_channels == SHUFFLENET_CHANNELS[width]
    with torch.no_grad():
        y = m(torch.zeros(1, 3, 64, 64))
    assert isinstance(y, list)
    assert [tuple(t.shape) for t in y] == [(1, c, 64 // s, 64 // s) for c, s in zip(m.out_channels, (8, 16, 32))]


def test_shufflenet_activations_and_names():
    leaky, relu = ShuffleNetV2(act="leaky"), ShuffleNetV2(act="relu")
    assert not any(isinstance(x, nn.ReLU) for x in leaky.modules())
    slopes = {x.negative_slope for x in leaky.modules() if isinstance(x, nn.LeakyReLU)}
    assert slopes == {0.1}
    assert not any(isinstance(x, nn.LeakyReLU) for x in relu.modules())
    assert [name for name, _ in leaky.named_children()] == ["conv1", "maxpool", "stage2", "stage3", "stage4"]
    assert leaky.state_dict().keys() == relu.state_dict().keys()
    assert "stage2.0.branch1.0.weight" in leaky.state_dict()


def test_shufflenet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="c1=4"):
        ShuffleNetV2(c1=4)
    with pytest.raises(ValueError, match="3.0x"):
        ShuffleNetV2(width="3.0x")
    with pytest.raises(ValueError, match="silu"):
        ShuffleNetV2(act="silu")


def test_shufflenet_missing_weights_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "shufflenetv2_x1-5666bf0f80.pth"
    with pytest.raises(FileNotFoundError, match="shufflenetv2_x1-5666bf0f80.pth") as e:
        ShuffleNetV2(weights=path)
    assert str(path) in str(e.value)


def test_shufflenet_loads_a_torchvision_state_dict(tmp_path):
    tv = torchvision.models.shufflenet_v2_x1_0(weights=None)
    path = tmp_path / "shufflenetv2_x1.pth"
    torch.save(tv.state_dict(), path)
    m = ShuffleNetV2(weights=path)
    report = m.weights_report
    assert sorted(report.loaded) == sorted(m.state_dict())
    assert report.skipped and {k.split(".")[0] for k in report.skipped} == {"conv5", "fc"}
    assert not report.mismatched and not report.missing
    assert "skipped" in report.summary() and str(path) in report.summary()
    assert torch.equal(m.stage4[-1].branch2[0].weight, tv.stage4[-1].branch2[0].weight)
    assert torch.equal(m.conv1[1].running_var, tv.conv1[1].running_var)


def test_shufflenet_rejects_weights_of_another_width(tmp_path):
    path = tmp_path / "x0_5.pth"
    torch.save(torchvision.models.shufflenet_v2_x0_5(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="x0_5.pth.*shape mismatch"):
        ShuffleNetV2(width="1.0x", weights=path)


@pytest.mark.parametrize("kwargs", list(GHOSTPAN_PARAMS), ids=lambda kw: "-".join(f"{k}{v}" for k, v in kw))
def test_ghostpan_params(kwargs):
    assert n_params(GhostPAN(NECK_IN, 96, 5, **dict(kwargs))) == GHOSTPAN_PARAMS[kwargs]


@pytest.mark.parametrize("num_extra_level", [0, 1, 2])
def test_ghostpan_outputs(num_extra_level):
    m = GhostPAN(NECK_IN, 96, 5, num_extra_level).eval()
    n = 3 + num_extra_level
    assert m.out_channels == [96] * n
    with torch.no_grad():
        y = m(trunk_maps(128))
    assert isinstance(y, list)
    assert [tuple(t.shape) for t in y] == [(1, 96, 128 // s, 128 // s) for s in (8, 16, 32, 64, 128)[:n]]


def test_trunk_into_neck_odd_size_and_deeper_blocks():
    """NanoDet needs sizes divisible by 32 and fails for num_blocks > 1; ours takes both."""
    trunk, neck = ShuffleNetV2().eval(), GhostPAN(NECK_IN, 32, 3, 1, num_blocks=2).eval()
    with torch.no_grad():
        y = neck(trunk(torch.zeros(1, 3, 72, 72)))
    assert [tuple(t.shape[-2:]) for t in y] == [(9, 9), (5, 5), (3, 3), (2, 2)]
    assert all(t.shape[1] == 32 for t in y)


def test_ghostpan_rejects_bad_inputs():
    with pytest.raises(ValueError, match="at least two"):
        GhostPAN(116)
    m = GhostPAN(NECK_IN)
    with pytest.raises(ValueError, match="3 inputs"):
        m(trunk_maps(64)[:2])
