"""What the widget tells the user when a job ends: the status line, and what deserves a notification."""

from __future__ import annotations

from ._jobs import JobFailed, report_failure


def job_report(kind: str, label: int, result, annotation) -> tuple[str, str | None, str | None]:
    """(status line, warning to notify or None, information to notify or None) for a finished job."""
    if isinstance(result, JobFailed):
        return report_failure(result.exc), None, None
    if kind in ("click", "box"):
        t, where = result.last_timing, "clicked slice" if kind == "click" else "box's slice"
        text = (f"Round {result.rounds}: {where} {t.first_mask_s:.2f} s, {t.slices_propagated} slices in "
                f"{t.total_s:.2f} s on {result.device.type} · weights {result.weights.describe()}")
        warning = result.last_warning
        return (f"{text} · {warning}" if warning else text), warning, None
    if kind == "undo":
        rounds = annotation.objects[label].rounds
        return (f"Undone: object {label} has {rounds} round(s) left" if result else "Nothing to undo"), None, None
    if kind == "reset":
        return f"Object {label} reset: its clicks, rounds and voxels are gone", None, None
    if kind == "commit":
        return f"Object {label} kept; now object {result}", None, None
    if kind == "save":
        return f"Saved {result}", None, f"mask saved to {result}"
    return "", None, None
