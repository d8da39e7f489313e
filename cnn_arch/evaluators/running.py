"""The network as trained: inference mode with BN's running averages."""

from __future__ import annotations

import dataclasses

from cnn_arch import steps
from cnn_arch.evaluators.base import Evaluator, evaluate_split, jit_eval_step, register


@register("running")
@dataclasses.dataclass
class Running(Evaluator):
    split: str = ""  # '' = config.eval_split

    def __post_init__(self):
        self._predict = steps.inference(self.run.model)
        self._eval_fn = jit_eval_step(self.run, self._predict)

    def __call__(self, state):
        return evaluate_split(
            self.run,
            self._predict,
            state.variables,
            split=self.split or None,
            eval_fn=self._eval_fn,
        )
