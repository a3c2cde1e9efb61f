"""The napari side: reader, writer, sample data and the interactive segmentation dock widget."""
