"""Knowing whether it works: a slab of each training image kept out, and a watch on its score.

With one image there is nothing to validate on, so ``holdout`` keeps the far end of each image
(a slab across its longest y-x axis, never random voxels: neighbouring voxels are nearly the
same, and a model would be judged on what it trained on) out of training. After every epoch
the slabs are predicted whole and scored (IoU at 0.5 within the cost map). :class:`Plateau`
watches that score: it says when it stopped improving, and stops the run when asked to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..data import DataError, TrainingImage
from ..data.zarr_folder import crop


def split_holdout(
    images: Sequence[TrainingImage], fraction: float, size_out: Sequence[int]
) -> tuple[list[TrainingImage], list[TrainingImage]]:
    """(the images without their slabs, the slabs); nothing held out when ``fraction`` is 0."""
    if not fraction:
        return list(images), []
    kept, slabs, problems = [], [], []
    for image in images:
        axis = 2 if image.shape[2] >= image.shape[1] else 1
        length = image.shape[axis]
        cut = length - max(1, round(fraction * length))
        if cut < size_out[axis]:
            problems.append(
                f"{image.source}: holding out {fraction:.0%} of its {length} voxels along "
                f"{'zyx'[axis]} leaves {cut}, less than size_out {list(size_out)}; use a smaller "
                "holdout or size_in"
            )
            continue
        kept.append(_part(image, axis, slice(0, cut), ""))
        slabs.append(_part(image, axis, slice(cut, length), " (held out)"))
    if problems:
        raise DataError(problems)
    return kept, slabs


def _part(image: TrainingImage, axis: int, span: slice, tag: str) -> TrainingImage:
    index = [slice(None)] * 3
    index[axis] = span
    box = tuple(index)
    return replace(  # a stored image's parts stay in the store
        image,
        raw=crop(image.raw, (slice(None), *box)),
        label=crop(image.label, box),
        costmap=crop(image.costmap, box),
        source=image.source + tag,
    )


@dataclass
class Plateau:
    """The best held-out score so far, and how many epochs ago it was reached."""

    patience: int | None  # stop after this many epochs without improvement; None: never
    best: float = -1.0
    best_epoch: int = 0
    since: int = 0
    told: bool = False  # a plateau was reported once already

    def add(self, epoch: int, score: float) -> bool:
        """Record an epoch's score; True when it is a new best."""
        if score > self.best + 1e-4:
            self.best, self.best_epoch, self.since, self.told = score, epoch, 0, False
            return True
        self.since += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.since >= self.patience

    def news(self, min_epochs: int = 5) -> str | None:
        """A one-time line when the score has not improved for a while (and no stop is set)."""
        if self.told or self.since < min_epochs or self.patience is not None:
            return None
        self.told = True
        return (
            f"the held-out IoU has not improved for {self.since} epochs (best {self.best:.3f} "
            f"at epoch {self.best_epoch}); training longer may not help (early_stop stops then)"
        )

    def reason(self) -> str:
        return (
            f"the held-out IoU has not improved for {self.since} epochs: best {self.best:.3f} "
            f"at epoch {self.best_epoch}"
        )
