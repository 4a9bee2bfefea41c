"""``jobs fetch-checkpoint``: download over HTTP (a real server on 127.0.0.1), verify SHA-256, write locally or to S3.

The server serves a small fake checkpoint under the official layout
(``<base>/092824/sam2.1_hiera_tiny.pt``); tests point the command at it with
--base-url or $SAM2_CHECKPOINT_BASE_URL. Where a test needs the fake file to
"be" the official one, it replaces the table entry's SHA-256 (monkeypatch);
otherwise the real table is used, so the fake file is (rightly) refused.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from http_mirror import serve_folder

from jobs.__main__ import main
from sam2_core import hub as oc

REPO = Path(__file__).resolve().parents[1]
NAME = "sam2.1_hiera_tiny"
# ~0.6 MB of non-repeating bytes: several 1 MiB-read calls' worth of network chunks.
FAKE = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(20_000))
FAKE_SHA = hashlib.sha256(FAKE).hexdigest()


class _Handler(http.server.SimpleHTTPRequestHandler):
    gets: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        type(self).gets.append(self.path)
        if self.path.endswith("/truncated.pt"):
            # Promise more bytes than are sent, then close: a broken-off transfer.
            self.send_response(200)
            self.send_header("Content-Length", str(len(FAKE) + 1000))
            self.end_headers()
            self.wfile.write(FAKE[:1000])
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, list of GET paths seen) for an HTTP server on 127.0.0.1 serving the fake file."""
    root = tmp_path_factory.mktemp("mirror")
    (root / "092824").mkdir()
    (root / "092824" / f"{NAME}.pt").write_bytes(FAKE)
    handler = type("Handler", (_Handler,), {"gets": []})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler.gets
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def fake_is_official(monkeypatch):
    """Make the table's entry for NAME expect the fake file's SHA-256."""
    entry = dataclasses.replace(oc.OFFICIAL_CHECKPOINTS[NAME], sha256=FAKE_SHA, size=len(FAKE))
    monkeypatch.setitem(oc.OFFICIAL_CHECKPOINTS, NAME, entry)
    return entry


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_table_lists_the_eight_official_checkpoints_with_meta_urls_and_configs():
    from sam2_core.config_tree import OFFICIAL_CONFIG_FILES

    names = set(oc.OFFICIAL_CHECKPOINTS)
    assert names == set(OFFICIAL_CONFIG_FILES) and len(names) == 8
    for name, entry in oc.OFFICIAL_CHECKPOINTS.items():
        release = "092824" if name.startswith("sam2.1_") else "072824"
        assert (
            entry.url() == f"https://dl.fbaipublicfiles.com/segment_anything_2/{release}/{name}.pt"
        )
        assert entry.config_file == OFFICIAL_CONFIG_FILES[name]
        assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256), name
    # Every official file has a known checksum here (a None would make the command refuse to claim verification).
    assert all(e.sha256 for e in oc.OFFICIAL_CHECKPOINTS.values())
    assert len({e.sha256 for e in oc.OFFICIAL_CHECKPOINTS.values()}) == 8


def test_download_verifies_writes_and_then_skips_a_verified_copy(
    server, fake_is_official, tmp_path, capsys
):
    base, gets = server
    dest = tmp_path / "ckpts"
    rc = main(["fetch-checkpoint", NAME, "--dest", f"{dest}/", "--base-url", base])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert (dest / f"{NAME}.pt").read_bytes() == FAKE
    assert _leftovers(dest) == [f"{NAME}.pt"]  # no temporary file left behind
    assert f"verified; sha256 {FAKE_SHA}" in out.out
    assert gets[-1] == f"/092824/{NAME}.pt"

    before = len(gets)
    rc = main(["fetch-checkpoint", NAME, "--dest", str(dest / f"{NAME}.pt"), "--base-url", base])
    out = capsys.readouterr()
    assert rc == 0 and len(gets) == before, "a verified copy must not be downloaded again"
    assert "nothing downloaded" in out.err

    rc = main(["fetch-checkpoint", NAME, "--dest", str(dest), "--base-url", base, "--force"])
    assert rc == 0 and len(gets) == before + 1, (
        "--force downloads again (dest given as an existing folder)"
    )


