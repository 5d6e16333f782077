"""Benchmark: the tiny GPT learning to call a lookup tool with GRPO (chapter 15), longer runs.

    python benchmarks/bench_agentic.py                  # 3 seeds × 4 settings × 60 steps
    python benchmarks/bench_agentic.py --seeds 1 --steps 30

For each setting and seed: pretrain the chapter's starting policy
(:func:`pgbook.train.agentic.pretrain_agent`, 100 steps, 30 % tool demonstrations), then
train with :func:`pgbook.train.agentic.agent_grpo_train` (16 tasks × G = 8 per step), and
report the success rate on 1024 fresh tasks (with the tool, and with its replies withheld),
the share of episodes that call the tool, the probability that the model writes the tool's
reply marker itself after its own call, and the step and wall time (and CPU time) at which the
5-step mean batch reward first reaches 0.7 and 0.9. Settings:

* ``GRPO, policy-token mask``: the chapter's run;
* ``GRPO, tool tokens in the loss``: the bug of §2;
* ``GiGPO``: anchor-state grouping (γ = 0.95, ω = 1, mean_std_norm);
* ``MT-GRPO``: with a turn-level reward of 0.1 for a well-formed call (the environment's
  ``call_reward``), so its reward differs from the others' by that bonus; its success rate is
  still the share of right answers.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import pgbook as pg
from pgbook.train.agentic import agent_grpo_train, evaluate_agent, pretrain_agent, written_reply
from pgbook.worlds.envs import LookupEnv

SETTINGS = {
    "GRPO, policy-token mask": dict(advantage="grpo", mask="policy"),
    "GRPO, tool tokens in the loss": dict(advantage="grpo", mask="all"),
    "GiGPO": dict(advantage="gigpo", mask="policy"),
    "MT-GRPO (call reward 0.1)": dict(advantage="mt_grpo", mask="policy"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"{'setting':32s} seed  success  no tool  tool rate  P(':'|call)  "
          f"to 0.7 (step, s, cpu s)  to 0.9 (step, s)")
    for seed in range(args.seeds):
        for name, kw in SETTINGS.items():
            env = LookupEnv(n_keys=5, digits=1, call_reward=0.1 if "MT" in name else 0.0)
            model, _ = pretrain_agent(env, seed=seed, steps=100, progress=False)
            m = copy.deepcopy(model)
            c0 = time.process_time()
            h = agent_grpo_train(m, env, steps=args.steps, prompts_per_step=16, group_size=8,
                                 generator=pg.make_generator(100 + seed), progress=False, **kw)
            cpu = time.process_time() - c0
            ev = evaluate_agent(m, env, 1024, pg.make_generator(5))
            nt = evaluate_agent(m, env, 1024, pg.make_generator(5), tool=False)
            w = written_reply(m, env, 1024, pg.make_generator(6))
            k7, k9 = h.first_step(0.7), h.first_step(0.9)
            cpu7 = "—" if k7 is None else f"{cpu * (k7 + 1) / h.steps:.1f}"
            t7 = "never" if k7 is None else f"{k7:3d}, {h.seconds[k7]:5.1f}, {cpu7}"
            t9 = "never" if k9 is None else f"{k9:3d}, {h.seconds[k9]:5.1f}"
            print(f"{name:32s} {seed:4d}  {ev['success']:.3f}    {nt['success']:.3f}    "
                  f"{ev['tool_rate']:.3f}      {w['marker']:.4f}       {t7:22s}  {t9}", flush=True)


if __name__ == "__main__":
    main()
