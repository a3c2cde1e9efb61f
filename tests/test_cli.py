"""The ``limnet`` command line: segment round trip keeps the geometry; bad input gets one clear line."""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
from clinical import ras_point, write_dicom_series
from synthetic import ellipsoid_volume

from napari_limnet.cli import main, parse_click
from napari_limnet.evaluation.cli import main as eval_main
from napari_limnet.training.cli import main as train_main


@pytest.fixture
def scan(tmp_path):
    image, _ = ellipsoid_volume(shape=(16, 48, 40))
    affine = np.array([[0, 0, -0.8, 30.0], [0, 0.7, 0, -12.0], [2.5, 0, 0, 5.0], [0, 0, 0, 1]])
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.transpose(image, (2, 1, 0)).astype(np.int16), affine), path)
    return path, affine


def test_segment_round_trip_keeps_affine_and_shape(scan, tmp_path, capsys):
    path, affine = scan
    out = tmp_path / "mask.nii.gz"
    code = main(["segment", str(path), "--click", "8,24,20", "--click", "8,3,3,-", "--label", "3",
                 "--out", str(out), "--quiet"])
    assert code == 0
    written = nib.load(out)
    assert np.allclose(written.affine, affine)
    assert written.shape == nib.load(path).shape
    values = set(np.unique(np.asarray(written.dataobj)).tolist())
    assert values <= {0, 3}
    err = capsys.readouterr().err
    assert "round 2:" in err and "weights:" in err


def test_segment_writes_tiff_too(scan, tmp_path):
    path, _ = scan
    out = tmp_path / "mask.tif"
    assert main(["segment", str(path), "--click", "8,24,20", "--axis", "1", "--out", str(out), "--quiet"]) == 0
    assert tifffile.imread(out).shape == (16, 48, 40)


def test_click_outside_is_one_clear_error(scan, tmp_path, capsys):
    path, _ = scan
    out = tmp_path / "mask.nii.gz"
    absent = str(tmp_path / "absent.pt")  # had the network loaded first, this would be the error
    assert main(["segment", str(path), "--click", "99,1,1", "--out", str(out), "--weights", absent]) == 2
    err = capsys.readouterr().err
    assert err == "limnet segment: error: click 99,1,1 is outside the volume (voxel indices z 0 to 15, " \
                  "y 0 to 47, x 0 to 39)\n"
    assert not out.exists()


def test_a_negative_coordinate_gets_the_same_message_with_or_without_equals(scan, tmp_path, capsys):
    path, _ = scan
    messages = []
    for click in (["--click", "-1,20,20"], ["--click=-1,20,20"]):
        assert main(["segment", str(path), *click, "--out", str(tmp_path / "m.nii.gz")]) == 2
        messages.append(capsys.readouterr().err)
    assert messages[0] == messages[1]
    assert messages[0].startswith("limnet segment: error: click -1,20,20 is outside the volume")


def test_click_mm_is_the_position_napari_shows(scan, tmp_path, capsys):
    """The millimetres napari displays for a voxel of a scan opened with the plugin lead back to it."""
    from napari.layers import Image

    from napari_limnet.ui._reader import napari_get_reader

    path, _ = scan
    [(data, kwargs, _)] = napari_get_reader(str(path))(str(path))
    world = Image(data, **kwargs).data_to_world((8, 24, 20))
    assert not np.allclose(world, (8, 24, 20))  # anisotropic spacing: mm and voxels differ
    by_voxel, by_mm = tmp_path / "voxel.nii.gz", tmp_path / "mm.nii.gz"
    assert main(["segment", str(path), "--click", "8,24,20", "--out", str(by_voxel), "--quiet"]) == 0
    mm = ",".join(f"{c:.4f}" for c in world)
    assert main(["segment", str(path), "--click-mm", mm, "--out", str(by_mm), "--quiet"]) == 0
    voxel_mask = np.asarray(nib.load(by_voxel).dataobj)
    assert voxel_mask.any()
    np.testing.assert_array_equal(np.asarray(nib.load(by_mm).dataobj), voxel_mask)
    capsys.readouterr()
    assert main(["segment", str(path), "--click-mm", "-1,3,3", "--out", str(by_mm)]) == 2
    assert "click -1,3,3 mm is outside the volume (z 0 to 12, y 0 to 32.9, x 0 to 97.5 mm)" in capsys.readouterr().err


