"""Video reading: exact frame indices, bounded memory backward, S3, frame folders, bad files."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from s3_server import start_s3

from pipeline.errors import InputError
from pipeline.video import ContainerReader, FrameFolderReader, VideoDecodeError, open_video
from sam2_core.frames import FrameSource

BUCKET = "video-tests"


def write_test_video(path: Path, frames: int = 40, gop: int = 8, size: tuple[int, int] = (64, 48)):
    """A small H.264 MP4 with B-frames and a keyframe every ``gop`` frames; each frame differs."""
    width, height = size
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {"bf": "2", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
    rows, cols = np.mgrid[0:height, 0:width]
    for index in range(frames):
        image = np.zeros((height, width, 3), np.uint8)
        image[..., 0] = (cols * 4 + index * 7) % 256
        image[..., 1] = (rows * 5 + index * 3) % 256
        image[..., 2] = (index * 13) % 256
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def decode_all(path: Path, limit: int | None = None, rgb: bool = True) -> list:
    """Reference: plain sequential PyAV decode (RGB arrays, or just timestamps)."""
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24") if rgb else frame.pts)
            if limit is not None and len(out) == limit:
                break
    return out


@pytest.fixture(scope="module")
def small_video(tmp_path_factory) -> Path:
    return write_test_video(tmp_path_factory.mktemp("video") / "small.mp4")


@pytest.fixture(scope="module")
def small_reference(small_video) -> list[np.ndarray]:
    return decode_all(small_video)


@pytest.fixture(scope="module")
def s3():
    with start_s3(buckets=[BUCKET]) as server:
        yield server


class CountRestarts:
    """Counts how often a reader starts decoding again from a keyframe (seek or reopen)."""

    def __init__(self, reader: ContainerReader, monkeypatch):
        self.count = 0
        original = reader._restart

        def counting(keyframe: int) -> None:
            self.count += 1
            original(keyframe)

        monkeypatch.setattr(reader, "_restart", counting)


def test_frame_count_matches_a_full_decode_of_real_videos(videos_dir):
    for name, expected in (("bedroom.mp4", 200), ("01_dog.mp4", None)):
        path = videos_dir / name
        timestamps = decode_all(path, rgb=False)
        if expected is not None:
            assert len(timestamps) == expected
        with open_video(str(path)) as reader:
            assert isinstance(reader, FrameSource)
            assert len(reader) == len(timestamps)
            assert reader._pts == timestamps  # frame i is the i-th decoded frame
    with open_video(str(videos_dir / "bedroom.mp4")) as reader:
        assert (reader.width, reader.height) == (960, 540)


def test_bedroom_random_and_backward_access_equal_sequential_decode(videos_dir):
    # bedroom.mp4 has one keyframe and B-frames: every jump decodes from frame 0.
    path = videos_dir / "bedroom.mp4"
    reference = decode_all(path, limit=41)
    with open_video(str(path), cache_frames=8) as reader:
        for index in (40, 3, 25, 0, 39):
            assert np.array_equal(reader[index], reference[index]), index
        for index in range(40, -1, -1):
            assert np.array_equal(reader[index], reference[index]), index
            assert reader.cached_frames <= 8


def test_sequential_reads_match_reference_and_decode_forward_once(
    small_video, small_reference, monkeypatch
):
    with open_video(str(small_video), cache_frames=4) as reader:
        restarts = CountRestarts(reader, monkeypatch)
        assert len(reader) == len(small_reference) == 40
        for index in range(len(reader)):
            frame = reader[index]
            assert frame.dtype == np.uint8 and frame.shape == (48, 64, 3)
            assert np.array_equal(frame, small_reference[index]), index
        # frame 0 was decoded at open; the live decoder simply continues from there
        assert restarts.count == 0


def test_random_access_equals_sequential_decode(small_video, small_reference):
    rng = np.random.default_rng(7)
    with open_video(str(small_video), cache_frames=3) as reader:
        for index in rng.integers(0, len(reader), size=30):
            assert np.array_equal(reader[int(index)], small_reference[index]), index


def test_backward_pass_equals_forward_with_bounded_cache(small_video, small_reference, monkeypatch):
    bound = 5
    with open_video(str(small_video), cache_frames=bound) as reader:
        restarts = CountRestarts(reader, monkeypatch)
        for index in range(len(reader) - 1, -1, -1):
            assert np.array_equal(reader[index], small_reference[index]), index
            assert reader.cached_frames <= bound
        # blocks of `bound` frames: one restart per block, not one per frame
        assert restarts.count <= -(-len(reader) // bound) + 1


def test_returned_frames_are_copies(small_video, small_reference):
    with open_video(str(small_video)) as reader:
        reader[2][:] = 0
        assert np.array_equal(reader[2], small_reference[2])


def test_index_out_of_range_and_bad_index(small_video):
    with open_video(str(small_video)) as reader:
        with pytest.raises(IndexError, match="out of range"):
            reader[len(reader)]
        with pytest.raises(IndexError):
            reader[-1]
        with pytest.raises(TypeError):
            reader[1.5]


def test_reading_from_s3_equals_local(s3, small_video, small_reference, tmp_path):
    fs = s3.filesystem()
    fs.put_file(str(small_video), f"{BUCKET}/clips/small.mp4")
    uri = f"s3://{BUCKET}/clips/small.mp4"
    with open_video(uri, s3.storage_options, cache_frames=4) as reader:
        assert isinstance(reader, ContainerReader)
        assert len(reader) == len(small_reference)
        for index in (0, 17, 39, 8, 7):
            assert np.array_equal(reader[index], small_reference[index]), index
    # a frame folder on S3
    for index in (0, 1, 2):
        target = tmp_path / f"{index:05d}.png"
        Image.fromarray(small_reference[index]).save(target)
        fs.put_file(str(target), f"{BUCKET}/frames/clip/{target.name}")
    with open_video(f"s3://{BUCKET}/frames/clip", s3.storage_options) as reader:
        assert isinstance(reader, FrameFolderReader)
        assert len(reader) == 3
        assert np.array_equal(reader[2], small_reference[2])
    with pytest.raises(FileNotFoundError, match=f"s3://{BUCKET}/clips/missing.mp4"):
        open_video(f"s3://{BUCKET}/clips/missing.mp4", s3.storage_options)


def test_frame_folder_orders_by_number_and_ignores_other_files(tmp_path, small_reference):
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(12):  # 0.png .. 11.png: "10" sorts before "2" as text, not as a number
        Image.fromarray(small_reference[index]).save(folder / f"{index}.png")
    (folder / "notes.txt").write_text("not a frame")
    with open_video(str(folder), cache_frames=2) as reader:
        assert isinstance(reader, FrameFolderReader)
        assert isinstance(reader, FrameSource)
        assert len(reader) == 12 and (reader.height, reader.width) == (48, 64)
        for index in (11, 2, 10, 0):
            assert np.array_equal(reader[index], small_reference[index]), index
        assert reader.cached_frames <= 2


def test_frame_folder_of_jpegs_with_prefixed_names(tmp_path, small_reference):
    folder = tmp_path / "jpegs"
    folder.mkdir()
    for index in range(3):
        Image.fromarray(small_reference[index]).save(folder / f"frame_{index:04d}.jpg", quality=95)
    with open_video(str(folder)) as reader:
        assert len(reader) == 3
        error = np.abs(reader[1].astype(int) - small_reference[1].astype(int)).mean()
        assert error < 8  # JPEG is lossy; frame 1 must still be frame 1
        assert error < np.abs(reader[1].astype(int) - small_reference[2].astype(int)).mean()


def test_bad_frame_folders_raise_decode_errors(tmp_path, small_reference):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoDecodeError, match="no JPEG/PNG frames"):
        open_video(str(empty))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(small_reference[0]).save(mixed / "0.png")
    Image.fromarray(small_reference[1][:20]).save(mixed / "1.png")
    with open_video(str(mixed)) as reader, pytest.raises(VideoDecodeError, match="1.png"):
        reader[1]
    duplicate = tmp_path / "duplicate"
    duplicate.mkdir()
    Image.fromarray(small_reference[0]).save(duplicate / "1.png")
    Image.fromarray(small_reference[0]).save(duplicate / "001.jpg")
    with pytest.raises(VideoDecodeError, match="same number"):
        open_video(str(duplicate))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "0.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(VideoDecodeError, match="0.jpg"):
        open_video(str(broken))


def test_corrupt_truncated_and_missing_files(tmp_path, small_video):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoDecodeError, match="garbage.mp4"):
        open_video(str(garbage))
    text = tmp_path / "notes.mp4"
    text.write_text("hello, I am not a video\n" * 100)
    with pytest.raises(VideoDecodeError, match="notes.mp4"):
        open_video(str(text))
    truncated = tmp_path / "truncated.mp4"  # moov atom at the end is cut off
    truncated.write_bytes(small_video.read_bytes()[:3000])
    with pytest.raises(VideoDecodeError, match="truncated.mp4"):
        open_video(str(truncated))
    with pytest.raises(FileNotFoundError, match="nowhere.mp4"):
        open_video(str(tmp_path / "nowhere.mp4"))


def test_truncated_faststart_file_fails_when_missing_frames_are_reached(tmp_path):
    # With the index at the front, the container lists frames whose data is gone:
    # reading up to them must raise, not return wrong or short data silently.
    source = tmp_path / "source.mp4"
    container = av.open(str(source), "w", options={"movflags": "faststart"})
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    rng = np.random.default_rng(1)
    for _ in range(30):
        image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(VideoDecodeError, match="cut.mp4"):
        with open_video(str(cut)) as reader:
            for index in range(len(reader)):
                reader[index]


def test_index_disagreement_falls_back_to_counting_and_stays_exact(small_video, small_reference):
    with open_video(str(small_video), cache_frames=4) as reader:
        # pretend demuxing missed frame 20's timestamp: decoding must notice and recount
        del reader._pts_index[reader._pts[20]]
        frames = [reader[index] for index in range(len(reader))]
        assert reader._pts is None  # now counting decoded frames from the start
        assert len(reader) == len(small_reference)
        assert all(np.array_equal(a, b) for a, b in zip(frames, small_reference))
        assert np.array_equal(reader[5], small_reference[5])  # backward still works


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_root(tmp_path_factory):
    """A folder served over HTTP on 127.0.0.1: (folder, base URL with a user and password)."""
    folder = tmp_path_factory.mktemp("http")
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(folder))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://reader:s3cret@127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_undecodable_files_are_permanent_decode_errors_naming_the_file_without_credentials(
    tmp_path, small_video, s3, http_root
):
    # A zero-byte video used to fail with a nameless "[Errno 22] Invalid argument" (an
    # OSError, so retried as a storage error); every undecodable file must name itself.
    undecodable = {
        "zero.mp4": b"",
        "garbage.mp4": np.random.default_rng(0).integers(0, 256, 50_000, np.uint8).tobytes(),
        "text.mp4": b"hello, I am not a video\n" * 100,
        "truncated.mp4": small_video.read_bytes()[:3000],
        "tiny.mp4": b"\x00",
    }
    fs = s3.filesystem()
    http_folder, http_base = http_root
    for name, data in undecodable.items():
        (tmp_path / name).write_bytes(data)
        (http_folder / name).write_bytes(data)
        fs.pipe(f"{BUCKET}/bad/{name}", data)
        for uri, options in (
            (str(tmp_path / name), None),
            (f"s3://{BUCKET}/bad/{name}", s3.storage_options),
            (f"{http_base}/{name}?X-Amz-Signature=t0ken", None),
        ):
            with pytest.raises(VideoDecodeError) as caught:
                open_video(uri, options)
            assert isinstance(caught.value, InputError), uri
            message = str(caught.value)
            assert name in message, message
            assert "s3cret" not in message and "t0ken" not in message, message
    with pytest.raises(VideoDecodeError, match=r"zero\.mp4: the file is empty \(0 bytes\)"):
        open_video(str(tmp_path / "zero.mp4"))
    with pytest.raises(FileNotFoundError, match=r"http://127\.0\.0\.1:\d+/none\.mp4") as caught:
        open_video(f"{http_base}/none.mp4")
    assert "s3cret" not in str(caught.value)


def test_frame_folder_with_a_gap_in_its_numbering_is_refused_naming_the_missing_number(
    tmp_path, small_reference
):
    # Renumbering 000, 001, 003 as frames 0, 1, 2 would put a prompt for frame 3 on frame 4.
    folder = tmp_path / "gap"
    folder.mkdir()
    for number in (0, 1, 3, 4, 6):
        Image.fromarray(small_reference[number]).save(folder / f"frame_{number:03d}.jpg")
    with pytest.raises(VideoDecodeError, match=r"gap: frame number 2 is missing") as caught:
        open_video(str(folder))
    assert "'frame_001.jpg' is followed by 'frame_003.jpg'" in str(caught.value)
    # Numbers may start anywhere: frame 0 of the video is the first file.
    from_one = tmp_path / "from_one"
    from_one.mkdir()
    for number in (1, 2, 3):
        Image.fromarray(small_reference[number]).save(from_one / f"{number:04d}.png")
    with open_video(str(from_one)) as reader:
        assert len(reader) == 3
        assert np.array_equal(reader[0], small_reference[1])
