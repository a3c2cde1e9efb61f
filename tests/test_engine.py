"""The interactive Session: rounds, fusion, undo, cancellation, orientation and bad input."""

from __future__ import annotations

import copy
import inspect
import math
import threading

import numpy as np
import pytest
import torch
from synthetic import ellipsoid_volume

from napari_limnet import Session
from napari_limnet.clicks import dice
from napari_limnet.engine import fusion
from napari_limnet.engine.crops import quality_inputs
from napari_limnet.engine.fusion import PREFERRED_MARGIN, Round, SliceMask, choose_round
from napari_limnet.engine.memory_bank import MemoryBank, pool_entry
from napari_limnet.engine.parallel import interleave
from napari_limnet.engine.propagation import confidence, goes_on_past_reach
from napari_limnet.engine.runner import REACH, NetworkRunner, reach_in_slices


@pytest.fixture
def session(ellipsoid, weights):
    image, _ = ellipsoid
    return Session(image, spacing=(2.0, 1.0, 1.0), weights=weights)


def test_click_returns_a_volume_mask_and_counts_a_round(session):
    mask = session.click((12, 32, 32))
    assert mask.shape == session.shape and mask.dtype == bool
    assert session.rounds == 1
    assert session.clicks[0].point == (12, 32, 32) and session.clicks[0].positive
    assert session.last_timing.total_s >= session.last_timing.first_mask_s > 0


def test_click_iter_yields_clicked_slice_first_then_propagated_slices(session):
    updates = list(session.click_iter((12, 32, 32)))
    assert updates[0].stage == "slice" and updates[0].index[0] == 12
    assert all(u.stage == "propagated" for u in updates[1:])
    assert updates[-1].done <= updates[-1].total == 24
    seen = [u.index[0] for u in updates]
    assert len(seen) == len(set(seen))  # each slice at most once
    assert set(seen) == set(np.flatnonzero(session.mask.any(axis=(1, 2)))) | {12}  # every slice that changed
    for u in updates:  # what streamed in is what the session committed
        assert np.array_equal(session.mask[u.index], u.mask)


def test_mask_is_read_only(session):
    session.click((12, 32, 32))
    with pytest.raises(ValueError):
        session.mask[0, 0, 0] = True


def test_one_click_on_a_small_object_in_a_large_slice_gives_a_mask_of_its_size(weights):
    """The whole-slice pass sees a small object at a few pixels and inflates it; the zoomed pass
    must not inherit that size."""
    image, ref = ellipsoid_volume(shape=(12, 256, 256), radii=(5, 6, 7.8))
    session = Session(image, weights=weights)
    mask = session.click((6, 128, 128))[6]
    assert dice(mask, ref[6]) > 0.95
    assert 0.85 < mask.sum() / ref[6].sum() < 1.15


def test_undo_and_reset_restore_earlier_results_exactly(session):
    empty = session.mask.copy()
    first = session.click((12, 32, 32)).copy()
    session.click((12, 20, 20), positive=False)
    session.click((5, 30, 40))
    assert session.undo() and session.undo()
    assert np.array_equal(session.mask, first)
    assert session.rounds == 1 and len(session.clicks) == 1
    assert session.undo()
    assert np.array_equal(session.mask, empty)
    assert not session.undo()
    session.click((12, 32, 32))
    session.reset()
    assert not session.mask.any() and session.rounds == 0


def test_closing_a_round_early_leaves_the_previous_result(session):
    before = session.click((12, 32, 32)).copy()
    it = session.click_iter((6, 30, 30), positive=False)
    next(it)
    next(it)
    it.close()
    assert np.array_equal(session.mask, before) and session.rounds == 1


def test_cancel_from_another_thread_stops_the_round(session):
    before = session.mask.copy()
    started = threading.Event()
    seen = []

    def consume():
        for u in session.click_iter((12, 32, 32)):
            seen.append(u)
            started.set()
            threading.Event().wait(0.01)

    worker = threading.Thread(target=consume)
    worker.start()
    started.wait(10)
    session.cancel()
    worker.join(30)
    assert not worker.is_alive()
    assert len(seen) < 24
    assert np.array_equal(session.mask, before) and session.rounds == 0


def test_a_new_round_supersedes_the_running_one(session):
    old = session.click_iter((12, 32, 32))
    next(old)
    mask = session.click((12, 30, 30))
    assert list(old) == []  # the superseded round stops at its next slice
    assert session.rounds == 1 and session.clicks[0].point == (12, 30, 30)
    assert np.array_equal(session.mask, mask)


