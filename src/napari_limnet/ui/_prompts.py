"""Click prompts as a napari Points layer: left click adds a positive prompt (napari's own add mode),
right click or the negative toggle a negative one. Each added point becomes one call of ``on_click``;
the layer is then redrawn from the engine's committed clicks, so it always shows what the result is
based on."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import napari

POSITIVE_COLOR = "lime"
NEGATIVE_COLOR = "magenta"
DRAG_PIXELS = 5  # a right-button press that moves further than this is a pan, not a click


def make_prompt_layer(viewer: napari.Viewer, image: napari.layers.Image, name: str) -> napari.layers.Points:
    """A Points layer in add mode that overlays ``image`` exactly (same scale, translate and affine)."""
    layer = viewer.add_points(
        np.empty((0, image.ndim)), ndim=image.ndim, name=name,
        scale=image.scale, translate=image.translate, affine=image.affine.affine_matrix,
        features=pd.DataFrame({"positive": pd.Series([], dtype=bool)}), feature_defaults={"positive": True},
        face_color="positive", face_color_cycle={True: POSITIVE_COLOR, False: NEGATIVE_COLOR},
        border_color="white", size=max(4.0, 3 * float(min(image.scale[-2:]))), out_of_slice_display=False,
    )
    layer.mode = "add"
    return layer


class PromptInput:
    """Turns points added to ``layer`` into clicks: ``on_click(point_zyx, positive)`` in the layer's data
    coordinates. Clicks in the 3D view are removed again and reported through ``on_ignored``."""

    def __init__(self, viewer: napari.Viewer, layer: napari.layers.Points,
                 on_click: Callable[[np.ndarray, bool], None], on_ignored: Callable[[str], None]) -> None:
        self.viewer = viewer
        self.layer = layer
        self.negative_mode = False
        self._on_click = on_click
        self._on_ignored = on_ignored
        self._right_button = False
        self._redrawing = False
        layer.events.data.connect(self._on_data)
        layer.mouse_drag_callbacks.insert(0, self._on_press)

    def disconnect(self) -> None:
        self.layer.events.data.disconnect(self._on_data)
        if self._on_press in self.layer.mouse_drag_callbacks:
            self.layer.mouse_drag_callbacks.remove(self._on_press)

    def set_negative_mode(self, negative: bool) -> None:
        self.negative_mode = bool(negative)
        self.layer.feature_defaults = {"positive": not negative}  # the setter updates the colour swatch too
        self.layer.events.current_face_color()

    def show(self, clicks) -> None:
        """Redraw the layer from ``clicks`` (objects with ``.point`` and ``.positive``)."""
        points = np.array([c.point for c in clicks], dtype=float).reshape(-1, 3)
        positive = [c.positive for c in clicks]
        if np.array_equal(self.layer.data, points) and self.layer.features["positive"].tolist() == positive:
            return  # already shown (after a round the user's own point is): a redraw costs the GUI ~40 ms
        self._redrawing = True
        try:
            self.layer.data = points
            self.layer.features = pd.DataFrame({"positive": pd.Series(positive, dtype=bool)})
            self.layer.refresh_colors()
        finally:
            self._redrawing = False

    def _on_press(self, layer, event):
        """Remember whether napari's add-mode point will come from the right button (a negative click)."""
        self._right_button = event.button == 2
        start = np.asarray(event.pos)
        yield
        while event.type == "mouse_move":
            yield
        if np.linalg.norm(np.asarray(event.pos) - start) >= DRAG_PIXELS:
            self._right_button = False  # a drag adds no point

    def _on_data(self, event) -> None:
        from napari.layers.base._base_constants import ActionType

        if self._redrawing or event.action != ActionType.ADDED:
            return
        positive = not (self.negative_mode or self._right_button)
        self._right_button = False
        indices = sorted(i % len(self.layer.data) for i in event.data_indices)
        if self.viewer.dims.ndisplay == 3:
            self._remove(indices)
            self._on_ignored("LIM-Net: clicks are ignored in the 3D view; switch to 2D to segment")
            return
        if not positive:
            self.layer.features.loc[indices, "positive"] = False
            self.layer.refresh_colors()
        for i in indices:
            self._on_click(np.array(self.layer.data[i], dtype=float), positive)

    def _remove(self, indices) -> None:
        self._redrawing = True
        try:
            self.layer.selected_data = set(indices)
            self.layer.remove_selected()
        finally:
            self._redrawing = False
