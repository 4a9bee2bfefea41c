"""Settings shared by the export formats."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.exports.reader import DEFAULT_BATCH_ROWS

# Frame images are not part of a run's output; formats that reference them name them like this.
DEFAULT_FRAME_NAME = "{video_id}/{frame_index:05d}.jpg"
CATEGORY_NAME = "object"  # the class of an object without a category


def class_names(categories: list[str]) -> list[str]:
    """The classes an export declares: CATEGORY_NAME first (objects without a category), then
    the run's categories (``RunReader.categories``) in order."""
    return [CATEGORY_NAME, *(c for c in categories if c != CATEGORY_NAME)]


def class_name(category: str | None) -> str:
    """An object's class in an export: its category, else CATEGORY_NAME."""
    return CATEGORY_NAME if category is None else category


@dataclass(frozen=True)
class ExportOptions:
    """frame_name: file name (or URL, for Label Studio) of a frame image, a ``str.format``
    template with ``video_id`` and ``frame_index``; batch_size: rows per pyarrow batch."""

    frame_name: str = DEFAULT_FRAME_NAME
    batch_size: int = DEFAULT_BATCH_ROWS

    def frame_file(self, video_id: str, frame_index: int) -> str:
        return self.frame_name.format(video_id=video_id, frame_index=frame_index)
