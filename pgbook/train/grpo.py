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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .. import kl as _kl
from .. import methods as _methods
from .._validate import (
    _is_meta,
    check_finite_where,
    check_generator,
    check_mask,
    check_number,
    check_pair,
    check_positive,
    check_positive_int,
    check_same_device,
    check_tensor,
    keyword_names,
    reject_unknown_options,
    values_checked,
    work_dtype,
)
from ..registry import components, get, resolve
from ..registry import method as method_registry
from ..reward import advantages as _adv
from ..reward import teacher as _teacher
from ..reward.shaping import truncated_responses
from ..trajectory.selection import dynamic_sampling_order, informative_groups
from ..trajectory.tokens import entropy_from_logits, token_logprobs
from ..worlds.gpt import EOS, Sample, logprobs, next_token_logits, sample
from ..worlds.tasks import Problems

if TYPE_CHECKING:
    from ..worlds.tasks import Task

#: what :class:`GRPOHistory` records per step, in this order
METRICS = ("reward", "kl_ref", "clip_fraction", "entropy", "zero_variance_groups", "loss",
           "ratio_max", "length", "logprob_gap", "first_epoch_ratio_error", "rollouts", "seconds")
#: what it records in addition when training with a teacher (chapter 16)
TEACHER_METRICS = ("kl_teacher", "teacher_fraction")


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
      because the old log-probs are the trainer's own forward pass (with one minibatch and
      nothing needing them before the update they are that update's forward pass itself;
      otherwise a separate pass before it, which with several minibatches must give the same
      numbers on a subset of rows, as it does on the CPU). Above :func:`check_on_policy`'s
      tolerance training stops with an error naming the likely causes (e.g. a model with
      dropout left in train mode); where the old log-probs are the update's own pass, that
      check compares it with the rollout's log-probs instead.
    * ``rollouts``: responses generated in the step: B, or more with dynamic sampling
      (every resampled batch counts, the discarded groups included).
    * ``seconds``: wall time since the start of training, at the end of each step.

    ``config`` holds the settings of the run. With a ``teacher`` (chapter 16) two more
    records, None otherwise: ``kl_teacher``, (1/B) Σ_i Σ_t m_it k3 with π_T in place of
    π_ref (an unbiased estimate of KL(π_θk‖π_T) of whole responses), and
    ``teacher_fraction``, the share of the step's responses whose group the gate let the
    teacher's term into.
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
    rollouts: Tensor
    seconds: Tensor
    config: dict = field(default_factory=dict)
    kl_teacher: Tensor | None = None
    teacher_fraction: Tensor | None = None

    @property
    def steps(self) -> int:
        return self.reward.shape[0]

    def smoothed(self, name: str = "reward", window: int = 5) -> Tensor:
        """Trailing moving average over ``window`` steps (shorter at the start), (steps,)."""
        check_positive_int(window, "window")
        have = METRICS + tuple(n for n in TEACHER_METRICS if getattr(self, n) is not None)
        if name not in have:
            raise ValueError(f"name: expected one of {have}, got {name!r}")
        x = getattr(self, name).to(torch.float64)
        padded = torch.cat([x.new_zeros(window - 1), x])
        counts = torch.arange(1, x.shape[0] + 1, dtype=x.dtype).clamp(max=window)
        return padded.unfold(0, window, 1).sum(-1) / counts

    def first_step(self, target: float, window: int = 5, name: str = "reward") -> int | None:
        """The first step k (0-based) at which the ``window``-step moving average of
        ``name`` is ≥ ``target``, or None if it never is."""
        hit = (self.smoothed(name, window) >= check_number(target, "target")).nonzero()
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


def _rollout(roller, task, n_prompts: int, G: int, N: int, generator, tau: float,
             partial: bool):
    """n_prompts problems, G responses each (groups contiguous), and their rewards."""
    prob = task.sample(n_prompts, generator).repeat_interleave(G)
    s = sample(roller, prob.prompts, N, generator, tau)
    R = task.reward(s.tokens, prob.targets, partial=partial, dtype=s.logprobs.dtype)
    return prob, s, R


