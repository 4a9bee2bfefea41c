"""Frame-exact, bounded-memory video reading for the tracker (a ``sam2_core.frames.FrameSource``).

Two kinds of video: a container file that PyAV decodes (read through fsspec
file objects, so local paths and ``s3://`` work alike), and a folder of
numbered JPEG/PNG frames decoded with Pillow.

Frame ``i`` is the i-th frame the decoder outputs, counted from 0. For a
container the count comes from demuxing (no decoding): the presentation
timestamps of the video packets, sorted, name the frames in order, and the
keyframe packets say where decoding may start. Every decoded frame is
checked against that index (timestamp, continuity, end of stream); if the
file breaks it, the reader falls back to counting decoded frames from the
start, which is slower but still exact.

A folder's frames are its JPEG/PNG files in the order of the number in
their names; the numbers must run without gaps (a missing file would shift
every later prompt onto the wrong image), so a gap is refused.

A video's identity (size plus ETag, version or modification time) lives in
:mod:`pipeline.video_identity`.

Memory is bounded: at most ``cache_frames`` decoded frames are held. Going
forward, one live decoder keeps running (frame i+1 costs one decode). Going
backward, the block [i - cache_frames + 1, i] is decoded forward from its
nearest earlier keyframe, so the next ``cache_frames - 1`` backward steps are
cache hits. In a video with a single keyframe (bedroom.mp4) a full backward
pass therefore costs about N^2 / (2 * cache_frames) decodes.
"""

from __future__ import annotations

import bisect
import io
import posixpath
import re
from collections import OrderedDict
from collections.abc import Iterator

import av
import fsspec
import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import InputError
from pipeline.storage import is_local, safe_uri, url_to_fs

DEFAULT_CACHE_FRAMES = 16
REMOTE_BLOCK_BYTES = 4 * 2**20  # remote reads: 4 MiB ranges,
REMOTE_CACHE_BLOCKS = 32  # at most 128 MiB of them kept per open video
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
_NUMBER = re.compile(r"\d+")


class VideoDecodeError(InputError):
    """The video cannot be decoded: empty, corrupt, truncated, not a video, no frames. Permanent."""


def open_video(
    uri: str, storage_options: dict | None = None, *, cache_frames: int = DEFAULT_CACHE_FRAMES
) -> VideoReader:
    """Open a video file (anything PyAV reads) or a folder of numbered JPEG/PNG frames.

    ``cache_frames`` bounds how many decoded frames are held in memory.
    Raises FileNotFoundError if nothing exists at ``uri`` and VideoDecodeError
    if it is not a decodable video; both name ``uri`` without credentials.
    """
    if cache_frames < 1:
        raise ValueError(f"cache_frames must be at least 1, got {cache_frames}")
    fs, path = url_to_fs(uri, storage_options)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"video not found: {safe_uri(uri)}") from None
    if info.get("type") == "directory":
        return FrameFolderReader(uri, fs, path, cache_frames)
    return ContainerReader(uri, fs, path, cache_frames, size=info.get("size"))


class _FrameCache:
    """At most ``limit`` decoded frames by index; the least recently used goes first."""

    def __init__(self, limit: int):
        self.limit = limit
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._frames)

    def get(self, index: int) -> np.ndarray | None:
        frame = self._frames.get(index)
        if frame is not None:
            self._frames.move_to_end(index)
        return frame

    def put(self, index: int, frame: np.ndarray) -> None:
        self._frames[index] = frame
        self._frames.move_to_end(index)
        while len(self._frames) > self.limit:
            self._frames.popitem(last=False)

    def clear(self) -> None:
        self._frames.clear()