def test_base_url_from_environment_and_corrupt_copy_is_replaced(
    server, fake_is_official, tmp_path, monkeypatch, capsys
):
    base, gets = server
    monkeypatch.setenv("SAM2_CHECKPOINT_BASE_URL", base)
    target = tmp_path / "model.pt"
    target.write_bytes(b"not the checkpoint")
    rc = main(["fetch-checkpoint", NAME, "--dest", str(target)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "does not match" in out.err
    assert target.read_bytes() == FAKE


def test_default_destination_is_the_user_cache(
    server, fake_is_official, tmp_path, monkeypatch, capsys
):
    base, _ = server
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SAM2_LABELER_CACHE", raising=False)
    assert main(["fetch-checkpoint", NAME, "--base-url", base]) == 0
    assert (tmp_path / ".cache" / "sam2-labeler" / f"{NAME}.pt").read_bytes() == FAKE

    # The one cache variable, shared with the labeling workers, moves it.
    monkeypatch.setenv("SAM2_LABELER_CACHE", str(tmp_path / "node-cache"))
    assert main(["fetch-checkpoint", NAME, "--base-url", base]) == 0
    assert (tmp_path / "node-cache" / f"{NAME}.pt").read_bytes() == FAKE


def test_hash_mismatch_is_refused_and_leaves_nothing(server, tmp_path, capsys):
    # The real table: the fake file is not Meta's sam2.1_hiera_tiny.pt.
    base, _ = server
    dest = tmp_path / "ckpts"
    rc = main(["fetch-checkpoint", NAME, "--dest", f"{dest}/", "--base-url", base])
    err = capsys.readouterr().err
    assert rc == 1
    assert "SHA-256 mismatch" in err
    assert oc.OFFICIAL_CHECKPOINTS[NAME].sha256 in err and FAKE_SHA in err
    assert _leftovers(dest) == [], "neither the file nor a temporary file may remain"


def test_sha256_option_overrides_the_table(server, tmp_path, capsys):
    base, _ = server
    target = tmp_path / "x.pt"
    assert (
        main(
            [
                "fetch-checkpoint",
                NAME,
                "--dest",
                str(target),
                "--base-url",
                base,
                "--sha256",
                FAKE_SHA.upper(),
            ]
        )
        == 0
    )
    assert target.read_bytes() == FAKE
    assert (
        main(
            [
                "fetch-checkpoint",
                NAME,
                "--dest",
                str(tmp_path / "y.pt"),
                "--base-url",
                base,
                "--sha256",
                "0" * 64,
            ]
        )
        == 1
    )
    assert not (tmp_path / "y.pt").exists()


def test_unknown_checksum_refuses_to_claim_verification(server, tmp_path, monkeypatch, capsys):
    base, _ = server
    entry = dataclasses.replace(oc.OFFICIAL_CHECKPOINTS[NAME], sha256=None)
    monkeypatch.setitem(oc.OFFICIAL_CHECKPOINTS, NAME, entry)
    target = tmp_path / "c.pt"

    rc = main(["fetch-checkpoint", NAME, "--dest", str(target), "--base-url", base])
    err = capsys.readouterr().err
    assert rc == 1
    assert "not verified: no known checksum" in err and FAKE_SHA in err
    assert not target.exists() and _leftovers(tmp_path) == []

    rc = main(
        ["fetch-checkpoint", NAME, "--dest", str(target), "--base-url", base, "--allow-unverified"]
    )
    out = capsys.readouterr()
    assert rc == 0
    assert target.read_bytes() == FAKE
    assert "not verified: no known checksum" in out.out and "verified;" not in out.out.replace(
        "not verified", ""
    )


def test_unknown_name_lists_valid_names(capsys):
    rc = main(["fetch-checkpoint", "sam3_hiera_huge"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "unknown checkpoint 'sam3_hiera_huge'" in err
    for name in oc.OFFICIAL_CHECKPOINTS:
        assert name in err


def test_unreachable_url_gives_a_clear_message(tmp_path, capsys):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(
        [
            "fetch-checkpoint",
            NAME,
            "--dest",
            str(tmp_path / "a.pt"),
            "--base-url",
            f"http://127.0.0.1:{port}",
            "--timeout",
            "5",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert f"cannot reach http://127.0.0.1:{port}/092824/{NAME}.pt" in err
    assert "--base-url" in err and "SAM2_CHECKPOINT_BASE_URL" in err
    assert _leftovers(tmp_path) == []


def test_missing_file_on_server_reports_http_status(server, tmp_path, capsys):
    base, _ = server
    rc = main(
        [
            "fetch-checkpoint",
            "sam2_hiera_large",
            "--dest",
            str(tmp_path / "l.pt"),
            "--base-url",
            base,
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "HTTP 404" in err and "/072824/sam2_hiera_large.pt" in err
    assert _leftovers(tmp_path) == []


def test_truncated_transfer_is_refused(server, tmp_path, monkeypatch, capsys):
    base, _ = server
    entry = dataclasses.replace(
        oc.OFFICIAL_CHECKPOINTS[NAME], path="092824/truncated.pt", sha256=FAKE_SHA
    )
    monkeypatch.setitem(oc.OFFICIAL_CHECKPOINTS, NAME, entry)
    rc = main(["fetch-checkpoint", NAME, "--dest", str(tmp_path / "t.pt"), "--base-url", base])
    err = capsys.readouterr().err
    assert rc == 1 and ("broke off" in err or "truncated" in err), err
    assert _leftovers(tmp_path) == []


def test_destination_on_s3(server, fake_is_official, capsys):
    from s3_server import start_s3

    base, gets = server
    with start_s3(buckets=["sam2-ckpts"]) as s3:
        options = json.dumps(s3.storage_options)
        args = [
            "fetch-checkpoint",
            NAME,
            "--dest",
            "s3://sam2-ckpts/models/",
            "--base-url",
            base,
            "--storage-options",
            options,
        ]
        rc = main(args)
        out = capsys.readouterr()
        assert rc == 0, out.err
        assert f"-> s3://sam2-ckpts/models/{NAME}.pt" in out.out
        fs = s3.filesystem()
        assert fs.cat(f"sam2-ckpts/models/{NAME}.pt") == FAKE
        assert fs.ls("sam2-ckpts/models") == [f"sam2-ckpts/models/{NAME}.pt"]

        before = len(gets)
        assert main(args) == 0 and len(gets) == before, "the verified copy on S3 is kept"

        # A mismatching file is never uploaded.
        rc = main(
            [
                "fetch-checkpoint",
                NAME,
                "--dest",
                "s3://sam2-ckpts/other/x.pt",
                "--base-url",
                base,
                "--storage-options",
                options,
                "--sha256",
                "1" * 64,
            ]
        )
        assert rc == 1
        assert not s3.filesystem().exists("sam2-ckpts/other/x.pt")


def test_command_is_dispatched_by_python_m_jobs(server, tmp_path):
    base, _ = server
    env = dict(os.environ, SAM2_CHECKPOINT_BASE_URL=base)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs",
            "fetch-checkpoint",
            NAME,
            "--dest",
            str(tmp_path / "s.pt"),
            "--sha256",
            FAKE_SHA,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "s.pt").read_bytes() == FAKE


def test_list_prints_the_table(capsys):
    assert main(["fetch-checkpoint", "--list"]) == 0
    out = capsys.readouterr().out
    for entry in oc.OFFICIAL_CHECKPOINTS.values():
        assert f"{entry.sha256}  {entry.url()}" in out


def test_sam1_checkpoints_are_in_the_fetch_table_and_fetched_like_the_others(tmp_path, capsys):
    """SAM 1's three files are fetched by name, from their own base URL, and verified."""
    from sam2_core.official import SAM1_CHECKPOINTS

    assert main(["fetch-checkpoint", "--list"]) == 0
    out = capsys.readouterr().out
    for entry in SAM1_CHECKPOINTS.values():
        assert entry.url().startswith("https://dl.fbaipublicfiles.com/segment_anything/")
        assert f"{entry.name:24} {entry.sha256}  {entry.url()}" in out
    root = tmp_path / "mirror"
    root.mkdir()
    (root / SAM1_CHECKPOINTS["sam_vit_b"].filename).write_bytes(FAKE)
    with serve_folder(root) as (base, _):
        args = ["fetch-checkpoint", "sam_vit_b", "--dest", str(tmp_path / "b.pth")]
        assert main([*args, "--base-url", base]) == 1  # not Meta's bytes: refused
        assert not (tmp_path / "b.pth").exists()
        assert main([*args, "--base-url", base, "--sha256", FAKE_SHA]) == 0
        assert (tmp_path / "b.pth").read_bytes() == FAKE
