"""The CPU's step: bfloat16 where the processor multiplies it natively and a probe finds it
faster, the thread count the probe finds best, the peak the achieved rate is measured against,
and prediction in bfloat16 only where it is faster and agrees.

The capability is faked on and off at its source (the CPU's flags), and the probe's timings are
faked, so what is tested is the decision, on any machine; the bf16 learning test runs real
steps in both precisions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from napari_cellseg_trainer import checkpoint as ckpt
from napari_cellseg_trainer import devices
from napari_cellseg_trainer.config import PredictConfig
from napari_cellseg_trainer.inference import precision as predict_precision
from napari_cellseg_trainer.inference import predict_volume
from napari_cellseg_trainer.training import CheckpointSaved, IterationEnd, probe, quick, train
from napari_cellseg_trainer.training.precision import step_options
from napari_cellseg_trainer.training.probe import faster_cpu_precision

CPU = torch.device("cpu")
AVX2 = frozenset({"avx", "avx2", "fma"})
AVX512_BF16 = AVX2 | {"avx512f", "avx512bw", "avx512_bf16"}


@pytest.fixture
def cpu_flags(monkeypatch):
    """Set the CPU's flags for the test: ``cpu_flags(AVX512_BF16)``."""
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.delattr(torch._C._cpu, name, raising=False)  # older torch builds' probes

    def fake(flags, vendor="GenuineIntel"):
        monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset(flags))
        monkeypatch.setattr(devices, "_cpuinfo_value", lambda key: {"vendor_id": vendor}.get(key))

    return fake


class FakeProbe:
    """Reference-step seconds per (precision, channels-last, threads), counting the probes."""

    def __init__(self, seconds: dict[tuple[str, bool, int], float]) -> None:
        self.seconds, self.calls = seconds, []

    def __call__(self, model, device, zoom_ratio=3, cache=None, precision="auto", cl=False):
        precision = "fp32" if precision == "auto" else precision
        key = (precision, cl, torch.get_num_threads())
        self.calls.append(key)
        seconds = self.seconds.get(key, self.seconds[("fp32", False, None)])
        return probe.StepSpeed("cpu", seconds / 5e10, (32, 100, 100), seconds, precision, cl)


def _fake_probe(monkeypatch, fp32=10.0, bf16=None, bf16_cl=None, more_threads=None):
    seconds = {("fp32", False, None): fp32, ("fp32", False, torch.get_num_threads()): fp32}
    if bf16 is not None:
        seconds[("bf16", False, torch.get_num_threads())] = bf16
    if bf16_cl is not None:
        seconds[("bf16", True, torch.get_num_threads())] = bf16_cl
    if more_threads is not None:
        best = min(v for v in (fp32, bf16, bf16_cl) if v is not None)
        name = "fp32" if best == fp32 else "bf16"
        seconds[(name, best == bf16_cl and name == "bf16", more_threads[0])] = more_threads[1]
    fake = FakeProbe(seconds)
    monkeypatch.setattr(probe, "probe_step_speed", fake)
    return fake


@pytest.fixture(autouse=True)
def _fixed_budget(monkeypatch):
    """The quick patch must not depend on the RAM free at the time."""
    monkeypatch.setattr(quick, "training_budget", lambda device: 8 * 2**30)


def _quick(**kwargs):
    return quick.quick_preset("data", "checkpoints", device="cpu", minutes=10, **kwargs)


# --------------------------------------------------------------------------- the capability


def test_native_bfloat16_is_read_from_the_cpu_flags(cpu_flags):
    cpu_flags(AVX2)
    assert not devices.native_cpu_bf16()
    cpu_flags(AVX512_BF16)
    assert devices.native_cpu_bf16()
    cpu_flags(AVX2 | {"amx_tile", "amx_bf16"})
    assert devices.native_cpu_bf16()
    cpu_flags({"fp", "asimd", "bf16"})  # Arm's FEAT_BF16
    assert devices.native_cpu_bf16()


