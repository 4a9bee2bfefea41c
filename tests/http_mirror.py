"""A folder served over HTTP on 127.0.0.1, recording the paths asked for: a local mirror of
Meta's checkpoint layout for tests (no network beyond loopback)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def serve_folder(root: Path) -> Iterator[tuple[str, list[str]]]:
    """(base URL, the GET paths seen so far) while `root` is served."""
    gets: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            gets.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", gets
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
