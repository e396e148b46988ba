"""bioimage.io export: a package that bioimageio.core's own test passes, and that loads back."""

from __future__ import annotations

import argparse
import gc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip(
    "bioimageio.core",
    reason="bioimageio.core is not installed: pip install 'napari-cellseg-trainer[bioimageio]'",
)

import bioimageio.core  # noqa: E402
from bioimageio.core.backends.pytorch_backend import load_torch_model  # noqa: E402
from bioimageio.spec import load_model_description  # noqa: E402

from napari_cellseg_trainer import config  # noqa: E402
from napari_cellseg_trainer.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from napari_cellseg_trainer.cli import _export  # noqa: E402
from napari_cellseg_trainer.errors import UserInputError  # noqa: E402
from napari_cellseg_trainer.export import export_bioimageio, load_bioimageio  # noqa: E402
from napari_cellseg_trainer.models import build_model  # noqa: E402

# bioimageio.spec opens files it never closes; their ResourceWarning is its, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(autouse=True)
def _collect_bioimageio_leaks():
    """Close the files a test's bioimageio calls left open while their warning is silenced."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    _export.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.run(args)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    cfg = config.TrainConfig()
    cfg.size_in, cfg.size_out = [32, 100, 100], [4, 12, 12]
    torch.manual_seed(0)
    model = build_model("unet_xy")
    # Running statistics unlike a fresh BatchNorm's, so a package that lost them fails below.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("bioimageio") / "checkpoint_epoch_1.pytorch"
    return save_checkpoint(
        path,
        model_state=model.state_dict(),
        optimizer_state=None,
        epoch=1,
        num_iterations=1,
        device="cpu",
        config=cfg.to_dict(),
    )


@pytest.fixture(scope="module")
def package(checkpoint) -> Path:
    """Exported once, through the command line, for all tests of this module."""
    output = checkpoint.parent / "model.zip"
    argv = ["export", "bioimageio", "--checkpoint", str(checkpoint), "--output", str(output)]
    assert _cli([*argv, "--name", "tiny unet_xy test"]) == 0
    return output


def test_package_weights_load_back_through_bioimageio_core(package, checkpoint):
    # `bioimageio test` (seven forward passes of the TorchScript weights, against the test
    # output the export wrote) runs on the boundaries starter's package below: a package that
    # lost the BatchNorm statistics fails it there. Here the state-dict entry is loaded through
    # core and compared with the checkpoint, key by key.
    descr = load_model_description(package)
    net = load_torch_model(descr.weights.pytorch_state_dict, load_state=True, devices=["cpu"])
    expected = load_checkpoint(checkpoint).model_state
    loaded = {k.removeprefix("net."): v for k, v in net.state_dict().items()}
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_package_describes_the_size_rules(package):
    descr = load_model_description(package)
    axes = {str(a.id): a for a in descr.inputs[0].axes}
    assert (axes["z"].size.min, axes["z"].size.step) == (29, 1)
    assert (axes["y"].size.min, axes["y"].size.step) == (92, 8)
    offsets = {str(a.id): a.size.offset for a in descr.outputs[0].axes[2:]}
    assert offsets == {"z": -28, "y": -88, "x": -88}
    assert descr.name == "tiny unet_xy test"
    assert [Path(str(c.source)).suffix for c in descr.covers] == [".png"]


def test_load_gives_back_the_checkpoint_network_and_config(package, checkpoint):
    model, cfg = load_bioimageio(package)
    original = load_checkpoint(checkpoint)
    state = model.state_dict()
    assert state.keys() == original.model_state.keys()
    assert all(torch.equal(state[k], original.model_state[k]) for k in state)
    assert cfg == original.config

    with zipfile.ZipFile(package) as zf:
        raw = np.load(zf.open("test_input.npy"))
        expected = np.load(zf.open("test_output.npy"))
    tile = (raw - raw.min()) / (raw.max() - raw.min() + 1e-6)  # the package's scale_range
    model.eval()
    with torch.no_grad():
        outputs = model(torch.from_numpy(tile.astype(np.float32)))
    assert len(outputs) == 3  # the full network, not only the exported wrapper
    np.testing.assert_allclose(torch.exp(outputs[0][:, 1:2]).numpy(), expected, atol=1e-6)


def test_existing_output_is_not_overwritten(checkpoint, tmp_path):
    target = tmp_path / "model.zip"
    target.write_bytes(b"an earlier package")
    with pytest.raises(UserInputError, match="exists"):
        export_bioimageio(checkpoint, target)
    assert target.read_bytes() == b"an earlier package"
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind


def test_checkpoint_without_config_is_refused(tmp_path):
    bare = save_checkpoint(
        tmp_path / "bare.pytorch",
        model_state=build_model("unet_xy").state_dict(),
        optimizer_state=None,
        epoch=1,
        num_iterations=1,
        device="cpu",
    )
    with pytest.raises(UserInputError, match="carries no (training )?config") as info:
        export_bioimageio(bare, tmp_path / "model.zip")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "model.zip").exists()


def test_foreign_packages_are_refused(package, tmp_path):
    not_a_package = tmp_path / "notes.zip"
    with zipfile.ZipFile(not_a_package, "w") as zf:
        zf.writestr("notes.txt", "hello")
    with pytest.raises(UserInputError, match="not a bioimage.io model package"):
        load_bioimageio(not_a_package)

    # A valid package of someone else's: ours without the section that marks our exports.
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(foreign, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "rdf.yaml":
                rdf = yaml.safe_load(data)
                del rdf["config"]
                data = yaml.safe_dump(rdf).encode()
            dst.writestr(item, data)
    with pytest.raises(UserInputError, match="not a model package exported by napari-cellseg"):
        load_bioimageio(foreign)


def test_a_starter_exports_to_a_package_that_passes_bioimageio_test(tmp_path, capsys):
    """The boundaries starter as it ships: its half-precision weights read back as float32, its
    normalisation (recipe 22) described by its linear part, scale_range 5-95 then clip, and what
    the package leaves out said on the command line and in the package's README."""
    output = tmp_path / "boundaries.zip"
    argv = ["export", "bioimageio", "--checkpoint", "starter:boundaries", "--output", str(output)]
    assert _cli(argv) == 0
    assert "note: The plugin's recipe 22 first removes specks" in capsys.readouterr().err
    with zipfile.ZipFile(output) as package:
        readme = next(n for n in package.namelist() if n.lower().endswith("readme.md"))
        assert "bioimage.io has neither step" in package.read(readme).decode()
    summary = bioimageio.core.test_model(output, weight_format="torchscript", devices=["cpu"])
    assert summary.status == "passed", summary.format()
    steps = load_model_description(output).inputs[0].preprocessing
    scale = next(s for s in steps if s.id == "scale_range")
    clip = next(s for s in steps if s.id == "clip")
    assert (scale.kwargs.min_percentile, scale.kwargs.max_percentile) == (5, 95)
    assert (clip.kwargs.min, clip.kwargs.max) == (-1, 10)