def test_the_cpu_peak_is_cores_clock_fma_units_and_lanes(cpu_flags):
    threads = torch.get_num_threads()
    cpu_flags(AVX2)
    peak = devices.cpu_peak(ghz=2.0)
    assert peak.macs_per_second("fp32") == threads * 2e9 * 2 * 8
    assert peak.macs_per_second("bf16") == peak.macs_per_second("fp32")  # emulated: no more
    cpu_flags(AVX512_BF16)
    peak = devices.cpu_peak(ghz=2.0)
    assert peak.macs_per_second("fp32") == threads * 2e9 * 2 * 16
    assert peak.macs_per_second("bf16") == 2 * peak.macs_per_second("fp32")
    cpu_flags(AVX512_BF16 | {"amx_bf16"})
    assert devices.cpu_peak(ghz=2.0).macs_per_second("bf16") == threads * 2e9 * 512
    cpu_flags(AVX512_BF16, vendor="AuthenticAMD")  # Zen 4: 512 bits over two 256-bit units
    assert devices.cpu_peak(ghz=2.0).fma_units == 1
    assert "GMAC/s float32" in str(devices.cpu_peak())


# --------------------------------------------------------------------------- capability off


def test_without_native_bfloat16_nothing_changes(cpu_flags, monkeypatch, tiny_config):
    cpu_flags(AVX2)
    fake = _fake_probe(monkeypatch, fp32=10.0, bf16=1.0)  # bf16 never even tried
    # as many cores as torch's threads (an earlier test in this process may have set them)
    monkeypatch.setattr(probe, "available_cores", torch.get_num_threads)
    tiny_config.precision = "auto"
    assert step_options(tiny_config, CPU, faster_cpu_precision).dtype is None
    assert fake.calls == []  # auto decided without a probe
    cfg, line = _quick()
    assert fake.calls == [("fp32", False, torch.get_num_threads())]
    assert (cfg.precision, cfg.channels_last, cfg.num_threads) == ("auto", False, None)
    assert "fp32 (no native bfloat16 on this CPU)" in line
    assert predict_precision.resolve("auto", CPU, 100) == "fp32"


# --------------------------------------------------------------------------- capability on


@pytest.mark.parametrize(("bf16", "expected"), [(6.8, torch.bfloat16), (9.8, None)])
def test_auto_is_bf16_on_a_native_cpu_where_the_probe_finds_it_faster(
    cpu_flags, monkeypatch, tiny_config, bf16, expected
):
    cpu_flags(AVX512_BF16)
    _fake_probe(monkeypatch, fp32=10.0, bf16=bf16)  # 9.8 s: within noise of fp32's 10 s
    tiny_config.precision = "auto"
    assert step_options(tiny_config, CPU, faster_cpu_precision).dtype == expected
    assert step_options(tiny_config, CPU).dtype is None  # no probe given: fp32
    tiny_config.precision = "fp32"  # explicit requests are honoured as they are
    assert step_options(tiny_config, CPU, faster_cpu_precision).dtype is None


def test_the_quick_preset_keeps_the_faster_precision_and_says_which(cpu_flags, monkeypatch):
    cpu_flags(AVX512_BF16)
    fake = _fake_probe(monkeypatch, fp32=10.0, bf16=6.8, bf16_cl=7.5)
    cfg, line = _quick()
    assert {c[:2] for c in fake.calls} == {("fp32", False), ("bf16", False), ("bf16", True)}
    assert (cfg.precision, cfg.channels_last) == ("bf16", False)
    assert "bf16 mixed precision (1.47x fp32's speed here)" in line
    _fake_probe(monkeypatch, fp32=10.0, bf16=12.0, bf16_cl=5.0)
    cfg, line = _quick()
    assert (cfg.precision, cfg.channels_last) == ("bf16", True)
    assert "channels-last" in line
    _fake_probe(monkeypatch, fp32=10.0, bf16=12.0, bf16_cl=11.0)
    cfg, line = _quick()
    assert (cfg.precision, cfg.channels_last) == ("fp32", False)
    assert "fp32 (bf16 was not faster here)" in line


