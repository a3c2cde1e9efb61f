"""The LIM-Net dock widget: clicks in, labels out, the network on a worker thread.

One job runs at a time (``Annotator`` jobs on a ``napari.qt.threading`` worker); a new click cancels
the running round and replaces any waiting click, so a burst of clicks ends in the state of the last
one without a queue of stale work. Layers are touched only here, in the slots of the worker's
signals, and the labels layer is refreshed at most every ``REFRESH_MS``.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import QTimer

from ._annotator import Annotator, SliceWrite
from ._controls import KEYS, Controls
from ._prompts import PromptInput, make_prompt_layer

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)
REFRESH_MS = 40


class JobFailed:
    """What a job returns instead of raising: the worker then ends normally and the widget reports."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


def _guarded(job):
    try:
        return (yield from job)
    except Exception as exc:  # reported as a notification by the widget, which stays usable
        return JobFailed(exc)


class LimNetWidget(Controls):
    """Interactive 3D segmentation of the chosen image with LIM-Net."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        from ..engine import session  # noqa: F401  imported now, not on the worker at the first click
        from ..engine.device import available_devices

        self.viewer = napari_viewer
        self.image = None
        self.labels = None
        self.prompts: PromptInput | None = None
        self.annotator: Annotator | None = None
        self.worker = None
        self._running: tuple | None = None
        self._pending: list[tuple] = []
        self._device = "auto"
        # the checkboxes' state, copied here because worker threads must not read widgets
        self._fusion, self._compact = self.fusion_check.isChecked(), self.compact_check.isChecked()
        self._weights = None
        self._weights_lock = threading.Lock()
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(REFRESH_MS)
        self._refresh_timer.timeout.connect(self._refresh_labels)

        found = available_devices()
        self.device_combo.addItems(["auto", "cpu", *(["cuda"] if "cuda" in found else [])])
        self.device_found.setText(self._describe_devices(found))
        self.device_combo.currentTextChanged.connect(self._set_device)
        self.image_combo.currentTextChanged.connect(self._select_image)
        self.object_spin.valueChanged.connect(lambda _: self._show_prompts())
        self.negative_check.toggled.connect(self._set_negative)
        self.overwrite_check.toggled.connect(self._set_overwrite)
        self.fusion_check.toggled.connect(self._set_fusion)
        self.compact_check.toggled.connect(self._set_compact)
        self.undo_button.clicked.connect(self.undo_round)
        self.reset_button.clicked.connect(self.reset_object)
        self.clear_button.clicked.connect(self.clear_prompts)
        self.commit_button.clicked.connect(self.commit_object)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._update_image_choices)
        self._bind_keys(self.viewer)
        self._update_image_choices()

    # ---- public actions (buttons and keys) ---------------------------------------------------------
    @property
    def label(self) -> int:
        return self.object_spin.value()

    def is_busy(self) -> bool:
        """A job is running or waiting (tests and scripts wait for this to turn False)."""
        return self.worker is not None or bool(self._pending)

    def toggle_negative(self) -> None:
        self.negative_check.setChecked(not self.negative_check.isChecked())

    def undo_round(self) -> None:
        """Undo the last round; a round still running is simply cancelled (it has not happened yet)."""
        if self._cancel_clicks():
            self._set_status("Round cancelled")
            return
        self._submit(("undo", self.label))

    def reset_object(self) -> None:
        self._cancel_clicks()
        self._submit(("reset", self.label))

    def clear_prompts(self) -> None:
        if self.annotator is not None and self.label in self.annotator.objects:
            obj = self.annotator.objects[self.label]
            obj.hidden_clicks = len(obj.clicks())
        self._show_prompts()

    def commit_object(self) -> None:
        """Keep the current object and move to an unused label value (frees the object's network state)."""
        if self.annotator is None:
            return
        self._submit(("commit", self.label))
        used = max([int(self.labels.data.max()), self.label, *self.annotator.objects])
        self.object_spin.setValue(min(used + 1, self.object_spin.maximum()))

    # ---- layers --------------------------------------------------------------------------------------
    def _update_image_choices(self, event=None) -> None:
        from napari.layers import Image

        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image) and layer.ndim == 3
                 and not layer.rgb]
        current = self.image_combo.currentText()
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        self.image_combo.blockSignals(False)
        if current in names:
            self.image_combo.setCurrentText(current)
        elif names:
            self._select_image(names[0])
        if self.image is not None and self.image not in self.viewer.layers:
            self._detach()

    def _select_image(self, name: str) -> None:
        if not name or (self.image is not None and self.image.name == name):
            return
        self._detach()
        self.image = self.viewer.layers[name]
        volume = np.asarray(self.image.data)
        self.labels = self._labels_layer(self.image, volume.shape)
        self.labels.events.paint.connect(self._on_paint)
        self.labels.events.data.connect(self._on_labels_replaced)
        points = make_prompt_layer(self.viewer, self.image, f"{name} prompts")
        self.prompts = PromptInput(self.viewer, points, self._on_click, self._set_status)
        self.prompts.set_negative_mode(self.negative_check.isChecked())
        self._bind_keys(points)
        self.annotator = Annotator(volume, self.image.scale, self._make_session)
        self.annotator.overwrite = self.overwrite_check.isChecked()
        self.viewer.layers.selection.active = points

    def _labels_layer(self, image, shape):
        """Reuse this image's labels layer if there is one, else create it overlaying the image exactly."""
        name = f"{image.name} labels"
        if name in self.viewer.layers and self.viewer.layers[name].data.shape == shape:
            return self.viewer.layers[name]
        return self.viewer.add_labels(
            np.zeros(shape, dtype=np.uint16), name=name, scale=image.scale, translate=image.translate,
            affine=image.affine.affine_matrix, metadata=dict(image.metadata), opacity=0.5)

    def _detach(self) -> None:
        """Leave the current image: stop work and forget its objects (its layers stay in the viewer)."""
        self._pending.clear()
        self._cancel_running()
        if self.prompts is not None:
            self.prompts.disconnect()
        if self.labels is not None:
            self.labels.events.paint.disconnect(self._on_paint)
            self.labels.events.data.disconnect(self._on_labels_replaced)
        self.image = self.labels = self.prompts = self.annotator = None

    def _on_paint(self, event) -> None:
        indices = [np.concatenate([np.asarray(atom[0][d]).ravel() for atom in event.value]) for d in range(3)]
        if indices[0].size and self.annotator is not None:
            self.annotator.mark_painted([slice(int(i.min()), int(i.max()) + 1) for i in indices])

    def _on_labels_replaced(self, event=None) -> None:
        if self.annotator is not None:
            self.annotator.mark_painted([slice(0, n) for n in self.labels.data.shape])

    def _refresh_labels(self) -> None:
        if self.labels is not None:
            self.labels.refresh()

    # ---- clicks and jobs -----------------------------------------------------------------------------
    def _on_click(self, point: np.ndarray, positive: bool) -> None:
        data = self.image.world_to_data(self.prompts.layer.data_to_world(point))
        voxel = tuple(int(np.floor(c + 0.5)) for c in data)
        if not all(0 <= v < n for v, n in zip(voxel, self.image.data.shape)):
            self._set_status("Click outside the image: ignored")
            return
        self._cancel_clicks()
        self._submit(("click", self.label, voxel, positive, self._slicing_axis()))

    def _slicing_axis(self) -> int:
        """The image axis normal to the displayed plane (the Session's ``axis``)."""
        order = self.viewer.dims.order
        return int(order[-3]) - (len(order) - 3)

    def _cancel_clicks(self) -> bool:
        """Drop waiting clicks and cancel a running one; True if there was any."""
        had = any(r[0] == "click" for r in self._pending)
        self._pending = [r for r in self._pending if r[0] != "click"]
        if self._running is not None and self._running[0] == "click":
            self._cancel_running()
            had = True
        return had

    def _cancel_running(self) -> None:
        """Stop the worker at its next slice: the round's generator is abandoned before the Session
        commits it, so an abandoned round changes nothing."""
        if self.worker is not None:
            self.worker.quit()

    def _submit(self, request: tuple) -> None:
        if self.annotator is None:
            self._set_status("Choose an image first")
            return
        self._pending.append(request)
        if self.worker is None:
            self._start_next()

    def _start_next(self) -> None:
        from napari.qt.threading import create_worker

        if not self._pending or self.annotator is None:
            return
        request = self._pending.pop(0)
        kind, label = request[:2]
        ann = self.annotator
        ann.labels = self.labels.data
        obj = ann.object(label)
        edits = ann.take_edits(obj, self.labels.data)
        repair = [o for o in ann.objects.values() if o.needs_sync]
        if kind == "click":
            job = ann.click(obj, request[2], request[3], request[4], edits, repair)
        elif kind == "undo":
            job = ann.undo(obj, edits, repair)
        elif kind == "reset":
            job = ann.reset(obj, edits, repair)
        elif kind == "commit":
            job = ann.commit(obj, edits, repair)
        else:
            job = ann.repair(repair)
        self._running = request
        self.progress.setValue(0)
        self.worker = create_worker(_guarded, job, _start_thread=False)
        self.worker.yielded.connect(self._on_write)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_error)
        self.worker.aborted.connect(self._on_aborted)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def _make_session(self, volume, spacing, axis, initial_mask):
        """Called on the worker thread: a Session on the chosen device, sharing one loaded network."""
        from ..engine.device import gui_threads
        from ..engine.runner import REACH
        from ..engine.session import Session
        from ..model import load_model

        with self._weights_lock:
            if self._weights is None:
                self._weights = load_model()
        return Session(volume, spacing, axis, self._device, weights=self._weights, initial_mask=initial_mask,
                       fusion=self._fusion, reach=REACH if self._compact else None, threads=gui_threads())

    # ---- worker slots (GUI thread) -----------------------------------------------------------------
    def _on_write(self, write: SliceWrite) -> None:
        if self.annotator is None or write.label not in self.annotator.objects:
            return
        self.annotator.apply(write, self.labels.data)
        self.progress.setRange(0, write.total)
        self.progress.setValue(write.done)
        if self._shows(write) and not self._refresh_timer.isActive():
            self._refresh_timer.start()

    def _shows(self, write: SliceWrite) -> bool:
        """Whether the written slice is on screen: off-screen slices need no redraw (napari reads the
        array afresh when the user moves to them), and redraws are what costs GUI time."""
        axis = self._slicing_axis()
        if self.viewer.dims.ndisplay == 3 or write.axis != axis:
            return True
        shown = self.labels.world_to_data(self.viewer.dims.point)[axis]
        return int(np.floor(shown + 0.5)) == write.k

    def _on_returned(self, result) -> None:
        if isinstance(result, JobFailed):
            self._report(result.exc)
            self._mark_stale()
        elif self._running and self._running[0] == "click" and result is not None:
            obj = self.annotator.objects[self._running[1]]
            self.progress.setValue(self.progress.maximum())  # a round need not walk every slice
            self._set_status(f"Round {obj.session.rounds}: clicked slice {result.first_mask_s:.2f} s, "
                             f"{result.slices_propagated} slices in {result.total_s:.2f} s "
                             f"on {obj.session.device.type} · weights {obj.session.weights.describe()}")
        elif self._running and self._running[0] == "undo" and result is False:
            self._set_status("Nothing to undo")

    def _on_error(self, exc: Exception) -> None:
        self._report(exc)
        self._mark_stale()

    def _on_aborted(self) -> None:
        self._mark_stale()

    def _on_finished(self) -> None:
        self.worker = None
        self._running = None
        if self._refresh_timer.isActive():
            self._refresh_timer.stop()
            self._refresh_labels()
        if self._pending:
            self._start_next()
            return
        if self.annotator is not None and any(o.needs_sync for o in self.annotator.objects.values()):
            self._submit(("repair", self.label))
            return
        self._show_prompts()

    def _mark_stale(self) -> None:
        """A job stopped after streaming slices: the layer may show work that never happened."""
        if self._running is not None and self._running[0] != "repair" and self.annotator is not None:
            obj = self.annotator.objects.get(self._running[1])
            if obj is not None:
                obj.needs_sync = True

    def _report(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error, show_warning

        log.error("LIM-Net job failed", exc_info=exc)
        if isinstance(exc, ValueError):
            show_warning(f"LIM-Net: {exc}")
        elif "out of memory" in str(exc).lower():
            show_error("LIM-Net: the GPU ran out of memory. Choose the CPU device and start a new object.")
        else:
            show_error(f"LIM-Net failed: {type(exc).__name__}: {exc}")
        self._set_status(f"Error: {exc}")

    # ---- small helpers ------------------------------------------------------------------------------
    def _show_prompts(self) -> None:
        if self.prompts is None or self.worker is not None:
            return
        obj = self.annotator.objects.get(self.label)
        self.prompts.show(obj.clicks()[obj.hidden_clicks:] if obj is not None else [])

    def _set_negative(self, negative: bool) -> None:
        if self.prompts is not None:
            self.prompts.set_negative_mode(negative)

    def _set_overwrite(self, overwrite: bool) -> None:
        if self.annotator is not None:
            self.annotator.overwrite = overwrite

    def _set_fusion(self, fusion: bool) -> None:
        self._fusion = fusion
        mode = "fused: each slice from the nearest clicked slice" if fusion else "newest round wins"
        self._set_status(f"Rounds {mode}: for objects started from now on")

    def _set_compact(self, compact: bool) -> None:
        self._compact = compact
        mode = "stops near the object's size" if compact else "runs until the network finds no object"
        self._set_status(f"Propagation {mode}: for objects started from now on")

    def _set_device(self, device: str) -> None:
        self._device = device
        self._set_status(f"Device {device}: used by objects started from now on")

    def _set_status(self, text: str) -> None:
        self.status.setText(text)
        self.viewer.status = text

    @staticmethod
    def _describe_devices(found: list[str]) -> str:
        if "cuda" not in found:
            return "found: CPU only"
        import torch

        return f"found: CUDA ({torch.cuda.get_device_name(0)}) and CPU"

    def _bind_keys(self, target) -> None:
        for key, (action, _) in KEYS.items():
            target.bind_key(key, lambda _target, action=action: getattr(self, action)(), overwrite=True)
