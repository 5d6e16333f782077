"""Training multi-turn agents: a tiny GPT with a tool, and policies on the enumerable tree.

* :func:`pretrain_agent` fits a starting GPT to demonstrations of a
  :class:`pgbook.worlds.envs.LookupEnv` (some call the tool, some guess), with the loss on
  the policy's tokens only;
* :func:`agent_grpo_train` trains it with GRPO in the environment: multi-turn rollouts
  (:func:`pgbook.worlds.agentic.rollout`), group or turn-level advantages
  (:mod:`pgbook.reward.advantages`, :mod:`pgbook.reward.turns`), the loss on the
  policy-token mask (or, to show the bug, on the tool's tokens too), optional
  reward-variance filtering (:func:`pgbook.trajectory.agentic.reward_variance_filter`);
* :func:`exact_ascent` follows the exact expected gradient of an estimator on the
  enumerable :class:`pgbook.worlds.agentic.LookupWorld` (no sampling noise: what the
  estimator's bias does), and :func:`tree_grpo_train` runs sampled GRPO there, several
  independent runs at once (one batched computation), with exact J along the way.

Factor of J(θ): both (these loops compose the pieces of both sides).
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .._validate import (
    check_flag,
    check_generator,
    check_number,
    check_positive,
    check_positive_int,
    make_generator,
    reject_unknown_options,
    unknown_options,
    work_dtype,
)
from ..exact.agentic import CREDITS, MASKS, _check, expected_update, reply_probability
from ..methods import policy_loss
from ..registry import components, resolve
from ..reward.advantages import broadcast_to_tokens, compute_advantages
from ..reward.turns import compute_turn_advantages, turns_to_tokens
from ..trajectory.agentic import reward_variance_filter
from ..trajectory.tokens import entropy_from_logits, token_logprobs
from ..worlds.agentic import CALL, LookupWorld, MarkovMLPPolicy, rollout
from ..worlds.envs import OUTCOMES, RIGHT, TOOL, Env
from ..worlds.gpt import GPT, GPTConfig
from ..worlds.seqlm import SeqPolicy
from ..worlds.tasks import demonstration_loss

__all__ = [
    "AGENT_METRICS",
    "AgentHistory",
    "TreeHistory",
    "agent_config",
    "agent_grpo_train",
    "evaluate_agent",
    "exact_ascent",
    "fit_demonstrations",
    "pretrain_agent",
    "tree_grpo_train",
    "written_reply",
]


# -- the tiny GPT in a tool environment --------------------------------------------------------
def _check_env(env: Env) -> Env:
    if not isinstance(env, Env):
        raise ValueError(f"env: expected a pgbook.worlds.envs.Env (e.g. a LookupEnv), got "
                         f"{type(env).__name__}")
    return env


def _check_model(model: nn.Module) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module (a pgbook.worlds.gpt.GPT), got "
                         f"{type(model).__name__}")
    return model


def _check_options(options: dict | None, name: str = "advantage_options") -> dict:
    if options is not None and not isinstance(options, dict):
        raise ValueError(f"{name}: expected a dict of estimator options or None, got "
                         f"{type(options).__name__}")
    return dict(options or {})


def agent_config(env: Env, **overrides) -> GPTConfig:
    """The book's GPT for ``env``: its vocabulary, a block as long as a rollout, and
    :class:`~pgbook.worlds.gpt.GPTConfig`'s defaults (one block, 2 heads, 32 channels);
    ``overrides`` replace any field."""
    _check_env(env)
    unknown_options("agent_config", overrides, GPTConfig.__dataclass_fields__)
    kw = {"vocab_size": env.tokenizer.vocab_size, "block_size": env.max_len, **overrides}
    return GPTConfig(**kw)


def pretrain_agent(env: Env, seed: int = 0, steps: int = 100, batch_size: int = 32,
                   lr: float = 1e-2, p_tool: float = 0.3, noise: float = 0.1,
                   progress: bool = True, **config) -> tuple[GPT, Tensor]:
    """A starting policy for the tool environment: ``(model, losses (steps,))``.

    ``GPT(agent_config(env, **config))`` with weights from seed ``seed``, fitted by AdamW
    (warm-up over 20 steps, then cosine decay to lr/10) to ``env.demonstrations`` (data
    from seed ``seed + 1``): a fraction ``p_tool`` of them call the tool, the others guess,
    and ``noise`` corrupts the copied key and digits. The loss is the demonstrations'
    negative log-likelihood on the **policy's tokens only** (the tool's replies are
    masked: they are not the policy's text). Factor of J(θ): trajectory (weighted MLE, A = 1).
    """
    _check_env(env)
    check_positive_int(steps, "steps")
    check_positive_int(batch_size, "batch_size")
    check_positive(lr, "lr")
    check_flag(progress, "progress")
    from ..widgets import progress as progress_bar  # the saved output is the finished bar

    model = GPT(agent_config(env, **config), make_generator(seed))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)

    def factor(s: int) -> float:
        return min(1.0, (s + 1) / 20) * (0.55 + 0.45 * math.cos(math.pi * s / steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    g = make_generator(seed + 1)
    losses = []
    for _ in progress_bar(range(steps), disable=not progress, desc="pretrain agent"):
        tokens, pmask, _ = env.demonstrations(batch_size, g, p_tool, noise)
        loss = demonstration_loss(model, tokens, pmask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.detach())
    return model, torch.stack(losses)


@torch.no_grad()
def evaluate_agent(model: nn.Module, env: Env, n: int, generator: torch.Generator,
                   temperature: float = 1.0, tool: bool = True) -> dict:
    """Success rate and behaviour of ``model`` on n fresh tasks (a Monte-Carlo estimate of
    J(θ)): ``{"success", "tool_rate" (episodes with a well-formed tool call), "outcomes"
    (share of each outcome over the turns taken, by name)}``. ``tool=False`` withholds the
    tool's replies (:func:`pgbook.worlds.agentic.rollout`)."""
    _check_model(model)
    _check_env(env)
    check_positive_int(n, "n")
    r = rollout(model, env, env.reset(n, generator), generator, temperature, tool=tool)
    taken = r.outcomes[r.outcomes >= 0]
    shares = {name: float((taken == i).float().mean()) for i, name in enumerate(OUTCOMES)}
    return {"success": float((r.outcomes == RIGHT).any(1).float().mean()),
            "tool_rate": float((r.outcomes == TOOL).any(1).float().mean()),
            "outcomes": shares}


