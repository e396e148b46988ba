"""Checkpoint files: every format in models.md loads strictly; unsafe or damaged ones refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from napari_cellseg_trainer import checkpoint as ckpt
from napari_cellseg_trainer.models import build_model


@pytest.fixture(scope="module")
def trained_state() -> dict:
    """A unet_xy state dict unlike a fresh model's, buffers included (BatchNorm running stats)."""
    torch.manual_seed(0)
    model = build_model("unet_xy")
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                value.copy_(
                    torch.rand_like(value) + 0.5
                    if "running_var" in name
                    else torch.randn_like(value)
                )
            else:
                value.fill_(17)  # num_batches_tracked
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def optimizer_state(trained_state) -> dict:
    """A real Adam state (after one step) over two parameters: tensors, ints, tuples, bools."""
    params = [
        torch.nn.Parameter(trained_state["dc0.weight"].clone()),
        torch.nn.Parameter(trained_state["dc0.bias"].clone()),
    ]
    optimizer = torch.optim.Adam(params, lr=1e-5, weight_decay=0.005)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    return optimizer.state_dict()


def _prefixed(state: dict) -> dict:
    """The keys DataParallel writes, produced by DataParallel itself (it only wraps on a CPU)."""
    model = build_model("unet_xy")
    model.load_state_dict(state)
    wrapped = torch.nn.DataParallel(model)
    keys = list(wrapped.state_dict())
    assert all(k.startswith("module.") for k in keys)
    return {k: v.clone() for k, v in wrapped.state_dict().items()}


def _assert_loaded(model: torch.nn.Module, state: dict) -> None:
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize("layout", ["established", "bare", "bare_module", "established_module"])
def test_every_checkpoint_format_loads_strictly(layout, trained_state, optimizer_state, tmp_path):
    state = _prefixed(trained_state) if layout.endswith("module") else trained_state
    if layout.startswith("established"):
        payload = {
            "epoch": 40,
            "num_iterations": 1234,
            "model_state_dict": state,
            "optimizer_state_dict": optimizer_state,
            "device": "cuda:0",
        }
    else:
        payload = state
    path = tmp_path / "checkpoint_epoch_40.pytorch"
    torch.save(payload, path)

    loaded = ckpt.load_checkpoint(path)
    model = build_model("unet_xy")
    assert not torch.equal(model.state_dict()["ec1.0.weight"], trained_state["ec1.0.weight"])
    ckpt.load_model_weights(model, loaded)  # strict=True by default
    _assert_loaded(model, trained_state)
    if layout.startswith("established"):
        assert (loaded.epoch, loaded.num_iterations) == (40, 1234)
        assert loaded.optimizer_state["param_groups"][0]["betas"] == (0.9, 0.999)
        assert torch.equal(
            loaded.optimizer_state["state"][0]["exp_avg"], optimizer_state["state"][0]["exp_avg"]
        )
    else:
        assert loaded.epoch is None and loaded.optimizer_state is None


def test_saved_checkpoint_round_trips(trained_state, optimizer_state, tmp_path):
    path = ckpt.save_checkpoint(
        tmp_path / "checkpoint_epoch_3.pytorch",
        model_state=trained_state,
        optimizer_state=optimizer_state,
        epoch=3,
        num_iterations=30,
        device="cpu",
        config={"model": {"name": "unet_xy"}},
    )
    raw = torch.load(path, weights_only=True)
    # The established keys are all there, so the established tool can read it too.
    assert {
        "epoch",
        "num_iterations",
        "model_state_dict",
        "optimizer_state_dict",
        "device",
    } <= raw.keys()
    loaded = ckpt.load_checkpoint(path)
    assert (loaded.epoch, loaded.num_iterations, loaded.config) == (
        3,
        30,
        {"model": {"name": "unet_xy"}},
    )
    model = build_model("unet_xy")
    ckpt.load_model_weights(model, loaded)
    _assert_loaded(model, trained_state)


def test_missing_or_extra_keys_are_refused_in_strict_mode(trained_state, tmp_path):
    state = dict(trained_state)
    del state["dc0.bias"]
    state["head.weight"] = torch.zeros(1)
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_model_weights(build_model("unet_xy"), state)
    message = str(err.value)
    assert "missing 1 key(s), e.g. dc0.bias" in message
    assert "unexpected 1 key(s), e.g. head.weight" in message