def _dynamic_batch(roller, task, n_prompts, G, N, generator, tau, partial, first,
                   max_gen_batches: int):
    """DAPO's dynamic sampling: batches of ``n_prompts`` groups until ``n_prompts``
    informative ones are found (or ``max_gen_batches`` were drawn); returns the kept
    batch (informative groups first, then zero-variance ones if short) and the number of
    responses generated."""
    batches = [first]
    found = int(informative_groups(first[2], G).sum())
    while found < n_prompts and len(batches) < max_gen_batches:
        batches.append(_rollout(roller, task, n_prompts, G, N, generator, tau, partial))
        found += int(informative_groups(batches[-1][2], G).sum())
    if len(batches) == 1 and found == n_prompts:
        return (*first, n_prompts * G)
    R = torch.cat([b[2] for b in batches])
    groups = dynamic_sampling_order(informative_groups(R, G), n_prompts)
    rows = (groups[:, None] * G + torch.arange(G, device=groups.device)).reshape(-1)
    prob = Problems(*(torch.cat([b[0][k] for b in batches])[rows] for k in range(2)))
    s = Sample(*(torch.cat([b[1][k] for b in batches])[rows] for k in range(3)))
    return prob, s, R[rows], len(batches) * n_prompts * G


#: policy-loss options that grpo_train sets from its own arguments (or computes), and where
#: a caller sets them instead of ``loss_options``
_OWN_LOSS_OPTIONS = {
    "loss": "pass loss= to grpo_train", "aggregation": "pass aggregation= to grpo_train",
    "eps_low": "pass eps_low= to grpo_train", "eps_high": "pass eps_high= to grpo_train",
    "kl": "pass kl= to grpo_train", "beta": "pass beta= to grpo_train",
    "ref_logp": "pass ref_model= to grpo_train",
    "max_tokens": "it is the task's max_new_tokens",
    "sampler_logp": "pass sampler= to grpo_train",
    "correction": "pass correction= to grpo_train",
    "correction_max": "pass correction_max= to grpo_train",
    "correction_min": "pass correction_min= to grpo_train",
}


def _check_fits_task(module: nn.Module, name: str, task: Task) -> None:
    """At setup: a model (or reference, teacher, sampler, value model) whose ``config``
    gives a vocabulary other than the task tokenizer's, or a block shorter than prompt +
    response (P + N), is refused (its logits would be over other tokens). A module without
    a ``config`` is taken as it is."""
    cfg = getattr(module, "config", None)
    want_v = getattr(getattr(task, "tokenizer", None), "vocab_size", None)
    if cfg is None or not isinstance(want_v, int):
        return
    V = getattr(cfg, "vocab_size", None)
    if isinstance(V, int) and V != want_v:
        raise ValueError(f"{name}: expected a model over the task's vocabulary (vocab_size = "
                         f"{want_v}, from task.tokenizer; pgbook.worlds.tasks.policy_config(task)), "
                         f"got config.vocab_size = {V}")
    T = getattr(cfg, "block_size", None)
    want_t = getattr(task, "prompt_len", 0) + task.max_new_tokens
    if isinstance(T, int) and T < want_t:
        raise ValueError(f"{name}: expected config.block_size ≥ prompt_len + max_new_tokens = "
                         f"{want_t} (the task's sequences), got {T}")


def _check_same_layout(module: nn.Module, model: nn.Module, name: str) -> None:
    """At setup: ``module`` must have ``model``'s state-dict layout (the same keys, each of
    the same shape), so that ``module.load_state_dict(model.state_dict())`` works."""
    mine, theirs = module.state_dict(), model.state_dict()
    missing = sorted(set(theirs) - set(mine))
    extra = sorted(set(mine) - set(theirs))
    if missing or extra:
        raise ValueError(f"{name}: expected the model's state-dict layout, got "
                         f"{len(missing)} key(s) missing {missing[:3]} and {len(extra)} "
                         f"unexpected {extra[:3]}")
    for key, t in theirs.items():
        if mine[key].shape != t.shape:
            raise ValueError(f"{name}: expected the model's state-dict layout, got {key!r} of "
                             f"shape {tuple(mine[key].shape)} (the model's: {tuple(t.shape)})")


