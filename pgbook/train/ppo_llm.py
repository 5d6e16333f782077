"""PPO with a value head on the tiny GPT: the critic that GRPO removes (chapters 10 and 12).

One step of :func:`ppo_train` is PPO as LLM trainers ran it before GRPO (TRL's
``PPOTrainer``, verl with ``adv_estimator=gae``):

1. **Rollout** (trajectory factor). B = ``batch_size`` prompts x ~ ρ(x), one response each,
   y ~ π_θold(·|x), with :func:`pgbook.worlds.gpt.sample` (no groups: the critic, not the
   group, gives the baseline).
2. **Token rewards** (reward factor). The task's outcome reward R(x, y) on the last response
   token (EOS, or the last position of a cut response), and with the KL in the reward
   (β > 0) −β·(log π_θold − log π_ref)(y_t) on every response token, as TRL does.
3. **Values and GAE** (reward side). The critic's values V_φold(h_t) at every response
   position, then :func:`pgbook.reward.critic.gae` with γ, λ (outcome reward at the last
   token: with λ = 1 every token's advantage is R − V(h_t), a per-token baseline), whitened
   over the batch as verl and TRL do; the returns R̂ = Â + V_φold are the critic's targets.
4. **μ = ``epochs_per_batch`` epochs** of ``minibatches`` minibatches, each one optimiser step
   on PPO's clipped loss (:func:`pgbook.methods.policy_loss`, ``"ppo_clip"``, token mean)
   and on the clipped value loss (:func:`pgbook.reward.critic.value_loss`, ``eps_value``).

The critic (``critic=``):

* ``"separate"`` (default; verl and TRL): a second GPT of the policy's size, initialised
  from the policy's weights (verl initialises its critic from the actor's checkpoint by
  default), with its language-model head replaced by a linear value head n_embd → 1
  (:class:`ValueModel`, zero-initialised so that V_φ ≡ 0 at the start). It has its own AdamW
  optimiser (``critic_lr``). Parameters: those of the policy's body plus n_embd + 1: as many
  as the policy again.
* ``"shared"``: one linear value head on the policy's own final hidden state (the older TRL
  ``AutoModelForCausalLMWithValueHead``), n_embd + 1 extra parameters, trained through the
  shared body with loss = policy loss + ``vf_coef`` · value loss (TRL's combination).

Shapes: B responses of T = P + N tokens; log-probs, values, masks, advantages (B, T), aligned
with the tokens (``values[b, t]`` = V(tokens[b, :t]), the state before token t; column 0 and
the prompt are masked out). Runs on the device and dtype of the model.
"""

from __future__ import annotations

import copy
import time
import weakref
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .. import kl as _kl
from .. import methods as _methods
from .._validate import (
    check_generator,
    check_index,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
    check_tensor,
)
from ..registry import methods as _registered_methods
from ..reward.critic import gae, value_loss
from ..trajectory.tokens import token_logprobs
from ..worlds.gpt import GPT, logprobs, sample
from ..worlds.tasks import Task
from .grpo import _check_fits_task, _model_device

__all__ = [
    "PPO_METRICS",
    "PPOHistory",
    "ValueModel",
    "activation_bytes",
    "compare_ppo_grpo",
    "hidden_states",
    "ppo_train",
    "state_bytes",
    "update_activation_bytes",
]

#: what :class:`PPOHistory` records per step, in this order
PPO_METRICS = ("reward", "value_loss", "value_error", "explained_variance", "clip_fraction",
               "value_clip_fraction", "kl_ref", "length", "seconds")


def hidden_states(model: GPT, idx: Tensor) -> Tensor:
    """The final hidden states LN(h^L) (B, T, C) of a :class:`~pgbook.worlds.gpt.GPT`: its
    forward pass without the language-model head (what a value head reads)."""
    if not isinstance(model, GPT):
        raise ValueError(f"model: expected a pgbook.worlds.gpt.GPT, got {type(model).__name__}")
    check_tensor(idx, "idx", ndim=2)
    if idx.shape[1] > model.config.block_size:
        raise ValueError(f"idx: expected at most block_size = {model.config.block_size} "
                         f"positions, got {idx.shape[1]}")
    if idx.device != model.wte.weight.device:
        raise ValueError(f"idx: expected tokens on the model's device {model.wte.weight.device}, "
                         f"got {idx.device}")
    check_index(idx, "idx", model.config.vocab_size)
    pos = torch.arange(idx.shape[1], device=idx.device)
    x = model.wte(idx) + model.wpe(pos)
    for block in model.blocks:
        x = block(x)
    return model.ln_f(x)


