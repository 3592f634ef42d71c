"""The built-in map methods, one file each (docs/method.md §6–8).

Each file defines one :class:`~napari_correlax.maps.methods.MapMethod` and registers
nothing: :mod:`napari_correlax.builtin` registers them, in the order the docks list them.
"""