@torch.no_grad()
def written_reply(model: nn.Module, env: Env, n: int, generator: torch.Generator) -> dict:
    """What the model writes where the tool should speak, on n fresh tasks: ``{"marker":
    mean π_θ(``:`` | prompt, a well-formed call on the asked key), "right": mean
    π_θ(the asked key's value | prompt, call, ``:``)}``.

    In a rollout the environment writes the reply, so the model is never asked; this is
    what it would write if the environment did not stop it (a tool that times out, a missed
    stop sequence): ``marker`` near 1 means it writes a reply itself, and ``right`` how often
    that hallucinated value would be the store's (its first digit: one in ten for a guess).
    For :class:`pgbook.worlds.envs.LookupEnv`."""
    _check_model(model)
    _check_env(env)
    check_positive_int(n, "n")
    st = env.reset(n, generator)
    fill = torch.full_like(st.prompts[:, :1], 0)
    call = torch.cat([fill + env.open_id, st.prompts[:, 1:2], fill + env.close_id], 1)
    seq = torch.cat([st.prompts, call, fill + env.reply_id], 1)
    p = torch.softmax(model(seq)[:, -2:].float(), -1)
    marker = p[:, 0, env.reply_id]
    right = p[:, 1].gather(1, st.targets[:, :1]).squeeze(1)
    return {"marker": float(marker.mean()), "right": float(right.mean())}


#: what :class:`AgentHistory` records per step
AGENT_METRICS = ("reward", "tool_rate", "zero_variance_groups", "reward_std", "grad_norm",
                 "entropy", "kept_groups", "logprob_gap", "seconds")


