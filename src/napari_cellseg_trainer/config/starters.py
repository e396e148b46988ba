"""The starter models shipped with the plugin, by name: which network each fits (no torch).

``starter:nuclei`` (``unet_xy_zoom``, zoom 3) and ``starter:boundaries`` (``unet_xy``). Their
weights live in the package's ``starters/`` folder and load through :mod:`..starters`; this
registry is what the configs, the quick preset and the panels need to know about them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .network import NetworkFields

STARTER_PREFIX = "starter:"  # finetune_from / model_path: a starter shipped with the plugin
FOLDER = Path(__file__).resolve().parents[1] / "starters"  # where their weights are installed


def is_starter(reference: object) -> bool:
    """Whether ``reference`` (a path or text) names a starter, ``starter:NAME``."""
    return isinstance(reference, str) and reference.startswith(STARTER_PREFIX)


@dataclass(frozen=True)
class Starter:
    name: str
    model: str
    zoom_ratio: int
    nchannel: int
    nclass: tuple[int, int, int]
    summary: str

    @property
    def file(self) -> Path:
        return FOLDER / f"{self.name}.pt"

    @property
    def reference(self) -> str:
        """How a config or the command line names it: ``starter:NAME``."""
        return f"{STARTER_PREFIX}{self.name}"

    @property
    def installed(self) -> bool:
        return self.file.is_file()

    def describe(self) -> str:
        zoom = f", zoom_ratio {self.zoom_ratio}" if self.model == "unet_xy_zoom" else ""
        return f"{self.reference} ({self.model}{zoom})"

    def fits(self, network: NetworkFields) -> bool:
        same_zoom = self.model != "unet_xy_zoom" or network.model.zoom_ratio == self.zoom_ratio
        return (
            network.model.name == self.model
            and same_zoom
            and network.nchannel == self.nchannel
            and tuple(network.nclass) == self.nclass
        )


STARTERS: dict[str, Starter] = {
    "nuclei": Starter("nuclei", "unet_xy_zoom", 3, 1, (2, 2, 2), "nuclei (large round structures)"),
    "boundaries": Starter(
        "boundaries", "unet_xy", 3, 1, (2, 2, 2), "cell boundaries, membranes, thin structures"
    ),
}


def fitting_starter(network: NetworkFields) -> Starter | None:
    """The starter whose network is ``network``'s, if any."""
    return next((s for s in STARTERS.values() if s.fits(network)), None)
