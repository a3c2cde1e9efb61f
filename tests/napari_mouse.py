"""Mouse input for napari without a physical mouse: the events napari's own mouse callbacks receive,
so that tests (and docs/make_screenshot.py) click and draw as a user does."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class MouseEvent:
    """What napari's mouse callbacks read from a vispy event."""

    type: str
    position: tuple
    button: int = 1
    is_dragging: bool = False
    modifiers: list = field(default_factory=list)
    pos: np.ndarray = field(default_factory=lambda: np.zeros(2))
    view_direction: list | None = None
    up_direction: list | None = None
    dims_displayed: list = field(default_factory=lambda: [1, 2])


def napari_drag(viewer, layer, start, end, *, button: int = 1, axis: int = 0) -> None:
    """Show the plane through voxel ``start`` normal to ``axis`` and drag from ``start`` to ``end`` on it
    (a click where they are the same), as the mouse does in ``layer``."""
    from napari.utils._proxies import ReadOnlyWrapper
    from napari.utils.interactions import mouse_move_callbacks, mouse_press_callbacks, mouse_release_callbacks

    viewer.dims.order = (axis, *[a for a in range(3) if a != axis])
    begin, finish = (layer.data_to_world(np.asarray(v, dtype=float)) for v in (start, end))
    viewer.dims.set_point(axis, begin[axis])
    steps = [("mouse_press", begin, mouse_press_callbacks, False)]
    if not np.array_equal(begin, finish):
        steps.append(("mouse_move", finish, mouse_move_callbacks, True))
    steps.append(("mouse_release", finish, mouse_release_callbacks, False))
    for kind, world, callbacks, dragging in steps:
        event = MouseEvent(kind, tuple(world), button=button, is_dragging=dragging,
                           dims_displayed=[a for a in range(3) if a != axis])
        callbacks(layer, ReadOnlyWrapper(event, exceptions=("handled",)))