@dataclass
class AgentHistory:
    """Per-step records of :func:`agent_grpo_train`, float64 CPU tensors (steps,):
    ``reward`` (mean episode reward of the batch), ``tool_rate`` (share of episodes with a
    well-formed call), ``zero_variance_groups`` (groups whose rewards are all equal),
    ``reward_std`` (mean within-group std), ``grad_norm`` (before clipping), ``entropy``
    (mean per-token entropy on the policy's tokens), ``kept_groups`` (groups in the update
    after filtering), ``logprob_gap`` (max |sampled − recomputed| log-prob over the policy's
    tokens: the rollout and the trainer agree), ``seconds`` (wall time since the start).
    ``config`` holds the settings."""

    reward: Tensor
    tool_rate: Tensor
    zero_variance_groups: Tensor
    reward_std: Tensor
    grad_norm: Tensor
    entropy: Tensor
    kept_groups: Tensor
    logprob_gap: Tensor
    seconds: Tensor
    config: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return self.reward.shape[0]

    def smoothed(self, name: str = "reward", window: int = 5) -> Tensor:
        """Trailing moving average over ``window`` steps, (steps,)."""
        check_positive_int(window, "window")
        if name not in AGENT_METRICS:
            raise ValueError(f"name: expected one of {AGENT_METRICS}, got {name!r}")
        x = getattr(self, name).to(torch.float64)
        padded = torch.cat([x.new_zeros(window - 1), x])
        counts = torch.arange(1, x.shape[0] + 1, dtype=x.dtype).clamp(max=window)
        return padded.unfold(0, window, 1).sum(-1) / counts

    def first_step(self, target: float, window: int = 5, name: str = "reward") -> int | None:
        """First step whose ``window``-step moving average of ``name`` is ≥ ``target``."""
        target = check_number(target, "target")
        hit = (self.smoothed(name, window) >= target).nonzero()
        return int(hit[0]) if hit.numel() else None

    def time_to(self, target: float, window: int = 5, name: str = "reward") -> float | None:
        """Wall seconds to the end of :meth:`first_step` (None if never reached)."""
        k = self.first_step(target, window, name)
        return None if k is None else float(self.seconds[k])


def _forms() -> dict:
    return {c.name: c.form for c in components("advantage")}


def _check_advantage(advantage: str) -> str:
    forms = _forms()
    if forms.get(advantage) not in ("group", "batch", "turn"):
        ok = sorted(n for n, f in forms.items() if f in ("group", "batch", "turn"))
        raise ValueError(f"advantage: expected one of {ok} (a group estimator of the episode "
                         f"rewards, or a turn-level one), got {advantage!r}")
    return forms[advantage]


def _turn_advantages(turn_rewards: Tensor, outcomes: Tensor, anchors: Tensor, G: int,
                     advantage: str, options: dict, tool_code: int) -> Tensor:
    """Turn-level advantages (N, K) by a registered estimator of form ``"turn"``, given the
    episodes' anchors and tool turns when the estimator takes them (unless in ``options``)."""
    fn = resolve("advantage", advantage, "turn", what="advantage")
    params = inspect.signature(fn).parameters
    opts = dict(options)
    if "anchors" in params and "anchors" not in opts:
        opts["anchors"] = anchors
    if "tool_turns" in params and "tool_turns" not in opts:
        opts["tool_turns"] = outcomes == tool_code
    return compute_turn_advantages(turn_rewards, advantage, group_size=G,
                                   turn_mask=outcomes >= 0, **opts)


def _advantages(ro, G: int, advantage: str, options: dict) -> Tensor:
    """Token advantages (B, T) on the policy's and observation positions of a rollout."""
    if _check_advantage(advantage) == "turn":
        adv = _turn_advantages(ro.turn_rewards, ro.outcomes, ro.anchors, G, advantage, options, TOOL)
        return turns_to_tokens(adv, ro.turn_ids)
    adv = compute_advantages(ro.rewards, advantage, group_size=G, **options)
    return broadcast_to_tokens(adv, (ro.turn_ids >= 0).to(adv.dtype))


