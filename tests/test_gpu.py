"""The CUDA training path (bf16 autocast, channels_last). Runs only where CUDA is present."""

import pytest
import torch

from srcnn.config import ModelConfig, TrainConfig
from srcnn.data.loader import PatchTensors
from srcnn.models.srcnn import SRCNN
from srcnn.training.loop import train

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


def _photo(h: int, w: int, seed: int = 0):
    """A smooth image with texture (random noise upscaled), RGB uint8."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8))
    base = np.asarray(coarse.resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
    noise = rng.integers(-12, 13, (h, w, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def test_cuda_bicubic_is_pils_byte_for_byte():
    import numpy as np
    from PIL import Image

    from srcnn.inference.cuda import _resample, _Taps

    for h, w, s in [(17, 23, 2), (121, 87, 3), (64, 65, 4)]:
        img = _photo(h, w, seed=h)
        ref = np.asarray(img.resize((w * s, h * s), Image.Resampling.BICUBIC))
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous().cuda()
        taps = _Taps(h, w, s, x.device)
        out = _resample(_resample(x, taps.ix, taps.wx, 2), taps.iy, taps.wy, 1)
        assert np.array_equal(out.permute(1, 2, 0).cpu().numpy(), ref), (h, w, s)


@pytest.mark.parametrize("kind", ["srcnn", "fast", "real"])
@pytest.mark.parametrize("bf16", [False, True])
def test_cuda_batched_upscale_tiles_agree_and_match_the_cpu_path(kind, bf16, monkeypatch):
    """Tiled == whole on the GPU, to the rounding of the convolution algorithm picked for each
    shape: a value on an 8-bit rounding boundary can move by one level, on a few values in 10^6
    in fp32 (no TF32; none for the SRCNN on an H200), more in bf16 (the figures are printed;
    on the CPU, oneDNN moved 6 of 931,500 of the pair's in fp32). The GPU pipeline matches the
    CPU one, for
    an SRCNN, an LR-space net and a gated pair (through `upscale_rgb_tiled`, which dispatches
    to the device path and makes the pair's choice)."""
    import numpy as np

    import srcnn.inference.cuda as device_path
    from srcnn.data.color import luma
    from srcnn.inference.tiling import for_image, prepare, upscale_rgb_tiled
    from srcnn.models.reference import read_local

    lr = _photo(150, 230)
    spec = read_local(f"pretrained:{kind}", 3)
    gpu = prepare(spec.build(), "cuda")
    chosen = for_image(gpu, luma(lr)) if gpu.upsamples else gpu
    whole = np.asarray(upscale_rgb_tiled(gpu, lr, 3, 4096, bf16), dtype=int)
    monkeypatch.setattr(device_path, "MIN_TILE", 16)
    for tile in (64, 200, 512):
        tiled = np.asarray(device_path.upscale_rgb_cuda(chosen, lr, 3, tile, bf16), dtype=int)
        diff = np.abs(tiled - whole)
        print(f"{kind} bf16={bf16} tile {tile}: {np.count_nonzero(diff)} of {diff.size} values "
              f"differ from the whole-image pass, max {diff.max()}")
        assert diff.max() <= 1 and np.count_nonzero(diff) <= (2e-3 if bf16 else 1e-5) * diff.size
    cpu = np.asarray(upscale_rgb_tiled(prepare(spec.build(), "cpu"), lr, 3, 256, bf16),
                     dtype=int)
    diff = np.abs(whole - cpu)
    print(f"{kind} bf16={bf16} GPU vs CPU: {np.count_nonzero(diff) / diff.size:.2e} differ, "
          f"max {diff.max()}")
    # bf16 rounds differently on the two devices: one level, on a few % of the values
    assert diff.max() <= 1 and np.count_nonzero(diff) <= (0.1 if bf16 else 1e-4) * diff.size


def test_cuda_jpeg_outputs_of_lr_space_nets_take_the_batched_rgb_path():
    """On the GPU an LR-space net's JPEG output is the batched RGB path's (its colour work is
    on the device), not the CPU's JPEG path (which would run one tile per forward)."""
    import numpy as np

    from srcnn.batch.job import upscale_chosen
    from srcnn.inference.tiling import prepare, upscale_rgb_tiled
    from srcnn.models.reference import read_local

    lr = _photo(120, 90)
    gpu = prepare(read_local("pretrained:real", 3).build(), "cuda")
    out, net = upscale_chosen(gpu, lr, 3, 512, False, jpeg=True)
    assert out.mode == "RGB" and net in ("clean", "robust")
    assert np.array_equal(np.asarray(out), np.asarray(upscale_rgb_tiled(gpu, lr, 3, 512)))


@pytest.mark.parametrize("kind", ["srcnn", "real"])
def test_cuda_deep_upscale_matches_the_cpu_path(kind):
    """A 16-bit image on the GPU (`srcnn.inference.deep`, the batched bands): the CPU path's
    levels to the convolutions' rounding, one level on a few values in 10^3 (16 bits show
    float32 rounding that 8 bits hide)."""
    import numpy as np

    from srcnn.data.deep import Deep
    from srcnn.inference.deep import upscale_deep
    from srcnn.inference.tiling import prepare
    from srcnn.models.reference import read_local

    rgb = np.asarray(_photo(90, 120), dtype=np.uint16) * 257 + 128  # not 8-bit levels
    deep = Deep(rgb, 16, None)
    spec = read_local(f"pretrained:{kind}", 3)
    gpu, _ = upscale_deep(prepare(spec.build(), "cuda"), deep, 3, 512)
    cpu, _ = upscale_deep(prepare(spec.build(), "cpu"), deep, 3, 4096)
    diff = np.abs(gpu.levels.astype(int) - cpu.levels)
    print(f"{kind} deep GPU vs CPU: {np.count_nonzero(diff) / diff.size:.2e} differ, "
          f"max {diff.max()}")
    assert gpu.levels.shape == (270, 360, 3) and gpu.bits == 16
    assert diff.max() <= 1 and np.count_nonzero(diff) <= 5e-3 * diff.size
