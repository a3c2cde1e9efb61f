"""The widget's work queue: requests become jobs (generators) that run one at a time on a napari
worker thread; what they yield and return arrives in the owner's callbacks on the GUI thread.

A job that raises does not end the worker with an error: it returns ``JobFailed``, so the owner
reports it and stays usable. Cancelling quits the worker at its next yield; a job abandoned there
changes nothing in the engine (a Session commits a round only when its generator is exhausted).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator

log = logging.getLogger(__name__)


class JobFailed:
    """What a job returns instead of raising."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


def _guarded(job: Generator):
    try:
        return (yield from job)
    except Exception as exc:  # reported by the owner, which stays usable
        return JobFailed(exc)


class JobQueue:
    """Requests are tuples whose first item is their kind; ``make_job(request)`` turns one into a
    generator when its turn comes (on the GUI thread), or raises ValueError to refuse it."""

    def __init__(self, make_job: Callable, *, on_start: Callable, on_write: Callable, on_result: Callable,
                 on_stopped: Callable, on_idle: Callable) -> None:
        self.make_job = make_job
        self.on_start, self.on_write, self.on_result = on_start, on_write, on_result
        self.on_stopped, self.on_idle = on_stopped, on_idle  # (request) after a failure or cancel; ()
        self.worker = None
        self.running: tuple | None = None
        self.pending: list[tuple] = []

    def busy(self) -> bool:
        return self.worker is not None or bool(self.pending)

    def submit(self, request: tuple) -> None:
        self.pending.append(request)
        if self.worker is None:
            self._start_next()

    def cancel(self, *kinds: str) -> bool:
        """Drop waiting requests of these kinds (none named: all) and cancel a running one; True if there
        was any."""
        def chosen(request: tuple) -> bool:
            return not kinds or request[0] in kinds

        had = any(map(chosen, self.pending))
        self.pending = [r for r in self.pending if not chosen(r)]
        if self.running is not None and chosen(self.running):
            self.worker.quit()
            had = True
        return had

    def _start_next(self) -> None:
        from napari.qt.threading import create_worker

        while self.pending:
            request = self.pending.pop(0)
            try:
                job = self.make_job(request)
            except ValueError as exc:  # a bad request: nothing started
                self.on_result(request, JobFailed(exc))
                continue
            self.running = request
            self.on_start(request)
            self.worker = create_worker(_guarded, job, _start_thread=False)
            self.worker.yielded.connect(self.on_write)
            self.worker.returned.connect(self._returned)
            self.worker.errored.connect(lambda exc: self._stopped(JobFailed(exc)))
            self.worker.aborted.connect(lambda: self._stopped(None))
            self.worker.finished.connect(self._finished)
            self.worker.start()
            return

    def _returned(self, result) -> None:
        self.on_result(self.running, result)
        if isinstance(result, JobFailed):
            self.on_stopped(self.running)

    def _stopped(self, failure: JobFailed | None) -> None:
        if failure is not None:
            self.on_result(self.running, failure)
        self.on_stopped(self.running)

    def _finished(self) -> None:
        self.worker = None
        self.running = None
        self._start_next()
        if self.worker is None:
            self.on_idle()


def report_failure(exc: Exception) -> str:
    """Tell the user why a job failed (a notification; the traceback goes to the log); returns a
    status line."""
    from napari.utils.notifications import show_error, show_warning

    log.error("LIM-Net job failed", exc_info=exc)
    if isinstance(exc, ValueError):
        show_warning(f"LIM-Net: {exc}")
    elif "out of memory" in str(exc).lower():
        show_error("LIM-Net: the GPU ran out of memory. Choose the CPU device and start a new object.")
    else:
        show_error(f"LIM-Net failed: {type(exc).__name__}: {exc}")
    return f"Error: {exc}"
