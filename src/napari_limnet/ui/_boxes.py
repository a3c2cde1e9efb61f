"""Box prompts as a napari Shapes layer: each rectangle drawn with napari's rectangle tool becomes one
call of ``on_box``; other shapes are removed again with a word why. The layer is then redrawn from
the engine's boxes still in effect, so that, like the prompt points, it shows what the result is
based on."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ._prompts import LayerInput, overlaying

if TYPE_CHECKING:
    import napari

    from ..engine.annotation import Box

BOX_COLOR = "yellow"


def make_box_layer(viewer: napari.Viewer, image: napari.layers.Image, name: str) -> napari.layers.Shapes:
    """A Shapes layer over ``image`` in rectangle mode: selecting it is all it takes to draw a box."""
    layer = viewer.add_shapes(ndim=image.ndim, name=name, **overlaying(image), edge_color=BOX_COLOR,
                              face_color="transparent", edge_width=1)
    layer.mode = "add_rectangle"
    return layer


def box_vertices(box: Box) -> np.ndarray:
    """A box's rectangle: its four corners (voxel centres) in volume coordinates."""
    z, y0, x0, y1, x1 = box.box
    vertices = np.full((4, 3), float(z))
    vertices[:, [a for a in range(3) if a != box.axis]] = [(y0, x0), (y0, x1), (y1, x1), (y1, x0)]
    return vertices


class BoxInput(LayerInput):
    """Turns rectangles drawn in ``layer`` into ``on_box(vertices)`` (4 x 3 corners in the layer's data
    coordinates), which returns None, or why the box is refused: it is then removed and reported."""

    noun = "boxes"

    def __init__(self, viewer: napari.Viewer, layer: napari.layers.Shapes,
                 on_box: Callable[[np.ndarray], str | None], on_ignored: Callable[[str], None]) -> None:
        super().__init__(viewer, layer, on_ignored)
        self._on_box = on_box

    def show(self, boxes: list[Box]) -> None:
        """Redraw the layer from ``boxes``."""
        shapes = [box_vertices(b) for b in boxes]
        if len(shapes) == len(self.layer.data) and all(map(np.array_equal, shapes, self.layer.data)):
            return  # already shown: a redraw costs the GUI time
        with self._redraw():
            self.layer.selected_data = set(range(len(self.layer.data)))
            self.layer.remove_selected()
            if shapes:
                self.layer.add_rectangles(shapes)

    def _on_data(self, event) -> None:
        for i in self._added(event):
            if self.layer.shape_type[i] != "rectangle":
                self._ignore([i], "only rectangles are box prompts: draw them with the rectangle tool")
            elif (why := self._on_box(np.array(self.layer.data[i], dtype=float))) is not None:
                self._ignore([i], why)

    def _remove(self, indices) -> None:
        """On the next turn of the event loop: napari is still finishing the shape, and removing it now
        would run its drawing code again on a shape it is done with."""
        from qtpy.QtCore import QTimer

        shapes = [(self.layer.data[i], self.layer.shape_type[i]) for i in indices]

        def remove() -> None:  # each shape where it is now: the newest that looks the same
            now = list(zip(self.layer.data, self.layer.shape_type))
            found = {max((i for i, (data, kind) in enumerate(now) if kind == shape_type
                          and np.array_equal(data, vertices)), default=None) for vertices, shape_type in shapes}
            super(BoxInput, self)._remove(found - {None})

        QTimer.singleShot(0, remove)