@reject_unknown_options
def agent_grpo_train(model: nn.Module, env: Env, *, steps: int, prompts_per_step: int, group_size: int,
                     generator: torch.Generator, advantage: str = "grpo", mask: str = "policy",
                     keep_fraction: float = 1.0, loss: str = "ppo_clip",
                     aggregation: str = "seq_mean_token_mean", lr: float = 3e-3,
                     max_grad_norm: float | None = 1.0, temperature: float = 1.0,
                     advantage_options: dict | None = None, stop_at: float | None = None,
                     window: int = 5, progress: bool = True, desc: str | None = None) -> AgentHistory:
    """Train ``model`` in place with GRPO in a multi-turn environment; returns an
    :class:`AgentHistory`.

    Each step draws ``prompts_per_step`` tasks, repeats each G = ``group_size`` times
    (groups share the task, the hidden store included) and rolls the model out in ``env``
    (:func:`pgbook.worlds.agentic.rollout`). Advantages: a group estimator of the episode
    rewards broadcast to every token (``"grpo"``, ``"rloo"``, …), or a turn-level one
    (``"gigpo"``, ``"mt_grpo"``, ``"turn_rtg"``; anchors and tool turns come from the
    rollout) copied to each turn's tokens; ``advantage_options`` go to the estimator. The
    loss is :func:`pgbook.methods.policy_loss` on the trainer's recomputed log-probs (one
    update per batch, so every ratio is 1 and the loss is REINFORCE's), with the loss
    mask ``mask``: ``"policy"`` (the tokens the policy sampled) or ``"all"`` (the tool's
    tokens too, as if the policy had written them: the bug of §2 of chapter 15).
    ``keep_fraction`` < 1 keeps only the groups whose rewards vary most
    (:func:`pgbook.trajectory.agentic.reward_variance_filter`). AdamW (β = (0.9, 0.99), no
    weight decay), gradient-norm clip ``max_grad_norm``. ``stop_at``: stop once the
    ``window``-step mean reward reaches it. The model is put in eval mode (sampling and
    training must compute the same log-probs: no dropout).
    """
    from ..widgets import progress as progress_bar  # the saved output is the finished bar

    _check_model(model)
    _check_env(env)
    steps = check_positive_int(steps, "steps")
    n = check_positive_int(prompts_per_step, "prompts_per_step")
    G = check_positive_int(group_size, "group_size")
    if G < 2:
        raise ValueError(f"group_size: expected at least 2 episodes per task, got {G}")
    if mask not in MASKS:
        raise ValueError(f"mask: expected one of {MASKS}, got {mask!r}")
    f = check_positive(keep_fraction, "keep_fraction")
    if f > 1:
        raise ValueError(f"keep_fraction: expected a fraction in (0, 1], got {keep_fraction}")
    lr = check_positive(lr, "lr")
    if max_grad_norm is not None:
        max_grad_norm = check_positive(max_grad_norm, "max_grad_norm")
    tau = check_positive(temperature, "temperature")
    window = check_positive_int(window, "window")
    if stop_at is not None:
        stop_at = check_number(stop_at, "stop_at")
    check_flag(progress, "progress")
    param = next(model.parameters())
    check_generator(generator, param.device)
    options = _check_options(advantage_options)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    rec = {k: [] for k in AGENT_METRICS}
    bar = progress_bar(range(steps), disable=not progress, desc=desc or f"GRPO in {type(env).__name__}")
    t0 = time.perf_counter()
    for _ in bar:
        model.eval()
        state = env.reset(n, generator).repeat_interleave(G)
        ro = rollout(model, env, state, generator, tau)
        R = ro.rewards
        with torch.no_grad():
            adv_tok = _advantages(ro, G, advantage, options).to(ro.logprobs.dtype)
        loss_mask = ro.policy_mask if mask == "policy" else \
            (ro.policy_mask + ro.obs_mask).clamp(max=1)
        keep = reward_variance_filter(R.float(), G, f) if f < 1 else \
            torch.ones_like(R, dtype=torch.bool)
        z = model(ro.tokens[:, :-1])
        if tau != 1.0:
            z = z / tau
        lp = torch.cat([z.new_zeros(z.shape[0], 1, dtype=torch.promote_types(z.dtype, torch.float32)),
                        token_logprobs(z, ro.tokens[:, 1:])], 1)
        with torch.no_grad():
            ent = entropy_from_logits(z)
            pm = ro.policy_mask[:, 1:] > 0
            entropy = (ent * pm).sum() / pm.sum().clamp_min(1)
            gap = torch.where(ro.policy_mask > 0, (lp.detach() - ro.logprobs.to(lp.dtype)).abs(),
                              torch.zeros_like(lp)).max()
        gn = torch.zeros(())
        if bool(keep.any()):
            value, _ = policy_loss(lp[keep], lp[keep].detach(), adv_tok[keep], loss_mask[keep],
                                   loss=loss, aggregation=aggregation,
                                   max_tokens=env.max_len - env.prompt_len)
            opt.zero_grad(set_to_none=True)
            value.backward()
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                max_grad_norm if max_grad_norm else math.inf)
            opt.step()
        with torch.no_grad():
            Rg = R.view(n, G)
            row = {"reward": R.mean(), "tool_rate": (ro.outcomes == TOOL).any(1).float().mean(),
                   "zero_variance_groups": (Rg == Rg[:, :1]).all(1).sum(),
                   "reward_std": Rg.std(1).mean(), "grad_norm": gn, "entropy": entropy,
                   "kept_groups": keep.view(n, G)[:, 0].sum(), "logprob_gap": gap}
        for k, v in row.items():
            rec[k].append(float(v))
        rec["seconds"].append(time.perf_counter() - t0)
        if progress:
            bar.set_postfix(reward=f"{rec['reward'][-1]:.2f}", refresh=False)
        if stop_at is not None and sum(rec["reward"][-window:]) / len(rec["reward"][-window:]) >= stop_at:
            break
    bar.close()
    config = dict(advantage=advantage, mask=mask, keep_fraction=f, loss=loss,
                  aggregation=aggregation, lr=lr, group_size=G, prompts_per_step=n,
                  temperature=tau, env=repr(env), **({"advantage_options": options} if options else {}))
    return AgentHistory(**{k: torch.tensor(v, dtype=torch.float64) for k, v in rec.items()},
                        config=config)


