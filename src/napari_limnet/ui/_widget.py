"""The LIM-Net dock widget: napari layers and events in, ``Annotation`` jobs on a worker thread.

One job runs at a time (``_jobs.JobQueue``); a new click or box cancels the running round and replaces
any waiting one, so a burst of clicks ends in the state of the last one without a queue of stale work.
Layers are touched only here, in the queue's callbacks on the GUI thread, and redrawn at the pace
``_redraw`` sets.
The network loads on a worker when the widget opens; a job says what it does as soon as it starts.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QMessageBox

from ..engine.annotation import Annotation, SliceWrite
from ..intensity import is_hounsfield
from ._boxes import BoxInput, make_box_layer
from ._controls import KEYS, Controls
from ._geometry import box_of, shows, slicing_axis, voxels_of
from ._jobs import JobFailed, JobQueue, report_failure
from ._prompts import PromptInput, make_prompt_layer, overlaying
from ._redraw import Redraws
from ._report import job_report
from ._writer import save_job

if TYPE_CHECKING:
    import napari

ROUNDS = ("click", "box")  # the requests that are rounds: a new one replaces them
DOING = {"click": "Segmenting", "box": "Segmenting", "undo": "Undoing", "reset": "Resetting", "commit": "Committing",
         "repair": "Restoring", "save": "Saving"}


class LimNetWidget(Controls):
    """Interactive 3D segmentation of the chosen image with LIM-Net."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        from napari.qt.threading import create_worker

        self.viewer = napari_viewer
        self.image = self.labels = None
        self.prompts: PromptInput | None = None
        self.boxes: BoxInput | None = None
        self.annotation: Annotation | None = None
        self.jobs = JobQueue(self._make_job, on_start=self._on_start, on_write=self._on_write,
                             on_result=self._on_result, on_stopped=self._on_stopped, on_idle=self._on_idle)
        self._hidden: dict[int, tuple[int, int]] = {}  # (clicks, boxes) of each object hidden by "clear prompts"
        self._suspect = 0  # the next of the object's suspect slices to show
        self._options: dict = {}
        self._weights = None
        self._weights_lock = threading.Lock()
        self._loader = create_worker(self._load_weights)  # a first click then finds the network ready
        self._loader.returned.connect(lambda _: self._set_status("Network ready: " + self._weights[1].describe()))
        self._loader.errored.connect(lambda exc: self._set_status(report_failure(exc)))
        self._loader.start()
        self.redraws = Redraws(self.progress, self._refresh_labels)

        for option in (self.device_combo.currentTextChanged, self.fusion_check.toggled, self.reach_check.toggled):
            option.connect(self._options_changed)
        self.image_combo.currentTextChanged.connect(self._select_image)
        self.object_spin.valueChanged.connect(self._object_changed)
        self.negative_check.toggled.connect(self._set_negative)
        self.overwrite_check.toggled.connect(self._set_overwrite)
        self.undo_button.clicked.connect(self.undo_round)
        self.reset_button.clicked.connect(self.reset_object)
        self.clear_button.clicked.connect(self.clear_prompts)
        self.commit_button.clicked.connect(self.commit_object)
        self.next_button.clicked.connect(self.next_suspect)
        self.save_button.clicked.connect(lambda: self.save_mask())
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._update_image_choices)
        self._bind_keys(self.viewer)
        self._update_image_choices()
        self._options_changed()
        self._show_idle()

    # ---- public actions (buttons and keys) ---------------------------------------------------------
    @property
    def label(self) -> int:
        return self.object_spin.value()

    @property
    def network_ready(self) -> bool:
        """The weights are loaded (they start loading when the widget opens)."""
        return self._weights is not None

    def is_busy(self) -> bool:
        """A job is running or waiting (tests and scripts wait for this to turn False)."""
        return self.jobs.busy()

    def toggle_negative(self) -> None:
        self.negative_check.setChecked(not self.negative_check.isChecked())

    def undo_round(self) -> None:
        """Undo the last round; a round still running is simply cancelled (it has not happened yet)."""
        if self.jobs.cancel(*ROUNDS):
            self._set_status("Round cancelled")
            return
        self._submit(("undo", self.label))

    def reset_object(self) -> None:
        """Forget the object, once the user confirms (nothing brings it back)."""
        if self.annotation is not None and self.label in self.annotation.objects:
            answer = QMessageBox.question(
                self, "Reset object", f"Forget object {self.label}: its clicks, rounds and voxels? "
                "This cannot be undone.", QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
            if answer != QMessageBox.Yes:
                self._set_status(f"Reset of object {self.label} cancelled: nothing changed")
                return
        self.jobs.cancel(*ROUNDS)
        self._submit(("reset", self.label))

    def clear_prompts(self) -> None:
        if self.annotation is not None and self.label in self.annotation.objects:
            obj = self.annotation.objects[self.label]
            self._hidden[self.label] = (len(obj.clicks()), len(obj.boxes()))
        self._show_prompts()

    def commit_object(self) -> None:
        """Keep the current object and move to an unused label value (frees the object's network state)."""
        self._submit(("commit", self.label))

    def save_mask(self, path: str | None = None) -> None:
        """Write the labels layer (NIfTI with the scan's geometry, or TIFF; atomic) after waiting work."""
        if self.labels is None:
            self._set_status("Choose an image first")
            return
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save mask", f"{self.image.name}_mask.nii.gz",
                                                  "NIfTI (*.nii.gz *.nii);;TIFF (*.tif *.tiff)")
            if not path:
                return
        self._submit(("save", 0, str(path), {"metadata": self.labels.metadata, "scale": self.labels.scale}))

    def next_suspect(self) -> None:
        """Show the next of the slices whose mask the quality head rates worst, worst first."""
        obj = self.annotation.objects.get(self.label) if self.annotation is not None else None
        if obj is None or not obj.suspects or self.is_busy():
            self._set_status("No suspect slices yet: they are listed after a round")
            return
        axis, k, score = obj.suspects[self._suspect % len(obj.suspects)]
        self._suspect += 1
        if slicing_axis(self.viewer) != axis:
            self.viewer.dims.order = (axis, *[a for a in range(3) if a != axis])
        point = list(self.labels.world_to_data(self.viewer.dims.point))
        point[axis] = k
        self.viewer.dims.set_point(axis, self.labels.data_to_world(point)[axis])
        self._set_status(f"Slice {k} (axis {axis}): predicted Dice {score:.2f}")

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
        self.labels.selected_label = self.label
        self.labels.events.paint.connect(self._on_paint)
        self.labels.events.data.connect(self._on_labels_replaced)
        self.labels.events.selected_label.connect(self._on_selected_label)
        points = make_prompt_layer(self.viewer, self.image, f"{name} prompts")
        self.prompts = PromptInput(self.viewer, points, self._on_click, self._refuse)
        self.prompts.set_negative_mode(self.negative_check.isChecked())
        self.boxes = BoxInput(self.viewer, make_box_layer(self.viewer, self.image, f"{name} boxes"), self._on_box,
                              self._refuse)
        for layer in (points, self.boxes.layer):
            self._bind_keys(layer)
        self.annotation = Annotation(volume, self.image.scale, self._make_session, self.labels.data,
                                     overwrite=self.overwrite_check.isChecked())
        self.viewer.layers.selection.active = points
        if is_hounsfield(volume):
            from napari.utils.notifications import show_info

            # measured on the head-and-neck CT val structures: Dice 0.47 after a box, 0.37 after a click
            show_info(f"LIM-Net: {name} is a CT. For a small structure, draw a box in '{name} boxes' first: "
                      "it gives a better start than a click")

    def _labels_layer(self, image, shape):
        """Reuse this image's labels layer if there is one, else create it overlaying the image exactly."""
        name = f"{image.name} labels"
        if name in self.viewer.layers and self.viewer.layers[name].data.shape == shape:
            return self.viewer.layers[name]
        return self.viewer.add_labels(
            np.zeros(shape, dtype=np.uint16), name=name, **overlaying(image), metadata=dict(image.metadata),
            opacity=0.5)

    def _detach(self) -> None:
        """Leave the current image: stop work and forget its objects (its layers stay in the viewer)."""
        self.jobs.cancel()
        for prompts in (self.prompts, self.boxes):
            if prompts is not None:
                prompts.disconnect()
        if self.labels is not None:
            self.labels.events.paint.disconnect(self._on_paint)
            self.labels.events.data.disconnect(self._on_labels_replaced)
            self.labels.events.selected_label.disconnect(self._on_selected_label)
        self.image = self.labels = self.prompts = self.boxes = self.annotation = None
        self._hidden.clear()

    def _on_paint(self, event) -> None:
        indices = [np.concatenate([np.asarray(atom[0][d]).ravel() for atom in event.value]) for d in range(3)]
        if indices[0].size and self.annotation is not None:
            self.annotation.mark_painted([slice(int(i.min()), int(i.max()) + 1) for i in indices])

    def _on_labels_replaced(self, event=None) -> None:
        if self.annotation is not None:
            self.annotation.labels = self.labels.data
            self.annotation.mark_painted([slice(0, n) for n in self.labels.data.shape])

    def _on_selected_label(self, event=None) -> None:
        """The brush's label picks the object (label 0, the eraser's, leaves the object as it is)."""
        if self.labels.selected_label > 0:
            self.object_spin.setValue(self.labels.selected_label)

    def _object_changed(self, label: int) -> None:
        if self.labels is not None:
            self.labels.selected_label = label  # hand corrections paint the object being segmented
        self._show_prompts()
        self._show_idle()

    # ---- clicks, boxes and jobs ----------------------------------------------------------------------
    def _on_click(self, point: np.ndarray, positive: bool) -> None:
        voxels = voxels_of(self.image, self.prompts.layer, point)
        if voxels is None:
            self._set_status("Click outside the image: ignored")
            return
        self._submit_round(("click", self.label, tuple(voxels[0].tolist()), positive, slicing_axis(self.viewer)))

    def _on_box(self, vertices: np.ndarray) -> str | None:
        """A rectangle drawn on the displayed slice: a box round along the slicing axis, as a click is.
        Returns why it is refused, if it is."""
        axis = slicing_axis(self.viewer)
        box = box_of(voxels_of(self.image, self.boxes.layer, vertices), axis)
        if isinstance(box, str):
            return box
        self._submit_round(("box", self.label, box, axis))
        QTimer.singleShot(0, self._back_to_clicks)  # after napari has finished the rectangle
        return None

    def _back_to_clicks(self) -> None:
        """A box is one prompt: the next is a correcting click, so the prompts layer takes the mouse again."""
        if self.viewer.layers.selection.active is self.boxes.layer:
            self.viewer.layers.selection.active = self.prompts.layer

    def _submit_round(self, request: tuple) -> None:
        self.jobs.cancel(*ROUNDS)
        self._submit(request)

    def _submit(self, request: tuple) -> None:
        if self.annotation is None:
            self._set_status("Choose an image first")
            return
        self.jobs.submit(request)

    def _make_job(self, request: tuple):
        kind, label, *args = request
        if kind == "save":
            return save_job(args[0], self.labels.data, args[1])
        return self.annotation.repair() if kind == "repair" else getattr(self.annotation, kind)(label, *args)

    def _on_start(self, request: tuple) -> None:
        """Say at once that work has started (Qt's animated busy bar would repaint the GL window at every
        frame, so the bar shows the word instead)."""
        waiting = request[0] in ROUNDS and not self.network_ready
        doing = "Loading the network" if waiting else DOING[request[0]]
        self.progress.setFormat(f"{doing}...")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self._set_status(f"{doing}...")

    def _load_weights(self):
        """Runs on a worker thread: the network, loaded once and shared by every Session."""
        from ..model import load_model

        with self._weights_lock:
            if self._weights is None:
                self._weights = load_model()
        return self._weights

    def _make_session(self, volume, spacing, axis, initial_mask):
        """Called on the worker thread: a Session on the chosen device, sharing one loaded network."""
        from ..engine.device import gui_threads
        from ..engine.session import Session

        return Session(volume, spacing, axis, weights=self._load_weights(), initial_mask=initial_mask,
                       threads=gui_threads(), **self._options)

    # ---- worker slots (GUI thread) -----------------------------------------------------------------
    def _on_write(self, write: SliceWrite) -> None:
        if self.annotation is not None and write.label in self.annotation.objects:
            self.annotation.apply(write)
            self.redraws.wrote(write.done, write.total, shows(self.viewer, self.labels, write.index))

    def _refresh_labels(self, final: bool) -> None:
        if self.labels is not None:
            self.labels.refresh(thumbnail=final, extent=False, highlight=final)

    def _on_result(self, request: tuple, result) -> None:
        from napari.utils.notifications import show_info, show_warning

        kind, label = request[:2]
        status, warning, info = job_report(kind, label, result, self.annotation)
        if warning:
            show_warning(f"LIM-Net: {warning}")
        if info:
            show_info(f"LIM-Net: {info}")
        self._set_status(status)
        if kind == "reset" and not isinstance(result, JobFailed):
            self._hidden.pop(label, None)
        elif kind == "commit" and not isinstance(result, JobFailed):
            self.object_spin.setValue(min(result, self.object_spin.maximum()))

    def _on_stopped(self, request: tuple) -> None:
        """A job failed or was cancelled after streaming slices: the layer may show work that never
        happened (the next job repairs it)."""
        if request[0] not in ("repair", "save") and self.annotation is not None:
            self.annotation.abandoned(request[1])

    def _on_idle(self) -> None:
        self.redraws.flush()
        if self.annotation is not None and any(o.needs_sync for o in self.annotation.objects.values()):
            self._submit(("repair", self.label))
            return
        self._show_prompts()
        self._show_idle()

    # ---- small helpers ------------------------------------------------------------------------------
    def _show_idle(self) -> None:
        """Between jobs the progress bar describes the current object, not the last job."""
        obj = self.annotation.objects.get(self.label) if self.annotation is not None else None
        rounds = obj.rounds if obj is not None else 0
        self.progress.setFormat(f"Object {self.label}: " + (f"{rounds} round(s)" if rounds else "no rounds"))
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if rounds else 0)
        self._suspect = 0
        suspects = obj.suspects if obj is not None else []
        self.suspects_label.setText("Check slices: " + " · ".join(f"{k} ({score:.2f})" for _, k, score in suspects)
                                    if suspects else "")

    def _show_prompts(self) -> None:
        if self.prompts is None or self.jobs.busy():
            return
        obj = self.annotation.objects.get(self.label)
        clicks, boxes = self._hidden.get(self.label, (0, 0))
        self.prompts.show(obj.clicks()[clicks:] if obj is not None else [])
        self.boxes.show(obj.boxes()[boxes:] if obj is not None else [])

    def _refuse(self, why: str) -> None:
        """A prompt the widget does not take: a notification, and the status line."""
        from napari.utils.notifications import show_warning

        show_warning(f"LIM-Net: {why}")
        self._set_status(f"{why[0].upper()}{why[1:]}")

    def _set_negative(self, negative: bool) -> None:
        if self.prompts is not None:
            self.prompts.set_negative_mode(negative)

    def _set_overwrite(self, overwrite: bool) -> None:
        if self.annotation is not None:
            self.annotation.overwrite = overwrite

    def _options_changed(self, *changed) -> None:
        """Copied here for the worker thread, which must not read widgets; used by new objects only."""
        from ..engine.session import REACH

        fusion, limited = self.fusion_check.isChecked(), self.reach_check.isChecked()
        self._options = {"fusion": fusion, "reach": REACH if limited else math.inf,
                         "device": self.device_combo.currentText()}
        if changed:  # by the user, not the widget's start
            self._set_status(f"For objects started from now on: rounds {'fused' if fusion else 'newest wins'}, "
                             f"reach {'limited' if limited else 'unlimited'}, device {self._options['device']}")

    def _set_status(self, text: str) -> None:
        self.status.setText(text)
        self.viewer.status = text

    def _bind_keys(self, target) -> None:
        for key, (action, _) in KEYS.items():
            target.bind_key(key, lambda _target, action=action: getattr(self, action)(), overwrite=True)
