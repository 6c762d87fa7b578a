"""Streaming plan of a bucket upscale: keys in, chunks and shards out, nothing held whole.

The driver never holds the listing. Partitions of the key space (first-level prefixes, or the
prefixes a user names) are listed in parallel, page by page, through a bounded buffer; each
partition's keys (in key order) are cut into *chunks* as they arrive, and chunks are grouped
into *shards*:

- A chunk (about `chunk_size` images) is one Dask task and one manifest object. Its boundaries
  are content-defined: a chunk ends after a key whose hash is 0 modulo `chunk_size` (or at
  4 x `chunk_size` keys, or at the end of its partition), so the same listing always gives the
  same chunks, and adding or removing a key changes only the chunk it falls in. A chunk is
  named by the boundary it starts after (its partition's start for the first), which is where
  its manifest is found again on the next run: keys appended to a partition, or added to or
  removed from inside a chunk, keep every name; adding or removing a boundary key (1 in
  `chunk_size`) splits or merges two chunks, whose images are then redone once.
- A shard is one Prefect task run: it grows with the number of keys seen so far (1 % of them,
  between `MIN_SHARD_KEYS` and `MAX_SHARD_KEYS`), so a flow run has a few hundred task runs
  whatever the bucket's size (`shard_count` gives the figure for N keys).

Two inputs that would write one output key (`a.jpg` and `a.png` with an output format of PNG)
are never collapsed: the later one in key order fails with a reason naming both. In key order
the keys sharing a stem (`a.`) are adjacent, so this needs only a window of the current stem.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from itertools import islice

from srcnn.storage import Listed

MIN_SHARD_KEYS = 1024
MAX_SHARD_KEYS = 262_144
SHARD_GROWTH = 100  # a shard holds 1/SHARD_GROWTH of the keys seen before it
MAX_CHUNK_FACTOR = 4


@dataclass(frozen=True)
class Item:
    """One input: key, fingerprint (ETag or size + mtime), and a reason it must fail, if any
    (decided from the listing alone, e.g. an output-key collision)."""

    key: str
    etag: str
    error: str = ""


class Chunk:
    """A chunk's items, packed into one string (NUL never occurs in a key): a shard in flight
    holds ~70 bytes per key instead of ~270 for item objects."""

    __slots__ = ("id", "size", "_packed")

    def __init__(self, id: str, items: Iterable[Item]):
        self.id = id  # hash of the boundary it starts after: names the chunk's manifest
        fields = [f"{i.key}\0{i.etag}\0{i.error}" for i in items]
        self.size = len(fields)
        self._packed = "\0".join(fields)

    @property
    def items(self) -> tuple[Item, ...]:
        f = self._packed.split("\0")
        return tuple(Item(f[j], f[j + 1], f[j + 2]) for j in range(0, len(f), 3))

    def __getstate__(self):
        return (self.id, self.size, self._packed)

    def __setstate__(self, state):
        self.id, self.size, self._packed = state


def chunk_id(after: str) -> str:
    return hashlib.blake2b(after.encode(), digest_size=10).hexdigest()


def is_boundary(key: str, chunk_size: int) -> bool:
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return h % chunk_size == 0


class Chunker:
    """Cuts one partition's keys (in key order) into content-defined chunks.

    A chunk is named by the boundary it starts after (the partition's name for the first):
    adding or removing keys inside a chunk, or appending keys to a partition, keeps every
    chunk's name; only adding or removing a boundary key (1 in `chunk_size`) splits or merges
    the chunks around it."""

    def __init__(self, chunk_size: int, partition: str = ""):
        self.chunk_size = chunk_size
        self.items: list[Item] = []
        self.after = f"start of {partition!r}"

    def add(self, item: Item) -> Chunk | None:
        self.items.append(item)
        if is_boundary(item.key, self.chunk_size) or (
                len(self.items) >= MAX_CHUNK_FACTOR * self.chunk_size):
            return self.flush()
        return None

    def flush(self) -> Chunk | None:
        if not self.items:
            return None
        chunk = Chunk(chunk_id(self.after), tuple(self.items))
        self.after, self.items = self.items[-1].key, []
        return chunk


class CollisionCheck:
    """Marks the later of two keys (in key order) that map to the same output key."""

    def __init__(self, output_key: Callable[[str], str]):
        self.output_key = output_key
        self.window: dict[str, str] = {}  # output key -> input key, for stems still open

    def __call__(self, item: Item) -> Item:
        key = item.key
        # Keys are in order: once a key no longer starts with "stem.", no later key will.
        self.window = {o: k for o, k in self.window.items()
                       if key.startswith(posixpath.splitext(k)[0] + ".")}
        out = self.output_key(key)
        if (first := self.window.get(out)) is not None:
            return Item(key, item.etag, f"output key {out!r} is also the output of {first!r}: "
                                        f"two inputs, one output (rename one, or keep each "
                                        f"input's format)")
        self.window[out] = key
        return item


def shard_target(keys_seen: int) -> int:
    return min(MAX_SHARD_KEYS, max(MIN_SHARD_KEYS, keys_seen // SHARD_GROWTH))


def shard_count(n_keys: int) -> int:
    """Shards (Prefect task runs) for a bucket of `n_keys`, by the rule `plan` follows
    (ignoring that chunks end shards a little past their target)."""
    seen, shards = 0, 0
    while seen < n_keys:
        seen += shard_target(seen)
        shards += 1
    return shards


@dataclass
class Shard:
    index: int
    chunks: list[Chunk]
    n_keys: int = 0


def interleave(sources: list[Callable[[], Iterable[list[Listed]]]], workers: int = 8,
               ) -> Iterator[tuple[int, list[Listed] | None]]:
    """Walk the page sources in threads (at most `workers` at once) and yield
    (source index, page) as pages arrive, then (source index, None) when a source ends. Each
    running source has one page being fetched at a time, so listing runs ahead of planning by
    at most `workers` pages. A source's error is raised here; the threads stop when the
    consumer does (no page is fetched that nobody asked for, beyond those in flight)."""
    walkers: dict[int, Iterator[list[Listed]]] = {}

    def next_page(i: int) -> list[Listed] | None:
        if i not in walkers:
            walkers[i] = iter(sources[i]())
        return next(walkers[i], None)

    waiting = iter(range(len(sources)))
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(sources)))) as pool:
        running = {pool.submit(next_page, i): i for i in islice(waiting, workers)}
        try:
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    i = running.pop(future)
                    page = future.result()  # a source's error is raised here
                    yield i, page
                    following = i if page is not None else next(waiting, None)
                    if following is not None:
                        running[pool.submit(next_page, following)] = following
        finally:
            for future in running:
                future.cancel()


def plan(partitions: list[tuple[str, Callable[[], Iterable[list[Listed]]]]], chunk_size: int,
         keep: Callable[[str], bool], output_key: Callable[[str], str] | None = None,
         listers: int = 8) -> Iterator[Shard]:
    """Shards of chunks, cut from the (name, page source) partitions' pages as they arrive
    (a partition's name must be stable from run to run: it names its first chunk). `keep` filters keys
    (image suffixes, include/exclude globs); `output_key` maps an input key to its output's
    when they differ (None: each output keeps its input's key, so none can collide)."""
    chunkers = [Chunker(chunk_size, name) for name, _ in partitions]
    checks = [CollisionCheck(output_key) if output_key else (lambda item: item) for _ in partitions]
    shard, seen = Shard(0, []), 0

    def take(chunk: Chunk | None) -> Shard | None:
        nonlocal shard, seen
        if chunk is None:
            return None
        shard.chunks.append(chunk)
        shard.n_keys += chunk.size
        if shard.n_keys >= shard_target(seen):
            full, seen = shard, seen + shard.n_keys
            shard = Shard(full.index + 1, [])
            return full
        return None

    for i, page in interleave([source for _, source in partitions], listers):
        if page is None:  # the partition ended: its last chunk ends here
            if full := take(chunkers[i].flush()):
                yield full
            continue
        for listed in page:
            if not keep(listed.key):
                continue
            if full := take(chunkers[i].add(checks[i](Item(listed.key, listed.etag)))):
                yield full
    if shard.chunks:
        yield shard