class VideoReader:
    """A video as random-access RGB frames (H x W x 3 uint8) with a bounded frame cache.

    Use as a context manager or call close(). Returned frames are copies, so
    callers may modify them freely.
    """

    def __init__(self, uri: str, cache_frames: int):
        self.uri = safe_uri(uri)  # for messages only: never holds credentials
        self._cache = _FrameCache(cache_frames)
        self._length = 0
        self._height = 0
        self._width = 0

    @property
    def height(self) -> int:
        return self._height

    @property
    def width(self) -> int:
        return self._width

    @property
    def cached_frames(self) -> int:
        """How many decoded frames are held right now (never more than ``cache_limit``)."""
        return len(self._cache)

    @property
    def cache_limit(self) -> int:
        return self._cache.limit

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[np.ndarray]:
        for index in range(len(self)):
            yield self[index]

    def __getitem__(self, index: int) -> np.ndarray:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"frame index must be an integer, got {index!r}")
        index = int(index)
        if not 0 <= index < self._length:
            raise IndexError(
                f"frame index {index} out of range for {self.uri} ({self._length} frames)"
            )
        frame = self._cache.get(index)
        if frame is None:
            frame = self._load(index)
        return frame.copy()

    def _load(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        self._cache.clear()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r}, {self._length} frames, {self._width}x{self._height})"


class _IndexMismatch(Exception):
    """Decoded frames disagree with the demuxed index (internal; triggers the counting fallback)."""


