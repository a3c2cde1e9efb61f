"""File input/output shared by the napari plugin and the command line (no napari, no Qt)."""

from .volumes import SUFFIXES, Volume, VolumeError, probe_volume, read_volume, suffix_of, write_labels

__all__ = ["SUFFIXES", "Volume", "VolumeError", "probe_volume", "read_volume", "suffix_of", "write_labels"]
