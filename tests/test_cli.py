"""The ``cellseg-trainer`` command line: outputs, exit codes, files written."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from napari_cellseg_trainer import config
from napari_cellseg_trainer.cli import main
from napari_cellseg_trainer.training.metrics import read_metrics


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model", "unet_xy", "--size-in", "48", "148", "148"], "20 60 60"),
        (
            ["--model", "unet_xy_zoom", "--zoom-ratio", "3", "--size-in", "52", "420", "420"],
            "20 152 152",
        ),
        (
            ["--model", "unet_xy_zoom", "--zoom-ratio", "3", "--size-in", "52", "372", "372"],
            "20 104 104",
        ),
        (["--model", "unet_xy", "--size-in", "32", "100", "100"], "4 12 12"),
    ],
)
def test_sizes_prints_size_out(args, expected, capsys):
    assert main(["sizes", *args]) == 0
    assert capsys.readouterr().out.strip() == expected


def test_invalid_size_exits_2_with_one_line_naming_the_nearest(capsys):
    assert main(["sizes", "--model", "unet_xy", "--size-in", "48", "150", "150"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "[48, 148, 148]" in err[0] and "[48, 156, 156]" in err[0]


def test_console_script_runs_as_a_module():
    out = subprocess.run(
        [sys.executable, "-m", "napari_cellseg_trainer", "sizes", "--size-in", "48", "148", "148"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "20 60 60"


def test_template_then_check(tmp_path, capsys):
    assert main(["config", "template", "--model", "unet_xy_zoom"]) == 0
    text = capsys.readouterr().out
    assert yaml.safe_load(text)["size_in"] == [52, 420, 420]
    path = tmp_path / "train.yaml"
    path.write_text(text)
    assert main(["config", "check", str(path), "--no-paths"]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_lists_every_problem_and_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "epochs: -1\nloader: {batch_size: x, datafolder: d}\ncheckpoint_dir: c\nfoo: 1\n"
    )
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    for key in ("epochs:", "loader.batch_size:", "foo: unknown key"):
        assert key in err
    assert "Traceback" not in err


def test_check_reports_missing_data_folder(tmp_path, capsys):
    cfg = config.template()
    cfg.loader.datafolder = str(tmp_path / "absent")
    path = config.save_config(cfg, tmp_path / "c.yaml")
    assert main(["config", "check", str(path)]) == 2
    assert "loader.datafolder: folder" in capsys.readouterr().err


def test_train_writes_checkpoints_metrics_and_curve(
    tiny_config, tmp_path, capsys, stand_in_network
):
    path = config.save_config(tiny_config, tmp_path / "train.yaml")
    assert (
        main(
            ["train", "--config", str(path), "--set", "epochs=2", "--set", "preview_every_n_iter=0"]
        )
        == 0
    )
    out_dir = tmp_path / "checkpoints"
    assert sorted(p.name for p in out_dir.glob("*.pytorch")) == [
        "checkpoint_epoch_1.pytorch",
        "checkpoint_epoch_2.pytorch",
    ]
    rows = read_metrics(out_dir / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[0]["mean_loss"]) > 0
    png = (out_dir / "loss_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    err = capsys.readouterr().err
    assert "training completed after 2 epoch(s)" in err


def test_train_on_a_bad_folder_exits_2_naming_the_problem(tiny_config, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    tiny_config.loader.datafolder = str(empty)
    path = config.save_config(tiny_config, tmp_path / "train.yaml")
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(empty) in err and "Traceback" not in err
    assert not list((tmp_path / "checkpoints").glob("*.pytorch"))


def test_sample_data_command_writes_a_valid_folder(tmp_path, capsys):
    folder = tmp_path / "sample"
    assert main(["sample-data", str(folder), "--n-images", "2"]) == 0
    assert len(list(folder.glob("*_GT.ome.tif"))) == 2
    assert "wrote 6 files" in capsys.readouterr().out


@pytest.mark.parametrize(("sig", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_stops_training_after_the_batch_with_a_checkpoint(
    tiny_config, tmp_path, sig, code
):
    """The run saves a checkpoint and exits 128 + the signal: a batch system reads "stopped"."""
    import signal

    tiny_config.epochs, tiny_config.save_every_n_epoch = 1000, 1000
    tiny_config.preview_every_n_iter = 0
    path = config.save_config(tiny_config, tmp_path / "train.yaml")
    cmd = [sys.executable, "-m", "napari_cellseg_trainer", "train", "--config", str(path)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    seen = ""
    for line in proc.stderr:  # "training on cpu ...": the loop runs, the handler is in place
        seen += line
        if line.startswith("training on"):
            break
    proc.send_signal(getattr(signal, sig))
    err = seen + proc.communicate(timeout=300)[1]
    assert proc.returncode == code, err[-2000:]
    assert "training stopped after" in err and f"stopped by {sig}" in err
    saved = list((tmp_path / "checkpoints").glob("checkpoint_epoch_*.pytorch"))
    assert len(saved) == 1


def test_pretrain_export_writes_a_starter_from_the_checkpoint_given(
    trained_checkpoint, tmp_path, capsys, monkeypatch
):
    """--checkpoint opens through the one opener of users' models; a starter file comes out in
    half precision with its card and its BatchNorm statistics measured again (the weights as
    they were); a missing checkpoint is one line, exit 2, nothing written."""
    from dataclasses import replace
    from functools import partial

    import torch

    from napari_cellseg_trainer.checkpoint import load_checkpoint
    from napari_cellseg_trainer.training import pretrain

    # one generated volume for the BatchNorm statistics instead of the recipe's six, and two
    # for the intensity band instead of 24
    small = replace(pretrain.RECIPES["boundaries"], volumes_per_buffer=1)
    monkeypatch.setitem(pretrain.RECIPES, "boundaries", small)
    monkeypatch.setattr(pretrain, "starter_extra", partial(pretrain.starter_extra, volumes=2))
    out = tmp_path / "boundaries.pt"
    args = ["pretrain", "export", "--starter", "boundaries", "--output"]
    given = ["--checkpoint", str(trained_checkpoint), "--patches", "2"]
    assert main([*args, str(out), *given]) == 0
    written, original = load_checkpoint(out), load_checkpoint(trained_checkpoint)
    assert written.extra["starter"]["name"] == "boundaries"
    assert written.extra["starter"]["batchnorm_patches"] == 2
    weights = [v for v in written.model_state.values() if v.is_floating_point()]
    assert weights and all(v.dtype == torch.float16 for v in weights)
    for key, value in original.model_state.items():
        if not value.is_floating_point():
            continue
        same = torch.allclose(written.model_state[key].float(), value, rtol=1e-2, atol=1e-3)
        assert same != key.endswith(("running_mean", "running_var")), key
    capsys.readouterr()
    other = tmp_path / "other.pt"
    assert main([*args, str(other), "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.pt" in err[0]
    assert not other.exists()
