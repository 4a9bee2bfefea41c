"""A video's identity: a short text that changes when the video at a URI is replaced.

It is part of every unit id (``pipeline.plan``), so a video replaced at the same path is never
taken for one already labeled. Read from the store's metadata only (size plus ETag, version
or modification time; for a folder of frames, its frame files'), never from the content.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from pipeline.storage import safe_uri, url_to_fs
from pipeline.video import FRAME_SUFFIXES

# Keys of fsspec ``info()`` that change when a file's content does, best first: a content
# hash (S3 and HTTP ETag, GCS md5Hash), then a version, then the modification time.
_IDENTITY_KEYS = (
    "ETag",
    "etag",
    "Content-MD5",
    "md5Hash",
    "crc32c",
    "content_md5",
    "Digest",
    "VersionId",
    "version_id",
    "generation",
    "mtime",
    "LastModified",
    "Last-Modified",
    "last_modified",
    "updated",
    "modified",
    "created",
)
MISSING_VIDEO = "missing"


def video_identities(
    uris: Iterable[str], storage_options: dict | None = None, *, threads: int = 16
) -> dict[str, str]:
    """A short text per video that changes when the video is replaced: ``size=... ETag=...``
    (or the version or modification time where the store has no content hash); for a frame
    folder, the count, total size and a digest of its frame files' names and identities.

    One ``info()`` (a folder: one listing) per distinct URI, ``threads`` at a time, so a
    large manifest on an object store is planned in seconds. Content is never read: a
    file touched without change counts as replaced, an identical re-upload to S3 does not.
    A missing video gets ``MISSING_VIDEO`` (labeling it then fails with its own error);
    any other storage error propagates, naming the video.
    """
    distinct = list(dict.fromkeys(uris))
    if not distinct:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(distinct)))) as pool:
        found = pool.map(lambda uri: _identity(uri, storage_options), distinct)
        return dict(zip(distinct, found))


def _identity(uri: str, storage_options: dict | None) -> str:
    try:
        fs, path = url_to_fs(uri, storage_options)
        fs.invalidate_cache(path)  # a listing cached earlier in this process may be stale
        info = fs.info(path)
        if info.get("type") != "directory":
            return _file_identity(info)
        frames = [
            entry
            for entry in fs.ls(path, detail=True)
            if posixpath.splitext(entry["name"].rstrip("/"))[1].lower() in FRAME_SUFFIXES
        ]
    except FileNotFoundError:
        return MISSING_VIDEO
    except Exception as error:
        raise OSError(
            f"cannot read the size and version of video {safe_uri(uri)}: "
            f"{type(error).__name__}: {error}"
        ) from error
    listing = sorted((posixpath.basename(e["name"].rstrip("/")), _file_identity(e)) for e in frames)
    digest = hashlib.sha256(repr(listing).encode("utf-8")).hexdigest()[:16]
    total = sum(int(e.get("size") or 0) for e in frames)
    return f"frames={len(frames)} size={total} files={digest}"


def _file_identity(info: dict) -> str:
    text = f"size={int(info.get('size') or 0)}"
    for key in _IDENTITY_KEYS:
        value = info.get(key)
        if value not in (None, ""):
            value = str(value).strip('"')
            return f"{text} {key}={value}"
    return text