def _check_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """At setup: ``optimizer`` must be a ``torch.optim.Optimizer`` holding some of
    ``model``'s parameters (one over another model's would train nothing)."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer: expected a torch.optim.Optimizer over the model's "
                         f"parameters (or None for AdamW), got {type(optimizer).__name__}")
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    if not any(id(p) in held for p in model.parameters()):
        raise ValueError("optimizer: expected a torch.optim.Optimizer over the model's "
                         "parameters, got one that holds none of them (it would train nothing)")


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


def _piece(kind: str, spec, form: str):
    """A registered piece of ``kind`` by name, a callable as it is, or None."""
    if spec is None or callable(spec):
        return spec
    return resolve(kind, spec, form, what=kind)


@reject_unknown_options
def check_on_policy(logp: Tensor, old_logp: Tensor, mask: Tensor, atol: float = 1e-3) -> Tensor:
    """The first-epoch sanity check: on-policy, every ratio π_θ/π_old must equal 1.

    Before the first update of a batch θ = θ_old, so r_t = exp(log π_θ(y_t|h_t) −
    log π_old(y_t|h_t)) = 1 on every response token. Call it on the first minibatch of each
    batch with the log-probs your loss will differentiate (``logp``, (B, T)) and those
    recorded for the rollout (``old_logp``, (B, T)); ``mask`` (B, T) 0/1 marks the response
    tokens (other positions may hold anything, −inf included). Returns max_t |r_t − 1| over
    the mask (a 0-dim tensor); raises ValueError when it exceeds ``atol``, naming the
    likely causes, because PPO's clip and the importance ratio then measure a difference
    between two computations instead of a change of policy (a dropout model in train mode
    gives ratios of 1.1 or more before any update, and the clip cuts real gradient).
    Factor of J(θ): trajectory (is the policy being differentiated the one that sampled?).
    On the meta device (no values) only the shapes are checked.

    :func:`grpo_train` calls it on the first minibatch of every step (with ``atol`` 1e-3,
    or 5e-2 for a float16/bfloat16 model).
    """
    check_pair(logp, old_logp, "logp", "old_logp")
    check_tensor(old_logp, "old_logp", floating=True)
    check_mask(mask, "mask", tuple(logp.shape))
    check_same_device(logp=logp, mask=mask)
    check_finite_where(logp, mask, "logp")
    check_finite_where(old_logp, mask, "old_logp")
    atol = check_positive(atol, "atol")
    m = mask.to(torch.bool)
    with torch.no_grad():
        gap = torch.where(m, logp.detach() - old_logp.detach().to(logp.dtype),
                          torch.zeros((), dtype=logp.dtype, device=logp.device))
        err = torch.expm1(gap).abs().max()
    if _is_meta(err):
        return err
    if not bool(err <= atol):    # NaN fails too
        b, t = divmod(int(torch.where(torch.isnan(gap), torch.inf, gap.abs()).argmax()),
                      gap.shape[-1])
        raise ValueError(
            f"check_on_policy: on the first epoch every ratio π_θ/π_old must be 1 (θ has not "
            f"been updated yet), got max |ratio − 1| = {float(err):.3g} > atol = {atol:g} "
            f"(at row {b}, token {t}). The log-probs being trained on are not those of the "
            f"policy that sampled. Likely causes: (1) the model is in train mode with dropout "
            f"(call model.eval() before sampling and keep it for the loss, or set dropout to "
            f"0); (2) the sampler's temperature differs from the trainer's (divide the logits "
            f"by the same τ in both); (3) a different dtype or precision between rollout and "
            f"training (bfloat16 or autocast in one of them only); (4) a stale copy of the "
            f"weights sampled (the rollout model was not synced after the last update, or "
            f"old_logp is from an earlier batch); (5) log-probs shifted against the tokens "
            f"(use pgbook.trajectory.tokens.causal_logprobs).")
    return err


def _whole(x: Tensor) -> Tensor:
    """The rows of a minibatch that is the whole batch: all of them, the tensor itself."""
    return x


def _rows(idx: Tensor) -> Callable[[Tensor], Tensor]:
    """The rows ``idx`` of a minibatch, as a function of a batch tensor."""
    return lambda x: x[idx]


def _model_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters, refusing a model without parameters or on meta
    (training samples and scores responses: it needs values)."""
    param = next(model.parameters(), None)
    if param is None:
        raise ValueError("model: expected a model with parameters, got none")
    if param.device.type == "meta":
        raise ValueError("model: training needs values (sampling, rewards); the meta device has none")
    return param.device