class ContainerReader(VideoReader):
    """A video file decoded with PyAV; see the module docstring for the index and cache rules."""

    def __init__(
        self,
        uri: str,
        fs: fsspec.AbstractFileSystem,
        path: str,
        cache_frames: int,
        size: int | None = None,
    ):
        super().__init__(uri, cache_frames)
        self._fs = fs
        self._path = path
        self._size = fs.size(path) if size is None else size  # None: the store does not say
        self._file = None
        self._container = None
        self._stream = None
        self._frames: Iterator[av.VideoFrame] | None = None  # live decoder output
        self._next: int | None = None  # index of the frame the live decoder yields next
        self._floor = 0  # keyframe index the live decoder was started from
        self._pts: list[int] | None = None  # frame index -> pts; None: count frames from 0
        self._pts_index: dict[int, int] = {}
        self._keyframes: list[int] = [0]
        self._last: int | None = None  # last index decoded on request (to spot backward runs)
        try:
            if self._size == 0:
                raise VideoDecodeError(f"{self.uri}: the file is empty (0 bytes)")
            self._open_container()
            self._index_packets()
            first = self._load(0)
            self._height, self._width = int(first.shape[0]), int(first.shape[1])
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ opening and indexing

    def _open_container(self) -> None:
        """(Re)open the container at the start of the file; the file object and its cache stay."""
        self._close_container()
        if self._file is None:
            try:
                opened = self._fs.open(self._path, "rb", **_read_options(self._fs))
            except FileNotFoundError as error:
                raise FileNotFoundError(f"video not found: {self.uri}") from error
            self._file = _SeekGuard(opened, self._size, self.uri)
        self._file.seek(0)
        try:
            self._container = av.open(self._file, mode="r")
        except av.FFmpegError as error:
            raise VideoDecodeError(
                f"{self.uri}: not a readable video file ({_reason(error)})"
            ) from error
        if not self._container.streams.video:
            raise VideoDecodeError(f"{self.uri}: the file holds no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._frames = None
        self._next = None

    def _index_packets(self) -> None:
        """Frame count, frame timestamps and keyframes from demuxing alone."""
        timestamps: list[int] = []
        keyframe_pts: list[int] = []
        usable = True
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                if packet.pts is None:
                    usable = False
                    continue
                timestamps.append(packet.pts)
                if packet.is_keyframe:
                    keyframe_pts.append(packet.pts)
        except av.FFmpegError as error:
            raise VideoDecodeError(
                f"{self.uri}: corrupt or truncated video ({_reason(error)})"
            ) from error
        timestamps.sort()
        if usable and len(set(timestamps)) != len(timestamps):
            usable = False
        if not timestamps and usable:
            raise VideoDecodeError(f"{self.uri}: the video stream holds no frames")
        if usable:
            self._pts = timestamps
            self._pts_index = {pts: index for index, pts in enumerate(timestamps)}
            self._keyframes = sorted({0, *(self._pts_index[pts] for pts in keyframe_pts)})
            self._length = len(timestamps)
            self._frames = None  # demuxing consumed the container; the first read seeks
        else:
            self._index_by_counting()

    def _index_by_counting(self) -> None:
        """Fallback: count the frames the decoder really outputs; seek only to the start."""
        self._open_container()
        count = 0
        try:
            for _ in self._container.decode(self._stream):
                count += 1
        except av.FFmpegError as error:
            raise VideoDecodeError(f"{self.uri}: corrupt video ({_reason(error)})") from error
        if count == 0:
            raise VideoDecodeError(f"{self.uri}: no decodable frames")
        self._pts, self._pts_index, self._keyframes = None, {}, [0]
        self._length = count
        self._cache.clear()
        self._frames = None

    # ------------------------------------------------------------ decoding

    def _load(self, index: int) -> np.ndarray:
        backward = self._last is not None and index < self._last
        start = max(0, index - self._cache.limit + 1) if backward else index
        try:
            frame = self._decode_range(start, index)
        except _IndexMismatch:
            if self._pts is None:
                raise VideoDecodeError(f"{self.uri}: decoding is not repeatable") from None
            self._index_by_counting()
            if index >= self._length:
                raise VideoDecodeError(
                    f"{self.uri}: frame {index} is listed by the container but only "
                    f"{self._length} frames decode"
                ) from None
            try:
                frame = self._decode_range(start, index)
            except _IndexMismatch as error:
                raise VideoDecodeError(
                    f"{self.uri}: decoding is not repeatable ({error})"
                ) from None
        self._last = index
        return frame

    def _decode_range(self, start: int, index: int) -> np.ndarray:
        """Decode up to frame ``index``, caching frames start..index; returns frame ``index``."""
        keyframe = self._keyframes[bisect.bisect_right(self._keyframes, start) - 1]
        live = self._frames is not None and self._next is not None
        if not (live and keyframe <= self._next <= start):
            self._restart(keyframe)
        while True:
            try:
                frame = next(self._frames)
            except StopIteration:
                self._frames = None
                raise _IndexMismatch(f"stream ended before frame {index}") from None
            except av.FFmpegError as error:
                self._frames = None
                raise VideoDecodeError(
                    f"{self.uri}: corrupt video near frame {index} ({_reason(error)})"
                ) from error
            position = self._position(frame)
            if position < start:
                continue
            rgb = frame.to_ndarray(format="rgb24")
            if self._height and rgb.shape[:2] != (self._height, self._width):
                raise VideoDecodeError(
                    f"{self.uri}: frame {position} is {rgb.shape[1]}x{rgb.shape[0]}, "
                    f"frame 0 is {self._width}x{self._height} (size changes are not supported)"
                )
            self._cache.put(position, rgb)
            if position == index:
                return rgb

    def _restart(self, keyframe: int) -> None:
        """Point the live decoder at ``keyframe`` (a seek, or reopening when counting frames)."""
        if self._pts is None:
            self._open_container()
            self._next, self._floor = 0, 0
        else:
            try:
                self._container.seek(self._pts[keyframe], stream=self._stream, backward=True)
            except av.FFmpegError as error:
                raise VideoDecodeError(
                    f"{self.uri}: cannot seek to frame {keyframe} ({_reason(error)})"
                ) from error
            self._next, self._floor = None, keyframe
        self._frames = iter(self._container.decode(self._stream))

    def _position(self, frame: av.VideoFrame) -> int:
        """Index of a decoded frame, checked for continuity against the index."""
        if self._pts is None:
            position = self._next
        else:
            position = self._pts_index.get(frame.pts)
            if position is None:
                raise _IndexMismatch(f"decoded a frame with unlisted pts {frame.pts}")
            expected = self._next
            if expected is None and position > self._floor:
                raise _IndexMismatch(f"seek to frame {self._floor} gave frame {position}")
            if expected is not None and position != expected:
                raise _IndexMismatch(f"expected frame {expected}, decoded frame {position}")
        self._next = position + 1
        return position

    # ------------------------------------------------------------ closing

    def _close_container(self) -> None:
        self._frames = None
        if self._container is not None:
            self._container.close()
            self._container = None

    def close(self) -> None:
        self._close_container()
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


def _reason(error: av.FFmpegError) -> str:
    """FFmpeg's own words, without the errno and the file name (which is ours to give)."""
    return error.strerror or str(error)


class _SeekGuard:
    """The file object PyAV reads. FFmpeg computes seek targets from the file's own bytes, so
    a target before the start of the file means a broken or foreign file: raise
    VideoDecodeError naming it, where the raw file would raise a nameless OSError or
    ValueError that looks like a storage failure (a zero-byte file gave "[Errno 22]")."""

    def __init__(self, file, size: int | None, uri: str):
        self._file = file
        self._size = size
        self._uri = uri

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def tell(self) -> int:
        return self._file.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._file.tell()}
        if self._size is not None:
            base[io.SEEK_END] = self._size
        if whence in base and base[whence] + offset < 0:
            raise VideoDecodeError(
                f"{self._uri}: not a readable video file (the decoder asked for byte "
                f"{base[whence] + offset} of {self._size})"
            )
        return self._file.seek(offset, whence)

    def close(self) -> None:
        self._file.close()


