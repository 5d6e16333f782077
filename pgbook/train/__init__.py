"""Training loops, each an algorithm top to bottom.

* :mod:`~pgbook.train.reinforce`: on-policy REINFORCE on bandits (vectorised over runs),
  the weighted-MLE view and SFT (chapter 04);
* :mod:`~pgbook.train.ppo`: PPO's epochs on one batch, and its outer loop, on bandits
  (chapter 07);
* :mod:`~pgbook.train.grpo`: the GRPO-family trainer for a language model (chapter 12 on).
"""

from . import grpo, ppo, reinforce
from .grpo import GRPOHistory, check_on_policy, grpo_train

__all__ = ["GRPOHistory", "check_on_policy", "grpo", "grpo_train", "ppo", "reinforce"]
