"""Training input from a patch store: whole in memory when it fits, streamed when it does not.

A store far larger than memory is read a block (one shard, by default) at a time, in a random
block order per epoch, into a bounded shuffle buffer from which every batch is drawn uniformly
(the shuffle of tf.data and WebDataset). Each patch of the split comes out exactly once per
epoch; memory holds at most `buffer_patches + block_patches` patches plus the prefetch queue.
A background thread does the reading, decompression and batching ahead of the consumer, so a
training step finds its batch ready: zarr's decompression and the copies release the GIL,
and the network's convolutions release it too.

Both kinds of training input offer what `srcnn.training.loop.train` asks of one: `get_batch`
(the next training batch), `batches` (the split in order, for validation), `to(device)` and
`close`. `training_data` picks between them by a memory budget.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from srcnn.concurrency import ahead
from srcnn.data.store.patch_store import BICUBIC, HR, PatchStore

log = logging.getLogger(__name__)

@dataclass
class PatchTensors:
    """A split in memory: inputs and HR targets, (N, 1, P, P) float16 (compact; cast per batch);
    an LR-space net's inputs are (N, 1, P/s, P/s). Training draws batches at random
    (`get_batch`); evaluation reads them in order (`batches`)."""

    lr: torch.Tensor
    hr: torch.Tensor

    @classmethod
    def from_numpy(cls, lr: np.ndarray, hr: np.ndarray) -> PatchTensors:
        return cls(torch.from_numpy(np.ascontiguousarray(lr, np.float16))[:, None],
                   torch.from_numpy(np.ascontiguousarray(hr, np.float16))[:, None])

    def __len__(self) -> int:
        return self.lr.shape[0]

    def to(self, device: torch.device) -> PatchTensors:
        """The patches on `device` (on a GPU, batches are then gathered there)."""
        return PatchTensors(self.lr.to(device), self.hr.to(device))

    def get_batch(self, batch_size: int, generator: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """`batch_size` patches drawn uniformly (with replacement) by `generator`, on its
        device: (inputs, targets)."""
        idx = torch.randint(len(self), (batch_size,), generator=generator,
                            device=generator.device)
        return self.lr[idx], self.hr[idx]

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The split in order, `batch_size` patches at a time."""
        for i in range(0, len(self), batch_size):
            yield self.lr[i : i + batch_size], self.hr[i : i + batch_size]

    def close(self) -> None:
        pass


DEFAULT_MEMORY_BUDGET = 2 * 2**30  # bytes of LR + HR patches a store may take to load whole


@dataclass(frozen=True)
class Block:
    """Patches [start, stop) of the store, read together; `rows` are the split's, relative."""

    start: int
    stop: int
    rows: np.ndarray


def plan_blocks(split_indices: np.ndarray, n_patches: int, block_patches: int) -> list[Block]:
    """Blocks aligned to `block_patches` that hold at least one patch of the split (the
    others are never read: a validation-only shard costs a training epoch nothing)."""
    idx = np.sort(np.asarray(split_indices, dtype=np.int64))
    blocks = []
    for start in range(0, n_patches, block_patches):
        stop = min(start + block_patches, n_patches)
        lo, hi = np.searchsorted(idx, [start, stop])
        if hi > lo:
            blocks.append(Block(start, stop, idx[lo:hi] - start))
    return blocks


class ShuffleBuffer:
    """A fixed-capacity pool of (lr, hr) patches; `take` draws uniformly without replacement
    and fills the holes from the tail, so neither adding nor taking ever allocates a pool."""

    def __init__(self, capacity: int, patch_shape: tuple[int, ...], rng: np.random.Generator,
                 target_shape: tuple[int, ...] | None = None):
        self.lr = np.empty((capacity, *patch_shape), np.float16)  # (C, P, P) or (C, P/s, P/s)
        self.hr = np.empty((capacity, *(target_shape or patch_shape)), np.float16)
        self.count = 0
        self.peak = 0
        self.rng = rng

    def __len__(self) -> int:
        return self.count

    def add(self, lr: np.ndarray, hr: np.ndarray) -> None:
        n = len(lr)
        if self.count + n > len(self.lr):
            raise OverflowError(f"shuffle buffer: {self.count} + {n} > capacity {len(self.lr)}")
        self.lr[self.count : self.count + n] = lr
        self.hr[self.count : self.count + n] = hr
        self.count += n
        self.peak = max(self.peak, self.count)

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        n = min(n, self.count)
        picked = self.rng.choice(self.count, n, replace=False)
        lr, hr = self.lr[picked], self.hr[picked]  # copies: the slots are reused below
        new_count = self.count - n
        holes = picked[picked < new_count]
        tail = np.setdiff1d(np.arange(new_count, self.count), picked, assume_unique=True)
        self.lr[holes], self.hr[holes] = self.lr[tail], self.hr[tail]
        self.count = new_count
        return lr, hr


