"""Environments for multi-turn agents: an interface, and a lookup tool.

An environment is the part of a multi-turn trajectory the policy does not write:

    p_θ(τ) = ρ(x) Π_k π_θ(a_k | h_k) · P(o_k | h_k, a_k),

the task draw ρ(x) (:meth:`Env.reset`) and the transitions P(o_k | h_k, a_k)
(:meth:`Env.step`: the observation that follows the policy's turn a_k, a reward and whether
the episode ended). Neither depends on θ: they are the factors that drop out of
∇log p_θ(τ). Factor of J(θ): both. The transitions belong to the trajectory factor (they
are masked out of the loss), the reward is the reward factor.

:class:`Env` is the interface, batched over episodes: ``reset(n, generator)`` draws n tasks,
``step(state, actions, lengths)`` takes every live episode's turn at once (token tensors,
no loop over episodes) and returns an :class:`EnvStep`. Observations are text, written in
the environment's :class:`pgbook.worlds.gpt.CharTokenizer`; :meth:`Env.step_text` is the
same rule on strings (the reference the tensor form is tested against).

:class:`LookupEnv` is the book's tool-use environment: answer with a value that only a
lookup tool knows (a tiny key-value store, the shape of retrieval and search tools). Its
parser, its outcomes for bad actions and parser errors, and its turn budget are documented
on the class. :func:`pgbook.worlds.agentic.rollout` runs a GPT in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._validate import (
    _is_meta,
    check_generator,
    check_number,
    check_positive,
    check_positive_int,
    check_same_device,
    check_tensor,
)
from .gpt import BOS, EOS, PAD, CharTokenizer
from .tasks import _pack

__all__ = [
    "OUTCOMES",
    "Env",
    "EnvState",
    "EnvStep",
    "LookupEnv",
]

#: the outcome of a turn (:attr:`EnvStep.outcome`), by code; −1 marks a turn not taken
OUTCOMES = ("right answer", "wrong answer", "tool call", "parse error", "bad action",
            "budget exhausted")
RIGHT, WRONG, TOOL, PARSE_ERROR, BAD_ACTION, BUDGET = range(6)


@dataclass
class EnvState:
    """The live state of n episodes: ``prompts`` (n, P) long (what the policy sees first),
    ``targets`` (n, N) long (hidden: the verified answer), ``turn`` (the number of turns
    already taken), ``done`` (n,) bool, and the environment's hidden ``store`` (any tensor
    with n rows, or None)."""

    prompts: Tensor
    targets: Tensor
    turn: int
    done: Tensor
    store: Tensor | None = None

    def __len__(self) -> int:
        return self.prompts.shape[0]

    def repeat_interleave(self, group_size: int) -> EnvState:
        """Each episode ``group_size`` times in a row (a GRPO group shares its task)."""
        check_positive_int(group_size, "group_size")
        return EnvState(self.prompts.repeat_interleave(group_size, 0),
                        self.targets.repeat_interleave(group_size, 0), self.turn,
                        self.done.repeat_interleave(group_size, 0),
                        None if self.store is None else self.store.repeat_interleave(group_size, 0))


@dataclass
class EnvStep:
    """What the environment answers to one turn of n episodes.

    ``obs`` (n, O) long: the observation's tokens, PAD after ``obs_len`` (n,) of them (0: no
    observation); ``reward`` (n,) float, this turn's reward; ``done`` (n,) bool, the episode
    has ended (with this turn or before); ``outcome`` (n,) long, a code of :data:`OUTCOMES`
    (−1 for episodes that had already ended)."""

    obs: Tensor
    obs_len: Tensor
    reward: Tensor
    done: Tensor
    outcome: Tensor


class Env:
    """A batched multi-turn environment with text observations, a turn budget and a
    verifiable reward.

    Attributes every environment sets: ``tokenizer`` (a
    :class:`~pgbook.worlds.gpt.CharTokenizer`), ``max_turns`` K (the budget), ``prompt_len``
    P, ``action_len`` A (the most tokens of one policy turn), ``obs_len`` O (the longest
    observation) and ``stop_ids`` (tokens that end a policy turn; EOS, the end of a final
    answer, is always one). A rollout is at most ``P + K · (A + O)`` tokens
    (:attr:`max_len`).

    Subclasses implement :meth:`reset`, :meth:`step` and :meth:`step_text`.
    """

    tokenizer: CharTokenizer
    max_turns: int
    prompt_len: int
    action_len: int
    obs_len: int
    stop_ids: tuple

    @property
    def max_len(self) -> int:
        """P + K · (A + O): the width of a rollout."""
        return self.prompt_len + self.max_turns * (self.action_len + self.obs_len)

    def reset(self, n: int, generator: torch.Generator) -> EnvState:  # pragma: no cover
        """Draw n tasks x ~ ρ(x) on the generator's device."""
        raise NotImplementedError

    def step(self, state: EnvState, actions: Tensor, lengths: Tensor) -> EnvStep:  # pragma: no cover
        """One turn of every episode: ``actions`` (n, A) long, the turn's tokens (PAD
        after ``lengths`` (n,) of them); episodes already done are left as they are."""
        raise NotImplementedError

    def step_text(self, prompt: str, action: str, turn: int,
                  store: object) -> tuple[str, float, bool, int]:  # pragma: no cover
        """The same rule on strings, for one episode: ``(observation, reward, done, outcome)``."""
        raise NotImplementedError


