"""Starter models: shipped, small, loadable anywhere a checkpoint is, a better start than random
weights, and every way to ask for one wrongly refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_cellseg_trainer import checkpoint as ckpt
from napari_cellseg_trainer import config, starters
from napari_cellseg_trainer.cli import main
from napari_cellseg_trainer.config import starters as registry
from napari_cellseg_trainer.data.synthetic import synthetic_volume
from napari_cellseg_trainer.model_source import open_model
from napari_cellseg_trainer.models import build_model, geometry
from napari_cellseg_trainer.normalization import normalize
from napari_cellseg_trainer.training import AuxLoss
from napari_cellseg_trainer.training.step import TrainingStep

NAMES = sorted(starters.STARTERS)


@pytest.mark.parametrize("name", NAMES)
def test_shipped_starters_are_small_half_precision_and_fit_their_model(name):
    chosen = starters.STARTERS[name]
    assert chosen.installed, f"{chosen.file} is missing from the package"
    assert chosen.file.stat().st_size <= 40e6
    raw = torch.load(chosen.file, map_location="cpu", weights_only=True)
    # the established trainer's layout, so its loader reads it too
    assert {"epoch", "num_iterations", "model_state_dict", "device"} <= set(raw)
    floats = [v for v in raw["model_state_dict"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    loaded = open_model(f"starter:{name}")
    assert all(
        v.dtype == torch.float32 for v in loaded.model_state.values() if v.is_floating_point()
    )
    network = loaded.network()
    assert chosen.fits(network)
    model = build_model(chosen.model, 1, [2, 2, 2], chosen.zoom_ratio)
    model.load_state_dict(raw["model_state_dict"], strict=True)  # as the established tool loads
    assert loaded.extra["normalization"] == 22
    info = starters.card(f"starter:{name}")
    assert info["steps"] > 0 and info["seconds"] > 0


def _nuclei_batch(seed: int, size_in, size_out):
    """A patch of a generated nuclei volume, normalised as the starter's raw was."""
    volume = synthetic_volume("nuclei", (size_in[0], 160, 160), seed)
    raw = normalize(volume.raw[None].astype(np.float32), 22)
    pad = [(0, 0)] + [(0, max(0, i - s)) for i, s in zip(size_in, raw.shape[1:], strict=True)]
    raw = np.pad(raw, pad)[:, : size_in[0], : size_in[1], : size_in[2]]
    margin = geometry.margin_of(size_in, size_out)
    box = tuple(slice(m, m + o) for m, o in zip(margin, size_out, strict=True))
    label = np.pad(volume.label, pad[1:])[box]
    return (
        torch.from_numpy(raw[None].copy()),
        torch.from_numpy(label[None].astype(np.int64)),
        torch.ones(1, *size_out),
    )


def test_the_nuclei_starter_beats_random_weights_and_fine_tuning_lowers_its_loss():
    """On generated nuclei it never saw: a lower loss than random weights, and two fine-tuning
    steps on one tiny patch lower it further."""
    size_in = [36, 300, 300]
    size_out = list(geometry.size_out("unet_xy_zoom", size_in, 3))
    cfg = config.TrainConfig()
    cfg.model.name, cfg.size_in, cfg.size_out = "unet_xy_zoom", size_in, size_out
    cfg.loader.batch_size, cfg.device, cfg.learning_rate = 1, "cpu", 3e-4
    batch = _nuclei_batch(987_654, size_in, size_out)
    loss = AuxLoss()

    def evaluate(net) -> float:
        net.eval()
        with torch.no_grad():
            return float(loss(net(batch[0]), batch[1], batch[2]))

    torch.manual_seed(0)
    scratch = TrainingStep(cfg, torch.device("cpu"))
    step = TrainingStep(cfg, torch.device("cpu"))
    ckpt.load_model_weights(step.net, open_model("starter:nuclei"))
    before = evaluate(step.net)
    assert before < evaluate(scratch.net)
    step.prepare()
    for _ in range(2):
        step.net.train()
        step(*batch)
    assert evaluate(step.net) < before


# --------------------------------------------------------------------------- bad input


def _refused(argv, capsys, fragment: str, written: Path | None = None) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    if written is not None:
        assert not written.exists()
    return err


def test_an_unknown_starter_lists_the_starters(tmp_path, capsys):
    image = tmp_path / "img.tif"
    import tifffile

    tifffile.imwrite(image, np.zeros((8, 16, 16), np.uint8))
    argv = ["predict", "--checkpoint", "starter:cells", "--input", str(image)]
    err = _refused([*argv, "--output", str(tmp_path / "out")], capsys, "starter:nuclei")
    assert "starter:boundaries" in err and "'starter:cells'" in err
    assert not (tmp_path / "out").exists()