def _read_options(fs: fsspec.AbstractFileSystem) -> dict:
    """Remote files keep a bounded block cache, so decoding again from a keyframe (backward
    access) re-reads bytes from memory instead of the network; local files need none."""
    if is_local(fs):
        return {}
    return {
        "block_size": REMOTE_BLOCK_BYTES,
        "cache_type": "blockcache",
        "cache_options": {"maxblocks": REMOTE_CACHE_BLOCKS},
    }


class FrameFolderReader(VideoReader):
    """A folder of JPEG/PNG frames ordered by the integer in their names (00000.jpg, 1.png, ...)."""

    def __init__(self, uri: str, fs: fsspec.AbstractFileSystem, path: str, cache_frames: int):
        super().__init__(uri, cache_frames)
        self._fs = fs
        self._files = self._list_frames(path)
        self._length = len(self._files)
        first = self._load(0)
        self._height, self._width = int(first.shape[0]), int(first.shape[1])

    def _list_frames(self, path: str) -> list[str]:
        numbered: dict[int, str] = {}
        for name in self._fs.ls(path, detail=False):
            base = posixpath.basename(name.rstrip("/"))
            stem, suffix = posixpath.splitext(base)
            if suffix.lower() not in FRAME_SUFFIXES:
                continue
            numbers = _NUMBER.findall(stem)
            if not numbers:
                raise VideoDecodeError(f"{self.uri}: frame file {base!r} has no number in its name")
            number = int(numbers[-1])
            if number in numbered:
                raise VideoDecodeError(
                    f"{self.uri}: frame files {posixpath.basename(numbered[number])!r} and "
                    f"{base!r} have the same number {number}"
                )
            numbered[number] = name
        if not numbered:
            raise VideoDecodeError(f"{self.uri}: no JPEG/PNG frames in this folder")
        numbers = sorted(numbered)
        for previous, number in zip(numbers, numbers[1:]):
            if number != previous + 1:
                raise VideoDecodeError(
                    f"{self.uri}: frame number {previous + 1} is missing (frame file "
                    f"{posixpath.basename(numbered[previous])!r} is followed by "
                    f"{posixpath.basename(numbered[number])!r}); frames must be numbered without "
                    "gaps, since frame i of the video is the i-th file"
                )
        return [numbered[number] for number in numbers]

    def _load(self, index: int) -> np.ndarray:
        name = self._files[index]
        with self._fs.open(name, "rb") as handle:
            data = handle.read()
        try:
            with Image.open(io.BytesIO(data)) as image:
                frame = np.asarray(image.convert("RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise VideoDecodeError(
                f"{self.uri}: cannot decode frame file {name} ({error})"
            ) from error
        if self._height and frame.shape[:2] != (self._height, self._width):
            raise VideoDecodeError(
                f"{self.uri}: frame file {name} is {frame.shape[1]}x{frame.shape[0]}, "
                f"the first frame is {self._width}x{self._height}"
            )
        self._cache.put(index, frame)
        return frame
