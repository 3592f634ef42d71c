"""The built-in map methods and checkpoint formats, registered in one place.

The registries (:data:`~napari_correlax.maps.methods.METHODS`,
:data:`~napari_correlax.models.checkpoint.CHECKPOINT_FORMATS`) live in low layers that import none
of their entries; :class:`~napari_correlax.registry.Registry` imports this module the
first time one of them is read. It sits at the top of the package, so it may name every
part: the window-based methods (:mod:`napari_correlax.maps.adapters`, one file each) and
GMIC (docs/method.md §9). The order here is the order the docks and ``--list`` show.
Importing it loads neither torch nor a network.
"""

from __future__ import annotations

from .gmic.checkpoint import FORMAT as GMIC_FORMAT
from .gmic.checkpoint import load_gmic
from .gmic.method import GMICMethod
from .maps.adapters.ablation_cam import AblationCamMethod
from .maps.adapters.correlax import CorrelaxMethod
from .maps.adapters.eigen_cam import EigenCamMethod
from .maps.adapters.grad_cam import GradCamMethod
from .maps.adapters.grad_cam_plusplus import GradCamPlusPlusMethod
from .maps.adapters.hires_cam import HiResCamMethod
from .maps.adapters.layer_cam import LayerCamMethod
from .maps.adapters.plain_cam import PlainCamMethod
from .maps.adapters.prediction import PredictionMethod
from .maps.adapters.score_cam import ScoreCamMethod
from .maps.adapters.xgrad_cam import XGradCamMethod
from .maps.methods import register_method
from .models.checkpoint import FORMAT as CLASSIFIER_FORMAT
from .models.checkpoint import load_classifier, register_format

__all__ = ["BUILTIN_METHODS", "CAM_METHODS"]

#: The CAM family (docs/method.md §8), in the order of the docks.
CAM_METHODS = (PlainCamMethod, GradCamMethod, GradCamPlusPlusMethod, XGradCamMethod,
               LayerCamMethod, HiResCamMethod, EigenCamMethod, ScoreCamMethod,
               AblationCamMethod)
#: Every built-in map method, in registration order.
BUILTIN_METHODS = (PredictionMethod, CorrelaxMethod, *CAM_METHODS, GMICMethod)

for _method in BUILTIN_METHODS:
    register_method(_method)
register_format(CLASSIFIER_FORMAT, load_classifier)
register_format(GMIC_FORMAT, load_gmic)
