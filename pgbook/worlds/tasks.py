"""Toy tasks with verifiable rewards, and supervised pretraining of a starting policy.

In J(θ) = E_{x~ρ} E_{y~π_θ(·|x)} [R(x, y)] a task supplies the two things that are not the
model: the prompt distribution ρ(x) and the reward R(x, y). Here R is *verifiable*: a
program checks the response, R = 1 if it is the correct answer and 0 otherwise (or, with
``partial=True``, the fraction of answer positions that are right). Factor of J(θ):
reward.

Tasks (each a :class:`Task`, all over a character vocabulary, see :mod:`pgbook.worlds.gpt`):

* :class:`Reverse`: ``^abca>`` → ``acba$``  (reverse a string of 2 … 6 letters);
* :class:`SortDigits`: ``^3141:`` → ``1134$`` (sort a string of digits);
* :class:`Add`: ``^37+5=`` → ``42$``        (add two small numbers).

Layout: :meth:`Task.sample` draws ``n`` problems as :class:`Problems` with ``prompts``
(n, P) (``BOS``, the input, a separator, left-padded with ``PAD`` to the task's
``prompt_len`` P) and ``targets`` (n, N) (the answer, ``EOS``, then ``PAD``, N =
``max_new_tokens``), generated with tensor operations from an explicit generator.
:func:`pgbook.worlds.gpt.sample` on the prompts with ``max_new_tokens = task.max_new_tokens``
returns (n, P + N) sequences whose last N columns are the responses, and
:meth:`Task.reward` compares them with the targets position by position (sampling writes
``PAD`` after ``EOS``, so a response is right exactly when it equals its target row).

:func:`pretrain` fits a model to (optionally corrupted) demonstrations by maximum
likelihood, which is the weighted-MLE loss of chapter 04 with every weight equal to 1;
``noise`` sets how imperfect the starting policy is, so that RL has room to improve it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .._validate import (
    check_float_dtype,
    check_generator,
    check_index,
    check_mask,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
    check_same_device,
    check_tensor,
    make_generator,
    unknown_options,
)
from ..registry import register
from ..trajectory.tokens import sequence_logprob
from .gpt import BOS, EOS, GPT, PAD, CharTokenizer, GPTConfig, logprobs, sample


class Problems(NamedTuple):
    """``prompts`` (n, P) long and ``targets`` (n, N) long, on the generator's device."""

    prompts: Tensor
    targets: Tensor

    def repeat_interleave(self, group_size: int) -> Problems:
        """Each problem ``group_size`` times in a row: (n·G, ·), groups contiguous (GRPO)."""
        check_positive_int(group_size, "group_size")
        return Problems(self.prompts.repeat_interleave(group_size, 0),
                        self.targets.repeat_interleave(group_size, 0))


def _pack(pieces, width: int, right: bool) -> Tensor:
    """Concatenate per-row variable-length pieces into an (n, width) tensor padded with PAD.

    ``pieces``: a list of (tokens (n, W), lengths (n,)) where row i contributes
    ``tokens[i, :lengths[i]]``. ``right=True`` aligns each row's end with the last column
    (left padding: prompts), ``right=False`` its start with column 0 (targets). A loop over
    the few pieces, none over rows.
    """
    tok0 = pieces[0][0]
    n = tok0.shape[0]
    total = sum(ln for _, ln in pieces)
    out = tok0.new_full((n, width + 1), PAD)                 # column `width` is a dump
    offset = (width - total) if right else torch.zeros_like(total)
    for tok, ln in pieces:
        j = torch.arange(tok.shape[1], device=tok.device)
        pos = torch.where(j < ln[:, None], offset[:, None] + j, width)
        out.scatter_(1, pos, tok)
        offset = offset + ln
    return out[:, :width]


