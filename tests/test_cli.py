"""The ``limnet`` command line: segment round trip keeps the geometry; bad input gets one clear line."""

from __future__ import annotations

import argparse

import nibabel as nib
import numpy as np
import pytest
import tifffile
from synthetic import ellipsoid_volume

from napari_limnet.cli import main, parse_click


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
    assert main(["segment", str(path), "--click", "99,1,1", "--out", str(out), "--quiet"]) == 2
    assert "outside the volume" in capsys.readouterr().err
    assert not out.exists()


def test_unreadable_input_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti file")
    assert main(["segment", str(bad), "--click", "1,1,1", "--out", str(tmp_path / "m.nii.gz")]) == 2
    assert "limnet segment: error:" in capsys.readouterr().err


def test_a_missing_weight_file_is_one_clear_error(scan, tmp_path, capsys):
    path, _ = scan
    out = tmp_path / "m.nii.gz"
    assert main(["segment", str(path), "--click", "8,24,20", "--out", str(out), "--weights",
                 str(tmp_path / "absent.pt")]) == 2
    assert "limnet segment: error: weight file not found" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(("text", "expected"), [("1,2,3", ((1, 2, 3), True)), ("4, 5.5, 6,-", ((4, 5.5, 6), False)),
                                                ("1,2,3,+", ((1, 2, 3), True))])
def test_parse_click(text, expected):
    assert parse_click(text) == expected


@pytest.mark.parametrize("text", ["1,2", "a,b,c", "1,2,3,4"])
def test_parse_click_refuses_malformed(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_click(text)


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    text = capsys.readouterr().out
    for option in ("--click", "--out", "--axis", "--label", "--device", "--weights", "--no-fusion", "--no-reach"):
        assert option in text
