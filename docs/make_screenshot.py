"""Make docs/screenshot.png: the widget in use on the brain MRI sample, after one box drawn around the
tumour on its largest slice: the box, the mask propagated through the volume and the suspect-slice list.

Runs a real napari window and drives it as a user would: the rectangle is dragged on the ``<image> boxes``
layer with napari's mouse callbacks (tests/napari_mouse.py, as the tests do); the widget's worker computes
the round. Headless, use Xvfb:  ``xvfb-run -a python docs/make_screenshot.py``
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from napari_mouse import napari_drag  # noqa: E402  (the tests' mouse, so the screenshot is drawn as tests draw)

OUT = Path(__file__).with_name("screenshot.png")
WINDOW = (1500, 950)
MARGIN = 3  # voxels between the tumour's outline and the drawn rectangle, as a user would draw it
ZOOM = 1.8  # on the tumour, relative to napari's fit-to-canvas zoom


def settle(app, seconds: float = 0.6) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def main() -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_limnet.ui._controls import TITLE
    from napari_limnet.ui._widget import LimNetWidget

    viewer = napari.Viewer(show=True)
    viewer.window.resize(*WINDOW)
    image, reference = viewer.open_sample("napari-limnet", "brain")
    widget = LimNetWidget(viewer)
    viewer.window.add_dock_widget(widget, name=TITLE)
    app = QApplication.instance()

    # the user draws the rectangle around the tumour where it is largest (the hidden reference stands in
    # for their eyes)
    lesion = np.asarray(reference.data) > 0
    z = int(np.argmax(lesion.sum(axis=(1, 2))))
    rows, cols = np.flatnonzero(lesion[z].any(axis=1)), np.flatnonzero(lesion[z].any(axis=0))
    y0, x0 = max(rows[0] - MARGIN, 0), max(cols[0] - MARGIN, 0)
    y1, x1 = min(rows[-1] + MARGIN, lesion.shape[1] - 1), min(cols[-1] + MARGIN, lesion.shape[2] - 1)
    viewer.layers.selection.active = widget.boxes.layer  # the boxes layer is in rectangle mode
    napari_drag(viewer, widget.boxes.layer, (z, y0, x0), (z, y1, x1))
    while widget.is_busy():
        app.processEvents()
        time.sleep(0.02)
    settle(app)

    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari >= 0.9 / older
    viewer.reset_view()
    camera.center = (0, (y0 + y1) / 2 * image.scale[1], (x0 + x1) / 2 * image.scale[2])
    camera.zoom *= ZOOM
    widget.boxes.layer.selected_data = set()  # the rectangle without its drag handles
    viewer.status = widget.status.text()  # what the widget wrote there, before the mouse events' cursor readout
    settle(app)
    viewer.screenshot(str(OUT), canvas_only=False)
    print(f"wrote {OUT}: slice {z}, box ({y0}, {x0})-({y1}, {x1})")
    print(f"status: {widget.status.text()}")
    print(f"suspects: {widget.suspects_label.text()}")
    viewer.close()


if __name__ == "__main__":
    main()