def test_the_quick_patch_grows_with_the_faster_step(cpu_flags, monkeypatch):
    cpu_flags(AVX512_BF16)
    _fake_probe(monkeypatch, fp32=10.0, bf16=11.0, bf16_cl=11.0)
    slow, _ = _quick()
    _fake_probe(monkeypatch, fp32=10.0, bf16=4.0, bf16_cl=11.0)
    fast, _ = _quick()
    assert math.prod(fast.size_out) > math.prod(slow.size_out)  # more voxels in a step


def test_more_threads_are_kept_only_where_the_probe_finds_them_faster(cpu_flags, monkeypatch):
    cpu_flags(AVX2)
    default = torch.get_num_threads()
    monkeypatch.setattr(probe, "available_cores", lambda: default + 2)  # SMT siblings
    fake = _fake_probe(monkeypatch, fp32=10.0, more_threads=(default + 2, 8.0))
    cfg, line = _quick()
    assert ("fp32", False, default + 2) in fake.calls
    assert cfg.num_threads == default + 2 and f"{default + 2} threads" in line
    assert torch.get_num_threads() == default  # the probe put torch's setting back
    _fake_probe(monkeypatch, fp32=10.0, more_threads=(default + 2, 9.9))
    cfg, _ = _quick()
    assert cfg.num_threads is None  # not faster beyond noise: torch's default stays


# --------------------------------------------------------------------------- prediction


def test_a_precision_trial_keeps_bf16_only_when_faster_and_agreeing():
    trial = predict_precision.PrecisionTrial
    assert trial(1.0, 0.7, 0.001).bf16_wins
    assert not trial(1.0, 0.99, 0.001).bf16_wins  # not faster beyond noise
    assert not trial(1.0, 0.5, predict_precision.MAX_DIFFERENCE * 2).bf16_wins  # disagrees
    assert "0.70x" not in str(trial(1.0, 0.7, 0.001)) and "1.43x" in str(trial(1.0, 0.7, 0.001))
    help_text = PredictConfig.__dataclass_fields__["precision"].metadata["help"]
    assert f"more than {predict_precision.MAX_DIFFERENCE}" in help_text  # the help tells true


