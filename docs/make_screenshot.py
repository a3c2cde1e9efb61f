"""Make docs/screenshot.png: the widget in use on the brain MRI sample, after one click on the tumour.

Runs a real napari window; headless, use Xvfb:  ``xvfb-run -a python docs/make_screenshot.py``
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from scipy import ndimage

OUT = Path(__file__).with_name("screenshot.png")


def main() -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_limnet.ui._widget import LimNetWidget

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    image, reference = viewer.open_sample("napari-limnet", "brain")
    widget = LimNetWidget(viewer)
    viewer.window.add_dock_widget(widget, name="LIM-Net")
    app = QApplication.instance()

    lesion = np.asarray(reference.data) > 0  # the user clicks where they see the tumour
    z = int(np.argmax(lesion.sum(axis=(1, 2))))
    dist = ndimage.distance_transform_edt(lesion[z])
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    viewer.dims.set_point(0, z * image.scale[0])
    widget.prompts.layer.add([z, y, x])
    while widget.is_busy():
        app.processEvents()
        time.sleep(0.02)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari >= 0.9 / older
    camera.center = (0, y * image.scale[1], x * image.scale[2])
    camera.zoom *= 1.6
    for _ in range(30):
        app.processEvents()
        time.sleep(0.02)
    viewer.screenshot(str(OUT), canvas_only=False)
    print(f"wrote {OUT}: {widget.status.text()}")
    viewer.close()


if __name__ == "__main__":
    main()
