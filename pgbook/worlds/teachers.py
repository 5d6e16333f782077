"""Teachers for the worlds: models whose log-probabilities score a student's tokens (chapter 16).

* On the enumerable tiny LM (:mod:`pgbook.worlds.seqlm`): :func:`table_policy`, a
  :class:`~pgbook.worlds.seqlm.TabularPolicy` written down directly. At position t of a
  response to prompt x it puts probability ``confidence`` on the t-th token of the teacher's
  answer for x (EOS after it) and spreads the rest evenly, whatever the prefix: a teacher
  that is right (its answer is the verifier's target) or wrong (another string), confident
  or not, with every sequence probability exact.
* On the tiny GPT (:mod:`pgbook.worlds.gpt`, :mod:`pgbook.worlds.tasks`):
  :func:`train_teacher`, supervised pretraining (:func:`pgbook.worlds.tasks.pretrain`) on
  clean demonstrations, for longer or with a larger model than the student, in a few
  seconds of CPU; with ``wrong_first`` the demonstrations of a fixed, recognisable subset
  of the problems carry a *systematic* error (:class:`SystematicErrors`), so the teacher
  learns a wrong answer for them, confidently: "a teacher trained on partly wrong data".

A teacher is part of the reward side of J(θ) once its log-probabilities score the student's
samples (:mod:`pgbook.reward.teacher`); the models here are just the worlds' policies.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validate import check_positive_int, check_tensor, make_generator
from .gpt import GPT
from .seqlm import SeqSpace, TabularPolicy
from .tasks import Problems, Task, policy_config, pretrain

__all__ = [
    "SystematicErrors",
    "table_policy",
    "teacher_wrong",
    "train_teacher",
]


def table_policy(space: SeqSpace, answers, confidence=0.9,
                  dtype: torch.dtype = torch.float64) -> tuple[TabularPolicy, Tensor]:
    """A position-wise teacher on the enumerable LM: ``(TabularPolicy(space), θ_T)``.

    π_T(a_x[t] | x, y_<t) = c_x at every prefix of length t, where a_x is the teacher's
    answer for prompt x (``answers``: one string per prompt, EOS implied after it, then
    EOS again) and c_x = ``confidence`` (a number, or one per prompt, in (1/V, 1)); the
    other V − 1 tokens share 1 − c_x evenly. Its probability of a whole response is then a
    product of c_x and (1 − c_x)/(V − 1) factors; if a_x is the verifier's target, the
    teacher's own success rate on x is c_x^(len(a_x) + 1) (every answer token and the
    EOS; c_x^T when the answer fills all T positions). θ_T (X · n_prefixes · V,) holds the
    log-probabilities, in ``dtype``, on the space's device.
    """
    if isinstance(answers, str) or len(answers) != space.X:
        raise ValueError(f"answers: expected one string per prompt ({space.X}), got {answers!r}")
    c = torch.as_tensor(confidence, dtype=torch.float64)
    if c.dim() == 0:
        c = c.expand(space.X)
    if c.shape != (space.X,):
        raise ValueError(f"confidence: expected a number or one per prompt ({space.X}), got "
                         f"shape {tuple(c.shape)}")
    V = space.V
    if bool((c <= 1.0 / V).any()) or bool((c >= 1).any()):
        raise ValueError(f"confidence: expected values in (1/V, 1) = ({1 / V:.3g}, 1) (above "
                         f"uniform, below certainty), got {c.tolist()}")
    policy = TabularPolicy(space)
    tgt = space.encode(list(answers)).cpu()                                  # (X, T)
    starts = policy._offsets                                                 # (T,)
    codes = torch.arange(policy.n_prefixes)
    pos = (codes[:, None] >= starts[None, :]).sum(-1) - 1                   # length of prefix
    favoured = tgt[:, pos]                                                   # (X, n_prefixes)
    low = torch.log((1 - c) / (V - 1))[:, None, None]
    table = low.expand(space.X, policy.n_prefixes, V).clone()
    table.scatter_(-1, favoured.unsqueeze(-1), torch.log(c)[:, None, None].expand(
        space.X, policy.n_prefixes, 1).clone())
    return policy, table.reshape(-1).to(device=space.device, dtype=dtype)


# -- the tiny GPT ------------------------------------------------------------------------------
def _char_ids(task: Task, chars: str) -> Tensor:
    if not isinstance(chars, str) or not chars:
        raise ValueError(f"wrong_first: expected a non-empty string of answer characters, got "
                         f"{chars!r}")
    bad = sorted(set(chars) - set(task.answer_chars))
    if bad:
        raise ValueError(f"wrong_first: characters {bad} are not answer characters of the task "
                         f"({task.answer_chars!r})")
    return torch.tensor(task.tokenizer.encode(chars), dtype=torch.long)


def teacher_wrong(task: Task, targets: Tensor, wrong_first: str) -> Tensor:
    """Which problems a :class:`SystematicErrors` teacher is taught wrongly: bool (n,), True
    where the correct answer (``targets`` (n, N)) starts with one of the characters of
    ``wrong_first``. A rule on what the model sees (for :class:`~pgbook.worlds.tasks.Reverse`
    the first answer character is the last input character), so a model can learn it: the
    error is systematic, not noise. On the targets' device."""
    check_tensor(targets, "targets", ndim=2)
    ids = _char_ids(task, wrong_first).to(targets.device)
    return (targets[:, :1] == ids).any(-1)