_END = object()  # what the source gives once it has ended


class Prefetcher:
    """Runs an iterator in a thread of its own, `depth` items ahead of the consumer
    (`srcnn.concurrency.ahead` over one worker thread, so the items are made in order).

    An error in the producer is raised in the consumer; `close` (or dropping the Prefetcher)
    cancels what was not started. `wait_s` is the time the consumer spent waiting: input-bound
    time.
    """

    def __init__(self, source: Iterator, depth: int = 8):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="patch-prefetch")
        self._ahead = ahead(self._pool, lambda _: next(source, _END), itertools.count(), depth)
        self.wait_s = 0.0
        self._done = False

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        start = time.perf_counter()
        try:
            item = next(self._ahead)[1].result()
        except BaseException:
            self.close()
            raise
        finally:
            self.wait_s += time.perf_counter() - start
        if item is _END:
            self.close()
            raise StopIteration
        return item

    def close(self) -> None:
        self._done = True
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def alive(self) -> bool:
        """Whether its thread may still run (False once closed or ended)."""
        return not self._done


def _as_tensors(lr: np.ndarray, hr: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(lr)[:, None], torch.from_numpy(hr)[:, None]  # (B, 1, P, P) f16


class PatchStream:
    """Shuffled (lr, hr) batches of one split of a store, read block by block.

    Args:
        store: a published PatchStore (or its URL).
        split: "train" or "val".
        batch_size: patches per batch (an epoch's last batch may be smaller).
        buffer_patches: shuffle-buffer size; more mixes better and costs 2*2*P*P bytes each.
        block_patches: patches per read; a shard by default (one object per array on S3).
        seed: with the epoch number, fixes the order (reproducible, different every epoch).
        inputs: the input array, `bicubic` (SRCNN's) or `lr` (an LR-space net's).
    """

    def __init__(self, store: PatchStore | str, split: str, batch_size: int, *,
                 buffer_patches: int = 16384, block_patches: int | None = None, seed: int = 0,
                 prefetch: int = 8, inputs: str = BICUBIC):
        self.store = store if isinstance(store, PatchStore) else PatchStore(store)
        self.split, self.batch_size, self.seed, self.prefetch = split, batch_size, seed, prefetch
        self.inputs = inputs
        self._lr, self._hr = self.store.input_array(inputs), self.store.array(HR)
        self.block_patches = block_patches or (self._lr.shards or self._lr.chunks)[0]
        self.indices = np.sort(self.store.split_indices(split))
        # over the whole index space: unindexed ranges (removed images) hold no split's rows
        self.blocks = plan_blocks(self.indices, self.store.extent, self.block_patches)
        self.buffer_patches = max(buffer_patches, batch_size)  # a batch comes from one pool
        largest = max((len(b.rows) for b in self.blocks), default=0)
        self.capacity = min(self.buffer_patches + largest, len(self.indices))
        self.peak_buffered = 0  # most patches the buffer held (over all epochs so far)
        self.patch_shape = tuple(self._lr.shape[1:])
        self.target_shape = tuple(self._hr.shape[1:])

    def __len__(self) -> int:
        return len(self.indices)

    def read_block(self, block: Block) -> tuple[np.ndarray, np.ndarray]:
        lr, hr = self._lr[block.start : block.stop], self._hr[block.start : block.stop]
        if len(block.rows) == block.stop - block.start:
            return lr, hr
        return lr[block.rows], hr[block.rows]

    def read_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) at store indices `rows` (sorted), for sequential reads such as
        evaluation."""
        rows = np.asarray(rows, dtype=np.int64)
        return self._lr.oindex[rows], self._hr.oindex[rows]

    def epoch_batches(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch's batches as (B, P, P) float16 arrays, in this thread."""
        rng = np.random.default_rng([self.seed, epoch])
        buffer = ShuffleBuffer(self.capacity, self.patch_shape, rng, self.target_shape)
        try:
            for b in rng.permutation(len(self.blocks)):
                buffer.add(*self.read_block(self.blocks[b]))
                while len(buffer) >= self.buffer_patches:
                    yield buffer.take(self.batch_size)
            while len(buffer):
                yield buffer.take(self.batch_size)
        finally:
            self.peak_buffered = max(self.peak_buffered, buffer.peak)

    def epoch(self, epoch: int) -> Prefetcher:
        """One epoch's batches as (B, 1, P, P) float16 tensors, read ahead in a thread."""
        return Prefetcher((_as_tensors(*b) for b in self.epoch_batches(epoch)), self.prefetch)

    def _fixed_batches(self, start_epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Epoch after epoch, re-cut into batches of exactly `batch_size` (an epoch's short
        last batch is completed from the next epoch's first)."""
        if not len(self):
            raise ValueError(f"patch store {self.store.url}: split {self.split!r} is empty")
        b, lr_parts, hr_parts, have = self.batch_size, [], [], 0
        for epoch in itertools.count(start_epoch):
            for lr, hr in self.epoch_batches(epoch):  # each at most b, so one yield at most
                lr_parts.append(lr)
                hr_parts.append(hr)
                have += len(lr)
                if have >= b:
                    lr, hr = (np.concatenate(p) if len(p) > 1 else p[0]
                              for p in (lr_parts, hr_parts))
                    yield _as_tensors(lr[:b], hr[:b])
                    have -= b
                    lr_parts, hr_parts = ([lr[b:]], [hr[b:]]) if have else ([], [])

    def endless(self, start_epoch: int = 0) -> Prefetcher:
        """Batches of exactly `batch_size` forever, read ahead in a thread."""
        return Prefetcher(self._fixed_batches(start_epoch), self.prefetch)


class StreamedPatches:
    """A split too large for memory, as training input: `get_batch` takes the next shuffled
    batch of a `PatchStream` (every patch once per stream epoch, instead of sampling with
    replacement), read ahead in a thread; `batches` reads the split in order from the store."""

    def __init__(self, stream: PatchStream, start_epoch: int = 0):
        self.stream = stream
        self._batches = stream.endless(start_epoch)  # prefetching starts now
        self._device: torch.device | None = None
        self.batches_served = 0

    def __len__(self) -> int:
        return len(self.stream)

    @property
    def wait_s(self) -> float:
        """Seconds the training loop waited for input (0 when prefetching keeps up)."""
        return self._batches.wait_s

    def to(self, device: torch.device) -> StreamedPatches:
        """Batches go to `device` as they are taken (the stream itself stays on the host)."""
        self._device = torch.device(device)
        return self

    def _on_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self._device, non_blocking=True) if self._device else x

    def get_batch(self, batch_size: int, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """The stream's next batch; its order comes from the stream's seed, not `generator`."""
        if batch_size != self.stream.batch_size:
            raise ValueError(f"StreamedPatches: batch of {batch_size}, the stream makes "
                             f"{self.stream.batch_size}; build it with the train batch size")
        lr, hr = next(self._batches)
        self.batches_served += 1
        return self._on_device(lr), self._on_device(hr)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The split in store order, `batch_size` patches at a time (for evaluation)."""
        for i in range(0, len(self), batch_size):
            x, y = _as_tensors(*self.stream.read_rows(self.stream.indices[i : i + batch_size]))
            yield self._on_device(x), self._on_device(y)

    def close(self) -> None:
        self._batches.close()


TrainingInput = PatchTensors | StreamedPatches


def training_data(store: PatchStore | str, split: str, batch_size: int, *,
                  memory_budget: int = DEFAULT_MEMORY_BUDGET, seed: int = 0, inputs: str = BICUBIC,
                  **stream_options) -> TrainingInput:
    """The split as `train()` input (`inputs`: the input array, `bicubic` or `lr`): loaded
    whole when the store fits `memory_budget` (loading reads whole arrays), streamed otherwise."""
    store = store if isinstance(store, PatchStore) else PatchStore(store)
    pair_bytes = sum(int(np.prod(a.shape[1:])) * a.dtype.itemsize  # one input + target patch
                     for a in (store.input_array(inputs), store.array(HR)))
    need = (store.extent + len(store.split_indices(split))) * pair_bytes  # load reads [0, extent)
    if need <= memory_budget:
        return PatchTensors.from_numpy(*store.load(split, inputs))
    log.info("patch store %s: %d MB over the %d MB budget, streaming split %s", store.url,
             need // 2**20, memory_budget // 2**20, split)
    stream = PatchStream(store, split, batch_size, seed=seed, inputs=inputs, **stream_options)
    return StreamedPatches(stream)