@pytest.mark.parametrize(
    ("kwargs", "count", "expected"),
    [
        ({"nchannel": 2}, 1, "ec1.0.weight (32, 1, 3, 3, 3) vs (32, 2, 3, 3, 3)"),
        (
            {"nclass": (3, 2, 2)},
            2,
            "dc0.weight (2, 64, 1, 1, 1) vs (3, 64, 1, 1, 1); dc0.bias (2,) vs (3,)",
        ),
    ],
)
def test_shape_mismatch_gives_a_readable_summary(kwargs, count, expected, trained_state, tmp_path):
    path = tmp_path / "model.pytorch"
    torch.save(trained_state, path)
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_model_weights(build_model("unet_xy", **kwargs), ckpt.load_checkpoint(path))
    message = str(err.value)
    assert message.startswith(f"{path}: checkpoint does not match the model (unet_xy")
    assert f"{count} shape mismatch(es), e.g. {expected}" in message


class _RunsCode:
    """Unpickling this calls exec: the classic malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"__import__('pathlib').Path({str(self.marker)!r}).write_text('pwned')",))


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(trained_state, tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "checkpoint_epoch_1.pytorch"
    torch.save({"model_state_dict": {"dc0.bias": torch.zeros(2)}, "epoch": _RunsCode(marker)}, path)

    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_checkpoint(path)
    assert "refused" in str(err.value) and "could run code" in str(err.value)
    assert "exec" in str(err.value)  # names what it would have called
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert not marker.exists()

    # The file really is malicious: loading it the unsafe way runs the payload.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("keep", [0, 1, 2, 10, 0.5, -5])
def test_a_truncated_file_gives_a_clear_error(keep, trained_state, tmp_path):
    path = tmp_path / "checkpoint_epoch_1.pytorch"
    torch.save({"model_state_dict": {"dc0.bias": trained_state["dc0.bias"]}, "epoch": 1}, path)
    data = path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    path.write_bytes(data[:cut])
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_checkpoint(path)
    assert str(err.value).startswith(
        f"{path}: not a readable checkpoint (truncated or not PyTorch?)"
    )
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_a_file_that_is_not_a_checkpoint_gives_a_clear_error(tmp_path):
    path = tmp_path / "notes.pytorch"
    path.write_text("hello, this is not a checkpoint\n")
    with pytest.raises(ckpt.CheckpointError, match="not a readable checkpoint"):
        ckpt.load_checkpoint(path)
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "absent.pytorch")


def _fail(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("target", ["torch.save", "os.replace"])
def test_a_failed_save_keeps_the_previous_file_and_leaves_no_temp_files(
    target, trained_state, tmp_path, monkeypatch
):
    path = tmp_path / "checkpoint_epoch_2.pytorch"
    small = {"dc0.bias": trained_state["dc0.bias"]}
    ckpt.save_checkpoint(
        path, model_state=small, optimizer_state=None, epoch=2, num_iterations=4, device="cpu"
    )
    before = path.read_bytes()

    module, name = target.split(".")
    monkeypatch.setattr(torch if module == "torch" else os, name, _fail)
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.save_checkpoint(
            path,
            model_state={"dc0.bias": torch.ones(2)},
            optimizer_state=None,
            epoch=3,
            num_iterations=6,
            device="cpu",
        )
    monkeypatch.undo()

    assert "No space left on device" in str(err.value) and str(path) in str(err.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert ckpt.load_checkpoint(path).epoch == 2


def test_an_interrupted_save_leaves_no_temp_file(tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupt)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(
            tmp_path / "checkpoint_epoch_1.pytorch",
            model_state={"w": torch.ones(1)},
            optimizer_state=None,
            epoch=1,
            num_iterations=1,
            device="cpu",
        )
    assert list(tmp_path.iterdir()) == []


def test_latest_checkpoint_compares_epoch_numbers_not_strings(tmp_path):
    for name in [
        "checkpoint_epoch_9.pytorch",
        "checkpoint_epoch_10.pytorch",
        "checkpoint_epoch_2.pytorch",
        "checkpoint_epoch_100.pytorch.tmp",
        ".checkpoint_epoch_200.pytorch.abc.tmp",
        "checkpoint_epoch_x.pytorch",
        "best_model.pytorch",
    ]:
        (tmp_path / name).write_bytes(b"")
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "checkpoint_epoch_10.pytorch"
    (tmp_path / "checkpoint_epoch_11.pytorch").write_bytes(b"")
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "checkpoint_epoch_11.pytorch"


def test_latest_checkpoint_of_an_empty_or_missing_folder_is_none(tmp_path):
    assert ckpt.latest_checkpoint(tmp_path) is None
    assert ckpt.latest_checkpoint(tmp_path / "absent") is None
