"""The CUDA training path (bf16 autocast, channels_last). Runs only where CUDA is present."""

import pytest
import torch

from srcnn.config import ModelConfig, TrainConfig
from srcnn.model import SRCNN
from srcnn.train import PatchTensors, train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_cuda_bf16_training_reduces_loss():
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(512, 33, 33, generator=g)
    lr = hr + 0.05 * torch.randn(512, 33, 33, generator=g)
    data = PatchTensors.from_numpy(lr.numpy(), hr.numpy())
    result = train(SRCNN(ModelConfig()), data, data,
                   TrainConfig(epochs=3, steps_per_epoch=50, batch_size=64, device="cuda"))
    assert result.device.startswith("cuda")
    assert result.history[-1].train_loss < result.history[0].train_loss