def _const(n: int, token: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """A one-token piece for every row."""
    return like.new_full((n, 1), token), like.new_ones(n)


def _digits(v: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """Decimal digits of non-negative integers, most significant first: ((n, width), (n,)).

    Row i holds its ℓ_i digits in columns 0 … ℓ_i − 1 (ℓ = 1 for 0) as digit values 0–9.
    """
    ln = torch.ones_like(v)
    for k in range(1, width):
        ln = ln + (v >= 10 ** k).long()
    j = torch.arange(width, device=v.device)
    powers = torch.pow(10, (ln[:, None] - 1 - j).clamp(min=0))
    return (v[:, None] // powers) % 10, ln


def _check_ids(x: Tensor, name: str) -> Tensor:
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name}: expected integer token ids, got dtype {x.dtype}")
    return x


def _check_prompt(prompt: str, chars: str, sep: str, max_len: int | None = None) -> str:
    """The input part of a prompt string (its characters from ``chars``, ``sep`` at the end
    optional; at most ``max_len`` characters when given)."""
    if not isinstance(prompt, str):
        raise ValueError(f"prompt: expected a string, got {type(prompt).__name__}")
    body = prompt[:-1] if prompt.endswith(sep) else prompt
    bad = sorted({c for c in body if c not in chars})
    if bad:
        raise ValueError(f"prompt: characters {bad} are not in the task's alphabet {chars!r}")
    if max_len is not None and len(body) > max_len:
        raise ValueError(f"prompt: expected at most {max_len} input characters (the task's "
                         f"max_input_len), got {len(body)} in {prompt!r}")
    return body


_TASK_INTERFACE = ("sample", "reward", "demonstrations", "tokenizer", "prompt_len",
                   "max_new_tokens")


def _check_task(task: Task) -> Task:
    """A :class:`Task`, or an object with its interface (e.g. a wrapper that changes the
    demonstrations, :class:`pgbook.worlds.teachers.SystematicErrors`)."""
    if not isinstance(task, Task) and not all(hasattr(task, a) for a in _TASK_INTERFACE):
        raise ValueError(f"task: expected a pgbook.worlds.tasks.Task (or an object with its "
                         f"methods {list(_TASK_INTERFACE)}), got {type(task).__name__}")
    return task


def _check_responses(responses: Tensor, targets: Tensor) -> None:
    check_tensor(responses, "responses", ndim=2)
    check_tensor(targets, "targets", ndim=2)
    _check_ids(responses, "responses")
    _check_ids(targets, "targets")
    if targets.shape != responses.shape:
        raise ValueError(f"targets: expected shape {tuple(responses.shape)} (that of the "
                         f"responses), got {tuple(targets.shape)}")
    if targets.device != responses.device:
        raise ValueError(f"targets: expected device {responses.device}, got {targets.device}")


@register("reward", "exact_match", side="reward", form="response",
          summary="R = 1 if the response equals the verified answer, else 0")
def exact_match(responses: Tensor, targets: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """R_i = 1[y_i = target_i] over all N positions (answer, EOS, then PAD), shape (n,).

    ``responses`` (n, N) as sampled (PAD after the first EOS), ``targets`` (n, N). A
    response that never emits EOS, or stops early or late, is wrong. Factor of J(θ): reward.
    """
    _check_responses(responses, targets)
    check_float_dtype(dtype)
    return (responses == targets).all(-1).to(dtype)


@register("reward", "partial_credit", side="reward", form="response",
          summary="R = fraction of the answer's positions (and EOS) that are right")
def partial_credit(responses: Tensor, targets: Tensor,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """R_i = Σ_t 1[y_it = target_it] c_it / Σ_t c_it, c = (target ≠ PAD): the answer and EOS
    positions; shape (n,), in [0, 1]. On sampled responses (PAD after EOS) it is 1 exactly
    when :func:`exact_match` is 1. A denser reward than exact match (reward shaping).
    Factor of J(θ): reward.
    """
    _check_responses(responses, targets)
    check_float_dtype(dtype)
    live = targets != PAD
    hit = (responses == targets) & live
    return hit.sum(-1).to(dtype) / live.sum(-1).clamp(min=1).to(dtype)


class Task:
    """Base class: a prompt distribution and a verifiable reward over a character vocabulary.

    Subclasses set ``chars`` (the input/answer characters), ``sep`` (the character that
    ends a prompt), ``max_input_len`` and ``max_answer_len``, and implement
    :meth:`_problems` (tensor form) and :meth:`solve` (string form, the reference the
    tensor form is tested against). Attributes: ``tokenizer``, ``prompt_len`` P =
    1 + max_input_len + 1, ``max_new_tokens`` N = max_answer_len + 1 (room for EOS).
    """

    name = "task"
    chars = ""
    answer_chars = ""
    sep = ">"
    max_input_len = 1
    max_answer_len = 1

    def __init__(self):
        self.tokenizer = CharTokenizer(self.chars + self.sep)
        self.prompt_len = 1 + self.max_input_len + 1
        self.max_new_tokens = self.max_answer_len + 1
        self.answer_ids = torch.tensor(self.tokenizer.encode(self.answer_chars), dtype=torch.long)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(prompt_len={self.prompt_len}, "
                f"max_new_tokens={self.max_new_tokens}, vocab_size={self.tokenizer.vocab_size})")

    # -- subclasses --
    def _problems(self, n: int, generator: torch.Generator):
        """(input pieces, answer pieces): lists of (tokens (n, W), lengths (n,))."""
        raise NotImplementedError

    def solve(self, prompt: str) -> str:
        """The correct answer for a prompt given as text (``decode`` of the prompt)."""
        raise NotImplementedError

    # -- shared --
    def sample(self, n: int, generator: torch.Generator) -> Problems:
        """Draw n problems x ~ ρ(x) on the generator's device (prompts (n, P), targets (n, N))."""
        check_positive_int(n, "n")
        check_generator(generator)
        inputs, answers = self._problems(n, generator)
        like = inputs[0][0]
        prompts = _pack([_const(n, BOS, like), *inputs,
                         _const(n, self.tokenizer.stoi[self.sep], like)], self.prompt_len, True)
        targets = _pack([*answers, _const(n, EOS, like)], self.max_new_tokens, False)
        return Problems(prompts, targets)

    def responses(self, tokens: Tensor) -> Tensor:
        """The last N = ``max_new_tokens`` columns of sampled sequences (n, P + N) → (n, N)."""
        check_tensor(tokens, "tokens", ndim=2)
        _check_ids(tokens, "tokens")
        N = self.max_new_tokens
        if tokens.shape[1] not in (N, self.prompt_len + N):
            raise ValueError(f"tokens: expected {N} (responses) or {self.prompt_len + N} "
                             f"(prompt + response) columns, got {tokens.shape[1]}")
        return tokens[:, -N:]

    def reward(self, tokens: Tensor, targets: Tensor, partial: bool = False,
               dtype: torch.dtype = torch.float32) -> Tensor:
        """R(x, y) for a batch, shape (n,), ``dtype``, on the tokens' device.

        ``tokens``: sampled sequences (n, P + N) or responses (n, N); ``targets`` (n, N).
        :func:`exact_match` (R ∈ {0, 1}) or, with ``partial=True``, :func:`partial_credit`.
        Factor of J(θ): reward.
        """
        if not isinstance(partial, bool):
            raise ValueError(f"partial: expected True or False, got {partial!r}")
        fn = partial_credit if partial else exact_match
        responses = self.responses(tokens)
        check_index(responses, "tokens", self.tokenizer.vocab_size)   # one read-back
        return fn(responses, targets, dtype=dtype)

    def check(self, prompt: str, response: str) -> bool:
        """String-level verifier: ``response == solve(prompt)`` (the reference for tests)."""
        if not isinstance(prompt, str) or not isinstance(response, str):
            raise ValueError(f"prompt, response: expected strings, got {type(prompt).__name__} "
                             f"and {type(response).__name__}")
        return response == self.solve(prompt)

    def demonstrations(self, problems: Problems, noise: float = 0.0,
                       generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Correct sequences prompt + target, (n, P + N), and their loss mask (n, P + N).

        With ``noise`` = q > 0 every answer character (not EOS) is replaced, with probability
        q, by a character drawn uniformly from the answer alphabet (so it stays right with
        probability 1 − q + q/K): a model fitted to them is useful but imperfect. The mask is
        1 on the answer and EOS, 0 on the prompt and padding.
        """
        q = check_positive(noise, "noise", allow_zero=True)
        if q > 1:
            raise ValueError(f"noise: expected a probability in [0, 1], got {q}")
        if not isinstance(problems, Problems):
            raise ValueError(f"problems: expected Problems (from task.sample), got "
                             f"{type(problems).__name__}")
        for name in ("prompts", "targets"):
            check_tensor(getattr(problems, name), f"problems.{name}", ndim=2)
            _check_ids(getattr(problems, name), f"problems.{name}")
        tgt = problems.targets
        if q > 0:
            if generator is None:
                raise ValueError("generator: noise > 0 needs a torch.Generator")
            check_generator(generator, tgt.device)
            ids = self.answer_ids.to(tgt.device)
            flip = torch.rand(tgt.shape, generator=generator, device=tgt.device) < q
            rnd = ids[torch.randint(len(ids), tgt.shape, generator=generator, device=tgt.device)]
            tgt = torch.where(flip & (tgt != EOS) & (tgt != PAD), rnd, tgt)
        seq = torch.cat([problems.prompts, tgt], 1)
        mask = torch.cat([torch.zeros_like(problems.prompts), (tgt != PAD).long()], 1)
        return seq, mask


class Reverse(Task):
    """Reverse a string of ``min_len`` … ``max_len`` letters: ``^abca>`` → ``acba$``."""

    name = "reverse"
    sep = ">"

    def __init__(self, min_len: int = 2, max_len: int = 6, letters: str = "abcde"):
        check_positive_int(min_len, "min_len")
        check_positive_int(max_len, "max_len")
        if min_len > max_len:
            raise ValueError(f"min_len: expected at most max_len = {max_len}, got {min_len}")
        if not isinstance(letters, str) or not letters:
            raise ValueError(f"letters: expected a non-empty string, got {letters!r}")
        self.min_len, self.max_len = min_len, max_len
        self.chars = self.answer_chars = letters
        self.max_input_len = self.max_answer_len = max_len
        super().__init__()

    def _problems(self, n, generator):
        dev = generator.device
        K = len(self.chars)
        x = torch.randint(K, (n, self.max_len), generator=generator, device=dev) + 3
        ln = torch.randint(self.min_len, self.max_len + 1, (n,), generator=generator, device=dev)
        j = torch.arange(self.max_len, device=dev)
        rev = x.gather(1, (ln[:, None] - 1 - j).clamp(min=0))
        return [(x, ln)], [(rev, ln)]

    def solve(self, prompt: str) -> str:
        """The reversed letters of ``prompt`` (e.g. ``"abca>"`` → ``"acba"``)."""
        return _check_prompt(prompt, self.chars, self.sep, self.max_input_len)[::-1]


class SortDigits(Task):
    """Sort ``min_len`` … ``max_len`` digits: ``^3141:`` → ``1134$``."""

    name = "sort"
    chars = answer_chars = "0123456789"
    sep = ":"

    def __init__(self, min_len: int = 2, max_len: int = 5, n_digits: int = 10):
        check_positive_int(min_len, "min_len")
        check_positive_int(max_len, "max_len")
        if min_len > max_len:
            raise ValueError(f"min_len: expected at most max_len = {max_len}, got {min_len}")
        if isinstance(n_digits, bool) or not isinstance(n_digits, int) or not 1 <= n_digits <= 10:
            raise ValueError(f"n_digits: expected an integer in [1, 10], got {n_digits}")
        self.min_len, self.max_len, self.n_digits = min_len, max_len, n_digits
        self.max_input_len = self.max_answer_len = max_len
        super().__init__()

    def _problems(self, n, generator):
        dev = generator.device
        x = torch.randint(self.n_digits, (n, self.max_len), generator=generator, device=dev) + 3
        ln = torch.randint(self.min_len, self.max_len + 1, (n,), generator=generator, device=dev)
        live = torch.arange(self.max_len, device=dev) < ln[:, None]
        srt = torch.where(live, x, x.new_full((), 10 ** 6)).sort(1).values
        return [(x, ln)], [(srt, ln)]

    def solve(self, prompt: str) -> str:
        """The digits of ``prompt`` in increasing order (e.g. ``"3141:"`` → ``"1134"``)."""
        return "".join(sorted(_check_prompt(prompt, self.chars, self.sep, self.max_input_len)))


class Add(Task):
    """Add two numbers in [0, 10^digits): ``^37+5=`` → ``42$`` (no leading zeros).

    The hardest of the three for a tiny model (carries): ``digits=1`` is learned in the
    book's pretraining budget, ``digits=2`` needs far longer training.
    """

    name = "add"
    chars = answer_chars = "0123456789"
    sep = "="

    def __init__(self, digits: int = 2):
        check_positive_int(digits, "digits")
        self.digits = digits
        self.chars = "0123456789+"
        self.max_input_len = 2 * digits + 1
        self.max_answer_len = digits + 1
        super().__init__()

    def _problems(self, n, generator):
        dev = generator.device
        hi = 10 ** self.digits
        a = torch.randint(hi, (n,), generator=generator, device=dev)
        b = torch.randint(hi, (n,), generator=generator, device=dev)
        da, la = _digits(a, self.digits)
        db, lb = _digits(b, self.digits)
        ds, ls = _digits(a + b, self.digits + 1)
        plus = self.tokenizer.stoi["+"]
        return [(da + 3, la), _const(n, plus, a), (db + 3, lb)], [(ds + 3, ls)]

    def solve(self, prompt: str) -> str:
        """The sum (e.g. ``"37+5="`` → ``"42"``)."""
        body = _check_prompt(prompt, self.chars, self.sep, self.max_input_len)
        parts = body.split("+")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"prompt: expected 'a+b{self.sep}' with two numbers, got {prompt!r}")
        return str(int(parts[0]) + int(parts[1]))


TASKS = {"reverse": Reverse, "sort": SortDigits, "add": Add}


# -- a starting policy ----------------------------------------------------------------------


def demonstration_loss(model: torch.nn.Module, seq: Tensor, mask: Tensor) -> Tensor:
    """Token-averaged negative log-likelihood  −Σ_{b,t} m_bt log π_θ(y_bt|h_bt) / Σ m_bt.

    The weighted-MLE loss with every weight A = 1 (supervised fine-tuning); ``seq`` and
    ``mask`` as returned by :meth:`Task.demonstrations` (0/1, not all zero: an empty batch
    or one without an answer token has no loss). Factor of J(θ): trajectory.
    """
    check_tensor(seq, "seq", ndim=2)
    check_tensor(mask, "mask", ndim=2)
    if mask.shape != seq.shape:
        raise ValueError(f"mask: expected shape {tuple(seq.shape)} (that of seq), got "
                         f"{tuple(mask.shape)}")
    check_same_device(seq=seq, mask=mask)
    check_mask(mask, "mask")
    lp = logprobs(model, seq)
    return -sequence_logprob(lp, mask).sum() / mask.sum().clamp(min=1)


def pretrain(model: torch.nn.Module, task: Task, steps: int, batch_size: int, lr: float,
             generator: torch.Generator, progress: bool = True, noise: float = 0.0,
             warmup: int = 20) -> Tensor:
    """Supervised next-token training on fresh demonstrations; returns the losses (steps,).

    Each step draws ``batch_size`` problems from ``generator``, corrupts their answers with
    probability ``noise`` (:meth:`Task.demonstrations`) and takes one AdamW step (learning
    rate ``lr``, linear warm-up over ``warmup`` steps, then cosine decay to lr/10) on
    :func:`demonstration_loss`. Trains ``model`` in place; a tqdm bar when ``progress``. The
    generator must live on the model's device.
    """
    check_positive_int(steps, "steps")
    check_positive_int(batch_size, "batch_size")
    check_positive(lr, "lr")
    _check_task(task)
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module (a GPT), got {type(model).__name__}")
    check_generator(generator)
    check_nonnegative_int(warmup, "warmup")
    from ..widgets import progress as progress_bar  # the saved output is the finished bar

    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0,
                            foreach=True)

    def factor(s: int) -> float:  # linear warm-up, then cosine from lr down to lr/10
        return min(1.0, (s + 1) / max(warmup, 1)) * (0.55 + 0.45 * math.cos(math.pi * s / steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    losses = []
    for _ in progress_bar(range(steps), disable=not progress, desc=f"pretrain {task.name}"):
        seq, mask = task.demonstrations(task.sample(batch_size, generator), noise, generator)
        loss = demonstration_loss(model, seq, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.detach())
    return torch.stack(losses)


@torch.no_grad()
def success_rate(model: torch.nn.Module, task: Task, n: int, generator: torch.Generator,
                 temperature: float = 1.0, partial: bool = False) -> float:
    """Mean reward of ``n`` fresh problems answered by sampling at ``temperature``
    (a Monte-Carlo estimate of J(θ); greedy decoding at temperature 0)."""
    _check_task(task)
    prob = task.sample(n, generator)
    s = sample(model, prob.prompts, task.max_new_tokens, generator, temperature)
    return float(task.reward(s.tokens, prob.targets, partial=partial).mean())


def policy_config(task: Task, **overrides) -> GPTConfig:
    """The book's default GPT for ``task``: vocabulary and block size from the task, one
    block, 2 heads, 32 channels, init std 0.05 (:class:`pgbook.worlds.gpt.GPTConfig`'s defaults);
    ``overrides`` replace any field."""
    _check_task(task)
    kw = {"vocab_size": task.tokenizer.vocab_size,
          "block_size": task.prompt_len + task.max_new_tokens}
    unknown_options("policy_config", overrides, GPTConfig.__dataclass_fields__)
    kw.update(overrides)
    return GPTConfig(**kw)


def pretrained_policy(task: Task, seed: int = 0, steps: int = 200, batch_size: int = 32,
                      lr: float = 1e-2, noise: float = 0.25, progress: bool = True,
                      **config) -> tuple[GPT, Tensor]:
    """A starting policy for RL in a few seconds of CPU: ``(model, losses)``.

    Builds ``GPT(policy_config(task, **config))`` with weights from seed ``seed`` and runs
    :func:`pretrain` on demonstrations corrupted with probability ``noise`` (data from seed
    ``seed + 1``). For :class:`Reverse` with the defaults the result answers correctly with
    greedy decoding but only about 41% of the time when sampling at temperature 1 (the
    noisy demonstrations leave about 20% of the probability on wrong letters at each
    position; chapter 11), which leaves RL room to improve (chapter 12). With the same
    defaults (measured once, seeds 0–1): ``SortDigits()`` ≈ 25% at temperature 1 and 85%
    greedy, ``Add(1)`` ≈ 20% and 56%; ``Add(2)`` is not learned in 200 steps (≈ 2%).
    """
    model = GPT(policy_config(task, **config), make_generator(seed))
    losses = pretrain(model, task, steps, batch_size, lr, make_generator(seed + 1),
                      progress=progress, noise=noise)
    return model, losses


__all__ = [
    "TASKS",
    "Add",
    "Problems",
    "Reverse",
    "SortDigits",
    "Task",
    "demonstration_loss",
    "exact_match",
    "partial_credit",
    "policy_config",
    "pretrain",
    "pretrained_policy",
    "success_rate",
]
