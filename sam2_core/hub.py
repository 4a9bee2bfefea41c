"""From a model name or checkpoint URI to checkpoint bytes whose SHA-256 is checked.

The one home of: the checkpoint cache (one folder,
``$SAM2_LABELER_CACHE`` or ``~/.cache/sam2-labeler``), the SHA-256 of files
and bytes, downloading an official checkpoint, and every read of a checkpoint
in ``sam2_core``. ``jobs fetch-checkpoint`` and the labeling workers both go
through it. The eight official names (config file, download URL and SHA-256
of each) are the table in :mod:`sam2_core.official`.

Cache layout: an official checkpoint at ``<cache>/NAME.pt`` (where ``jobs
fetch-checkpoint`` puts it by default); a checkpoint read from a URL at
``<cache>/checkpoints/<digest>-<file name>``, content-addressed, so only a URL
whose digest is known is cached.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .official import OFFICIAL_CHECKPOINTS, OfficialCheckpoint, checkpoint_files  # noqa: F401 - OFFICIAL_CHECKPOINTS re-exported

ENV_CACHE = "SAM2_LABELER_CACHE"
ENV_BASE_URL = "SAM2_CHECKPOINT_BASE_URL"
DEFAULT_CACHE_DIR = "~/.cache/sam2-labeler"
_CHUNK = 1 << 20


# ---------------------------------------------------------------------------
# Cache, digests, reading
# ---------------------------------------------------------------------------


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The checkpoint cache folder: ``override``, else ``$SAM2_LABELER_CACHE``, else ``~/.cache/sam2-labeler``."""
    return Path(override or os.environ.get(ENV_CACHE) or DEFAULT_CACHE_DIR).expanduser()


def short(digest: str | None) -> str:
    """The first 12 hex digits of a digest, for messages and labels."""
    return digest[:12] if digest else "none"


def sha256_bytes(data: bytes) -> str:
    """SHA-256 (hex) of ``data``."""
    return hashlib.sha256(data).hexdigest()


def copy_hashed(
    src: BinaryIO, dst: BinaryIO | None = None, on_chunk: Callable[[int], None] | None = None
) -> tuple[str, int]:
    """Stream ``src`` to its end (into ``dst`` when given) while hashing it; (SHA-256 hex, bytes).

    ``on_chunk(n)`` is called after each chunk of ``n`` bytes (progress bars, byte counts).
    """
    h = hashlib.sha256()
    size = 0
    while chunk := src.read(_CHUNK):
        h.update(chunk)
        if dst is not None:
            dst.write(chunk)
        size += len(chunk)
        if on_chunk is not None:
            on_chunk(len(chunk))
    return h.hexdigest(), size


def is_local_uri(uri: str) -> bool:
    """True for a bare path or a ``file:`` URL (read in place, never cached)."""
    return "://" not in uri or uri.startswith("file:")


def _open(uri: str, storage_options: dict | None, what: str) -> BinaryIO:
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    if not fs.exists(path) or fs.isdir(path):
        raise FileNotFoundError(f"{what} not found: {uri}")
    return fs.open(path, "rb")


def sha256_file(uri: str, storage_options: dict | None = None, what: str = "file") -> str:
    """SHA-256 (hex) of a local file or fsspec URL, streamed; FileNotFoundError naming ``uri`` (as ``what``)."""
    with _open(uri, storage_options, what) as f:
        return copy_hashed(f)[0]


def read_bytes(uri: str, storage_options: dict | None = None, what: str = "file") -> bytes:
    """The whole content of a local file or fsspec URL; FileNotFoundError naming ``uri`` (as ``what``)."""
    with _open(uri, storage_options, what) as f:
        return f.read()


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Downloading an official checkpoint (``jobs fetch-checkpoint``, and workers given a name)
# ---------------------------------------------------------------------------


class FetchError(Exception):
    """The checkpoint could not be fetched and verified; the message says why and what to do."""


class UnverifiedError(FetchError):
    """No known checksum and unverified files not allowed: the file was not kept."""


@dataclass(frozen=True)
class FetchResult:
    """What ``fetch_official`` did.

    Attributes:
        dest: where the checkpoint now is (local path or URL).
        sha256: its SHA-256 (hex).
        size: its size in bytes.
        verified: the SHA-256 matched a known value.
        downloaded: False when a verified copy was already at ``dest``.
    """

    dest: str
    sha256: str
    size: int
    verified: bool
    downloaded: bool


def base_url_default() -> str | None:
    """The mirror named by ``$SAM2_CHECKPOINT_BASE_URL``, if any (None: Meta's URL)."""
    return os.environ.get(ENV_BASE_URL) or None