# -- the enumerable tree -------------------------------------------------------------------------
def _check_world(policy: SeqPolicy, world: LookupWorld) -> LookupWorld:
    """``world`` a LookupWorld of the policy's space (X, V, T)."""
    if not isinstance(world, LookupWorld):
        raise ValueError(f"world: expected a pgbook.worlds.agentic.LookupWorld, got "
                         f"{type(world).__name__}")
    if not isinstance(policy, SeqPolicy):
        raise ValueError(f"policy: expected a SeqPolicy on the world's space (e.g. a "
                         f"MarkovMLPPolicy), got {type(policy).__name__}")
    if (policy.space.X, policy.space.V, policy.space.T) != (world.X, world.V, world.T):
        raise ValueError(f"world: expected the world of the policy's space (X, V, T) = "
                         f"{(policy.space.X, policy.space.V, policy.space.T)}, got "
                         f"{(world.X, world.V, world.T)}")
    return world


@reject_unknown_options
def exact_ascent(policy: SeqPolicy, theta: Tensor, world: LookupWorld, *, steps: int, lr: float,
                 credit: str = "outcome", mask: str = "policy") -> dict:
    """Gradient ascent along the *exact expected* gradient of an estimator on the tree:
    θ ← θ + η E[ĝ(θ)], from ``theta``, for ``steps`` steps (no sampling: deterministic).

    ``credit`` and ``mask`` choose the estimator (:func:`pgbook.exact.agentic.expected_update`);
    with ``mask="policy"`` this is gradient ascent on J itself. Returns ``{"J": (steps + 1,),
    "reply": (steps + 1,) (:func:`pgbook.exact.agentic.reply_probability`), "theta": θ at the
    end, "thetas": (steps + 1, P)}``.
    """
    _check(policy, theta)
    _check_world(policy, world)
    steps = check_positive_int(steps, "steps")
    lr = check_positive(lr, "lr")
    if credit not in CREDITS:
        raise ValueError(f"credit: expected one of {CREDITS}, got {credit!r}")
    if mask not in MASKS:
        raise ValueError(f"mask: expected one of {MASKS}, got {mask!r}")
    ep = world.enumerate()
    th = theta.detach().clone()
    Js, reply, thetas = [], [], [th]
    for _ in range(steps):
        g, J = expected_update(policy, th, ep, credit, mask)
        Js.append(J)
        reply.append(reply_probability(policy, th, world).detach())
        th = th + lr * g
        thetas.append(th)
    _, J = expected_update(policy, th, ep, credit, mask)
    Js.append(J)
    reply.append(reply_probability(policy, th, world).detach())
    return {"J": torch.stack(Js), "reply": torch.stack(reply), "theta": th,
            "thetas": torch.stack(thetas)}


