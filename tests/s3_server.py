"""A real S3 endpoint for tests: moto's ThreadedMotoServer on 127.0.0.1 (a free port), nothing else.

Usage in a test module (the tests folder is on sys.path when pytest runs)::

    from s3_server import S3Server, start_s3

    @pytest.fixture(scope="module")
    def s3():
        with start_s3(buckets=["my-bucket"]) as server:
            yield server

    def test_x(s3):
        fs = s3.filesystem()                      # fresh s3fs client, no listing cache shared
        read_manifest("s3://my-bucket/m.jsonl", storage_options=s3.storage_options)

``storage_options`` is a plain dict that s3fs (and therefore fsspec URLs,
``pipeline.storage.url_to_fs`` and Ray tasks) accepts as-is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import boto3
import s3fs
from moto.server import ThreadedMotoServer

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


class S3Server:
    """A running moto S3 server; stop() (or leaving the ``with`` block) shuts it down."""

    def __init__(self, server: ThreadedMotoServer, endpoint_url: str):
        self._server = server
        self.endpoint_url = endpoint_url
        self._running = True

    @property
    def storage_options(self) -> dict:
        """s3fs keyword arguments for this server (a new dict each time, safe to modify)."""
        return {"key": ACCESS_KEY, "secret": SECRET_KEY, "endpoint_url": self.endpoint_url}

    def filesystem(self) -> s3fs.S3FileSystem:
        """A fresh s3fs client that shares no instance or listing cache with other clients."""
        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)

    def client(self):
        """A boto3 S3 client for this server (for low-level checks such as multipart uploads)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def create_bucket(self, name: str) -> str:
        """Create a bucket (3-63 characters) and return its ``s3://`` URL."""
        if not 3 <= len(name) <= 63:
            raise ValueError(f"bucket names need 3-63 characters, got {name!r}")
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    def stop(self) -> None:
        if self._running:
            self._server.stop()
            self._running = False

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_s3(buckets: Iterable[str] = ()) -> S3Server:
    """Start moto's S3 server on a free loopback port and create ``buckets``."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3 = S3Server(server, f"http://{host}:{port}")
    try:
        for bucket in buckets:
            s3.create_bucket(bucket)
    except BaseException:
        s3.stop()
        raise
    return s3
