"""Sparse 3-D labels and correct-and-retrain: what was not painted does not teach; a fine-tune
starts from the checkpoint's weights and writes into a run folder of its own."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from napari_cellseg_trainer import checkpoint as ckpt
from napari_cellseg_trainer.config import template
from napari_cellseg_trainer.data.layer_sets import BACKGROUND, LayerSet, prepare
from napari_cellseg_trainer.training import CheckpointSaved, TrainingStarted, TrainingStep, train
from napari_cellseg_trainer.training.quick import fine_tune_preset
from napari_cellseg_trainer.training.run import TrainingRun

SIZE_IN, SIZE_OUT = (8, 20, 20), (4, 12, 12)


def _sparse_layer() -> LayerSet:
    rng = np.random.default_rng(0)
    raw = rng.random(SIZE_IN, dtype=np.float32) * 100
    painted = np.zeros(SIZE_IN, np.uint16)  # 0: not painted
    painted[3, 4:16, 4:16] = BACKGROUND  # one painted slice of background ...
    painted[3, 8:12, 8:12] = 7  # ... with an instance of structure on it
    painted[5, 6:10, 6:10] = 3
    return LayerSet("cells", raw, painted, sparse=True)


def _one_step(raw, label, costmap) -> tuple[float, list[torch.Tensor]]:
    cfg = template("unet_xy")
    cfg.size_in, cfg.size_out = list(SIZE_IN), list(SIZE_OUT)
    cfg.learning_rate = 1e-2
    torch.manual_seed(0)

    class Small(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv3d(1, 2, (5, 9, 9))

        def forward(self, x):
            y = torch.log_softmax(self.conv(x), dim=1)
            return [y, y, y]

    net = Small()
    step = TrainingStep(cfg, torch.device("cpu"), net=net)
    margin = [(i - o) // 2 for i, o in zip(SIZE_IN, SIZE_OUT, strict=True)]
    inner = tuple(slice(m, m + o) for m, o in zip(margin, SIZE_OUT, strict=True))
    result = step(
        torch.from_numpy(raw[None]),
        torch.from_numpy(label[inner][None].astype(np.int64)),
        torch.from_numpy(costmap[inner][None]),
    )
    return result.loss, [p.detach().clone() for p in net.parameters()]


def test_sparse_labels_teach_only_what_was_painted():
    raw, label, costmap = prepare(_sparse_layer(), 0)
    painted = np.asarray(_sparse_layer().label)
    np.testing.assert_array_equal(costmap, (painted > 0).astype(np.float32))
    np.testing.assert_array_equal(label, (painted > BACKGROUND).astype(np.uint8))
    assert 0 < costmap.mean() < 0.1  # a few painted voxels in a large unpainted volume

    other = label.copy()
    unpainted = costmap == 0
    other[unpainted] = np.random.default_rng(1).integers(0, 2, int(unpainted.sum()))
    assert (other != label).any()
    loss, weights = _one_step(raw, label, costmap)
    loss_other, weights_other = _one_step(raw, other, costmap)
    assert loss == loss_other  # the voxels nobody painted do not enter the loss ...
    for a, b in zip(weights, weights_other, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # ... nor the step

    flipped = label.copy()
    flipped[costmap > 0] = 1 - flipped[costmap > 0]
    assert _one_step(raw, flipped, costmap)[0] != loss  # the painted ones do


def test_dense_labels_count_every_voxel_as_before():
    item = _sparse_layer()
    dense = LayerSet(item.name, item.raw, item.label)
    _, label, costmap = prepare(dense, 0)
    assert costmap.min() == 1.0
    np.testing.assert_array_equal(label, (np.asarray(item.label) > 0).astype(np.uint8))


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_fine_tune_starts_from_the_checkpoints_weights_in_a_new_run_folder(
    trained_checkpoint,
):
    before = _digest(trained_checkpoint)
    cfg = fine_tune_preset(trained_checkpoint, minutes=1.0)
    assert cfg.finetune_from == str(trained_checkpoint) and cfg.resume is None
    assert cfg.run_subfolder and cfg.lr_schedule == "warmup_cosine"
    cfg.epochs, cfg.minutes, cfg.loader.PatchPerBuffer = 1, None, 1
    cfg.save_every_n_epoch = 1

    source = ckpt.load_checkpoint(trained_checkpoint)
    run = TrainingRun(cfg)
    try:
        for name, value in run.step.net.state_dict().items():
            torch.testing.assert_close(value, source.model_state[name])
        assert run.epoch == 0 and run.iteration == 0  # a fresh run, not a resume
        assert run.out_dir != trained_checkpoint.parent
    finally:
        run.close()

    events = list(train(cfg))
    started = next(e for e in events if isinstance(e, TrainingStarted))
    saved = [e.path for e in events if isinstance(e, CheckpointSaved)]
    assert saved and all(p.parent != trained_checkpoint.parent for p in saved)
    assert saved[-1].parent.parent == trained_checkpoint.parent  # beside it, a run of its own
    assert saved[-1].parent.name.startswith("run-") and started.folder == saved[-1].parent
    assert _digest(trained_checkpoint) == before  # the source checkpoint is untouched
    tuned = ckpt.load_checkpoint(saved[-1]).model_state
    assert cfg.freeze_batchnorm  # the corrections teach the weights, not the statistics
    for name, value in source.model_state.items():
        if name.endswith(("running_mean", "running_var")):
            torch.testing.assert_close(tuned[name], value)


def test_frozen_batchnorm_keeps_its_statistics_and_trains_the_rest():
    """freeze_batchnorm: a step normalises with the running statistics and leaves them as they
    were; the weights (the BatchNorm's own scale and shift included) still learn."""
    from conftest import StandInNet

    raw, label, costmap = prepare(_sparse_layer(), 0)
    margin = [(i - o) // 2 for i, o in zip(SIZE_IN, SIZE_OUT, strict=True)]
    inner = tuple(slice(m, m + o) for m, o in zip(margin, SIZE_OUT, strict=True))
    batch = (
        torch.from_numpy(raw[None]),
        torch.from_numpy(label[inner][None].astype(np.int64)),
        torch.from_numpy(costmap[inner][None]),
    )
    found = {}
    for frozen in (False, True):
        cfg = template("unet_xy")
        cfg.size_in, cfg.size_out, cfg.learning_rate = list(SIZE_IN), list(SIZE_OUT), 1e-2
        cfg.freeze_batchnorm = frozen
        torch.manual_seed(0)
        net = StandInNet(cfg)
        start = {k: v.clone() for k, v in net.state_dict().items()}
        TrainingStep(cfg, torch.device("cpu"), net=net)(*batch)
        found[frozen] = {k: not torch.equal(v, start[k]) for k, v in net.state_dict().items()}
    assert found[False]["bn.running_mean"] and found[False]["bn.running_var"]
    assert not found[True]["bn.running_mean"] and not found[True]["bn.running_var"]
    assert found[True]["conv.weight"] and found[True]["bn.weight"] and found[True]["bn.bias"]