@dataclass
class TreeHistory:
    """Per-step records of :func:`tree_grpo_train`, each (steps, R) for R runs (float64):
    ``J`` (exact J(θ) before the step), ``reward`` (batch mean), ``reward_std`` (mean
    within-group std), ``zero_variance`` (share of groups with equal rewards),
    ``grad_norm`` (per run, before clipping), ``kept`` (share of groups kept). ``theta``
    (R, P): the final parameters, in θ's dtype (a bfloat16 θ trains in float32)."""

    J: Tensor
    reward: Tensor
    reward_std: Tensor
    zero_variance: Tensor
    grad_norm: Tensor
    kept: Tensor
    theta: Tensor


def _batched_logprobs(policy: MarkovMLPPolicy, thetas: Tensor, x: Tensor, tokens: Tensor) -> Tensor:
    """log π_θr(y_t|h_t) for R parameter vectors at once: thetas (R, P), tokens (R, B, T)."""
    tables = torch.func.vmap(policy.table)(thetas)                     # (R, X, V+1, T, V)
    R, T = tokens.shape[0], tokens.shape[2]
    V = policy.space.V
    prev = torch.cat([torch.full_like(tokens[..., :1], V), tokens[..., :-1]], -1)
    t = torch.arange(T, device=tokens.device).expand_as(tokens)
    r = torch.arange(R, device=tokens.device)[:, None, None].expand_as(tokens)
    return tables[r, x[..., None].expand_as(tokens), prev, t, tokens]