class ValueModel(nn.Module):
    """A critic for the tiny GPT: a GPT body and a linear value head, V_φ(h_t) at every
    position: ``ValueModel(...)(idx)`` maps (B, T) ids to (B, T) values, ``values[b, t]`` the
    value of the prefix idx[b, :t+1].

    :meth:`from_policy` copies a policy's body (embeddings, blocks, final LayerNorm; the
    critic starts from the actor's weights, verl's default) and adds a zero-initialised head
    (V ≡ 0 at the start). The language-model head is not used (with tied weights it is the
    token embedding, which the body uses anyway; an untied one is dropped)."""

    def __init__(self, body: GPT):
        super().__init__()
        if not isinstance(body, GPT):
            raise ValueError(f"body: expected a pgbook.worlds.gpt.GPT, got {type(body).__name__}")
        self.body = body
        if not body.config.tie_weights:
            body.head = nn.Identity()                      # the LM head is not part of a critic
        p = next(body.parameters())
        self.v_head = nn.Linear(body.config.n_embd, 1).to(device=p.device, dtype=p.dtype)
        nn.init.zeros_(self.v_head.weight)
        nn.init.zeros_(self.v_head.bias)

    @classmethod
    def from_policy(cls, policy: GPT) -> ValueModel:
        """A critic initialised from ``policy``'s weights (a deep copy) with a zero value head."""
        if not isinstance(policy, GPT):
            raise ValueError(f"policy: expected a pgbook.worlds.gpt.GPT, got "
                             f"{type(policy).__name__}")
        return cls(copy.deepcopy(policy))

    @property
    def config(self):
        return self.body.config

    def forward(self, idx: Tensor) -> Tensor:
        return self.v_head(hidden_states(self.body, idx)).squeeze(-1)


class _SharedHead(nn.Module):
    """The policy with a value head on its own final hidden state: one forward pass gives the
    logits (B, T, V) and the values (B, T)."""

    def __init__(self, policy: GPT):
        super().__init__()
        self.policy = policy
        p = next(policy.parameters())
        self.v_head = nn.Linear(policy.config.n_embd, 1).to(device=p.device, dtype=p.dtype)
        nn.init.zeros_(self.v_head.weight)
        nn.init.zeros_(self.v_head.bias)

    def forward(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        h = hidden_states(self.policy, idx)
        return self.policy.head(h), self.v_head(h).squeeze(-1)


def _aligned(x: Tensor) -> Tensor:
    """Per-position outputs on tokens[:, :-1] (B, T−1) → aligned with the tokens (B, T), 0 first."""
    return torch.cat([x.new_zeros(x.shape[0], 1), x], 1)


def state_bytes(*modules: nn.Module, optimizer_slots: int = 2) -> int:
    """Bytes of the training state: each trainable parameter, its gradient and
    ``optimizer_slots`` optimiser tensors of its size (AdamW: 2), counted once even if
    shared. A deterministic count, the same on every machine."""
    for mod in modules:
        if not isinstance(mod, nn.Module):
            raise ValueError(f"modules: expected torch.nn.Module objects, got "
                             f"{type(mod).__name__}")
    check_nonnegative_int(optimizer_slots, "optimizer_slots")
    seen, total = set(), 0
    for mod in modules:
        for p in mod.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                total += p.numel() * p.element_size() * (2 + optimizer_slots)
    return total


class activation_bytes:
    """Context manager: the bytes of the tensors autograd saves for the backward pass inside
    it (the activations a training step keeps alive), through
    ``torch.autograd.graph.saved_tensors_hooks``; ``.bytes`` after the block. Counted at the
    block's end over the saved tensors still alive (a graph built and dropped inside the
    block keeps nothing), a storage saved twice once. Counting at the end makes the number
    independent of the allocator: a dropped tensor's address reused by a later one would
    otherwise be mistaken for the same storage."""

    def __init__(self):
        self.bytes = 0
        self._saved: list = []

    def _pack(self, t):
        self._saved.append(weakref.ref(t))
        return t

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        seen = set()
        for ref in self._saved:
            t = ref()
            if t is None or t.device.type == "meta":
                continue
            key = (t.untyped_storage().data_ptr(), t.dtype)
            if key not in seen:
                seen.add(key)
                self.bytes += t.untyped_storage().nbytes()
        self._saved = []


@dataclass
class PPOHistory:
    """Per-step records of :func:`ppo_train`, each a float64 CPU tensor of shape (steps,).

    * ``reward``: mean task reward of the step's B responses (an estimate of J(θ_k)).
    * ``value_loss``: mean value loss over the updates; ``value_error``: RMS of V_φold − R̂ at
      sampling time over the response tokens; ``explained_variance``: 1 − Var(R̂ − V)/Var(R̂)
      over the response tokens (1: a perfect critic, 0: no better than a constant).
    * ``clip_fraction`` / ``value_clip_fraction``: share of tokens where the policy clip /
      the value clip was active, averaged over the updates.
    * ``kl_ref``: (1/B) Σ_i Σ_t m k3: an estimate of the sequence KL(π_θk ‖ π_ref).
    * ``length``: mean response length; ``seconds``: wall time since the start.

    ``config``: the settings, ``n_params`` (policy, critic, trained: the number of trainable
    parameters of each) and ``state_bytes`` (:func:`state_bytes` of everything trained);
    ``value_model``: the trained critic (a :class:`ValueModel`, or the policy with its shared
    head).
    """

    reward: Tensor
    value_loss: Tensor
    value_error: Tensor
    explained_variance: Tensor
    clip_fraction: Tensor
    value_clip_fraction: Tensor
    kl_ref: Tensor
    length: Tensor
    seconds: Tensor
    config: dict = field(default_factory=dict)
    value_model: nn.Module | None = None

    @property
    def steps(self) -> int:
        return self.reward.shape[0]

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in PPO_METRICS}


