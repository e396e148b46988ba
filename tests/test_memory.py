"""The memory model, the patch/batch advisor and ``cellseg-trainer advise``."""

from __future__ import annotations

import pytest

from napari_cellseg_trainer.cli import main
from napari_cellseg_trainer.models import geometry
from napari_cellseg_trainer.models.memory import (
    USABLE_SHARE,
    MemoryBudgetError,
    advise,
    layer_elements,
    parse_memory,
    training_bytes,
)
from napari_cellseg_trainer.training.probe import measure_peak_bytes

GIB = 2**30


@pytest.mark.parametrize("model", ["unet_xy", "unet_xy_zoom"])
@pytest.mark.parametrize("gib", [8, 32])
def test_advice_is_valid_and_the_largest_that_fits(model, gib):
    advice = advise(model, gib * GIB)
    assert geometry.size_out(model, advice.size_in) == advice.size_out
    assert advice.predicted_bytes <= USABLE_SHARE * gib * GIB
    z, yx, _ = advice.size_in
    bigger = next(v for v in geometry.valid_yx(model, hi=4000 * 3) if v > yx)
    assert training_bytes(model, (z, bigger, bigger), advice.batch_size) > USABLE_SHARE * gib * GIB
    assert advice.batch_size in (1, 2, 4, 8)
    assert str(list(advice.size_in)) in str(advice)


def test_more_memory_never_gives_a_smaller_step():
    steps = [advise("unet_xy", g * GIB) for g in (8, 16, 24, 32, 48, 80)]
    work = [a.batch_size * a.size_in[1] ** 2 for a in steps]
    assert work == sorted(work) and work[0] < work[-1]


def test_memory_grows_with_patch_and_batch():
    small = training_bytes("unet_xy", (32, 100, 100), 1)
    assert training_bytes("unet_xy", (32, 148, 148), 1) > small
    assert training_bytes("unet_xy", (32, 100, 100), 2) > small
    with pytest.raises(geometry.InvalidSizeError):
        layer_elements("unet_xy", (32, 101, 101))


@pytest.mark.parametrize("size", [(32, 100, 100), (32, 124, 124)])
def test_predicted_peak_is_within_20_percent_of_the_measured_one(size):
    measured = measure_peak_bytes("unet_xy", size, 1, "cpu")
    predicted = training_bytes("unet_xy", size, 1)
    assert abs(predicted / measured - 1) < 0.2, (predicted / GIB, measured / GIB)


@pytest.mark.parametrize(
    ("text", "value"), [("8GB", 8 * GIB), ("7.5 GiB", int(7.5 * GIB)), ("512MB", 512 * 2**20)]
)
def test_parse_memory(text, value):
    assert parse_memory(text) == value


def test_advise_command(capsys):
    assert main(["advise", "--model", "unet_xy", "--memory", "8GB"]) == 0
    out = capsys.readouterr().out
    assert "size_in [48, 132, 132] -> size_out [20, 44, 44], batch_size 4" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--memory", "lots"], "expected a size like 8GB"),
        (["--memory", "1GB"], "too little for unet_xy"),
        (["--memory=0GB"], "must be positive"),
    ],
)
def test_advise_command_refuses_bad_budgets(args, message, capsys):
    assert main(["advise", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_budget_errors_are_value_errors():
    with pytest.raises(ValueError, match="too little for unet_xy") as err:
        advise("unet_xy", GIB // 2)
    assert isinstance(err.value, MemoryBudgetError)
