"""One entry point from a URI (local path or any fsspec URL) to a filesystem and a path on it.

Everything in ``pipeline`` that touches storage goes through :func:`url_to_fs`,
so local folders, ``s3://`` buckets and ``memory://`` (tests) behave alike.
"""

from __future__ import annotations

import posixpath
from urllib.parse import urlsplit, urlunsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem


def url_to_fs(
    uri: str, storage_options: dict | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """Filesystem and in-filesystem path for ``uri`` (trailing slashes dropped).

    ``storage_options`` go to the filesystem constructor (for s3fs: ``key``,
    ``secret``, ``endpoint_url``, ...). Local paths come back absolute.
    """
    if not isinstance(uri, str) or not uri:
        raise ValueError(f"expected a non-empty path or URL, got {uri!r}")
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    if len(path) > 1:
        path = path.rstrip("/")
    return fs, path


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """True for the local disk, where rename is atomic and folders must exist before writing."""
    return isinstance(fs, LocalFileSystem)


def join(path: str, *parts: str) -> str:
    """Join path parts with '/' (fsspec paths use '/' on every filesystem)."""
    return posixpath.join(path, *parts)


def has_protocol(uri: str) -> bool:
    """True when ``uri`` names a protocol (``s3://...``, ``file://...``), not a bare path."""
    return "://" in uri or uri.startswith("file:")


def safe_uri(uri: str) -> str:
    """``uri`` fit for errors, logs and tables: no user name, password or query string.

    URLs may carry credentials (``https://user:token@host/...``, presigned
    ``?X-Amz-Signature=...``); the location without them still names the file.
    Chained URLs (``simplecache::s3://...``) are cleaned link by link.
    """
    return "::".join(_without_credentials(link) for link in uri.split("::"))


def _without_credentials(link: str) -> str:
    if "://" not in link:
        return link
    parts = urlsplit(link)
    host = parts.netloc.rpartition("@")[2]
    query = "<query hidden>" if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, query, ""))
