"""The training loop on real patches: its divergence guard, and what it reports."""

import torch
from PIL import Image

from srcnn.config import ModelConfig, TrainConfig
from srcnn.metrics import list_dataset
from srcnn.model import SRCNN
from srcnn.patches import collection_patches
from srcnn.train import PatchTensors, train


def t91_patches(t91, n_images: int = 6) -> tuple[PatchTensors, PatchTensors]:
    images = {p.name: Image.open(p).convert("RGB")
              for p in list_dataset(t91)[:n_images]}
    split = collection_patches(images, scale=3, size=32, stride=16, val_fraction=0.3)
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
    assert result.best_epoch in (2, 4) and result.best_val_psnr >= h[1].val_psnr


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
