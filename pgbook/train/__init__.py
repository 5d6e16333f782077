"""Training loops, each an algorithm top to bottom.

* :mod:`~pgbook.train.reinforce`: on-policy REINFORCE on bandits (vectorised over runs),
  the weighted-MLE view and SFT (chapter 04);
* :mod:`~pgbook.train.ppo`: PPO's epochs on one batch, and its outer loop, on bandits
  (chapter 07);
* :mod:`~pgbook.train.grpo`: the GRPO-family trainer for a language model (chapter 12 on);
* :mod:`~pgbook.train.actor_critic`: actor–critic and REINFORCE on the enumerable LM, many
  runs at once, with exact learning curves (chapter 10);
* :mod:`~pgbook.train.ppo_llm`: PPO with a value head (GAE, clipped value loss) on the tiny
  GPT, and its comparison with GRPO (chapter 12).
"""

from . import actor_critic, grpo, ppo, ppo_llm, reinforce
from .grpo import GRPOHistory, check_on_policy, grpo_train

__all__ = ["GRPOHistory", "actor_critic", "check_on_policy", "grpo", "grpo_train", "ppo",
           "ppo_llm", "reinforce"]

# chapter 15: multi-turn agents (a GPT with a tool; policies on the enumerable tree)
from . import agentic
from .agentic import agent_grpo_train

__all__ += ["agent_grpo_train", "agentic"]
