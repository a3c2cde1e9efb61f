"""The object model without Qt: several objects in one label volume, each with its Sessions, written
by jobs; box rounds, hand edits, undo across orientations, reset, commit, and repair after a stopped job."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import ellipsoid_volume

from napari_limnet.clicks import dice
from napari_limnet.engine.annotation import Annotation, Box
from napari_limnet.engine.session import InteractiveSession, Segmenter, Session
from napari_limnet.evaluation.baselines import RandomWalkerSession

CENTRE = (12, 32, 32)


@pytest.fixture
def annotation(ellipsoid, weights):
    image, _ = ellipsoid
    made = []

    def make_session(volume, spacing, axis, initial_mask):
        made.append(axis)
        return Session(volume, spacing, axis, weights=weights, initial_mask=initial_mask)

    ann = Annotation(image, (2.0, 1.0, 1.0), make_session)
    ann.sessions_made = made
    return ann


def test_a_click_writes_the_object_into_the_label_volume(annotation):
    session = annotation.run(annotation.click(1, CENTRE))
    assert session.rounds == 1 and session.mask[CENTRE]
    np.testing.assert_array_equal(annotation.labels == 1, session.mask)
    assert annotation.labels.dtype == np.uint16 and set(np.unique(annotation.labels)) == {0, 1}


def test_commit_names_the_next_free_label_and_a_second_object_leaves_the_first_alone(annotation):
    first = annotation.run(annotation.click(1, CENTRE)).mask.copy()
    annotation.labels[0, 0, :3] = 7  # a value painted by hand is taken too
    assert annotation.run(annotation.commit(1)) == 8
    assert annotation.objects[1].sessions == []
    annotation.run(annotation.click(8, (CENTRE[0], CENTRE[1], CENTRE[2] + 2)))  # inside object 1
    np.testing.assert_array_equal(annotation.labels == 1, first)
    assert (annotation.labels == 8).sum() < annotation.objects[8].session.mask.sum()


def test_with_overwrite_an_object_takes_voxels_and_the_other_records_the_loss(annotation):
    annotation.run(annotation.click(1, CENTRE))
    annotation.run(annotation.commit(1))
    annotation.overwrite = True
    second = annotation.run(annotation.click(2, CENTRE)).mask
    np.testing.assert_array_equal(annotation.labels == 2, second)
    assert annotation.objects[1].dirty is not None  # object 1 looks there before its next job


def test_hand_edits_become_a_round_of_the_object(annotation):
    annotation.run(annotation.click(1, CENTRE))
    annotation.labels[3, 2:6, 2:6] = 1  # painted by hand, far from the object
    annotation.mark_painted([slice(3, 4), slice(2, 6), slice(2, 6)])
    session = annotation.run(annotation.click(1, (CENTRE[0], CENTRE[1], CENTRE[2] + 1)))
    assert session.rounds == 3  # click, the hand edit, click
    assert session.mask[3, 2:6, 2:6].all()
    np.testing.assert_array_equal(annotation.labels == 1, session.mask)


def test_undo_walks_back_across_orientations_and_reset_forgets_only_that_object(annotation):
    annotation.labels[0, :2, :2] = 5  # another object, painted before
    first = annotation.run(annotation.click(1, CENTRE)).mask.copy()
    annotation.run(annotation.click(1, (CENTRE[0] + 2, CENTRE[1], CENTRE[2]), axis=1))
    assert annotation.sessions_made == [0, 1] and annotation.objects[1].rounds == 2
    assert annotation.run(annotation.undo(1)) is True
    np.testing.assert_array_equal(annotation.labels == 1, first)
    assert annotation.run(annotation.undo(1)) is True
    assert not (annotation.labels == 1).any()
    assert annotation.run(annotation.undo(1)) is False
    annotation.run(annotation.click(1, CENTRE))
    annotation.run(annotation.reset(1))
    assert not (annotation.labels == 1).any() and annotation.objects[1].rounds == 0
    assert (annotation.labels == 5).sum() == 4


def test_a_stopped_job_is_repaired_by_the_next_one(annotation):
    before = annotation.run(annotation.click(1, CENTRE)).mask.copy()
    job = annotation.click(1, (4, 30, 30), positive=False)
    for _ in range(3):  # some slices of the round reach the volume, then the job stops
        annotation.apply(next(job))
    job.close()
    annotation.abandoned(1)
    annotation.run(annotation.repair())
    np.testing.assert_array_equal(annotation.labels == 1, before)
    assert annotation.objects[1].session.rounds == 1


def test_existing_voxels_of_a_label_start_the_object(annotation, ellipsoid):
    _, reference = ellipsoid
    annotation.labels[reference] = 3
    session = annotation.run(annotation.click(3, (CENTRE[0], CENTRE[1], CENTRE[2] + 4), positive=False))
    assert session.rounds == 1  # the painted mask is the initial state, not a round
    assert (annotation.labels == 3).sum() <= reference.sum()
    assert annotation.run(annotation.undo(3)) is True
    np.testing.assert_array_equal(annotation.labels == 3, reference)


@pytest.mark.parametrize(("label", "point"), [(0, CENTRE), (1, (24, 0, 0)), (1, (-1, 3, 3)), (1, "abc")])
def test_bad_requests_are_refused_before_any_work(annotation, label, point):
    with pytest.raises(ValueError):
        annotation.click(label, point)
    assert annotation.sessions_made == [] and not annotation.labels.any()


def test_a_label_volume_of_another_shape_is_refused(ellipsoid):
    with pytest.raises(ValueError, match="shape"):
        Annotation(ellipsoid[0], (1, 1, 1), Session, labels=np.zeros((2, 2, 2), np.uint16))


def test_the_session_and_the_random_walker_satisfy_the_engine_contract(ellipsoid, weights):
    image, _ = ellipsoid_volume(shape=(6, 16, 16), radii=(2, 4, 4))
    session = Session(image, weights=weights)
    walker = RandomWalkerSession(image)
    assert isinstance(session, InteractiveSession) and isinstance(session, Segmenter)
    assert isinstance(walker, Segmenter)
    # the baseline has no streamed rounds, undo or hand edits: it cannot stand behind the widget
    assert not isinstance(walker, InteractiveSession)


def test_each_round_names_the_slices_to_check_next(annotation):
    annotation.run(annotation.click(1, CENTRE))
    suspects = annotation.objects[1].suspects
    assert suspects and all(axis == 0 and z != CENTRE[0] for axis, z, _ in suspects)
    assert all((annotation.labels[z] == 1).any() for _, z, _ in suspects)
    annotation.run(annotation.reset(1))
    assert annotation.objects[1].suspects == []


TIGHT_BOX = (12, 18, 14, 46, 50)  # the ellipsoid's tight box on its middle slice: (z, y0, x0, y1, x1)


def test_a_box_is_a_round_that_clicks_correct_and_undo_takes_back(annotation, ellipsoid):
    _, reference = ellipsoid
    session = annotation.run(annotation.box(1, TIGHT_BOX))
    obj = annotation.objects[1]
    assert session.rounds == 1 and obj.clicks() == [] and obj.boxes() == [Box(0, TIGHT_BOX)]
    np.testing.assert_array_equal(annotation.labels == 1, session.mask)
    assert dice(annotation.labels == 1, reference) > 0.8
    boxed = annotation.labels.copy()
    annotation.run(annotation.click(1, (12, 32, 16), positive=False))  # a later click corrects the box's slice
    assert obj.rounds == 2 and obj.boxes() == [Box(0, TIGHT_BOX)]
    assert boxed[12, 32, 16] == 1 and annotation.labels[12, 32, 16] == 0
    assert annotation.run(annotation.undo(1)) is True
    np.testing.assert_array_equal(annotation.labels, boxed)
    assert annotation.run(annotation.undo(1)) is True
    assert not annotation.labels.any() and obj.boxes() == []


def test_a_box_follows_the_object_rules_axis_protection_reset_and_commit(annotation):
    annotation.labels[12, 30:34, 30:34] = 5  # another object, painted before, inside the box
    annotation.run(annotation.click(1, CENTRE))
    coronal = (32, 4, 14, 20, 50)  # slice y = 32: corners in (z, x)
    annotation.run(annotation.box(1, coronal, axis=1))
    assert annotation.sessions_made == [0, 1] and annotation.objects[1].boxes() == [Box(1, coronal)]
    assert (annotation.labels == 5).sum() == 16  # the box's object takes background only
    annotation.run(annotation.reset(1))
    assert annotation.objects[1].boxes() == [] and not (annotation.labels == 1).any()
    annotation.run(annotation.box(1, TIGHT_BOX))
    assert annotation.run(annotation.commit(1)) == 6
    assert annotation.objects[1].boxes() == [] and annotation.objects[1].sessions == []


@pytest.mark.parametrize("box", [(70, 2, 2, 10, 10), (12, 10, 10, 10, 20), (12, 1, 2), "abc"])
def test_a_bad_box_changes_nothing(annotation, box):
    before = annotation.run(annotation.click(1, CENTRE)).mask.copy()
    labels = annotation.labels.copy()
    with pytest.raises(ValueError):
        annotation.run(annotation.box(1, box, axis=2))
    obj = annotation.objects[1]
    assert annotation.sessions_made == [0, 2] and len(obj.sessions) == 1 and obj.rounds == 1
    assert obj.boxes() == [] and not obj.needs_sync
    np.testing.assert_array_equal(annotation.labels, labels)
    np.testing.assert_array_equal(obj.mask, before)