class AutocastRecorder(nn.Module):
    """A valid 3x3x3 convolution that records, per forward pass, whether bf16 autocast was on."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(1, 2, 3)
        self.autocast: list[bool] = []

    def forward(self, x):
        self.autocast.append(torch.is_autocast_enabled("cpu"))
        y = torch.log_softmax(self.conv(x), dim=1)
        return [y, y, y]


@pytest.mark.parametrize("wins", [True, False])
def test_auto_prediction_runs_the_trial_once_then_keeps_its_verdict(cpu_flags, monkeypatch, wins):
    cpu_flags(AVX512_BF16)
    made = []

    def trial(compute, device):
        with predict_precision.autocast("bf16", device):
            low = compute()
        full = compute()
        made.append(predict_precision.PrecisionTrial(1.0, 0.5 if wins else 2.0, 0.001))
        assert float((low - full).abs().max()) < predict_precision.MAX_DIFFERENCE
        return full, made[-1]

    monkeypatch.setattr(predict_precision, "run_trial", trial)
    model, image = AutocastRecorder(), np.random.default_rng(0).random((1, 6, 24, 24), np.float32)
    notes: list[str] = []
    args = (model, image, (3, 8, 8), (1, 6, 6))
    kwargs = {"tiling": "established", "batch_size": 4}
    got = predict_volume(*args, **kwargs, precision="auto", note=notes.append)
    trial, rest = model.autocast[:2], model.autocast[2:]
    assert trial == [True, False] and rest and set(rest) == {wins}  # the verdict holds after
    model.autocast.clear()
    exact = predict_volume(*args, **kwargs, precision="fp32")
    n_batches = len(model.autocast)  # 6 x 16 tiles of 4: well above the trial's minimum
    assert n_batches >= predict_precision.TRIAL_MIN_BATCHES and not any(model.autocast)
    assert len(made) == 1 and notes == [str(made[0])]
    assert np.abs(got - exact).max() <= (predict_precision.MAX_DIFFERENCE if wins else 0)


def test_a_short_prediction_makes_no_trial(cpu_flags):
    cpu_flags(AVX512_BF16)
    batches = predict_precision.TRIAL_MIN_BATCHES - 1
    assert predict_precision.resolve("auto", CPU, batches) == "fp32"
    assert predict_precision.resolve("auto", CPU, batches + 1) == "trial"
    assert predict_precision.resolve("bf16", CPU, 1) == "bf16"
    assert predict_precision.resolve("auto", torch.device("meta"), 100) == "fp32"


# --------------------------------------------------------------------------- learning in bf16


class SmallConvNet(nn.Module):
    """The U-Net's kinds of layer (pooling, valid 3x3x3 convolutions, batch norm, upsampling,
    log-softmax) at a cost emulated bfloat16 manages in about a second a step: the U-Net's bf16
    step takes minutes on a CPU without native bfloat16."""

    model_name = "unet_xy"

    def __init__(self, cfg) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.AvgPool3d((1, 4, 4)),
            nn.Conv3d(cfg.nchannel, 8, 3),
            nn.BatchNorm3d(8),
            nn.ReLU(),
            nn.Conv3d(8, 8, 3),
            nn.BatchNorm3d(8),
            nn.ReLU(),
            nn.Conv3d(8, 2, 1),
            nn.Upsample(scale_factor=(1, 4, 4)),
        )
        self.size_out = cfg.size_out

    def forward(self, x):
        y = self.body(x)
        (z, h, w), (oz, oy, ox) = y.shape[2:], self.size_out
        mz, my, mx = (z - oz) // 2, (h - oy) // 2, (w - ox) // 2
        y = torch.log_softmax(y[:, :, mz : mz + oz, my : my + oy, mx : mx + ox], dim=1)
        return [y, y, y]


LOSS_TOLERANCE = 0.02  # the largest |loss bf16 - loss fp32| at any step; the loss falls from
# about 2.2 (the sum of three outputs' losses) to about 0.5. Measured: at most 0.006 (small)


def _losses_and_checkpoint(cfg, precision: str, folder) -> tuple[list[float], dict]:
    cfg = cfg.copy()
    cfg.precision, cfg.checkpoint_dir = precision, str(folder)
    events = list(train(cfg))
    losses = [e.loss for e in events if isinstance(e, IterationEnd)]
    saved = [e.path for e in events if isinstance(e, CheckpointSaved)][-1]
    return losses, ckpt.load_checkpoint(saved).model_state


def test_a_bf16_run_learns_like_fp32_and_saves_float32(tiny_config, tmp_path, monkeypatch):
    """Same seed, same patches, same steps: the loss curves agree within LOSS_TOLERANCE."""
    from napari_cellseg_trainer.training import step

    monkeypatch.setattr(step, "build_network", SmallConvNet)
    steps, cfg = 12, tiny_config
    cfg.loader.batch_size, cfg.loader.PatchPerBuffer = 2, 2 * steps // 3
    cfg.epochs, cfg.learning_rate, cfg.preview_every_n_iter = 3, 1e-2, 0
    fp32, fp32_state = _losses_and_checkpoint(cfg, "fp32", tmp_path / "fp32")
    bf16, bf16_state = _losses_and_checkpoint(cfg, "bf16", tmp_path / "bf16")
    assert len(fp32) == len(bf16) == steps
    third = steps // 3
    for losses in (fp32, bf16):  # both learn: the last third's mean well below the first's
        assert np.mean(losses[-third:]) < 0.75 * np.mean(losses[:third])
    assert fp32 != bf16  # bf16 arithmetic did run
    assert max(abs(a - b) for a, b in zip(fp32, bf16, strict=True)) <= LOSS_TOLERANCE
    floats = [v for v in bf16_state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float32 for v in floats)
    assert bf16_state.keys() == fp32_state.keys()
