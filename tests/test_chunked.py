"""Prediction block by block into OME-Zarr: equal to memory, resumable, split across ranks."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch

zarr = pytest.importorskip(
    "zarr", reason="the zarr extra is not installed: pip install 'napari-cellseg-trainer[zarr]'"
)
pytest.importorskip(
    "ome_zarr", reason="ome-zarr is not installed: pip install 'napari-cellseg-trainer[zarr]'"
)

from conftest import Counting  # noqa: E402
from napari_cellseg_trainer.cli import main  # noqa: E402
from napari_cellseg_trainer.config import PredictConfig  # noqa: E402
from napari_cellseg_trainer.data.images import open_lazy  # noqa: E402
from napari_cellseg_trainer.inference import PredictionCancelled, predict_volume  # noqa: E402
from napari_cellseg_trainer.inference.chunked import predict_to_zarr  # noqa: E402
from napari_cellseg_trainer.normalization import normalize  # noqa: E402

SIZE_IN, SIZE_OUT = (12, 32, 32), (8, 24, 24)
BLOCK = (8, 32, 32)  # not a multiple of the tile: tiles cross block borders


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    folder = tmp_path_factory.mktemp("volume")
    data = (np.random.default_rng(0).random((12, 70, 90)) * 200).astype(np.float32)
    data[np.random.default_rng(1).random(data.shape) < 0.01] = 1000  # specks, at block faces too
    data[:, 40:42, :] += 600  # a stripe along x inside a block, one along y across block faces
    data[:, :, 31:34] += 500
    meta = {"axes": "ZYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.3, "PhysicalSizeZ": 1.0}
    path = folder / "cells.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata=meta)
    return path, data


_OPEN: list = []


def request_close(source) -> None:
    _OPEN.append(source)


@pytest.fixture(autouse=True)
def _close_sources():
    yield
    while _OPEN:
        _OPEN.pop().close()


def _config(recipe: int = 10) -> PredictConfig:
    cfg = PredictConfig(model_path="-", OutputDir="-", Normalization=recipe)
    cfg.mode.InputFile = "-"
    return cfg


# 22 looks one voxel beyond each block, 24 takes out the whole volume's stripes too
@pytest.mark.parametrize("recipe", [10, 22, 24])
def test_zarr_prediction_equals_the_in_memory_one_and_keeps_the_voxel_size(
    volume, tmp_path, recipe
):
    path, data = volume
    source, voxel = open_lazy(path)
    request_close(source)
    assert source.shape == (1, 12, 70, 90) and voxel == pytest.approx((1.0, 0.3, 0.3))
    model = Counting()
    out = tmp_path / "cells.ome.zarr"
    written = predict_to_zarr(
        model, source, out, _config(recipe), SIZE_IN, SIZE_OUT, block=BLOCK, voxel_size=voxel
    )
    assert len(written) == 2 * 3 * 3  # every block, once
    result = zarr.open_group(str(out))["0"][:]
    expected = predict_volume(model, normalize(data[None], recipe), SIZE_IN, SIZE_OUT)
    np.testing.assert_allclose(result, expected, atol=1e-6)
    reopened, voxel_out = open_lazy(out)  # an OME-Zarr with its scale, readable as input
    assert reopened.shape == (1, 12, 70, 90) and voxel_out == pytest.approx((1.0, 0.3, 0.3))


def test_an_interrupted_zarr_prediction_resumes_without_recomputing_finished_blocks(
    volume, tmp_path
):
    path, data = volume
    source, _ = open_lazy(path)
    request_close(source)
    out = tmp_path / "cells.ome.zarr"
    model = Counting()
    calls = []

    def cancel_after_seven() -> bool:
        calls.append(1)
        return len(calls) > 7

    with pytest.raises(PredictionCancelled):
        predict_to_zarr(
            model,
            source,
            out,
            _config(),
            SIZE_IN,
            SIZE_OUT,
            block=BLOCK,
            should_cancel=cancel_after_seven,
        )
    first_tiles = model.tiles
    model.tiles = 0
    written = predict_to_zarr(model, source, out, _config(), SIZE_IN, SIZE_OUT, block=BLOCK)
    assert len(written) == 18 - 7  # the 7 finished blocks are skipped
    full = Counting()
    predict_to_zarr(
        full, source, tmp_path / "again.ome.zarr", _config(), SIZE_IN, SIZE_OUT, block=BLOCK
    )
    assert model.tiles < full.tiles and first_tiles + model.tiles >= full.tiles
    result = zarr.open_group(str(out))["0"][:]
    expected = predict_volume(full, normalize(data[None], 10), SIZE_IN, SIZE_OUT)
    np.testing.assert_allclose(result, expected, atol=1e-6)


def test_the_cli_writes_ome_zarr_and_a_whole_volume_recipe_is_refused(
    trained_checkpoint, volume, tmp_path, capsys
):
    path, _ = volume
    args = ["predict", "--checkpoint", str(trained_checkpoint), "--input", str(path)]
    assert main([*args, "--output", str(tmp_path), "--format", "ome-zarr"]) == 0
    out = tmp_path / "cells_struct_segmentation.ome.zarr"
    assert zarr.open_group(str(out))["0"].shape == (1, 12, 70, 90)
    bad = [
        *args,
        "--output",
        str(tmp_path / "b"),
        "--format",
        "ome-zarr",
        "--set",
        "Normalization=11",
    ]
    assert main(bad) == 2
    assert "needs the whole volume" in capsys.readouterr().err


RANK_SCRIPT = """
import sys
import numpy as np
import torch
from napari_cellseg_trainer.config import PredictConfig
from napari_cellseg_trainer.distributed import world_from_env
from napari_cellseg_trainer.inference.chunked import predict_to_zarr

