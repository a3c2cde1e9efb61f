"""io.volumes: NIfTI/TIFF reading into (z, y, x), geometry kept, atomic label writing."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_limnet.io import VolumeError, probe_volume, read_volume, write_labels

AFFINE = np.array([[-0.8, 0, 0, 90.0], [0, 0.7, 0, -100.0], [0, 0, 3.0, -40.0], [0, 0, 0, 1]])


def _nifti(path, data_xyz, affine=AFFINE):
    img = nib.Nifti1Image(data_xyz, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=2)
    nib.save(img, str(path))
    return path


@pytest.fixture
def volume_xyz():
    return np.random.default_rng(1).integers(0, 1000, size=(12, 10, 7)).astype(np.int16)


def test_nifti_is_read_as_zyx_with_spacing_and_affine(tmp_path, volume_xyz):
    vol = read_volume(_nifti(tmp_path / "scan.nii.gz", volume_xyz))
    assert vol.data.shape == (7, 10, 12)
    np.testing.assert_array_equal(vol.data, volume_xyz.transpose(2, 1, 0))
    assert vol.spacing == pytest.approx((3.0, 0.7, 0.8))
    np.testing.assert_allclose(vol.affine, AFFINE)
    assert vol.header["sform_code"] == 2 and vol.header["qform_code"] == 1
    assert probe_volume(tmp_path / "scan.nii.gz") == (7, 10, 12)


def test_nifti_label_round_trip_keeps_geometry_and_values(tmp_path, volume_xyz):
    src = read_volume(_nifti(tmp_path / "scan.nii", volume_xyz))
    labels = np.zeros(src.data.shape, dtype=np.int32)
    labels[2:5, 3:7, 4:9] = 1
    labels[0, 0, 0] = 300
    out = write_labels(tmp_path / "mask.nii.gz", labels, like=src)
    back = nib.load(str(out))
    np.testing.assert_allclose(back.affine, AFFINE)
    assert int(back.header["sform_code"]) == 2 and int(back.header["qform_code"]) == 1
    assert back.get_data_dtype() == np.uint16  # smallest type holding 300
    again = read_volume(out)
    np.testing.assert_array_equal(again.data, labels)
    np.testing.assert_allclose(again.affine, src.affine)


def test_writer_geometry_from_spacing_or_explicit_affine(tmp_path):
    labels = np.ones((3, 4, 5), dtype=bool)
    out = write_labels(tmp_path / "a.nii.gz", labels, spacing=(2.0, 0.5, 0.25))
    np.testing.assert_allclose(nib.load(str(out)).affine, np.diag([0.25, 0.5, 2.0, 1.0]))
    out = write_labels(tmp_path / "b.nii", labels, affine=AFFINE)
    np.testing.assert_allclose(nib.load(str(out)).affine, AFFINE)


def test_tiff_round_trip_keeps_spacing_and_values(tmp_path):
    labels = np.zeros((4, 6, 8), dtype=np.int64)
    labels[1:3, 2:4, 2:6] = 7
    for value, name in ((7, "small.tif"), (70000, "big.tiff")):
        labels[0, 0, 0] = value
        out = write_labels(tmp_path / name, labels, spacing=(2.5, 0.5, 0.25))
        vol = read_volume(out)
        np.testing.assert_array_equal(vol.data, labels)
        assert vol.spacing == pytest.approx((2.5, 0.5, 0.25))


def test_tiff_spacing_from_imagej_metadata_and_2d_images(tmp_path):
    stack = np.arange(3 * 5 * 6, dtype=np.uint16).reshape(3, 5, 6)
    tifffile.imwrite(tmp_path / "ij.tif", stack, imagej=True, resolution=(1 / 0.4, 1 / 0.3),
                     metadata={"spacing": 1.5, "unit": "um", "axes": "ZYX"})
    vol = read_volume(tmp_path / "ij.tif")
    assert vol.spacing == pytest.approx((1.5, 0.3, 0.4))
    np.testing.assert_array_equal(vol.data, stack)
    tifffile.imwrite(tmp_path / "plain.tif", stack[0])
    vol = read_volume(tmp_path / "plain.tif")
    assert vol.data.shape == (1, 5, 6) and vol.spacing == (1.0, 1.0, 1.0)


def test_bad_files_are_refused_with_a_reason(tmp_path, volume_xyz):
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"this is not an image" * 20)
    with pytest.raises(VolumeError, match="garbage.nii.gz"):
        probe_volume(garbage)
    good = _nifti(tmp_path / "good.nii.gz", volume_xyz)
    truncated = tmp_path / "truncated.nii.gz"
    raw = gzip.decompress(good.read_bytes())
    truncated.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    probe_volume(truncated)  # the header alone looks fine...
    with pytest.raises(VolumeError, match="truncated or corrupt"):
        read_volume(truncated)  # ...the voxels are not
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((8, 8, 3), dtype=np.uint8), photometric="rgb")
    with pytest.raises(VolumeError, match="one channel"):
        probe_volume(rgb)
    with pytest.raises(VolumeError, match="expected a 2D or 3D"):
        read_volume(_nifti(tmp_path / "4d.nii", np.zeros((4, 4, 4, 3), dtype=np.uint8)))
    with pytest.raises(VolumeError, match="unsupported"):
        read_volume(tmp_path / "scan.mha")


def test_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "mask.nii.gz"
    write_labels(target, np.ones((2, 3, 4), dtype=np.uint8))
    before = target.read_bytes()

    def broken_save(img, filename):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_labels(target, np.zeros((2, 3, 4), dtype=np.uint8))
    assert target.read_bytes() == before  # the good file is untouched
    assert os.listdir(tmp_path) == ["mask.nii.gz"]  # and no temporary file is left behind


def test_labels_are_validated(tmp_path):
    with pytest.raises(ValueError, match="3D"):
        write_labels(tmp_path / "x.nii.gz", np.zeros((3, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        write_labels(tmp_path / "x.nii.gz", -np.ones((2, 2, 2), dtype=int))
    with pytest.raises(ValueError, match="format"):
        write_labels(tmp_path / "x.png", np.zeros((2, 2, 2), dtype=np.uint8))
