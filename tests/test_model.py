"""The SRCNN module and its typed config."""

import pydantic
import pytest
import torch

from srcnn.config import ModelConfig, PatchConfig, TrainConfig
from srcnn.models.files import load_model, save_model
from srcnn.models.srcnn import SRCNN

DEEP = "3-3-3-3-3-3-3-3"  # eight 3x3 layers: the receptive field of 9-5-5


@pytest.mark.parametrize("arch,rf", [("9-1-5", 13), ("9-3-5", 15), ("9-5-5", 17), ("9-1-1-5", 13),
                                     (DEEP, 17)])
def test_valid_convolutions_shrink_by_receptive_field(arch, rf):
    cfg = ModelConfig.from_arch(arch, n1=8, n2=8)
    assert cfg.receptive_field == rf and cfg.arch == arch
    model = SRCNN(cfg)
    assert len(list(model.children())) == cfg.depth == arch.count("-") + 1
    out = model(torch.rand(2, 1, 33, 40))
    assert out.shape == (2, 1, 33 - rf + 1, 40 - rf + 1)


def test_paper_costs():
    assert ModelConfig.from_arch("9-5-5").macs_per_pixel == 57_184  # ~57K (DESIGN.md)
    assert ModelConfig.from_arch("9-1-5").macs_per_pixel == 8_032  # ~8K weights
    # 9 + 6 * 9 * 32 + 9 (x32 channels in and out): no more than 9-5-5
    assert ModelConfig.from_arch(DEEP, n1=32, n2=32).macs_per_pixel == 55_872
    deep = SRCNN(ModelConfig.from_arch(DEEP, n1=32, n2=32))  # MACs = weights x output pixels
    assert sum(c.weight.numel() for c in deep.children()) == 55_872


def test_residual_net_starts_near_its_input():
    x = torch.rand(1, 1, 40, 40)
    model = SRCNN(ModelConfig())
    b = model.config.border
    assert torch.allclose(model(x), x[..., b:-b, b:-b], atol=1e-2)


def test_config_is_strict():
    with pytest.raises(pydantic.ValidationError):
        ModelConfig(f1=9, n3=3)  # typo: unknown field
    with pytest.raises(pydantic.ValidationError):
        ModelConfig(f2=4)  # even kernel
    with pytest.raises(ValueError, match="f1-f2-f3"):
        ModelConfig.from_arch("955")
    with pytest.raises(ValueError, match="one kernel size"):
        ModelConfig.from_arch("9-3-1-5")
    with pytest.raises(pydantic.ValidationError):
        PatchConfig(scale=1)
    with pytest.raises(pydantic.ValidationError):
        TrainConfig(epochs=0)


@pytest.mark.parametrize("arch", ["9-1-5", "3-3-3-3-3"])
def test_save_load_round_trip(tmp_path, arch):
    model = SRCNN(ModelConfig.from_arch(arch, n1=16, n2=8))
    save_model(model, 4, str(tmp_path / "m"), {"note": "x"})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    loaded = load_model(str(tmp_path / "m"))
    assert loaded.scale == 4 and loaded.metadata == {"note": "x"}
    assert loaded.model.config == model.config
    for a, b in zip(model.state_dict().values(), loaded.model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        load_model(str(tmp_path))


@pytest.mark.parametrize("arch", ["9-5-5", "9-1-5", "9-3-5", DEEP])
def test_fast_inference_path_computes_forward(arch):
    """`infer` (oneDNN conv+ReLU fusion, depthwise last layer) is `forward`, to rounding."""
    from srcnn.inference.tiling import prepare
    from srcnn.models.ops import fused_conv_relu

    assert (
        fused_conv_relu() is not None
    )  # the pinned torch has the fused op: the fast path is what runs
    torch.manual_seed(0)
    model = prepare(SRCNN(ModelConfig.from_arch(arch)), "cpu")
    with torch.no_grad():  # a last layer of trained magnitude, not the near-zero init
        model.last.weight.normal_(0, 0.05)
        model.last.bias.fill_(0.01)
    x = torch.rand(2, 1, 77, 63).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref = model(x)
        fast, half = model.infer(x), model.infer(x, bf16=True)
    assert fast.shape == half.shape == ref.shape and fast.dtype == half.dtype == torch.float32
    assert (fast - ref).abs().max() < 1e-5
    assert 0 < (half - ref).abs().max() < 0.05  # bfloat16 convolutions: close, not equal