def _on_policy_atol(dtype: torch.dtype) -> float:
    """The trainer's tolerance of :func:`check_on_policy`: 1e-3, or 5e-2 for a half-precision
    model (a bfloat16 logit of magnitude 4 is resolved only to ~0.03)."""
    return 5e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-3


def _teacher_setup(method: str, teacher, coef, signal, gate, device) -> dict | None:
    """Validate the teacher options of :func:`grpo_train`; None without a teacher."""
    parts = _methods.method(method).resolved_parts()
    signal = signal if signal is not None else parts.get("teacher")
    gate = gate if gate is not None else parts.get("teacher_gate")
    if teacher is None:
        if signal is not None or gate is not None:
            raise ValueError(f"teacher: method {method!r} (teacher signal {signal!r}, gate "
                             f"{gate!r}) needs a teacher model, got None")
        if coef != 1.0:
            raise ValueError(f"teacher_coef: without a teacher there is no teacher's term to "
                             f"weigh; expected the default 1.0, got {coef!r}")
        return None
    if not isinstance(teacher, nn.Module):
        raise ValueError(f"teacher: expected a torch.nn.Module (a pgbook.worlds.gpt.GPT), got "
                         f"{type(teacher).__name__}")
    t_param = next(teacher.parameters(), None)
    if t_param is not None and t_param.device != device:
        raise ValueError(f"teacher: expected it on the model's device {device}, got "
                         f"{t_param.device}")
    signal = signal or "reverse_kl"
    gate = gate or "always"
    resolve("teacher", signal, "token", what="teacher_signal")
    resolve("teacher_gate", gate, "group", what="teacher_gate")
    coef = check_positive(coef, "teacher_coef", allow_zero=True)
    teacher.requires_grad_(False)
    return {"model": teacher, "coef": coef, "signal": signal, "gate": gate}


def _teacher_term(teach: dict, adv_tok: Tensor, old: Tensor, tokens: Tensor, mask: Tensor,
                  R: Tensor, G: int) -> tuple[Tensor, Tensor, Tensor]:
    """Â_it + λ g_i A_it with the teacher's log-probs of the sampled tokens; also the k3
    estimate of KL(π_θ‖π_T) per response (mean over B) and the share of gated responses."""
    m = mask.to(torch.bool)
    zero = old.new_zeros(())
    lt = logprobs(teach["model"], tokens).to(old.dtype)
    ta = resolve("teacher", teach["signal"], "token")(old, lt, mask)
    g = _teacher.teacher_gate(R, G, teach["gate"])
    mixed = _teacher.mix_teacher(adv_tok, ta, mask, coef=teach["coef"], gate=g)
    k3 = torch.where(m, _kl.kl_estimate(torch.where(m, old, zero), torch.where(m, lt, zero),
                                        "k3"), zero)
    return mixed, k3.sum() / mask.shape[0], g.to(old.dtype).mean()


