"""``python -m napari_correlax.cli`` runs the ``correlax`` command line."""

import sys

from . import main

sys.exit(main())
