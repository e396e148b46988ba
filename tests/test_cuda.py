"""Training and prediction on a CUDA GPU (skipped where there is none, as on CI).

Run on a GPU machine with ``pytest tests/test_cuda.py``: the speed options train, their
checkpoints stay float32 and load on a CPU, and a GPU predicts what the CPU predicts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cellseg_trainer import checkpoint as ckpt
from napari_cellseg_trainer.inference import predict_volume
from napari_cellseg_trainer.models import build_model
from napari_cellseg_trainer.training import CheckpointSaved, IterationEnd, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize(
    "precision, channels_last", [("fp32", False), ("bf16", True), ("fp16", False), ("auto", True)]
)
def test_speed_options_train_and_save_float32_checkpoints(tiny_config, precision, channels_last):
    tiny_config.device = "cuda"
    tiny_config.precision = precision
    tiny_config.channels_last = channels_last
    tiny_config.loader.batch_size, tiny_config.loader.PatchPerBuffer = 2, 4
    events = list(train(tiny_config))
    losses = [e.loss for e in events if isinstance(e, IterationEnd)]
    assert len(losses) == 4 and all(np.isfinite(losses))
    path = [e.path for e in events if isinstance(e, CheckpointSaved)][-1]
    loaded = ckpt.load_checkpoint(path)  # on the CPU
    weights = [v for v in loaded.model_state.values() if v.is_floating_point()]
    assert weights and all(v.dtype == torch.float32 and v.device.type == "cpu" for v in weights)
    net = build_model("unet_xy")
    ckpt.load_model_weights(net, loaded.model_state)


def test_compiled_model_trains(tiny_config):
    tiny_config.device, tiny_config.precision, tiny_config.compile = "cuda", "bf16", True
    losses = [e.loss for e in train(tiny_config) if isinstance(e, IterationEnd)]
    assert len(losses) == 4 and all(np.isfinite(losses))  # 2 epochs of 2 patches


def test_gpu_predicts_what_the_cpu_predicts(trained_checkpoint):
    loaded = ckpt.load_checkpoint(trained_checkpoint)
    net = build_model("unet_xy")
    ckpt.load_model_weights(net, loaded.model_state)
    net.eval()
    image = np.random.default_rng(0).random((1, 8, 24, 24), dtype=np.float32)  # 27 tiles
    size_in, size_out = [32, 100, 100], [4, 12, 12]
    cpu = predict_volume(net, image, size_in, size_out, device="cpu", batch_size=8)
    gpu = predict_volume(net.cuda(), image, size_in, size_out, device="cuda", batch_size=8)
    # cuDNN may run float32 convolutions in TF32 (PyTorch's default): agree to ~1e-3.
    assert gpu.shape == cpu.shape and gpu.dtype == np.float32
    np.testing.assert_allclose(gpu, cpu, atol=5e-3)
