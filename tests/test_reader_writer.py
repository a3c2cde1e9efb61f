"""The napari side of io: reader contract, labels writer, sample data, manifest."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from clinical import oblique_image, ras_point, write_dicom_series

from napari_limnet.io import read_volume
from napari_limnet.ui._reader import napari_get_reader
from napari_limnet.ui._sample_data import brain_mri
from napari_limnet.ui._writer import write_labels_layer

AFFINE = np.array([[0, 0, 2.0, -30.0], [0, -0.5, 0, 60.0], [0.6, 0, 0, -12.0], [0, 0, 0, 1]])


@pytest.fixture
def scan(tmp_path):
    data = np.random.default_rng(0).normal(size=(9, 8, 5)).astype(np.float32)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    return path, data


def test_reader_gives_an_image_layer_with_geometry(scan):
    path, data_xyz = scan
    reader = napari_get_reader(str(path))
    assert callable(reader)
    [(data, kwargs, kind)] = reader(str(path))
    assert kind == "image" and kwargs["name"] == "scan"
    np.testing.assert_array_equal(data, data_xyz.transpose(2, 1, 0))
    assert kwargs["scale"] == pytest.approx((2.0, 0.5, 0.6))
    np.testing.assert_allclose(kwargs["metadata"]["affine"], AFFINE)


def test_reader_declines_what_it_cannot_read(tmp_path):
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b definitely not gzip")
    assert napari_get_reader(str(corrupt)) is None
    text = tmp_path / "notes.tif"
    text.write_text("not a tiff")
    assert napari_get_reader(str(text)) is None
    assert napari_get_reader(str(tmp_path / "image.png")) is None
    assert napari_get_reader([str(corrupt), str(text)]) is None


def test_writer_round_trip_keeps_affine_and_values(scan, tmp_path):
    path, _ = scan
    [(data, kwargs, _)] = napari_get_reader(str(path))(str(path))
    labels = np.zeros(data.shape, dtype=np.int32)
    labels[1:3, 2:5, 3:7] = 2
    written = write_labels_layer(str(tmp_path / "out"), labels, {"metadata": kwargs["metadata"],
                                                                 "scale": kwargs["scale"]})
    assert written == [str(tmp_path / "out.nii.gz")]
    back = read_volume(written[0])
    np.testing.assert_array_equal(back.data, labels)
    np.testing.assert_allclose(back.affine, AFFINE)
    tif = write_labels_layer(str(tmp_path / "out.tif"), labels, {"metadata": {}, "scale": (2.0, 0.5, 0.6)})
    assert read_volume(tif[0]).spacing == pytest.approx((2.0, 0.5, 0.6))
    nrrd = write_labels_layer(str(tmp_path / "out.nrrd"), labels, {"metadata": kwargs["metadata"]})
    assert nrrd == [str(tmp_path / "out.nrrd")]
    np.testing.assert_allclose(read_volume(nrrd[0]).affine, AFFINE, atol=1e-6)


def test_dicom_folder_and_nrrd_open_in_napari_and_save_back_onto_the_scan(make_napari_viewer, tmp_path):
    from npe2 import PluginManager

    image = oblique_image((4, 6, 5))
    write_dicom_series(tmp_path / "series", image)
    sitk.WriteImage(image, str(tmp_path / "scan.nrrd"))
    viewer = make_napari_viewer()
    folder_readers = {r.plugin_name for r in PluginManager.instance().iter_compatible_readers([str(tmp_path)])}
    assert "napari-limnet" in folder_readers  # a dropped folder offers this plugin's reader
    assert napari_get_reader(str(tmp_path)) is None  # ...which declines folders without a DICOM series
    [series] = viewer.open(str(tmp_path / "series"), plugin="napari-limnet")
    [nrrd] = viewer.open(str(tmp_path / "scan.nrrd"), plugin="napari-limnet")
    for layer in (series, nrrd):
        np.testing.assert_array_equal(layer.data, sitk.GetArrayFromImage(image))
        assert tuple(layer.scale) == pytest.approx((2.5, 0.8, 0.7))
    assert series.name == "series" and nrrd.name == "scan"
    labels = viewer.add_labels(np.zeros(series.data.shape, dtype=np.uint8), scale=series.scale,
                               metadata=dict(series.metadata))
    labels.data[3, 5, 4] = 2
    viewer.layers.selection = {labels}
    out = tmp_path / "mask.nrrd"
    assert viewer.layers.save(str(out), selected=True, plugin="napari-limnet") == [str(out)]
    written = sitk.ReadImage(str(out))
    assert written[4, 5, 3] == 2
    np.testing.assert_allclose(ras_point(written, (4, 5, 3)), ras_point(image, (4, 5, 3)), atol=1e-4)


def test_save_dialog_offers_the_plugin_writer_under_the_documented_name(make_napari_viewer, tmp_path):
    """napari's File > Save Selected Layers... preselects its builtin labels writer (always listed first),
    which cannot write NIfTI; docs/formats.md tells users to pick this entry instead."""
    from napari.plugins._npe2 import file_extensions_string_for_layers

    viewer = make_napari_viewer()
    labels = viewer.add_labels(np.zeros((3, 4, 5), dtype=np.uint8))
    filters, writers = file_extensions_string_for_layers([labels])
    entries = filters.split(";;")
    ours = "LIM-Net interactive segmentation labels with the scan's geometry (*.nii.gz *.nii *.nrrd *.tif *.tiff)"
    assert ours in entries
    assert writers[entries.index(ours)].plugin_name == "napari-limnet"


def test_corrupt_file_does_not_crash_napari(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    corrupt = tmp_path / "corrupt.nii"
    corrupt.write_bytes(b"\x00" * 400)
    with pytest.raises(Exception, match="corrupt.nii"):  # napari: "no reader", reported to the user
        viewer.open(str(corrupt), plugin="napari-limnet")
    assert len(viewer.layers) == 0


def test_viewer_open_and_save_through_the_plugin(make_napari_viewer, scan, tmp_path):
    path, _ = scan
    viewer = make_napari_viewer()
    [image] = viewer.open(str(path), plugin="napari-limnet")
    labels = viewer.add_labels(np.zeros(image.data.shape, dtype=np.uint8), scale=image.scale,
                               metadata=dict(image.metadata))
    labels.data[2, 3, 4] = 5
    out = tmp_path / "saved.nii.gz"
    viewer.layers.selection = {labels}
    assert viewer.layers.save(str(out), selected=True, plugin="napari-limnet") == [str(out)]
    saved = nib.load(str(out))
    np.testing.assert_allclose(saved.affine, AFFINE)
    assert np.asanyarray(saved.dataobj)[4, 3, 2] == 5


def test_sample_data_is_the_brain_mri_with_its_lesion():
    (image, image_kwargs, image_kind), (label, label_kwargs, label_kind) = brain_mri()
    assert image_kind == "image" and label_kind == "labels"
    assert image.shape == label.shape == (25, 256, 256)
    assert image_kwargs["scale"] == pytest.approx((6.5, 0.78125, 0.78125))
    assert set(np.unique(label)) == {0, 1} and label.sum() > 1000


def test_manifest_is_valid():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-limnet")
    assert manifest.name == "napari-limnet"
    assert {w.display_name for w in manifest.contributions.widgets} == {"LIM-Net interactive segmentation"}
    assert manifest.contributions.writers[0].layer_types == ["labels"]
