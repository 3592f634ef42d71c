"""napari contributions: everything here may import napari or Qt; nothing else does."""
