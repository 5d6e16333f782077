"""Modules that register components and methods, in the order they are imported (a method's
parent must be registered before the method). A module listed here that does not exist yet
is skipped, so chapters can land one at a time."""

REGISTERING = [
    "losses",      # trajectory-side policy losses and KL estimators (02, 07, 11)
    "estimators",  # score function, baselines: J(θ), REINFORCE, + baseline (01-03)
    "training",    # REINFORCE loop, weighted MLE, SFT (04)
    "offpolicy",   # importance sampling (05)
    "proximal",    # proximal / natural-gradient steps (06)
    "ppo",         # PPO on bandits: KL penalty, clip, dual clip (07)
    "tokens",      # token log-probs from logits, masks (LLM core)
    "advantages",  # group-relative / RLOO / plain advantages (LLM core, 08)
    "aggregation", # token-loss aggregations (LLM core)
    "rl",          # the composed LLM loss and named LLM methods (GRPO, RLOO, Dr. GRPO, ...)
    "groups",      # exact group statistics on bandits (08)
    "seqlm",       # the enumerable autoregressive tiny LM (09)
    "gpt",         # the tiny transformer, tokenizer, sampling (10)
    "tasks",       # toy tasks with verifiable rewards (10-11)
]
