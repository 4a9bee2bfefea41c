"""One entry point from a URI (local path or any fsspec URL) to a filesystem and a path on it.

Everything in ``pipeline`` that touches storage goes through :func:`url_to_fs`,
so local folders, ``s3://`` buckets and ``memory://`` (tests) behave alike.
"""

from __future__ import annotations

import os
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
    try:
        fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    except ImportError as err:  # fsspec names the package a protocol needs (gcsfs, adlfs, ...)
        raise ValueError(f"{uri}: no filesystem for this URL on this machine ({err})") from None
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


def absolute_uri(uri: str) -> str:
    """``uri`` with a bare local path made absolute against this process's working directory
    (and ``~`` expanded); URLs come back unchanged.

    Ray workers run in working directories of their own, so a relative path handed to them
    would name another place than the one the driver reads and writes.
    """
    if has_protocol(uri):
        return uri
    return os.path.abspath(os.path.expanduser(uri))


# Storage-option fields that hold credentials (s3fs, gcsfs, adlfs, botocore client kwargs).
_SECRET_WORDS = ("secret", "token", "password", "credential", "access_key", "account_key", "sas")
_SECRET_FIELDS = {"key", "username", "connection_string"}


def credential_fields(options: dict | None, prefix: str = "") -> list[str]:
    """Dotted names of storage-option fields that look like credentials.

    A command line that reaches a Ray cluster is kept in its job table and shown by its
    dashboard, so such values must reach the cluster some other way (environment, cloud role).
    """
    found: list[str] = []
    for name, value in (options or {}).items():
        dotted = f"{prefix}{name}"
        lowered = str(name).lower()
        if isinstance(value, dict):
            found += credential_fields(value, f"{dotted}.")
        elif lowered in _SECRET_FIELDS or any(word in lowered for word in _SECRET_WORDS):
            found.append(dotted)
    return found


class StorageUnreachableError(OSError):
    """A URI whose storage cannot be reached (endpoint down, missing filesystem package, ...)."""


def check_reachable(uri: str, storage_options: dict | None = None) -> None:
    """Ask ``uri``'s storage whether the path exists, raising :class:`StorageUnreachableError`
    naming ``uri`` when the storage cannot answer at all.

    Filesystem clients raise their own error types (botocore's connection errors are not
    ``OSError``), so a command checks its inputs here first and reports one line instead.
    """
    fs, path = url_to_fs(uri, storage_options)  # its ValueError names the URI already
    try:
        fs.exists(path)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise StorageUnreachableError(
            f"cannot reach {uri}: {type(err).__name__}: {reason}".rstrip(": ")
        ) from err
