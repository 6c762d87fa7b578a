"""The streaming reader: exactly once per epoch, shuffled, bounded memory, and train() on it.

The stores are synthetic (written with the store's own functions) so that every patch carries
its index: pixel (0, 0) holds index // 1024 and pixel (0, 1) index % 1024, exact in float16.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from srcnn.config import ModelConfig, PatchConfig, TrainConfig
from srcnn.data.loader import (
    PatchStream,
    PatchTensors,
    Prefetcher,
    ShuffleBuffer,
    StreamedPatches,
    plan_blocks,
    training_data,
)
from srcnn.data.store.attrs import StoreAttrs
from srcnn.data.store.patch_store import (
    PatchStore,
    SourceEntry,
    create_store,
    publish,
    write_region,
)
from srcnn.models.srcnn import SRCNN
from srcnn.training.loop import train


def make_store(url: str, counts: list[int], patch: int, chunk: int, shard_chunks: int) -> str:
    """A published store of len(counts) fake images, every third one in the val split."""
    config = PatchConfig(patch_size=patch, chunk_patches=chunk, shard_chunks=shard_chunks)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    entries = [SourceEntry(f"img{i}.png", "fp", 100, 100, int(offsets[i]), c,
                           "val" if i % 3 == 2 else "train") for i, c in enumerate(counts)]
    n = int(offsets[-1])
    attrs = StoreAttrs.of_build(config, "test", n_patches=n)
    create_store(url, n, config, attrs, entries)
    for start in range(0, n, config.shard_patches):
        idx = np.arange(start, min(start + config.shard_patches, n))
        lr = np.zeros((len(idx), patch, patch), np.float16)
        lr[:, 0, 0], lr[:, 0, 1] = idx // 1024, idx % 1024
        hr = lr.copy()
        hr[:, 1, 1] = 1  # tells HR from LR
        source = np.searchsorted(offsets, idx, side="right").astype(np.int32) - 1
        write_region(url, start, {"bicubic": lr, "hr": hr, "source": source,
                                  "position": np.zeros((len(idx), 2), np.int32)})
    publish(url, attrs)
    return url


def ids(lr: np.ndarray | torch.Tensor, hr: np.ndarray | torch.Tensor) -> np.ndarray:
    lr, hr = np.asarray(lr).reshape(len(lr), *lr.shape[-2:]), np.asarray(hr)
    hr = hr.reshape(len(hr), *hr.shape[-2:])
    got = lr[:, 0, 0].astype(int) * 1024 + lr[:, 0, 1].astype(int)
    np.testing.assert_array_equal(got, hr[:, 0, 0].astype(int) * 1024 + hr[:, 0, 1].astype(int))
    assert (hr[:, 1, 1] == 1).all() and (lr[:, 1, 1] == 0).all()
    return got


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> str:
    # Awkward sizes: images straddle the 21-patch shards, some shards hold no train patch.
    counts = [5, 30, 22, 1, 40, 17, 9, 63, 2, 11, 26, 48]
    return make_store(str(tmp_path_factory.mktemp("s") / "s.zarr"), counts, 8, 7, 3)


def test_plan_blocks_skip_blocks_without_split_patches():
    blocks = plan_blocks(np.array([0, 1, 2, 9, 20, 21]), 25, 10)
    assert [(b.start, b.stop, b.rows.tolist()) for b in blocks] == [
        (0, 10, [0, 1, 2, 9]), (20, 25, [0, 1])]


def test_shuffle_buffer_draws_each_patch_once():
    buf = ShuffleBuffer(10, (1,), np.random.default_rng(0))
    buf.add(np.arange(6, dtype=np.float16)[:, None], np.arange(6, dtype=np.float16)[:, None])
    first, _ = buf.take(4)
    buf.add(np.arange(6, 10, dtype=np.float16)[:, None], np.zeros((4, 1), np.float16))
    rest, _ = buf.take(100)
    assert len(buf) == 0 and buf.peak == 6
    assert sorted(first[:, 0].tolist() + rest[:, 0].tolist()) == list(range(10))


@pytest.mark.parametrize("split,batch,buffer",
                         [("train", 16, 50), ("val", 7, 5), ("train", 500, 1)])
def test_every_patch_once_per_epoch(small_store, split, batch, buffer):
    stream = PatchStream(small_store, split, batch, buffer_patches=buffer)
    expected = PatchStore(small_store).split_indices(split)
    for epoch in range(2):
        with stream.epoch(epoch) as batches:
            sizes, seen = [], []
            for lr, hr in batches:
                assert lr.dtype == hr.dtype == torch.float16 and lr.shape[1:] == (1, 8, 8)
                sizes.append(len(lr))
                seen.append(ids(lr, hr))
        seen = np.concatenate(seen)
        assert sorted(seen.tolist()) == sorted(expected.tolist())  # no duplicate, no hole
        assert all(s == batch for s in sizes[:-1]) and 0 < sizes[-1] <= batch


def test_order_differs_between_epochs_and_seeds_and_repeats(small_store):
    def order(seed: int, epoch: int) -> list[int]:
        batches = PatchStream(small_store, "train", 16, buffer_patches=40, seed=seed).epoch(epoch)
        return np.concatenate([ids(lr, hr) for lr, hr in batches]).tolist()

    base = order(0, 0)
    assert order(0, 0) == base  # reproducible
    assert order(0, 1) != base and order(1, 0) != base
    assert sorted(order(0, 1)) == sorted(base)
    # Shuffled across images and shards, not only within them.
    assert np.mean(np.abs(np.diff(base))) > 20


def test_shuffle_buffer_bounds_memory(tmp_path):
    """Memory follows the buffer, not the store: 6,000 patches of 33x33 (26 MB of LR + HR)
    stream through a 256-patch buffer within a few MB, where a buffer of the whole split
    (4,000 train patches) takes most of the store (tracemalloc sees numpy and zarr)."""
    url = make_store(str(tmp_path / "big.zarr"), [500] * 12, 33, 64, 2)
    store_bytes = 2 * len(PatchStore(url)) * 33 * 33 * 2

    def peak_bytes(stream: PatchStream) -> int:
        tracemalloc.start()
        try:
            assert sum(len(lr) for lr, _ in stream.epoch(0)) == len(stream) == 4000
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small = PatchStream(url, "train", 32, buffer_patches=256, prefetch=4)
    assert peak_bytes(small) < store_bytes / 4
    assert small.capacity == 256 + 128  # buffer + one block (a 128-patch shard)
    assert 256 <= small.peak_buffered <= small.capacity
    whole = PatchStream(url, "train", 32, buffer_patches=4000, prefetch=4)
    assert peak_bytes(whole) > store_bytes / 2


def test_prefetcher_raises_producer_errors_and_stops_early():
    def failing():
        yield 1
        raise OSError("shard unreadable")

    it = Prefetcher(failing(), depth=2)
    assert next(it) == 1
    with pytest.raises(OSError, match="shard unreadable"):
        next(it)
    endless = Prefetcher(iter(int, 1), depth=2)  # never ends by itself
    next(endless)
    endless.close()
    assert not endless.alive
    with pytest.raises(StopIteration):
        next(endless)


def test_endless_batches_are_full_and_each_epoch_complete(small_store):
    stream = PatchStream(small_store, "train", 16, buffer_patches=30)
    n = len(stream)  # 185: epochs end inside a batch
    with stream.endless() as batches:
        got = np.concatenate([ids(*next(batches)) for _ in range(-(-3 * n // 16))])
    expected = sorted(PatchStore(small_store).split_indices("train").tolist())
    for epoch in range(3):
        assert sorted(got[epoch * n : (epoch + 1) * n].tolist()) == expected


def test_training_data_whole_or_streamed_and_train_runs_on_stream(small_store):
    store = PatchStore(small_store)
    whole = training_data(store, "train", 16)
    assert isinstance(whole, PatchTensors)
    lr, hr = store.load("train")
    np.testing.assert_array_equal(whole.lr[:, 0].numpy(), lr)

    streamed = training_data(store, "train", 16, memory_budget=0, buffer_patches=30)
    assert isinstance(streamed, StreamedPatches) and len(streamed) == len(whole)
    # Evaluation reads the split in order, straight from the store, in batches.
    batches = list(streamed.batches(37))
    assert [len(x) for x, _ in batches][:-1] == [37] * (len(batches) - 1)
    np.testing.assert_array_equal(torch.cat([y for _, y in batches])[:, 0].numpy(), hr)
    np.testing.assert_array_equal(torch.cat([x for x, _ in batches])[:, 0].numpy(), lr)
    # train() runs on it unchanged; each step took one streamed batch.
    model = SRCNN(ModelConfig.from_arch("3-1-3", n1=4, n2=2))
    config = TrainConfig(epochs=2, steps_per_epoch=7, batch_size=16, device="cpu")
    result = train(model, streamed, whole, config)
    assert len(result.history) == 2 and streamed.batches_served == 14
    with pytest.raises(ValueError, match="batch of 8"):
        streamed.get_batch(8)
    # A batch's inputs and targets are the same patches (`ids` checks them pairwise).
    ids(*streamed.get_batch(16))
    ids(*whole.get_batch(16, torch.Generator().manual_seed(0)))
    # What train() does on CUDA: `.to(device)`; the batches then arrive there.
    assert streamed.to("cpu") is streamed and streamed.get_batch(16)[0].device.type == "cpu"
    streamed.close()
