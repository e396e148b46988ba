"""Training that learns on an ordinary computer: the quick preset, a time budget, patches that
teach, normalisation that travels with the model, a held-out score, and old files unchanged."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import yaml

from napari_cellseg_trainer import checkpoint as ckpt
from napari_cellseg_trainer import config
from napari_cellseg_trainer.cli import main
from napari_cellseg_trainer.data import TrainingImage, draw_buffer, load_folder
from napari_cellseg_trainer.data.quality import data_warnings
from napari_cellseg_trainer.data.sampling import Sampling
from napari_cellseg_trainer.inference.run import defaults_from_checkpoint
from napari_cellseg_trainer.models import geometry
from napari_cellseg_trainer.models.memory import training_bytes
from napari_cellseg_trainer.training import CheckpointSaved, train
from napari_cellseg_trainer.training.events import HoldoutScore, Notice
from napari_cellseg_trainer.training.probe import StepSpeed
from napari_cellseg_trainer.training.quick import choose_patch
from napari_cellseg_trainer.training.run import TrainingRun
from napari_cellseg_trainer.training.schedule import RunClock

GIB = 2**30
SPEED = StepSpeed("cpu (2 threads)", 1e-11, (32, 100, 100), 3.0)  # ~3 s for [32, 100, 100]


def _step_seconds(size):
    return SPEED.step_seconds("unet_xy", size, 1)


@pytest.mark.parametrize(("budget", "max_step"), [(2 * GIB, 20.0), (8 * GIB, 20.0), (8 * GIB, 5.0)])
def test_the_quick_patch_is_valid_fits_and_supervises_the_most_voxels_per_second(budget, max_step):
    choice = choose_patch("unet_xy", SPEED, budget, max_step)
    assert geometry.size_out("unet_xy", choice.size_in) == choice.size_out
    assert training_bytes("unet_xy", choice.size_in, 1) <= budget
    assert choice.step_seconds <= max_step
    # it beats the Sample preset's patch and any valid neighbour that also fits
    rate = choice.supervised_per_second
    assert rate > math.prod((4, 12, 12)) / _step_seconds((32, 100, 100))
    for axis, step in ((0, 1), (1, 8), (2, 8)):
        bigger = list(choice.size_in)
        bigger[axis] += step
        fits = training_bytes("unet_xy", bigger, 1) <= budget and _step_seconds(bigger) <= max_step
        if fits:
            out = geometry.size_out("unet_xy", bigger)
            assert math.prod(out) / _step_seconds(bigger) <= rate


def test_the_quick_patch_fits_in_the_images():
    choice = choose_patch("unet_xy", SPEED, 16 * GIB, 60.0, image_shape=(100, 100, 40))
    assert all(o <= n for o, n in zip(choice.size_out, (100, 100, 40), strict=True))
    assert choice.size_out[2] >= 36  # as wide as the image allows (x out 36 = in 124)


def test_the_step_probe_is_cached_per_machine(tmp_path, monkeypatch, stand_in_network):
    import torch

    from napari_cellseg_trainer.training import probe

    monkeypatch.setitem(probe.REFERENCE, "cpu", (29, 92, 92))  # the smallest valid size
    steps = []
    real = probe.TrainingStep.__call__

    def counted(self, *args, **kwargs):
        steps.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(probe.TrainingStep, "__call__", counted)
    cache = tmp_path / "speed.json"
    first = probe.probe_step_speed("unet_xy", torch.device("cpu"), cache=cache)
    assert len(steps) == 3 and cache.exists() and first.reference_seconds > 0
    again = probe.probe_step_speed("unet_xy", torch.device("cpu"), cache=cache)
    assert len(steps) == 3 and again == first  # read from the cache: no step run


def test_config_template_quick_explains_its_choice(tmp_path, monkeypatch, capsys):
    from napari_cellseg_trainer.training import probe, quick

    monkeypatch.setattr(quick, "probe_step_speed", lambda *a, **k: SPEED)  # a GPU's probe
    monkeypatch.setattr(probe, "probe_step_speed", lambda *a, **k: SPEED)  # a CPU's
    assert main(["config", "template", "--preset", "quick", "--minutes", "10"]) == 0
    captured = capsys.readouterr()
    cfg = config.from_mapping(config.TrainConfig, yaml.safe_load(captured.out))
    assert cfg.minutes == 10 and cfg.lr_schedule == "warmup_cosine" and cfg.foreground_share == 0.5
    assert f"size_in {cfg.size_in}" in captured.err and "supervised voxels" in captured.err


def test_minutes_stop_the_run_on_time_with_a_checkpoint(
    tiny_config, tmp_path, capsys, stand_in_network
):
    tiny_config.epochs, tiny_config.save_every_n_epoch = 100_000, 100_000
    path = config.save_config(tiny_config, tmp_path / "train.yaml")
    assert main(["train", "--config", str(path), "--minutes", "0.1"]) == 0  # 6 s
    err = capsys.readouterr().err
    assert "training time budget after" in err
    (saved,) = (tmp_path / "checkpoints").glob("checkpoint_epoch_*.pytorch")
    assert ckpt.load_checkpoint(saved).config["minutes"] == 0.1


def test_the_schedule_warms_up_then_decays_to_a_floor(tiny_config):
    cfg = tiny_config
    cfg.epochs, cfg.learning_rate, cfg.lr_schedule = 10, 1e-3, "warmup_cosine"
    clock = RunClock(cfg, iterations_per_epoch=10, start_iteration=0)
    rates = [clock.learning_rate(i) for i in range(100)]
    assert rates[0] < 1e-4 and max(rates) == pytest.approx(1e-3, rel=0.02)
    assert rates.index(max(rates)) <= 6 and rates[-1] == pytest.approx(5e-5, rel=0.1)
    cfg.lr_schedule = "constant"
    assert {RunClock(cfg, 10, 0).learning_rate(i) for i in range(100)} == {1e-3}


def _sparse_image() -> TrainingImage:
    label = np.zeros((12, 96, 96), np.uint8)
    label[4:8, 40:44, 40:44] = 1  # one small object in a large image
    raw = np.random.default_rng(0).random((1, *label.shape), dtype=np.float32)
    return TrainingImage("sparse", raw, label, np.ones(label.shape, np.float32), "sparse")


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_the_balanced_sampler_centres_the_configured_share_on_structure(share):
    image, size_in, size_out = _sparse_image(), (8, 20, 20), (4, 12, 12)
    patches = draw_buffer(
        [image], 40, size_in, size_out, np.random.default_rng(1), sampling=Sampling(share)
    )
    centre = patches.label[:, 2, 6, 6]
    with_structure = patches.label.reshape(40, -1).max(axis=1)
    assert np.count_nonzero(centre) >= round(share * 40) * 0.9  # centred on a structure voxel
    if share == 0:  # uniform corners: the small object is rarely in a patch
        assert np.count_nonzero(with_structure) < 20


def test_intensity_augmentation_changes_the_raw_and_only_the_raw():
    image = _sparse_image()
    args = ([image], 6, (8, 20, 20), (4, 12, 12))
    plain = draw_buffer(*args, np.random.default_rng(2))
    varied = draw_buffer(*args, np.random.default_rng(2), sampling=Sampling(0, intensity=True))
    np.testing.assert_array_equal(plain.label, varied.label)
    np.testing.assert_array_equal(plain.costmap, varied.costmap)
    assert not np.allclose(plain.raw, varied.raw) and np.isfinite(varied.raw).all()


def test_an_established_yaml_draws_exactly_the_patches_it_drew_before(sample_folder, tmp_path):
    """The first two buffers and batch order of an old file, against digests of version 0.1.0."""
    text = (
        "model: {name: unet_xy}\nsize_in: [32, 100, 100]\nsize_out: [4, 12, 12]\n"
        f"checkpoint_dir: {tmp_path / 'ck'}\nlearning_rate: 0.001\nepochs: 2\n"
        f"loader: {{datafolder: {sample_folder}, batch_size: 2, PatchPerBuffer: 20}}\n"
        "seed: 0\ndevice: cpu\n"
    )
    path = tmp_path / "old.yaml"
    path.write_text(text)
    cfg = config.load_config(path)
    run = TrainingRun(cfg)
    try:
        run.draw_patches()
        digest = hashlib.sha1()
        for array in (run.patches.raw, run.patches.label, run.patches.costmap):
            digest.update(np.ascontiguousarray(array).tobytes())
        order = [int(batch[1].sum()) for batch in run.batches()]
        second = hashlib.sha1(run.buffer.next_buffer().raw.tobytes()).hexdigest()[:16]
    finally:
        run.close()
    assert digest.hexdigest()[:16] == "34c153bdd0a5f118"
    assert order[:5] == [0, 25, 0, 0, 44]
    assert second == "2b4adb731827c1fc"


def test_the_normalisation_of_training_is_the_one_prediction_applies(
    tiny_config, sample_folder, stand_in_network, trained_checkpoint
):
    tiny_config.epochs, tiny_config.normalization = 1, 20
    saved = [e.path for e in train(tiny_config) if isinstance(e, CheckpointSaved)][-1]
    loaded = ckpt.load_checkpoint(saved)
    assert loaded.extra["normalization"] == 20
    defaults = defaults_from_checkpoint(loaded)
    assert defaults.config.Normalization == 20 and "recipe 20" in defaults.note
    # raw used as given (a training folder): min-max, said so
    given = defaults_from_checkpoint(ckpt.load_checkpoint(trained_checkpoint))
    assert given.config.Normalization == 0 and "as given" in given.note


def _held_out_scores(monkeypatch, scores, threshold=0.5):
    """The held-out IoU of each epoch in turn, in place of predicting the slabs."""
    from napari_cellseg_trainer.training import run as run_module

    scores = iter(scores)
    monkeypatch.setattr(run_module, "holdout_iou", lambda *a: (next(scores), threshold, 0.7))


def test_a_held_out_slab_is_scored_every_epoch_and_early_stop_stops(
    tiny_config, monkeypatch, stand_in_network
):
    _held_out_scores(monkeypatch, [0.5, 0.6, 0.55, 0.52, 0.51, 0.5], threshold=0.3)
    cfg = tiny_config
    cfg.epochs, cfg.holdout, cfg.early_stop = 20, 0.25, 3
    events = list(train(cfg))
    held = [e for e in events if isinstance(e, HoldoutScore)]
    assert [e.iou for e in held] == [0.5, 0.6, 0.55, 0.52, 0.51]
    assert held[-1].best == 0.6 and held[-1].best_epoch == 2
    finished = events[-1]
    assert finished.reason == "early stop" and "has not improved for 3 epochs" in finished.detail
    saved = ckpt.load_checkpoint(finished.checkpoint)
    assert saved.epoch == 5 and saved.extra["threshold"] == 0.3


def test_keep_best_keeps_the_best_held_out_weights_and_predicts_with_them(
    tiny_config, monkeypatch, stand_in_network
):
    _held_out_scores(monkeypatch, [0.4, 0.7, 0.5, 0.6])
    cfg = tiny_config
    cfg.epochs, cfg.holdout, cfg.keep_best = 4, 0.25, True
    events = list(train(cfg))
    best = [e for e in events if isinstance(e, CheckpointSaved) and e.best]
    assert [e.epoch for e in best] == [1, 2]  # saved on each new best only
    assert best[-1].path.name == ckpt.BEST_NAME
    finished = events[-1]
    assert finished.best_checkpoint == best[-1].path and finished.best_epoch == 2
    assert finished.best_iou == 0.7 and finished.to_predict == best[-1].path
    kept = ckpt.load_checkpoint(finished.to_predict)
    assert kept.epoch == 2 and kept.extra["holdout_iou"] == 0.7
    assert finished.checkpoint.name == "checkpoint_epoch_4.pytorch"  # the last, as before
    # the best checkpoint is never taken for a resume
    assert ckpt.latest_checkpoint(best[-1].path.parent) == finished.checkpoint


def test_a_resumed_run_does_not_replace_a_better_kept_best(
    tiny_config, monkeypatch, stand_in_network
):
    _held_out_scores(monkeypatch, [0.7, 0.3, 0.2, 0.8])
    cfg = tiny_config
    cfg.epochs, cfg.holdout, cfg.keep_best = 2, 0.25, True
    first = list(train(cfg))[-1]
    cfg.epochs, cfg.resume = 4, str(first.checkpoint)
    again = list(train(cfg))
    # 0.3 and 0.2 do not replace the kept 0.7; 0.8 does
    assert [e.epoch for e in again if isinstance(e, CheckpointSaved) and e.best] == [4]
    assert ckpt.load_checkpoint(again[-1].best_checkpoint).extra["holdout_iou"] == 0.8


def test_a_fine_tune_never_ends_worse_than_its_start(
    tiny_config, monkeypatch, stand_in_network, tmp_path
):
    """With finetune_from, the starting weights are scored first (epoch 0): if the run only
    makes them worse, keep_best keeps them."""
    cfg = tiny_config
    cfg.epochs = 1
    (start,) = [e.path for e in train(cfg) if isinstance(e, CheckpointSaved)]
    _held_out_scores(monkeypatch, [0.6, 0.4, 0.5])
    cfg.finetune_from, cfg.checkpoint_dir = str(start), str(tmp_path / "tuned")
    cfg.epochs, cfg.holdout, cfg.keep_best = 2, 0.25, True
    events = list(train(cfg))
    held = [e for e in events if isinstance(e, HoldoutScore)]
    assert [(e.epoch, e.iou) for e in held] == [(0, 0.6), (1, 0.4), (2, 0.5)]
    finished = events[-1]
    assert finished.best_epoch == 0 and finished.best_iou == 0.6
    kept = ckpt.load_checkpoint(finished.to_predict)
    assert kept.epoch == 0 and kept.extra["holdout_iou"] == 0.6


def test_keep_best_needs_a_held_out_slab():
    cfg = config.TrainConfig()
    cfg.keep_best = True
    problems = [p.key for p in config.validate(cfg)]
    assert "keep_best" in problems


def test_the_held_out_slab_is_kept_out_of_training(tiny_config, stand_in_network):
    cfg = tiny_config
    cfg.holdout = 0.25
    run = TrainingRun(cfg)
    try:
        whole = load_folder(cfg.loader.datafolder, 1, 2, cfg.size_out)
        for kept, slab, image in zip(run.train_images, run.slabs, whole, strict=True):
            assert kept.shape[2] + slab.shape[2] == image.shape[2]  # x is split (128 = 96 + 32)
            np.testing.assert_array_equal(slab.raw, image.raw[..., kept.shape[2] :])
    finally:
        run.close()


def test_labels_unrelated_to_the_image_and_noise_raw_are_warned_about():
    rng = np.random.default_rng(0)
    label = np.zeros((20, 64, 64), np.uint8)
    label[5:15, 10:30, 10:30] = 1
    smooth = np.zeros(label.shape, np.float32)
    smooth[5:15, 10:30, 10:30] = 1
    import scipy.ndimage as ndi

    good = TrainingImage(
        "good",
        ndi.gaussian_filter(smooth, 2)[None] + 0.01,
        label,
        np.ones(label.shape, np.float32),
        "good",
    )
    assert data_warnings([good], as_given=False) == []
    noise = TrainingImage(
        "noise", rng.random((1, *label.shape), dtype=np.float32), label, good.costmap, "noise"
    )
    warned = " ".join(data_warnings([noise], as_given=False))
    assert "hardly follow the image's intensity" in warned and "looks like noise" in warned
    loud = TrainingImage("loud", good.raw * 60000, label, good.costmap, "loud")
    assert any("unnormalised" in w for w in data_warnings([loud], as_given=True))
    few = np.zeros(label.shape, np.uint8)
    few[0, 0, 0] = 1
    little = TrainingImage("little", good.raw, few, good.costmap, "little")
    assert any("foreground_share" in w for w in data_warnings([little], as_given=False))


def test_warnings_about_the_data_reach_the_user_as_notices(
    tiny_config, stand_in_network, sample_folder
):
    tiny_config.epochs = 1
    tiny_config.loader.datafolder = str(sample_folder)
    events = list(train(tiny_config))
    assert not [e for e in events if isinstance(e, Notice)]  # the sample data raise no doubt
