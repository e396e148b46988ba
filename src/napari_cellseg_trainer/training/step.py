"""One training step: forward in the configured precision, the Aux loss in float32, backward, Adam.

The loop, the speed benchmark and the memory probe all run this one step, so what is timed and
measured is what trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..checkpoint import build_network
from ..config import TrainConfig
from ..devices import describe_device
from ..distributed import World, mean_over_ranks, wrap
from ..errors import UserInputError
from .loss import AuxLoss
from .precision import CpuPrecision, maybe_compile, step_options


class TrainingError(UserInputError, RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says what to do."""


@dataclass(frozen=True)
class StepResult:
    loss: float  # the mean over ranks
    main_output: torch.Tensor  # (N, n0, *size_out) log-probabilities, detached


class TrainingStep:
    """A network with its optimiser, loss and speed options, stepping on one batch at a time.

    Parameters
    ----------
    cfg : the run's config (loss, learning rate, precision, layout, compile).
    device : where the step runs.
    world : the processes of a torchrun run (one process by default).
    net : the network to train; a fresh one for ``cfg`` if not given.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        device: torch.device,
        world: World | None = None,
        net: torch.nn.Module | None = None,
        cpu_precision: CpuPrecision | None = None,
    ) -> None:
        self.cfg, self.device, self.world = cfg, device, world or World()
        self.net = (net if net is not None else build_network(cfg)).to(device)
        self.optimizer = torch.optim.Adam(
            self.net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        self.loss_fn = AuxLoss(cfg.loss.loss_weight, cfg.loss.ignore_index)
        self.options = step_options(cfg, device, cpu_precision)
        self.model: torch.nn.Module | None = None  # wrapped and compiled on first use

    def prepare(self) -> None:
        """Layout, DDP and compilation: after any resumed weights are in ``net``."""
        if self.options.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last_3d)
        self.model = maybe_compile(wrap(self.net, self.device, self.world), self.cfg, self.device)

    def __call__(
        self, raw: torch.Tensor, label: torch.Tensor, costmap: torch.Tensor, iteration: int = 0
    ) -> StepResult:
        """One step on a batch; ``iteration`` (1-based, of the run) only names it in messages."""
        if self.model is None:
            self.prepare()
        model = self.model
        model.train()
        if self.cfg.freeze_batchnorm:  # normalise with the running statistics, and keep them
            for module in self.net.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
        raw, label = raw.to(self.device), label.to(self.device)
        costmap = costmap.to(self.device)
        try:
            with self.options.autocast(self.device):
                outputs = model(self.options.layout(raw))
            outputs = [o.float() for o in outputs]  # the loss in float32
            loss = self.loss_fn(outputs, label, costmap)
            # The mean over ranks is what is reported; a NaN anywhere stops every rank.
            value = mean_over_ranks(float(loss.detach()), self.world, self.device)
            if not math.isfinite(value):
                raise TrainingError(
                    f"the loss became {value} at iteration {iteration}; the weights were not "
                    "updated and the last checkpoint on disk is intact. Check the training data "
                    "for NaN values or lower learning_rate."
                )
            self._backward(loss)
        except torch.OutOfMemoryError as err:
            raise TrainingError(out_of_memory_message(self.cfg, self.device, iteration)) from err
        return StepResult(value, outputs[0].detach())

    def _backward(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        scaler = self.options.scaler
        if scaler is None:
            loss.backward()
            self.optimizer.step()
        else:  # fp16: scale the loss so small gradients do not underflow
            scaler.scale(loss).backward()
            scaler.step(self.optimizer)
            scaler.update()


def out_of_memory_message(cfg: TrainConfig, device: torch.device, iteration: int) -> str:
    """What to do when a step does not fit: the advisor's sizes for this device's memory."""
    from ..models.memory import MemoryBudgetError, advise

    text = (
        f"out of memory on {describe_device(device)} at iteration {iteration} with size_in "
        f"{cfg.size_in} and batch_size {cfg.loader.batch_size}; the last checkpoint on disk "
        "is intact. Use a smaller size_in or batch_size"
    )
    if device.type != "cuda":
        return text + "."
    total = torch.cuda.get_device_properties(device).total_memory
    try:
        advice = advise(cfg.model.name, total, cfg.model.zoom_ratio, cfg.nchannel)
    except MemoryBudgetError:
        return text + "."
    return (
        f"{text}, e.g. size_in {list(advice.size_in)} (size_out {list(advice.size_out)}) "
        f"with batch_size {advice.batch_size} (cellseg-trainer advise)."
    )
