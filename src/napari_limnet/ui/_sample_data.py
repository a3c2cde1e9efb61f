"""Sample data: a brain MRI with a tumour and its reference outline (pyradiomics test case brain1,
BSD-3-Clause, see ``data/ATTRIBUTION.md``), shipped inside the package so it works offline."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..io import read_volume
from ._reader import image_kwargs

IMAGE = "brain1_image.nii.gz"
LABEL = "brain1_label.nii.gz"


def sample_path(name: str) -> Path:
    return Path(str(resources.files("napari_limnet") / "data" / name))


def brain_mri() -> list[tuple]:
    """The MRI as an image layer and the reference lesion as a (hidden) labels layer."""
    image = read_volume(sample_path(IMAGE))
    label = read_volume(sample_path(LABEL))
    label_kwargs = image_kwargs(label, name="brain1 reference lesion")
    label_kwargs.update(visible=False, opacity=0.5)
    return [
        (image.data, image_kwargs(image, name="brain1 MRI"), "image"),
        (label.data, label_kwargs, "labels"),
    ]
