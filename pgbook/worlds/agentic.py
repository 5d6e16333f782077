"""Multi-turn worlds: an enumerable tool-use tree, and batched multi-turn rollouts of a GPT.

An agent's trajectory interleaves the policy's tokens with the environment's:

    τ = (x, a_1, o_1, a_2, o_2, …, a_K),      p_θ(τ) = ρ(x) Π_k π_θ(a_k | h_k) · P(o_k | h_k, a_k),

where h_k is everything before turn k's action. The environment's factors P(o_k | ·) carry no
θ, so they drop out of ∇log p_θ(τ): only the tokens the policy sampled belong to the
estimator, and the **policy-token mask** (1 on sampled tokens, 0 on observation/tool tokens
and padding) says which ones they are. Factor of J(θ): trajectory.

This module has two worlds:

* :class:`LookupWorld`, small enough to list every trajectory (:meth:`LookupWorld.enumerate`,
  a finite tree of policy tokens and environment transitions): a hidden value s that the
  policy can only learn by calling a lookup tool. The exact tools of
  :mod:`pgbook.exact.agentic` compute J, ∇J and the expected gradient of any masked or
  unmasked estimator on it. A policy for it is :class:`MarkovMLPPolicy` (chapter 09's
  shared-weight :class:`pgbook.worlds.seqlm.MLPPolicy`, with a fast table of log-probs) on
  :attr:`LookupWorld.space`: one network for every position, the tool's positions included,
  which is how an unmasked loss teaches it to write the tool's replies.
* :func:`rollout`: batched multi-turn sampling of a :class:`pgbook.worlds.gpt.GPT` in a
  :class:`pgbook.worlds.envs.Env` (the lookup tool of :class:`~pgbook.worlds.envs.LookupEnv`),
  returning tokens, sampled log-probs, the policy-token mask, the observation mask and the
  turn of every token (:class:`Rollout`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._validate import (
    _is_meta,
    check_flag,
    check_generator,
    check_index,
    check_mask,
    check_nonnegative_int,
    check_number,
    check_positive,
    check_positive_int,
    check_probs,
    check_same_device,
    check_shape,
    check_tensor,
    work_dtype,
)
from .envs import Env, EnvState
from .gpt import PAD
from .seqlm import MLPPolicy

__all__ = [
    "OUTCOME_NAMES",
    "Episodes",
    "LookupWorld",
    "MarkovMLPPolicy",
    "Rollout",
    "TurnSpace",
    "rollout",
]

#: what happened in a turn of :class:`LookupWorld` (``Episodes.outcomes``); −1: no such turn.
#: The first three codes are those of :data:`pgbook.worlds.envs.OUTCOMES`.
OUTCOME_NAMES = ("right answer", "wrong answer", "tool call", "bad action")
RIGHT, WRONG, CALL, BAD = range(4)


# -- the enumerable world ---------------------------------------------------------------------
@dataclass(frozen=True)
class Episodes:
    """Every trajectory of a :class:`LookupWorld` (or any batch of them), one row each.

    ``x`` (N,) the visible context; ``s`` (N,) the hidden value (the environment's state);
    ``tokens`` (N, T) policy and environment tokens, turn k's action at column k·(1 + O)
    followed by its O observation tokens (padding after the end); ``policy_mask`` (N, T) 1 on
    the tokens the policy sampled; ``obs_mask`` (N, T) 1 on the environment's tokens;
    ``turn_ids`` (N, T) the turn of every token (−1 on padding); ``env_logp`` (N,) the log of
    every θ-free factor, log ρ(x) + log P(s|x) + Σ_k log P(o_k | h_k, a_k);
    ``turn_rewards`` (N, K); ``anchors`` (N, K) the observation each turn starts from (0: the
    task's first observation, 1 + v: the tool replied v, 1 + S: an error), −1 for turns not
    taken; ``outcomes`` (N, K) codes of :data:`OUTCOME_NAMES` (−1: no such turn).
    """

    x: Tensor
    s: Tensor
    tokens: Tensor
    policy_mask: Tensor
    obs_mask: Tensor
    turn_ids: Tensor
    env_logp: Tensor
    turn_rewards: Tensor
    anchors: Tensor
    outcomes: Tensor

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def rewards(self) -> Tensor:
        """R(τ) = Σ_k r_k, (N,)."""
        return self.turn_rewards.sum(-1)

    @property
    def n_turns(self) -> Tensor:
        """Turns taken, (N,)."""
        return (self.outcomes >= 0).sum(-1)

    @property
    def groups(self) -> Tensor:
        """A task id per trajectory, (N,): trajectories of one (x, s) share it (a GRPO group
        shares its task: the visible context and the hidden state)."""
        return self.x * (int(self.s.max()) + 1 if self.s.numel() else 1) + self.s

    def index(self, idx: Tensor) -> Episodes:
        """The rows ``idx``: a 1-D integer tensor (B,) of ids in [0, N) (fields get shape
        (B, ...)), or a 1-D bool tensor (N,) selecting rows. A 2-D index is refused: an
        :class:`Episodes` holds one row per episode."""
        check_tensor(idx, "idx", ndim=1)
        if idx.dtype == torch.bool:
            if idx.shape[0] != len(self):
                raise ValueError(f"idx: expected a bool tensor of shape ({len(self)},) (one "
                                 f"entry per episode), got shape {tuple(idx.shape)}")
        else:
            check_index(idx, "idx", len(self))
        check_same_device(x=self.x, idx=idx)
        return Episodes(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


class TurnSpace:
    """The (context, token sequence) space of a :class:`LookupWorld`, in the form
    :class:`pgbook.worlds.seqlm.MLPPolicy` reads: ``X`` contexts, ``V`` tokens, ``T``
    positions, ``token_names``; :meth:`check` validates a batch."""

    def __init__(self, X: int, token_names: tuple, T: int, pad_id: int):
        names = tuple(token_names) if isinstance(token_names, (tuple, list)) else None
        if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise ValueError(f"token_names: expected a non-empty tuple of distinct strings, got "
                             f"{token_names!r}")
        self.X = check_positive_int(X, "X")
        self.token_names, self.T = names, check_positive_int(T, "T")
        self.V = len(self.token_names)
        check_nonnegative_int(pad_id, "pad_id")
        if pad_id >= self.V:
            raise ValueError(f"pad_id: expected a token id in [0, {self.V}), got {pad_id}")
        self.pad_id = pad_id

    def check(self, x: Tensor, tokens: Tensor, mask: Tensor | None = None) -> None:
        """Shapes and ranges of a batch: x (*B,) ids in [0, X), tokens (*B, T) ids in [0, V),
        mask (*B, T) 0/1 (as :meth:`pgbook.worlds.seqlm.SeqSpace.check`)."""
        check_index(x, "x", self.X)
        check_index(tokens, "tokens", self.V)
        if tuple(tokens.shape) != (*x.shape, self.T):
            raise ValueError(f"tokens: expected shape {(*x.shape, self.T)}, got {tuple(tokens.shape)}")
        check_same_device(x=x, tokens=tokens)
        if mask is not None:
            check_shape(mask, "mask", tuple(tokens.shape))
            check_same_device(tokens=tokens, mask=mask)
            check_mask(mask, "mask")

    def __repr__(self) -> str:
        return f"TurnSpace(X={self.X}, V={self.V} ({''.join(self.token_names)}), T={self.T})"


class MarkovMLPPolicy(MLPPolicy):
    """:class:`pgbook.worlds.seqlm.MLPPolicy` (the same θ, the same numbers) with a fast
    :meth:`token_logprobs` for long enumerations.

    The MLP's next-token distribution depends only on (x, previous token, position), so the
    log-probabilities of every position are read from one table of X · (V + 1) · T
    distributions computed once, instead of one pass per trajectory:
    log π_θ(y_t | h_t) = table[x, y_{t−1}, t, y_t] (y_0 = BOS). Equal to
    ``MLPPolicy.token_logprobs`` up to float round-off; differentiable.
    """

    def table(self, theta: Tensor) -> Tensor:
        """log π_θ(· | x, prev, t) for every context, previous token (BOS = V last) and
        position: (X, V + 1, T, V)."""
        self._check_theta(theta)
        p = self._blocks(theta)
        h = torch.tanh(p["E_ctx"][:, None, None, :] + p["E_prev"][None, :, None, :]
                       + p["E_pos"][None, None, :, :])                     # (X, V+1, T, d)
        z = h @ p["W"] + p["b"]
        return torch.log_softmax(z.to(work_dtype(z.dtype)), -1)

    def token_logprobs(self, theta: Tensor, x: Tensor, tokens: Tensor) -> Tensor:
        """log π_θ(y_t | x, y_<t) at every position, (*B, T) (float32 for low-precision θ)."""
        self._check(theta, x, tokens)
        tab = self.table(theta)
        V, T = self.space.V, self.space.T
        prev = torch.cat([torch.full_like(tokens[..., :1], V), tokens[..., :-1]], -1)
        t = torch.arange(T, device=tokens.device)
        flat = ((x.unsqueeze(-1) * (V + 1) + prev) * T + t) * V + tokens
        return tab.reshape(-1)[flat]

    def __repr__(self) -> str:
        return f"MarkovMLPPolicy(hidden={self.hidden}, P={self.n_params})"


class LookupWorld:
    """A tool-use world small enough to enumerate: find a hidden value with a lookup tool.

    Each task is a visible context x ~ ρ(x) and a hidden value s ~ P(s | x) among S values.
    In each of at most K turns (the budget) the policy emits **one token**, from the whole
    vocabulary V:

    ========================  =================================================================
    the policy emits          the environment
    ========================  =================================================================
    ``?`` (call the tool)     replies with O tokens: O − 1 ``:`` then the value, ``A`` … (S of
                              them; no ``:`` token exists when O = 1); the reply is s with
                              probability 1 − ``noise``, else a value drawn uniformly (an
                              unreliable tool); reward ``call_reward``
    ``a`` … (an answer)       ends the episode: reward 1 if it names s, else 0 (no observation)
    an environment token      a bad action (the policy wrote tool output itself): O ``!``
    (``:``, ``A`` …, ``!``)   tokens, reward −``invalid_penalty``
    ========================  =================================================================

    After K turns without an answer the episode ends (budget exhausted, reward 0 for the
    outcome). Token ids: ``?`` = 0, answers 1 … S, then ``:`` (if O > 1), the S replies and
    ``!`` last (:attr:`reply_ids`, :attr:`env_ids`); padding after the end reuses ``!`` (it is
    masked everywhere).

    p_θ(τ) = ρ(x) P(s|x) Π_k π_θ(a_k | h_k) P(o_k | s, a_k): the first two factors and every
    P(o_k | ·) are the environment's (θ-free, :attr:`Episodes.env_logp`), the π_θ factors the
    policy's. With the defaults (S = 3 values, K = 3 turns, O = 1 reply token, one context
    with s uniform, a tool that errs 10 % of the time) there are 2193 trajectories.

    Args:
        n_values: S (2 … 8).
        max_turns: K, the turn budget.
        obs_len: O, tokens per observation (≥ 1).
        noise: probability that the tool replies a uniformly drawn value instead of s.
        value_probs: (X, S) P(s | x), one row per context (sets device and dtype); default
            one context with s uniform, float64 on the CPU.
        rho: (X,) ρ(x) (default uniform).
        invalid_penalty: a per-turn reward (≥ 0) subtracted for a bad action.
        call_reward: a per-turn reward added for a tool call (negative: a cost).
    """

    def __init__(self, n_values: int = 3, max_turns: int = 3, obs_len: int = 1,
                 noise: float = 0.1, value_probs: Tensor | None = None,
                 rho: Tensor | None = None, invalid_penalty: float = 0.1,
                 call_reward: float = 0.0):
        S = check_positive_int(n_values, "n_values")
        if not 2 <= S <= 8:
            raise ValueError(f"n_values: expected an integer in [2, 8], got {S}")
        self.S = S
        self.K = check_positive_int(max_turns, "max_turns")
        self.O = check_positive_int(obs_len, "obs_len")
        self.noise = check_positive(noise, "noise", allow_zero=True)
        if self.noise > 1:
            raise ValueError(f"noise: expected a probability in [0, 1], got {noise}")
        self.invalid_penalty = check_positive(invalid_penalty, "invalid_penalty", allow_zero=True)
        self.call_reward = check_number(call_reward, "call_reward")
        if value_probs is None:
            value_probs = torch.full((1, S), 1.0 / S, dtype=torch.float64)
        check_tensor(value_probs, "value_probs", ndim=2, floating=True)
        if value_probs.shape[1] != S:
            raise ValueError(f"value_probs: expected shape (X, {S}) (one distribution over the "
                             f"{S} values per context), got {tuple(value_probs.shape)}")
        check_probs(value_probs, "value_probs")
        X = value_probs.shape[0]
        if rho is None:
            rho = torch.full((X,), 1.0 / X, dtype=value_probs.dtype, device=value_probs.device)
        check_tensor(rho, "rho", ndim=1, floating=True)
        if rho.shape != (X,):
            raise ValueError(f"rho: expected shape ({X},) (one probability per row of "
                             f"value_probs), got {tuple(rho.shape)}")
        check_probs(rho, "rho")
        check_same_device(value_probs=value_probs, rho=rho)
        self.value_probs, self.rho = value_probs, rho.to(value_probs.dtype)
        self.X = X
        letters = "abcdefgh"[:S]
        sep = (":",) if self.O > 1 else ()                 # the reply's filler, when O > 1
        names = ("?", *letters, *sep, *letters.upper(), "!")
        self.CALL, self.ERR = 0, len(names) - 1
        self.SEP = S + 1 if sep else None
        self.answer_ids = tuple(range(1, S + 1))
        self.reply_ids = tuple(range(S + 1 + len(sep), 2 * S + 1 + len(sep)))
        self.env_ids = (*((self.SEP,) if sep else ()), *self.reply_ids, self.ERR)
        self.T = self.K * (1 + self.O)
        self.space = TurnSpace(X, names, self.T, pad_id=self.ERR)
        self._episodes: Episodes | None = None

    @property
    def V(self) -> int:
        return self.space.V

    @property
    def token_names(self) -> tuple:
        return self.space.token_names

    @property
    def device(self) -> torch.device:
        return self.value_probs.device

    @property
    def dtype(self) -> torch.dtype:
        return self.value_probs.dtype

    def __repr__(self) -> str:
        return (f"LookupWorld(S={self.S}, K={self.K}, O={self.O}, X={self.X}, noise={self.noise:g}, "
                f"tokens {''.join(self.token_names)}, trajectories="
                f"{'?' if self.device.type == 'meta' else len(self.enumerate())})")

    def action_positions(self, device: torch.device | str | None = None) -> Tensor:
        """Columns of the K actions, (K,): k·(1 + O), on ``device`` (default: the world's)."""
        if device is None:
            device = self.device
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device: expected a torch device such as 'cpu', got {device!r}") \
                from None
        return torch.arange(self.K, device=device) * (1 + self.O)

    def decode(self, ep: Episodes) -> list[str]:
        """Trajectories as text: one group per turn, the policy's token then the
        environment's reply in brackets, e.g. ``? [B] b``; padding dropped."""
        self._check_episodes(ep)
        names = self.token_names
        out = []
        for tok, pm, om in zip(ep.tokens.cpu().tolist(), ep.policy_mask.cpu().tolist(),
                               ep.obs_mask.cpu().tolist()):
            parts = []
            for k in range(self.K):
                c = k * (1 + self.O)
                if pm[c]:
                    parts.append(names[tok[c]])
                obs = "".join(names[t] for t, m in zip(tok[c + 1:c + 1 + self.O],
                                                       om[c + 1:c + 1 + self.O]) if m)
                if obs:
                    parts.append(f"[{obs}]")
            out.append(" ".join(parts))
        return out

    def _check_episodes(self, ep: Episodes) -> None:
        """``ep``: Episodes of this world's shape (T tokens, ids in [0, V))."""
        if not isinstance(ep, Episodes):
            raise ValueError(f"ep: expected pgbook.worlds.agentic.Episodes, got {type(ep).__name__}")
        if ep.tokens.dim() != 2 or ep.tokens.shape[1] != self.T:
            raise ValueError(f"ep: expected episodes of this world (T = {self.T} tokens), got "
                             f"tokens of shape {tuple(ep.tokens.shape)}")
        check_index(ep.tokens, "ep.tokens", self.V)

    # -- the tree ---------------------------------------------------------------------------
    def enumerate(self) -> Episodes:
        """Every trajectory, with the θ-free log-factors and the per-turn rewards.

        Built turn by turn on tensors: each live partial trajectory branches over the V
        tokens the policy may emit, a tool call over the S replies (dropping those of
        probability 0). A loop over the K turns only. Cached.
        """
        if self._episodes is not None:
            return self._episodes
        if self.device.type == "meta":
            raise ValueError("value_probs: expected a tensor with values to enumerate the "
                             "world's trajectories (which depend on them), got one on the meta "
                             "device (a world on meta has shapes only)")
        dev, dt = self.device, self.dtype
        S, K, n_obs, V, T = self.S, self.K, self.O, self.V, self.T
        X = self.X
        # roots: every (x, s) with log ρ(x) + log P(s|x)
        x0 = torch.arange(X, device=dev).repeat_interleave(S)
        s0 = torch.arange(S, device=dev).repeat(X)
        lp0 = (self.rho.log()[x0] + self.value_probs.log()[x0, s0])
        keep = torch.isfinite(lp0)
        live = dict(x=x0[keep], s=s0[keep], env_logp=lp0[keep],
                    tokens=torch.full((int(keep.sum()), T), self.ERR, dtype=torch.long, device=dev),
                    anchor=torch.zeros(int(keep.sum()), dtype=torch.long, device=dev),
                    turn_rewards=torch.zeros(int(keep.sum()), K, dtype=dt, device=dev),
                    anchors=torch.full((int(keep.sum()), K), -1, dtype=torch.long, device=dev),
                    outcomes=torch.full((int(keep.sum()), K), -1, dtype=torch.long, device=dev))
        done = []
        is_answer = torch.zeros(V, dtype=torch.bool, device=dev)
        is_answer[list(self.answer_ids)] = True
        reply_p = torch.full((S, S), self.noise / S, dtype=dt, device=dev) + \
            (1 - self.noise) * torch.eye(S, dtype=dt, device=dev)          # P(reply v | s)
        for k in range(K):
            c = k * (1 + n_obs)
            n = live["x"].shape[0]
            # branch over the V tokens the policy may emit
            rows = {key: val.repeat_interleave(V, 0) for key, val in live.items()}
            a = torch.arange(V, device=dev).repeat(n)
            rows["tokens"][:, c] = a
            rows["anchors"][:, k] = rows["anchor"]
            ans = is_answer[a]
            call = a == self.CALL
            bad = ~ans & ~call
            v = a - 1                                                        # the answered value
            right = ans & (v == rows["s"])
            rows["outcomes"][:, k] = torch.where(ans, torch.where(right, RIGHT, WRONG),
                                                 torch.where(call, CALL, BAD))
            rows["turn_rewards"][:, k] = right.to(dt) - self.invalid_penalty * bad.to(dt) \
                + self.call_reward * call.to(dt)
            done.append({key: val[ans] for key, val in rows.items()})
            # bad actions: the error observation
            err = {key: val[bad] for key, val in rows.items()}
            err["tokens"][:, c + 1:c + 1 + n_obs] = self.ERR
            err["anchor"] = torch.full_like(err["anchor"], 1 + S)
            # tool calls: branch over the S replies
            cl = {key: val[call].repeat_interleave(S, 0) for key, val in rows.items()}
            rv = torch.arange(S, device=dev).repeat(int(call.sum()))
            p = reply_p[cl["s"], rv]
            cl["env_logp"] = cl["env_logp"] + p.log()
            if n_obs > 1:
                cl["tokens"][:, c + 1:c + n_obs] = self.SEP
            cl["tokens"][:, c + n_obs] = self.reply_ids[0] + rv
            cl["anchor"] = 1 + rv
            cl = {key: val[p > 0] for key, val in cl.items()}
            live = {key: torch.cat([err[key], cl[key]]) for key in rows}
        done.append(live)                                                    # budget exhausted
        ep = {key: torch.cat([d[key] for d in done]) for key in done[0]}
        tok = ep["tokens"]
        n_turns = (ep["outcomes"] >= 0).sum(-1)
        col = torch.arange(T, device=dev)
        turn_of_col = col // (1 + n_obs)
        in_ep = turn_of_col[None, :] < n_turns[:, None]
        is_action = (col % (1 + n_obs) == 0)[None, :] & in_ep
        ended_by_answer = torch.gather(ep["outcomes"], 1, (n_turns - 1)[:, None]).squeeze(1) <= WRONG
        last_obs = (turn_of_col[None, :] == (n_turns - 1)[:, None]) & ended_by_answer[:, None]
        is_obs = in_ep & ~is_action & ~last_obs
        self._episodes = Episodes(
            x=ep["x"], s=ep["s"], tokens=tok, policy_mask=is_action.to(dt), obs_mask=is_obs.to(dt),
            turn_ids=torch.where(is_action | is_obs, turn_of_col[None, :].expand_as(tok),
                                 torch.full_like(tok, -1)),
            env_logp=ep["env_logp"], turn_rewards=ep["turn_rewards"], anchors=ep["anchors"],
            outcomes=ep["outcomes"])
        return self._episodes

    def demonstrations(self, p_tool: float = 0.3) -> Tensor:
        """q(τ) of a demonstrator, (N,) over :meth:`enumerate`: on its first turn it calls
        the tool with probability ``p_tool`` and otherwise guesses a value uniformly; after
        a reply it answers the reply's value; after an error it guesses. It never writes an
        environment token. Fitting a policy to q on the policy's tokens
        (:func:`pgbook.train.agentic.fit_demonstrations`) gives a starting policy that
        sometimes uses the tool, like :func:`pgbook.train.agentic.pretrain_agent` for the GPT."""
        p = check_positive(p_tool, "p_tool", allow_zero=True)
        if p > 1:
            raise ValueError(f"p_tool: expected a probability in [0, 1], got {p_tool}")
        return _lookup_demo_logq(self, p).exp()

    def sample(self, probs: Tensor, n: int, generator: torch.Generator,
               group_size: int = 1) -> Tensor:
        """Indices into :meth:`enumerate` of sampled trajectories, (n · G,).

        ``probs`` (N,): p_θ(τ) over the enumeration (e.g.
        :func:`pgbook.exact.agentic.episode_probs`). With ``group_size`` G > 1, n tasks
        (x, s) are drawn from ρ(x) P(s|x) and G trajectories from p_θ(τ | x, s) for each,
        groups contiguous (a GRPO batch: one task per group).
        """
        check_positive_int(n, "n")
        G = check_positive_int(group_size, "group_size")
        check_tensor(probs, "probs", ndim=1, floating=True)
        if _is_meta(probs):
            raise ValueError("probs: sampling needs values; the meta device has none")
        check_generator(generator, probs.device)
        ep = self.enumerate()
        if probs.shape[0] != len(ep):
            raise ValueError(f"probs: expected shape ({len(ep)},) (one per trajectory), got "
                             f"{tuple(probs.shape)}")
        # a distribution over the trajectories, to 1e-3 (the draw renormalises: rounding is fine)
        check_probs(probs, "probs", atol=max(1e-3, len(ep) * torch.finfo(probs.dtype).eps / 2))
        p = probs.detach().to(work_dtype(probs.dtype))
        if G == 1:
            return torch.multinomial(p, n, replacement=True, generator=generator)
        gid = ep.groups.to(p.device)
        n_groups = int(gid.max()) + 1
        task_p = torch.zeros(n_groups, dtype=p.dtype, device=p.device).index_add_(0, gid, p)
        tasks = torch.multinomial(task_p, n, replacement=True, generator=generator)   # (n,)
        within = torch.where(gid[None, :] == tasks[:, None], p[None, :], p.new_zeros(()))
        return torch.multinomial(within, G, replacement=True, generator=generator).reshape(-1)


# -- batched multi-turn rollouts of a GPT ---------------------------------------------------------
@dataclass(frozen=True)
class Rollout:
    """B multi-turn episodes of a GPT in an :class:`~pgbook.worlds.envs.Env`, each (B, W)
    with W = the environment's ``max_len`` unless said otherwise.

    ``tokens`` long: the prompt (columns 0 … P − 1, left-padded), then each row's turns packed
    one after the other, PAD after the end; ``logprobs`` float: log π(tokens[b, t] |
    tokens[b, :t]) under the sampling distribution on the policy's tokens, 0 elsewhere;
    ``policy_mask`` float 0/1: the tokens the policy sampled (the only ones in log p_θ(τ));
    ``obs_mask`` float 0/1: the environment's tokens; ``turn_ids`` long: the turn of every
    policy or observation token, −1 on the prompt and padding; ``turn_rewards`` (B, K);
    ``outcomes`` (B, K) codes of :data:`pgbook.worlds.envs.OUTCOMES` (−1: turn not taken);
    ``anchors`` (B, K) long: an id of the observation each turn starts from (0: the prompt,
    else a hash of the previous observation's tokens), for anchor-state grouping;
    ``targets`` (B, N) the tasks' answers.
    """

    tokens: Tensor
    logprobs: Tensor
    policy_mask: Tensor
    obs_mask: Tensor
    turn_ids: Tensor
    turn_rewards: Tensor
    outcomes: Tensor
    anchors: Tensor
    targets: Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def rewards(self) -> Tensor:
        """R(τ) = Σ_k r_k, (B,)."""
        return self.turn_rewards.sum(-1)

    @property
    def n_turns(self) -> Tensor:
        return (self.outcomes >= 0).sum(-1)


def _obs_hash(obs: Tensor, obs_len: Tensor, vocab: int) -> Tensor:
    """An integer id per observation (its tokens in base V + 1, offset by its length): equal
    observations get equal ids, different ones different ids (for the short observations
    here, the number fits in int64)."""
    width = obs.shape[1]
    j = torch.arange(width, device=obs.device)
    live = j[None, :] < obs_len[:, None]
    base = torch.pow(torch.full((width,), vocab + 1, dtype=torch.long, device=obs.device),
                     torch.arange(width - 1, -1, -1, device=obs.device))
    return 1 + obs_len + (width + 1) * (torch.where(live, obs + 1, torch.zeros_like(obs)) * base).sum(1)


@torch.no_grad()
def rollout(model: torch.nn.Module, env: Env, state: EnvState, generator: torch.Generator,
            temperature: float = 1.0, tool: bool = True) -> Rollout:
    """Sample one multi-turn episode per row of ``state`` (an :class:`~pgbook.worlds.envs.EnvState`,
    e.g. ``env.reset(n, g).repeat_interleave(G)`` for GRPO groups), batched.

    Each turn: every live row samples tokens from π_θ (temperature τ) until it writes one
    of ``env.stop_ids`` or ``env.action_len`` tokens; then ``env.step`` answers all rows at
    once and each row's observation is written after its turn. The loops run over the K
    turns and the generated positions; each step is one forward pass of the model over the
    batch (no loop over rows). ``tool=False`` runs the same policy with the environment's
    observations withheld (each turn is followed by nothing; the environment still judges
    the turn), to measure success without the tool's help. Deterministic given the
    generator. ``state`` is consumed (stepped to its end). Factor of J(θ): trajectory.
    """
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module (a pgbook.worlds.gpt.GPT), got "
                         f"{type(model).__name__}")
    if not isinstance(env, Env):
        raise ValueError(f"env: expected a pgbook.worlds.envs.Env (e.g. LookupEnv), got "
                         f"{type(env).__name__}")
    if not isinstance(state, EnvState):
        raise ValueError(f"state: expected an EnvState (env.reset(n, generator)), got "
                         f"{type(state).__name__}")
    if _is_meta(state.prompts):
        raise ValueError("state: sampling needs values; the meta device has none")
    check_generator(generator, state.prompts.device)
    tau = check_positive(temperature, "temperature", allow_zero=True)
    check_flag(tool, "tool")
    block = getattr(getattr(model, "config", None), "block_size", None)
    W = env.max_len
    if block is not None and block < W:
        raise ValueError(f"model: its block_size {block} is shorter than a rollout "
                         f"(env.max_len = {W})")
    dev = state.prompts.device
    B, P = state.prompts.shape
    K, A = env.max_turns, env.action_len
    tokens = torch.full((B, W + 1), PAD, dtype=torch.long, device=dev)   # column W: a dump
    tokens[:, :P] = state.prompts
    lp_dtype = None
    logp = torch.zeros(B, W + 1, device=dev)
    pmask = torch.zeros(B, W + 1, device=dev)
    omask = torch.zeros(B, W + 1, device=dev)
    turn_ids = torch.full((B, W + 1), -1, dtype=torch.long, device=dev)
    turn_rewards = torch.zeros(B, K, device=dev)
    outcomes = torch.full((B, K), -1, dtype=torch.long, device=dev)
    anchors = torch.zeros(B, K, dtype=torch.long, device=dev)
    pos = torch.full((B,), P, dtype=torch.long, device=dev)
    rows = torch.arange(B, device=dev)
    stops = torch.tensor(env.stop_ids, device=dev)
    anchor = torch.zeros(B, dtype=torch.long, device=dev)
    for k in range(K):
        live = ~state.done
        anchors[:, k] = torch.where(live, anchor, torch.zeros_like(anchor))
        start = pos.clone()
        writing = live.clone()
        for _ in range(A):
            if not bool(writing.any()):
                break
            L = int(pos[writing].max())
            z = model(tokens[:, :L])
            z = z[rows, (pos - 1).clamp(max=L - 1)]
            z = z.to(torch.promote_types(z.dtype, torch.float32))
            if lp_dtype is None:
                lp_dtype = z.dtype
                logp = logp.to(lp_dtype)
            lsm = torch.log_softmax(z if tau in (0.0, 1.0) else z / tau, -1)
            y = lsm.argmax(-1) if tau == 0.0 else \
                torch.multinomial(lsm.exp(), 1, generator=generator).squeeze(-1)
            at = torch.where(writing, pos, torch.full_like(pos, W))
            tokens[rows, at] = torch.where(writing, y, torch.full_like(y, PAD))
            logp[rows, at] = torch.where(writing, lsm.gather(-1, y[:, None]).squeeze(-1),
                                         lsm.new_zeros(()))
            pmask[rows, at] = writing.to(pmask.dtype)
            turn_ids[rows, at] = torch.where(writing, torch.full_like(y, k), torch.full_like(y, -1))
            pos = pos + writing.long()
            writing = writing & ~torch.isin(y, stops)
        n_act = (pos - start).clamp(min=1)
        j = torch.arange(A, device=dev)
        cols = (start[:, None] + j).clamp(max=W)
        acts = torch.where(j[None, :] < (pos - start)[:, None], tokens.gather(1, cols),
                           torch.full_like(cols, PAD))
        step = env.step(state, acts, n_act)
        turn_rewards[:, k] = step.reward.to(turn_rewards.dtype)
        outcomes[:, k] = step.outcome
        width = step.obs.shape[1]
        show = step.obs_len if tool else torch.zeros_like(step.obs_len)
        jo = torch.arange(width, device=dev)
        ocols = torch.where(jo[None, :] < show[:, None], pos[:, None] + jo, W).clamp(max=W)
        tokens.scatter_(1, ocols, torch.where(jo[None, :] < show[:, None], step.obs,
                                              torch.full_like(step.obs, PAD)))
        omask.scatter_(1, ocols, (jo[None, :] < show[:, None]).to(omask.dtype))
        turn_ids.scatter_(1, ocols, torch.where(jo[None, :] < show[:, None],
                                                torch.full_like(step.obs, k),
                                                torch.full_like(step.obs, -1)))
        anchor = _obs_hash(torch.where(jo[None, :] < show[:, None], step.obs,
                                       torch.full_like(step.obs, PAD)), show, env.tokenizer.vocab_size)
        pos = pos + show
        if bool(state.done.all()):
            break
    tokens[:, W] = PAD
    turn_ids[:, W] = -1
    return Rollout(tokens[:, :W], logp[:, :W] * pmask[:, :W], pmask[:, :W].to(logp.dtype),
                   omask[:, :W].to(logp.dtype), turn_ids[:, :W], turn_rewards.to(logp.dtype),
                   outcomes, anchors, state.targets)


def _lookup_demo_logq(world: LookupWorld, p_tool: float) -> Tensor:
    """log q(τ) of a demonstrator on :class:`LookupWorld` (see :meth:`LookupWorld.demonstrations`)."""
    S, K, V = world.S, world.K, world.V
    dt, dev = world.dtype, world.device
    tab = torch.zeros(K, S + 2, V, dtype=dt, device=dev)
    ans = list(world.answer_ids)
    tab[:, 0, world.CALL] = p_tool
    tab[:, 0, ans] = (1 - p_tool) / S
    for v in range(S):
        tab[:, 1 + v, ans[v]] = 1.0
    tab[:, S + 1, ans] = 1.0 / S
    ep = world.enumerate()
    k = torch.arange(K, device=dev)
    a = ep.tokens[:, world.action_positions()]
    taken = ep.anchors >= 0
    p = tab[k[None, :].expand_as(a), ep.anchors.clamp_min(0), a]
    lp = torch.where(taken, p.log(), torch.zeros_like(p))
    return ep.env_logp + lp.sum(-1)
