"""The training loop: events, falling loss, checkpoints, stop, resume, validation."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_cellseg_trainer import checkpoint as ckpt
from napari_cellseg_trainer import config
from napari_cellseg_trainer.data import write_sample_folder
from napari_cellseg_trainer.models import build_model
from napari_cellseg_trainer.training import (
    CheckpointSaved,
    EpochEnd,
    IterationEnd,
    PreviewPatch,
    TrainingFinished,
    TrainingStarted,
    ValidationDone,
    train,
)


def _run(cfg, stop=None):
    return list(train(cfg, stop=stop))


def _of(events, cls):
    return [e for e in events if isinstance(e, cls)]


@pytest.fixture(scope="module")
def short_run(sample_folder, tmp_path_factory):
    """One tiny run of the stand-in network (2 epochs of 2 iterations): its events and files."""
    from conftest import StandInNet, make_tiny_config
    from napari_cellseg_trainer.training import step

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(step, "build_network", StandInNet)
        return _run(make_tiny_config(sample_folder, tmp_path_factory.mktemp("short_run")))


def test_short_run_yields_the_expected_events_and_checkpoints(short_run):
    events = short_run
    assert isinstance(events[0], TrainingStarted) and events[0].device.startswith("cpu")
    iters = _of(events, IterationEnd)
    assert [e.iteration for e in iters] == [1, 2, 3, 4]  # 2 patches / batch 1 * 2 epochs
    assert [e.epoch for e in _of(events, EpochEnd)] == [1, 2]
    previews = _of(events, PreviewPatch)
    assert len(previews) == 4
    p = previews[0]
    assert p.raw.shape == p.label.shape == p.probability.shape == (4, 12, 12)
    assert (
        p.probability.dtype == np.float32 and 0 <= p.probability.min() <= p.probability.max() <= 1
    )
    saved = _of(events, CheckpointSaved)
    assert [s.path.name for s in saved] == [
        "checkpoint_epoch_1.pytorch",
        "checkpoint_epoch_2.pytorch",
    ]
    finished = events[-1]
    assert isinstance(finished, TrainingFinished) and finished.reason == "completed"
    assert finished.checkpoint == saved[-1].path


def test_checkpoint_rebuilds_its_own_model_and_matches_the_established_format(trained_checkpoint):
    path = trained_checkpoint  # unet_xy after one step (conftest)
    raw = torch.load(path, weights_only=True)
    assert {"epoch", "num_iterations", "model_state_dict", "optimizer_state_dict", "device"} <= set(
        raw
    )
    loaded = ckpt.load_checkpoint(path)
    cfg = loaded.config
    model = build_model(
        cfg["model"]["name"], cfg["nchannel"], cfg["nclass"], cfg["model"]["zoom_ratio"]
    )
    ckpt.load_model_weights(model, loaded)
    assert (loaded.epoch, loaded.num_iterations) == (1, 1)


def test_loss_falls_on_the_sample_data(tiny_config):
    cfg = tiny_config
    cfg.size_in, cfg.size_out = [29, 92, 92], [1, 4, 4]  # unet_xy's smallest: the real network
    cfg.epochs, cfg.save_every_n_epoch = 6, 6
    cfg.loader.PatchPerBuffer = 1  # one step an epoch
    cfg.loader.epoch_shuffle = 6  # the same patch every epoch: the loss must fall on it
    cfg.preview_every_n_iter = 0
    losses = [e.mean_loss for e in _run(cfg) if isinstance(e, EpochEnd)]
    assert len(losses) == 6
    assert np.mean(losses[-2:]) < 0.7 * losses[0], losses


def test_stop_saves_a_checkpoint_and_resume_continues_the_count(tiny_config, stand_in_network):
    cfg = tiny_config
    cfg.epochs = 3
    stop = threading.Event()
    events = []
    epoch_1 = ckpt_dir(cfg) / "checkpoint_epoch_1.pytorch"
    for event in train(cfg, stop=stop):
        events.append(event)
        if isinstance(event, IterationEnd) and event.iteration == 3:
            clean = epoch_1.read_bytes()  # saved at the end of epoch 1
            stop.set()  # in epoch 2, after its first batch (2 batches per epoch)
    finished = events[-1]
    assert finished.reason == "stopped" and finished.iteration == 3 and finished.epoch == 1
    # The stop inside epoch 2 is saved under its own name: epoch 1's clean weights stay.
    assert finished.checkpoint.name == "checkpoint_epoch_1_iter_3.pytorch"
    assert ckpt.load_checkpoint(finished.checkpoint).num_iterations == 3
    assert epoch_1.read_bytes() == clean
    assert ckpt.latest_checkpoint(ckpt_dir(cfg)) == finished.checkpoint

    cfg.resume = cfg.checkpoint_dir  # a folder: its newest checkpoint
    resumed = _run(cfg)
    start = resumed[0]
    assert (start.start_epoch, start.start_iteration) == (1, 3)
    assert [e.epoch for e in _of(resumed, EpochEnd)] == [2, 3]
    assert _of(resumed, IterationEnd)[0].iteration == 4
    assert resumed[-1].reason == "completed" and resumed[-1].epoch == 3


def test_resume_restores_the_optimiser_state(tiny_config, stand_in_network):
    cfg = tiny_config
    cfg.epochs = 1
    path = _of(_run(cfg), CheckpointSaved)[-1].path
    state = ckpt.load_checkpoint(path).optimizer_state
    assert state["state"], "Adam moments were saved"
    cfg.epochs, cfg.resume = 2, str(path)
    cfg.learning_rate = 0.0  # weights must then stay exactly as loaded
    events = _run(cfg)
    after = ckpt.load_checkpoint(_of(events, CheckpointSaved)[-1].path)
    before = ckpt.load_checkpoint(path)
    # Adam's step count continued from the checkpoint instead of restarting at 0.
    steps_before = float(before.optimizer_state["state"][0]["step"])
    assert float(after.optimizer_state["state"][0]["step"]) == steps_before + 2


def test_validation_reports_iou_per_output_pair(tiny_config, tmp_path, stand_in_network):
    cfg = tiny_config
    # Small images: validation predicts each held-out image whole, tile by tile.
    write_sample_folder(tmp_path / "small", n_images=3, shape=(4, 24, 24), seed=1)
    cfg.loader.datafolder = str(tmp_path / "small")
    cfg.validation.metric = "default"
    cfg.validation.leaveout = [0]
    cfg.validation.validate_every_n_epoch = 1
    cfg.epochs = 1
    events = _run(cfg)
    assert events[0].n_train_images == 2 and events[0].n_validation_images == 1
    (val,) = _of(events, ValidationDone)
    assert val.pairs == ((0, 1), (1, 1), (2, 1))
    assert all(0.0 <= v <= 1.0 for v in val.iou)


def test_nan_loss_stops_with_the_iteration_and_keeps_the_checkpoint(
    tiny_config, monkeypatch, stand_in_network
):
    from napari_cellseg_trainer.training import TrainingError
    from napari_cellseg_trainer.training.loss import AuxLoss

    cfg = tiny_config
    cfg.epochs = 3  # 2 iterations an epoch, a checkpoint after each epoch
    calls = []
    real = AuxLoss.forward

    def nan_at_third(self, outputs, label, costmap):
        calls.append(1)
        loss = real(self, outputs, label, costmap)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(AuxLoss, "forward", nan_at_third)
    with pytest.raises(TrainingError, match=r"loss became nan at iteration 3") as err:
        _run(cfg)
    assert "the weights were not updated" in str(err.value)
    folder = ckpt_dir(cfg)
    assert sorted(p.name for p in folder.glob("*.pytorch")) == ["checkpoint_epoch_1.pytorch"]
    kept = ckpt.load_checkpoint(folder / "checkpoint_epoch_1.pytorch")
    assert kept.num_iterations == 2
    assert all(torch.isfinite(v).all() for v in kept.model_state.values() if v.is_floating_point())


def test_validation_tiles_are_bigger_cheaper_and_agree_with_training_tiles(tiny_config):
    from napari_cellseg_trainer.inference import predict_volume
    from napari_cellseg_trainer.models import geometry
    from napari_cellseg_trainer.models.memory import inference_bytes, training_bytes
    from napari_cellseg_trainer.training.validation import validation_tile

    shape = (4, 20, 20)  # 4 training tiles (2 x 2 in y-x), one validation tile
    size = validation_tile(tiny_config, shape)
    assert geometry.is_valid_size_in("unet_xy", size) and size != tuple(tiny_config.size_in)
    assert inference_bytes("unet_xy", size, 1) <= training_bytes("unet_xy", tiny_config.size_in, 1)
    assert all(o >= n for o, n in zip(geometry.size_out("unet_xy", size), shape, strict=True))
    torch.manual_seed(0)
    model = build_model("unet_xy").eval()
    raw = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    small = predict_volume(
        model, raw, tiny_config.size_in, tiny_config.size_out, tiling="established"
    )
    big = predict_volume(model, raw, size, geometry.size_out("unet_xy", size), tiling="established")
    # The network pools y and x by 2 three times, so a tile border shifts the pooling grid
    # unless it falls on a multiple of 8: here the second training tile starts at y = x = 8,
    # on the grid, so the two tilings agree everywhere (elsewhere they agree closely).
    np.testing.assert_allclose(big, small, atol=2e-5)


def test_out_of_memory_stops_with_advice_instead_of_a_traceback(tiny_config, monkeypatch):
    from napari_cellseg_trainer.training import TrainingError, step

    class Hungry(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(step, "build_network", lambda *a, **k: Hungry())
    with pytest.raises(TrainingError, match="out of memory on cpu .* at iteration 1") as err:
        list(train(tiny_config))
    assert "smaller size_in or batch_size" in str(err.value)
    assert not list(ckpt_dir(tiny_config).glob("*.pytorch"))


def test_out_of_memory_advice_on_a_gpu_names_sizes_that_fit(tiny_config, monkeypatch):
    from types import SimpleNamespace

    from napari_cellseg_trainer.training.step import out_of_memory_message

    props = SimpleNamespace(name="Fake GPU", total_memory=8 * 2**30)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *_: props)
    tiny_config.size_in, tiny_config.size_out = [48, 196, 196], [20, 108, 108]
    text = out_of_memory_message(tiny_config, torch.device("cuda", 0), 7)
    assert "cuda:0 (Fake GPU, 8 GB) at iteration 7" in text
    assert "size_in [48, 132, 132] (size_out [20, 44, 44]) with batch_size 4" in text


def ckpt_dir(cfg):
    from pathlib import Path

    return Path(cfg.checkpoint_dir)


GROWTH_SCRIPT = """
import gc, json, sys
import torch
from napari_cellseg_trainer import config
from napari_cellseg_trainer.devices import heap_bytes_in_use
from napari_cellseg_trainer.data.buffer import PatchBuffer
from napari_cellseg_trainer.training import EpochEnd, step, train

