"""io: NIfTI/TIFF/NRRD/MetaImage/DICOM reading into (z, y, x), geometry kept, atomic label writing."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
from clinical import SERIES_UID, oblique_image, ras_point, write_dicom_series

from napari_limnet.io import VolumeError, check_writable, probe_volume, read_volume, write_labels

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
    (tmp_path / "scan.png").write_bytes(b"png")
    with pytest.raises(VolumeError, match="unsupported"):
        read_volume(tmp_path / "scan.png")


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


def test_nrrd_write_is_atomic_too(tmp_path, monkeypatch):
    target = tmp_path / "mask.nrrd"
    write_labels(target, np.ones((2, 3, 4), dtype=np.uint8))
    before = target.read_bytes()

    def broken_write(image, filename, *args, **kwargs):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError("ITK ERROR: NrrdImageIO(0x1): Write: No space left on device")

    monkeypatch.setattr(sitk, "WriteImage", broken_write)
    with pytest.raises(OSError, match="No space left on device"):
        write_labels(target, np.zeros((2, 3, 4), dtype=np.uint8))
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["mask.nrrd"]


def test_labels_are_validated(tmp_path):
    with pytest.raises(ValueError, match="3D"):
        write_labels(tmp_path / "x.nii.gz", np.zeros((3, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        write_labels(tmp_path / "x.nii.gz", -np.ones((2, 2, 2), dtype=int))
    with pytest.raises(ValueError, match="format"):
        write_labels(tmp_path / "x.png", np.zeros((2, 2, 2), dtype=np.uint8))


# ---- NRRD, MetaImage and DICOM (SimpleITK) ----------------------------------------------------------
CORNERS = [(0, 0, 0), (4, 0, 0), (0, 5, 0), (4, 5, 2), (2, 3, 1)]  # (x, y, z) voxel indices


def _assert_same_world(volume, image):
    """Every checked voxel of ``volume`` sits where ITK puts it: affine @ (x, y, z, 1) is ITK's point."""
    for index in CORNERS:
        np.testing.assert_allclose((volume.affine @ [*index, 1])[:3], ras_point(image, index), atol=1e-4)


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".mha", ".mhd"])
def test_oblique_itk_files_are_read_with_their_geometry(tmp_path, suffix):
    image = oblique_image()
    path = tmp_path / f"scan{suffix}"
    sitk.WriteImage(image, str(path))
    assert probe_volume(path) == (3, 6, 5)
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.data, sitk.GetArrayFromImage(image))
    assert vol.spacing == pytest.approx((2.5, 0.8, 0.7))
    _assert_same_world(vol, image)


def test_dicom_series_folder_is_read_with_its_geometry(tmp_path):
    image = oblique_image()
    write_dicom_series(tmp_path / "series", image)
    assert probe_volume(tmp_path / "series") == (3, 6, 5)
    vol = read_volume(tmp_path / "series")
    np.testing.assert_array_equal(vol.data, sitk.GetArrayFromImage(image))
    assert vol.spacing == pytest.approx((2.5, 0.8, 0.7))
    assert vol.header["format"] == "dicom" and vol.header["series_uid"] == SERIES_UID
    _assert_same_world(vol, image)


@pytest.mark.parametrize("out_name", ["mask.nrrd", "mask.nii.gz"])
@pytest.mark.parametrize("source", ["dicom", "nrrd"])
def test_labels_written_back_land_on_the_scan(tmp_path, source, out_name):
    image = oblique_image()
    if source == "dicom":
        write_dicom_series(tmp_path / "series", image)
        scan = read_volume(tmp_path / "series")
    else:
        sitk.WriteImage(image, str(tmp_path / "scan.nrrd"))
        scan = read_volume(tmp_path / "scan.nrrd")
    labels = np.zeros(scan.data.shape, dtype=np.uint8)
    x, y, z = CORNERS[-1]
    labels[z, y, x] = 4
    out = write_labels(tmp_path / out_name, labels, like=scan)
    if out_name.endswith(".nrrd"):  # read back by ITK itself, as Slicer would
        written = sitk.ReadImage(str(out))
        assert written[x, y, z] == 4 and int(sitk.GetArrayFromImage(written).sum()) == 4
        np.testing.assert_allclose(ras_point(written, (x, y, z)), ras_point(image, (x, y, z)), atol=1e-4)
    else:  # read back by nibabel, as any NIfTI tool would
        written = nib.load(str(out))
        assert np.asanyarray(written.dataobj)[x, y, z] == 4
        np.testing.assert_allclose((written.affine @ [x, y, z, 1])[:3], ras_point(image, (x, y, z)), atol=1e-4)
    np.testing.assert_array_equal(read_volume(out).data, labels)


def test_nifti_scan_labels_as_nrrd_overlay_it(tmp_path, volume_xyz):
    scan = read_volume(_nifti(tmp_path / "scan.nii.gz", volume_xyz))
    labels = (scan.data > 500).astype(np.uint8)
    back = read_volume(write_labels(tmp_path / "mask.nrrd", labels, like=scan))
    np.testing.assert_array_equal(back.data, labels)
    np.testing.assert_allclose(back.affine, AFFINE, atol=1e-6)


def _series(tmp_path, n, name="series"):
    return write_dicom_series(tmp_path / name, oblique_image((n, 6, 5)))


def _refusal(path) -> str:
    with pytest.raises(VolumeError) as info:
        read_volume(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_incomplete_or_damaged_series_are_one_clear_line(tmp_path, capfd):
    files = _series(tmp_path, 5, "gap")
    files[2].unlink()  # a slice lost in transfer
    assert "not evenly spaced" in _refusal(tmp_path / "gap")
    files = _series(tmp_path, 3, "truncated")
    files[1].write_bytes(files[1].read_bytes()[:600])  # header intact, pixels cut off
    assert "slice001.dcm is damaged" in _refusal(tmp_path / "truncated")
    _series(tmp_path, 3, "two")
    write_dicom_series(tmp_path / "two" / "other", oblique_image((2, 6, 5)), uid=SERIES_UID + ".7")
    for path in (tmp_path / "two" / "other").iterdir():
        path.rename(tmp_path / "two" / f"other-{path.name}")
    assert "holds 2 DICOM series" in _refusal(tmp_path / "two")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    assert "no DICOM series" in _refusal(tmp_path / "empty")
    bad = tmp_path / "bad.nrrd"
    bad.write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n\n1234")
    assert "not a readable image" in _refusal(bad)
    good = tmp_path / "good.mha"
    sitk.WriteImage(oblique_image((4, 6, 5)), str(good))
    cut = tmp_path / "cut.mha"
    cut.write_bytes(good.read_bytes()[:-100])
    assert "truncated or corrupt" in _refusal(cut)
    sitk.WriteImage(oblique_image((4, 6, 5)), str(tmp_path / "detached.mhd"))
    (tmp_path / "detached.raw").unlink()  # the header's data file did not come along
    assert "Cannot open data file" in _refusal(tmp_path / "detached.mhd")
    assert capfd.readouterr().err == ""  # the reasons are in the one line, nothing else was printed


def test_only_writable_formats_are_accepted_before_any_work(tmp_path):
    for name in ("m.nii.gz", "m.nii", "m.nrrd", "m.tif", "m.TIFF"):
        assert check_writable(tmp_path / name)
    for name in ("m.mhd", "m.png", "m"):
        with pytest.raises(ValueError, match="use one of .nii.gz"):
            write_labels(tmp_path / name, np.ones((2, 2, 2), dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []
