"""Where a training run's files go: a local folder, or any fsspec URL mirrored from one.

The trainer writes plain files (``model.pt``, ``config.json``, ``train_state.pt``, logs,
``checkpoints/``, ``best/``) into a local folder. When ``jobs train --output`` is a URL
(``s3://bucket/runs/x``), that folder is a private staging folder and :meth:`TrainOutput.push`
copies what changed to the URL after every checkpoint and at the end, ``train_state.pt``
last so a resume never sees a state newer than its weights; ``--resume`` first pulls the
run's files back (:meth:`TrainOutput.pull`).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.storage import is_local, join, safe_uri, url_to_fs
from sam2_core.training import STATE_FILE


@dataclass
class TrainOutput:
    """A run's local folder and, for a URL output, the URL it is mirrored to."""

    local: Path
    remote: str | None = None
    storage_options: dict | None = None
    _pushed: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)

    @classmethod
    def open(
        cls, uri: str, storage_options: dict | None = None, resume: bool = False
    ) -> TrainOutput:
        """A local path is used as is; a URL gets a fresh staging folder (filled from the URL
        when resuming)."""
        fs, path = url_to_fs(uri, storage_options)
        if is_local(fs):
            return cls(Path(path))
        output = cls(Path(tempfile.mkdtemp(prefix="train-output-")), uri, storage_options)
        if resume:
            output.pull()
        return output

    def pull(self) -> int:
        """Copy the run's files from the URL into the local folder; how many were copied."""
        if self.remote is None:
            return 0
        fs, root = url_to_fs(self.remote, self.storage_options)
        if not fs.exists(root):
            raise FileNotFoundError(f"--resume: nothing at {safe_uri(self.remote)}")
        count = 0
        for path in fs.find(root):
            relative = path[len(root) :].lstrip("/")
            target = self.local / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(path, str(target))
            self._pushed[relative] = _signature(target)
            count += 1
        return count

    def push(self) -> list[str]:
        """Copy files that are new or changed since the last push to the URL (the training
        state last); the relative names copied."""
        if self.remote is None:
            return []
        fs, root = url_to_fs(self.remote, self.storage_options)
        changed = [
            relative
            for relative, signature in self._local_files().items()
            if self._pushed.get(relative) != signature
        ]
        changed.sort(key=lambda name: (name == STATE_FILE, name))
        for relative in changed:
            source = self.local / relative
            signature = _signature(source)
            target = join(root, relative)
            parent = target.rpartition("/")[0]
            if parent:
                fs.makedirs(parent, exist_ok=True)
            fs.put_file(str(source), target)
            self._pushed[relative] = signature
        return changed

    def close(self) -> None:
        """Push what is left and, for a URL output, remove the staging folder."""
        self.push()
        if self.remote is not None:
            shutil.rmtree(self.local, ignore_errors=True)

    def describe(self, name: str) -> str:
        """Where file ``name`` of the run ends up, for messages (credentials never shown)."""
        if self.remote is None:
            return str(self.local / name)
        return safe_uri(join(self.remote, name))

    def _local_files(self) -> dict[str, tuple[int, int]]:
        if not self.local.is_dir():
            return {}
        return {
            path.relative_to(self.local).as_posix(): _signature(path)
            for path in self.local.rglob("*")
            if path.is_file() and not path.name.endswith(".tmp")
        }


def _signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns
