"""The worlds the book runs its estimators in, from the smallest to the largest.

* :mod:`~pgbook.worlds.bandits`: contextual bandits (Part I): J and ∇J by enumeration;
* :mod:`~pgbook.worlds.seqlm`: an autoregressive tiny LM whose responses can all be listed;
* :mod:`~pgbook.worlds.answers`: a one-prompt tiny LM whose first token is the answer, so a
  response has an answer and a length (chapter 13);
* :mod:`~pgbook.worlds.gpt`: a tiny GPT, a character tokenizer and batched sampling;
* :mod:`~pgbook.worlds.tasks`: toy tasks with verifiable rewards for the tiny GPT;
* :mod:`~pgbook.worlds.teachers`: teachers for both LMs (chapter 16);
* :mod:`~pgbook.worlds.envs` and :mod:`~pgbook.worlds.agentic`: multi-turn environments (a
  lookup tool), an enumerable tool-use tree, batched multi-turn rollouts (chapter 15).
"""

from . import answers, bandits, gpt, seqlm, tasks, teachers
from .bandits import (
    Bandit,
    BanditBatch,
    LinearSoftmax,
    TabularSoftmax,
    context_bandit,
    difficulty_bandit,
    noisy_bandit,
    offset_bandit,
    two_param_bandit,
)

__all__ = [
    "Bandit",
    "BanditBatch",
    "LinearSoftmax",
    "TabularSoftmax",
    "answers",
    "bandits",
    "context_bandit",
    "difficulty_bandit",
    "gpt",
    "noisy_bandit",
    "offset_bandit",
    "seqlm",
    "tasks",
    "teachers",
    "two_param_bandit",
]

# chapter 15: environments (a lookup tool) and multi-turn worlds
from . import agentic, envs

__all__ += ["agentic", "envs"]