def test_recipe_24_exports_as_22_does_and_says_it_also_leaves_out_the_stripes():
    """The Quick preset's recipe: its linear part (as 21), and a caveat naming each step left out."""
    from bioimageio.spec.model import v0_5

    from napari_cellseg_trainer.export.bioimageio import _normalization, normalization_caveat

    steps21, _, _ = _normalization(21, v0_5)
    steps24, function, text = _normalization(24, v0_5)
    assert [s.id for s in steps24] == [s.id for s in steps21] == ["scale_range", "clip"]
    caveat = normalization_caveat(24)
    assert "recipe 24 first takes out bright stripes, removes specks" in caveat
    assert "none of these steps" in caveat and caveat in text
    assert "stripe" not in normalization_caveat(22) and normalization_caveat(21) is None
    steps25, _, text25 = _normalization(25, v0_5)  # the Quick preset's: the same, one step more
    assert [s.id for s in steps25] == ["scale_range", "clip"]
    assert "keeps the voxels at the volume's maximum bright" in normalization_caveat(25) in text25
    steps26, _, text26 = _normalization(26, v0_5)
    assert [s.id for s in steps26] == ["scale_range", "clip"]
    assert "bright where it lies well above the window" in normalization_caveat(26) in text26
    volume = np.random.default_rng(0).random((1, 1, 4, 8, 8)).astype(np.float32)
    assert np.isfinite(function(volume)).all()
