"""GRPO training of a tiny GPT on a task with a verifiable reward (chapter 12).

One step of :func:`grpo_train` is the whole of the GRPO family's pipeline on a language model:

1. **Rollout** (trajectory factor). Draw ``prompts_per_step`` problems x ~ ρ(x), repeat each
   G = ``group_size`` times (groups contiguous) and sample one response per row,
   y ~ π_θold(·|x), with :func:`pgbook.worlds.gpt.sample`.
2. **Reward** (reward factor). R_i = R(x_i, y_i) from the task's verifier; with the KL *in
   the reward* (``kl="k1_in_reward"``), R_i ← R_i − β Σ_t sg[log π_θold − log π_ref](y_it)
   (:func:`pgbook.kl.kl_in_reward`).
3. **Advantages** (reward side). Â_i from the group (``advantage``, e.g. GRPO's z-score
   (R_i − μ_G)/(σ_G + ε)), copied to every response token (:mod:`pgbook.reward.advantages`).
4. **Old and reference log-probs.** log π_θold(y_t|h_t) is *recomputed* by the trainer's
   forward pass (not taken from sampling), so on the first epoch log π_θ − log π_θold is
   exactly 0 and every ratio is exactly 1; the sampled log-probs are kept only to measure
   the rollout–trainer mismatch. log π_ref comes from a frozen copy of the starting model.
5. **μ = ``epochs_per_batch`` epochs** over the batch (each split into ``minibatches``
   whole groups), each minibatch one optimiser step on :func:`pgbook.methods.policy_loss`:

       L(θ) = aggregate_{i,t}( −min(r_it Â_i, clip(r_it, 1−ε, 1+ε_high) Â_i) + β k(log π_θ, log π_ref) ),
       r_it = π_θ(y_it|h_it) / π_θold(y_it|h_it)      (a ratio and a clip *per token*).

Shapes: B = prompts_per_step · G responses of T = P + N tokens (prompt P, response N =
``task.max_new_tokens``); log-probs and masks (B, T), rewards and advantages (B,).
Everything runs on the device and dtype of the model's parameters (the generator must live
on that device); log-probs are float32 for a bfloat16 or float32 model and float64 for a
float64 model (:mod:`pgbook.trajectory.tokens`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .. import kl as _kl
from .. import methods as _methods
from .._validate import check_generator, check_positive, check_positive_int
from ..registry import components, get, resolve
from ..reward import advantages as _adv
from ..trajectory.tokens import entropy_from_logits, token_logprobs
from ..worlds.gpt import logprobs, next_token_logits, sample

#: what :class:`GRPOHistory` records per step, in this order
METRICS = ("reward", "kl_ref", "clip_fraction", "entropy", "zero_variance_groups", "loss",
           "ratio_max", "length", "logprob_gap", "first_epoch_ratio_error", "seconds")


@dataclass
class GRPOHistory:
    """Per-step records of :func:`grpo_train`, each a float64 CPU tensor of shape (steps,).

    * ``reward``: mean task reward of the step's B sampled responses (before any KL
      shaping): an unbiased Monte-Carlo estimate of J(θ_k), the success rate for 0/1 rewards.
    * ``kl_ref``: (1/B) Σ_i Σ_t m_it k3(y_it), k3 = π_ref/π_θk − 1 − log(π_ref/π_θk) per
      token: a non-negative, unbiased estimate of the *sequence* KL(π_θk ‖ π_ref) (by the
      chain rule, E Σ_t KL_t(h_t) = KL of whole responses).
    * ``clip_fraction``: share of response tokens where the PPO clip was active, averaged
      over the step's μ·minibatches updates (the first update always has 0).
    * ``entropy``: mean per-token entropy of π_θk on the sampled responses (nats).
    * ``zero_variance_groups``: number of groups whose G rewards were all equal (no signal).
    * ``loss``: mean of the updates' losses; ``ratio_max``: largest token ratio seen.
    * ``length``: mean response length (tokens, EOS included).
    * ``logprob_gap``: max |sampled − recomputed| log-prob over response tokens (the
      rollout–trainer mismatch; float round-off here, since both use the same model).
    * ``first_epoch_ratio_error``: max |r − 1| on the first update of the step: 0 exactly,
      because the old log-probs are the trainer's own forward pass (with one minibatch they
      are that update's forward pass itself; with several, or with the KL in the reward, a
      separate pass before it, which must give the same numbers on a subset of rows, as it
      does on the CPU).
    * ``seconds``: wall time since the start of training, at the end of each step.

    ``config`` holds the settings of the run.
    """

    reward: Tensor
    kl_ref: Tensor
    clip_fraction: Tensor
    entropy: Tensor
    zero_variance_groups: Tensor
    loss: Tensor
    ratio_max: Tensor
    length: Tensor
    logprob_gap: Tensor
    first_epoch_ratio_error: Tensor
    seconds: Tensor
    config: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return self.reward.shape[0]

    def smoothed(self, name: str = "reward", window: int = 5) -> Tensor:
        """Trailing moving average over ``window`` steps (shorter at the start), (steps,)."""
        check_positive_int(window, "window")
        if name not in METRICS:
            raise ValueError(f"name: expected one of {METRICS}, got {name!r}")
        x = getattr(self, name).to(torch.float64)
        padded = torch.cat([x.new_zeros(window - 1), x])
        counts = torch.arange(1, x.shape[0] + 1, dtype=x.dtype).clamp(max=window)
        return padded.unfold(0, window, 1).sum(-1) / counts

    def first_step(self, target: float, window: int = 5, name: str = "reward") -> int | None:
        """The first step k (0-based) at which the ``window``-step moving average of
        ``name`` is ≥ ``target``, or None if it never is."""
        hit = (self.smoothed(name, window) >= float(target)).nonzero()
        return int(hit[0]) if hit.numel() else None

    def time_to(self, target: float, window: int = 5, name: str = "reward") -> float | None:
        """Wall seconds from the start of training to the end of :meth:`first_step`."""
        k = self.first_step(target, window, name)
        return None if k is None else float(self.seconds[k])

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in METRICS}


def _trainer_logprobs(model, tokens: Tensor, temperature: float, prompt_len: int | None = None,
                      entropy: bool = True) -> tuple[Tensor, Tensor | None]:
    """log π(tokens[:, t] | tokens[:, :t]) (B, T) (differentiable where grad is on) and, with
    ``entropy``, the per-position entropy (B, T) (detached) from one forward pass, aligned like
    :func:`pgbook.worlds.gpt.logprobs` (column 0 is 0). Same arithmetic as
    :func:`pgbook.worlds.gpt.logprobs` with the same ``prompt_len`` (a prompt shared by a group
    once), so the log-probs are bit-identical to it."""
    z = next_token_logits(model, tokens, prompt_len)
    if temperature != 1.0:
        z = z / temperature
    lp = token_logprobs(z, tokens[:, 1:])
    pad = lp.new_zeros(lp.shape[0], 1)
    ent = torch.cat([pad, entropy_from_logits(z.detach())], 1) if entropy else None
    return torch.cat([pad, lp], 1), ent


def _resolve(method: str, overrides: dict) -> dict:
    cfg = _methods.method_config(method)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    form = get("advantage", cfg["advantage"]).form
    if form not in ("group", "batch"):
        ok = sorted(c.name for c in components("advantage") if c.form in ("group", "batch"))
        raise ValueError(f"advantage: expected a group estimator (one of {ok}), got "
                         f"{cfg['advantage']!r} (form {form!r})")
    resolve("policy_loss", cfg["policy_loss"], "token", what="loss")
    resolve("aggregation", cfg["aggregation"], "token", what="aggregation")
    get("kl", cfg["kl"])
    return cfg


def grpo_train(model, task, *, steps: int, prompts_per_step: int, group_size: int,
               generator: torch.Generator, method: str = "GRPO", advantage: str | None = None,
               loss: str | None = None, aggregation: str | None = None, kl: str | None = None,
               beta: float = 0.0, ref_model=None, epochs_per_batch: int = 1,
               minibatches: int = 1, eps_low: float | None = None, eps_high: float | None = None,
               lr: float = 1e-3, max_grad_norm: float | None = 1.0,
               temperature: float = 1.0, std_eps: float | None = None, partial_reward: bool = False,
               stop_at: float | None = None, window: int = 5, optimizer=None,
               progress: bool = True, desc: str | None = None) -> GRPOHistory:
    """Train ``model`` in place with a GRPO-family method; returns a :class:`GRPOHistory`.

    Each of ``steps`` steps samples B = ``prompts_per_step`` × G responses (G =
    ``group_size`` per prompt), scores them with ``task.reward``, computes group advantages
    and takes μ = ``epochs_per_batch`` × ``minibatches`` optimiser steps on the clipped,
    per-token, importance-weighted loss (module docstring). Batched: every forward pass
    covers a whole (mini)batch; the only Python loops are over steps, sampled positions and
    updates.

    Args:
        model: a :class:`pgbook.worlds.gpt.GPT` (any module (B, T) ids → (B, T, V) logits with a
            ``config.block_size``), trained in place.
        task: a :class:`pgbook.worlds.tasks.Task` (prompts, targets, ``reward``).
        method: a registered method whose pieces are used (:func:`pgbook.methods.method_config`),
            e.g. ``"GRPO"``, ``"GRPO (DeepSeekMath)"`` (k3 KL in the loss), ``"Dr. GRPO"``,
            ``"RLOO"``; ``advantage``, ``loss``, ``aggregation`` and ``kl`` override single
            pieces (``kl``: ``"none"``, ``"k1_loss"``, ``"k2_loss"``, ``"k3_loss"`` or
            ``"k1_in_reward"``).
        beta: β ≥ 0, the KL coefficient (must be 0 when the KL placement is ``"none"``).
        ref_model: the frozen reference π_ref; default: a frozen copy of ``model`` as it is at
            the start. Its KL is always recorded (``kl_ref``), whatever β.
        epochs_per_batch: μ, passes over each batch; ``minibatches`` whole-group minibatches
            per pass (must divide ``prompts_per_step``, shuffled with ``generator``).
        eps_low, eps_high: the clip range [1 − ε_low, 1 + ε_high] of a clipped loss
            (default: the loss's own, ε_low = 0.2 and ε_high = ε_low for "ppo_clip").
        lr, max_grad_norm: AdamW learning rate (β = (0.9, 0.99), no weight decay) and the
            gradient-norm clip (None: no clipping); pass ``optimizer`` to use your own.
        temperature: sampling temperature; the trainer's log-probs use the same one.
        std_eps: ε of a z-score advantage (σ_G + ε; default: the estimator's own, 1e-6);
            ``partial_reward``: the task's partial reward.
        stop_at: stop once the ``window``-step moving average of the reward reaches it.
        progress: a tqdm bar (``desc`` its label) showing the reward and KL.
    """
    from tqdm.auto import trange

    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module (a pgbook.worlds.gpt.GPT), got "
                         f"{type(model).__name__}")
    for name in ("sample", "reward", "max_new_tokens"):
        if not hasattr(task, name):
            raise ValueError(f"task: expected a pgbook.worlds.tasks.Task (with .{name}), got "
                             f"{type(task).__name__}")
    steps = check_positive_int(steps, "steps")
    n_prompts = check_positive_int(prompts_per_step, "prompts_per_step")
    G = check_positive_int(group_size, "group_size")
    mu = check_positive_int(epochs_per_batch, "epochs_per_batch")
    n_mb = check_positive_int(minibatches, "minibatches")
    window = check_positive_int(window, "window")
    if n_prompts % n_mb:
        raise ValueError(f"minibatches: expected a divisor of prompts_per_step = {n_prompts} "
                         f"(minibatches hold whole groups), got {n_mb}")
    if G < 2:
        raise ValueError(f"group_size: expected at least 2 responses per prompt (a group "
                         f"baseline needs two), got {G}")
    if eps_low is not None:
        check_positive(eps_low, "eps_low")
        if eps_low >= 1:
            raise ValueError(f"eps_low: expected a number in (0, 1), got {eps_low}")
    if eps_high is not None:
        check_positive(eps_high, "eps_high")
    beta = check_positive(beta, "beta", allow_zero=True)
    lr = check_positive(lr, "lr")
    if max_grad_norm is not None:
        max_grad_norm = check_positive(max_grad_norm, "max_grad_norm")
    tau = check_positive(temperature, "temperature")
    check_generator(generator)
    param = next(model.parameters(), None)
    if param is None:
        raise ValueError("model: expected a model with parameters, got none")
    device = param.device
    if device.type == "meta":
        raise ValueError("model: training needs values (sampling, rewards); the meta device has none")
    if generator.device != device:
        raise ValueError(f"generator: expected a generator on the model's device {device}, "
                         f"got one on {generator.device}")
    if stop_at is not None:
        stop_at = float(stop_at)

    cfg = _resolve(method, {"advantage": advantage, "policy_loss": loss,
                            "aggregation": aggregation, "kl": kl})
    kl_name = cfg["kl"]
    if kl_name == "kl_penalty":
        raise ValueError("kl: 'kl_penalty' is PPO's KL to π_old (chapter 07); for a KL to the "
                         "reference choose 'k1_in_reward', 'k1_loss', 'k2_loss' or 'k3_loss'")
    if kl_name == "none" and beta > 0:
        raise ValueError(f"beta: method {method!r} has no KL term (kl='none'), so beta must be 0, "
                         f"got {beta}; choose kl='k3_loss' (or another placement)")
    in_reward = kl_name == "k1_in_reward"
    adv_options = {} if std_eps is None else {"std_eps": check_positive(std_eps, "std_eps",
                                                                        allow_zero=True)}
    kl_loss = "none" if in_reward else kl_name

    if ref_model is None:
        ref_model = copy.deepcopy(model)
    elif ref_model is model:
        raise ValueError("ref_model: expected a separate frozen model, got the trained model "
                         "itself (its KL would always be 0); pass copy.deepcopy(model)")
    ref_model.requires_grad_(False)
    ref_param = next(ref_model.parameters(), None)
    if ref_param is not None and ref_param.device != device:
        raise ValueError(f"ref_model: expected it on the model's device {device}, "
                         f"got {ref_param.device}")

    opt = optimizer if optimizer is not None else torch.optim.AdamW(
        model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0, foreach=True)
    N = task.max_new_tokens
    B = n_prompts * G
    per_mb = n_prompts // n_mb
    rec = {name: [] for name in METRICS}
    bar = trange(steps, disable=not progress, desc=desc or f"{method} (G={G}, μ={mu})")
    t0 = time.perf_counter()
    for _ in bar:
        # 1. rollout: G responses per prompt, groups contiguous (KV-cached, each prompt run once)
        prob = task.sample(n_prompts, generator).repeat_interleave(G)
        P = prob.prompts.shape[1]
        s = sample(model, prob.prompts, N, generator, tau)
        mask = s.mask
        m = mask.to(torch.bool)
        R = task.reward(s.tokens, prob.targets, partial=partial_reward, dtype=s.logprobs.dtype)
        # 2. reference log-probs; the old ones come from the first update's own forward pass
        # (θ = θ_old there, so its ratios are exactly 1), unless they are needed before it
        # (the KL in the reward) or the first minibatch is not the whole batch
        lp_dtype = s.logprobs.dtype
        with torch.no_grad():
            ref = logprobs(ref_model, s.tokens, tau, prompt_len=P).to(lp_dtype)
            old = ent = None
            if n_mb > 1 or (in_reward and beta > 0):
                old, ent = _trainer_logprobs(model, s.tokens, tau, P)
            # 3. rewards (KL-shaped if the KL sits in the reward) and group advantages
            shaped = _kl.kl_in_reward(R, old, ref, mask, beta) if in_reward and beta > 0 else R
            adv = _adv.compute_advantages(shaped, cfg["advantage"], group_size=G, mask=mask,
                                          **adv_options)
            adv_tok = adv.to(lp_dtype) * mask if adv.dim() == 2 else \
                _adv.broadcast_to_tokens(adv.to(lp_dtype), mask)
        # 4. μ epochs of minibatch updates on the clipped per-token loss
        losses, clips, rmax, first_err = [], [], [], None
        for _epoch in range(mu):
            order = torch.randperm(n_prompts, generator=generator, device=device) if n_mb > 1 \
                else None
            for k in range(n_mb):
                if order is None:
                    idx = slice(None)
                else:
                    groups = order[k * per_mb:(k + 1) * per_mb]
                    idx = (groups[:, None] * G + torch.arange(G, device=device)).reshape(-1)
                lp, ent_k = _trainer_logprobs(model, s.tokens[idx], tau, P, entropy=old is None)
                if old is None:   # the first update sees the whole batch at θ_old
                    old, ent = lp.detach(), ent_k
                if first_err is None:
                    first_err = (lp.detach() - old[idx]).abs().masked_fill(~m[idx], 0).max()
                value, met = _methods.policy_loss(
                    lp, old[idx], adv_tok[idx], mask[idx], loss=cfg["policy_loss"],
                    aggregation=cfg["aggregation"], eps_low=eps_low, eps_high=eps_high,
                    ref_logp=ref[idx] if kl_loss != "none" else None, kl=kl_loss,
                    beta=beta if kl_loss != "none" else 0.0, max_tokens=N)
                opt.zero_grad(set_to_none=True)
                value.backward()
                if max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm, foreach=True)
                opt.step()
                losses.append(value.detach())
                clips.append(met["clip_fraction"])
                rmax.append(met["ratio_max"])
        with torch.no_grad():
            zero = old.new_zeros(())
            k3 = torch.where(m, _kl.kl_estimate(torch.where(m, old, zero),
                                                    torch.where(m, ref, zero), "k3"), zero)
            n_tok = mask.sum()
            gap = (s.logprobs.to(old.dtype) - old).abs().masked_fill(~m, 0).max()
            row = {
                "reward": R.mean(),
                "kl_ref": k3.sum() / B,
                "clip_fraction": torch.stack(clips).mean(),
                "entropy": torch.where(m, ent, zero).sum() / n_tok,
                "zero_variance_groups": _adv.zero_variance_groups(R, G).sum(),
                "loss": torch.stack(losses).mean(),
                "ratio_max": torch.stack(rmax).max(),
                "length": n_tok / B,
                "logprob_gap": gap,
                "first_epoch_ratio_error": first_err,
            }
        values = torch.stack([v.to(torch.float64) for v in row.values()]).tolist()  # one copy
        for name, v in zip(row, values):
            rec[name].append(v)
        rec["seconds"].append(time.perf_counter() - t0)
        if progress:
            bar.set_postfix(reward=f"{rec['reward'][-1]:.2f}", kl=f"{rec['kl_ref'][-1]:.3f}",
                            refresh=False)
        if stop_at is not None:
            recent = rec["reward"][-window:]
            if sum(recent) / len(recent) >= stop_at:
                break
    bar.close()
    config = dict(method=method, **cfg, beta=beta, group_size=G, prompts_per_step=n_prompts,
                  epochs_per_batch=mu, minibatches=n_mb, eps_low=eps_low, eps_high=eps_high, lr=lr,
                  max_grad_norm=max_grad_norm, temperature=tau, task=repr(task))
    return GRPOHistory(**{k: torch.tensor(v, dtype=torch.float64) for k, v in rec.items()},
                       config=config)


__all__ = ["METRICS", "GRPOHistory", "grpo_train"]
