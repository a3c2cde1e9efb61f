"""Where a prompt lands: napari's world and layer coordinates to the image's voxels, the slicing axis,
and whether a written slice is on screen. Layers and viewer in, numbers out; no widgets."""

from __future__ import annotations

import numpy as np


def voxels_of(image, layer, points: np.ndarray) -> np.ndarray | None:
    """The image voxels (n x 3 ints) nearest to points in ``layer``'s data coordinates; None if any
    lies outside the image."""
    data = np.array([image.world_to_data(layer.data_to_world(p)) for p in np.reshape(points, (-1, 3))])
    voxels = np.floor(data + 0.5).astype(int)
    return voxels if ((voxels >= 0) & (voxels < image.data.shape)).all() else None


def slicing_axis(viewer) -> int:
    """The image axis normal to the displayed plane (the Session's ``axis``)."""
    order = viewer.dims.order
    return int(order[-3]) - (len(order) - 3)


def box_of(voxels: np.ndarray | None, axis: int) -> tuple[int, ...] | str:
    """A drawn rectangle's corner voxels -> the Session's box (slice, then the corners in the other two
    axes), or why it is refused."""
    if voxels is None:
        return "the box reaches outside the image: it is ignored"
    in_plane = voxels[:, [a for a in range(3) if a != axis]]
    low, high = in_plane.min(axis=0), in_plane.max(axis=0)
    if (high - low < 1).any():
        return "the box is a line or a point: drag a rectangle around the object"
    return (int(voxels[0, axis]), *low.tolist(), *high.tolist())


def shows(viewer, labels, index: tuple) -> bool:
    """Whether a written slice (its index in the volume) crosses the displayed plane: off-screen slices
    need no redraw (napari reads the array afresh when the user moves to them), and redraws cost GUI
    time."""
    axis = slicing_axis(viewer)
    plane = index[axis]
    if viewer.dims.ndisplay == 3 or isinstance(plane, slice):
        return True
    return int(np.floor(labels.world_to_data(viewer.dims.point)[axis] + 0.5)) == plane
