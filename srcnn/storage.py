"""fsspec storage helpers: every path in the pipeline is a URL (local folder, file://, s3://).

Storage options (an S3 endpoint) come from `srcnn.settings`; credentials stay with the
standard AWS variables that s3fs reads itself and are never logged.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import logging
import os
import posixpath
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
from fsspec.implementations.local import LocalFileSystem

from srcnn.settings import get_settings

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".gif", ".avif",
                  ".heic", ".heif")


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a URL or local path."""
    if url.startswith(("s3://", "s3a://")):
        settings_from = (os.environ.get("SRCNN_S3_ENDPOINT_URL"),
                         os.environ.get("AWS_ENDPOINT_URL"),
                         os.environ.get("SRCNN_S3_RETRY_ATTEMPTS"), os.getcwd())
        return fsspec.core.url_to_fs(url, **_s3_options(settings_from))
    return fsspec.core.url_to_fs(url)  # no options: local paths, file://, memory://, ...


@functools.lru_cache(maxsize=8)
def _s3_options(settings_from: tuple[str | None, ...]) -> dict:
    """S3 storage options from the settings. `settings_from` is what they are read from (the
    endpoint and retry variables, and the working directory whose `.env` may set them): it is the
    cache's key, so they are read again when it changes and once otherwise (reading them
    costs ~0.4 ms, once per object without the cache)."""
    return get_settings().storage_options("s3://")


def parse_record(data: bytes, what: str, required: tuple[str, ...] = ()) -> dict | None:
    """A JSON record the pipeline wrote for itself (a marker, a manifest, a report line), or
    None, with a warning naming `what`, where a crash, a disk or a person cut it short or
    altered it: the caller treats it as missing and that work is done again."""
    try:
        record = json.loads(data)
    except ValueError as exc:  # cut short, not UTF-8, not JSON
        log.warning("%s: unreadable record (%s): treated as missing, its work is redone",
                    what, exc)
        return None
    if not isinstance(record, dict) or any(k not in record for k in required):
        log.warning("%s: record without %s: treated as missing, its work is redone", what,
                    ", ".join(required))
        return None
    return record


class PathError(ValueError):
    """A path that cannot be what the command needs it to be (found before any work)."""


def check_folder(url: str, role: str, must_exist: bool) -> None:
    """Refuse, with one error naming `url` and why, a `role` path that cannot be a folder:
    an existing file (or a path under one), or, with `must_exist`, a missing folder; on S3 a
    missing bucket. Object-store prefixes need not exist (they are made by writing)."""
    fs, path = filesystem(url)
    if not isinstance(fs, LocalFileSystem):
        bucket = path.split("/", 1)[0]
        if "s3" in fs.protocol:
            try:  # an endpoint that does not answer raises its own error, not "no bucket"
                fs.call_s3("head_bucket", Bucket=bucket)
            except FileNotFoundError:
                raise PathError(f"{role} {url}: no bucket {bucket!r} at this endpoint") from None
        return
    if os.path.isdir(path):
        return
    if os.path.exists(path):
        raise PathError(f"{role} {url}: is a file, not a folder")
    if must_exist:
        raise PathError(f"{role} {url}: no such folder")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise PathError(f"{role} {url}: lies under {parent}, which is a file")


def is_local(url: str) -> bool:
    return isinstance(filesystem(url)[0], LocalFileSystem)


def join(url: str, *parts: str) -> str:
    return posixpath.join(url.rstrip("/"), *parts)


def read_bytes(url: str) -> bytes:
    """A whole object in one request: on S3 one GET, without the HEAD that `open` makes, or
    that s3fs makes to split a large read into concurrent ranges (our objects are images)."""
    fs, path = filesystem(url)
    if "s3" in fs.protocol:
        return fs.cat_file(path, max_concurrency=1)
    return fs.cat_file(path)


