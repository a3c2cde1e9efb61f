"""The dock widget's controls and their help texts (layout only; behaviour lives in ``_widget``)."""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

# key -> (action name, help); bound on the viewer and on the prompt layer
KEYS = {
    "t": ("toggle_negative", "Switch between positive and negative clicks (for trackpads)"),
    "u": ("undo_round", "Undo the last round (click or hand edit) of this object"),
    "Shift-R": ("reset_object", "Forget this object: its clicks, rounds and voxels"),
    "Shift-C": ("clear_prompts", "Hide the prompt points (the result stays)"),
    "n": ("commit_object", "Keep this object as it is and start the next one"),
    ".": ("next_suspect", "Show the next slice whose mask the network rates worst (worst first)"),
}
TITLE = "LIM-Net interactive segmentation"  # the dock's title (napari.yaml): the widget is wide enough for it
KEY_OF = {action: key for key, (action, _) in KEYS.items()}
MAX_LABEL = 65535  # the labels layer is uint16


class Controls(QWidget):
    """All widgets of the LIM-Net dock, laid out; nothing is connected here."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        form = QFormLayout()
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The image to segment; prompt, box and labels layers are created for it")
        form.addRow("Image", self.image_combo)
        self.object_spin = QSpinBox()
        self.object_spin.setRange(1, MAX_LABEL)
        self.object_spin.setToolTip("Label value of the object being segmented; each object keeps its "
                                    "own clicks and rounds")
        form.addRow("Object", self.object_spin)
        self.device_combo = QComboBox()
        self.device_combo.setToolTip("Where the network runs. A change applies to objects started afterwards")
        self.device_found = QLabel()
        self._fill_devices()
        form.addRow("Device", self.device_combo)
        form.addRow("", self.device_found)

        self.negative_check = QCheckBox(f"Negative clicks ({KEY_OF['toggle_negative'].upper()})")
        self.negative_check.setToolTip("Left clicks add negative prompts (right click always does). On a slice with "
                                       "no positive click, a negative click trims the mask there; a click in the "
                                       "middle of the mask that would remove more than 30 % clears the slice and "
                                       "ends the object there")
        self.fusion_check = _option("Fuse rounds (MRF)", "On (default): where rounds overlap, each slice keeps the "
                                    "result propagated from the nearest slice you clicked, so a correction far away "
                                    "does not replace it. Off: the newest round wins everywhere it reached. Applies "
                                    "to objects started from now on")
        self.reach_check = _option("Limit reach", "On (default): propagation goes about half the object's width "
                                   "past the last slice you marked it on, and further only while the network stays "
                                   "confident of the object, so that a tube or a long organ is followed and a "
                                   "result seldom runs past the object's end. Off: no limit, until the network "
                                   "finds no object. Applies to objects started from now on")
        self.overwrite_check = QCheckBox("Overwrite other objects")
        self.overwrite_check.setToolTip("Let this object take voxels that belong to other objects")

        self.undo_button = self._button("Undo round", "undo_round")
        self.reset_button = self._button("Reset object", "reset_object")
        self.clear_button = self._button("Clear prompts", "clear_prompts")
        self.commit_button = self._button("Commit ▸ next object", "commit_object")
        self.next_button = self._button("Next suspect slice", "next_suspect")
        self.save_button = QPushButton("Save mask...")
        self.save_button.setToolTip("Write the labels as NIfTI (with the scan's geometry) or TIFF")
        buttons = QGridLayout()
        for i, b in enumerate((self.undo_button, self.reset_button, self.clear_button, self.commit_button,
                               self.next_button, self.save_button)):
            buttons.addWidget(b, i // 2, i % 2)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.suspects_label = QLabel()
        self.suspects_label.setToolTip("After each round: the slices whose mask the quality head predicts worst, "
                                       "with its predicted Dice. Check them first")
        self.status = QLabel("Left click: object · right click: not object · or draw a rectangle in the boxes layer")
        self.status.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.negative_check)
        layout.addWidget(self.fusion_check)
        layout.addWidget(self.reach_check)
        layout.addWidget(self.overwrite_check)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.suspects_label)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.setMinimumWidth(self.fontMetrics().horizontalAdvance(TITLE) + 120)  # + the title bar's buttons

    def _fill_devices(self) -> None:
        from ..engine.device import available_devices

        found = available_devices()
        self.device_combo.addItems(["auto", "cpu", *(["cuda"] if "cuda" in found else [])])
        if "cuda" not in found:
            self.device_found.setText("found: CPU only")
        else:
            import torch

            self.device_found.setText(f"found: CUDA ({torch.cuda.get_device_name(0)}) and CPU")

    @staticmethod
    def _button(text: str, action: str) -> QPushButton:
        key = KEY_OF[action]
        button = QPushButton(text)
        button.setToolTip(f"{KEYS[key][1]} [{key}]")
        return button


def _option(text: str, tooltip: str) -> QCheckBox:
    """A session option's checkbox, on by default."""
    box = QCheckBox(text)
    box.setChecked(True)
    box.setToolTip(tooltip)
    return box