class Crop(torch.nn.Module):  # a 1x1x1 convolution cropped to size_out: the tiling, not the net
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(1, 2, 1)

    def forward(self, x):
        y = torch.log_softmax(self.conv(x)[:, :, 2:-2, 4:-4, 4:-4], dim=1)
        return [y, y, y]

cfg = PredictConfig(model_path="-", OutputDir="-", Normalization=0)
cfg.mode.InputFile = "-"
world = world_from_env()
data = np.random.default_rng(0).random((1, 12, 70, 90)).astype(np.float32)
written = predict_to_zarr(
    Crop(), data, sys.argv[1], cfg, (12, 40, 40), (8, 32, 32), world=world, block=(8, 32, 32)
)
print(f"rank {world.rank}/{world.size} wrote blocks {sorted(written)}", file=sys.stderr)
"""


def test_two_ranks_write_every_chunk_exactly_once(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    out = tmp_path / "out.ome.zarr"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [str(script), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    logged = {
        int(rank): eval(blocks)  # noqa: S307 - our own printed list of tuples
        for rank, blocks in re.findall(r"rank (\d)/2 wrote blocks (\[.*?\])\n", done.stderr)
    }
    assert set(logged) == {0, 1}
    first, second = set(logged[0]), set(logged[1])
    flags = zarr.open_group(str(out))["done"][:]
    assert flags.shape == (2, 3, 3)
    every = {tuple(int(i) for i in index) for index in np.ndindex(flags.shape)}
    assert first | second == every and not first & second  # all, and none twice
    assert {(b, flags[b]) for b in first} == {(b, 1) for b in first}  # the writer's rank + 1
    assert {(b, flags[b]) for b in second} == {(b, 2) for b in second}
    assert np.isfinite(zarr.open_group(str(out))["0"][:]).all()


def test_a_store_made_by_other_weights_is_refused_and_overwrite_starts_again(volume, tmp_path):
    from napari_cellseg_trainer.inference.chunked import ChunkedError

    _, data = volume
    out = tmp_path / "cells.ome.zarr"
    image = normalize(data[None], 10)
    args = (out, _config(), SIZE_IN, SIZE_OUT)
    assert len(predict_to_zarr(Counting(), image, *args, block=BLOCK)) == 18
    assert predict_to_zarr(Counting(), image, *args, block=BLOCK) == []  # complete: resumed
    other = Counting()
    with torch.no_grad():
        other.conv.bias += 1
    with pytest.raises(ChunkedError, match="other weights or settings"):
        predict_to_zarr(other, image, *args, block=BLOCK)
    assert len(predict_to_zarr(other, image, *args, block=BLOCK, restart=True)) == 18
    expected = predict_volume(other, image, SIZE_IN, SIZE_OUT)
    np.testing.assert_allclose(zarr.open_group(str(out))["0"][:], expected, atol=1e-6)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    with pytest.raises(ChunkedError, match="not a prediction of this tool"):
        predict_to_zarr(other, image, folder, *args[1:], block=BLOCK, restart=True)
    assert (folder / "notes.txt").read_text() == "keep"


class _Reads:
    """A (C, Z, Y, X) array that counts its reads."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.reads = data, data.shape, 0

    def __getitem__(self, key):
        self.reads += 1
        return self.data[key]


@pytest.mark.parametrize(
    "shape, size_in, size_out",
    [((12, 70, 90), SIZE_IN, SIZE_OUT), ((5, 20, 30), (12, 32, 32), (8, 24, 24))],
)
def test_a_blocks_tiles_come_from_one_read_of_their_box(shape, size_in, size_out):
    """Tiles cut from the box :meth:`TilePlan.input_box` reads equal tiles cut from the volume,
    mirrored edges and a volume smaller than a tile included, and the volume is read once."""
    from napari_cellseg_trainer.inference.chunked import _Boxed
    from napari_cellseg_trainer.inference.tiling import TilePlan

    data = np.random.default_rng(2).random((1, *shape)).astype(np.float32)
    plan = TilePlan.make(shape, size_in, size_out, "blend", 0.25)
    groups = [plan.corners[:1], plan.corners[-1:], plan.corners[1:5], plan.corners]
    for corners in groups:
        source = _Reads(data)
        boxed = _Boxed(source, plan.input_box(corners))
        np.testing.assert_array_equal(plan.cut(boxed, corners), plan.cut(data, corners))
        assert source.reads == 1
