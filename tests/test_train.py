"""The training loop on real patches: its divergence guard, its precision, and what it reports."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from srcnn.config import ModelConfig, TrainConfig
from srcnn.data.loader import PatchTensors
from srcnn.data.patches import collection_patches
from srcnn.evaluation.metrics import list_dataset
from srcnn.models.lrnet import LRNet
from srcnn.models.srcnn import SRCNN
from srcnn.training.loop import evaluate_psnr, train


def t91_patches(t91, n_images: int = 6, size: int = 32) -> tuple[PatchTensors, PatchTensors]:
    images = {p.name: Image.open(p).convert("RGB")
              for p in list_dataset(t91)[:n_images]}
    split = collection_patches(images, scale=3, size=size, stride=16, val_fraction=0.3)
    assert len(split["train"][0]) > 100 and len(split["val"][0]) > 10
    return PatchTensors.from_numpy(*split["train"]), PatchTensors.from_numpy(*split["val"])


def test_a_diverged_epoch_rolls_back_to_the_best_and_halves_the_learning_rate(t91):
    train_set, val_set = t91_patches(t91)
    config = TrainConfig(epochs=4, steps_per_epoch=20, batch_size=16, lr=1e-3,
                         lr_schedule="constant", seed=1, device="cpu")

    def wreck_after_epoch_2(report, model):
        if report.epoch == 2:  # what a blown-up step does: the net's output far off
            with torch.no_grad():
                model.conv3.bias += 0.5

    result = train(SRCNN(ModelConfig()), train_set, val_set, config, wreck_after_epoch_2)
    h = result.history
    assert [r.rolled_back for r in h] == [False, False, True, False]
    assert h[2].val_psnr < h[1].val_psnr - 3  # the wrecked epoch, seen and refused
    assert [r.lr for r in h] == [1e-3, 1e-3, 1e-3, 5e-4]
    # epoch 4 went on from epoch 2's weights (not the wrecked ones): back near epoch 2's PSNR
    assert h[3].val_psnr > h[1].val_psnr - 0.3
    # the wrecked epoch is never the best; the best is the best of the others (under bf16 on
    # an AMX CPU epoch 1 can beat epoch 2 after so few steps)
    kept = [r for r in h if not r.rolled_back]
    assert result.best_epoch != 3
    assert result.best_score == max(r.val_psnr for r in kept)
    assert result.best_epoch == max(kept, key=lambda r: r.val_psnr).epoch


def test_no_rollback_when_the_guard_is_off(t91):
    train_set, val_set = t91_patches(t91)
    config = TrainConfig(epochs=3, steps_per_epoch=10, batch_size=16, lr_schedule="constant",
                         device="cpu", rollback_db=None)

    def wreck(report, model):
        if report.epoch == 1:
            with torch.no_grad():
                model.conv3.bias += 0.5

    result = train(SRCNN(ModelConfig()), train_set, val_set, config, wreck)
    assert not any(r.rolled_back for r in result.history)
    assert result.best_epoch == 1  # the wrecked epochs never beat the first


def bf16_cpu() -> bool:
    """What the kernel says of this CPU (not torch's probe, which the code under test reads):
    AMX or AVX512-BF16 instructions."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def lr_native(data: PatchTensors, scale: int) -> PatchTensors:
    """An LR-space net's pairs from SRCNN's: the HR patches downscaled (antialiased bicubic)."""
    hr = data.hr.float()
    lr = torch.nn.functional.interpolate(hr, scale_factor=1 / scale, mode="bicubic",
                                         antialias=True).clamp(0, 1)
    return PatchTensors(lr.half(), data.hr)


@pytest.mark.parametrize("family", ["srcnn", "espcn"])
def test_bf16_training_on_a_bf16_cpu_learns_as_float32_does(t91, family):
    """bf16 autocast is on where the CPU has AMX or AVX512-BF16 (1.8-3.5x faster steps) and
    reported; the same steps from the same seed end within 0.1 dB of float32, both well above
    the start."""
    train_set, val_set = t91_patches(t91, size=33)
    if family == "espcn":
        train_set, val_set = lr_native(train_set, 3), lr_native(val_set, 3)
        net = ModelConfig(family="espcn", f1=3, f2=3, f3=3, n1=16, n2=16, depth=4, residual=True)
    else:
        net = ModelConfig.from_arch("3-3-3-3", n1=16, n2=16, residual=True)
    results = {}
    for bf16 in (False, True):
        config = TrainConfig(epochs=3, steps_per_epoch=40, batch_size=16, lr=1e-3, seed=2,
                             device="cpu", bf16=bf16, rollback_db=None)
        torch.manual_seed(0)
        model = LRNet(net, 3) if family == "espcn" else SRCNN(net)
        start = evaluate_psnr(model, val_set, torch.device("cpu"))
        results[bf16] = train(model, train_set, val_set, config)
        assert results[bf16].best_score > start + 0.2  # it learned
    assert results[False].precision == "fp32"
    assert results[True].precision == ("bf16" if bf16_cpu() else "fp32")
    assert abs(results[True].best_score - results[False].best_score) < 0.1


def test_a_score_given_selects_the_best_epoch_and_is_reported(t91):
    """With `score` (the held-out images' PSNR in a run) that figure, not the validation
    patches', picks the best epoch: here a score that falls after epoch 1 keeps epoch 1's
    weights though the patches' PSNR rises."""
    train_set, val_set = t91_patches(t91)
    config = TrainConfig(epochs=3, steps_per_epoch=15, batch_size=16, lr_schedule="constant",
                         device="cpu", rollback_db=None)
    figures = iter([30.0, 29.5, 29.0])
    snapshots = []

    def score(model):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(figures)

    result = train(SRCNN(ModelConfig.from_arch("3-1-3", n1=8, n2=4)), train_set, val_set,
                   config, score=score)
    assert [r.held_out_psnr for r in result.history] == [30.0, 29.5, 29.0]
    assert [r.selection for r in result.history] == [30.0, 29.5, 29.0]
    assert result.best_epoch == 1 and result.best_score == 30.0
    for name, value in result.model.state_dict().items():  # epoch 1's weights came back
        assert torch.equal(value, snapshots[0][name].cpu()), name
    assert result.history[2].val_psnr != result.history[0].val_psnr  # it did train on


def test_a_runs_initial_weights_are_its_seeds():
    """The net a training run starts from depends on its seed only, not on what drew from
    torch's generator earlier in the process (a flow beside others, a test after others)."""
    from srcnn.training.run import initial_net

    config = ModelConfig(family="espcn", f1=3, f2=3, f3=3, n1=16, n2=16, depth=4)
    first = initial_net(config, 3, seed=5).state_dict()
    torch.rand(1000)  # someone else draws in between
    again = initial_net(config, 3, seed=5).state_dict()
    other = initial_net(config, 3, seed=6).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
