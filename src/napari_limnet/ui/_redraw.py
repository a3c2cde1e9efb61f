"""Pacing the widget's redraws during a round.

Slices arrive from the worker tens of times a second, and each redraw costs GUI time: a labels refresh
re-slices the displayed plane, and every move of a ``QProgressBar`` repaints the window at once (the
whole OpenGL window with napari's canvas: 10-40 ms with software rendering). So the layer is redrawn
at most every ``REFRESH_MS`` and only when a slice crossing the displayed plane was written, and the
bar moves at most every ``PROGRESS_S``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QProgressBar

REFRESH_MS = 40
PROGRESS_S = 0.2


class Redraws:
    """``wrote`` after each applied slice; ``flush`` when the job ends. ``refresh(final)`` redraws the
    labels layer (``final``: at the end of a job, thumbnail included)."""

    def __init__(self, progress: QProgressBar, refresh: Callable[[bool], None]) -> None:
        self.progress = progress
        self.refresh = refresh
        self.timer = QTimer(progress)
        self.timer.setSingleShot(True)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self._redraw)
        self._progress: tuple[int, int] | None = None  # (done, total) not yet shown
        self._progress_shown = 0.0  # when the bar last moved (perf_counter)
        self._layer = False  # a slice crossing the displayed plane was written since the last redraw

    def wrote(self, done: int, total: int, on_screen: bool) -> None:
        self._progress = (done, total)
        self._layer = self._layer or on_screen
        if not self.timer.isActive():
            self.timer.start()

    def flush(self) -> None:
        self.timer.stop()
        self._progress = None
        if self._layer:
            self.refresh(True)
        self._layer = False

    def _redraw(self) -> None:
        if self._progress is not None and time.perf_counter() - self._progress_shown >= PROGRESS_S:
            self.progress.setFormat("propagation %v/%m slices")
            self.progress.setRange(0, self._progress[1])
            self.progress.setValue(self._progress[0])
            self._progress, self._progress_shown = None, time.perf_counter()
        elif self._progress is not None:
            self.timer.start()  # the bar moves a little later
        if self._layer:
            self.refresh(False)
        self._layer = False