def test_clicks_on_other_axes_propagate_along_that_axis(ellipsoid, weights):
    image, _ = ellipsoid
    for axis in (1, 2):
        s = Session(image, axis=axis, weights=weights)
        updates = list(s.click_iter((12, 32, 32)))
        assert all(isinstance(u.index[axis], int) for u in updates)
        assert updates[0].index[axis] == 32
        assert updates[-1].total == image.shape[axis]
        held = np.flatnonzero(s.mask.any(axis=tuple(i for i in range(3) if i != axis)))
        assert {u.index[axis] for u in updates} == set(held) | {32}  # the slices along that axis that changed


def test_edits_are_kept_and_undoable(session):
    session.click((12, 32, 32))
    before = session.mask.copy()
    edited = before.copy()
    edited[12] = False
    edited[12, 10:20, 10:20] = True
    assert session.edit(edited) == 1
    assert np.array_equal(session.mask, edited)
    session.click((3, 32, 32))  # a later round elsewhere never overrides the hand-edited slice
    assert np.array_equal(session.mask[12], edited[12])
    session.undo()
    session.undo()
    assert np.array_equal(session.mask, before)


def test_initial_mask_is_the_starting_point(ellipsoid, weights):
    image, reference = ellipsoid
    s = Session(image, weights=weights, initial_mask=reference)
    assert np.array_equal(s.mask, reference) and s.rounds == 0
    s.click((12, 32, 32))
    s.undo()
    assert np.array_equal(s.mask, reference)
    assert not s.undo()


class RatedByRound(torch.nn.Module):
    """Stands in for the quality head: rates every mask of a round alike, by the round that proposed it
    (recorded as the head sees the mask), so that the test decides which round is the better one."""

    def __init__(self, rate) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.rate(image, mask)])


def test_fusion_keeps_the_better_scored_of_equally_near_rounds(ellipsoid, weights, monkeypatch):
    image, _ = ellipsoid
    monkeypatch.setattr(fusion, "NEAR_TIE", 1.01)  # rate every pair of differing masks, however alike
    ratings = {1: 0.9, 2: 0.1}  # the predicted Dice of every slice, per round
    proposed: dict[tuple[bytes, bytes], int] = {}  # a mask as the head sees it -> the round that proposed it
    rounds_seen = [0]

    def rate(image_crop, mask_crop):
        return ratings[proposed.get((image_crop.numpy().tobytes(), mask_crop.numpy().tobytes()), rounds_seen[0] + 1)]

    net = copy.deepcopy(weights[0])
    net.quality = RatedByRound(rate)
    s = Session(image, weights=(net, weights[1]), fusion=True)

    def click(point) -> dict[int, np.ndarray]:
        """One round; its propagated masks by slice, each recorded as proposed by this round."""
        s.click(point)
        rounds_seen[0] += 1
        masks = {z: mask for z, (mask, _) in s.propagated_candidates().items()}
        for z, mask in masks.items():
            crops = quality_inputs(image[z], mask, (1.0, 1.0), net.config.crop)
            proposed.setdefault(tuple(c.numpy().tobytes() for c in crops), rounds_seen[0])
        return masks

    def shown(masks, z):
        return np.array_equal(s.mask[z], masks[z])

    one = click((8, 32, 32))
    two = click((16, 32, 32))
    assert not np.array_equal(one[12], two[12])
    # slice 12 lies 4 slices from both clicked slices: the better-rated round wins (0.9 > 0.1 + margin);
    # nearer to one of them, that one's round stands, whatever the ratings
    assert shown(one, 12) and all(shown(one, z) for z in (9, 10, 11)) and all(shown(two, z) for z in (13, 14, 15))
    ratings[2] = 0.95
    s.undo()
    rounds_seen[0] = 1
    two = click((16, 32, 32))
    assert shown(two, 12) and all(shown(one, z) for z in (9, 10, 11))
    # a later click on the same slice as the second: its round replaces the second's, rated worst
    ratings[3] = 0.0
    three = click((16, 30, 30))
    assert {13, 14, 15} <= three.keys()
    assert all(shown(three, z) for z in (13, 14, 15))


