"""The dock widget driven in a real viewer with the real network: clicks as napari delivers them
(mouse events on the prompt layer in add mode), the worker thread, and the labels layer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from napari_mouse import napari_drag
from qtpy.QtWidgets import QMessageBox
from scipy import ndimage
from synthetic import ellipsoid_volume

from napari_limnet.clicks import dice, first_click
from napari_limnet.engine.annotation import Box
from napari_limnet.io import read_volume
from napari_limnet.ui._controls import TITLE
from napari_limnet.ui._sample_data import brain_mri
from napari_limnet.ui._widget import LimNetWidget

# 3D Dice after one click on the brain sample's lesion: the only quality figure these tests depend on.
# Floors for the shipped weights (limnet-v4, measured 0.535 in 3D and 0.828 on the clicked slice;
# v3 0.52 and 0.81, v2 0.50 and 0.80 with this release's session).
DICE_FLOOR = 0.45
SLICE_DICE_FLOOR = 0.7
ROUND_TIMEOUT_MS = 240_000  # generous: a round takes ~1-25 s on a loaded 2-core machine
BRAIN_CROP = (slice(8, 21), slice(60, 180), slice(130, 240))  # all of the lesion, 13 slices: fast


def napari_click(widget: LimNetWidget, voxel, *, button: int = 1, axis: int = 0) -> None:
    """Show the plane through ``voxel`` normal to ``axis`` and click it as a user would."""
    napari_drag(widget.viewer, widget.prompts.layer, voxel, voxel, button=button, axis=axis)


def wait_idle(qtbot, widget: LimNetWidget) -> None:
    qtbot.waitUntil(lambda: not widget.is_busy(), timeout=ROUND_TIMEOUT_MS)


def open_widget(make_napari_viewer, image, scale=(1.0, 1.0, 1.0), metadata=None) -> LimNetWidget:
    viewer = make_napari_viewer()
    viewer.add_image(image, name="scan", scale=scale, metadata=metadata or {})
    widget = LimNetWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return widget


def object_mask(widget: LimNetWidget, label: int) -> np.ndarray:
    return np.asarray(widget.labels.data) == label


def interior_point(mask: np.ndarray) -> tuple[int, int, int]:
    """The simulated first click of the evaluation protocol."""
    return first_click(mask).point


@pytest.fixture
def small(make_napari_viewer):
    image, reference = ellipsoid_volume(shape=(8, 20, 24), radii=(3, 6, 8))
    return open_widget(make_napari_viewer, image), reference


def test_a_ct_gets_the_advice_to_start_small_structures_with_a_box(make_napari_viewer, monkeypatch):
    notices = []
    monkeypatch.setattr("napari.utils.notifications.show_info", notices.append)
    image, _ = ellipsoid_volume(shape=(8, 20, 24), radii=(3, 6, 8))
    open_widget(make_napari_viewer, image)  # not a CT: no advice
    assert not any("box" in n for n in notices)
    ct = np.where(image > image.mean(), 40.0, -1000.0).astype(np.float32)  # soft tissue in air, in HU
    open_widget(make_napari_viewer, ct)
    assert any("is a CT" in n and "'scan boxes'" in n for n in notices)


def test_click_segments_the_lesion_then_negative_click_and_undo(make_napari_viewer, qtbot):
    (image, kwargs, _), (label, _, _) = brain_mri()
    widget = open_widget(make_napari_viewer, image[BRAIN_CROP], kwargs["scale"], kwargs["metadata"])
    reference = label[BRAIN_CROP] > 0
    assert widget.labels.scale == pytest.approx(widget.image.scale)
    assert widget.prompts.layer.scale == pytest.approx(widget.image.scale)
    np.testing.assert_allclose(widget.labels.metadata["affine"], kwargs["metadata"]["affine"])

    click = interior_point(reference)
    napari_click(widget, click)
    wait_idle(qtbot, widget)
    obj = widget.annotation.objects[1]
    first = object_mask(widget, 1)
    np.testing.assert_array_equal(first, obj.session.mask)
    assert dice(first, reference) >= DICE_FLOOR
    z, y, x = (int(round(c)) for c in click)
    assert first[z, y, x]  # the object appears under the click
    assert dice(first[z], reference[z]) >= SLICE_DICE_FLOOR
    assert "Round 1" in widget.status.text()
    assert np.asarray(widget.prompts.layer.features["positive"]).tolist() == [True]
    before_negative = np.array(widget.labels.data, copy=True)

    outside = np.where(first, ndimage.distance_transform_edt(~reference), 0)
    wrong = np.unravel_index(int(np.argmax(outside)), first.shape)  # the result's voxel farthest outside the lesion
    assert outside[wrong] > 0
    napari_click(widget, wrong, button=2)  # right click: negative
    wait_idle(qtbot, widget)
    after = object_mask(widget, 1)
    assert not after[wrong]  # the voxel under the negative click is removed ...
    assert after[wrong[0]].sum() < first[wrong[0]].sum()  # ... and its slice shrinks
    assert np.asarray(widget.prompts.layer.features["positive"]).tolist() == [True, False]

    widget.undo_round()
    wait_idle(qtbot, widget)
    np.testing.assert_array_equal(widget.labels.data, before_negative)
    assert len(widget.prompts.layer.data) == 1


def test_second_object_leaves_the_first_alone(small, qtbot, monkeypatch):
    monkeypatch.setattr(QMessageBox, "question", lambda *args: QMessageBox.Yes)
    widget, reference = small
    napari_click(widget, interior_point(reference))
    wait_idle(qtbot, widget)
    first = object_mask(widget, 1)
    assert first.any()

    widget.commit_object()
    wait_idle(qtbot, widget)
    assert widget.label == 2
    napari_click(widget, (4, 2, 2))  # background corner: object 2 may grow into object 1's area
    wait_idle(qtbot, widget)
    np.testing.assert_array_equal(object_mask(widget, 1), first)
    second = object_mask(widget, 2)
    assert not (second & first).any()
    widget.reset_object()
    wait_idle(qtbot, widget)
    assert not object_mask(widget, 2).any()
    np.testing.assert_array_equal(object_mask(widget, 1), first)


def test_click_in_another_orientation_propagates_along_that_axis(small, qtbot):
    widget, reference = small
    z, y, x = interior_point(reference)
    napari_click(widget, (z, y, x), axis=1)  # coronal plane
    wait_idle(qtbot, widget)
    session = widget.annotation.objects[1].session
    assert session.axis == 1
    assert session.last_timing.slices_propagated > 0
    mask = object_mask(widget, 1)
    np.testing.assert_array_equal(mask, session.mask)
    assert mask.any(axis=(0, 2)).sum() > 1  # more than the clicked coronal plane


def test_burst_of_clicks_ends_in_the_state_of_the_last_click(small, qtbot):
    widget, reference = small
    rng = np.random.default_rng(3)
    points = [tuple(int(v) for v in rng.integers((0, 0, 0), reference.shape)) for _ in range(20)]
    for point in points:
        napari_click(widget, point)
        qtbot.wait(5)
    wait_idle(qtbot, widget)
    obj = widget.annotation.objects[1]
    assert obj.clicks()[-1].point == points[-1]
    assert not obj.needs_sync
    np.testing.assert_array_equal(object_mask(widget, 1), obj.session.mask)
    shown = widget.prompts.layer.data
    assert [tuple(p) for p in shown.astype(int)] == [c.point for c in obj.clicks()]


def test_hand_edits_become_part_of_the_object(small, qtbot):
    widget, reference = small
    z, y, x = interior_point(reference)
    napari_click(widget, (z, y, x))
    wait_idle(qtbot, widget)
    edited = 0 if z != 0 else 1
    rows, cols = np.nonzero(np.ones((4, 4), dtype=bool))
    with widget.labels.block_history():  # a brush stroke, as napari paints it
        widget.labels.data_setitem((np.full(rows.size, edited), rows + 2, cols + 2), 1)
        widget.labels.data_setitem((np.full(rows.size, edited), rows + 14, cols + 18), 0)
    napari_click(widget, (z, y, x + 1))
    wait_idle(qtbot, widget)
    session = widget.annotation.objects[1].session
    assert session.rounds == 3  # click, the hand edit, click
    assert [c.point for c in session.clicks] == [(z, y, x), (z, y, x + 1)]
    np.testing.assert_array_equal(object_mask(widget, 1), session.mask)


def test_clicks_in_3d_view_are_ignored(small, qtbot):
    widget, _ = small
    widget.viewer.dims.ndisplay = 3
    widget.prompts.layer.add([4, 10, 10])
    assert len(widget.prompts.layer.data) == 0
    assert not widget.is_busy()
    assert "3D view" in widget.status.text()


def test_errors_are_reported_and_the_widget_stays_usable(small, qtbot, monkeypatch):
    widget, reference = small
    notices = []
    monkeypatch.setattr("napari.utils.notifications.show_error", notices.append)

    def broken(*args):
        raise RuntimeError("simulated CUDA failure")

    real = widget.annotation.make_session
    widget.annotation.make_session = broken
    napari_click(widget, interior_point(reference))
    wait_idle(qtbot, widget)
    assert notices and "simulated CUDA failure" in notices[0]
    assert not object_mask(widget, 1).any()
    widget.annotation.make_session = real
    napari_click(widget, interior_point(reference))
    wait_idle(qtbot, widget)
    assert widget.annotation.objects[1].session.rounds == 1


def test_fusion_can_be_switched_off_for_new_objects(small, qtbot):
    widget, reference = small
    assert widget.fusion_check.isChecked()
    widget.fusion_check.setChecked(False)
    napari_click(widget, interior_point(reference))
    wait_idle(qtbot, widget)
    assert widget.annotation.objects[1].session.fusion is False
    assert object_mask(widget, 1)[interior_point(reference)]


def test_the_reach_limit_can_be_switched_off_for_new_objects(small, qtbot):
    widget, reference = small
    assert widget.reach_check.isChecked()
    widget.reach_check.setChecked(False)
    napari_click(widget, interior_point(reference))
    wait_idle(qtbot, widget)
    assert math.isinf(widget.annotation.objects[1].session.reach)
    assert object_mask(widget, 1)[interior_point(reference)]


def test_the_brush_paints_the_object_being_segmented_both_ways(small, qtbot):
    widget, reference = small
    assert widget.labels.selected_label == 1
    napari_click(widget, interior_point(reference))
    wait_idle(qtbot, widget)
    widget.commit_object()
    wait_idle(qtbot, widget)
    assert widget.label == 2 and widget.labels.selected_label == 2  # hand corrections go to object 2
    widget.labels.selected_label = 5  # the label chosen in the layer controls
    assert widget.label == 5
    widget.labels.selected_label = 0  # the eraser's label is no object
    assert widget.label == 5


def test_status_and_progress_describe_the_current_state_after_undo_and_reset(small, qtbot, monkeypatch):
    widget, reference = small
    assert "0/1" not in widget.progress.text()
    napari_click(widget, interior_point(reference))
    wait_idle(qtbot, widget)
    assert "Round 1" in widget.status.text() and "1 round" in widget.progress.text()
    widget.undo_round()
    wait_idle(qtbot, widget)
    assert "Round 1" not in widget.status.text() and "0 round" in widget.status.text()
    assert "slices" not in widget.progress.text() and "no rounds" in widget.progress.text()

    napari_click(widget, interior_point(reference))
    wait_idle(qtbot, widget)
    before = np.array(widget.labels.data, copy=True)
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *args: asked.append(args) or QMessageBox.No)
    widget.reset_object()
    wait_idle(qtbot, widget)
    assert asked and "cancelled" in widget.status.text()
    np.testing.assert_array_equal(widget.labels.data, before)  # nothing lost without confirmation
    monkeypatch.setattr(QMessageBox, "question", lambda *args: QMessageBox.Yes)
    widget.reset_object()
    wait_idle(qtbot, widget)
    assert not widget.labels.data.any()
    assert "reset" in widget.status.text() and "no rounds" in widget.progress.text()


def test_the_network_loads_when_the_widget_opens_and_a_click_says_so_at_once(small, qtbot):
    widget, reference = small
    qtbot.waitUntil(lambda: widget.network_ready, timeout=ROUND_TIMEOUT_MS)  # no click needed
    assert "Network ready" in widget.status.text()
    napari_click(widget, interior_point(reference))
    assert "Segmenting" in widget.progress.text() and "Segmenting" in widget.status.text()  # before any result
    wait_idle(qtbot, widget)
    assert "1 round" in widget.progress.text()


@pytest.mark.parametrize(("constant", "button", "says"), [(True, 1, "constant"), (False, 2, "nothing to remove")])
def test_a_result_the_user_would_not_expect_is_explained(make_napari_viewer, qtbot, monkeypatch,
                                                          constant, button, says):
    notices = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", notices.append)
    image, reference = ellipsoid_volume(shape=(8, 20, 24), radii=(3, 6, 8))
    widget = open_widget(make_napari_viewer, np.zeros_like(image) if constant else image)
    napari_click(widget, interior_point(reference), button=button)
    wait_idle(qtbot, widget)
    assert any(says in n for n in notices) and says in widget.status.text()


def test_the_title_fits_and_the_prompt_colour_is_the_left_click_colour(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((4, 8, 8), np.float32), name="scan")
    widget = LimNetWidget(viewer)
    dock = viewer.window.add_dock_widget(widget, name=TITLE)
    qtbot.waitExposed(widget)
    qtbot.wait(200)  # the dock's layout settles
    title = dock.titleBarWidget().title
    assert title.text() == TITLE and title.width() >= title.fontMetrics().horizontalAdvance(TITLE)
    assert widget.prompts.layer.current_face_color == "lime"
    widget.toggle_negative()
    assert widget.prompts.layer.current_face_color == "magenta"


@pytest.mark.parametrize("suffix", [".nii.gz", ".tif"])
def test_save_mask_writes_the_labels_with_the_scans_geometry(make_napari_viewer, qtbot, tmp_path, suffix):
    (image, kwargs, _), _ = brain_mri()
    crop = image[BRAIN_CROP]
    widget = open_widget(make_napari_viewer, crop, kwargs["scale"], kwargs["metadata"])
    widget.labels.data[5, 50:60, 40:50] = 1
    target = tmp_path / f"mask{suffix}"
    widget.save_mask(str(target))
    wait_idle(qtbot, widget)
    saved = read_volume(target)
    np.testing.assert_array_equal(saved.data, widget.labels.data)
    np.testing.assert_allclose(saved.spacing, kwargs["scale"], rtol=1e-5)
    if suffix == ".nii.gz":
        np.testing.assert_allclose(saved.affine, kwargs["metadata"]["affine"])
    assert "Saved" in widget.status.text()


def test_next_suspect_slice_shows_the_worst_rated_slices_in_turn(small, qtbot):
    widget, reference = small
    napari_click(widget, interior_point(reference))
    wait_idle(qtbot, widget)
    suspects = widget.annotation.objects[1].suspects
    assert suspects and widget.suspects_label.text().startswith("Check slices:")
    for _, k, _ in suspects[:2]:
        widget.next_suspect()  # the "." key
        assert int(round(widget.viewer.dims.point[0])) == k
        assert f"Slice {k}" in widget.status.text()


def draw_box(widget: LimNetWidget, corner, opposite, axis: int = 0) -> None:
    """Pick the boxes layer (it is in rectangle mode) and drag a rectangle between two voxels of a slice
    normal to ``axis``."""
    widget.viewer.layers.selection.active = widget.boxes.layer
    napari_drag(widget.viewer, widget.boxes.layer, corner, opposite, axis=axis)


def tight_box(reference: np.ndarray) -> tuple[int, int, int, int, int]:
    """(z, y0, x0, y1, x1): the object's bounding rectangle on its largest cross-section."""
    z = int(np.argmax(reference.sum(axis=(1, 2))))
    rows, cols = np.flatnonzero(reference[z].any(axis=1)), np.flatnonzero(reference[z].any(axis=0))
    return z, int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])


