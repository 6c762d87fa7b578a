"""fsspec storage helpers: every path in the pipeline is a URL (local folder, file://, s3://).

Storage options (an S3 endpoint) come from `srcnn.settings`; credentials stay with the
standard AWS variables that s3fs reads itself and are never logged.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import uuid
from typing import IO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from srcnn.settings import get_settings

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".gif")


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a URL or local path."""
    fs, path = fsspec.core.url_to_fs(url, **get_settings().storage_options(url))
    return fs, path


def is_local(url: str) -> bool:
    return isinstance(filesystem(url)[0], LocalFileSystem)


def join(url: str, *parts: str) -> str:
    return posixpath.join(url.rstrip("/"), *parts)


def open_url(url: str, mode: str = "rb") -> IO:
    fs, path = filesystem(url)
    return fs.open(path, mode)


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
        if not key.lower().endswith(IMAGE_SUFFIXES) or posixpath.basename(key).startswith("."):
            continue
        if include and not any(fnmatch.fnmatch(key, p) for p in include):
            continue
        if exclude and any(fnmatch.fnmatch(key, p) for p in exclude):
            continue
        found[key] = _fingerprint(info)
    return dict(sorted(found.items()))


def _fingerprint(info: dict) -> str:
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return str(etag).strip('"')
    return f"{info.get('size')}-{info.get('mtime') or info.get('LastModified')}"