def test_fusion_off_takes_the_newest_round(ellipsoid, weights):
    image, _ = ellipsoid
    s = Session(image, weights=weights, fusion=False)
    s.click((12, 32, 32))
    s.click((4, 20, 20), positive=False)
    newest = s._rounds[-1]
    for z in newest.candidates:
        assert np.array_equal(s.mask[z], newest.candidates[z].to_full((64, 64)))


def test_choose_round_rules():
    m = SliceMask.from_full(np.ones((2, 2), bool))
    n = SliceMask.from_full(np.eye(2, dtype=bool))  # another mask
    rounds = [
        Round("click", {0: m, 1: m, 2: m, 6: m, 7: m}, {1: 0.8, 2: 0.2, 6: 0.6 + PREFERRED_MARGIN / 2}, {0}),
        Round("click", {0: n, 1: n, 2: n, 6: n, 7: SliceMask.from_full(np.ones((2, 2), bool))},
              {0: 0.99, 1: 0.5, 2: 0.6, 6: 0.6}, {5}),
        Round("initial", {3: m}),
    ]
    never = pytest.fail  # scores are all present here except for the initial round

    def lazy(i, z):
        return 0.3

    assert choose_round(rounds, 0, fusion=True, score=never) == 0  # owned by the user
    assert choose_round(rounds, 1, fusion=True, score=never) == 0  # 0.8 beats 0.5
    assert choose_round(rounds, 2, fusion=True, score=never) == 1  # 0.6 beats 0.2
    assert choose_round(rounds, 3, fusion=True, score=lazy) == 2
    assert choose_round(rounds, 4, fusion=True, score=never) == -1
    assert choose_round(rounds, 6, fusion=True, score=never) == 1  # rated higher, but not by the margin
    assert choose_round(rounds, 7, fusion=True, score=never) == 1  # the same mask twice: nothing to rate
    assert choose_round(rounds, 1, fusion=False, score=never) == 1


def test_fusion_prefers_the_candidate_propagated_from_the_nearest_user_slice():
    m = SliceMask.from_full(np.ones((2, 2), bool))
    n = SliceMask.from_full(np.eye(2, dtype=bool))
    empty = SliceMask.from_full(np.zeros((2, 2), bool))
    first = Round("click", {0: m, 2: m, 5: m, 8: m, 9: m}, {5: 0.9}, {0}, {0: 0, 2: 0, 5: 0, 8: 0, 9: 0})
    second = Round("click", {2: n, 5: n, 8: n, 9: empty, 10: n}, {5: 0.5}, {10},
                   {2: 10, 5: 10, 8: 10, 9: 10, 10: 10})
    third = Round("click", {2: n, 5: empty, 9: n}, {}, {0}, {2: 0, 5: 0, 9: 0})
    never = pytest.fail  # the head compares only candidates propagated from equally near slices
    rounds = [first, second]
    assert choose_round(rounds, 2, fusion=True, score=never) == 0  # 2 slices from slice 0, 8 from slice 10
    assert choose_round(rounds, 8, fusion=True, score=never) == 1
    assert choose_round(rounds, 5, fusion=True, score=never) == 0  # as near: rated 0.9 against 0.5 + margin
    assert choose_round(rounds, 2, fusion=False, score=never) == 1  # fusion off: the newest
    # an older "no object here" is never preferred to the newest mask, however near its seed
    assert choose_round([second, Round("click", {9: m}, {}, {30}, {9: 30})], 9, fusion=True, score=never) == 1
    # a newest "no object here" stands against an as near older mask: it is not rated
    assert choose_round([first, third], 5, fusion=True, score=never) == 1
    # two rounds propagated from the same user slice: the newer started from the user's newer mask there
    assert choose_round([first, third], 2, fusion=True, score=never) == 1
    # a candidate without a seed (an initial mask) is farther than any propagated one
    assert choose_round([Round("initial", {2: n}), first], 2, fusion=True, score=never) == 1
    assert Round("initial", {2: n}).seed_distance(2) == np.inf