sys.path.insert(0, sys.argv[2])  # the tests' folder: its stand-in network
from conftest import StandInNet

step.build_network = StandInNet
prefetch = PatchBuffer.next_buffer

def settled(self):
    # the next buffer finished before the epoch's steps, as it is behind the U-Net's slow
    # steps: every epoch ends in the same state
    patches = prefetch(self)
    if self._pending is not None:
        self._pending.result()
    return patches

PatchBuffer.next_buffer = settled
cfg = config.load_config(sys.argv[1])
heap, tensors, objects = [0] * cfg.epochs, [0] * cfg.epochs, [0] * cfg.epochs  # nothing new per epoch
for event in train(cfg):
    if isinstance(event, EpochEnd):
        gc.collect()
        i = event.epoch - 1
        heap[i] = heap_bytes_in_use()
        tensors[i] = sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))
        objects[i] = len(gc.get_objects())
print(json.dumps([heap, tensors, objects]))
"""


def test_many_epochs_do_not_grow_memory(tiny_config, tmp_path):
    """Memory in use per epoch, in a fresh process (a test process's own allocations would blur it).

    The stand-in network: what could grow is around the network (buffers, previews, events,
    checkpoints, the loss kept with its graph), and ten epochs of it take seconds.

    Not RSS: glibc keeps freed pages and RSS wandered by +-100 MB per epoch with nothing growing
    (``bench/bench_run_memory.py``). The C heap's bytes in use (tensors, arrays) are exact
    instead; live tensors and Python objects are counted.
    """
    import json
    import subprocess
    import sys
    from pathlib import Path

    from napari_cellseg_trainer.devices import heap_bytes_in_use

    cfg = tiny_config
    cfg.loader.PatchPerBuffer, cfg.loader.epoch_shuffle = 1, 1  # a new buffer every epoch
    cfg.epochs, cfg.save_every_n_epoch = 10, 3  # the first save's lazy imports are done by epoch 4
    cfg.size_in, cfg.size_out = [29, 92, 92], [1, 4, 4]  # unet_xy's smallest
    cfg.preview_every_n_iter = 1
    path = config.save_config(cfg, tmp_path / "train.yaml")
    done = subprocess.run(
        [sys.executable, "-c", GROWTH_SCRIPT, str(path), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        check=True,
    )
    heap, tensors, objects = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(tensors[3:]) == {tensors[3]}, tensors
    assert objects[-1] - objects[3] <= 2, objects  # measured: 0
    if heap_bytes_in_use() is None:
        pytest.skip("no mallinfo2 in this C library: the heap in use cannot be read")
    # Measured: +15 to +22 KB from epoch 4 to 10. One leaked patch per epoch would add 6 MB; the
    # bound catches anything from ~40 KB per epoch and leaves the noise 11 times its size.
    assert heap[-1] - heap[3] <= 256 * 1024, [(b - heap[3]) // 1024 for b in heap]


def test_compile_and_unsupported_precisions_are_refused_on_cpu(tiny_config):
    from napari_cellseg_trainer.errors import UserInputError
    from napari_cellseg_trainer.training.precision import PrecisionError

    assert issubclass(PrecisionError, UserInputError)
    tiny_config.compile = True
    with pytest.raises(PrecisionError, match="compile: true needs a CUDA GPU"):
        _run(tiny_config)


class CroppingNet(torch.nn.Module):
    """A 1x1x1 convolution, cropped to size_out: the U-Net's interface at a fraction of its cost."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, kernel_size=1)
        self.bn = torch.nn.BatchNorm3d(2)
        self.margin = [(i - o) // 2 for i, o in zip(cfg.size_in, cfg.size_out, strict=True)]
        self.size_out = cfg.size_out

    def forward(self, x):
        y = self.bn(self.conv(x))
        (mz, my, mx), (oz, oy, ox) = self.margin, self.size_out
        y = torch.log_softmax(y[:, :, mz : mz + oz, my : my + oy, mx : mx + ox], dim=1)
        return [y, y, y]


def test_preview_shows_the_most_telling_patch_of_the_batch(tiny_config):
    from napari_cellseg_trainer.training.run import preview_patch

    cfg = tiny_config
    raw = torch.rand(4, 1, *cfg.size_in)
    label = torch.zeros(4, *cfg.size_out, dtype=torch.long)
    costmap = torch.ones(4, *cfg.size_out)
    label[0, 1], costmap[0] = 1, 0  # a corner rotated in from outside: it counts for nothing
    label[1, 0, :3] = 1  # 3 x 12 structure voxels that count
    label[2, 0, :2] = 1  # fewer
    label[3, 0, :5], costmap[3, 0] = 1, 0  # more, but all outside the cost map
    output = torch.log_softmax(torch.rand(4, 2, *cfg.size_out), dim=1)
    patch = preview_patch(1, 7, raw, label, costmap, output, cfg)
    mz, my, mx = [(i - o) // 2 for i, o in zip(cfg.size_in, cfg.size_out, strict=True)]
    oz, oy, ox = cfg.size_out
    np.testing.assert_array_equal(patch.raw, raw[1, 0, mz : mz + oz, my : my + oy, mx : mx + ox])
    np.testing.assert_array_equal(patch.label, label[1].numpy())
    np.testing.assert_allclose(patch.probability, output[1, 1].exp().numpy())
    assert (patch.epoch, patch.iteration) == (1, 7)
