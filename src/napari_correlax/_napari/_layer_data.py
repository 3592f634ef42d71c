"""The one name for napari's layer-data tuple, shared by the reader, writer, samples and layers.

``LayerData`` is ``(data, attributes, layer type)``: the array (or shapes), the keyword
arguments of ``viewer.add_<type>`` (name, scale, translate, colormap, metadata, …) and the
layer type (``"image"``, ``"shapes"``, …), as npe2 readers return and writers receive.
"""

from __future__ import annotations

from typing import Any

LayerData = tuple[Any, dict[str, Any], str]
