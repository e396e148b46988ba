"""Export trained models to other tools' formats (bioimage.io model packages).

The members load on first use: importing this package costs neither torch nor bioimageio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_members

if TYPE_CHECKING:
    from .bioimageio import ExportError, StructureProbability, export_bioimageio, load_bioimageio

__all__ = ["ExportError", "StructureProbability", "export_bioimageio", "load_bioimageio"]

__getattr__ = lazy_members(__name__, {name: "bioimageio" for name in __all__})