def test_a_starter_that_does_not_fit_names_the_one_that_does(tiny_config, tmp_path, capsys):
    tiny_config.finetune_from = "starter:nuclei"  # tiny_config is a unet_xy
    tiny_config.normalization = 22
    path = config.save_config(tiny_config, tmp_path / "train.yaml")
    err = _refused(["train", "--config", str(path)], capsys, "use starter:boundaries")
    assert "finetune_from" in err
    assert not list(tmp_path.rglob("*.pytorch"))


def test_a_starter_needs_its_normalisation(tiny_config, tmp_path, capsys):
    tiny_config.finetune_from, tiny_config.normalization = "starter:boundaries", 20
    path = config.save_config(tiny_config, tmp_path / "train.yaml")
    _refused(["config", "check", str(path)], capsys, "normalization: 22")
    for taken in (21, 24):  # what the preset wrote before recipe 22, and writes now
        tiny_config.normalization = taken
        path = config.save_config(tiny_config, tmp_path / f"train{taken}.yaml")
        assert main(["config", "check", str(path)]) == 0


@pytest.mark.parametrize(
    ("content", "fragment"), [(None, "is missing"), (b"not a checkpoint" * 10, "is damaged")]
)
def test_missing_or_damaged_weights_say_how_to_reinstall(
    content, fragment, tmp_path, capsys, monkeypatch
):
    folder = tmp_path / "starters"
    folder.mkdir()
    if content is not None:
        (folder / "nuclei.pt").write_bytes(content)
    monkeypatch.setattr(registry, "FOLDER", folder)
    image = tmp_path / "img.tif"
    import tifffile

    tifffile.imwrite(image, np.zeros((8, 16, 16), np.uint8))
    argv = ["predict", "--checkpoint", "starter:nuclei", "--input", str(image)]
    err = _refused([*argv, "--output", str(tmp_path / "out")], capsys, fragment)
    assert "pip install --force-reinstall" in err
    assert not (tmp_path / "out").exists()


def test_export_writes_half_precision_and_reads_back_float32(trained_checkpoint, tmp_path):
    loaded = ckpt.load_checkpoint(trained_checkpoint)
    loaded.extra["normalization"] = 22
    path = starters.export_starter(loaded, "boundaries", tmp_path / "b.pt", card={"steps": 1})
    raw = torch.load(path, weights_only=True)
    assert raw["optimizer_state_dict"] is None
    assert raw["extra"]["starter"] == {"name": "boundaries", "steps": 1}
    halves = {k: v for k, v in raw["model_state_dict"].items() if v.is_floating_point()}
    assert all(v.dtype == torch.float16 for v in halves.values())
    for k, v in halves.items():
        assert torch.allclose(v.float(), loaded.model_state[k], rtol=1e-3, atol=1e-4)
    with pytest.raises(ckpt.CheckpointError, match="cannot be starter:nuclei"):
        starters.export_starter(loaded, "nuclei", tmp_path / "n.pt")


def test_the_quick_preset_starts_from_the_starter_and_says_so(tmp_path, monkeypatch, capsys):
    from napari_cellseg_trainer.training import probe, quick
    from test_learning import SPEED

    monkeypatch.setattr(quick, "probe_step_speed", lambda *a, **k: SPEED)  # a GPU's probe
    monkeypatch.setattr(probe, "probe_step_speed", lambda *a, **k: SPEED)  # a CPU's
    argv = ["config", "template", "--preset", "quick", "--model", "unet_xy_zoom"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "starting from starter:nuclei" in captured.err
    assert "finetune_from: starter:nuclei" in captured.out
    assert "normalization: 26" in captured.out and "acquisition_augmentation: true" in captured.out
    assert main([*argv, "--start", "scratch"]) == 0
    captured = capsys.readouterr()
    assert "from random weights" in captured.err and "finetune_from: null" in captured.out


def test_predict_with_the_nuclei_starter_as_it_is(tmp_path, capsys):
    import tifffile

    volume = synthetic_volume("nuclei", (40, 96, 96), 2024)
    image = tmp_path / "nuclei.tif"
    tifffile.imwrite(image, volume.raw)
    argv = ["predict", "--checkpoint", "starter:nuclei", "--input", str(image)]
    assert main([*argv, "--output", str(tmp_path / "out"), "--threshold", "0.5"]) == 0
    err = capsys.readouterr().err
    assert "recipe 22" in err  # the starter's normalisation, as recorded
    (written,) = (tmp_path / "out").glob("*_struct_segmentation.tiff")
    mask = tifffile.imread(written) > 0
    assert mask.shape == volume.label.shape
    inside = np.count_nonzero(mask & (volume.label > 0)) / max(1, np.count_nonzero(mask))
    assert inside > volume.label.mean()  # the mask is on the nuclei more than chance