class LookupEnv(Env):
    """Answer with a value only a lookup tool knows: a tiny key-value store.

    Each episode has a hidden store: every key ``a`` … (``n_keys`` of them) holds a value of
    ``digits`` digits, drawn uniformly (leading zeros allowed). The prompt ``^c?`` asks for
    the value of key ``c``; the answer is that value, then EOS (``42$``). A guess is right
    with probability 10^−digits; the tool knows every value. Each turn the policy writes up
    to A = max(3, digits + 1) tokens; its turn ends at EOS (a final answer), at ``]`` (a
    tool call) or after A tokens. The environment answers:

    ==================================  ===========================================================
    the policy's turn                   the environment
    ==================================  ===========================================================
    ``digits`` digits then EOS          **final answer**: reward 1 if it is the asked key's value,
                                        else 0; the episode ends (any other text before EOS is a
                                        wrong answer)
    ``[k]`` for a key k                 **tool call**: observation ``:`` + k's value (whatever key
                                        was asked: a wrong key retrieves a wrong value); reward
                                        ``call_reward``
    a turn ending in ``]`` that is      **parse error**: observation ``!``; reward
    not ``[k]``                         −``invalid_penalty``
    A tokens without EOS or ``]``       **bad action**: observation ``!``; reward −``invalid_penalty``
    any turn but an answer on turn K    **budget exhausted**: the episode ends, reward 0, no
                                        observation
    ==================================  ===========================================================

    Token layout: the tokenizer's characters are the digits, the keys, then ``?[]:!``.
    """

    def __init__(self, n_keys: int = 5, digits: int = 2, max_turns: int = 3,
                 call_reward: float = 0.0, invalid_penalty: float = 0.0):
        self.n_keys = check_positive_int(n_keys, "n_keys")
        if n_keys > 26:
            raise ValueError(f"n_keys: expected at most 26 keys (letters), got {n_keys}")
        self.digits = check_positive_int(digits, "digits")
        if digits > 6:
            raise ValueError(f"digits: expected 1 … 6, got {digits}")
        self.max_turns = check_positive_int(max_turns, "max_turns")
        self.call_reward = check_number(call_reward, "call_reward")
        self.invalid_penalty = check_positive(invalid_penalty, "invalid_penalty", allow_zero=True)
        self.keys = "abcdefghijklmnopqrstuvwxyz"[:n_keys]
        self.tokenizer = CharTokenizer("0123456789" + self.keys + "?[]:!")
        st = self.tokenizer.stoi
        self.digit0, self.key0 = st["0"], st[self.keys[0]]
        self.ask_id, self.open_id, self.close_id = st["?"], st["["], st["]"]
        self.reply_id, self.error_id = st[":"], st["!"]
        self.prompt_len = 3
        self.action_len = max(3, digits + 1)
        self.obs_len = 1 + digits
        self.stop_ids = (EOS, self.close_id)

    def __repr__(self) -> str:
        return (f"LookupEnv(n_keys={self.n_keys}, digits={self.digits}, "
                f"max_turns={self.max_turns}, max_len={self.max_len})")

    # -- tasks ------------------------------------------------------------------------------
    def reset(self, n: int, generator: torch.Generator) -> EnvState:
        """n episodes: prompts ``^k?`` (n, 3) and hidden stores; ``targets`` (n, digits + 1)
        are the asked values then EOS, ``store`` (n, n_keys, digits) every value's digit ids."""
        check_positive_int(n, "n")
        check_generator(generator)
        dev = generator.device
        key = torch.randint(self.n_keys, (n,), generator=generator, device=dev)
        store = torch.randint(10, (n, self.n_keys, self.digits), generator=generator,
                              device=dev) + self.digit0
        prompts = torch.stack([torch.full_like(key, BOS), key + self.key0,
                               torch.full_like(key, self.ask_id)], 1)
        targets = torch.cat([store[torch.arange(n, device=dev), key],
                             torch.full((n, 1), EOS, dtype=torch.long, device=dev)], 1)
        return EnvState(prompts, targets, 0, torch.zeros(n, dtype=torch.bool, device=dev),
                        store)

    def state_of(self, asked: str, stores: list[str]) -> EnvState:
        """A state from text, for examples and tests: ``asked`` one key per episode (e.g.
        ``"cca"``), ``stores`` one string per episode of every key's value in order
        (``n_keys · digits`` digits, e.g. ``"38150"``: a = 3, b = 8, …). On the CPU."""
        if not isinstance(asked, str) or not asked:
            raise ValueError(f"asked: expected a non-empty string of keys (one per episode), got "
                             f"{asked!r}")
        if isinstance(stores, str) or not isinstance(stores, (list, tuple)):
            raise ValueError(f"stores: expected a list of strings (one per asked key), got "
                             f"{stores!r}")
        n = len(asked)
        if len(stores) != n:
            raise ValueError(f"stores: expected {n} strings (one per asked key), got {len(stores)}")
        width = self.n_keys * self.digits
        for st in stores:
            if not isinstance(st, str) or len(st) != width or not st.isdigit():
                raise ValueError(f"stores: expected strings of {width} digits, got {st!r}")
        for k in asked:
            if k not in self.keys:
                raise ValueError(f"asked: expected keys among {self.keys!r}, got {k!r}")
        key = torch.tensor([self.keys.index(k) for k in asked], dtype=torch.long)
        store = torch.tensor([[int(c) for c in st] for st in stores], dtype=torch.long)
        store = store.view(n, self.n_keys, self.digits) + self.digit0
        prompts = torch.stack([torch.full_like(key, BOS), key + self.key0,
                               torch.full_like(key, self.ask_id)], 1)
        targets = torch.cat([store[torch.arange(n), key], torch.full((n, 1), EOS, dtype=torch.long)], 1)
        return EnvState(prompts, targets, 0, torch.zeros(n, dtype=torch.bool), store)

    def encode_turns(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Turns as text (EOS written ``$``) → ``(actions (n, A), lengths (n,))`` for
        :meth:`step`, PAD-padded; at most ``action_len`` tokens each. On the CPU."""
        A = self.action_len
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts:
            raise ValueError(f"texts: expected a non-empty list of turns (strings), got {texts!r}")
        rows = []
        for t in texts:
            if not isinstance(t, str):
                raise ValueError(f"texts: expected strings, got {t!r}")
            bad = sorted(set(t) - set(self.tokenizer.chars) - {"$"})
            if bad:
                raise ValueError(f"texts: characters {bad} in {t!r} are not in the vocabulary "
                                 f"{self.tokenizer.chars!r} (or $ for EOS)")
            ids = [EOS if c == "$" else self.tokenizer.encode(c)[0] for c in t]
            if not 1 <= len(ids) <= A:
                raise ValueError(f"texts: expected 1 … {A} tokens per turn, got {t!r}")
            rows.append(ids)
        actions = torch.tensor([r + [PAD] * (A - len(r)) for r in rows], dtype=torch.long)
        return actions, torch.tensor([len(r) for r in rows], dtype=torch.long)

    # -- the parser -------------------------------------------------------------------------
    def parse_calls(self, actions: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Parse every turn as a call ``[k]``: (key index (n,) long, well-formed (n,) bool).
        ``actions`` (n, A) and ``lengths`` (n,) integer tensors on one device. Tensor operations
        only."""
        check_tensor(actions, "actions", ndim=2)
        check_tensor(lengths, "lengths", ndim=1)
        for name, x in (("actions", actions), ("lengths", lengths)):
            if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
                raise ValueError(f"{name}: expected an integer tensor, got dtype {x.dtype}")
        if lengths.shape[0] != actions.shape[0]:
            raise ValueError(f"lengths: expected one length per row of actions "
                             f"({actions.shape[0]}), got shape {tuple(lengths.shape)}")
        if actions.shape[1] == 0:
            raise ValueError(f"actions: expected at least one column (a turn's tokens), got "
                             f"shape {tuple(actions.shape)}")
        check_same_device(actions=actions, lengths=lengths)
        key = actions[:, 1 % actions.shape[1]] - self.key0
        ok = (lengths == 3) & (actions[:, 0] == self.open_id) & (key >= 0) & \
            (key < self.n_keys) & (actions[:, 2 % actions.shape[1]] == self.close_id)
        return torch.where(ok, key, torch.zeros_like(key)), ok

    def step(self, state: EnvState, actions: Tensor, lengths: Tensor) -> EnvStep:
        """One turn of every live episode (see the class docstring); advances ``state``.

        ``actions`` (n, A) long (PAD after the turn's ``lengths`` (n,) tokens; A ≤
        ``action_len`` columns), on the state's device. Raises ValueError on a wrong shape
        or dtype, ids outside the vocabulary, lengths outside [1, A] for a live episode, or a
        spent budget."""
        if not isinstance(state, EnvState):
            raise ValueError(f"state: expected an EnvState (env.reset(n, generator)), got "
                             f"{type(state).__name__}")
        check_tensor(actions, "actions", ndim=2)
        check_tensor(lengths, "lengths", ndim=1)
        n = len(state)
        if actions.shape[0] != n or lengths.shape[0] != n:
            raise ValueError(f"actions, lengths: expected {n} rows (one per episode), got "
                             f"{tuple(actions.shape)} and {tuple(lengths.shape)}")
        if actions.dtype != torch.long or lengths.dtype != torch.long:
            raise ValueError(f"actions, lengths: expected torch.int64 tensors, got "
                             f"{actions.dtype} and {lengths.dtype}")
        if actions.device != state.prompts.device or lengths.device != state.prompts.device:
            raise ValueError(f"actions, lengths: expected them on the state's device "
                             f"{state.prompts.device}, got {actions.device} and {lengths.device}")
        A = actions.shape[1]
        if not 1 <= A <= self.action_len:
            raise ValueError(f"actions: expected 1 … {self.action_len} columns (action_len), "
                             f"got {A}")
        if state.turn >= self.max_turns:
            raise ValueError(f"state: the turn budget of {self.max_turns} turns is spent "
                             f"(turn {state.turn}); reset the environment")
        if _is_meta(actions):
            raise ValueError("actions: the environment needs values; the meta device has none")
        live = ~state.done
        V = self.tokenizer.vocab_size
        if actions.numel() and (int(actions.min()) < 0 or int(actions.max()) >= V):
            raise ValueError(f"actions: expected token ids in [0, {V}), got range "
                             f"[{int(actions.min())}, {int(actions.max())}]")
        if bool(((lengths < 1) | (lengths > A))[live].any()):
            raise ValueError(f"lengths: expected 1 … {A} tokens for every live episode, got "
                             f"range [{int(lengths[live].min())}, {int(lengths[live].max())}]")
        dev = actions.device
        lengths = lengths.clamp(1, A)
        j = torch.arange(A, device=dev)
        mine = torch.where(j[None, :] < lengths[:, None], actions, torch.full_like(actions, PAD))
        last = actions.gather(1, (lengths - 1)[:, None]).squeeze(1)
        is_answer, is_call = last == EOS, last == self.close_id
        D = self.digits + 1
        padded = torch.cat([mine, mine.new_full((n, max(0, D - A)), PAD)], 1)
        right = is_answer & (lengths == D) & (padded[:, :D] == state.targets).all(1)
        key, well_formed = self.parse_calls(mine, lengths)
        final = state.turn == self.max_turns - 1
        outcome = torch.where(is_answer, torch.where(right, RIGHT, WRONG),
                              torch.where(is_call, torch.where(well_formed, TOOL, PARSE_ERROR),
                                          torch.full_like(lengths, BAD_ACTION)))
        if final:
            outcome = torch.where(is_answer, outcome, torch.full_like(outcome, BUDGET))
        outcome = torch.where(live, outcome, torch.full_like(outcome, -1))
        invalid = (outcome == PARSE_ERROR) | (outcome == BAD_ACTION)
        reward = (outcome == RIGHT).float() + self.call_reward * (outcome == TOOL).float() \
            - self.invalid_penalty * invalid.float()
        # observations: ":" + the retrieved value, or "!"
        Ob = self.obs_len
        value = state.store[torch.arange(n, device=dev), key]                    # (n, digits)
        tool_obs = torch.cat([torch.full((n, 1), self.reply_id, dtype=torch.long, device=dev),
                              value], 1)
        err_obs = torch.full((n, Ob), PAD, dtype=torch.long, device=dev)
        err_obs[:, 0] = self.error_id
        obs = torch.where((outcome == TOOL)[:, None], tool_obs,
                          torch.where(invalid[:, None], err_obs, torch.full_like(err_obs, PAD)))
        obs_len = torch.where(outcome == TOOL, Ob, torch.where(invalid, 1, 0))
        state.done = state.done | is_answer | torch.full_like(state.done, final)
        state.turn += 1
        return EnvStep(obs, obs_len, torch.where(live, reward, torch.zeros_like(reward)),
                       state.done.clone(), outcome)

    # -- the same rules on strings (the reference of the tests) ------------------------------
    def step_text(self, prompt: str, action: str, turn: int,
                  store: dict[str, str]) -> tuple[str, float, bool, int]:
        """One turn of one episode on strings: the prompt (``^c?`` or ``c?``), the turn's text
        (EOS written ``$``), its index (0-based, below ``max_turns``) and the store (key →
        value string). Returns ``(observation, reward, done, outcome)``."""
        if not isinstance(store, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in store.items()):
            raise ValueError(f"store: expected a dict of key → value strings, got {store!r}")
        if not isinstance(prompt, str):
            raise ValueError(f"prompt: expected a string such as '^a?', got {prompt!r}")
        asked = prompt.lstrip("^").rstrip("?")
        if asked not in store:
            raise ValueError(f"prompt: expected it to ask a key of the store "
                             f"{sorted(store)}, got {prompt!r}")
        if not isinstance(action, str) or not action:
            raise ValueError(f"action: expected the turn's text (a non-empty string), got "
                             f"{action!r}")
        if isinstance(turn, bool) or not isinstance(turn, int) or not 0 <= turn < self.max_turns:
            raise ValueError(f"turn: expected an integer in [0, {self.max_turns}) (max_turns), "
                             f"got {turn!r}")
        bad = 0.0 - self.invalid_penalty
        if action.endswith("$"):
            ok = action[:-1] == store[asked]
            return "", float(ok), True, RIGHT if ok else WRONG
        if turn == self.max_turns - 1:
            return "", 0.0, True, BUDGET
        if action.endswith("]"):
            if len(action) == 3 and action[0] == "[" and action[1] in store:
                return ":" + store[action[1]], self.call_reward, False, TOOL
            return "!", bad, False, PARSE_ERROR
        return "!", bad, False, BAD_ACTION

    # -- demonstrations for a starting policy ---------------------------------------------------
    def demonstrations(self, n: int, generator: torch.Generator, p_tool: float = 0.3,
                       noise: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
        """n demonstrated episodes for supervised pretraining: ``(tokens, policy_mask,
        obs_mask)``, each (n, :attr:`max_len`), laid out like a rollout.

        With probability ``p_tool`` an episode calls the tool on the asked key (``[c]``, the
        reply ``:42``, then ``42$``), otherwise it answers at once with a guess (random
        digits: the demonstrator does not know the store either). With probability
        ``noise`` the call's key is replaced by a random key and each copied digit by a
        random digit (the reply is the store's answer to the call as written). Pretraining's
        loss uses ``policy_mask``: the tool's reply is not the policy's text. Tensor
        operations only.
        """
        check_positive_int(n, "n")
        check_generator(generator)
        for name, v in (("p_tool", p_tool), ("noise", noise)):
            check_positive(v, name, allow_zero=True)
            if v > 1:
                raise ValueError(f"{name}: expected a probability in [0, 1], got {v}")
        g, dev = generator, generator.device
        st = self.reset(n, g)

        def flip(tok, choices, offset):
            rnd = torch.randint(choices, tok.shape, generator=g, device=dev) + offset
            return torch.where(torch.rand(tok.shape, generator=g, device=dev) < noise, rnd, tok)

        key = flip(st.prompts[:, 1:2], self.n_keys, self.key0)
        call = torch.cat([torch.full_like(key, self.open_id), key, torch.full_like(key, self.close_id)], 1)
        three = torch.full((n,), 3, dtype=torch.long, device=dev)
        step = self.step(EnvState(st.prompts, st.targets, 0, st.done.clone(), st.store), call, three)
        eos = torch.full((n, 1), EOS, dtype=torch.long, device=dev)
        answer = torch.cat([flip(step.obs[:, 1:], 10, self.digit0), eos], 1)
        guess = torch.cat([torch.randint(10, (n, self.digits), generator=g, device=dev)
                           + self.digit0, eos], 1)
        use = (torch.rand(n, generator=g, device=dev) < p_tool).long()
        D = self.digits + 1
        pieces = [(call, 3 * use), (step.obs, step.obs_len * use), (answer, D * use),
                  (guess, D * (1 - use))]
        width = self.max_len - self.prompt_len
        tokens = torch.cat([st.prompts, _pack(pieces, width, right=False)], 1)
        kinds = (1, 0, 1, 1)                                      # the policy's text, or the tool's
        pm = _pack([(torch.full_like(t, k), ln) for (t, ln), k in zip(pieces, kinds)], width, False)
        om = _pack([(torch.full_like(t, 1 - k), ln) for (t, ln), k in zip(pieces, kinds)], width, False)
        z = torch.zeros(n, self.prompt_len, dtype=torch.long, device=dev)
        return tokens, torch.cat([z, pm], 1), torch.cat([z, om], 1)
