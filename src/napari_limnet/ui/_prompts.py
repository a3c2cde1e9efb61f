"""Click prompts as a napari Points layer: left click adds a positive prompt (napari's own add mode),
right click or the negative toggle a negative one. Each added point becomes one call of ``on_click``;
the layer is then redrawn from the engine's committed clicks, so it always shows what the result is
based on. ``LayerInput`` is what this and the box prompts (``_boxes``) share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import napari

POSITIVE_COLOR = "lime"
NEGATIVE_COLOR = "magenta"
DRAG_PIXELS = 5  # a right-button press that moves further than this is a pan, not a click


def overlaying(image: napari.layers.Image) -> dict:
    """Layer keywords that place a new layer exactly over ``image`` (same scale, translate and affine)."""
    return {"scale": image.scale, "translate": image.translate, "affine": image.affine.affine_matrix}


def make_prompt_layer(viewer: napari.Viewer, image: napari.layers.Image, name: str) -> napari.layers.Points:
    """A Points layer in add mode that overlays ``image`` exactly."""
    layer = viewer.add_points(
        np.empty((0, image.ndim)), ndim=image.ndim, name=name, **overlaying(image),
        features=pd.DataFrame({"positive": pd.Series([], dtype=bool)}), feature_defaults={"positive": True},
        face_color="positive", face_color_cycle={True: POSITIVE_COLOR, False: NEGATIVE_COLOR},
        border_color="white", size=max(4.0, 3 * float(min(image.scale[-2:]))), out_of_slice_display=False,
    )
    layer.mode = "add"
    return layer


class LayerInput:
    """Prompts the user adds to ``layer`` (a subclass handles them in ``_on_data``); the widget's own
    redraws of the layer are not prompts. Prompts added in the 3D view are removed again and reported
    through ``on_ignored``."""

    noun = "prompts"

    def __init__(self, viewer: napari.Viewer, layer, on_ignored: Callable[[str], None]) -> None:
        self.viewer = viewer
        self.layer = layer
        self._on_ignored = on_ignored
        self._redrawing = False
        layer.events.data.connect(self._on_data)

    def disconnect(self) -> None:
        self.layer.events.data.disconnect(self._on_data)

    def _on_data(self, event) -> None:
        raise NotImplementedError

    def _added(self, event) -> list[int]:
        """The indices of what the user just added in 2D (none for redraws and other changes)."""
        from napari.layers.base._base_constants import ActionType

        if self._redrawing or event.action != ActionType.ADDED:
            return []
        indices = sorted(i % len(self.layer.data) for i in event.data_indices)
        if self.viewer.dims.ndisplay == 3:
            self._ignore(indices, f"{self.noun} are ignored in the 3D view; switch to 2D to segment")
            return []
        return indices

    def _ignore(self, indices, why: str) -> None:
        self._remove(indices)
        self._on_ignored(why)

    def _remove(self, indices) -> None:
        with self._redraw():
            self.layer.selected_data = set(indices)
            self.layer.remove_selected()

    @contextmanager
    def _redraw(self) -> Iterator[None]:
        self._redrawing = True
        try:
            yield
        finally:
            self._redrawing = False


class PromptInput(LayerInput):
    """Turns points added to ``layer`` into clicks: ``on_click(point_zyx, positive)`` in the layer's data
    coordinates."""

    noun = "clicks"

    def __init__(self, viewer: napari.Viewer, layer: napari.layers.Points,
                 on_click: Callable[[np.ndarray, bool], None], on_ignored: Callable[[str], None]) -> None:
        super().__init__(viewer, layer, on_ignored)
        self.negative_mode = False
        self._on_click = on_click
        self._right_button = False
        layer.mouse_drag_callbacks.insert(0, self._on_press)

    def disconnect(self) -> None:
        super().disconnect()
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
        with self._redraw():
            self.layer.data = points
            self.layer.features = pd.DataFrame({"positive": pd.Series(positive, dtype=bool)})
            self.layer.refresh_colors()

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
        indices = self._added(event)
        if not indices:
            return
        positive = not (self.negative_mode or self._right_button)
        self._right_button = False
        if not positive:
            self.layer.features.loc[indices, "positive"] = False
            self.layer.refresh_colors()
        for i in indices:
            self._on_click(np.array(self.layer.data[i], dtype=float), positive)
