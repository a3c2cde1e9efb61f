"""File input/output shared by the napari plugin and the command line (no napari, no Qt).

``read_volume`` is the one scan reader (NIfTI, TIFF, NRRD, MetaImage, DICOM series folders);
``write_labels`` the one label writer (NIfTI, NRRD, TIFF; atomic).
"""

from .volumes import (
    SUFFIXES,
    WRITE_SUFFIXES,
    Volume,
    VolumeError,
    check_writable,
    probe_volume,
    read_volume,
    suffix_of,
    write_labels,
)

__all__ = ["SUFFIXES", "WRITE_SUFFIXES", "Volume", "VolumeError", "check_writable", "probe_volume", "read_volume",
           "suffix_of", "write_labels"]