def ppo_train(model: GPT, task: Task, *, steps: int, batch_size: int, generator: torch.Generator,
              critic: str = "separate", value_model: ValueModel | None = None,
              gamma: float = 1.0, lam: float = 1.0, whiten_advantages: bool = True,
              eps_low: float = 0.2, eps_high: float | None = None, eps_value: float | None = 0.2,
              vf_coef: float = 0.1, kl: str = "none", beta: float = 0.0,
              ref_model: nn.Module | None = None, epochs_per_batch: int = 1, minibatches: int = 1, lr: float = 1e-3,
              critic_lr: float | None = None, max_grad_norm: float | None = 1.0,
              temperature: float = 1.0, partial_reward: bool = False,
              method: str = "PPO (value head, GAE)", progress: bool = True,
              desc: str | None = None) -> PPOHistory:
    """Train ``model`` in place with PPO and a critic; returns a :class:`PPOHistory`.

    Args:
        model: the policy, a :class:`pgbook.worlds.gpt.GPT`, trained in place.
        task: a :class:`pgbook.worlds.tasks.Task`.
        batch_size: B, responses per step (one per prompt).
        critic: ``"separate"`` (a :class:`ValueModel`: ``value_model`` if given, else
            ``ValueModel.from_policy(model)``) or ``"shared"`` (a value head on the policy);
            see the module docstring. The separate critic is trained in place too.
        gamma, lam: GAE's γ and λ (verl's defaults: 1 and 1; TRL's: 1 and 0.95).
        whiten_advantages: whiten Â over the batch (verl and TRL always do).
        eps_low, eps_high: the policy clip range [1 − ε_low, 1 + ε_high] (ε_high = ε_low by
            default); ``eps_value``: the value clip ε_v (None: no value clipping).
        vf_coef: weight of the value loss in the shared loss (``"shared"`` only; TRL: 0.1).
        kl, beta: ``"none"`` or ``"k1_in_reward"`` (per-token −β(log π_old − log π_ref) in the
            token rewards, as TRL does; β > 0 needs it). ``ref_model``: π_ref (default: a
            frozen copy of ``model`` at the start).
        epochs_per_batch, minibatches: μ passes over each batch, each in ``minibatches``
            shuffled minibatches (must divide B).
        lr, critic_lr: AdamW learning rates (β = (0.9, 0.99), no weight decay) of the policy
            and of a separate critic (default: ``lr``); ``max_grad_norm`` clips each.
        temperature, partial_reward: sampling temperature; the task's partial reward.
        method: the registered method this run names (its policy loss and aggregation are
            used; default ``"PPO (value head, GAE)"``).
    """
    from ..widgets import progress as progress_bar  # the saved output is the finished bar

    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a pgbook.worlds.gpt.GPT, got {type(model).__name__}")
    for name in ("sample", "reward", "max_new_tokens"):
        if not hasattr(task, name):
            raise ValueError(f"task: expected a pgbook.worlds.tasks.Task (with .{name}), got "
                             f"{type(task).__name__}")
    steps = check_positive_int(steps, "steps")
    B = check_positive_int(batch_size, "batch_size")
    mu = check_positive_int(epochs_per_batch, "epochs_per_batch")
    n_mb = check_positive_int(minibatches, "minibatches")
    if B % n_mb:
        raise ValueError(f"minibatches: expected a divisor of batch_size = {B}, got {n_mb}")
    if critic not in ("separate", "shared"):
        raise ValueError(f"critic: expected 'separate' or 'shared', got {critic!r}")
    for name, flag in (("whiten_advantages", whiten_advantages),
                       ("partial_reward", partial_reward), ("progress", progress)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name}: expected True or False, got {flag!r}")
    if critic == "shared" and value_model is not None:
        raise ValueError("value_model: a shared value head lives on the policy; pass "
                         "critic='separate' to train a separate value model")
    if critic == "shared" and critic_lr is not None:
        raise ValueError(f"critic_lr: a shared value head is trained with the policy (lr, "
                         f"vf_coef); critic_lr is for critic='separate', got {critic_lr!r}")
    for name, v in (("gamma", gamma), ("lam", lam)):
        check_positive(v, name, allow_zero=True)
        if v > 1:
            raise ValueError(f"{name}: expected a number in [0, 1], got {v}")
    check_positive(eps_low, "eps_low")
    if eps_low >= 1:
        raise ValueError(f"eps_low: expected a number in (0, 1), got {eps_low}")
    if eps_high is not None:
        check_positive(eps_high, "eps_high")
    if eps_value is not None:
        check_positive(eps_value, "eps_value")
    vf_coef = check_positive(vf_coef, "vf_coef")
    lr = check_positive(lr, "lr")
    critic_lr = lr if critic_lr is None else check_positive(critic_lr, "critic_lr")
    if max_grad_norm is not None:
        max_grad_norm = check_positive(max_grad_norm, "max_grad_norm")
    tau = check_positive(temperature, "temperature")
    beta = check_positive(beta, "beta", allow_zero=True)
    if kl not in ("none", "k1_in_reward"):
        raise ValueError(f"kl: expected 'none' or 'k1_in_reward' (TRL's per-token KL in the "
                         f"reward), got {kl!r}")
    if kl == "none" and beta > 0:
        raise ValueError(f"beta: expected 0 with kl='none', got {beta}; choose kl='k1_in_reward'")
    cfg = _methods.method_config(method)
    if cfg["advantage"] != "gae":
        raise ValueError(f"method: expected a method whose advantage is 'gae' (e.g. 'PPO (value "
                         f"head, GAE)'), got {method!r} with advantage {cfg['advantage']!r}")
    check_generator(generator)
    device = _model_device(model)
    _check_fits_task(model, "model", task)
    if generator.device != device:
        raise ValueError(f"generator: expected a generator on the model's device {device}, "
                         f"got one on {generator.device}")

    if critic == "separate":
        vmodel = value_model if value_model is not None else ValueModel.from_policy(model)
        if not isinstance(vmodel, ValueModel):
            raise ValueError(f"value_model: expected a ValueModel, got {type(vmodel).__name__}")
        _check_fits_task(vmodel.body, "value_model", task)
        vp = next(vmodel.parameters())
        if vp.device != device:
            raise ValueError(f"value_model: expected it on the model's device {device}, got {vp.device}")
        shared = None
        opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
        vopt = torch.optim.AdamW(vmodel.parameters(), lr=critic_lr, betas=(0.9, 0.99),
                                 weight_decay=0.0)
        trained = (model, vmodel)
        n_critic = sum(p.numel() for p in vmodel.parameters())
    else:
        shared = _SharedHead(model)
        vmodel = None
        opt = torch.optim.AdamW(shared.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
        vopt = None
        trained = (shared,)
        n_critic = sum(p.numel() for p in shared.v_head.parameters())
    if ref_model is None:
        ref_model = copy.deepcopy(model)
    elif ref_model is model:
        raise ValueError("ref_model: expected a separate frozen model, got the trained model itself")
    elif not isinstance(ref_model, nn.Module):
        raise ValueError(f"ref_model: expected a frozen copy of the model (a torch.nn.Module), "
                         f"got {type(ref_model).__name__}")
    else:
        _check_fits_task(ref_model, "ref_model", task)
    ref_model.requires_grad_(False)

    def forward(tokens):
        """(log-probs, values), each (b, T) and aligned with the tokens; differentiable."""
        if shared is not None:
            z, v = shared(tokens[:, :-1])
            if tau != 1.0:
                z = z / tau
            return _aligned(token_logprobs(z, tokens[:, 1:])), _aligned(v)
        return logprobs(model, tokens, tau), _aligned(vmodel(tokens[:, :-1]))

    N = task.max_new_tokens
    per_mb = B // n_mb
    rec = {name: [] for name in PPO_METRICS}
    bar = progress_bar(range(steps), disable=not progress, desc=desc or f"PPO ({critic} critic, λ={lam:g})")
    t0 = time.perf_counter()
    for _ in bar:
        prob = task.sample(B, generator)
        s = sample(model, prob.prompts, N, generator, tau)
        mask = s.mask
        m = mask.to(torch.bool)
        R = task.reward(s.tokens, prob.targets, partial=partial_reward, dtype=s.logprobs.dtype)
        with torch.no_grad():
            old, v_old = forward(s.tokens)
            old, v_old = old.detach(), v_old.detach().to(old.dtype) * mask
            ref = logprobs(ref_model, s.tokens, tau).to(old.dtype)
            zero = old.new_zeros(())
            k3 = torch.where(m, _kl.kl_estimate(torch.where(m, old, zero), torch.where(m, ref, zero),
                                                "k3"), zero)
            last = mask.shape[1] - 1 - torch.flip(mask, [1]).argmax(1)        # last response token
            r = torch.zeros_like(old).scatter(1, last[:, None], R.to(old.dtype)[:, None])
            if kl == "k1_in_reward" and beta > 0:
                r = r - beta * torch.where(m, old - ref, zero)
            adv, ret = gae(r, v_old, mask, gamma, lam, whiten=whiten_advantages)
            resid = torch.where(m, ret - v_old, zero)
            n_tok = mask.sum()
            ret_mean = torch.where(m, ret, zero).sum() / n_tok
            var_ret = torch.where(m, (ret - ret_mean) ** 2, zero).sum() / n_tok
            var_res = torch.where(m, (resid - resid.sum() / n_tok) ** 2, zero).sum() / n_tok
            ev = 1 - var_res / var_ret if float(var_ret) > 0 else torch.zeros_like(var_ret)
        vlosses, clips, vclips = [], [], []
        for _epoch in range(mu):
            order = torch.randperm(B, generator=generator, device=device) if n_mb > 1 \
                else torch.arange(B, device=device)
            for k in range(n_mb):
                idx = order[k * per_mb:(k + 1) * per_mb]
                lp, v = forward(s.tokens[idx])
                pl, met = _methods.policy_loss(lp, old[idx], adv[idx], mask[idx],
                                               loss=cfg["policy_loss"],
                                               aggregation=cfg["aggregation"],
                                               eps_low=eps_low, eps_high=eps_high)
                vl, vmet = value_loss(v, ret[idx].to(v.dtype), mask[idx],
                                      old_values=None if eps_value is None else v_old[idx].to(v.dtype),
                                      eps_value=eps_value)
                if shared is not None:
                    opt.zero_grad(set_to_none=True)
                    (pl + vf_coef * vl.to(pl.dtype)).backward()
                    if max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(shared.parameters(), max_grad_norm)
                    opt.step()
                else:
                    opt.zero_grad(set_to_none=True)
                    vopt.zero_grad(set_to_none=True)
                    (pl + vl.to(pl.dtype)).backward()              # disjoint parameters
                    if max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
                        torch.nn.utils.clip_grad_norm_(vmodel.parameters(), max_grad_norm)
                    opt.step()
                    vopt.step()
                vlosses.append(vl.detach())
                clips.append(met["clip_fraction"])
                vclips.append(vmet["clip_fraction"])
        row = {"reward": R.mean(), "value_loss": torch.stack(vlosses).mean(),
               "value_error": (torch.where(m, resid, zero).pow(2).sum() / n_tok).sqrt(),
               "explained_variance": ev, "clip_fraction": torch.stack(clips).mean(),
               "value_clip_fraction": torch.stack(vclips).mean(), "kl_ref": k3.sum() / B,
               "length": n_tok / B}
        for name, v in row.items():
            rec[name].append(float(v))
        rec["seconds"].append(time.perf_counter() - t0)
        if progress:
            bar.set_postfix(reward=f"{rec['reward'][-1]:.2f}", ev=f"{rec['explained_variance'][-1]:.2f}",
                            refresh=False)
    bar.close()
    n_policy = sum(p.numel() for p in model.parameters())
    config = dict(method=method, advantage=cfg["advantage"], policy_loss=cfg["policy_loss"],
                  aggregation=cfg["aggregation"], critic=critic, gamma=gamma, lam=lam,
                  whiten_advantages=whiten_advantages, eps_low=eps_low, eps_high=eps_high,
                  eps_value=eps_value, vf_coef=vf_coef if critic == "shared" else None, kl=kl,
                  beta=beta, batch_size=B, epochs_per_batch=mu, minibatches=n_mb, lr=lr,
                  critic_lr=critic_lr if critic == "separate" else None, temperature=tau,
                  task=repr(task),
                  n_params={"policy": n_policy, "critic": n_critic,
                            "trained": n_policy + n_critic},
                  state_bytes=state_bytes(*trained))
    history = PPOHistory(**{k: torch.tensor(v, dtype=torch.float64) for k, v in rec.items()},
                         config=config)
    history.value_model = vmodel if shared is None else shared
    return history


def compare_ppo_grpo(task: Task, model: GPT, *, steps: int, responses_per_step: int, group_size: int,
                     seed: int = 0, grpo_method: str = "GRPO", ppo_critic: str = "separate",
                     lam: float = 1.0, lr: float = 3e-3, critic_lr: float | None = None,
                     epochs_per_batch: int = 1, beta: float = 0.0, progress: bool = True
                     ) -> dict:
    """PPO with a critic and a GRPO-family method on the same task, from the same starting
    policy, with the same number of sampled responses per step: ``responses_per_step`` =
    B; GRPO draws B/G prompts × G responses, PPO B prompts × 1 response.

    Both start from deep copies of ``model`` (left untouched), sample with generators seeded
    ``seed``, take ``epochs_per_batch`` passes of one minibatch per step with AdamW at
    ``lr`` and ε = 0.2, and with ``beta`` > 0 put a KL to the starting policy in the reward
    (PPO: per token, k1, as TRL; GRPO: ``kl="k1_in_reward"``, the sequence sum of k1).

    Returns ``{"PPO": ..., "GRPO": ...}``, each a dict with ``history`` (the
    :class:`PPOHistory` / :class:`~pgbook.train.grpo.GRPOHistory`), ``reward`` (steps,),
    ``seconds`` (wall time of the run), ``n_params`` (policy, critic, trained),
    ``state_bytes`` (:func:`state_bytes`: parameters, gradients, AdamW moments),
    ``activation_bytes`` (:func:`update_activation_bytes` of one update on the same
    full-width batch of B demonstrations, after training) and ``model`` the trained policy.
    """
    from ..train.grpo import grpo_train

    if not isinstance(model, GPT):
        raise ValueError(f"model: expected a pgbook.worlds.gpt.GPT, got {type(model).__name__}")
    if ppo_critic not in ("separate", "shared"):
        raise ValueError(f"ppo_critic: expected 'separate' or 'shared', got {ppo_critic!r}")
    names = [m.name for m in _registered_methods()]
    if not isinstance(grpo_method, str) or grpo_method not in names:
        raise ValueError(f"grpo_method: expected a registered method (e.g. 'GRPO', 'Dr. GRPO'), "
                         f"got {grpo_method!r}")
    B = check_positive_int(responses_per_step, "responses_per_step")
    G = check_positive_int(group_size, "group_size")
    beta = check_positive(beta, "beta", allow_zero=True)
    if B % G:
        raise ValueError(f"group_size: expected a divisor of responses_per_step = {B}, got {G}")
    out = {}
    ppo_model = copy.deepcopy(model)
    h = ppo_train(ppo_model, task, steps=steps, batch_size=B, generator=_gen(seed, model),
                  critic=ppo_critic, lam=lam, lr=lr, critic_lr=critic_lr,
                  epochs_per_batch=epochs_per_batch, kl="k1_in_reward" if beta > 0 else "none",
                  beta=beta, progress=progress, desc="PPO (value head, GAE)")
    out["PPO"] = {"history": h, "reward": h.reward, "seconds": float(h.seconds[-1]),
                  "n_params": h.config["n_params"], "state_bytes": h.config["state_bytes"],
                  "model": ppo_model}
    grpo_model = copy.deepcopy(model)
    g = grpo_train(grpo_model, task, steps=steps, prompts_per_step=B // G, group_size=G,
                   generator=_gen(seed, model), method=grpo_method,
                   kl="k1_in_reward" if beta > 0 else None, beta=beta,
                   epochs_per_batch=epochs_per_batch, lr=lr, progress=progress, desc=grpo_method)
    n = sum(p.numel() for p in grpo_model.parameters())
    out["GRPO"] = {"history": g, "reward": g.reward, "seconds": float(g.seconds[-1]),
                   "n_params": {"policy": n, "critic": 0, "trained": n},
                   "state_bytes": state_bytes(grpo_model), "model": grpo_model}
    # activations of one update on the same full-width batch of B sequences
    seq, mask = task.demonstrations(task.sample(B, _gen(seed + 1, model)))
    mask = mask.to(next(model.parameters()).dtype)
    out["PPO"]["activation_bytes"] = update_activation_bytes(ppo_model, seq, mask,
                                                             h.value_model)
    out["GRPO"]["activation_bytes"] = update_activation_bytes(grpo_model, seq, mask)
    return out


def update_activation_bytes(model: GPT, tokens: Tensor, mask: Tensor,
                            critic: nn.Module | None = None) -> int:
    """The bytes autograd keeps for the backward pass of one update on ``tokens`` (B, T) with
    ``mask`` (B, T) (:class:`activation_bytes`): the policy's log-probs and PPO-clip loss, plus
    (with ``critic``, a :class:`ValueModel` or a policy with a shared head from
    :func:`ppo_train`) the values and the value loss. A measure of a training step's
    activation memory that does not depend on the machine; the step itself is not taken."""
    if not isinstance(model, GPT):
        raise ValueError(f"model: expected a pgbook.worlds.gpt.GPT, got {type(model).__name__}")
    if critic is not None and not isinstance(critic, (ValueModel, _SharedHead)):
        raise ValueError(f"critic: expected None, a ValueModel or ppo_train's shared head, got "
                         f"{type(critic).__name__}")
    with activation_bytes() as act:
        if isinstance(critic, _SharedHead):
            z, v = critic(tokens[:, :-1])
            lp, v = _aligned(token_logprobs(z, tokens[:, 1:])), _aligned(v)
        else:
            lp = logprobs(model, tokens)
            v = None if critic is None else _aligned(critic(tokens[:, :-1]))
        loss, _ = _methods.policy_loss(lp, lp.detach(), torch.zeros_like(lp), mask,
                                       loss="ppo_clip", aggregation="token_mean")
        if v is not None:
            vl, _ = value_loss(v, torch.zeros_like(v), mask, old_values=v.detach(),
                               eps_value=0.2)
            loss = loss + vl.to(loss.dtype)
    return act.bytes


def _gen(seed: int, model: nn.Module) -> torch.Generator:
    from .._validate import make_generator

    return make_generator(seed, next(model.parameters()).device)
