"""Training loops, each an algorithm top to bottom.

* :mod:`~pgbook.train.reinforce`: on-policy REINFORCE on bandits (vectorised over runs),
  the weighted-MLE view and SFT (chapter 04);
* :mod:`~pgbook.train.ppo`: PPO's epochs on one batch, and its outer loop, on bandits
  (chapter 07);
* :mod:`~pgbook.train.grpo`: the GRPO-family trainer for a language model (chapter 12 on);
* :mod:`~pgbook.train.actor_critic`: actor–critic and REINFORCE on the enumerable LM, many
  runs at once, with exact learning curves (chapter 10);
* :mod:`~pgbook.train.ppo_llm`: PPO with a value head (GAE, clipped value loss) on the tiny
  GPT, and its comparison with GRPO (chapter 12);
* :mod:`~pgbook.train.seqlm`: the same loop on the enumerable LM, R runs at once, with
  exact J along the way (chapter 14);
* :mod:`~pgbook.train.distill`: GRPO, on-policy distillation and their hybrids on the
  enumerable LM, many runs at once, with exact J and KL to the teacher (chapter 16);
* :mod:`~pgbook.train.distributed`: the same losses on several processes with
  torch.distributed and DDP, the global token normaliser, and the options of TRL, verl and
  OpenRLHF (appendix A1; imported on use, so that ``python -m pgbook.train.distributed``
  runs it as a script).
"""

from . import actor_critic, distill, grpo, ppo, ppo_llm, reinforce, seqlm
from .grpo import GRPOHistory, check_on_policy, grpo_train
from .seqlm import SeqLMHistory, grpo_seqlm

__all__ = ["GRPOHistory", "SeqLMHistory", "actor_critic", "check_on_policy", "distill", "grpo",
           "grpo_seqlm", "grpo_train", "ppo", "ppo_llm", "reinforce", "seqlm"]

# chapter 15: multi-turn agents (a GPT with a tool; policies on the enumerable tree)
from . import agentic
from .agentic import agent_grpo_train

__all__ += ["agent_grpo_train", "agentic"]
