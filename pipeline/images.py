"""Still images for labeling: read one (fsspec + Pillow) and list the images of a folder.

An image is decoded to H x W x 3 uint8 RGB exactly as its pixels are stored: the EXIF
orientation tag is not applied (as for frame folders, and as COCO-style tools count rows and
columns), so prompts are pixels of the stored image. JPEG and PNG files are images
(:data:`IMAGE_SUFFIXES`, the frame-folder suffixes); a folder is listed recursively.
"""

from __future__ import annotations

import io
import posixpath

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import InputError
from pipeline.storage import has_protocol, safe_uri, url_to_fs
from pipeline.video import FRAME_SUFFIXES

IMAGE_SUFFIXES = FRAME_SUFFIXES


def is_image_file(uri: str) -> bool:
    """True when ``uri`` names a JPEG or PNG file by its suffix (else it is taken for a folder)."""
    return posixpath.splitext(uri.rstrip("/"))[1].lower() in IMAGE_SUFFIXES


def read_image(uri: str, storage_options: dict | None = None) -> np.ndarray:
    """The image at ``uri`` as H x W x 3 uint8 RGB (EXIF orientation not applied).

    A missing file or bytes Pillow cannot decode raise :class:`InputError` naming the file
    (permanent: another attempt would fail the same way); other storage errors propagate as
    they are, so the retry rule treats a flaky store as transient.
    """
    fs, path = url_to_fs(uri, storage_options)
    try:
        with fs.open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise InputError(f"image not found: {safe_uri(uri)}") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise InputError(f"cannot decode image {safe_uri(uri)}: {error}") from None


def list_images(folder: str, storage_options: dict | None = None) -> list[str]:
    """The JPEG/PNG files under ``folder`` (recursively), sorted by path, as URIs in the
    folder's own form (same protocol, or plain paths). FileNotFoundError when it is missing."""
    fs, path = url_to_fs(folder, storage_options)
    if not fs.isdir(path):
        raise FileNotFoundError(f"no folder of images at {safe_uri(folder)}")
    found = sorted(name for name in fs.find(path) if is_image_file(name))
    if not has_protocol(folder):
        return found
    protocol = folder.split("://", 1)[0]
    return [f"{protocol}://{name.split('://', 1)[-1]}" for name in found]
