"""The run's progress bar: units done, frames tracked and frames per second.

Fed only by the small records workers return, so it costs the run
nothing; disabled (no output at all) when the caller asks for quiet runs.
"""

from __future__ import annotations

import sys
import time

from pipeline.records import UnitResult


class Progress:
    """A tqdm bar over units with frames and frames/s in its postfix."""

    def __init__(self, total_units: int, enabled: bool = True, skipped: int = 0):
        self.frames = 0
        self.units = 0
        self.failed = 0
        self.retries = 0
        self.started = time.perf_counter()
        self._bar = None
        if enabled and total_units:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total_units,
                unit="unit",
                desc="labeling",
                file=sys.stderr,
                dynamic_ncols=True,
                mininterval=0.5,
            )
            if skipped:
                self._bar.write(f"skipping {skipped} unit(s) already committed")

    @property
    def frames_per_s(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.frames / elapsed if elapsed > 0 else 0.0

    def unit_done(self, result: UnitResult) -> None:
        self.units += 1
        self.frames += result.frames
        self._advance()

    def unit_failed(self) -> None:
        self.failed += 1
        self._advance()

    def retried(self) -> None:
        self.retries += 1
        if self._bar is not None:
            self._set_postfix()

    def note(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message)

    def _advance(self) -> None:
        if self._bar is not None:
            self._set_postfix()
            self._bar.update(1)

    def _set_postfix(self) -> None:
        self._bar.set_postfix(
            frames=self.frames,
            fps=f"{self.frames_per_s:.1f}",
            failed=self.failed,
            retries=self.retries,
            refresh=False,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