def test_constant_scan_and_lone_negative_click_say_what_happened(scan, tmp_path, capsys):
    path, affine = scan
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((40, 48, 16), dtype=np.int16), affine), flat)
    assert main(["segment", str(flat), "--click", "8,24,20", "--out", str(tmp_path / "a.nii.gz"), "--quiet"]) == 0
    assert "warning: the scan is constant (every voxel is 0)" in capsys.readouterr().err
    out = tmp_path / "b.nii.gz"
    assert main(["segment", str(path), "--click", "8,3,3,-", "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: the mask is empty: only negative clicks were given" in err
    assert not np.asarray(nib.load(out).dataobj).any()
    assert main(["segment", str(path), "--click", "8,24,20", "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err and "replacing the file that was there" in err


def test_a_click_on_a_ct_gets_the_advice_to_use_a_box(scan, tmp_path, capsys):
    path, affine = scan
    image = np.asarray(nib.load(path).dataobj)
    ct = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.where(image > image.mean(), 40, -1000).astype(np.int16), affine), ct)
    assert main(["segment", str(ct), "--click", "8,24,20", "--out", str(tmp_path / "a.nii.gz"), "--quiet"]) == 0
    assert "note: on a CT, a --box" in capsys.readouterr().err
    assert main(["segment", str(path), "--click", "8,24,20", "--out", str(tmp_path / "b.nii.gz"), "--quiet"]) == 0
    assert "--box" not in capsys.readouterr().err  # not a CT


def test_segment_a_dicom_series_folder_into_nrrd(tmp_path):
    image, _ = ellipsoid_volume(shape=(12, 40, 36))
    series = sitk.GetImageFromArray(image.astype(np.int16))
    series.SetSpacing((0.9, 0.9, 3.0))
    series.SetOrigin((-20.0, 15.0, 40.0))
    write_dicom_series(tmp_path / "series", series)
    out = tmp_path / "mask.nrrd"
    assert main(["segment", str(tmp_path / "series"), "--click", "6,20,18", "--out", str(out), "--quiet"]) == 0
    mask = sitk.ReadImage(str(out))
    assert mask.GetSize() == series.GetSize() and mask[18, 20, 6] == 1
    np.testing.assert_allclose(ras_point(mask, (18, 20, 6)), ras_point(series, (18, 20, 6)), atol=1e-4)


@pytest.mark.parametrize("entry", [lambda p: main(["eval", p]), lambda p: eval_main([p]),
                                   lambda p: train_main(["train", p]), lambda p: main(["train", p])],
                         ids=["limnet eval", "evaluation module", "training module", "limnet train"])
def test_every_entry_point_reports_bad_input_in_one_line(entry, tmp_path, capsys):
    assert entry(str(tmp_path / "missing")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ": error: " in err and "missing" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--help"], ["segment", "--help"], ["view", "--help"]])
def test_help_does_not_load_torch(argv):
    """Help is instant: torch (seconds to import) loads only for commands that compute."""
    code = ("import sys\nfrom napari_limnet.cli import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules, file=sys.stderr)")
    run = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert "usage: limnet" in run.stdout
    assert run.stderr.strip().splitlines()[-1] == "False"


def test_unreadable_input_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti file")
    assert main(["segment", str(bad), "--click", "1,1,1", "--out", str(tmp_path / "m.nii.gz")]) == 2
    assert "limnet segment: error:" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "message"), [
    ("m.nii.gz", "weight file not found"),
    # the output name is checked first, before any work: the missing weights are not even reached
    ("mask.png", "mask.png: labels cannot be written in this file format; use one of .nii.gz")])
def test_a_missing_weight_file_or_unwritable_output_is_one_clear_error(scan, tmp_path, capsys, name, message):
    path, _ = scan
    out = tmp_path / name
    assert main(["segment", str(path), "--click", "8,24,20", "--out", str(out), "--weights",
                 str(tmp_path / "absent.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("limnet segment: error: ") and message in err
    assert not out.exists()


@pytest.mark.parametrize(("text", "expected"), [("1,2,3", ((1, 2, 3), True)), ("4, 5.5, 6,-", ((4, 5.5, 6), False)),
                                                ("1,2,3,+", ((1, 2, 3), True)), ("-1,2,3", ((-1, 2, 3), True))])
def test_parse_click(text, expected):
    assert parse_click(text)[:2] == expected


@pytest.mark.parametrize("text", ["1,2", "a,b,c", "1,2,3,4", "nan,1,1"])
def test_parse_click_refuses_malformed(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_click(text)


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    text = capsys.readouterr().out
    for option in ("--click", "--click-mm", "--out", "--axis", "--label", "--device", "--weights", "--no-fusion",
                   "--no-reach"):
        assert option in text
    assert "--click takes voxel indices" in " ".join(text.split())


def test_segment_from_a_box_then_a_click(scan, tmp_path, capsys):
    path, _ = scan
    image, ref = ellipsoid_volume(shape=(16, 48, 40))
    z = int(np.argmax(ref.sum(axis=(1, 2))))
    rows, cols = np.flatnonzero(ref[z].any(1)), np.flatnonzero(ref[z].any(0))
    box = f"{z},{rows[0]},{cols[0]},{rows[-1]},{cols[-1]}"
    out = tmp_path / "box.nii.gz"
    assert main(["segment", str(path), "--box", box, "--click", f"{z},{rows[0] + 1},{cols[0] + 1},-",
                 "--out", str(out), "--quiet"]) == 0
    mask = np.transpose(np.asarray(nib.load(out).dataobj), (2, 1, 0)).astype(bool)
    assert 2 * (mask & ref).sum() / (mask.sum() + ref.sum()) > 0.8
    assert "round 2:" in capsys.readouterr().err  # the box, then the click


@pytest.mark.parametrize("box, message", [("3,1,1,60,5", "outside the volume"), ("3,1,1", "a box is z,y0,x0,y1,x1"),
                                          ("-1,1,1,5,5", "outside the volume")])
def test_a_bad_box_is_refused_before_the_network_loads(scan, tmp_path, capsys, box, message):
    path, _ = scan
    absent = str(tmp_path / "no-such-weights.pt")  # loading would fail with another message
    with contextlib.suppress(SystemExit):  # argparse's own refusal of a malformed value exits with 2
        assert main(["segment", str(path), "--box", box, "--out", str(tmp_path / "m.nii.gz"),
                     "--weights", absent]) == 2
    assert message in capsys.readouterr().err