def resolve_dest(dest: str | None, filename: str, storage_options: dict | None = None) -> str:
    """The file URI to write: ``dest`` itself, ``filename`` inside it when it is a folder, or in the cache."""
    import fsspec

    if dest is None:
        return str(cache_dir() / filename)
    if "://" not in dest:
        dest = os.path.expanduser(dest)
    if dest.endswith("/"):
        return dest + filename
    fs, path = fsspec.core.url_to_fs(dest, **(storage_options or {}))
    if fs.isdir(path):
        return dest.rstrip("/") + "/" + filename
    return dest


def _download(url: str, out: BinaryIO, timeout: float) -> tuple[str, int]:
    """Stream ``url`` into the open binary file ``out``; (SHA-256 hex, bytes)."""
    request = urllib.request.Request(url, headers={"User-Agent": "sam2-labeler fetch-checkpoint"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        raise FetchError(f"download failed: HTTP {err.code} {err.reason} for {url}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise FetchError(
            f"cannot reach {url}: {reason}\n"
            f"(no network to that host? point --base-url or ${ENV_BASE_URL} at a mirror with the official layout)"
        ) from err
    from tqdm import tqdm

    received = 0

    def count(n: int) -> None:
        nonlocal received
        received += n
        bar.update(n)

    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc=url.rsplit("/", 1)[-1],
            file=sys.stderr,
            disable=None,
        ) as bar:
            try:
                digest, size = copy_hashed(response, out, count)
            except (http.client.HTTPException, OSError) as err:
                raise FetchError(
                    f"download of {url} broke off after {received} bytes: {type(err).__name__}: {err}"
                ) from err
    if total is not None and size != total:
        raise FetchError(f"download of {url} is truncated: got {size} of {total} bytes")
    return digest, size


def fetch_official(
    entry: OfficialCheckpoint,
    dest: str | None = None,
    *,
    base_url: str | None = None,
    expected_sha256: str | None = None,
    force: bool = False,
    allow_unverified: bool = False,
    storage_options: dict | None = None,
    timeout: float = 60.0,
    log: Callable[[str], None] = _log,
) -> FetchResult:
    """Download ``entry`` to ``dest`` (default: the cache) and keep it only if its SHA-256 matches.

    The file is streamed to a temporary file while it is hashed and moved to
    ``dest`` (a local path or fsspec URL; a folder when it ends in '/') only when
    it matches. A verified copy already at ``dest`` is kept without downloading
    unless ``force``. ``expected_sha256`` replaces the table's value; without any
    known value the file is kept only with ``allow_unverified`` (UnverifiedError
    otherwise). ``base_url``: a mirror with the official layout (default
    ``$SAM2_CHECKPOINT_BASE_URL`` or Meta's). FetchError, with nothing left at
    ``dest``, on any failure.
    """
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    expected = expected_sha256 or entry.sha256
    target = resolve_dest(dest, entry.filename, storage_options)
    fs, path = fsspec.core.url_to_fs(target, **(storage_options or {}))
    fs.invalidate_cache()

    if not force and fs.exists(path):
        with fs.open(path, "rb") as f:
            digest, size = copy_hashed(f)
        if expected is not None and digest == expected:
            log(
                f"{entry.name}: verified copy already at {target} (sha256 {digest}); nothing downloaded"
            )
            return FetchResult(target, digest, size, verified=True, downloaded=False)
        if expected is None:
            message = f"{entry.name}: existing copy at {target} has sha256 {digest} ({size} bytes): not verified: no known checksum"
            if not allow_unverified:
                raise UnverifiedError(
                    message
                    + " (pass --allow-unverified to accept it, --sha256 HEX to check it, or --force to download again)"
                )
            log(message)
            return FetchResult(target, digest, size, verified=False, downloaded=False)
        log(
            f"{entry.name}: existing copy at {target} does not match (sha256 {digest}); downloading again"
        )

    url = entry.url(base_url or base_url_default())
    local = isinstance(fs, LocalFileSystem)
    if local:
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{entry.filename}.", suffix=".part")
    else:
        fd, tmp = tempfile.mkstemp(prefix=f"{entry.filename}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            log(f"{entry.name}: downloading {url}")
            digest, size = _download(url, out, timeout)
        size_note = f"{size} bytes" + (
            f", the official file has {entry.size}"
            if entry.size is not None and size != entry.size
            else ""
        )
        if expected is None:
            message = (
                f"{entry.name}: sha256 {digest} ({size_note}): not verified: no known checksum"
            )
            if not allow_unverified:
                raise UnverifiedError(
                    message
                    + f"; nothing was written to {target} (pass --allow-unverified to keep it anyway, "
                    "or --sha256 HEX with a value you trust)"
                )
            log(message)
        elif digest != expected:
            raise FetchError(
                f"{entry.name}: SHA-256 mismatch for {url}: expected {expected}, got {digest} ({size_note}); "
                f"the file was refused and nothing was written to {target}"
            )
        if local:
            os.replace(tmp, path)
        else:
            fs.put_file(tmp, path)
            fs.invalidate_cache()
            stored = fs.size(path)
            if stored != size:
                raise FetchError(
                    f"{target}: stored size {stored} differs from the {size} bytes uploaded"
                )
    except OSError as err:
        raise FetchError(
            f"{entry.name}: could not write {target}: {type(err).__name__}: {err}"
        ) from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return FetchResult(target, digest, size, verified=expected is not None, downloaded=True)


# ---------------------------------------------------------------------------
# Checkpoint bytes for loading, checked where they are loaded
# ---------------------------------------------------------------------------


class CheckpointDigestError(ValueError):
    """The bytes read for a checkpoint do not have the SHA-256 they were expected to have.

    Permanent: the file changed after its digest was taken, or a copy is corrupt or planted.
    """


@dataclass(frozen=True)
class CheckpointBytes:
    """A checkpoint's bytes as read, with their SHA-256: what is hashed is what is deserialized.

    Attributes:
        uri: the name or URI the bytes were asked for (for messages).
        sha256: SHA-256 (hex) of ``data``.
        data: the checkpoint file's bytes.
    """

    uri: str
    sha256: str
    data: bytes = field(repr=False)


def checkpoint_sha256(uri: str, storage_options: dict | None = None) -> str:
    """The SHA-256 a run plans with for ``uri``: the table's for an official name, the file's otherwise."""
    entry = checkpoint_files().get(uri)
    if entry is not None:
        if entry.sha256 is None:
            raise ValueError(
                f"checkpoint {uri}: no known SHA-256; fetch it with `jobs fetch-checkpoint` and pass its path"
            )
        return entry.sha256
    return sha256_file(uri, storage_options, what="checkpoint")


def _checked(uri: str, data: bytes, expected: str | None) -> CheckpointBytes:
    digest = sha256_bytes(data)
    if expected is not None and digest != expected.lower():
        raise CheckpointDigestError(
            f"checkpoint {uri}: the bytes read have sha256 {short(digest)}..., not the expected {short(expected)}... "
            "(changed since its digest was taken, or a corrupt or planted copy); refused"
        )
    return CheckpointBytes(uri, digest, data)


def _cached(
    target: Path, expected: str, uri: str, log: Callable[[str], None]
) -> CheckpointBytes | None:
    """The cached copy at ``target`` if its bytes match ``expected``; None (logged) otherwise."""
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        return None
    digest = sha256_bytes(data)
    if digest == expected.lower():
        return CheckpointBytes(uri, digest, data)
    log(
        f"checkpoint {uri}: cached copy {target} has sha256 {short(digest)}..., not {short(expected)}...; fetching it again"
    )
    return None


def _write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_checkpoint(
    uri: str,
    sha256: str | None = None,
    storage_options: dict | None = None,
    cache: str | os.PathLike | None = None,
    *,
    base_url: str | None = None,
    log: Callable[[str], None] = _log,
) -> CheckpointBytes:
    """Read the checkpoint ``uri`` names once and check the SHA-256 of exactly the bytes returned.

    ``uri``: an official name (read from ``<cache>/NAME.pt``, downloaded there
    first when missing), a local path or ``file:`` URL (read in place), or any
    other fsspec URL (read from ``<cache>/checkpoints/`` when ``sha256`` is given,
    copied there on first use; read directly otherwise). ``sha256``: the digest
    the caller planned with (an official name defaults to the table's). A cached
    copy that does not match is fetched again; bytes from the source that do not
    match raise CheckpointDigestError, and nothing is cached.
    """
    entry = checkpoint_files().get(uri)
    if entry is not None:
        expected = sha256 or entry.sha256
        target = cache_dir(cache) / entry.filename
        if expected is not None and (found := _cached(target, expected, uri, log)) is not None:
            return found
        fetch_official(
            entry, str(target), base_url=base_url, expected_sha256=expected, force=True, log=log
        )
        return _checked(uri, read_bytes(str(target), what="checkpoint"), expected)
    if is_local_uri(uri) or sha256 is None:
        return _checked(uri, read_bytes(uri, storage_options, what="checkpoint"), sha256)
    name = os.path.basename(uri.rstrip("/")) or "checkpoint.pt"
    target = cache_dir(cache) / "checkpoints" / f"{sha256.lower()[:32]}-{name}"
    if (found := _cached(target, sha256, uri, log)) is not None:
        return found
    checked = _checked(uri, read_bytes(uri, storage_options, what="checkpoint"), sha256)
    _write_atomic(target, checked.data)
    return checked
