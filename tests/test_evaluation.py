"""The simulated-click protocol, its metrics, the random-walker baseline and the ``limnet eval`` pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_limnet.clicks import dice, first_click, next_click, simulate
from napari_limnet.evaluation import find_cases, noc, object_metrics
from napari_limnet.evaluation.baselines import RandomWalkerSession, coarse_shape
from napari_limnet.evaluation.cli import main as eval_main
from napari_limnet.evaluation.report import ALL, POOLED, markdown_table, summary_rows
from napari_limnet.evaluation.runner import object_crop, thin_slices

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# ---- click placement -------------------------------------------------------------------------------
def test_first_click_is_positive_at_the_distance_maximum_of_the_largest_cross_section():
    ref = np.zeros((5, 20, 20), dtype=bool)
    ref[1, 8:11, 8:11] = True  # small cross-section
    ref[3, 2:11, 5:14] = True  # largest: 9x9 square centred at (6, 9)
    click = first_click(ref)
    assert click.positive
    assert click.point == (3, 6, 9)


def test_first_click_treats_the_slice_border_as_boundary():
    ref = np.zeros((1, 10, 10), dtype=bool)
    ref[0, :, :5] = True  # touches three image edges; the farthest point from any edge is column 2
    assert first_click(ref).point[2] == 2


def test_first_click_uses_in_plane_spacing():
    # A 5 x 9 pixel rectangle: in pixels its short axis is y, so the farthest points lie on the middle
    # row; with 3 mm rows it is 15 mm x 9 mm, and they lie on the middle column instead.
    ref = np.zeros((1, 7, 11), dtype=bool)
    ref[0, 1:6, 1:10] = True
    assert first_click(ref).point == (0, 3, 3)
    assert first_click(ref, spacing=(1.0, 3.0, 1.0)).point == (0, 2, 5)


def test_next_click_corrects_the_largest_false_negative_region_of_the_worst_slice():
    ref = np.zeros((4, 30, 30), dtype=bool)
    ref[:, 5:25, 5:25] = True
    pred = ref.copy()
    pred[1, 5:8, 5:8] = False  # 9 FN voxels on slice 1
    pred[2, 10:20, 10:20] = False  # 100 FN voxels on slice 2, the worst slice ...
    pred[2, 0:2, 0:2] = True  # ... which also has a small FP region
    click = next_click(pred, ref)
    assert click.positive
    z, y, x = click.point
    assert (z, y, x) == (2, 14, 14)  # centre of the 10 x 10 hole (first of its 4 maxima in scan order)


def test_next_click_is_negative_on_a_false_positive_region():
    ref = np.zeros((3, 20, 20), dtype=bool)
    ref[:, 2:6, 2:6] = True
    pred = ref.copy()
    pred[1, 10:17, 10:17] = True
    click = next_click(pred, ref)
    assert not click.positive
    assert click.point == (1, 13, 13)


def test_next_click_picks_the_largest_region_not_the_first():
    ref = np.zeros((1, 30, 30), dtype=bool)
    pred = ref.copy()
    pred[0, 1:4, 1:4] = True  # 9 FP voxels, first in scan order
    ref[0, 10:20, 10:20] = True  # 100 FN voxels
    click = next_click(pred, ref)
    assert click.positive and click.point[1:] == (14, 14)


def test_next_click_returns_none_for_a_perfect_result_and_refuses_shape_mismatch():
    ref = np.zeros((2, 5, 5), dtype=bool)
    ref[1, 2, 2] = True
    assert next_click(ref.copy(), ref) is None
    with pytest.raises(ValueError, match="shape"):
        next_click(np.zeros((2, 5, 4), bool), ref)
    with pytest.raises(ValueError, match="empty"):
        first_click(np.zeros((2, 5, 5), bool))


# ---- metrics -----------------------------------------------------------------------------------------
def test_dice_arithmetic():
    a = np.zeros((2, 4, 4), bool)
    b = a.copy()
    assert dice(a, b) == 1.0  # both empty
    a[0, :2] = True  # 8 voxels
    b[0, 1:3] = True  # 8 voxels, 4 shared
    assert dice(a, b) == pytest.approx(2 * 4 / 16)
    assert dice(a, np.zeros_like(a)) == 0.0


def test_noc_and_object_metrics():
    dices = [0.5, 0.8, 0.86, 0.88, 0.91] + [0.91] * 15
    assert noc(dices, 0.85) == 3
    assert noc(dices, 0.90) == 5
    assert noc([0.5] * 20, 0.85) == 20
    assert noc([0.5, 0.95], 0.90, cap=1) == 1  # cap: a success after the cap does not count
    m = object_metrics(dices)
    assert m == {"dice@1": 0.5, "dice@3": 0.86, "dice@5": 0.91, "dice@10": 0.91, "noc@85": 3, "noc@90": 5}
    assert "dice@10" not in object_metrics(dices[:5])  # not run, so not reported


def test_summary_averages_objects_within_a_source_sources_with_each_other_and_all_objects():
    def record(source, d1, seconds):
        return {"source": source, "label": 1, "method": "m", "dice": [d1], "seconds": seconds,
                **object_metrics([d1])}

    records = [record("a", 0.2, [1.0]), record("a", 0.4, [3.0]), record("b", 0.9, [2.0])]
    rows = {row["group"]: row for row in summary_rows(records, "source")}
    assert rows["a"]["objects"] == 2 and rows["a"]["dice@1"] == pytest.approx(0.3)
    assert rows["a"]["s/click"] == 2.0 and rows["a"]["dice@3"] is None
    assert rows[ALL]["dice@1"] == pytest.approx((0.3 + 0.9) / 2)  # sources weigh equally
    assert rows[ALL]["noc@85"] == pytest.approx((20 + 1) / 2)
    assert rows[POOLED]["objects"] == 3 and rows[POOLED]["dice@1"] == pytest.approx((0.2 + 0.4 + 0.9) / 3)
    assert rows[POOLED]["noc@85"] == pytest.approx((20 + 20 + 1) / 3) and rows[POOLED]["s/click"] == 2.0
    assert "| a | m | 2 | 0.300 | – |" in markdown_table(list(rows.values()), "source")


# ---- random-walker baseline ------------------------------------------------------------------------
def _sphere_volume(shape=(24, 40, 40), radius=8.0, seed=0):
    zz, yy, xx = np.indices(shape)
    centre = np.array(shape) / 2
    ref = ((zz - centre[0]) ** 2 + (yy - centre[1] + 3) ** 2 + (xx - centre[2]) ** 2) <= radius**2
    rng = np.random.default_rng(seed)
    volume = np.where(ref, 100.0, 60.0) + rng.normal(0, 12, shape)
    return volume.astype(np.float32), ref


def test_coarse_shape_respects_the_budget_and_coarsens_fine_axes_first():
    assert coarse_shape((10, 20, 20), (1, 1, 1), 10_000) == (10, 20, 20)
    grid = coarse_shape((20, 200, 200), (5.0, 1.0, 1.0), 50_000)
    assert np.prod(grid) <= 50_000 and grid[0] == 20


def test_random_walker_improves_with_clicks_on_a_sphere():
    volume, ref = _sphere_volume()
    result = simulate(RandomWalkerSession(volume), ref, (1.0, 1.0, 1.0), max_clicks=5)
    d = result["dice"]
    assert len(d) == 5 and len(result["seconds"]) == len(result["clicks"])
    assert result["clicks"][0][3] is True
    assert max(d[1:]) > d[0]
    assert d[-1] > 0.8


def test_random_walker_rejects_clicks_outside_and_reset_forgets():
    volume, _ = _sphere_volume((8, 16, 16), 4)
    s = RandomWalkerSession(volume)
    with pytest.raises(ValueError, match="outside"):
        s.click((8, 0, 0))
    assert s.click((4, 8, 8)).any()
    s.reset()
    assert not s.mask.any() and s.clicks == []


# ---- datasets and the command --------------------------------------------------------------------------
def _write_case(folder: Path, name: str, volume: np.ndarray, labels: np.ndarray, spacing=(2.0, 1.0, 1.0)):
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    folder.mkdir(parents=True, exist_ok=True)
    for kind, data in (("image", volume), ("label", labels.astype(np.uint8))):
        nib.save(nib.Nifti1Image(data.transpose(2, 1, 0), affine), folder / f"{name}_{kind}.nii.gz")


@pytest.fixture
def synthetic_data(tmp_path):
    root = tmp_path / "data"
    volume, ref = _sphere_volume((10, 32, 32), 4.5)
    labels = ref.astype(np.uint8) * 2
    labels[0, 0, 0] = 5  # a 1-voxel object: skipped (< 50 voxels)
    _write_case(root / "toy", "a", volume, labels)
    _write_case(root / "toy", "b", volume[:, ::-1].copy(), labels[:, ::-1].copy())
    _write_case(root / "toy", "c", volume, labels)
    (root / "splits.json").write_text(json.dumps({"toy": {"train": ["a", "c"], "val": ["b"]}}))
    return root


def test_find_cases_follows_the_splits_file(synthetic_data, tmp_path):
    assert [c.name for c in find_cases(synthetic_data)] == ["a", "b", "c"]
    assert [c.name for c in find_cases(synthetic_data, split="train", limit=1)] == ["a"]
    assert [c.name for c in find_cases(synthetic_data, split="val")] == ["b"]
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"elsewhere": {"val": []}}))
    with pytest.raises(ValueError, match="no 'val' list for source 'toy'"):
        find_cases(synthetic_data, split="val", splits_file=bad)


def test_eval_command_end_to_end(synthetic_data, tmp_path):
    out = tmp_path / "out"
    code = eval_main([str(synthetic_data), "--split", "val", "--max-clicks", "2", "--out", str(out),
                      "--quiet", "--methods", "random-walker,limnet,limnet-no-mrf", "--device", "cpu"])
    assert code == 0
    records = [json.loads(line) for line in (out / "objects.jsonl").read_text().splitlines()]
    assert sorted(r["method"] for r in records) == ["limnet", "limnet-no-mrf", "random-walker"]
    for r in records:
        assert (r["source"], r["case"], r["label"]) == ("toy", "b", 2)
        assert len(r["dice"]) == 2 and 1 <= len(r["clicks"]) <= 2 and r["noc@90"] <= 20
        assert all(0.0 <= d <= 1.0 for d in r["dice"])
    summary = (out / "summary.md").read_text()
    assert "| toy | random-walker | 1 |" in summary and "| toy:2 | limnet |" in summary
    assert (out / "dice_vs_clicks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_slice_gap_evaluates_every_kth_slice_at_the_wider_spacing(synthetic_data, tmp_path):
    """``--slice-gap`` sees a 2 mm volume as a 4 mm one: every 2nd slice, spacing doubled; a gap at
    or below the slice spacing changes nothing."""
    volume, ref = _sphere_volume((10, 32, 32), 4.5)
    image, labels, spacing = thin_slices(volume, ref, (2.0, 1.0, 1.0), 4.0)
    assert np.array_equal(image, volume[::2]) and np.array_equal(labels, ref[::2]) and spacing == (4.0, 1.0, 1.0)
    assert thin_slices(volume, ref, (2.0, 1.0, 1.0), 1.0)[2] == (2.0, 1.0, 1.0)
    out = tmp_path / "gap"
    code = eval_main([str(synthetic_data), "--split", "val", "--slice-gap", "4", "--max-clicks", "1",
                      "--methods", "random-walker", "--out", str(out), "--quiet"])
    assert code == 0
    (record,) = [json.loads(line) for line in (out / "objects.jsonl").read_text().splitlines()]
    assert record["voxels"] == int(ref[::2].sum()) and record["clicks"][0][0] < 5
    assert "every slice nearest 4 mm apart" in (out / "summary.md").read_text()
    assert eval_main([str(synthetic_data), "--slice-gap", "0", "--out", str(out)]) == 2


def test_object_crop_is_the_bounding_box_grown_by_the_margin_and_clipped_to_the_volume():
    ref = np.zeros((10, 32, 32), dtype=bool)
    ref[1:4, 10:15, 20:30] = True
    view = object_crop(ref, (3, 2))
    assert view == (slice(0, 6), slice(7, 18), slice(17, 32))
    assert ref[view].sum() == ref.sum()


def test_crop_margin_evaluates_each_object_alone_on_its_crop(synthetic_data, tmp_path):
    """``--crop-margin``: the clicks land in the object's crop (coordinates of the crop, which holds the
    whole object), under a method name of its own; a malformed margin is refused."""
    out = tmp_path / "crop"
    code = eval_main([str(synthetic_data), "--split", "val", "--crop-margin", "2,1", "--max-clicks", "2",
                      "--methods", "random-walker", "--out", str(out), "--quiet"])
    assert code == 0
    (record,) = [json.loads(line) for line in (out / "objects.jsonl").read_text().splitlines()]
    volume, ref = _sphere_volume((10, 32, 32), 4.5)
    shape = ref[object_crop(ref, (2, 1))].shape
    assert record["method"] == "random-walker/crop" and record["voxels"] == int(ref.sum())
    assert all(0 <= c < n for click in record["clicks"] for c, n in zip(click[:3], shape))
    assert record["dice"][-1] > 0.5
    assert "each object on its box + 2 px, 1 slices" in (out / "summary.md").read_text()
    assert eval_main([str(synthetic_data), "--crop-margin", "16", "--out", str(out)]) == 2


def test_eval_command_reports_bad_input(tmp_path, capsys):
    assert eval_main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "data folder not found" in capsys.readouterr().err


def test_eval_names_every_bad_case_before_running_any(synthetic_data, tmp_path, capsys):
    volume, ref = _sphere_volume((10, 32, 32), 4.5)
    _write_case(synthetic_data / "toy", "d", volume, ref[:8])  # a label of another shape
    _write_case(synthetic_data / "toy", "e", volume, ref)
    (synthetic_data / "toy" / "e_image.nii.gz").write_bytes(b"not a scan")  # a corrupt image
    out = tmp_path / "out"
    out.mkdir()
    (out / "objects.jsonl").write_text("an earlier run\n")
    assert eval_main([str(synthetic_data), "--methods", "random-walker", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "nothing was run" in err
    assert "d_label.nii.gz: shape (8, 32, 32) differs from the image's (10, 32, 32)" in err
    assert "e_image.nii.gz: not a readable NIfTI" in err
    assert (out / "objects.jsonl").read_text() == "an earlier run\n"  # the earlier results are kept


@pytest.mark.skipif(not (SHARED_DATA / "splits.json").exists(),
                    reason=f"the shared data folder is not present at {SHARED_DATA}")
def test_eval_on_one_real_val_case(tmp_path):
    out = tmp_path / "real"
    code = eval_main([str(SHARED_DATA), "--split", "val", "--sources", "msd_hippocampus", "--limit", "1",
                      "--methods", "random-walker", "--max-clicks", "3", "--out", str(out), "--quiet"])
    assert code == 0
    records = [json.loads(line) for line in (out / "objects.jsonl").read_text().splitlines()]
    assert {r["label"] for r in records} == {1, 2}
    assert all(r["dice"][-1] > 0.3 for r in records)


def test_box_first_and_suspect_guided_users(synthetic_data, tmp_path, capsys):
    """``--first-prompt box``: round 1 is the object's tight box, later rounds are clicks.
    ``--user suspects``: corrections go only to the slices the session names as suspect, and the report
    says how often the first suspect was among the truly worst slices. The random walker takes neither."""
    out = tmp_path / "box"
    assert eval_main([str(synthetic_data), "--split", "val", "--max-clicks", "3", "--out", str(out), "--quiet",
                      "--methods", "limnet", "--first-prompt", "box", "--user", "suspects", "--device", "cpu"]) == 0
    (record,) = [json.loads(line) for line in (out / "objects.jsonl").read_text().splitlines()]
    assert record["method"] == "limnet/box/suspects" and len(record["box"]) == 5 and len(record["dice"]) == 3
    assert len(record["clicks"]) <= 2  # the box was round 1
    for click in record["clicks"]:
        assert click[0] != record["box"][0]  # suspects leave out the slice the user prompted on
    assert len(record["suspect_hits"]) >= 1
    assert "## Where to look next" in (out / "summary.md").read_text()
    assert eval_main([str(synthetic_data), "--split", "val", "--out", str(tmp_path / "rw"), "--quiet",
                      "--methods", "random-walker", "--first-prompt", "box"]) == 2
    assert "random-walker take(s) clicks only" in capsys.readouterr().err


def test_a_box_user_and_a_suspect_user_on_a_real_case(shared_data):
    """On real val objects the box-first user reaches at least the one-click user's first Dice, and the
    suspect-guided user improves on its first round."""
    import json as _json

    from napari_limnet import Session
    from napari_limnet.clicks import simulate
    from napari_limnet.training.data import objects_of, read_case

    splits = _json.loads((shared_data / "splits.json").read_text())
    image, labels, spacing = read_case(shared_data, "acdc_cine_mri", splits["acdc_cine_mri"]["val"][1])
    box_first, click_first, suspects = [], [], []
    for label in objects_of(labels, 50):
        ref = labels == label
        box_first.append(simulate(Session(image, spacing), ref, spacing, 1, first_prompt="box")["dice"][0])
        click_first.append(simulate(Session(image, spacing), ref, spacing, 1)["dice"][0])
        suspects.append(simulate(Session(image, spacing), ref, spacing, 4, user="suspects")["dice"])
    assert np.mean(box_first) >= np.mean(click_first)
    assert np.mean([d[-1] for d in suspects]) > np.mean([d[0] for d in suspects])