def test_a_round_records_the_user_slice_each_candidate_was_propagated_from(ellipsoid, weights):
    image, ref = ellipsoid
    s = Session(image, weights=weights, fusion=True)
    s.click((12, 32, 32))
    s.click((6, 32, 32))  # a second user slice below the first
    one, two = s._rounds
    assert set(one.seeds.values()) == {12} and one.seed_distance(3) == 9
    # the walk from slice 6 stops at slice 12, which holds the object; below it goes on
    assert set(two.seeds.values()) == {6} and max(two.candidates) == 11
    differ = [z for z in range(7, 12) if not np.array_equal(one.candidates[z].to_full((64, 64)),
                                                            two.candidates[z].to_full((64, 64)))]
    # slices 10 and 11 are nearer to slice 12 and keep the first round's masks; 7 and 8 take the second's;
    # slice 9 is as near to both: the quality head decides between them
    for z in differ:
        if z != 9:
            kept = one if z > 9 else two
            assert np.array_equal(s.mask[z], kept.candidates[z].to_full((64, 64)))
    assert {10, 11} & set(differ) or {7, 8} & set(differ)  # the rule had something to decide


def test_fusion_does_not_rate_near_identical_masks():
    big = np.zeros((40, 40), bool)
    big[5:35, 5:35] = True  # 900 pixels
    nudged = big.copy()
    nudged[35, 5:15] = True  # 10 more: Dice 0.994
    other = big.copy()
    other[5:15, 5:35] = False  # a third less: Dice 0.8
    assert SliceMask.from_full(big).agreement(SliceMask.from_full(nudged)) == pytest.approx(1800 / 1810)
    assert SliceMask.from_full(big).agreement(SliceMask.from_full(other)) == pytest.approx(1200 / 1500)
    apart = np.zeros((40, 40), bool)
    apart[36:39, 36:39] = True
    assert SliceMask.from_full(big).agreement(SliceMask.from_full(apart)) == 0.0
    rated = []

    def score(i, z):
        rated.append(i)
        return 0.9 if i == 0 else 0.1  # the older round would win if it were rated

    near = [Round("click", {0: SliceMask.from_full(big)}, {}, {5}),
            Round("click", {0: SliceMask.from_full(nudged)}, {}, {6})]
    assert choose_round(near, 0, fusion=True, score=score) == 1 and rated == []
    far = [Round("click", {0: SliceMask.from_full(other)}, {}, {5}),
           Round("click", {0: SliceMask.from_full(big)}, {}, {6})]
    assert choose_round(far, 0, fusion=True, score=score) == 0 and sorted(rated) == [0, 1]


def test_fusion_never_scores_an_empty_candidate():
    full, empty = SliceMask.from_full(np.ones((2, 2), bool)), SliceMask.from_full(np.zeros((2, 2), bool))
    other = SliceMask.from_full(np.eye(2, dtype=bool))
    rounds = [Round("click", {0: full, 1: empty, 2: full}, {0: 0.1, 2: 0.9}, {5}),
              Round("click", {0: empty, 1: full, 2: other}, {1: 0.1, 2: 0.2}, {6})]
    never = pytest.fail  # an empty mask must not reach the quality head

    assert choose_round(rounds, 0, fusion=True, score=never) == 1  # the newest round ended the object here
    assert choose_round(rounds, 1, fusion=True, score=never) == 1  # an older empty never beats a mask
    assert choose_round(rounds, 2, fusion=True, score=never) == 0  # two masks: the better-rated one


def test_memory_stays_within_budget_over_1000_slices():
    bank = MemoryBank(working_frames=4, longterm_elements=512)
    bank.add_permanent(*pool_entry(torch.rand(1, 32, 32, 32), torch.rand(1, 32, 32, 32)))
    sizes = []
    for _ in range(1000):
        bank.add(*pool_entry(torch.rand(1, 32, 32, 32), torch.rand(1, 32, 32, 32)))
        keys, values = bank.tensors()
        bank.record_usage(torch.rand(keys.shape[-1]))
        sizes.append(bank.nbytes)
    budget = (1 + 4) * 256 + 512
    assert bank.elements == budget
    assert max(sizes) == sizes[-1] == sizes[100]


def test_propagation_over_a_long_volume_keeps_memory_flat(weights):
    image, _ = ellipsoid_volume(shape=(300, 32, 32), radii=(140, 10, 10))
    net = copy.deepcopy(weights[0])
    encoded = []  # slices through the encoder
    net.encoder.register_forward_hook(lambda module, args, out: encoded.append(args[0].shape[0]))
    s = Session(image, weights=(net, weights[1]), reach=math.inf)
    first = s.click((150, 16, 16)).copy()
    assert s.last_timing.slices_propagated == 299
    first_encoded = sum(encoded)
    # the same round again: a feature cache that kept every slice would encode none of them; a bounded
    # one (least recently used first) must encode again at least the slices beyond its bound
    encoded.clear()
    s.reset()
    assert np.array_equal(s.click((150, 16, 16)), first)
    bound = inspect.signature(NetworkRunner).parameters["cache_slices"].default
    assert first_encoded > bound and sum(encoded) >= first_encoded - bound


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        (np.zeros((4, 4)), "must be 3D"),
        (np.zeros((2, 3, 4, 5)), "must be 3D"),
        (np.zeros((0, 4, 4)), "empty"),
        (np.full((3, 4, 4), np.nan), "no finite value"),
        (np.array([[["a"]]]), "real numbers"),
    ],
)
def test_bad_volumes_are_refused(volume, message, weights):
    with pytest.raises(ValueError, match=message):
        Session(volume, weights=weights)


