"""An exponential moving average of a model's weights (``training.average_epochs``), kept next to
the trained weights and used wherever the model is judged: validation, the best weights, the weights
a run ends with.

The average moves after every optimizer step, ``avg <- avg + (1 - decay) (w - avg)``, with
``decay = 1 - 1 / window`` and ``window`` = ``average_epochs`` x the optimizer steps of an epoch,
so one setting means the same on a small and on a large graph. The first steps are averaged evenly
(``decay_n = min(decay, n / (n + 1))`` at step n), so the average never leans on the initialisation.

Cost: one copy of the floating parameters and buffers (on the model's device), and one pass over
them per step (``torch._foreach_lerp_``). That is small beside 1vsAll training, where every step
scores every entity; in negative-sampling mode on a large graph a step touches few rows and the
pass over the whole table dominates - leave it off there.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor, nn


class WeightAverage:
    """The running average of ``model``'s floating-point state (parameters and buffers).

    >>> avg = WeightAverage(model, window_steps=500)
    >>> avg.update()                # after each optimizer step
    >>> with avg.applied():         # the model holds the average inside, its own weights after
    ...     validate(model)
    """

    def __init__(self, model: nn.Module, window_steps: float):
        if window_steps <= 0:
            raise ValueError(f"window_steps={window_steps}: expected > 0")
        self.model, self.window_steps = model, float(window_steps)
        seen: set[int] = set()  # a tied tensor (T5's shared embedding) under several keys: averaged once
        self.names = [k for k, v in model.state_dict(keep_vars=True).items()
                      if v.is_floating_point() and not (id(v) in seen or seen.add(id(v)))]
        self.steps = 0  #: updates so far
        self.average = [v.detach().clone() for v in self._live()]

    def _live(self) -> list[Tensor]:
        state = self.model.state_dict(keep_vars=True)
        return [state[k].detach() for k in self.names]

    @property
    def decay(self) -> float:
        """The weight the average keeps at the next update."""
        return min(1.0 - 1.0 / self.window_steps, self.steps / (self.steps + 1.0))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the current weights (after an optimizer step)."""
        weight = 1.0 - self.decay
        self.steps += 1
        torch._foreach_lerp_(self.average, self._live(), weight)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block and its own weights after it."""
        live = self._live()
        with torch.no_grad():
            kept = [v.clone() for v in live]
            for v, a in zip(live, self.average):
                v.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for v, k in zip(live, kept):
                    v.copy_(k)

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged tensors by state-dict key (on the host), for a checkpoint."""
        return {k: v.detach().to("cpu", copy=True) for k, v in zip(self.names, self.average)}

    def load_state_dict(self, tensors: dict[str, Tensor], steps: int) -> None:
        """Restore :meth:`state_dict` and the update count from a checkpoint."""
        missing = [k for k in self.names if k not in tensors]
        if missing:
            raise KeyError(f"the checkpoint's weight average lacks {missing[0]!r}")
        with torch.no_grad():
            for k, a in zip(self.names, self.average):
                a.copy_(tensors[k])
        self.steps = int(steps)