@reject_unknown_options
def tree_grpo_train(policy: MarkovMLPPolicy, theta: Tensor, world: LookupWorld, *, steps: int,
                    prompts_per_step: int, group_size: int, generator: torch.Generator,
                    runs: int = 1, advantage: str = "grpo", mask: str = "policy",
                    keep_fraction: float = 1.0, lr: float = 0.05,
                    advantage_options: dict | None = None) -> TreeHistory:
    """Sampled GRPO on the enumerable tree, ``runs`` independent runs in one batched loop.

    Every run starts from ``theta`` (P,) and takes ``steps`` Adam steps (learning rate
    ``lr``, each run's parameters updated only by its own loss). A step samples
    ``prompts_per_step`` tasks (x, s) and G = ``group_size`` trajectories of each from the
    run's exact p_θ(τ) (an index into the enumeration: sampling is exact and cheap),
    computes advantages (a group estimator of R broadcast to every turn, or a turn-level
    one: ``"gigpo"``, ``"mt_grpo"``, ``"turn_rtg"``, with the world's anchors and tool
    turns), optionally keeps the ``keep_fraction`` of groups whose rewards vary most, and
    minimises −(1/B) Σ_i (1/L_i) Σ_t c_t Â_{i,t} log π_θ(y_t|h_t) with the loss mask c
    (``mask``: the policy's tokens, or ``"all"``). The loops run over steps only.
    """
    _check(policy, theta)
    _check_world(policy, world)
    if not callable(getattr(policy, "table", None)):
        raise ValueError(f"policy: expected a policy with a table of log-probabilities (a "
                         f"MarkovMLPPolicy), got {type(policy).__name__}")
    steps = check_positive_int(steps, "steps")
    n = check_positive_int(prompts_per_step, "prompts_per_step")
    G = check_positive_int(group_size, "group_size")
    R = check_positive_int(runs, "runs")
    if G < 2:
        raise ValueError(f"group_size: expected at least 2 trajectories per task, got {G}")
    if mask not in MASKS:
        raise ValueError(f"mask: expected one of {MASKS}, got {mask!r}")
    f = check_positive(keep_fraction, "keep_fraction")
    if f > 1:
        raise ValueError(f"keep_fraction: expected a fraction in (0, 1], got {keep_fraction}")
    lr = check_positive(lr, "lr")
    check_generator(generator, theta.device)
    form = _check_advantage(advantage)
    options = _check_options(advantage_options)
    ep = world.enumerate()
    dev, dt = theta.device, work_dtype(theta.dtype)     # bfloat16 θ trains in float32
    tok_all = ep.tokens.to(dev)
    x_all = ep.x.to(dev)
    env_logp = ep.env_logp.to(device=dev, dtype=dt)
    rewards_all = ep.rewards.to(device=dev, dtype=dt)
    pm_all = ep.policy_mask.to(device=dev, dtype=dt)
    lm_all = pm_all if mask == "policy" else (pm_all + ep.obs_mask.to(device=dev, dtype=dt))
    gid = ep.groups.to(dev)
    n_tasks = int(gid.max()) + 1
    thetas = theta.detach().to(dt).expand(R, -1).clone().requires_grad_()
    opt = torch.optim.Adam([thetas], lr=lr)
    rec = {k: [] for k in ("J", "reward", "reward_std", "zero_variance", "grad_norm", "kept")}
    B = n * G
    for _ in range(steps):
        with torch.no_grad():
            lp_all = _batched_logprobs(policy, thetas.detach(), x_all.expand(R, -1),
                                       tok_all.expand(R, -1, -1))
            q = (env_logp + (lp_all * pm_all).sum(-1)).exp()           # (R, N)
            rec["J"].append(q @ rewards_all)
            task_p = torch.zeros(R, n_tasks, dtype=dt, device=dev).index_add(1, gid, q)
            tasks = torch.multinomial(task_p, n, replacement=True, generator=generator)   # (R, n)
            within = torch.where(gid[None, None, :] == tasks[..., None], q[:, None, :],
                                 q.new_zeros(()))
            idx = torch.multinomial(within.reshape(R * n, -1), G, replacement=True,
                                    generator=generator).reshape(R, B)
            Rw = rewards_all[idx]                                     # (R, B)
            flat = idx.reshape(-1)
            sub = ep.index(flat.cpu()) if flat.device.type != ep.x.device.type else ep.index(flat)
            if form == "turn":
                At = _turn_advantages(sub.turn_rewards.to(device=dev, dtype=dt), sub.outcomes.to(dev),
                                      sub.anchors.to(dev), G, advantage, options, CALL)
                A_tok = turns_to_tokens(At, sub.turn_ids.to(dev)).reshape(R, B, -1)
            else:
                A = compute_advantages(Rw.reshape(-1), advantage, group_size=G, **options)
                A_tok = A.reshape(R, B, 1).expand(R, B, tok_all.shape[1])
            keep = torch.stack([reward_variance_filter(Rw[r], G, f) for r in range(R)]) if f < 1 \
                else torch.ones(R, B, dtype=torch.bool, device=dev)             # per run
            Rg = Rw.reshape(R, n, G)
            rec["reward"].append(Rw.mean(1))
            rec["reward_std"].append(Rg.std(2).mean(1))
            rec["zero_variance"].append((Rg == Rg[..., :1]).all(2).to(dt).mean(1))
            rec["kept"].append(keep.reshape(R, n, G)[..., 0].to(dt).mean(1))
        lp = _batched_logprobs(policy, thetas, x_all[idx], tok_all[idx])      # (R, B, T)
        cm = lm_all[idx]
        L = pm_all[idx].sum(-1).clamp_min(1)
        per = -(torch.where(cm > 0, A_tok.to(dt) * lp, torch.zeros_like(lp))).sum(-1) / L
        k_cnt = keep.to(dt).sum(1).clamp_min(1)
        loss = ((per * keep.to(dt)).sum(1) / k_cnt).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        rec["grad_norm"].append(thetas.grad.detach().norm(dim=1))
        opt.step()
    out = {k: torch.stack(v).to(torch.float64).cpu() for k, v in rec.items()}
    return TreeHistory(theta=thetas.detach().to(theta.dtype), **out)


@reject_unknown_options
def fit_demonstrations(policy: SeqPolicy, world: LookupWorld, *, p_tool: float = 0.3, steps: int = 100,
                       lr: float = 0.05, seed: int = 0, scale: float = 0.3) -> Tensor:
    """A starting θ for the tree: Adam on the exact demonstration loss
    −Σ_τ q(τ) Σ_t m_t log π_θ(y_t|h_t) (q = :meth:`LookupWorld.demonstrations`, m the
    policy-token mask: the environment's tokens are not the policy's text), from
    N(0, scale²) weights drawn with seed ``seed``; float64 on the world's device."""
    _check_world(policy, world)
    steps = check_positive_int(steps, "steps")
    lr = check_positive(lr, "lr")
    ep = world.enumerate()
    q = world.demonstrations(p_tool)
    th = policy.init(make_generator(seed, world.device), scale=scale, dtype=world.dtype,
                     device=world.device).requires_grad_()
    opt = torch.optim.Adam([th], lr=lr)
    pm = ep.policy_mask > 0
    for _ in range(steps):
        lp = policy.token_logprobs(th, ep.x, ep.tokens)
        loss = -(q @ torch.where(pm, lp, torch.zeros_like(lp)).sum(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return th.detach()
