"""Long sessions: many preview updates keep the layers and memory flat."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from napari_cellseg_trainer._qt.preview import FRAMES, NAMES, PreviewLayers
from napari_cellseg_trainer.devices import heap_bytes_in_use
from napari_cellseg_trainer.training.events import PreviewPatch

pytestmark = pytest.mark.gui


FIRST, LAST = 100, 300  # measured between these updates: 200 updates, ~7 s


def test_hundreds_of_preview_updates_keep_layer_count_and_memory_flat(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 128, 128), np.float32), name="data")
    previews = PreviewLayers(viewer)
    rng = np.random.default_rng(0)
    shape = (4, 12, 12)
    heap: dict[int, int | None] = {}
    objects: dict[int, int] = {}
    for i in range(1, LAST + 1):
        previews.show(
            PreviewPatch(
                epoch=i // 10,
                iteration=i,
                raw=rng.random(shape, dtype=np.float32),
                label=(rng.random(shape) > 0.5).astype(np.uint8),
                probability=rng.random(shape, dtype=np.float32),
            )
        )
        if i in (FIRST, LAST):
            gc.collect()
            heap[i], objects[i] = heap_bytes_in_use(), len(gc.get_objects())
    assert [layer.name for layer in viewer.layers] == ["data", *NAMES, FRAMES]
    last = rng.random(shape, dtype=np.float32)
    previews.show(PreviewPatch(100, LAST + 1, last, (last > 0.5).astype(np.uint8), last))
    np.testing.assert_array_equal(viewer.layers[NAMES[0]].data, last)  # updated in place
    # Measured over the 200 updates: objects -2, C heap +2 KB.
    # One leaked object per update would be +200; one update's arrays (5 KB) kept each time
    # +1 MB. The bounds allow a tenth of an object and 640 bytes an update.
    assert abs(objects[LAST] - objects[FIRST]) < 20, objects
    if heap[FIRST] is None:
        pytest.skip("no mallinfo2 in this C library: the heap in use cannot be read")
    assert heap[LAST] - heap[FIRST] < 128 * 1024, heap


def test_previews_share_one_contrast_per_run_so_an_empty_patch_stays_dark(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 128, 128), np.float32), name="data")
    previews = PreviewLayers(viewer)
    shape = (4, 12, 12)
    rng = np.random.default_rng(0)
    for run in range(2):
        previews.prepare(shape)  # on Train: empty layers, updated in place later
        seen: list[np.ndarray] = []
        # A textured patch, a nearly empty one (zeros and rounding noise), a brighter one.
        for raw in (
            rng.uniform(-0.03, 0.6, shape),
            np.where(rng.random(shape) < 0.05, -0.02, 0.0),
            rng.uniform(0.2, 1.4, shape),
        ):
            raw = raw.astype(np.float32) + run
            seen.append(raw)
            label = (raw > raw.mean()).astype(np.uint8)
            previews.show(PreviewPatch(0, 1, raw, label, rng.random(shape, dtype=np.float32)))
            layer = viewer.layers[NAMES[0]]
            low, high = layer.contrast_limits
            assert (low, high) == pytest.approx((min(map(np.min, seen)), max(map(np.max, seen))))
            np.testing.assert_array_equal(layer.data, raw)
            np.testing.assert_array_equal(viewer.layers[NAMES[1]].data, label)
        # The nearly empty patch sits in the lower part of the run's scale, not at its top.
        assert (0.0 + run - low) / (high - low) < 0.1