def test_a_box_is_a_round_that_clicks_correct_and_undo_takes_back(small, qtbot):
    widget, reference = small
    assert widget.boxes.layer.name == "scan boxes" and widget.boxes.layer.mode == "add_rectangle"
    assert widget.boxes.layer.scale == pytest.approx(widget.prompts.layer.scale)
    assert widget.viewer.layers.selection.active is widget.prompts.layer  # clicks stay the default
    z, y0, x0, y1, x1 = tight_box(reference)
    draw_box(widget, (z, y0, x0), (z, y1, x1))
    wait_idle(qtbot, widget)
    boxed = object_mask(widget, 1)
    assert dice(boxed, reference) > 0.8 and boxed.any(axis=(1, 2)).sum() > 1  # propagated in 3D
    assert widget.annotation.objects[1].session.rounds == 1 and "Round 1: box's slice" in widget.status.text()
    assert widget.viewer.layers.selection.active is widget.prompts.layer  # the next click corrects it
    assert len(widget.boxes.layer.data) == 1 and len(widget.prompts.layer.data) == 0
    np.testing.assert_array_equal(widget.boxes.layer.data[0][:, 0], z)
    labels = np.array(widget.labels.data, copy=True)

    edge = (z, (y0 + y1) // 2, x0 + 1)  # inside the box's mask, near its edge
    assert boxed[edge]
    napari_click(widget, edge, button=2)  # a later click corrects the box's slice
    wait_idle(qtbot, widget)
    corrected = object_mask(widget, 1)
    assert not corrected[edge] and corrected[z].sum() < boxed[z].sum()
    assert len(widget.boxes.layer.data) == 1 and len(widget.prompts.layer.data) == 1

    widget.undo_round()
    wait_idle(qtbot, widget)
    np.testing.assert_array_equal(widget.labels.data, labels)
    assert len(widget.boxes.layer.data) == 1 and len(widget.prompts.layer.data) == 0
    widget.undo_round()
    wait_idle(qtbot, widget)
    assert not widget.labels.data.any() and len(widget.boxes.layer.data) == 0  # the box's round is gone
    assert widget.annotation.objects[1].boxes() == []


def test_a_box_in_another_orientation_propagates_along_that_axis(small, qtbot):
    widget, reference = small
    z, y, x = interior_point(reference)
    zs, xs = np.flatnonzero(reference[:, y].any(axis=1)), np.flatnonzero(reference[:, y].any(axis=0))
    draw_box(widget, (zs[0], y, xs[0]), (zs[-1], y, xs[-1]), axis=1)  # a coronal plane
    wait_idle(qtbot, widget)
    obj = widget.annotation.objects[1]
    assert obj.session.axis == 1 and obj.boxes() == [Box(1, (y, zs[0], xs[0], zs[-1], xs[-1]))]
    mask = object_mask(widget, 1)
    assert mask.any(axis=(0, 2)).sum() > 1 and dice(mask, reference) > 0.8


def test_a_box_outside_the_image_a_point_or_another_shape_is_refused(small, qtbot, monkeypatch):
    widget, reference = small
    notices = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", notices.append)
    z, y0, x0, y1, x1 = tight_box(reference)
    draw_box(widget, (z, y0, x0), (z, y1, x1))
    wait_idle(qtbot, widget)
    labels = np.array(widget.labels.data, copy=True)

    draw_box(widget, (z, -4, -4), (z, y1, x1))  # leaves the image
    assert not widget.is_busy() and "outside the image" in notices[-1]
    draw_box(widget, (z, y0, x0), (z, y0, x0))  # a click with the rectangle tool
    assert not widget.is_busy() and "line or a point" in notices[-1]
    widget.boxes.layer.mode = "add_ellipse"
    napari_drag(widget.viewer, widget.boxes.layer, (z, y0, x0), (z, y1, x1))
    assert not widget.is_busy() and "only rectangles" in notices[-1]
    qtbot.waitUntil(lambda: len(widget.boxes.layer.data) == 1)  # the refused shapes are removed
    np.testing.assert_array_equal(widget.labels.data, labels)
    assert widget.annotation.objects[1].rounds == 1


def test_reset_and_the_next_object_clear_the_boxes_as_they_clear_the_clicks(small, qtbot, monkeypatch):
    monkeypatch.setattr(QMessageBox, "question", lambda *args: QMessageBox.Yes)
    widget, reference = small
    z, y0, x0, y1, x1 = tight_box(reference)
    draw_box(widget, (z, y0, x0), (z, y1, x1))
    wait_idle(qtbot, widget)
    napari_click(widget, (z, (y0 + y1) // 2, (x0 + x1) // 2))
    wait_idle(qtbot, widget)
    assert len(widget.boxes.layer.data) == 1 and len(widget.prompts.layer.data) == 1
    widget.reset_object()
    wait_idle(qtbot, widget)
    assert len(widget.boxes.layer.data) == 0 and len(widget.prompts.layer.data) == 0
    assert not widget.labels.data.any()

    draw_box(widget, (z, y0, x0), (z, y1, x1))
    wait_idle(qtbot, widget)
    first = object_mask(widget, 1)
    widget.commit_object()
    wait_idle(qtbot, widget)
    assert widget.label == 2 and len(widget.boxes.layer.data) == 0
    draw_box(widget, (z, 1, 1), (z, y0 + 3, x0 + 3))  # object 2 overlapping object 1's corner
    wait_idle(qtbot, widget)
    np.testing.assert_array_equal(object_mask(widget, 1), first)
    assert widget.annotation.objects[2].boxes() and len(widget.boxes.layer.data) == 1