class SystematicErrors:
    """A task whose demonstrations are wrong on a fixed, learnable subset of its problems.

    Wraps a :class:`pgbook.worlds.tasks.Task`: everything is the task's (prompts, verifier,
    tokenizer), except :meth:`demonstrations`: where the correct answer starts with one of
    the characters of ``wrong_first`` (:func:`teacher_wrong`), its first character is
    replaced by the next one in the task's answer alphabet (cyclically), a consistent wrong
    answer that a model trained on them learns (e.g. for ``Reverse`` with
    ``wrong_first="a"``: every answer that should start with ``a`` starts with ``b``, about
    a fifth of the prompts). The verifier (:meth:`Task.reward`) is unchanged.
    """

    def __init__(self, task: Task, wrong_first: str):
        if not isinstance(task, Task):
            raise ValueError(f"task: expected a pgbook.worlds.tasks.Task, got "
                             f"{type(task).__name__}")
        self.task = task
        self.wrong_first = wrong_first
        _char_ids(task, wrong_first)
        ids = task.answer_ids
        nxt = torch.arange(task.tokenizer.vocab_size)
        nxt[ids] = ids.roll(-1)
        self._next = nxt

    def __getattr__(self, name):
        return getattr(self.task, name)

    def __repr__(self) -> str:
        return f"SystematicErrors({self.task!r}, wrong_first={self.wrong_first!r})"

    def wrong_targets(self, problems: Problems) -> Tensor:
        """The targets the demonstrations teach (n, N): the task's, with the first answer
        character shifted where :func:`teacher_wrong` says so."""
        tgt = problems.targets
        flag = teacher_wrong(self.task, tgt, self.wrong_first)
        first = tgt[:, :1]
        new_first = torch.where(flag[:, None], self._next.to(tgt.device)[first], first)
        return torch.cat([new_first, tgt[:, 1:]], 1)

    def demonstrations(self, problems: Problems, noise: float = 0.0,
                       generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """:meth:`Task.demonstrations` on the systematically wrong targets."""
        return self.task.demonstrations(Problems(problems.prompts, self.wrong_targets(problems)),
                                        noise, generator)


def train_teacher(task: Task, *, seed: int = 100, steps: int = 300, batch_size: int = 32,
                  lr: float = 1e-2, noise: float = 0.0, wrong_first: str | None = None,
                  progress: bool = True, **config) -> tuple[GPT, Tensor]:
    """A teacher for ``task`` in a few seconds of CPU: ``(model, losses)``.

    Builds ``GPT(policy_config(task, **config))`` (``config`` can make it larger than the
    student: ``n_embd=48``, ``n_layer=2``, ...) with weights from seed ``seed``, and runs
    :func:`pgbook.worlds.tasks.pretrain` for ``steps`` steps on demonstrations with
    corruption ``noise`` (default 0: clean) from seed ``seed + 1``. With ``wrong_first``
    (a string of answer characters) they come from :class:`SystematicErrors`: every answer
    that should start with one of those characters is taught with a wrong first character,
    so the teacher is confidently wrong there. Trained on the CPU; move it with
    ``.to(device)``.
    """
    check_positive_int(steps, "steps")
    data = task if wrong_first is None else SystematicErrors(task, wrong_first)
    model = GPT(policy_config(task, **config), make_generator(seed))
    losses = pretrain(model, data, steps, batch_size, lr, make_generator(seed + 1),
                      progress=progress, noise=noise)
    return model, losses