def test_nan_voxels_are_tolerated(ellipsoid, weights):
    image, _ = ellipsoid
    image = image.copy()
    image[:, :5] = np.nan
    s = Session(image, weights=weights)
    assert s.click((12, 32, 32)).shape == image.shape


@pytest.mark.parametrize("point", [(24, 0, 0), (-1, 3, 3), (0, 64, 0), (1, 2), (np.nan, 1, 1), "abc"])
def test_clicks_outside_the_volume_are_refused_and_change_nothing(session, point):
    with pytest.raises(ValueError):
        session.click(point)
    assert session.rounds == 0 and not session.mask.any()


@pytest.mark.parametrize(("kwargs", "message"), [({"device": "tpu"}, "unknown device"), ({"axis": 3}, "axis"),
                                                  ({"spacing": (1, 0, 1)}, "spacing"),
                                                  ({"reach": 0}, "reach"), ({"reach": float("nan")}, "reach")])
def test_bad_options_are_refused(ellipsoid, weights, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Session(ellipsoid[0], weights=weights, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_cuda_is_a_clear_error(ellipsoid, weights):
    with pytest.raises(ValueError, match="CUDA is not available"):
        Session(ellipsoid[0], device="cuda", weights=weights)


def test_volume_is_never_modified(ellipsoid, weights):
    image, _ = ellipsoid
    copy = image.copy()
    s = Session(image, weights=weights)
    s.click((12, 32, 32))
    s.click((12, 10, 10), positive=False)
    assert np.array_equal(image, copy)


def test_a_negative_click_on_a_slice_without_positive_clicks_ends_the_object_there(session):
    session.click((12, 32, 32))
    before = session.mask.copy()
    session.click((18, 32, 32), positive=False)  # the user says: no object on slice 18
    assert not session.mask[18:].any()  # nothing beyond the stop slice (the object lies below it)
    assert np.array_equal(session.mask[:13], before[:13])  # the far side and the user's slice are untouched
    assert session.mask[13:18].any()  # in between: propagated again from slice 12, knowing 18 is empty
    session.undo()
    assert np.array_equal(session.mask, before)


@pytest.mark.parametrize("rows, cols", [((28, 36), (48, 60)), ((18, 46), (46, 64))], ids=["small", "large"])
def test_a_negative_click_on_a_leak_trims_the_slice_and_keeps_the_object(ellipsoid, weights, rows, cols):
    """The protocol's (and a user's) usual correction: a negative click on a false-positive part of a
    slice that does hold the object. The leak goes, the object stays on that slice and beyond, also
    when the leak is more than a third of the slice's mask (the click is off the mask's centre)."""
    image, ref = ellipsoid
    leaked = ref.copy()
    leaked[14, rows[0]:rows[1], cols[0]:cols[1]] = True  # a leak into the background, touching the object's edge
    session = Session(image, spacing=(2.0, 1.0, 1.0), weights=weights, initial_mask=leaked)
    session.click((14, 32, 55), positive=False)
    leak = leaked[14] & ~ref[14]
    assert (session.mask[14] & leak).sum() < 0.1 * leak.sum()  # the leak is gone
    assert session.mask[14, 32, 32] and session.mask[16, 32, 32]  # the object is still there, and beyond
    assert dice(session.mask[14], ref[14]) > 0.8


def test_trimming_a_slice_does_not_reshape_the_slices_between_it_and_the_positive_click(ellipsoid, weights):
    """What negative clicks leave of a slice is not a shape the user drew: the good slices between it
    and the user's positive slice are propagated again from the positive slice, not from the leftover."""
    image, ref = ellipsoid
    session = Session(image, spacing=(2.0, 1.0, 1.0), weights=weights)
    before = session.click((12, 32, 32)).copy()
    after = session.click((16, 32, 44), positive=False)  # off-centre, inside the object: a trim
    assert after[16].any() and after[16].sum() < before[16].sum()
    for z in (13, 14, 15):
        assert dice(after[z], ref[z]) >= dice(before[z], ref[z]) - 0.01


def test_a_negative_click_next_to_a_positive_one_trims_rather_than_clears(session):
    session.click((12, 32, 32))
    session.click((12, 32, 48), positive=False)  # the slice has a positive click: the network trims
    assert session.mask[12, 32, 32]
    assert not session.mask[12, 32, 48]


@pytest.mark.parametrize("fusion", [True, False])
def test_later_rounds_do_not_spread_past_an_emptied_slice(ellipsoid, weights, fusion):
    """A slice emptied by a negative click is a wall for every later round, not just the one that
    emptied it (with fusion off, the newest round would otherwise regrow the object beyond it)."""
    image, _ = ellipsoid
    session = Session(image, spacing=(2.0, 1.0, 1.0), weights=weights, fusion=fusion)
    session.click((12, 32, 32))
    session.click((18, 32, 32), positive=False)
    session.click((16, 32, 40))  # a later correction just below the wall
    assert session.mask[16].any()
    assert not session.mask[18:].any()


def test_propagation_stops_half_a_width_past_the_clicked_slice(weights):
    """The compact-object prior: the object may not extend further along the slice normal than
    ``reach`` times its width on the clicked slice (a sphere: half its diameter)."""
    image, _ = ellipsoid_volume(shape=(60, 48, 48), radii=(8, 8, 8))
    s = Session(image, weights=weights)
    mask = s.click((30, 24, 24))
    limit = reach_in_slices(mask[30], REACH, (1.0, 1.0), 1.0)
    assert 2 <= limit < 29
    assert mask[30 - limit].any() or mask[30 + limit].any()
    assert not mask[31 + limit:].any() and not mask[:30 - limit].any()


def test_a_positive_click_past_the_reach_carries_the_object_on(weights):
    image, reference = ellipsoid_volume(shape=(60, 48, 48), radii=(24, 6, 6))  # a tube along the slices
    # the reach as a hard limit, so that the first round stops short; the newest round must fill the gap by itself
    s = Session(image, weights=weights, fusion=False, reach_confidence=None)
    first = s.click((30, 24, 24))
    end = 30 + reach_in_slices(first[30], REACH, (1.0, 1.0), 1.0)
    assert not first[end + 1:].any()
    mask = s.click((end + 4, 24, 24))  # the user marks the object where the first round stopped
    assert all(mask[z].any() for z in range(30, end + 5))
    unlimited = Session(image, weights=weights, reach=math.inf).click((30, 24, 24))
    assert unlimited[end + 1:].any()  # without the prior the tube is followed further (the network's own stop)



@pytest.mark.parametrize("fusion", [True, False])
def test_a_correction_stops_at_the_nearest_user_slice_holding_the_object(ellipsoid, weights, fusion):
    """Slices beyond the user's earlier slice keep the round seeded from it, even when the newest
    round wins: a correction on slice 8 cannot spoil slice 16."""
    image, _ = ellipsoid
    session = Session(image, spacing=(2.0, 1.0, 1.0), weights=weights, fusion=fusion)
    before = session.click((12, 32, 32)).copy()
    after = session.click((8, 32, 40))
    assert np.array_equal(after[12:], before[12:])
    assert not np.array_equal(after[:12], before[:12])


def test_both_directions_side_by_side_give_the_one_after_the_other_result(ellipsoid, weights):
    image, _ = ellipsoid
    results = []
    for threads in (1, 2):  # 1: the walks run in turn; 2: each walk in its own thread
        session = Session(image, spacing=(2.0, 1.0, 1.0), weights=weights, threads=threads, reach=math.inf)
        results.append([session.click((12, 32, 32)).copy(), session.click((4, 30, 30), positive=False).copy(),
                        session.click((18, 32, 34)).copy()])
    for serial, parallel in zip(*results):
        assert serial.any() and np.array_equal(serial, parallel)
    seen = []
    probe = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    probe.start()
    probe.join()
    assert torch.get_num_threads() == 2 and seen == [2]  # later threads still get the session's count


def test_closing_a_round_stops_its_walk_threads(ellipsoid, weights):
    image, _ = ellipsoid
    session = Session(image, spacing=(2.0, 1.0, 1.0), weights=weights, threads=2, reach=math.inf)
    before = session.click((12, 32, 32)).copy()
    it = session.click_iter((6, 30, 30))
    next(it)
    next(it)
    it.close()
    assert not [t for t in threading.enumerate() if t.name == "limnet-walk"]
    assert np.array_equal(session.mask, before) and session.rounds == 1


def test_a_failing_walk_raises_in_the_caller_and_stops_the_other():
    stop = threading.Event()
    produced = []

    def endless():
        while not stop.is_set():
            produced.append(1)
            yield 1
            threading.Event().wait(0.001)

    def failing():
        yield 2
        raise RuntimeError("walk failed")

    with pytest.raises(RuntimeError, match="walk failed"):
        list(interleave([endless(), failing()], 1, stop))
    assert stop.is_set()
    count = len(produced)
    threading.Event().wait(0.05)
    assert len(produced) == count  # the endless walk has ended


def test_a_click_in_a_constant_volume_says_the_mask_is_not_based_on_the_image(weights):
    s = Session(np.zeros((6, 32, 32), np.float32), weights=weights)
    s.click((3, 16, 16))
    assert "constant" in s.last_warning


def test_a_lone_negative_click_says_why_the_object_is_empty(session):
    assert not session.click((12, 32, 32), positive=False).any()
    assert "nothing to remove" in session.last_warning
    session.click((12, 32, 32))
    assert session.last_warning is None  # an ordinary round says nothing


def test_suspects_are_the_worst_rated_slices_the_user_has_not_touched(session):
    session.click((12, 32, 32))
    session.click((6, 32, 32))
    suspects = session.suspects(n=4)
    shown = set(np.flatnonzero(session.mask.any(axis=(1, 2))))
    assert 0 < len(suspects) <= 4
    assert all(z in shown and z not in (12, 6) for z, _ in suspects)
    scores = [score for _, score in suspects]
    assert scores == sorted(scores) and all(0.0 <= s <= 1.0 for s in scores)
    everything = session.suspects(n=100)  # every rated slice: the first four are the worst of them
    assert suspects == everything[:4] and len(everything) == len(shown - {12, 6})


def test_past_the_reach_a_walk_needs_a_confident_mask_no_larger_than_twice_its_start():
    """Confidence: the mean probability inside the mask. A confident mask of the start's size goes on;
    an unsure one, or a confident one that has spread to over twice the start's area (a leak into the
    background, as weights less sure of an object's end make), ends the walk."""
    start = np.zeros((32, 32), dtype=bool)
    start[10:20, 10:20] = True  # 100 pixels

    def logits(prob: float) -> torch.Tensor:
        inside = torch.full((1, 1, 32, 32), -6.0)
        inside[..., 8:22, 8:22] = float(np.log(prob / (1 - prob)))
        return inside

    assert confidence(logits(0.95)) == pytest.approx(0.95, abs=1e-4)
    assert confidence(torch.full((1, 1, 8, 8), -3.0)) == 0.0  # an empty mask
    assert goes_on_past_reach(logits(0.95), start, start, 0.85)
    assert not goes_on_past_reach(logits(0.8), start, start, 0.85)
    spread = np.ones((32, 32), dtype=bool)  # 1,024 pixels
    assert not goes_on_past_reach(logits(0.95), spread, start, 0.85)


def test_a_confident_walk_runs_past_the_reach_to_the_end_of_a_long_object(weights):
    """A long object clicked with a short reach: with the reach as a hard limit the walk stops early;
    by default it goes on while the network is confident of its slice masks, covers the object's
    slices, and never runs past where the walk with no reach at all ends."""
    image, ref = ellipsoid_volume(shape=(40, 48, 48), radii=(16, 10, 10))
    extent = {}
    for name, options in (("fixed", {"reach": 0.3, "reach_confidence": None}), ("confident", {"reach": 0.3}),
                          ("none", {"reach": math.inf})):
        mask = Session(image, weights=weights, **options).click((20, 24, 24))
        extent[name] = int(mask.any(axis=(1, 2)).sum())
    assert extent["fixed"] < extent["confident"] <= extent["none"]
    assert extent["confident"] >= 0.9 * int(ref.any(axis=(1, 2)).sum())
    with pytest.raises(ValueError, match="reach_confidence"):
        Session(image, weights=weights, reach_confidence=1.5)
