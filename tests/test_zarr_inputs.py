"""OME-Zarr and zarr inputs everywhere a TIFF works: every kind predicts as the same array in
memory does, into OME-Zarr or TIFF, with the voxel size of its metadata.

The kinds: OME-Zarr v0.5 (zarr v3) and v0.4 (zarr v2) as the ome-zarr library writes them and as
plain zarr writes them by hand (micrometres and nanometres), plain zarr arrays (v3 with
dimension names, v2 without), a bioformats2raw layout, a level other than 0, a time-lapse, a
folder holding several, and a TIFF read lazily.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

zarr = pytest.importorskip(
    "zarr", reason="the zarr extra is not installed: pip install 'napari-cellseg-trainer[zarr]'"
)
pytest.importorskip(
    "ome_zarr", reason="ome-zarr is not installed: pip install 'napari-cellseg-trainer[zarr]'"
)

from conftest import Counting  # noqa: E402
from napari_cellseg_trainer.config import PredictConfig  # noqa: E402
from napari_cellseg_trainer.data.images import open_lazy, voxel_size_of  # noqa: E402
from napari_cellseg_trainer.inference import predict_volume  # noqa: E402
from napari_cellseg_trainer.inference.inputs import folder_data_type  # noqa: E402
from napari_cellseg_trainer.inference.run import run_prediction  # noqa: E402
from napari_cellseg_trainer.normalization import normalize  # noqa: E402

SIZE_IN, SIZE_OUT = (12, 32, 32), (8, 24, 24)
VOXEL = (1.0, 0.3, 0.3)
DATA = (np.random.default_rng(0).random((12, 70, 90)) * 200).astype(np.float32)
README = Path(__file__).resolve().parents[1] / "README.md"


def _axes(unit: str = "micrometer") -> list[dict]:
    return [{"name": a, "type": "space", "unit": unit} for a in "zyx"]


def _multiscales(scale, unit: str = "micrometer") -> list[dict]:
    transform = [{"type": "scale", "scale": list(scale)}]
    return [
        {"axes": _axes(unit), "datasets": [{"path": "0", "coordinateTransformations": transform}]}
    ]


def library_v05(path: Path, data=DATA) -> None:
    from ome_zarr.writer import write_image

    scale = dict(zip("zyx", VOXEL, strict=True))
    group = zarr.open_group(str(path), mode="w")
    write_image(data, group, axes="zyx", scale=scale, axes_units=dict.fromkeys("zyx", "micrometer"))


def library_v04(path: Path, data=DATA) -> None:
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    scale = dict(zip("zyx", VOXEL, strict=True))
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    write_image(data, group, axes="zyx", fmt=FormatV04(), scale=scale)


def by_hand_v04(path: Path, data=DATA) -> None:
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", data=data, chunks=(4, 32, 32))
    group.attrs["multiscales"] = [{"version": "0.4", **_multiscales(VOXEL)[0]}]


def by_hand_v05_nanometres(path: Path, data=DATA) -> None:
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.create_array("0", data=data, chunks=(4, 32, 32))
    nanometres = [v * 1000 for v in VOXEL]
    group.attrs["ome"] = {"version": "0.5", "multiscales": _multiscales(nanometres, "nanometer")}


def bioformats2raw(path: Path, data=DATA) -> None:
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.attrs["bioformats2raw.layout"] = 3
    image = group.create_group("0")
    image.create_array("0", data=data[None, None], chunks=(1, 1, 4, 32, 32))
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}, *_axes()]
    transform = [{"type": "scale", "scale": [1.0, 1.0, *VOXEL]}]
    image.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": axes,
            "datasets": [{"path": "0", "coordinateTransformations": transform}],
        }
    ]


def plain_v3_named(path: Path, data=DATA) -> None:
    array = zarr.create_array(
        str(path),
        shape=(1, *data.shape),
        chunks=(1, 4, 32, 32),
        dtype=data.dtype,
        dimension_names=("c", "z", "y", "x"),
    )
    array[...] = data[None]


def plain_v2(path: Path, data=DATA) -> None:
    zarr.save_array(str(path), data, zarr_format=2)


KINDS = {
    "ome-zarr v0.5 (ome-zarr)": (library_v05, VOXEL),
    "ome-zarr v0.4 (ome-zarr)": (library_v04, VOXEL),
    "ome-zarr v0.4 (zarr)": (by_hand_v04, VOXEL),
    "ome-zarr v0.5 nm (zarr)": (by_hand_v05_nanometres, VOXEL),
    "bioformats2raw": (bioformats2raw, VOXEL),
    "zarr v3 array": (plain_v3_named, None),
    "zarr v2 array": (plain_v2, None),
}


def _config(source: Path, out: Path, output_format: str) -> PredictConfig:
    cfg = PredictConfig(model_path="-", OutputDir=str(out), Normalization=10, device="cpu")
    cfg.size_in, cfg.size_out = list(SIZE_IN), list(SIZE_OUT)
    cfg.mode.InputFile, cfg.output_format = str(source), output_format
    return cfg


@pytest.fixture(scope="module")
def expected():
    """The in-memory prediction of DATA (the Counting network is deterministic)."""
    return predict_volume(Counting(), normalize(DATA[None], 10), SIZE_IN, SIZE_OUT)[0]


def _read_result(path: Path) -> tuple[np.ndarray, tuple | None]:
    if path.name.endswith(".zarr"):
        image, voxel = open_lazy(path)
        return image[0], voxel
    return tifffile.imread(path), voxel_size_of(path)


@pytest.mark.parametrize("output_format", ["ome-zarr", "tiff"])
@pytest.mark.parametrize("kind", KINDS)
def test_each_zarr_input_predicts_as_in_memory_and_keeps_its_voxel_size(
    kind, output_format, expected, tmp_path
):
    write, voxel = KINDS[kind]
    source = tmp_path / ("in.zarr" if "array" in kind else "in.ome.zarr")
    write(source)
    before = _tree(source)
    (written,) = run_prediction(_config(source, tmp_path / "out", output_format), model=Counting())
    suffix = ".ome.zarr" if output_format == "ome-zarr" else ".tiff"
    assert written == tmp_path / "out" / f"in_struct_segmentation{suffix}"
    result, voxel_out = _read_result(written)
    np.testing.assert_allclose(result, expected, atol=1e-6)
    if voxel is None:  # a plain array has none: the result's scale is 1
        assert voxel_out in (None, (1.0, 1.0, 1.0))
    else:
        assert voxel_out == pytest.approx(voxel)
    assert _tree(source) == before  # the input is read, never written


def test_a_lower_level_predicts_at_its_own_shape_and_voxel_size(tmp_path):
    source = tmp_path / "pyramid.ome.zarr"
    library_v05(source)
    level_1 = zarr.open_group(str(source))["s1"][...]
    assert level_1.shape == (12, 35, 45)
    cfg = _config(source, tmp_path / "out", "ome-zarr")
    cfg.level = 1
    (written,) = run_prediction(cfg, model=Counting())
    result, voxel = _read_result(written)
    expected = predict_volume(Counting(), normalize(level_1[None], 10), SIZE_IN, SIZE_OUT)[0]
    np.testing.assert_allclose(result, expected, atol=1e-6)
    assert voxel == pytest.approx((1.0, 0.6, 0.6))


def test_a_time_lapse_store_gives_one_result_per_time_point(tmp_path):
    source = tmp_path / "movie.ome.zarr"
    frames = np.stack([DATA, DATA[:, ::-1]])
    group = zarr.open_group(str(source), mode="w")
    group.create_array("0", data=frames[:, None], chunks=(1, 1, 4, 32, 32))
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}, *_axes()]
    transform = [{"type": "scale", "scale": [1.0, 1.0, *VOXEL]}]
    dataset = {"path": "0", "coordinateTransformations": transform}
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [dataset]}]}
    cfg = _config(source, tmp_path / "out", "ome-zarr")
    cfg.mode.timelapse = True
    written = run_prediction(cfg, model=Counting())
    assert [p.name for p in written] == [
        f"movie_T_{t:03d}_struct_segmentation.ome.zarr" for t in (0, 1)
    ]
    for path, frame in zip(written, frames, strict=True):
        expected = predict_volume(Counting(), normalize(frame[None], 10), SIZE_IN, SIZE_OUT)[0]
        np.testing.assert_allclose(_read_result(path)[0], expected, atol=1e-6)


def test_a_folder_of_stores_and_tiffs_predicts_each_and_skips_earlier_results(expected, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    library_v05(folder / "a.ome.zarr")
    plain_v2(folder / "b.zarr")
    tifffile.imwrite(folder / "c.tif", DATA)
    (folder / "notes.txt").write_text("not an image")
    earlier = folder / "a_struct_segmentation.ome.zarr"  # an earlier result kept beside
    zarr.open_group(str(earlier), mode="w")
    assert folder_data_type(folder) == ".tif,.zarr"
    cfg = _config(folder, tmp_path / "out", "ome-zarr")
    cfg.mode.name, cfg.mode.InputDir, cfg.mode.DataType = "folder", str(folder), ".tif,.zarr"
    written = run_prediction(cfg, model=Counting())
    assert sorted(p.name for p in written) == [
        f"{stem}_struct_segmentation.ome.zarr" for stem in ("a", "b", "c")
    ]
    for path in written:
        np.testing.assert_allclose(_read_result(path)[0], expected, atol=1e-6)


def test_a_tiff_is_read_lazily_for_ome_zarr_output(expected, tmp_path, monkeypatch):
    source = tmp_path / "big.ome.tif"
    meta = {"axes": "ZYX", "PhysicalSizeZ": 1.0, "PhysicalSizeY": 0.3, "PhysicalSizeX": 0.3}
    tifffile.imwrite(source, DATA, ome=True, metadata=meta)

    def whole(*args, **kwargs):
        raise AssertionError("the whole TIFF was read")

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", whole)
    monkeypatch.setattr(tifffile.TiffFile, "asarray", whole)
    (written,) = run_prediction(_config(source, tmp_path / "out", "ome-zarr"), model=Counting())
    result, voxel = _read_result(written)
    np.testing.assert_allclose(result, expected, atol=1e-6)
    assert voxel == pytest.approx(VOXEL)


def test_the_readme_command_lines_run_as_written(trained_checkpoint, tmp_path):
    """The README's ``cellseg-trainer predict --checkpoint CK --input big.ome.zarr --output out/
    --format ome-zarr`` lines (with and without instances), as written, in a folder holding
    ``CK`` and ``big.ome.zarr``: the second resumes the finished store and labels it."""
    lines = [
        row.strip()
        for row in README.read_text().splitlines()
        if row.startswith("cellseg-trainer predict") and "big.ome.zarr" in row
    ]
    assert len(lines) == 2 and "--instances components" in lines[1]
    (tmp_path / "CK").write_bytes(Path(trained_checkpoint).read_bytes())
    library_v05(tmp_path / "big.ome.zarr", DATA[:, :40, :50])
    import napari_cellseg_trainer

    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(Path(napari_cellseg_trainer.__file__).parents[1]),
    }
    out = Path("out") / "big_struct_segmentation.ome.zarr"
    printed = []
    for line in lines:
        done = subprocess.run(
            shlex.split(line), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
        printed.append(done.stdout.split())
    assert printed == [[str(out)], [str(out), str(out / "labels" / "instances")]]
    assert "already complete, nothing to do" in done.stderr  # resumed, not predicted again
    result, voxel = _read_result(tmp_path / out)
    assert result.shape == (12, 40, 50) and np.isfinite(result).all()
    assert 0 <= result.min() <= result.max() <= 1 and voxel == pytest.approx(VOXEL)
    labels = zarr.open_group(str(tmp_path / out), mode="r")["labels/instances/0"]
    assert labels.shape == (12, 40, 50) and labels.dtype == np.uint32


def _tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes: to show that nothing in it changed."""
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }
