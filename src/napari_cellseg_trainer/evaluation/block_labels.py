"""Connected components of a volume larger than memory, block by block.

Each block is labelled on its own (scipy), its labels offset past those of the blocks before
it, and written out. Objects cut by a block border then carry one label per block: the planes
on either side of every border are compared (in tiles, so a plane never has to fit in memory
whole), each pair of labels that touch across it (26-connectivity: across faces, edges and
corners) is an edge of a graph, and the graph's connected components (scipy.sparse.csgraph) are
the objects. A second pass writes each block's labels through the lookup table from block
label to object, objects under ``min_size`` voxels dropped and the rest numbered 1..N in the
order they first appear. The result equals :func:`.instances.label_instances` with
``method="components"`` up to the numbering; memory holds one block and one integer per block
label, whatever the volume's size.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .instances import InstanceError

Region = tuple[slice, ...]
MAX_LABELS = 2**32 - 1  # the labels are uint32


def blocks_of(shape: Sequence[int], block: Sequence[int]) -> Iterator[Region]:
    """The regions of ``shape`` cut into ``block``-sized pieces, in C order."""
    counts = [math.ceil(n / b) for n, b in zip(shape, block, strict=True)]
    for index in itertools.product(*(range(c) for c in counts)):
        yield tuple(
            slice(i * b, min((i + 1) * b, n)) for i, b, n in zip(index, block, shape, strict=True)
        )


def components_by_block(
    values,
    labels,
    block: Sequence[int],
    threshold: float,
    min_size: int = 0,
    progress: Callable[[float, int], None] | None = None,
) -> int:
    """Label the connected pieces of ``values > threshold`` into ``labels``; the object count.

    Parameters
    ----------
    values
        (Z, Y, X) array-like read window by window (zarr, dask, numpy): probabilities.
    labels
        (Z, Y, X) writable uint32 array-like of the same shape (a zarr array), read back too.
    block
        The (z, y, x) size of the pieces read and written: best the chunks of both arrays.
    threshold
        Voxels above it are foreground.
    min_size
        Objects with fewer voxels are removed.
    progress
        Called with (steps done, steps in all) over the three passes.
    """
    shape = tuple(int(n) for n in values.shape)
    regions = list(blocks_of(shape, block))
    steps = 2 * len(regions) + len(list(_borders(shape, block)))
    report = _Steps(progress, steps)
    sizes = [np.zeros(1, np.int64)]  # sizes[0]: the background
    structure = ndi.generate_binary_structure(3, 3)
    offset = 0
    for region in regions:
        mask = np.asarray(values[region]) > threshold
        found, count = ndi.label(mask, structure=structure, output=np.int64)
        if offset + count > MAX_LABELS:
            raise InstanceError(
                f"more than {MAX_LABELS} pieces: too many objects for uint32 labels"
            )
        sizes.append(np.bincount(found.ravel(), minlength=count + 1)[1:])
        found[found > 0] += offset
        labels[region] = found.astype(np.uint32)
        offset += count
        report.step()
    edges = _touching_pairs(labels, shape, block, report)
    table = _lookup_table(np.concatenate(sizes), edges, offset, min_size)
    for region in regions:
        labels[region] = table[np.asarray(labels[region])]
        report.step()
    return int(table.max())


class _Steps:
    def __init__(self, progress, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def step(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def _borders(shape: Sequence[int], block: Sequence[int]) -> Iterator[tuple[int, int]]:
    """(axis, first plane after a border) of every block border inside the volume."""
    for axis, (n, b) in enumerate(zip(shape, block, strict=True)):
        for plane in range(b, n, b):
            yield axis, plane


def _touching_pairs(labels, shape, block, report: _Steps) -> np.ndarray:
    """(2, E) block labels that touch across a border, each pair once or more."""
    found = [np.zeros((2, 0), np.int64)]
    for axis, plane in _borders(shape, block):
        other = [a for a in range(3) if a != axis]
        # tiles of the border plane, one voxel longer on their far side: a diagonal neighbour
        # in the next tile is still seen
        tiles = itertools.product(
            *(range(0, shape[a], block[a]) for a in other),
        )
        for starts in tiles:
            window = [slice(None)] * 3
            for a, start in zip(other, starts, strict=True):
                window[a] = slice(start, min(start + block[a] + 1, shape[a]))
            window[axis] = slice(plane - 1, plane + 1)
            pair = np.asarray(labels[tuple(window)])
            before = np.take(pair, 0, axis=axis)
            after = np.take(pair, 1, axis=axis)
            found.append(_neighbours(before, after))
        report.step()
    return np.concatenate(found, axis=1)


def _neighbours(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """(2, E) labels of ``before`` and ``after`` (two facing planes) that touch, shifts of -1, 0
    and +1 in the plane included."""
    pairs = []
    height, width = before.shape
    for dy, dx in itertools.product((-1, 0, 1), repeat=2):
        a = before[max(0, -dy) : height - max(0, dy), max(0, -dx) : width - max(0, dx)]
        b = after[max(0, dy) : height - max(0, -dy), max(0, dx) : width - max(0, -dx)]
        both = (a > 0) & (b > 0) & (a != b)
        pairs.append(np.stack([a[both], b[both]]).astype(np.int64))
    return np.unique(np.concatenate(pairs, axis=1), axis=1)


def _lookup_table(sizes: np.ndarray, edges: np.ndarray, count: int, min_size: int) -> np.ndarray:
    """uint32 table from block label (0..count) to object (0 = background or too small)."""
    graph = coo_matrix(
        (np.ones(edges.shape[1], np.int8), (edges[0], edges[1])), shape=(count + 1, count + 1)
    )
    _, component = connected_components(graph, directed=False)
    object_sizes = np.bincount(component, weights=sizes, minlength=component.max() + 1)
    kept = object_sizes >= max(min_size, 1)
    kept[component[0]] = False  # the background's own component
    # objects numbered in the order of their first block label: first seen, first numbered
    first = np.full(component.max() + 1, count + 1, np.int64)
    np.minimum.at(first, component, np.arange(count + 1))
    order = np.argsort(np.where(kept, first, count + 2), kind="stable")
    number = np.zeros(component.max() + 1, np.uint32)
    number[order[: int(kept.sum())]] = np.arange(1, int(kept.sum()) + 1, dtype=np.uint32)
    return number[component]