def read_head(url: str, size: int) -> bytes:
    """The first `size` bytes of an object (all of it when shorter): one ranged GET on S3."""
    fs, path = filesystem(url)
    try:
        return fs.cat_file(path, start=0, end=size)
    except FileNotFoundError:
        raise
    except OSError:  # S3 refuses any range of an empty object (416): read it whole
        return read_bytes(url)


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write a whole object: a reader sees the old one or the new one, never a partial one.

    Local files are written beside the target and renamed into place; an S3 PUT is atomic.
    """
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        # Hidden name: a listing (list_images skips dot-files) never picks up a leftover.
        head, tail = os.path.split(path)
        tmp = os.path.join(head, f".{tail}.tmp-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    else:
        fs.pipe_file(path, data)


def list_images(url: str, include: list[str] | None = None,
                exclude: list[str] | None = None) -> dict[str, str]:
    """{relative key: fingerprint} of the image files below `url`, sorted, after glob filters.

    One listing call: the fingerprint is the ETag on S3, size and mtime on local disks.
    """
    fs, root = filesystem(url)
    root = root.rstrip("/")
    fs.invalidate_cache()  # object stores cache listings; a listing must be current
    if not fs.isdir(root):
        raise FileNotFoundError(f"image collection {url}: not found or not a folder")
    found = {}
    for path, info in fs.find(root, detail=True).items():
        key = posixpath.relpath(path, root)
        if is_image_key(key) and selected(key, include, exclude):
            found[key] = _fingerprint(info)
    return dict(sorted(found.items()))


def is_image_key(key: str) -> bool:
    return key.lower().endswith(IMAGE_SUFFIXES) and not posixpath.basename(key).startswith(".")


def selected(key: str, include: list[str] | None, exclude: list[str] | None) -> bool:
    """Glob filters over relative keys (`include`: any must match; `exclude`: none may)."""
    if include and not any(fnmatch.fnmatch(key, p) for p in include):
        return False
    return not (exclude and any(fnmatch.fnmatch(key, p) for p in exclude))


def canonical(url: str) -> tuple[str, str]:
    """(filesystem kind, path) that names the same place however `url` is spelled: relative
    or absolute, `./`, `..`, symlinks and `file://` on disks; with or without a trailing
    slash and `s3://` vs `s3a://` on object stores (where `..` is a literal key segment)."""
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        return "file", os.path.realpath(os.path.abspath(path))
    kind = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return kind, path.rstrip("/")


def nested(a: str, b: str) -> bool:
    """True when the prefixes `a` and `b` are the same place or one lies inside the other."""
    (ka, pa), (kb, pb) = canonical(a), canonical(b)
    if ka != kb:
        return False
    pa, pb = pa.rstrip("/") + "/", pb.rstrip("/") + "/"
    return pa.startswith(pb) or pb.startswith(pa)


@dataclass(frozen=True)
class Listed:
    """One stored object: its key relative to the listed root and its fingerprint."""

    key: str
    etag: str


PAGE = 1000  # keys per listing page (S3's page size)


def top_prefixes(url: str) -> list[str]:
    """The first-level sub-prefixes (`"dir/"`) under `url`, sorted: the default partitions of
    a listing (each is walked on its own, in parallel). Holds only the prefixes; on S3 it walks
    the top level page by page (a flat bucket's top level is one sequential walk: name
    `--prefix`es to split it)."""
    fs, root = filesystem(url)
    root = root.rstrip("/")
    if isinstance(fs, LocalFileSystem):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image collection {url}: not found or not a folder")
        with os.scandir(root) as entries:
            return sorted(e.name + "/" for e in entries
                          if e.is_dir() and not e.name.startswith("."))
    if "s3" in fs.protocol:
        found = [p for page in _s3_pages(fs, root, "", recursive=False, prefixes=True)
                 for p in page]
        if not found and not fs.exists(root):
            raise FileNotFoundError(f"image collection {url}: not found or not a folder")
        return sorted(found)
    fs.invalidate_cache()
    if not fs.isdir(root):
        raise FileNotFoundError(f"image collection {url}: not found or not a folder")
    return sorted(posixpath.relpath(p, root) + "/" for p in fs.ls(root, detail=False)
                  if fs.isdir(p))


def iter_pages(url: str, prefix: str = "", recursive: bool = True) -> Iterator[list[Listed]]:
    """Pages of the objects under `url`/`prefix` (all below it, or only its own level), in
    key order (S3's byte order, reproduced on disks), fetched page by page: the caller never
    holds more than a page. Fingerprints are ETags on S3, size and mtime on disks."""
    fs, root = filesystem(url)
    root = root.rstrip("/")
    if isinstance(fs, LocalFileSystem):
        yield from _pages(_walk_local(root, prefix, recursive))
    elif "s3" in fs.protocol:
        yield from _s3_pages(fs, root, prefix, recursive)
    else:  # other fsspec filesystems: one listing call per partition, then paged
        fs.invalidate_cache()
        base = join(root, prefix) if prefix else root
        infos = fs.find(base, detail=True, maxdepth=None if recursive else 1)
        yield from _pages(Listed(posixpath.relpath(p, root), _fingerprint(i))
                          for p, i in sorted(infos.items()))


def _pages(items: Iterator[Listed]) -> Iterator[list[Listed]]:
    page: list[Listed] = []
    for item in items:
        page.append(item)
        if len(page) == PAGE:
            yield page
            page = []
    if page:
        yield page


def _walk_local(root: str, prefix: str, recursive: bool) -> Iterator[Listed]:
    """Files under root/prefix in S3 key order: a folder sorts as its name plus "/". As on S3,
    a prefix that does not end with "/" selects the names in its folder that start with it.
    Each folder's names are held (sorted) while it is walked."""
    start = os.path.join(root, prefix) if prefix else root
    name_start = ""
    if prefix and not prefix.endswith("/"):  # "a" is a name prefix, as on S3; "a/" a folder
        head, name_start = posixpath.split(prefix)
        start, prefix = os.path.join(root, head) if head else root, head
    if not os.path.isdir(start):
        return
    with os.scandir(start) as it:
        names = sorted((e.name + "/" if e.is_dir() else e.name) for e in it
                       if e.name.startswith(name_start))
    for name in names:
        if name.endswith("/"):
            if recursive:
                yield from _walk_local(root, posixpath.join(prefix, name), True)
            continue
        path = os.path.join(start, name)
        try:
            st = os.stat(path)
        except FileNotFoundError:  # removed since the folder was read
            continue
        if stat.S_ISREG(st.st_mode):
            yield Listed(posixpath.join(prefix, name), f"{st.st_size}-{st.st_mtime_ns}")


def _s3_pages(fs, root: str, prefix: str, recursive: bool,
              prefixes: bool = False) -> Iterator[list]:
    """Pages of Listed objects (or, with `prefixes`, of the sub-prefixes one level down)."""
    bucket, _, base = root.partition("/")
    base = f"{base}/" if base else ""
    kwargs = {"Bucket": bucket, "Prefix": base + prefix, **({} if recursive else
                                                          {"Delimiter": "/"})}
    while True:  # S3's own pagination; each call is retried by s3fs on transient errors
        out = fs.call_s3("list_objects_v2", **kwargs)
        if prefixes:
            page = [p["Prefix"][len(base):] for p in out.get("CommonPrefixes", [])]
        else:
            page = [Listed(c["Key"][len(base):], str(c["ETag"]).strip('"'))
                    for c in out.get("Contents", []) if not c["Key"].endswith("/")]
        if page:
            yield page
        if not out.get("IsTruncated"):
            return
        kwargs["ContinuationToken"] = out["NextContinuationToken"]


def _fingerprint(info: dict) -> str:
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return str(etag).strip('"')
    return f"{info.get('size')}-{info.get('mtime') or info.get('LastModified')}"