@reject_unknown_options
def grpo_train(model: nn.Module, task: Task, *, steps: int, prompts_per_step: int, group_size: int,
               generator: torch.Generator, method: str = "GRPO", advantage: str | None = None,
               loss: str | None = None, aggregation: str | None = None, kl: str | None = None,
               beta: float = 0.0, ref_model: nn.Module | None = None, epochs_per_batch: int = 1,
               minibatches: int = 1, eps_low: float | None = None, eps_high: float | None = None,
               lr: float | None = None, max_grad_norm: float | None = 1.0,
               temperature: float = 1.0, std_eps: float | None = None, partial_reward: bool = False,
               stop_at: float | None = None, window: int = 5,
               optimizer: torch.optim.Optimizer | None = None,
               progress: bool = True, desc: str | None = None,
               shaping: str | Callable | None = None,
               token_credit: str | Callable | None = None, advantage_options: dict | None = None,
               sampler: nn.Module | None = None, correction: str | None = None,
               correction_max: float | None = 2.0, correction_min: float | None = None,
               dynamic_sampling: bool | None = None, max_gen_batches: int = 10,
               loss_options: dict | None = None, teacher: nn.Module | None = None,
               teacher_coef: float = 1.0, teacher_signal: str | None = None,
               teacher_gate: str | None = None) -> GRPOHistory:
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
            e.g. ``"GRPO"`` (DeepSeekMath's recipe: k3 KL in the loss), ``"Dr. GRPO"``,
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
        lr, max_grad_norm: AdamW learning rate (β = (0.9, 0.99), no weight decay; None: 1e-3)
            and the gradient-norm clip (None: no clipping); pass ``optimizer`` (a
            ``torch.optim.Optimizer`` over the model's parameters) to use your own, with its
            own learning rate (``lr`` is then refused).
        temperature: sampling temperature; the trainer's log-probs use the same one.
        std_eps: ε of a z-score advantage (σ_G + ε; default: the estimator's own, 1e-6);
            ``partial_reward``: the task's partial reward.
        stop_at: stop once the ``window``-step moving average of the reward reaches it.
        progress: a tqdm bar (``desc`` its label) showing the reward and KL.
        shaping: reward shaping after the verifier (chapter 13): a registered ``"shaping"``
            piece ("overlong_punish", "overlong_mask", "overlong_soft") or a callable
            ``fn(rewards (B,), mask (B, T), *, truncated (B,), max_tokens) -> (rewards,
            mask)`` (:mod:`pgbook.reward.shaping`; use ``functools.partial`` for options);
            default: the method's own ``shaping`` part, if it has one. ``truncated`` marks
            responses without EOS; the returned mask is the loss mask (the recorded reward
            and length stay the task's). A minibatch whose loss mask is empty is skipped.
        token_credit: a registered ``"token_credit"`` piece ("top_entropy", "low_entropy",
            "entropy_weighted") or a callable ``fn(advantages_tok, entropy, mask, *,
            group_size) -> advantages_tok`` applied to the broadcast advantages, with the
            sampling policy's per-token entropy; default: the method's own part, if any.
        advantage_options: keyword options for the advantage estimator (e.g. ``{"k": 4}``
            for "pkpo" or "passk_analytic").
        sampler: the rollout engine, when it is not the trained model (chapter 14): a module
            with the model's state-dict layout (e.g. ``copy.deepcopy(model).to(
            torch.bfloat16)``), loaded with the model's weights before every rollout
            (``sampler.load_state_dict(model.state_dict())``) and used to sample; its
            recorded log-probs are the sampler's log μ, passed to
            :func:`pgbook.methods.policy_loss` as ``sampler_logp``. Default: the model
            samples itself.
        correction, correction_max, correction_min: the sampler/trainer correction
            (:mod:`pgbook.trajectory.corrections`: "none", "token_truncate",
            "token_mask", "sequence_truncate", "sequence_mask") and its bounds; default:
            the method's (e.g. "GRPO + TIS"), else "none".
        dynamic_sampling: DAPO's filter-and-resample: groups whose G rewards are all equal
            are dropped and fresh prompts sampled until ``prompts_per_step`` informative
            groups are found or ``max_gen_batches`` batches have been drawn (verl's
            ``filter_groups``); then the batch is filled up with zero-variance groups (verl
            stops with an error instead). Every generated response counts in
            ``rollouts``. Default: the method's choice (on for "DAPO").
        loss_options: further options of the policy loss (e.g. ``{"clip_cov_ratio":
            0.02}``); a loss that takes a ``generator`` gets this run's.
        teacher: a frozen teacher model π_T (same tokenizer; chapter 16). Its log-probs of
            the sampled tokens (at temperature 1) give the per-token reward
            r_t = log π_T(y_t|h_t) − log π_θold(y_t|h_t), turned into A_t by
            ``teacher_signal`` ("reverse_kl": A_t = r_t, the Thinking Machines / Tinker
            recipe; "reverse_kl_to_go": Σ_{t'≥t} r_t'; default: the method's ``teacher``
            part, else "reverse_kl") and added to the verifier's token advantages after the
            group normalisation, Â_it ← Â_it + λ g_i A_it (:func:`pgbook.reward.teacher.mix_teacher`),
            λ = ``teacher_coef`` ≥ 0, g_i from ``teacher_gate`` ("always", "zero_variance",
            "all_fail"; default: the method's ``teacher_gate`` part, else "always").
            A method with a teacher part (e.g. "OPD", "GRPO-OPD") needs one.
    """
    from ..widgets import progress as progress_bar  # the saved output is the finished bar

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
    if lr is not None and optimizer is not None:
        raise ValueError(f"lr: the optimizer passed has its own learning rate, so lr would be "
                         f"ignored; expected lr=None with optimizer=, got lr={lr!r}")
    lr = 1e-3 if lr is None else check_positive(lr, "lr")
    if max_grad_norm is not None:
        max_grad_norm = check_positive(max_grad_norm, "max_grad_norm")
    tau = check_positive(temperature, "temperature")
    check_generator(generator)
    device = _model_device(model)
    param = next(model.parameters())
    if generator.device != device:
        raise ValueError(f"generator: expected a generator on the model's device {device}, "
                         f"got one on {generator.device}")
    if stop_at is not None:
        stop_at = check_number(stop_at, "stop_at")
    if not isinstance(partial_reward, bool):
        raise ValueError(f"partial_reward: expected True or False, got {partial_reward!r}")
    _check_fits_task(model, "model", task)
    if optimizer is not None:
        _check_optimizer(optimizer, model)
    if sampler is not None:
        if not isinstance(sampler, nn.Module) or sampler is model:
            raise ValueError(f"sampler: expected a separate module with the model's layout "
                             f"(e.g. copy.deepcopy(model)), got "
                             f"{'the model itself' if sampler is model else type(sampler).__name__}")
        sp = next(sampler.parameters(), None)
        if sp is not None and sp.device != device:
            raise ValueError(f"sampler: expected it on the model's device {device}, got {sp.device}")
        _check_same_layout(sampler, model, "sampler")
    max_gen_batches = check_positive_int(max_gen_batches, "max_gen_batches")
    if loss_options is not None and not isinstance(loss_options, dict):
        raise ValueError(f"loss_options: expected a dict, got {type(loss_options).__name__}")
    for key in loss_options or ():
        if key in _OWN_LOSS_OPTIONS:
            raise ValueError(f"loss_options: {key!r} is set by grpo_train itself; "
                             f"{_OWN_LOSS_OPTIONS[key]}")
    parts = method_registry(method).resolved_parts()
    correction = parts.get("correction", "none") if correction is None else correction
    if correction != "none":
        resolve("correction", correction, "weights", what="correction")
    if dynamic_sampling is not None and not isinstance(dynamic_sampling, bool):
        raise ValueError(f"dynamic_sampling: expected True, False or None (the method's "
                         f"choice), got {dynamic_sampling!r}")
    dyn = parts.get("data") == "dynamic_sampling" if dynamic_sampling is None \
        else bool(dynamic_sampling)

    cfg = _resolve(method, {"advantage": advantage, "policy_loss": loss,
                            "aggregation": aggregation, "kl": kl})
    kl_name = cfg["kl"]
    if kl_name == "kl_penalty":
        raise ValueError("kl: 'kl_penalty' is PPO's KL to π_old (chapter 07); for a KL to the "
                         "reference choose 'k1_in_reward', 'k1_loss', 'k2_loss' or 'k3_loss'")
    if kl_name == "none" and beta > 0:
        raise ValueError(f"beta: method {method!r} has no KL term (kl='none'), so beta must be 0, "
                         f"got {beta}; choose kl='k3_loss' (or another placement)")
    in_reward = get("kl", kl_name).form == "reward"      # k1_in_reward, or a user's
    adv_options = {} if std_eps is None else {"std_eps": check_positive(std_eps, "std_eps",
                                                                        allow_zero=True)}
    kl_loss = "none" if in_reward else kl_name
    shaping_fn = _piece("shaping", shaping if shaping is not None else parts.get("shaping"),
                        "rollout")
    credit_fn = _piece("token_credit", token_credit if token_credit is not None
                       else parts.get("token_credit"), "entropy")
    if advantage_options is not None:
        if not isinstance(advantage_options, dict) or "std_eps" in advantage_options:
            raise ValueError(f"advantage_options: expected a dict of estimator options (std_eps "
                             f"has its own argument), got {advantage_options!r}")
        adv_options.update(advantage_options)
    extra = dict(loss_options or {})
    if "generator" in keyword_names(resolve("policy_loss", cfg["policy_loss"], "token"), 3)[0]:
        extra.setdefault("generator", generator)
    if sampler is not None:
        extra.update(sampler_logp=None, correction=correction, correction_max=correction_max,
                     correction_min=correction_min)
    if teacher is not None and teacher is model:
        raise ValueError("teacher: expected a frozen copy, got the model being trained itself")
    teach = _teacher_setup(method, teacher, teacher_coef, teacher_signal, teacher_gate, device)
    if teach is not None:
        _check_fits_task(teacher, "teacher", task)

    if ref_model is None:
        ref_model = copy.deepcopy(model)
    elif ref_model is model:
        raise ValueError("ref_model: expected a separate frozen model, got the trained model "
                         "itself (its KL would always be 0); pass copy.deepcopy(model)")
    elif not isinstance(ref_model, nn.Module):
        raise ValueError(f"ref_model: expected a torch.nn.Module (a frozen copy of the model) or "
                         f"None, got {type(ref_model).__name__}")
    else:
        _check_fits_task(ref_model, "ref_model", task)
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
    on_policy_atol = _on_policy_atol(param.dtype)
    lazy_old = n_mb == 1 and not (in_reward and beta > 0) and credit_fn is None \
        and teach is None and sampler is None
    rec = {name: [] for name in METRICS}
    rec_t = {name: [] for name in TEACHER_METRICS}
    bar = progress_bar(range(steps), disable=not progress, desc=desc or f"{method} (G={G}, μ={mu})")
    t0 = time.perf_counter()
    roller = model if sampler is None else sampler
    for _ in bar:
        # 1. rollout: G responses per prompt, groups contiguous (by the sampler if one is given)
        if sampler is not None:
            sampler.load_state_dict(model.state_dict())
        prob, s, R = _rollout(roller, task, n_prompts, G, N, generator, tau, partial_reward)
        n_rollouts = B
        if dyn:   # DAPO: keep informative groups, resample until the batch is full
            prob, s, R, n_rollouts = _dynamic_batch(roller, task, n_prompts, G, N, generator, tau,
                                                    partial_reward, (prob, s, R), max_gen_batches)
        mask = s.mask
        m = mask.to(torch.bool)
        R_used, loss_mask = R, mask
        if shaping_fn is not None:
            R_used, loss_mask = shaping_fn(R, mask, truncated=truncated_responses(
                s.tokens, mask, EOS), max_tokens=N)
        # 2. reference log-probs, each group's shared prompt run once. The old log-probs come
        # from the first update's own forward pass (θ = θ_old there, so its ratios are exactly
        # 1) unless something needs them before it (the KL in the reward, a token-credit or
        # teacher term) or the first minibatch is not the whole batch
        P = prob.prompts.shape[1]
        lp_dtype = work_dtype(param.dtype)
        with torch.inference_mode():   # the frozen reference: no autograd bookkeeping at all
            ref = logprobs(ref_model, s.tokens, tau, prompt_len=P).to(lp_dtype)
        ref = ref.clone()               # an ordinary tensor again (the loss may save it)
        with torch.no_grad():
            old = ent = None
            if not lazy_old:
                old, ent = _trainer_logprobs(model, s.tokens, tau, P)
            # 3. rewards (KL-shaped if the KL sits in the reward) and group advantages
            shaped = _methods.shaped_rewards(kl_name, R_used, old, ref, mask, beta) \
                if in_reward and beta > 0 else R_used
            adv = _adv.compute_advantages(shaped, cfg["advantage"], group_size=G, mask=mask,
                                          **adv_options)
            adv_tok = adv.to(lp_dtype) * loss_mask if adv.dim() == 2 else \
                _adv.broadcast_to_tokens(adv.to(lp_dtype), loss_mask)
            if credit_fn is not None and bool(loss_mask.any()):
                adv_tok = credit_fn(adv_tok, ent, loss_mask, group_size=G)
            if teach is not None:  # the teacher's per-token term, after the group normalisation
                adv_tok, kl_t, gated = _teacher_term(teach, adv_tok, old, s.tokens, loss_mask, R, G)
                rec_t["kl_teacher"].append(float(kl_t))
                rec_t["teacher_fraction"].append(float(gated))
        # 4. μ epochs of minibatch updates on the clipped per-token loss
        losses, clips, rmax, first_err = [], [], [], None
        for _epoch in range(mu):
            order = torch.randperm(n_prompts, generator=generator, device=device) if n_mb > 1 \
                else None
            for k in range(n_mb):
                if order is None:   # the whole batch: the tensors themselves (so a mask
                    rows = _whole      # checked once is not read again)
                else:
                    groups = order[k * per_mb:(k + 1) * per_mb]
                    rows = _rows((groups[:, None] * G + torch.arange(G, device=device)).reshape(-1))
                if not bool(rows(loss_mask).any()):
                    continue            # every response of this minibatch left the loss
                lp, ent_k = _trainer_logprobs(model, rows(s.tokens), tau, P, entropy=old is None)
                if old is None:   # the first update sees the whole batch at θ_old
                    old, ent = lp.detach(), ent_k
                    # its ratios are 1 by construction, so check it against the rollout's
                    # own log-probs instead (same θ, same arithmetic up to round-off): a
                    # dropout model in train mode, say, fails here as it would against a
                    # separate pass
                    with values_checked():   # both come from checked log-probs
                        check_on_policy(lp, s.logprobs.to(lp_dtype), mask, on_policy_atol)
                if first_err is None:  # on-policy before the first update: ratios are 1
                    with values_checked():
                        first_err = check_on_policy(lp, rows(old), rows(mask), on_policy_atol)
                if sampler is not None:
                    extra["sampler_logp"] = rows(s.logprobs).to(lp_dtype)
                value, met = _methods.policy_loss(
                    lp, rows(old), rows(adv_tok), rows(loss_mask), loss=cfg["policy_loss"],
                    aggregation=cfg["aggregation"], eps_low=eps_low, eps_high=eps_high,
                    ref_logp=rows(ref) if kl_loss != "none" else None, kl=kl_loss,
                    beta=beta if kl_loss != "none" else 0.0, max_tokens=N, **extra)
                opt.zero_grad(set_to_none=True)
                value.backward()
                if max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm, foreach=True)
                opt.step()
                losses.append(value.detach())
                clips.append(met["clip_fraction"])
                rmax.append(met["ratio_max"])
        if old is None:  # no update ran (every response left the loss): θ is still θ_old
            with torch.no_grad():
                old, ent = _trainer_logprobs(model, s.tokens, tau, P)
        with torch.no_grad():
            zero = old.new_zeros(())
            k3 = torch.where(m, _kl.kl_estimate(torch.where(m, old, zero),
                                                    torch.where(m, ref, zero), "k3"), zero)
            n_tok = mask.sum()
            gap = (s.logprobs.to(old.dtype) - old).abs().masked_fill(~m, 0).max()
            row = {
                "reward": R.mean(),
                "kl_ref": k3.sum() / B,
                "clip_fraction": torch.stack(clips).mean() if clips else zero,
                "entropy": torch.where(m, ent, zero).sum() / n_tok,
                "zero_variance_groups": _adv.zero_variance_groups(R, G).sum(),
                "loss": torch.stack(losses).mean() if losses else zero,
                "ratio_max": torch.stack(rmax).max() if rmax else zero + 1,
                "length": n_tok / B,
                "logprob_gap": gap,
                "first_epoch_ratio_error": zero if first_err is None else first_err,
            }
            values = torch.stack([v.to(torch.float64) for v in row.values()]).tolist()  # one copy
        for name, v in zip(row, values):
            rec[name].append(v)
        rec["rollouts"].append(float(n_rollouts))
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
                  max_grad_norm=max_grad_norm, temperature=tau, task=repr(task),
                  correction=correction, dynamic_sampling=dyn, sampler=sampler is not None)
    if teach is not None:
        config.update(teacher_coef=teach["coef"], teacher_signal=teach["signal"],
                      teacher_gate=teach["gate"])
        rec_t = {k: torch.tensor(v, dtype=torch.float64) for k, v in rec_t.items()}
    else:
        rec_t = {}
    return GRPOHistory(**{k: torch.tensor(v, dtype=torch.float64) for k, v in rec.items()},
                       config=config, **rec_t)


__all__ = ["METRICS", "TEACHER_METRICS", "GRPOHistory", "check_on_policy", "grpo_train"]
