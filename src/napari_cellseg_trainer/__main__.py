"""``python -m napari_cellseg_trainer`` runs the command line (also under torchrun)."""

from .cli import main

raise SystemExit(main())
