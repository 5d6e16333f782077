"""The library's contract: bad input never passes silently.

Every public callable (every name in a module's ``__all__``, and the public methods of the
classes there) has a row in :data:`SPECS`: a call that works, and bad variants of it, each
with the error it must raise (ValueError; TypeError only for a record missing a field) and a
fragment of the message that names the argument. The tests

* fail when a public callable has no bad-input cases (a new function needs its row);
* run every good call: it works and mutates none of its inputs;
* run every bad call: it raises the named error, never a silent NaN or a raw torch error;
* check that every public function and method has type hints;
* (hypothesis) finite inputs give finite outputs, and masked positions may hold NaN/inf
  without reaching the value or the gradient.

Bad variants come from a few generators (``floats``: a Python list, NaN, inf, an integer
dtype; ``mask``: 0.5, NaN, 2, −1, all zero; ``ids``: −1 and out of range; ``count``: 0, −1,
1.5, True; ``option``: an unknown name; ``device``: one tensor on ``meta`` while the others
are on the CPU, the cheap stand-in for a device mismatch), plus hand-written ones. The
numerics of the same specs (gradcheck, meta, bfloat16) are in test_contract_numerics.py.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import pgbook
import pgbook as pg
from pgbook import _validate as V
from pgbook import aggregation as AG
from pgbook import boundary as BD
from pgbook import exercises as EX
from pgbook import kl as KL
from pgbook import methods as ME
from pgbook import plots as PL
from pgbook import registry as RG
from pgbook import widgets as WI
from pgbook.exact import agentic as EA
from pgbook.exact import bandits as EB
from pgbook.exact import critic as EC
from pgbook.exact import groups as EG
from pgbook.exact import offpolicy as EO
from pgbook.exact import proximal as EP
from pgbook.exact import reward_side as ER
from pgbook.exact import seqlm as ES
from pgbook.exact import stats as EST
from pgbook.exact import trajectory as ETJ
from pgbook.reward import advantages as RA
from pgbook.reward import baselines as RB
from pgbook.reward import critic as RC
from pgbook.reward import shaping as RS
from pgbook.reward import teacher as RTE
from pgbook.reward import turns as RT
from pgbook.train import actor_critic as TAC
from pgbook.train import agentic as TAG
from pgbook.train import distill as TDI
from pgbook.train import distributed as TDD
from pgbook.train import grpo as TG
from pgbook.train import ppo as TP
from pgbook.train import ppo_llm as TPL
from pgbook.train import reinforce as TR
from pgbook.train import seqlm as TS
from pgbook.trajectory import agentic as TJA
from pgbook.trajectory import corrections as TC
from pgbook.trajectory import distill as TD
from pgbook.trajectory import importance as TI
from pgbook.trajectory import losses as TL
from pgbook.trajectory import selection as TSEL
from pgbook.trajectory import tokens as TT
from pgbook.worlds import agentic as WAG
from pgbook.worlds import answers as WA
from pgbook.worlds import bandits as WB
from pgbook.worlds import envs as WE
from pgbook.worlds import gpt as WG
from pgbook.worlds import seqlm as WS
from pgbook.worlds import tasks as WT
from pgbook.worlds import teachers as WTE

F64 = torch.float64
NAN, INF = float("nan"), float("inf")


# =============================================================================================
# The table's machinery
# =============================================================================================
@dataclass
class Case:
    what: str
    call: Callable[[], object]
    match: str
    exc: type = ValueError


def _with(x: torch.Tensor, value: float, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A copy of ``x`` (in ``dtype``) whose first entry is ``value``."""
    y = x.detach().to(dtype or x.dtype).clone()
    y.view(-1)[0] = value
    return y


def _at(x: torch.Tensor, index: tuple, value: float) -> torch.Tensor:
    """A copy of ``x`` holding ``value`` at ``index``."""
    y = x.detach().clone()
    y[index] = value
    return y


def _wider(x: torch.Tensor) -> torch.Tensor:
    """``x`` with one more column along its last dimension (a shape that does not fit)."""
    return torch.cat([x, x[..., :1]], -1)


class Spec:
    """One public callable: ``fn`` and keyword arguments of a call that works (``kw``), and
    its bad variants. ``grad``/``meta``/``bf16`` mark what test_contract_numerics checks."""

    def __init__(self, qualname: str, fn: Callable, kw: dict | None = None, *,
                 out: Callable | None = None):
        self.qualname, self.fn, self.kw = qualname, fn, kw
        self.cases: list[Case] = []
        self.out = out or (lambda r: r)   # the tensor(s) a numerics test compares
        self.grad_args: tuple[str, ...] = ()
        self.meta_kw: dict | None = None
        self.no_meta: str | None = None
        self.bf16_args: tuple[str, ...] = ()
        self.bf16_close = True
        self.no_bf16: str | None = None
        self.no_grad: str | None = None

    # -- calls -----------------------------------------------------------------------------
    def call(self, **over: object) -> object:
        return self.fn(**{**self.kw, **over})

    def _thunk(self, over: dict) -> Callable[[], object]:
        return lambda: self.call(**over)

    def bad(self, what: str, call: Callable[[], object] | dict, match: str,
            exc: type = ValueError) -> Spec:
        thunk = call if callable(call) else self._thunk(call)
        self.cases.append(Case(what, thunk, match, exc))
        return self

    # -- generators of bad variants ---------------------------------------------------------
    def floats(self, name: str, *, nan: bool = True, inf: bool = True, lst: bool = True,
               dtype: bool = True, match: str | None = None) -> Spec:
        x, m = self.kw[name], match or name
        if lst:
            self.bad(f"{name} as a list", {name: x.tolist()}, m)
        if nan:
            self.bad(f"NaN in {name}", {name: _with(x, NAN)}, m)
        if inf:
            self.bad(f"inf in {name}", {name: _with(x, INF)}, m)
        if dtype:
            self.bad(f"integer {name}", {name: x.long()}, m)
        return self

    def mask(self, name: str, *, allzero: bool = True, match: str | None = None) -> Spec:
        x, m = self.kw[name], match or name
        self.bad(f"{name} holding 0.5", {name: _with(x, 0.5, F64)}, m)
        self.bad(f"{name} holding NaN", {name: _with(x, NAN, F64)}, m)
        self.bad(f"integer {name} holding 2", {name: _with(x, 2, torch.long)}, m)
        self.bad(f"integer {name} holding -1", {name: _with(x, -1, torch.long)}, m)
        if allzero:
            self.bad(f"all-zero {name}", {name: torch.zeros_like(x)}, m)
        self.bad(f"{name} as a list", {name: x.tolist()}, m)
        return self

    def ids(self, name: str, size: int, *, match: str | None = None) -> Spec:
        x, m = self.kw[name], match or name
        self.bad(f"negative id in {name}", {name: _with(x, -1)}, m)
        self.bad(f"id {size} in {name}", {name: _with(x, size)}, m)
        self.bad(f"float {name}", {name: x.double()}, m)
        return self

    def count(self, name: str, *, match: str | None = None, zero: bool = True) -> Spec:
        m = match or name
        for v in ((0, -1, 1.5, True) if zero else (-1, 1.5, True)):
            self.bad(f"{name} = {v!r}", {name: v}, m)
        return self

    def number(self, name: str, *, positive: bool = False, match: str | None = None) -> Spec:
        m = match or name
        for v in (NAN, INF, "1", True) + ((-1.0,) if positive else ()):
            self.bad(f"{name} = {v!r}", {name: v}, m)
        return self

    def option(self, name: str, *, match: str | None = None) -> Spec:
        return self.bad(f"unknown {name}", {name: "no-such-option"}, match or name)

    def flag(self, name: str) -> Spec:
        return self.bad(f"{name} = 'yes'", {name: "yes"}, name)

    def shape(self, name: str, *, match: str | None = None) -> Spec:
        return self.bad(f"{name} one column too wide", {name: _wider(self.kw[name])},
                        match or name)

    def device(self, name: str) -> Spec:
        """``name`` on meta while the rest is on the CPU: must be refused."""
        return self.bad(f"{name} on another device", {name: self.kw[name].to("meta")}, "device")

    # -- numerics markers -------------------------------------------------------------------
    def grad(self, *names: str) -> Spec:
        self.grad_args = names
        return self

    def meta(self, **kw: object) -> Spec:
        """Shape-only run with these arguments on the meta device (default: every tensor of
        ``kw`` moved there)."""
        self.meta_kw = kw
        return self

    def skip_meta(self, why: str) -> Spec:
        self.no_meta = why
        return self

    def bf16(self, *names: str, close: bool = True) -> Spec:
        """A run with these arguments in bfloat16: finite, and (``close``) near float64's.
        Sampling functions draw other samples from rounded probabilities: ``close=False``."""
        self.bf16_args, self.bf16_close = names, close
        return self

    def values_only(self, why: str) -> Spec:
        """Neither a meta nor a bfloat16 run applies (it returns a Python value, draws, ...)."""
        return self.skip_meta(why).skip_bf16(why)

    def skip_grad(self, why: str) -> Spec:
        """The output carries a gradient but is no function to gradcheck (a record, ...)."""
        self.no_grad = why
        return self

    def skip_bf16(self, why: str) -> Spec:
        self.no_bf16 = why
        return self


SPECS: dict[str, Spec] = {}


def spec(qualname: str, fn: Callable, kw: dict | None = None, **opts: object) -> Spec:
    assert qualname not in SPECS, qualname
    SPECS[qualname] = s = Spec(qualname, fn, kw, **opts)
    return s


def record(qualname: str, cls: type, missing: str, **given: object) -> Spec:
    """A plain record type (a dataclass or NamedTuple that the library fills): the bad input
    is a missing field, which Python refuses naming it."""
    return spec(qualname, cls).bad(f"missing {missing}", lambda: cls(**given), missing, TypeError)


# =============================================================================================
# Small worlds the calls run on
# =============================================================================================
G0 = pg.make_generator(0)
BANDIT = WB.context_bandit()
POL = WB.TabularSoftmax(3, 4)
TH = torch.linspace(-1.0, 1.0, 12, dtype=F64)
PROBS = POL.probs(TH)
MU = POL.probs(0.3 * TH.flip(0))
BATCH = BANDIT.sample(MU, 8, pg.make_generator(1))
BATCH2 = BANDIT.sample(MU, (3, 8), pg.make_generator(2))
LIN_BANDIT, LIN = WB.two_param_bandit()
LTH = torch.tensor([0.3, -0.2], dtype=F64)
S_IDS, A_IDS = BATCH.s, BATCH.a

# language-model shaped tensors: B = 4 responses in groups of 2, T = 5 positions
_g = pg.make_generator(3)
LP = -torch.rand(4, 5, generator=_g, dtype=F64) - 0.1
OLD = LP + 0.1 * torch.randn(4, 5, generator=_g, dtype=F64)
REF = LP + 0.2 * torch.randn(4, 5, generator=_g, dtype=F64)
ADV = torch.randn(4, 5, generator=_g, dtype=F64)
MASK = (torch.arange(5)[None, :] < torch.tensor([[5], [3], [1], [4]])).to(F64)
R4 = torch.tensor([1.0, 0.0, 0.5, 0.25], dtype=F64)
R01 = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0], dtype=F64)   # 0/1, G = 4
LOGITS = torch.randn(4, 5, 6, generator=_g, dtype=F64)
TOK = torch.randint(0, 6, (4, 5), generator=_g)
NEG_INF_ROW = LOGITS.clone()
NEG_INF_ROW[0, 0] = -INF       # a position where every token is forbidden

# the enumerable LM
SPACE = WS.SeqSpace(tokens=("a", "b"), max_len=2, rho=torch.tensor([0.6, 0.4], dtype=F64))
SEQS = SPACE.enumerate()
TPOL = WS.TabularPolicy(SPACE)
MPOL = WS.MLPPolicy(SPACE, hidden=3)
STH = MPOL.init(pg.make_generator(4), scale=0.5)
TTH = TPOL.init(pg.make_generator(5), scale=0.5)
TABLE = torch.tensor([[1.0, -0.3, 0.2], [-0.5, 1.0, 0.0]], dtype=F64)
REWARD = WS.token_table_reward(TABLE)
SW = torch.ones_like(SEQS.mask)   # per-token weights over the enumeration

# the tiny GPT
TASK = WT.Reverse(min_len=2, max_len=3)
CFG = WT.policy_config(TASK, n_embd=8, n_head=1)
MODEL = WG.GPT(CFG)
META_MODEL = WG.GPT(CFG).to("meta")
PROB = TASK.sample(2, pg.make_generator(6))
DEMO, DEMO_MASK = TASK.demonstrations(PROB)
TOKENIZER = TASK.tokenizer

# the multi-turn worlds (chapter 15): the enumerable tool tree, a lookup tool, a GPT for it
LWORLD = WAG.LookupWorld(n_values=2, max_turns=2)
EPS = LWORLD.enumerate()                                  # 74 trajectories of T = 4 tokens
MKV = WAG.MarkovMLPPolicy(LWORLD.space, hidden=3)
MTH = MKV.init(pg.make_generator(31), scale=0.5)
ENV = WE.LookupEnv(n_keys=2, digits=1, max_turns=2)
AMODEL = WG.GPT(TAG.agent_config(ENV, n_embd=8, n_head=1))

ESTIMATES = torch.randn(20, 3, generator=pg.make_generator(7), dtype=F64)
ESTATS = EST.EstimatorStats(ESTIMATES)


# =============================================================================================
# The table
# =============================================================================================
# -- pgbook ----------------------------------------------------------------------------------
def _book_device_bad(monkeypatch=None) -> object:
    import os
    old = os.environ.get("PGBOOK_DEVICE")
    os.environ["PGBOOK_DEVICE"] = "not-a-device"
    try:
        return pg.book_device()
    finally:
        if old is None:
            del os.environ["PGBOOK_DEVICE"]
        else:
            os.environ["PGBOOK_DEVICE"] = old


spec("pgbook.book_device", pg.book_device, {}).bad(
    "PGBOOK_DEVICE not a device", _book_device_bad, "PGBOOK_DEVICE").skip_meta(
    "takes no tensor").skip_bf16("takes no float")

# -- pgbook._validate -------------------------------------------------------------------------
X = torch.tensor([0.5, 1.0], dtype=F64)
spec("pgbook._validate.check_finite", V.check_finite, dict(x=X, name="x")).floats(
    "x", dtype=False).grad("x").meta().bf16("x")
spec("pgbook._validate.check_finite_where", V.check_finite_where,
     dict(x=X, mask=torch.tensor([1, 0]), name="x")).bad(
    "NaN where the mask is 1", dict(x=_with(X, NAN)), "x").bad(
    "a list", dict(x=[1.0]), "x").grad("x").meta().bf16("x")
spec("pgbook._validate.check_flag", V.check_flag, dict(flag=True, name="f")).bad(
    "a string", dict(flag="yes"), "f").bad("an integer", dict(flag=1), "f").bad(
    "None", dict(flag=None), "f")
spec("pgbook._validate.check_float_dtype", V.check_float_dtype, dict(dtype=F64)).bad(
    "an integer dtype", dict(dtype=torch.long), "dtype").bad("a string", dict(dtype="f64"), "dtype")
spec("pgbook._validate.check_generator", V.check_generator, dict(generator=G0)).bad(
    "a seed", dict(generator=0), "generator").bad("None", dict(generator=None), "generator")
spec("pgbook._validate.check_in_range", V.check_in_range,
     dict(x=X / 2, name="x", low=0.0, high=1.0)).bad("NaN", dict(x=_with(X, NAN)), "x").bad(
    "above", dict(x=X + 1), "x").bad("open end", dict(high=0.5, high_open=True), "x").grad("x").meta().bf16(
    "x")
spec("pgbook._validate.check_index", V.check_index,
     dict(idx=torch.tensor([0, 2]), name="i", size=3)).ids("idx", 3, match="i").meta().skip_bf16(
    "checks ids")
spec("pgbook._validate.check_mask", V.check_mask, dict(mask=MASK, name="m")).mask(
    "mask", match="m").bad("wrong shape", dict(shape=(4, 4)), "m").skip_grad(
    "returns its input; a perturbed mask is not 0/1").meta().bf16("mask")
spec("pgbook._validate.check_nonnegative_int", V.check_nonnegative_int, dict(n=0, name="n")).bad(
    "-1", dict(n=-1), "n").bad("1.5", dict(n=1.5), "n").bad("True", dict(n=True), "n")
spec("pgbook._validate.check_number", V.check_number, dict(x=1.5, name="x")).number("x")
spec("pgbook._validate.check_option", V.check_option,
     dict(value="a", name="opt", options=("a", "b"))).bad("unknown", dict(value="c"), "opt").bad(
    "not a string", dict(value=1), "opt")
spec("pgbook._validate.check_pair", V.check_pair,
     dict(x=LP, other=ADV, name_x="logp", name_other="adv")).bad(
    "shapes differ", dict(other=ADV[:, :2]), "logp and adv").bad(
    "integer x", dict(x=LP.long()), "logp").bad(
    "devices differ", dict(other=ADV.to("meta")), "device").meta().bf16("x", "other")
spec("pgbook._validate.check_positive", V.check_positive, dict(x=0.5, name="x")).number(
    "x", positive=True).bad("zero", dict(x=0.0), "x")
spec("pgbook._validate.check_positive_int", V.check_positive_int, dict(n=3, name="n")).count("n")
spec("pgbook._validate.check_probs", V.check_probs, dict(p=PROBS, name="p")).floats(
    "p", inf=False, match="p").bad("negative", dict(p=PROBS - 0.1), "p").bad(
    "not summing to one", dict(p=PROBS * 2), "p").grad("p").meta().bf16("p")
spec("pgbook._validate.check_same_device", V.check_same_device, dict(a=LP, b=ADV)).bad(
    "cpu and meta", dict(b=ADV.to("meta")), "device").meta().bf16("a", "b")
spec("pgbook._validate.check_same_shape", V.check_same_shape,
     dict(a=LP, b=ADV, name_a="a", name_b="b")).bad("shapes differ", dict(b=ADV[:1]),
                                                    "a and b").meta().bf16("a", "b")
spec("pgbook._validate.check_shape", V.check_shape, dict(x=LP, name="x", shape=(4, None))).bad(
    "wrong size", dict(shape=(3, None)), "x").bad("a list", dict(x=[1.0]), "x").grad("x").meta(
    ).bf16("x")
spec("pgbook._validate.check_tensor", V.check_tensor, dict(x=LP, name="x")).bad(
    "a list", dict(x=[1.0]), "x").bad("wrong ndim", dict(ndim=3), "x").bad(
    "integer for floating", dict(x=TOK, floating=True), "x").bad(
    "empty", dict(x=LP[:0], nonempty=True), "x").grad("x").meta().bf16("x")
spec("pgbook._validate.make_generator", V.make_generator, dict(seed=0)).bad(
    "a float seed", dict(seed=0.5), "seed").bad("a bool seed", dict(seed=True), "seed").bad(
    "a huge seed", dict(seed=2 ** 70), "seed").bad("a bad device", dict(device="nope"), "device")
spec("pgbook._validate.to_work", V.to_work, dict(x=LP)).bad("a list", dict(x=[1.0]), "x").grad(
    "x").meta().bf16("x")
spec("pgbook._validate.work_dtype", V.work_dtype, dict(dtype=F64)).bad(
    "a string", dict(dtype="float32"), "dtype")
_OPT_FN = lambda r, g, *, std_eps=1e-6: r   # an advantage estimator's signature
spec("pgbook._validate.check_options", V.check_options,
     dict(fn=_OPT_FN, options={"std_eps": 0.1}, what="f", skip=2)).bad(
    "an unknown option", dict(options={"temperature": 1.0}), "temperature").bad(
    "a positional parameter the library fills", dict(options={"g": 2}), "'g'").bad(
    "fn not callable", dict(fn=3), "fn").bad("options a list", dict(options=["std_eps"]),
                                             "options").count("skip", zero=False)
spec("pgbook._validate.keyword_names", V.keyword_names, dict(fn=_OPT_FN, skip=1)).bad(
    "fn not callable", dict(fn="f"), "fn").count("skip", zero=False)
spec("pgbook._validate.parameters", V.parameters, dict(fn=_OPT_FN)).bad(
    "fn not callable", dict(fn="f"), "fn").bad("fn None", dict(fn=None), "fn")
spec("pgbook._validate.reject_unknown_options", V.reject_unknown_options, dict(fn=_OPT_FN)).bad(
    "a function with **kwargs", dict(fn=lambda **kw: 0), "kwargs").bad(
    "fn not callable", dict(fn=3), "fn").bad(
    "the wrapped function called with an unknown keyword",
    lambda: V.reject_unknown_options(_OPT_FN)(1, 2, temperature=1.0), "temperature")
spec("pgbook._validate.unknown_options", V.unknown_options,
     dict(what="f()", given=["b"], accepted=["a", "b"])).bad(
    "an unknown name", dict(given=["c"]), "'c'").bad(
    "given a string, not names", dict(given="ab"), "given").bad(
    "accepted a string", dict(accepted="ab"), "accepted").bad("what not a string", dict(what=3),
                                                              "what")

# -- pgbook.aggregation -----------------------------------------------------------------------
for _name in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant"):
    spec(f"pgbook.aggregation.{_name}", getattr(AG, _name),
         dict(per_token_loss=ADV, mask=MASK)).floats(
        "per_token_loss", inf=True).mask("mask").shape("mask").device("mask").bad(
        "1-D loss", dict(per_token_loss=ADV[0], mask=MASK[0]), "per_token_loss").grad(
        "per_token_loss").meta().bf16("per_token_loss")
SPECS["pgbook.aggregation.constant"].bad("max_tokens below the longest", dict(max_tokens=2),
                                         "max_tokens").count("max_tokens")
spec("pgbook.aggregation.aggregate", AG.aggregate,
     dict(per_token_loss=ADV, mask=MASK, mode="seq_mean_token_mean")).option("mode").floats(
    "per_token_loss").mask("mask").device("mask").count("max_tokens").grad(
    "per_token_loss").meta().bf16("per_token_loss")
spec("pgbook.aggregation.token_weights", AG.token_weights, dict(mask=MASK, mode="token_mean")
     ).option("mode").mask("mask").bad("integer dtype", dict(dtype=torch.long), "dtype").meta(
    ).skip_bf16("takes no float input (dtype is an option)")

# -- pgbook.boundary (chapter 17: DPO) --------------------------------------------------------
_SEQ_LP = (LP * MASK).sum(-1)          # sequence log-probs (4,)
_SEQ_REF = (REF * MASK).sum(-1)
spec("pgbook.boundary.dpo_loss", BD.dpo_loss,
     dict(chosen_logp=_SEQ_LP, rejected_logp=_SEQ_LP.flip(0), ref_chosen_logp=_SEQ_REF,
          ref_rejected_logp=_SEQ_REF.flip(0))).floats("chosen_logp").floats(
    "rejected_logp").floats("ref_chosen_logp").floats("ref_rejected_logp").number(
    "beta", positive=True).bad("2-D chosen_logp", dict(chosen_logp=LP), "chosen_logp").bad(
    "rejected_logp of another length", dict(rejected_logp=_SEQ_LP[:3]), "rejected_logp").device(
    "ref_rejected_logp").grad("chosen_logp", "rejected_logp").meta().bf16(
    "chosen_logp", "rejected_logp", "ref_chosen_logp", "ref_rejected_logp")
spec("pgbook.boundary.implied_reward", BD.implied_reward,
     dict(logp=_SEQ_LP, ref_logp=_SEQ_REF, beta=0.1)).floats("logp").floats(
    "ref_logp").number("beta", positive=True).bad(
    "ref_logp of another shape", dict(ref_logp=_SEQ_REF[:3]), "ref_logp").device(
    "ref_logp").grad("logp").meta().bf16("logp", "ref_logp")

# -- pgbook.kl --------------------------------------------------------------------------------
for _name in ("k1_loss", "k2_loss", "k3_loss", "k1_in_reward"):
    s = spec(f"pgbook.kl.{_name}", getattr(KL, _name), dict(logp=LP, ref_logp=REF)).floats(
        "logp").floats("ref_logp", dtype=False).shape("ref_logp").device("ref_logp").meta(
    ).bf16("logp", "ref_logp")
    if _name != "k1_in_reward":
        s.grad("logp")
spec("pgbook.kl.kl_estimate", KL.kl_estimate, dict(logp=LP, ref_logp=REF, kind="k3")).option(
    "kind").floats("logp").floats("ref_logp", dtype=False).shape("ref_logp").device(
    "ref_logp").grad("logp").meta().bf16("logp", "ref_logp")
spec("pgbook.kl.kl_in_reward", KL.kl_in_reward,
     dict(rewards=R4, logp=LP, ref_logp=REF, mask=MASK, beta=0.1)).floats("rewards").mask(
    "mask").shape("mask").device("mask").number("beta", positive=True).option("kind").bad(
    "NaN logp on a response token", dict(logp=_with(LP, NAN)), "logp").bad(
    "rewards of the wrong length", dict(rewards=R4[:3]), "logp").grad("rewards").meta(
    ).bf16("rewards", "logp", "ref_logp")

# -- pgbook.trajectory.losses -----------------------------------------------------------------
PAIR = dict(logp=LP, advantages=ADV, old_logp=OLD)
spec("pgbook.trajectory.losses.score_function_loss", TL.score_function_loss,
     dict(logp=LP, advantages=ADV)).floats("logp").floats("advantages", dtype=False).shape(
    "advantages", match="logp and advantages").device("advantages").grad("logp").meta().bf16(
    "logp", "advantages")
spec("pgbook.trajectory.losses.log_ratio", TL.log_ratio, dict(logp=LP, old_logp=OLD)).floats(
    "logp").floats("old_logp", dtype=False).shape("old_logp", match="logp and old_logp").device(
    "old_logp").grad("logp").meta().bf16("logp", "old_logp")
spec("pgbook.trajectory.losses.ratio", TL.ratio, dict(logp=LP, old_logp=OLD)).floats(
    "logp").floats("old_logp", dtype=False).shape("old_logp", match="logp and old_logp").device(
    "old_logp").grad("logp").meta().bf16("logp", "old_logp")
spec("pgbook.trajectory.losses.importance_weighted_loss", TL.importance_weighted_loss,
     dict(PAIR)).floats("logp").floats("advantages", dtype=False).floats(
    "old_logp", dtype=False).shape("old_logp", match="logp and old_logp").device(
    "advantages").grad("logp").meta().bf16("logp", "advantages", "old_logp")
for _name in ("ppo_clip_loss", "ppo_dual_clip_loss"):
    spec(f"pgbook.trajectory.losses.{_name}", getattr(TL, _name), dict(PAIR)).floats(
        "logp").floats("advantages", dtype=False).floats("old_logp", dtype=False).shape(
        "advantages", match="logp and advantages").device("old_logp").number(
        "eps_low", positive=True).bad("eps_low = 1", dict(eps_low=1.0), "eps_low").number(
        "eps_high", positive=True).number("dual_clip", positive=True).bad(
        "dual_clip = 1", dict(dual_clip=1.0), "dual_clip").grad("logp").meta().bf16(
        "logp", "advantages", "old_logp")
spec("pgbook.trajectory.losses.clip_fraction", TL.clip_fraction, dict(PAIR)).floats(
    "logp").floats("advantages", dtype=False).floats("old_logp", dtype=False).shape(
    "old_logp", match="logp and old_logp").device("advantages").number(
    "eps_low", positive=True).bad("eps_low = 1", dict(eps_low=1.0), "eps_low").number(
    "eps_high", positive=True).meta().bf16("logp", "advantages", "old_logp")
spec("pgbook.trajectory.losses.token_pg_loss", TL.token_pg_loss,
     dict(token_logp=LP, weights=ADV, mask=MASK)).floats("token_logp").floats(
    "weights", dtype=False).mask("mask").shape("weights", match="token_logp and weights").device(
    "mask").bad("1-D", dict(token_logp=LP[0], weights=ADV[0], mask=MASK[0]), "token_logp").grad(
    "token_logp").meta().bf16("token_logp", "weights")

# the trajectory side after GRPO (chapter 14): per-token losses over (B, T) with a mask
MPAIR = dict(PAIR, mask=MASK)


def _clip_cov(seed: object = 0, **kw: object) -> torch.Tensor:
    """Clip-Cov with a fresh generator per call (its random choice is then a function of the
    inputs, which gradcheck needs); ``seed`` a torch.Generator is passed through."""
    g = pg.make_generator(seed) if isinstance(seed, int) and not isinstance(seed, bool) else seed
    return TL.clip_cov_loss(**kw, generator=g)


for _name, _fn, _kw in (("gspo_loss", TL.gspo_loss, {}), ("gspo_token_loss", TL.gspo_token_loss, {}),
                        ("gmpo_loss", TL.gmpo_loss, {}),
                        ("clip_cov_loss", _clip_cov, {"clip_cov_lb": -5.0, "clip_cov_ratio": 0.2}),
                        ("kl_cov_loss", TL.kl_cov_loss, {"kl_cov_ratio": 0.2})):
    s = spec(f"pgbook.trajectory.losses.{_name}", _fn, dict(MPAIR, **_kw)).floats("logp").floats(
        "advantages", dtype=False).floats("old_logp", dtype=False).mask(
        "mask", allzero=False).shape("mask").shape("advantages", match="logp and advantages").shape(
        "old_logp", match="logp and old_logp").device("mask").device("old_logp").bad(
        "NaN logp on a response token", dict(logp=_with(LP, NAN)), "logp").grad("logp").meta(
    ).bf16("logp", "advantages", "old_logp", close=_name not in ("clip_cov_loss", "kl_cov_loss"))
    if _name != "kl_cov_loss":
        s.number("eps_low", positive=True)
    if _name != "gmpo_loss" and _name != "kl_cov_loss":
        s.bad("eps_low = 1", dict(eps_low=1.0), "eps_low")
    if _name in ("gspo_loss", "gspo_token_loss", "gmpo_loss"):
        s.number("eps_high", positive=True)
SPECS["pgbook.trajectory.losses.clip_cov_loss"].number("clip_cov_ratio", positive=True).number(
    "clip_cov_lb").number("clip_cov_ub").bad("lb above ub", dict(clip_cov_lb=6.0), "clip_cov_lb").bad(
    "no generator", dict(seed=None), "generator").bad("a seed, not a generator", dict(seed="0"),
                                                      "generator")
SPECS["pgbook.trajectory.losses.kl_cov_loss"].number("kl_cov_ratio", positive=True).number(
    "ppo_kl_coef", positive=True)
# a masked position may hold anything, NaN included: it reaches neither the value nor a gradient
SPECS["pgbook.trajectory.losses.gspo_loss"].bad(
    "NaN advantage on a response token", dict(advantages=_with(ADV, NAN)), "advantages")
for _name, _opts in (("cispo_loss", ("eps_low", "eps_high")), ("sapo_loss", ("tau_pos", "tau_neg")),
                     ("clip_higher_loss", ("eps_low", "eps_high", "dual_clip"))):
    s = spec(f"pgbook.trajectory.losses.{_name}", getattr(TL, _name), dict(PAIR)).floats(
        "logp").floats("advantages", dtype=False).floats("old_logp", dtype=False).shape(
        "advantages", match="logp and advantages").shape("old_logp", match="logp and old_logp").device(
        "old_logp").device("advantages").grad("logp").meta().bf16("logp", "advantages", "old_logp")
    for _o in _opts:
        s.number(_o, positive=True)
_SG = "a stop-gradient surrogate: by design its gradient is not the derivative of its value"
SPECS["pgbook.trajectory.losses.gspo_token_loss"].grad().skip_grad(_SG)
SPECS["pgbook.trajectory.losses.cispo_loss"].grad().skip_grad(_SG)
SPECS["pgbook.trajectory.losses.clip_higher_loss"].bad("eps_low = 1", dict(eps_low=1.0),
                                                       "eps_low").bad(
    "dual_clip = 1", dict(dual_clip=1.0), "dual_clip")
spec("pgbook.trajectory.losses.sequence_log_ratio", TL.sequence_log_ratio,
     dict(logp=LP, old_logp=OLD, mask=MASK)).floats("logp").floats("old_logp", dtype=False).mask(
    "mask", allzero=False).shape("mask").shape("old_logp", match="logp and old_logp").device(
    "mask").device("old_logp").grad("logp").meta().bf16("logp", "old_logp")

# -- pgbook.trajectory.tokens -----------------------------------------------------------------
for _name in ("token_logprobs", "naive_token_logprobs"):
    s = spec(f"pgbook.trajectory.tokens.{_name}", getattr(TT, _name),
             dict(logits=LOGITS, tokens=TOK)).floats("logits", inf=True).bad(
        "-inf for every token of a position", dict(logits=NEG_INF_ROW), "logits").ids("tokens", 6).bad("int32 tokens", dict(tokens=TOK.int()), "tokens").shape(
        "tokens").device("tokens").bad("1-D logits", dict(logits=LOGITS[0, 0], tokens=TOK[0, 0]),
                                       "logits").grad("logits").meta().bf16("logits")
SPECS["pgbook.trajectory.tokens.token_logprobs"].count("chunk_size")
spec("pgbook.trajectory.tokens.entropy_from_logits", TT.entropy_from_logits,
     dict(logits=LOGITS)).floats("logits").bad(
    "a position with every logit -inf", dict(logits=torch.full((2, 3), -INF, dtype=F64)),
    "logits").bad("a scalar", dict(logits=torch.tensor(1.0, dtype=F64)), "logits").count(
    "chunk_size").grad("logits").meta().bf16("logits")
spec("pgbook.trajectory.tokens.naive_entropy", TT.naive_entropy, dict(logits=LOGITS)).floats(
    "logits").bad("a scalar", dict(logits=torch.tensor(1.0, dtype=F64)), "logits").grad(
    "logits").meta().bf16("logits")
spec("pgbook.trajectory.tokens.sequence_logprob", TT.sequence_logprob,
     dict(token_logp=LP, mask=MASK)).floats("token_logp", inf=False).bad(
    "+inf on a response token", dict(token_logp=_with(LP, INF)), "token_logp").mask(
    "mask").shape("mask").device("mask").grad("token_logp").meta().bf16("token_logp")
spec("pgbook.trajectory.tokens.response_mask", TT.response_mask,
     dict(tokens=TOK, eos_id=2, prompt_len=1)).bad("float tokens", dict(tokens=TOK.double()),
                                                   "tokens").bad(
    "negative id", dict(tokens=_with(TOK, -1)), "tokens").bad("1-D", dict(tokens=TOK[0]),
                                                              "tokens").bad(
    "eos_id = -1", dict(eos_id=-1), "eos_id").bad("eos_id = 1.0", dict(eos_id=1.0), "eos_id").bad(
    "prompt_len = T", dict(prompt_len=5), "prompt_len").bad(
    "prompt_len = -1", dict(prompt_len=-1), "prompt_len").bad(
    "dtype a string", dict(dtype="float"), "dtype").meta().skip_bf16("takes no float input")

record("pgbook.trajectory.tokens.CausalLogprobs", TT.CausalLogprobs, "mask", logp=LP)
RMASK = torch.ones(4, 3, dtype=F64)                     # the response columns 2..4 of TOK
spec("pgbook.trajectory.tokens.causal_logprobs", TT.causal_logprobs,
     dict(logits_or_model=LOGITS, input_ids=TOK, prompt_len=2, response_mask=RMASK),
     out=lambda r: r.logp).floats("logits_or_model", lst=False, nan=False, inf=False,
                                  match="logits").bad(
    "NaN logits scoring a response token", dict(logits_or_model=_at(LOGITS, (0, 2, 0), NAN)),
    "logits").bad("inf logits scoring a response token",
                  dict(logits_or_model=_at(LOGITS, (1, 3, 2), INF)), "logits").bad(
    "logits as a list", dict(logits_or_model=LOGITS.tolist()), "logits_or_model").bad(
    "logits of another length", dict(logits_or_model=LOGITS[:, :3]), "logits").bad(
    "float input_ids", dict(input_ids=TOK.double()), "input_ids").bad(
    "int32 input_ids", dict(input_ids=TOK.int()), "input_ids").bad(
    "1-D input_ids", dict(input_ids=TOK[0]), "input_ids").bad(
    "one position", dict(input_ids=TOK[:, :1]), "input_ids").bad(
    "an id past the vocabulary", dict(input_ids=_at(TOK, (0, 3), 6)), "tokens").bad(
    "prompt_len = 0", dict(prompt_len=0), "prompt_len").bad(
    "prompt_len = T", dict(prompt_len=5), "prompt_len").bad(
    "prompt_len = 1.5", dict(prompt_len=1.5), "prompt_len").bad(
    "neither prompt_len nor a mask", dict(prompt_len=None, response_mask=None), "prompt_len").mask(
    "response_mask").bad("a (B, T) mask with ones on the prompt",
                         dict(response_mask=torch.ones(4, 5, dtype=F64)), "response_mask").bad(
    "a mask of another shape", dict(response_mask=RMASK[:, :2]), "response_mask").bad(
    "eos_id with a response_mask", dict(eos_id=2), "eos_id").bad(
    "eos_id = -1", dict(eos_id=-1, response_mask=None), "eos_id").bad(
    "attention_mask with logits", dict(attention_mask=torch.ones_like(TOK)), "attention_mask").bad(
    "a model returning a string", dict(logits_or_model=lambda ids: "logits"), "logits_or_model").bad(
    "neither logits nor a model", dict(logits_or_model="gpt"), "logits_or_model").number(
    "temperature", positive=True).count("chunk_size").bad(
    "a misspelt option", dict(temprature=1.0), "temprature").device("input_ids").device(
    "response_mask").grad("logits_or_model").meta().bf16("logits_or_model")

# -- pgbook.trajectory.importance -------------------------------------------------------------
W = torch.tensor([[0.5, 1.5, 1.0], [2.0, 0.1, 0.4]], dtype=F64)
VALS = torch.tensor([[1.0, -0.5, 0.2], [0.3, 0.0, 2.0]], dtype=F64)
BLP = torch.log(torch.tensor([0.2, 0.5, 0.3], dtype=F64))
spec("pgbook.trajectory.importance.check_log_probs", TI.check_log_probs,
     dict(x=BLP, name="lp")).floats("x", match="lp").bad("positive", dict(x=-BLP), "lp").grad(
    "x").meta().bf16("x")
spec("pgbook.trajectory.importance.check_positive_probs", TI.check_positive_probs,
     dict(p=MU, name="mu")).floats("p", inf=False, match="mu").bad(
    "a zero", dict(p=torch.tensor([[1.0, 0.0]], dtype=F64)), "mu").grad("p").meta().bf16("p")
spec("pgbook.trajectory.importance.check_weights", TI.check_weights, dict(w=W)).floats(
    "w", match="weights").bad("negative", dict(w=-W), "weights").bad(
    "a zero row", dict(w=W * torch.tensor([[0.0], [1.0]], dtype=F64)), "weights").bad(
    "a scalar", dict(w=torch.tensor(1.0, dtype=F64)), "weights").grad("w").meta().bf16("w")
spec("pgbook.trajectory.importance.importance_weights", TI.importance_weights,
     dict(logp=BLP.flip(0), behaviour_logp=BLP)).floats("logp").floats(
    "behaviour_logp").shape("behaviour_logp").device("behaviour_logp").bad(
    "a weight that overflows", dict(logp=torch.tensor([0.0]), behaviour_logp=torch.tensor([-200.0])),
    "overflows").bad("positive log-probs", dict(logp=-BLP), "logp").meta().bf16(
    "logp", "behaviour_logp")
spec("pgbook.trajectory.importance.is_estimate", TI.is_estimate, dict(values=VALS, weights=W)
     ).floats("values").floats("weights").bad("values of another shape",
                                              dict(values=VALS[:, :2]), "values").device(
    "values").flag("self_normalised").grad("values", "weights").meta().bf16("values", "weights")
spec("pgbook.trajectory.importance.effective_sample_size", TI.effective_sample_size,
     dict(weights=W)).floats("weights").bad("negative", dict(weights=-W), "weights").grad(
    "weights").meta().bf16("weights")

spec("pgbook.trajectory.importance.truncate_weights", TI.truncate_weights, dict(weights=W, c=1.2)
     ).floats("weights").bad("negative", dict(weights=-W), "weights").number(
    "c", positive=True).bad("c = 0", dict(c=0.0), "c").grad("weights").meta().bf16("weights")
SPECS["pgbook.trajectory.importance.is_estimate"].number("truncate", positive=True)

# -- pgbook.trajectory.corrections ------------------------------------------------------------
SMP = OLD - 0.05 * ADV.abs()                                         # the sampler's log μ, (B, T)
CORR = dict(old_logp=OLD, sampler_logp=SMP, mask=MASK)
spec("pgbook.trajectory.corrections.mismatch_log_ratio", TC.mismatch_log_ratio, dict(CORR)
     ).floats("old_logp").floats("sampler_logp", dtype=False).mask("mask").shape("mask").shape(
    "sampler_logp", match="old_logp and sampler_logp").device("mask").device(
    "sampler_logp").meta().bf16("old_logp", "sampler_logp")
for _name in ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask"):
    spec(f"pgbook.trajectory.corrections.{_name}", getattr(TC, _name), dict(CORR)).floats(
        "old_logp").floats("sampler_logp", dtype=False).mask("mask").shape("mask").device(
        "sampler_logp").number("c_max", positive=True).number("c_min", positive=True).bad(
        "c_min above c_max", dict(c_max=1.0, c_min=2.0), "c_min").bad(
        "a weight that overflows", dict(sampler_logp=SMP - 800.0, c_max=None), "overflows"
    ).meta().bf16("old_logp", "sampler_logp", close=not _name.startswith("sequence"))
spec("pgbook.trajectory.corrections.correction_weights", TC.correction_weights,
     dict(CORR, correction="token_mask")).option("correction").floats("old_logp").floats(
    "sampler_logp", dtype=False).mask("mask").device("mask").number(
    "correction_max", positive=True).bad("correction_min above correction_max",
                                         dict(correction_min=3.0), "correction_min").meta().bf16(
    "old_logp", "sampler_logp")
spec("pgbook.trajectory.corrections.correction_stats", TC.correction_stats,
     dict(CORR, weights=TC.token_truncate(OLD, SMP, MASK)),
     out=lambda r: r["weight_ess"]).floats("weights").floats("old_logp").mask("mask").shape(
    "weights").bad("a negative weight", dict(weights=-TC.token_truncate(OLD, SMP, MASK)),
                   "weights").device("weights").device("mask").meta().bf16(
    "weights", "old_logp", "sampler_logp")

# -- pgbook.trajectory.selection --------------------------------------------------------------
INFORMATIVE = torch.tensor([False, True, True, False, True])
spec("pgbook.trajectory.selection.informative_groups", TSEL.informative_groups,
     dict(rewards=R4, group_size=2)).floats("rewards").count("group_size").bad(
    "group_size not dividing N", dict(group_size=3), "group_size").meta().bf16("rewards")
spec("pgbook.trajectory.selection.dynamic_sampling_order", TSEL.dynamic_sampling_order,
     dict(informative=INFORMATIVE, n_groups=3)).bad(
    "0/1 integers", dict(informative=INFORMATIVE.long()), "informative").bad(
    "2-D", dict(informative=INFORMATIVE[None]), "informative").bad(
    "a list", dict(informative=INFORMATIVE.tolist()), "informative").count("n_groups").bad(
    "more groups than generated", dict(n_groups=6), "n_groups").meta().skip_bf16(
    "takes a bool tensor")
spec("pgbook.trajectory.selection.max_variance_subset", TSEL.max_variance_subset,
     dict(rewards=R01, group_size=4, m=2)).floats("rewards").count("group_size").count("m").bad(
    "m = 1", dict(m=1), "m").bad("m above G", dict(m=5), "m").meta().bf16("rewards", close=False)

# -- pgbook.trajectory.agentic ----------------------------------------------------------------
ENV_LP = torch.tensor([-0.5, -1.0, -0.2, -2.0], dtype=F64)       # θ-free log-factors, (N,)
spec("pgbook.trajectory.agentic.trajectory_logprob", TJA.trajectory_logprob,
     dict(token_logp=LP, policy_mask=MASK, env_logp=ENV_LP)).floats("token_logp").mask(
    "policy_mask").shape("policy_mask").device("policy_mask").floats("env_logp").bad(
    "env_logp of another length", dict(env_logp=ENV_LP[:3]), "env_logp").bad(
    "2-D env_logp", dict(env_logp=ENV_LP[:, None]), "env_logp").device("env_logp").bad(
    "1-D token_logp", dict(token_logp=LP[0], policy_mask=MASK[0]), "token_logp").grad(
    "token_logp", "env_logp").meta().bf16("token_logp", "env_logp")
spec("pgbook.trajectory.agentic.trajectory_log_ratio", TJA.trajectory_log_ratio,
     dict(logp=LP, old_logp=OLD, policy_mask=MASK)).floats("logp").floats(
    "old_logp", dtype=False).mask("policy_mask").shape("policy_mask").shape(
    "old_logp", match="logp and old_logp").device("policy_mask").device("old_logp").bad(
    "1-D logp", dict(logp=LP[0], old_logp=OLD[0], policy_mask=MASK[0]), "logp").grad(
    "logp").meta().bf16("logp", "old_logp")
spec("pgbook.trajectory.agentic.reward_variance_filter", TJA.reward_variance_filter,
     dict(rewards=R01, group_size=4, keep_fraction=0.5)).floats("rewards").bad(
    "2-D rewards", dict(rewards=R01[None]), "rewards").bad(
    "empty rewards", dict(rewards=R01[:0]), "rewards").count("group_size").bad(
    "group_size not dividing N", dict(group_size=3), "group_size").number(
    "keep_fraction", positive=True).bad("keep_fraction = 0", dict(keep_fraction=0.0),
                                        "keep_fraction").bad(
    "keep_fraction = 1.5", dict(keep_fraction=1.5), "keep_fraction").number(
    "min_std", positive=True).meta().bf16("rewards")

# -- pgbook.trajectory.distill ----------------------------------------------------------------
TLOGITS = LOGITS + 0.5 * torch.randn(4, 5, 6, generator=pg.make_generator(30), dtype=F64)
LOGIT_PAIR = dict(student_logits=LOGITS, teacher_logits=TLOGITS)


def _logit_pair(s: Spec) -> Spec:
    """The bad logits every distillation loss refuses."""
    return s.floats("student_logits").floats("teacher_logits").shape(
        "teacher_logits").device("teacher_logits").bad(
        "a scalar student_logits", dict(student_logits=LOGITS[0, 0, 0],
                                        teacher_logits=TLOGITS[0, 0, 0]), "student_logits")


_logit_pair(spec("pgbook.trajectory.distill.token_divergence", TD.token_divergence,
                 dict(LOGIT_PAIR))).number("beta", positive=True).bad(
    "beta = 1.5", dict(beta=1.5), "beta").number("temperature", positive=True).bad(
    "temperature = 0", dict(temperature=0.0), "temperature").grad("student_logits").meta().bf16(
    "student_logits", "teacher_logits")
for _name in ("forward_kl", "reverse_kl", "jsd"):
    _logit_pair(spec(f"pgbook.trajectory.distill.{_name}", getattr(TD, _name),
                     dict(LOGIT_PAIR))).grad("student_logits").meta().bf16(
        "student_logits", "teacher_logits")
for _name, _extra in (("generalized_jsd_loss", {}), ("distill_loss", {}),
                      ("minillm_loss", {"tokens": TOK})):
    s = _logit_pair(spec(f"pgbook.trajectory.distill.{_name}", getattr(TD, _name),
                         dict(LOGIT_PAIR, mask=MASK, **_extra))).mask("mask").shape(
        "mask").device("mask").bad("2-D logits", dict(student_logits=LOGITS[0],
                                                      teacher_logits=TLOGITS[0]),
                                   "student_logits").grad("student_logits").meta().bf16(
        "student_logits", "teacher_logits")
SPECS["pgbook.trajectory.distill.generalized_jsd_loss"].number("beta", positive=True).bad(
    "beta = 2", dict(beta=2.0), "beta").number("temperature", positive=True)
SPECS["pgbook.trajectory.distill.distill_loss"].option("divergence").bad(
    "a divergence of another kind", dict(divergence="reverse_kl_to_go"), "divergence")
SPECS["pgbook.trajectory.distill.minillm_loss"].ids("tokens", 6).shape("tokens").device(
    "tokens").option("reduction").flag("length_normalized").grad().skip_grad(
    "a score-function surrogate: sg[F]·log π has the estimator's gradient, not its value's")

# -- pgbook.methods ---------------------------------------------------------------------------
spec("pgbook.methods.policy_loss", ME.policy_loss,
     dict(logp=LP, old_logp=OLD, advantages_tok=ADV, mask=MASK), out=lambda r: r[0]).floats(
    "logp").mask("mask").shape("mask").shape("old_logp").shape("advantages_tok").device(
    "mask").device("old_logp").option("loss").option("aggregation").option("kl").bad(
    "beta without a KL", dict(beta=0.1, kl="none"), "beta").bad(
    "an option the loss does not take", dict(dual_klip=2.0), "dual_klip").bad(
    "k3 with beta but no reference", dict(kl="k3_loss", beta=0.1), "ref_logp").bad(
    "the KL in the reward", dict(kl="k1_in_reward", beta=0.1, ref_logp=REF), "kl").bad(
    "NaN advantage on a response token", dict(advantages_tok=_with(ADV, NAN)), "advantages").bad(
    "a correction without the sampler's log-probs", dict(correction="token_truncate"),
    "sampler_logp").bad("an unknown correction", dict(sampler_logp=OLD, correction="tis"),
                        "correction").bad(
    "sampler log-probs of another shape", dict(sampler_logp=OLD[:, :3],
                                               correction="token_truncate"), "sampler_logp").bad(
    "NaN sampler log-probs on a response token",
    dict(sampler_logp=_with(OLD, NAN), correction="token_truncate"), "sampler_logp").grad(
    "logp").meta().bf16("logp", "old_logp", "advantages_tok")
spec("pgbook.methods.method_config", ME.method_config, dict(name="GRPO")).bad(
    "unknown method", dict(name="GRPOO"), "method").bad("a list", dict(name=["GRPO"]), "method")
spec("pgbook.methods.method_loss", ME.method_loss,
     dict(name="GRPO", logp=LP, old_logp=OLD, rewards=R4, mask=MASK, group_size=2),
     out=lambda r: r[0]).bad("unknown method", dict(name="nope"), "method").floats(
    "rewards").mask("mask").shape("mask").device("mask").count("group_size").bad(
    "group_size not dividing N", dict(group_size=3), "group_size").number(
    "beta", positive=True).bad("beta for a method without KL", dict(name="DAPO", beta=0.1),
                               "beta").bad(
    "KL method without ref_logp", dict(beta=0.1), "ref_logp").bad(
    "a corrected method without the sampler's log-probs", dict(name="GRPO + TIS"),
    "sampler_logp").grad(
    "logp").meta().bf16("logp", "old_logp", "rewards")

spec("pgbook.methods.shaped_rewards", ME.shaped_rewards,
     dict(kl="k1_in_reward", rewards=R4, logp=LP, ref_logp=REF, mask=MASK, beta=0.1)).option(
    "kl").bad("a KL of the loss, not of the reward", dict(kl="k3_loss"), "kl").floats(
    "rewards").mask("mask").shape("mask").device("mask").device("ref_logp").number(
    "beta", positive=True).bad("NaN logp on a response token", dict(logp=_with(LP, NAN)),
                               "logp").bad(
    "rewards of the wrong length", dict(rewards=R4[:3]), "logp").grad("rewards").meta().bf16(
    "rewards", "logp", "ref_logp")
spec("pgbook.methods.loss_table", ME.loss_table, dict(names=["GRPO", "RLOO"])).bad(
    "one name, not a list", dict(names="GRPO"), "names").bad(
    "an unknown method", dict(names=["GRPOO"]), "method").bad(
    "a method without a policy loss", dict(names=["J(θ)"]), "names").bad(
    "a number", dict(names=3), "names").flag("markdown")

# -- pgbook.methods: chapter 17's compositions and map table ---------------------------------
spec("pgbook.methods.compose", ME.compose,
     dict(name="Dr. GRPO × GSPO (contract)", reward="Dr. GRPO", trajectory="GSPO")).bad(
    "an unknown reward method", dict(reward="GRPOO"), "reward").bad(
    "a trajectory-side method as the reward choice", dict(reward="GSPO"), "reward").bad(
    "a reward-side piece as the trajectory choice", dict(trajectory={"advantage": "rloo"}),
    "trajectory").bad("an empty dict", dict(trajectory={}), "trajectory").bad(
    "an unknown component", dict(trajectory={"policy_loss": "no-such-loss"}), "policy_loss").bad(
    "an unknown parent", dict(parent="GRPOO"), "parent").bad(
    "a number as the reward choice", dict(reward=3), "reward").bad(
    "fixes not a string", dict(fixes=3), "fixes")
spec("pgbook.methods.map_table", ME.map_table, dict(names=["GRPO", "RLOO"])).bad(
    "one name, not a list", dict(names="GRPO"), "names").bad(
    "an unknown method", dict(names=["GRPOO"]), "method").bad(
    "a number", dict(names=3), "names").flag("markdown")

# -- pgbook.reward.advantages -----------------------------------------------------------------
for _name in ("grpo", "grpo_mean", "rloo", "plain", "group_mean_batch_std_seq",
              "reinforce_pp_baseline"):
    kw = dict(rewards=R4, group_size=2)
    if _name == "reinforce_pp_baseline":
        kw["mask"] = MASK
    s = spec(f"pgbook.reward.advantages.{_name}_advantage", getattr(RA, f"{_name}_advantage"),
             kw).floats("rewards").count("group_size").bad(
        "group_size not dividing N", dict(group_size=3), "group_size").bad(
        "empty rewards", dict(rewards=R4[:0], **({"mask": MASK[:0]} if "mask" in kw else {})),
        "rewards").bad("2-D rewards", dict(rewards=R4[None]), "rewards").number(
        "std_eps", positive=True).meta().bf16("rewards")
    if _name in ("grpo", "group_mean_batch_std_seq", "reinforce_pp_baseline"):
        s.flag("unbiased")
    if _name == "rloo":
        s.bad("groups of one", dict(group_size=1, rewards=R4), "group_size")
    if _name == "reinforce_pp_baseline":
        s.mask("mask").bad("no mask", dict(mask=None), "mask").bad(
            "mask with another number of rows", dict(mask=MASK[:3]), "mask").device("mask")
    s.grad("rewards")
# the reward side after GRPO (chapter 13)
GREEDY_R = torch.tensor([0.5, 0.25], dtype=F64)                        # R of the greedy rollout
spec("pgbook.reward.advantages.remax_advantage", RA.remax_advantage,
     dict(rewards=R4, group_size=2, reward_baselines=GREEDY_R)).floats("rewards").floats(
    "reward_baselines").count("group_size").bad(
    "one baseline too many", dict(reward_baselines=torch.zeros(3, dtype=F64)),
    "reward_baselines").bad("2-D baselines", dict(reward_baselines=GREEDY_R[None]),
                            "reward_baselines").device("reward_baselines").number(
    "std_eps", positive=True).grad("rewards", "reward_baselines").meta().bf16(
    "rewards", "reward_baselines")
spec("pgbook.reward.advantages.reinforce_plus_plus_advantage", RA.reinforce_plus_plus_advantage,
     dict(rewards=R4, group_size=2, mask=MASK, token_rewards=-0.1 * ADV.abs(), gamma=0.9)
     ).floats("rewards").floats("token_rewards").mask("mask").bad(
    "mask with another number of rows", dict(mask=MASK[:3]), "mask").bad(
    "an empty response", dict(mask=MASK * torch.tensor([[1.0], [1.0], [0.0], [1.0]], dtype=F64)),
    "mask").shape("token_rewards").device("mask").device("token_rewards").count(
    "group_size").number("gamma", positive=True).bad("gamma = 1.5", dict(gamma=1.5), "gamma").number(
    "var_eps", positive=True).grad("rewards", "token_rewards").meta().bf16(
    "rewards", "token_rewards")
spec("pgbook.reward.advantages.opo_advantage", RA.opo_advantage,
     dict(rewards=R4, group_size=2, mask=MASK)).floats("rewards").mask("mask").bad(
    "a group without tokens", dict(mask=MASK * torch.tensor([[0.0], [0.0], [1.0], [1.0]],
                                                            dtype=F64)), "mask").bad(
    "mask with another number of rows", dict(mask=MASK[:2]), "mask").device("mask").count(
    "group_size").number("std_eps", positive=True).grad("rewards").meta().bf16("rewards")
spec("pgbook.reward.advantages.gpg_advantage", RA.gpg_advantage,   # α counts R ≠ 0: none is 0
     dict(rewards=R4 + 1, group_size=2)).floats("rewards").count("group_size").option("alpha").number("f_norm", positive=True).bad(
    "f_norm = 0", dict(f_norm=0.0), "f_norm").number("std_eps", positive=True).grad(
    "rewards").meta().bf16("rewards")
spec("pgbook.reward.advantages.grpo_passk_advantage", RA.grpo_passk_advantage,
     dict(rewards=R4, group_size=2)).floats("rewards").count("group_size").bad(
    "groups of one", dict(group_size=1), "group_size").flag("norm_by_std").number(
    "std_eps", positive=True).grad("rewards").meta().bf16("rewards")
for _name, _k in (("passk_analytic", 2), ("pkpo", 2)):
    s = spec(f"pgbook.reward.advantages.{_name}_advantage", getattr(RA, f"{_name}_advantage"),
             dict(rewards=R01, group_size=4, k=_k)).floats("rewards").bad(
        "rewards other than 0/1", dict(rewards=R01 * 0.5), "rewards").count("group_size").count(
        "k").bad("k above G", dict(k=5), "k").number("std_eps", positive=True).skip_grad(
        "defined on 0/1 rewards: a perturbed reward is refused").meta().bf16("rewards")
SPECS["pgbook.reward.advantages.pkpo_advantage"].option("baseline").bad(
    "k = G with the leave-one-out baseline", dict(k=4), "k")
spec("pgbook.reward.advantages.comb_ratio", RA.comb_ratio,
     dict(a=torch.tensor([2.0, 3.0, 5.0], dtype=F64), b=torch.tensor([5.0, 5.0, 6.0], dtype=F64),
          k=2)).floats("a").floats("b", dtype=False).bad(
    "a above b", dict(a=torch.tensor([6.0, 3.0, 5.0], dtype=F64)), "a").bad(
    "b below k", dict(k=6), "b").bad(
    "a fractional count", dict(a=torch.tensor([2.5, 3.0, 5.0], dtype=F64)), "a").count(
    "k", zero=False).device("b").skip_grad("a and b are counts (whole numbers): a perturbed "
                                           "count is refused").meta().bf16("a", "b")
spec("pgbook.reward.advantages.pass_at_k_estimate", RA.pass_at_k_estimate,
     dict(n=torch.full((3,), 5.0, dtype=F64), c=torch.tensor([1.0, 2.0, 3.0], dtype=F64), k=2)
     ).floats("n").floats("c", dtype=False).bad(
    "c above n", dict(c=torch.tensor([0.0, 6.0, 2.0], dtype=F64)), "c").bad(
    "negative c", dict(c=torch.tensor([-1.0, 1.0, 2.0], dtype=F64)), "c").bad(
    "n below k", dict(k=6), "n").bad(
    "a fractional count", dict(c=torch.tensor([1.5, 2.0, 3.0], dtype=F64)), "c").count(
    "k", zero=False).device("c").skip_grad("n and c are counts (whole numbers): a perturbed "
                                           "count is refused").meta().bf16("n", "c")
spec("pgbook.reward.advantages.zero_variance_groups", RA.zero_variance_groups,
     dict(rewards=R4, group_size=2)).floats("rewards").count("group_size").meta().bf16("rewards")
spec("pgbook.reward.advantages.advantage_stats", RA.advantage_stats,
     dict(rewards=R4, group_size=2), out=lambda r: r["group_std_mean"]).floats("rewards").count(
    "group_size").grad("rewards").meta().bf16("rewards")
spec("pgbook.reward.advantages.group_by_index", RA.group_by_index,
     dict(group_index=torch.tensor([1, 0, 0, 1])), out=lambda r: r[0]).bad(
    "float ids", dict(group_index=torch.tensor([1.0, 0.0])), "group_index").bad(
    "unequal groups", dict(group_index=torch.tensor([1, 0, 0])), "group_index").bad(
    "empty", dict(group_index=torch.tensor([], dtype=torch.long)), "group_index").bad(
    "a list", dict(group_index=[0, 1]), "group_index").skip_meta(
    "group sizes are data-dependent: refused on meta with a ValueError").skip_bf16("ids only")
spec("pgbook.reward.advantages.compute_advantages", RA.compute_advantages,
     dict(rewards=R4, estimator="grpo", group_size=2)).option("estimator").bad(
    "a token estimator", dict(estimator="reward_to_go"), "estimator").bad(
    "an option the estimator does not take", dict(temperature=1.0), "temperature").bad(
    "both group_size and group_index", dict(group_index=torch.tensor([0, 0, 1, 1])),
    "exactly one").bad("group_index of another length",
                       dict(group_size=None, group_index=torch.tensor([0, 0, 1])),
                       "group_index").bad(
    "group_index on another device",
    dict(group_size=None, group_index=torch.tensor([0, 0, 1, 1], device="meta")),
    "device").floats("rewards").grad("rewards").meta().bf16("rewards")
spec("pgbook.reward.advantages.broadcast_to_tokens", RA.broadcast_to_tokens,
     dict(advantages=R4, mask=MASK)).floats("advantages").mask("mask").bad(
    "mask with another number of rows", dict(mask=MASK[:3]), "mask").device("mask").grad(
    "advantages").meta().bf16("advantages")
spec("pgbook.reward.advantages.reward_to_go", RA.reward_to_go,
     dict(token_rewards=ADV, mask=MASK)).floats("token_rewards").mask("mask").shape(
    "mask").device("mask").bad("a scalar", dict(token_rewards=torch.tensor(1.0, dtype=F64),
                                                mask=torch.tensor(1.0)), "token_rewards").grad(
    "token_rewards").meta().bf16("token_rewards")

# -- pgbook.reward.critic ---------------------------------------------------------------------
VALUES = OLD.clone()                                   # V̂(h_t), (B, T)
for _name in ("gae", "td_residuals"):
    s = spec(f"pgbook.reward.critic.{_name}", getattr(RC, _name),
             dict(token_rewards=ADV, values=VALUES, mask=MASK),
             out=(lambda r: r[0]) if _name == "gae" else None).floats("token_rewards").floats(
        "values").mask("mask").shape("mask").device("mask").device("values").bad(
        "values two columns too wide", dict(values=_wider(_wider(VALUES))), "values").bad(
        "1-D rewards", dict(token_rewards=ADV[0]), "token_rewards").bad(
        "no position", dict(token_rewards=ADV[:, :0], values=VALUES[:, :0], mask=MASK[:, :0]),
        "token_rewards").number("gamma", positive=True).bad(
        "gamma = 1.5", dict(gamma=1.5), "gamma").grad("token_rewards", "values").meta().bf16(
        "token_rewards", "values")
    if _name == "gae":
        s.number("lam", positive=True).bad("lam = 2", dict(lam=2.0), "lam").flag("whiten").bad(
            "var_eps = -1", dict(whiten=True, var_eps=-1.0), "var_eps")
SPECS["pgbook.reward.critic.gae"].bad(
    "a bootstrap column (B, T + 1) with NaN", dict(values=_with(_wider(VALUES), NAN)), "values")
spec("pgbook.reward.critic.whiten", RC.whiten, dict(x=ADV, mask=MASK)).floats("x").mask(
    "mask").shape("mask").device("mask").flag("shift_mean").number("var_eps", positive=True).bad(
    "one unmasked entry", dict(mask=torch.zeros_like(MASK).index_fill(1, torch.tensor([0]), 0.0)
                               .index_put((torch.tensor([0]), torch.tensor([0])),
                                          torch.tensor(1.0, dtype=F64))), "mask").grad(
    "x").meta().bf16("x")
spec("pgbook.reward.critic.value_loss", RC.value_loss,
     dict(values=VALUES, returns=ADV, mask=MASK, old_values=OLD + 0.05, eps_value=0.2),
     out=lambda r: r[0]).floats("values").floats("returns", dtype=False).floats(
    "old_values", dtype=False).mask("mask").shape("mask").shape("returns").shape(
    "old_values").device("returns").device("old_values").device("mask").option(
    "aggregation").number("eps_value", positive=True).bad(
    "old_values without eps_value", dict(eps_value=None), "old_values").bad(
    "eps_value without old_values", dict(old_values=None), "old_values").grad("values").meta().bf16(
    "values", "returns", "old_values")

# -- pgbook.reward.shaping --------------------------------------------------------------------
TRUNC = torch.tensor([True, False, False, True])
LENS = MASK.sum(-1).long()
SHAPING = dict(rewards=R4, mask=MASK, truncated=TRUNC, max_tokens=5)
for _name, _extra in (("overlong_punish", {"value": -0.5}), ("overlong_mask", {}),
                      ("overlong_soft", {"cache": 2})):
    s = spec(f"pgbook.reward.shaping.{_name}", getattr(RS, _name), dict(SHAPING, **_extra),
             out=lambda r: r[0]).floats("rewards").bad(
        "mask with another number of rows", dict(mask=MASK[:3]), "mask").bad(
        "1-D mask", dict(mask=MASK[0]), "mask").bad(
        "truncated as 0/1 integers", dict(truncated=TRUNC.long()), "truncated").bad(
        "truncated of another length", dict(truncated=TRUNC[:3]), "truncated").device(
        "truncated").device("mask").count("max_tokens").skip_grad(
        "the shaped reward is R plus a constant (or R itself): nothing to gradcheck").meta(
    ).bf16("rewards").mask("mask", allzero=False)   # every response may be cut: an empty mask
SPECS["pgbook.reward.shaping.overlong_punish"].number("value")
SPECS["pgbook.reward.shaping.overlong_soft"].count("cache", zero=False).bad(
    "cache above max_tokens", dict(cache=6), "cache")
spec("pgbook.reward.shaping.soft_overlong_penalty", RS.soft_overlong_penalty,
     dict(lengths=LENS, max_tokens=5, cache=2)).bad("a negative length", dict(lengths=-LENS),
                                                    "lengths").bad(
    "NaN length", dict(lengths=_with(LENS, NAN, F64)), "lengths").bad(
    "a list", dict(lengths=LENS.tolist()), "lengths").count("max_tokens").count(
    "cache", zero=False).bad("cache above max_tokens", dict(cache=6), "cache").meta().bf16(
    "lengths", close=False)   # a step function: rounded lengths land on other steps
spec("pgbook.reward.shaping.response_lengths", RS.response_lengths, dict(mask=MASK)).mask(
    "mask", allzero=False).bad("1-D", dict(mask=MASK[0]), "mask").meta().bf16("mask")
spec("pgbook.reward.shaping.truncated_responses", RS.truncated_responses,
     dict(tokens=TOK, mask=MASK, eos_id=2)).mask("mask", allzero=False).shape("mask").device(
    "mask").bad("1-D tokens", dict(tokens=TOK[0], mask=MASK[0]), "tokens").bad(
    "float tokens", dict(tokens=TOK.double()), "tokens").bad(
    "eos_id = -1", dict(eos_id=-1), "eos_id").bad("eos_id = 2.0", dict(eos_id=2.0), "eos_id").meta(
    ).skip_bf16("takes token ids and a mask")
ENT = LP.abs()                                                       # entropies ≥ 0, (B, T)
spec("pgbook.reward.shaping.high_entropy_mask", RS.high_entropy_mask,
     dict(entropy=ENT, mask=MASK)).floats("entropy").mask("mask").shape("mask").device(
    "mask").number("top_fraction", positive=True).bad(
    "top_fraction = 1.5", dict(top_fraction=1.5), "top_fraction").bad(
    "a negative entropy", dict(entropy=-ENT), "entropy").meta().bf16("entropy", close=False)
for _name in ("top_entropy_advantages", "low_entropy_advantages", "entropy_weighted_advantages"):
    s = spec(f"pgbook.reward.shaping.{_name}", getattr(RS, _name),
             dict(advantages_tok=ADV, entropy=ENT, mask=MASK, group_size=2)).floats(
        "advantages_tok").floats("entropy").mask("mask").shape("mask").shape("entropy").device(
        "mask").device("entropy").bad("a negative entropy", dict(entropy=-ENT), "entropy").bad(
        "1-D", dict(advantages_tok=ADV[0], entropy=ENT[0], mask=MASK[0]), "advantages_tok").count(
        "group_size").grad("advantages_tok").meta().bf16(
        "advantages_tok", "entropy", close=_name == "entropy_weighted_advantages")
    if _name == "entropy_weighted_advantages":
        s.number("strength", positive=True).bad("strength = 2", dict(strength=2.0), "strength").bad(
            "group_size not dividing B", dict(group_size=3), "group_size").grad(
            "advantages_tok", "entropy")
    else:
        s.number("top_fraction", positive=True).bad("top_fraction = 0", dict(top_fraction=0.0),
                                                     "top_fraction")

# -- pgbook.reward.baselines ------------------------------------------------------------------
WORLD = dict(bandit=BANDIT, policy=POL, theta=TH)
NAN_TH = torch.full_like(TH, NAN)
for _name in ("no_baseline", "value_baseline", "optimal_baseline"):
    spec(f"pgbook.reward.baselines.{_name}", getattr(RB, _name), dict(WORLD, batch=BATCH)).bad(
        "a bad id in the batch", dict(batch=WB.BanditBatch(_with(S_IDS, -1), A_IDS, BATCH.r)),
        "batch.s").bad("NaN theta", dict(theta=NAN_TH), "theta").bad(
        "not a batch", dict(batch=(S_IDS, A_IDS)), "batch").bad(
        "another policy", dict(policy=WB.TabularSoftmax(2, 4)), "policy").bad(
        "theta on another device", dict(theta=TH.to("meta")), "device").skip_meta(
        "the batch's ids need values").bf16("theta")
for _name in ("optimal_baseline_table", "optimal_constant_baseline"):
    spec(f"pgbook.reward.baselines.{_name}", getattr(RB, _name), dict(WORLD)).bad(
        "NaN theta", dict(theta=NAN_TH), "theta").bad("theta of the wrong size",
                                                       dict(theta=TH[:5]), "theta").bad(
        "not a bandit", dict(bandit=PROBS), "bandit").bad(
        "theta on another device", dict(theta=TH.to("meta")), "device").meta(
        bandit=BANDIT.to("meta"), theta=TH.to("meta")).bf16("theta")
spec("pgbook.reward.baselines.constant_baseline", RB.constant_baseline, dict(c=0.5)).number(
    "c", match="baseline")
spec("pgbook.reward.baselines.get_baseline", RB.get_baseline, dict(baseline="value")).bad(
    "unknown name", dict(baseline="valu"), "baseline").bad("NaN", dict(baseline=NAN), "baseline").bad(
    "a bool", dict(baseline=True), "baseline").bad("a table without the bandit",
                                                   dict(baseline=torch.zeros(3, dtype=F64)),
                                                   "baseline").bad(
    "a table of the wrong shape", dict(baseline=torch.zeros(4, dtype=F64), bandit=BANDIT),
    "baseline").bad("a table with NaN", dict(baseline=torch.full((3,), NAN, dtype=F64),
                                             bandit=BANDIT), "baseline")
spec("pgbook.reward.baselines.sample_weights", RB.sample_weights,
     dict(WORLD, batch=BATCH, baseline="value")).bad(
    "NaN rewards", dict(batch=WB.BanditBatch(S_IDS, A_IDS, _with(BATCH.r, NAN))), "rewards").bad(
    "a bad id", dict(batch=WB.BanditBatch(S_IDS, _with(A_IDS, 4), BATCH.r)), "batch.a").bad(
    "unknown baseline", dict(baseline="nope"), "baseline").bad(
    "a baseline callable of the wrong shape",
    dict(baseline=lambda b, p, t, bt: torch.zeros(3, dtype=F64)), "baseline").skip_meta(
    "the batch's ids need values").bf16("theta")
spec("pgbook.reward.baselines.baseline_table", RB.baseline_table, dict(WORLD, baseline="optimal")
     ).bad("unknown baseline", dict(baseline="nope"), "baseline").bad(
    "NaN theta", dict(theta=NAN_TH), "theta").bad(
    "a baseline that returns NaN", dict(baseline=lambda b, p, t, bt: bt.r * NAN), "baseline").meta(
    bandit=BANDIT.to("meta"), theta=TH.to("meta")).bf16("theta")
spec("pgbook.reward.baselines.state_table", RB.state_table,
     dict(values=torch.tensor([0.1, 0.2, 0.3], dtype=F64), n_actions=4)).floats("values").count(
    "n_actions").bad("2-D values", dict(values=PROBS), "values").grad("values").meta().bf16(
    "values")

spec("pgbook.reward.baselines.optimal_coordinate_baseline_table",
     RB.optimal_coordinate_baseline_table, dict(WORLD)).bad(
    "NaN theta", dict(theta=NAN_TH), "theta").bad("theta of the wrong size", dict(theta=TH[:5]),
                                                   "theta").bad(
    "not a bandit", dict(bandit=PROBS), "bandit").bad(
    "a policy of another world", dict(policy=WB.TabularSoftmax(2, 4)), "policy").bad(
    "theta on another device", dict(theta=TH.to("meta")), "device").meta(
    bandit=BANDIT.to("meta"), theta=TH.to("meta")).bf16("theta")
spec("pgbook.reward.baselines.success_weights", RB.success_weights, dict(rewards=BATCH.r)
     ).floats("rewards").bad("a scalar", dict(rewards=BATCH.r[0]), "rewards").number(
    "success").flag("normalise").meta().bf16("rewards")
RUN = dict(table=torch.tensor([0.1, 0.2, 0.3], dtype=F64), counts=torch.tensor([1.0, 0.0, 2.0],
                                                                               dtype=F64),
           s=S_IDS, r=BATCH.r)
spec("pgbook.reward.baselines.RunningMean", RB.RunningMean, dict(decay=0.1)).number(
    "decay", positive=True).bad("decay = 2", dict(decay=2.0), "decay").bad(
    "an unknown init", dict(init="zero"), "init").bad("init NaN", dict(init=NAN), "init").bad(
    "init True", dict(init=True), "init")
for _q, _fn in (("RunningMean.weights", RB.RunningMean().weights),
                ("running_mean_update", RB.running_mean_update)):
    s = spec(f"pgbook.reward.baselines.{_q}", _fn, dict(RUN),
             out=(lambda r: r[0]) if _q == "running_mean_update" else None).floats("r").floats(
        "table").ids("s", 3).bad("counts of another shape", dict(counts=RUN["counts"][:2]),
                                 "counts").bad(
        "a negative count", dict(counts=-RUN["counts"]), "counts").bad(
        "NaN count", dict(counts=_with(RUN["counts"], NAN)), "counts").bad(
        "r of another shape", dict(r=BATCH.r[:3]), "s and r").bad(
        "a scalar table", dict(table=RUN["table"][0]), "table").device("r").device(
        "counts").grad("table", "r").meta().bf16("table", "r")
SPECS["pgbook.reward.baselines.RunningMean.weights"].bad(
    "a leave-one-out start from one sample", dict(s=S_IDS[:1], r=BATCH.r[:1]), "batch_size")
SPECS["pgbook.reward.baselines.running_mean_update"].number("decay", positive=True).bad(
    "decay = 2", dict(decay=2.0), "decay")

# -- pgbook.reward.turns ----------------------------------------------------------------------
# N = 4 episodes in groups of 2, K = 3 turns; the last episode took two turns
TURN_R = torch.tensor([[0.0, 0.1, 1.0], [-0.1, 0.0, 0.0], [0.0, 1.0, 0.0], [0.2, 0.0, 0.0]],
                      dtype=F64)
TURN_M = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 1, 0]], dtype=F64)
ANCHORS = torch.tensor([[0, 3, 4], [0, 3, 5], [0, 4, -1], [0, 3, -1]])
TOOL_TURNS = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=F64)
TURN_IDS = torch.tensor([[-1, 0, 0, 1, 2], [-1, 0, 1, 1, 2], [-1, 0, 0, 1, -1],
                         [-1, 0, 1, -1, -1]])
spec("pgbook.reward.turns.turn_returns", RT.turn_returns,
     dict(turn_rewards=TURN_R, gamma=0.9, turn_mask=TURN_M)).floats("turn_rewards").bad(
    "1-D turn_rewards", dict(turn_rewards=TURN_R[0], turn_mask=None), "turn_rewards").bad(
    "no turn", dict(turn_rewards=TURN_R[:, :0], turn_mask=None), "turn_rewards").mask(
    "turn_mask").shape("turn_mask").device("turn_mask").number("gamma", positive=True).bad(
    "gamma = 1.5", dict(gamma=1.5), "gamma").grad("turn_rewards").meta().bf16("turn_rewards")
spec("pgbook.reward.turns.turns_to_tokens", RT.turns_to_tokens,
     dict(turn_values=TURN_R, turn_ids=TURN_IDS, mask=MASK)).floats("turn_values").bad(
    "1-D turn_values", dict(turn_values=TURN_R[0]), "turn_values").bad(
    "float turn_ids", dict(turn_ids=TURN_IDS.double()), "turn_ids").bad(
    "a turn past K", dict(turn_ids=_with(TURN_IDS, 3)), "turn_ids").bad(
    "turn id -2", dict(turn_ids=_with(TURN_IDS, -2)), "turn_ids").bad(
    "turn_ids with another number of rows", dict(turn_ids=TURN_IDS[:3]), "turn_ids").bad(
    "a list", dict(turn_ids=TURN_IDS.tolist()), "turn_ids").device("turn_ids").mask(
    "mask", allzero=False).shape("mask").device("mask").grad("turn_values").meta().bf16(
    "turn_values")
TURN_KW = dict(turn_rewards=TURN_R, group_size=2, turn_mask=TURN_M)


def _turn_estimator(s: Spec) -> Spec:
    """The bad inputs every turn-level estimator refuses."""
    return s.floats("turn_rewards").bad("1-D turn_rewards", dict(turn_rewards=TURN_R[0],
                                                                 turn_mask=None),
                                        "turn_rewards").count("group_size").bad(
        "group_size not dividing N", dict(group_size=3), "group_size").mask("turn_mask").shape(
        "turn_mask").device("turn_mask").number("std_eps", positive=True)


_turn_estimator(spec("pgbook.reward.turns.turn_rtg_advantage", RT.turn_rtg_advantage,
                     dict(TURN_KW))).number("gamma", positive=True).bad(
    "gamma = 2", dict(gamma=2.0), "gamma").flag("scale").grad("turn_rewards").meta().bf16(
    "turn_rewards")
_turn_estimator(spec("pgbook.reward.turns.mt_grpo_advantage", RT.mt_grpo_advantage,
                     dict(TURN_KW, tool_turns=TOOL_TURNS))).number("turn_coef").mask(
    "tool_turns", allzero=False).shape("tool_turns").device("tool_turns").grad(
    "turn_rewards").meta().bf16("turn_rewards")
_turn_estimator(spec("pgbook.reward.turns.gigpo_advantage", RT.gigpo_advantage,
                     dict(TURN_KW, anchors=ANCHORS))).number("gamma", positive=True).bad(
    "gamma = 2", dict(gamma=2.0), "gamma").number("step_weight").flag("std_normalise").bad(
    "float anchors", dict(anchors=ANCHORS.double()), "anchors").bad(
    "anchors of another shape", dict(anchors=ANCHORS[:, :2]), "anchors").bad(
    "a negative anchor on a turn taken", dict(anchors=_with(ANCHORS, -1)), "anchors").bad(
    "a list", dict(anchors=ANCHORS.tolist()), "anchors").device("anchors").grad(
    "turn_rewards").skip_meta("anchor-state groups depend on the values (refused on meta with a "
                              "ValueError)").bf16("turn_rewards")
spec("pgbook.reward.turns.compute_turn_advantages", RT.compute_turn_advantages,
     dict(TURN_KW, estimator="gigpo", anchors=ANCHORS)).option("estimator").bad(
    "a group estimator, not a turn-level one", dict(estimator="grpo"), "estimator").bad(
    "an option the estimator does not take", dict(tool_turns=TOOL_TURNS), "tool_turns").floats(
    "turn_rewards").count("group_size").mask("turn_mask").grad("turn_rewards").skip_meta(
    "gigpo's anchor-state groups depend on the values").bf16("turn_rewards")

# -- pgbook.reward.teacher --------------------------------------------------------------------
TEACH = dict(logp=LP, teacher_logp=REF, mask=MASK)
for _name in ("teacher_token_rewards", "teacher_advantages"):
    s = spec(f"pgbook.reward.teacher.{_name}", getattr(RTE, _name), dict(TEACH)).floats(
        "logp").floats("teacher_logp").mask("mask").shape("mask").shape(
        "teacher_logp", match="teacher_logp").device("teacher_logp").device("mask").meta().bf16(
        "logp", "teacher_logp")
SPECS["pgbook.reward.teacher.teacher_advantages"].number("discount", positive=True).bad(
    "discount = 1.5", dict(discount=1.5), "discount")
spec("pgbook.reward.teacher.discounted_reward_to_go", RTE.discounted_reward_to_go,
     dict(token_rewards=ADV, mask=MASK, discount=0.9)).floats("token_rewards").bad(
    "a scalar", dict(token_rewards=ADV[0, 0], mask=MASK[0, 0]), "token_rewards").mask(
    "mask").shape("mask").device("mask").number("discount", positive=True).bad(
    "discount = 1.5", dict(discount=1.5), "discount").grad("token_rewards").meta().bf16(
    "token_rewards")
spec("pgbook.reward.teacher.teacher_gate", RTE.teacher_gate,
     dict(rewards=R01, group_size=4, gate="all_fail")).option("gate").bad(
    "a teacher signal, not a gate", dict(gate="reverse_kl"), "gate").floats("rewards").count(
    "group_size").bad("group_size not dividing N", dict(group_size=3), "group_size").meta(
    ).bf16("rewards")
GATE = torch.tensor([True, False, True, True])
spec("pgbook.reward.teacher.mix_teacher", RTE.mix_teacher,
     dict(advantages_tok=ADV, teacher_adv=REF, mask=MASK, coef=0.5, gate=GATE)).floats(
    "advantages_tok").floats("teacher_adv").bad(
    "1-D", dict(advantages_tok=ADV[0], teacher_adv=REF[0], mask=MASK[0]), "advantages_tok").shape(
    "teacher_adv", match="teacher_adv").mask("mask").shape("mask").device("mask").device(
    "teacher_adv").number("coef", positive=True).mask("gate", allzero=False).bad(
    "gate of another length", dict(gate=GATE[:3]), "gate").device("gate").grad().skip_grad(
    "the teacher's term is a stop-gradient weight: nothing in the output is differentiable"
).meta().bf16("advantages_tok", "teacher_adv")
spec("pgbook.reward.teacher.opd_advantages", RTE.opd_advantages,
     dict(advantages=R4, logp=LP, teacher_logp=REF, mask=MASK, rewards=R4, group_size=2,
          gate="zero_variance")).floats("advantages").bad(
    "advantages of another length", dict(advantages=R4[:3]), "advantages").floats(
    "logp").floats("teacher_logp").mask("mask").shape("mask").option("signal").option(
    "gate").bad("a gate without rewards", dict(rewards=None), "rewards").floats("rewards").bad(
    "rewards of another length", dict(rewards=R4[:3]), "rewards").count("group_size").bad(
    "group_size not dividing N", dict(group_size=3), "group_size").number(
    "coef", positive=True).device("mask").device("teacher_logp").meta().bf16(
    "advantages", "logp", "teacher_logp")

# -- pgbook.worlds.bandits --------------------------------------------------------------------
RHO, MEANS = BANDIT.rho, BANDIT.means
spec("pgbook.worlds.bandits.Bandit", WB.Bandit, dict(rho=RHO, means=MEANS)).floats(
    "rho", inf=False).floats("means").bad("rho not summing to one", dict(rho=RHO * 2), "rho").bad(
    "means with another number of contexts", dict(means=MEANS[:2]), "means").bad(
    "negative noise", dict(noise_std=-1.0), "noise_std").bad(
    "a name that is not a string", dict(name=3), "name").bad(
    "action names of the wrong length", dict(action_names=["a"]), "action_names").device(
    "means").meta(rho=RHO.to("meta"), means=MEANS.to("meta")).skip_bf16(
    "a world, not a computation: bf16 worlds are covered by Bandit.to")
spec("pgbook.worlds.bandits.Bandit.to", BANDIT.to, {}).bad(
    "an integer dtype", lambda: BANDIT.to(torch.long), "dtype").bad(
    "not a device or dtype", lambda: BANDIT.to("nowhere"), "to").bad(
    "an unknown keyword", lambda: BANDIT.to(colour="red"), "to").skip_meta(
    "moves a world (to('meta') is tested as a good call)").skip_bf16(
    "moves a world (to(torch.bfloat16) is tested in test_contract_numerics)")
spec("pgbook.worlds.bandits.Bandit.shifted", BANDIT.shifted, dict(c=1.0)).number("c")
for _name in ("J", "values", "reward_variance", "advantages"):
    spec(f"pgbook.worlds.bandits.Bandit.{_name}", getattr(BANDIT, _name), dict(probs=PROBS)
         ).floats("probs", inf=False).bad("probs not summing to one", dict(probs=PROBS * 0.5),
                                          "probs").bad(
        "probs of another shape", dict(probs=PROBS[:, :3]), "probs").device("probs").grad(
        "probs").meta(_fn=getattr(BANDIT.to("meta"), _name), probs=PROBS.to("meta")).bf16("probs")
SPECS["pgbook.worlds.bandits.Bandit.J"].bad(
    "NaN rewards", dict(rewards=torch.full_like(MEANS, NAN)), "rewards").bad(
    "rewards of another shape", dict(rewards=MEANS[:2]), "rewards").bad(
    "rewards on another device", dict(rewards=MEANS.to("meta")), "device")
spec("pgbook.worlds.bandits.Bandit.sample", BANDIT.sample, dict(probs=PROBS, n=5, generator=G0),
     out=lambda b: b.s).count("n").bad("n = ()", dict(n=()), "n").bad(
    "n = (3, 0)", dict(n=(3, 0)), "n").bad("no generator", dict(generator=None), "generator").bad(
    "4-D probs", dict(probs=PROBS[None, None]), "probs").floats("probs", inf=False).skip_meta(
    "sampling needs values").bf16("probs", close=False)
spec("pgbook.worlds.bandits.BanditBatch", WB.BanditBatch, dict(s=S_IDS, a=A_IDS, r=BATCH.r)
     ).bad("float ids", dict(s=S_IDS.double()), "s").bad("integer rewards", dict(r=S_IDS), "r").bad(
    "shapes differ", dict(a=A_IDS[:3]), "s, a and r").bad("a list", dict(a=A_IDS.tolist()), "a").device(
    "r").skip_grad("a record").meta(s=S_IDS.to("meta"), a=A_IDS.to("meta"), r=BATCH.r.to("meta")).skip_bf16(
    "a record: it stores, it computes nothing")
for _pol, _th, _tag in ((POL, TH, "tabular"), (LIN, LTH, "linear")):
    for _name in ("logits", "probs", "log_probs", "scores"):
        _owner = type(_pol).__name__ if _name == "logits" else "SoftmaxPolicy"
        _q = f"pgbook.worlds.bandits.{_owner}.{_name}"
        spec(_q if _q not in SPECS else f"{_q} ({_tag})", getattr(_pol, _name),
             dict(theta=_th)).floats("theta").bad("theta of the wrong size", dict(theta=_th[:1]),
                                                  "theta").grad(
            *(() if _name == "scores" else ("theta",))).meta(
            _fn=getattr(_pol if _tag == "tabular" else WB.LinearSoftmax(LIN.features.to("meta")),
                        _name), theta=_th.to("meta")).bf16("theta")
spec("pgbook.worlds.bandits.SoftmaxPolicy.log_prob", POL.log_prob, dict(theta=TH, s=S_IDS, a=A_IDS)
     ).ids("s", 3).ids("a", 4).bad("s and a of different shapes", dict(a=A_IDS[:3]), "s and a").floats(
    "theta").device("theta").grad("theta").meta(
    theta=TH.to("meta"), s=S_IDS.to("meta"), a=A_IDS.to("meta")).bf16("theta")
spec("pgbook.worlds.bandits.SoftmaxPolicy.init", POL.init, {}).bad(
    "an integer dtype", dict(dtype=torch.long), "dtype").bad("an integer like", dict(like=S_IDS),
                                                               "like").meta(
    device="meta").skip_bf16("takes no float input")
spec("pgbook.worlds.bandits.TabularSoftmax", WB.TabularSoftmax, dict(n_contexts=3, n_actions=4)
     ).count("n_contexts").count("n_actions")
spec("pgbook.worlds.bandits.LinearSoftmax", WB.LinearSoftmax, dict(features=LIN.features)).floats(
    "features").bad("2-D features", dict(features=LIN.features[0]), "features").bad(
    "empty features", dict(features=LIN.features[:0]), "features").values_only(
    "a world: its methods (logits, probs, scores) have the meta and bfloat16 runs")
for _name in ("context_bandit", "noisy_bandit", "two_param_bandit"):
    s = spec(f"pgbook.worlds.bandits.{_name}", getattr(WB, _name), {}).bad(
        "an integer dtype", dict(dtype=torch.long), "dtype").bad(
        "a string dtype", dict(dtype="float64"), "dtype")
    if _name != "two_param_bandit":
        s.number("noise_std", positive=True)
spec("pgbook.worlds.bandits.offset_bandit", WB.offset_bandit, {}).number("offset").bad(
    "an integer dtype", dict(dtype=torch.long), "dtype")
spec("pgbook.worlds.bandits.difficulty_bandit", WB.difficulty_bandit,
     dict(p_success=[0.2, 0.9])).bad("NaN", dict(p_success=[NAN, 0.5]), "p_success").bad(
    "p = 1", dict(p_success=[1.0]), "p_success").bad("p = 0", dict(p_success=[0.0]), "p_success").bad(
    "empty", dict(p_success=[]), "p_success").bad("2-D", dict(p_success=[[0.5]]), "p_success").bad(
    "a string", dict(p_success="0.5"), "p_success").count("n_actions").bad(
    "one action", dict(n_actions=1), "n_actions").bad("an integer dtype", dict(dtype=torch.long),
                                                     "dtype")
spec("pgbook.worlds.bandits.sample_groups", WB.sample_groups,
     dict(bandit=BANDIT, probs=PROBS, n_groups=3, group_size=4, generator=G0),
     out=lambda b: b.a).count("n_groups").count("group_size").bad(
    "not a bandit", dict(bandit=PROBS), "bandit").bad("NaN probs", dict(probs=_with(PROBS, NAN)),
                                                      "probs").bad(
    "no generator", dict(generator=1), "generator").skip_meta("sampling needs values").skip_bf16(
    "sampling is done in float64 for low-precision probs")

# -- pgbook.exact.bandits ---------------------------------------------------------------------
def world(qualname: str, fn: Callable, out: Callable | None = None, theta_as: str = "theta",
          **kw: object) -> Spec:
    """A function of (bandit, policy, θ, ...) with the common bad worlds (θ passed as
    ``theta_as``)."""
    t = theta_as
    return spec(qualname, fn, dict(bandit=BANDIT, policy=POL, **{t: TH}, **kw), out=out).bad(
        f"NaN {t}", {t: NAN_TH}, t).bad(f"{t} of the wrong size", {t: TH[:5]}, t).bad(
        f"integer {t}", {t: TH.long()}, t).bad("not a bandit", dict(bandit=PROBS), "bandit").bad(
        "a policy of another world", dict(policy=WB.TabularSoftmax(2, 4)), "policy").bad(
        f"{t} on another device", {t: TH.to("meta")}, "device")


META_WORLD = dict(bandit=BANDIT.to("meta"), theta=TH.to("meta"))
world("pgbook.exact.bandits.check_world", EB.check_world).meta(**META_WORLD).bf16("theta")
world("pgbook.exact.bandits.exact_J", EB.exact_J).grad("theta").meta(**META_WORLD).bf16("theta")
world("pgbook.exact.bandits.exact_gradient", EB.exact_gradient).meta(**META_WORLD).bf16("theta")
world("pgbook.exact.bandits.exact_estimator_moments", EB.exact_estimator_moments,
      baseline="value").bad("unknown baseline", dict(baseline="nope"), "baseline").meta(
    **META_WORLD).bf16("theta")
world("pgbook.exact.bandits.exact_total_variance", EB.exact_total_variance, baseline=0.5).count(
    "n_samples").bad("NaN baseline", dict(baseline=NAN), "baseline").meta(**META_WORLD).bf16("theta")
world("pgbook.exact.bandits.exact_total_variances", EB.exact_total_variances,
      tables=torch.zeros(2, 3, 4, dtype=F64)).count("n_samples").floats("tables").bad(
    "tables of another shape", dict(tables=torch.zeros(3, 3, dtype=F64)), "tables").device(
    "tables").meta(tables=torch.zeros(2, 3, 4, dtype=F64, device="meta"), **META_WORLD).bf16(
    "theta", "tables")
world("pgbook.exact.bandits.baseline_bias", EB.baseline_bias,
      baseline=torch.ones(3, 4, dtype=F64).cumsum(1)).grad("baseline").bad("NaN table", dict(baseline=torch.full(
        (3, 4), NAN, dtype=F64)), "baseline").bad("a table of another shape", dict(
        baseline=torch.ones(4, 3, dtype=F64)), "baseline").meta(
    baseline=torch.ones(3, 4, dtype=F64, device="meta"), **META_WORLD).bf16("theta")
world("pgbook.exact.bandits.policy_gradient_estimates", EB.policy_gradient_estimates,
      n_samples=4, n_estimates=3, generator=G0).count("n_samples").count("n_estimates").bad(
    "NaN constant baseline", dict(baseline=NAN), "baseline").bad(
    "NaN table baseline", dict(baseline=torch.full((3,), NAN, dtype=F64)), "baseline").bad(
    "no generator", dict(generator=0), "generator").skip_meta("sampling needs values").bf16(
    "theta", close=False)
for _name, _table in (("exact_control_variate_moments", torch.full((3, 4), 0.5, dtype=F64)),
                      ("exact_coordinate_baseline_variance", torch.full((3, 12), 0.5, dtype=F64))):
    world(f"pgbook.exact.bandits.{_name}", getattr(EB, _name), table=_table,
          out=(lambda r: r[1]) if _name == "exact_control_variate_moments" else None).floats(
        "table").bad("a table of another shape", dict(table=_table[:, :2]), "table").device(
        "table").meta(table=_table.to("meta"), **META_WORLD).bf16("theta", "table")
SPECS["pgbook.exact.bandits.exact_coordinate_baseline_variance"].count("n_samples")
spec("pgbook.exact.bandits.reinforce_surrogate", EB.reinforce_surrogate,
     dict(policy=POL, theta=TH, batch=BATCH, weights=BATCH.r)).floats("weights").bad(
    "weights of another shape", dict(weights=BATCH.r[:3]), "weights").bad(
    "a bad id", dict(batch=WB.BanditBatch(_with(S_IDS, 3), A_IDS, BATCH.r)), "s").bad(
    "not a batch", dict(batch=(S_IDS, A_IDS)), "batch").grad("theta").meta(
    theta=TH.to("meta"), batch=WB.BanditBatch(S_IDS.to("meta"), A_IDS.to("meta"),
                                              BATCH.r.to("meta")),
    weights=BATCH.r.to("meta")).bf16("theta", "weights")
spec("pgbook.exact.bandits.score", EB.score, dict(policy=POL, theta=TH, s=S_IDS, a=A_IDS)).ids(
    "s", 3).ids("a", 4).floats("theta").bad("not a policy", dict(policy=BANDIT), "policy").meta(
    theta=TH.to("meta"), s=S_IDS.to("meta"), a=A_IDS.to("meta")).bf16("theta")
spec("pgbook.exact.bandits.softmax_score", EB.softmax_score, dict(probs=PROBS, s=S_IDS, a=A_IDS)
     ).floats("probs", inf=False).ids("s", 3).ids("a", 4).bad(
    "s and a of different shapes", dict(a=A_IDS[:2]), "s and a").device("s").grad("probs").meta(
    probs=PROBS.to("meta"), s=S_IDS.to("meta"), a=A_IDS.to("meta")).bf16("probs")
LPT, LPT2 = POL.log_probs(TH), POL.log_probs(0.5 * TH)
spec("pgbook.exact.bandits.state_kl", EB.state_kl, dict(logp_ref=LPT, logp=LPT2)).floats(
    "logp_ref", inf=False).floats("logp", inf=False).bad(
    "a 1-D table", dict(logp_ref=LPT[0]), "logp_ref and logp").bad(
    "leading dims that do not broadcast", dict(logp=torch.stack([LPT2] * 3),
                                               logp_ref=torch.stack([LPT] * 2)), "broadcast").bad(
    "+inf", dict(logp=_with(LPT2, INF)), "logp").device("logp").grad("logp_ref", "logp").meta(
    ).bf16("logp_ref", "logp")
spec("pgbook.exact.bandits.exact_kl", EB.exact_kl, dict(bandit=BANDIT, logp_ref=LPT, logp=LPT2)
     ).floats("logp_ref", inf=False).floats("logp", inf=False).bad(
    "a (4,) table against a (3, 4) one", dict(logp_ref=LPT[0]), "logp_ref").device("logp").grad(
    "logp_ref", "logp").meta(bandit=BANDIT.to("meta"), logp_ref=LPT.to("meta"),
                             logp=LPT2.to("meta")).bf16("logp_ref", "logp")

# -- pgbook.exact.groups ----------------------------------------------------------------------
P_SUCC = torch.tensor([0.2, 0.5, 0.9], dtype=F64)
world("pgbook.exact.groups.exact_group_moments", EG.exact_group_moments,
      out=lambda r: r["cov"], group_size=3).count("group_size").option("estimator").bad(
    "a batch estimator", dict(estimator="group_mean_batch_std_seq"), "estimator").option(
    "enumerate").bad("an option the estimator does not take", dict(temperature=2.0),
                     "temperature").bad("a noisy bandit", dict(bandit=WB.noisy_bandit()),
                                            "bandit").meta(
    enumerate="sequences", **META_WORLD).bf16("theta")   # counts: no meta kernel for combinations
world("pgbook.exact.groups.context_gradients", EG.context_gradients).meta(**META_WORLD).bf16(
    "theta")
world("pgbook.exact.groups.context_weights", EG.context_weights, group_size=3).count(
    "group_size").option("estimator").meta(enumerate="sequences", **META_WORLD).bf16("theta")
world("pgbook.exact.groups.group_estimates", EG.group_estimates,
      batch=WB.sample_groups(BANDIT, PROBS, 3, 4, pg.make_generator(8))).bad(
    "1-D batch", dict(batch=BATCH), "batch").bad(
    "a bad id", dict(batch=WB.BanditBatch(_with(BATCH2.s, 5), BATCH2.a, BATCH2.r)), "batch.s").option(
    "estimator").skip_meta("the batch's ids need values").bf16("theta")
spec("pgbook.exact.groups.group_sequences", EG.group_sequences, dict(n_actions=3, group_size=2)
     ).count("n_actions").count("group_size").bad("too many to enumerate",
                                                   dict(n_actions=20, group_size=6), "A^G").meta(
    device="meta").skip_bf16("returns ids")
spec("pgbook.exact.groups.group_counts", EG.group_counts, dict(n_actions=3, group_size=2)).count(
    "n_actions").count("group_size").skip_meta(
    "torch.combinations has no meta kernel (exact_group_moments runs on meta with "
    "enumerate='sequences')").skip_bf16("returns ids")
spec("pgbook.exact.groups.counts_to_sequences", EG.counts_to_sequences,
     dict(counts=EG.group_counts(3, 2))).bad("negative counts", dict(counts=-EG.group_counts(3, 2)),
                                             "counts").bad(
    "rows with different sums", dict(counts=torch.tensor([[1, 0], [1, 1]])), "counts").bad(
    "float counts", dict(counts=EG.group_counts(3, 2).double()), "counts").bad(
    "empty", dict(counts=torch.zeros(0, 2, dtype=torch.long)), "counts").skip_meta(
    "G is read from the counts' values").skip_bf16("takes integer counts")
spec("pgbook.exact.groups.zero_variance_probability", EG.zero_variance_probability,
     dict(bandit=BANDIT, probs=PROBS, group_size=3)).count("group_size").floats(
    "probs", inf=False).bad("not a bandit", dict(bandit=None), "bandit").bad(
    "3-D probs", dict(probs=PROBS[None]), "probs").grad("probs").meta(
    bandit=BANDIT.to("meta"), probs=PROBS.to("meta")).bf16("probs")
spec("pgbook.exact.groups.binary_group_weight", EG.binary_group_weight,
     dict(p=P_SUCC, group_size=4)).floats("p").bad("p = 1", dict(p=torch.ones(2, dtype=F64)), "p").bad(
    "p = 0", dict(p=torch.zeros(2, dtype=F64)), "p").count("group_size").option("estimator").grad(
    "p").meta().bf16("p")
spec("pgbook.exact.groups.binomial_zero_variance", EG.binomial_zero_variance,
     dict(p=P_SUCC, group_size=4)).floats("p").bad("p = 1.5", dict(p=P_SUCC + 1), "p").count(
    "group_size").grad("p").meta().bf16("p")
spec("pgbook.exact.groups.grpo_large_group_weight", EG.grpo_large_group_weight, dict(p=P_SUCC)
     ).floats("p").bad("p = 0", dict(p=torch.zeros(1, dtype=F64)), "p").grad("p").meta().bf16("p")
spec("pgbook.exact.groups.n_group_outcomes", EG.n_group_outcomes, dict(n_actions=3, group_size=2)
     ).count("n_actions").count("group_size")

# -- pgbook.exact.offpolicy -------------------------------------------------------------------
spec("pgbook.exact.offpolicy.off_policy_J", EO.off_policy_J,
     dict(bandit=BANDIT, probs=PROBS, behaviour_probs=MU, batch=BATCH)).bad(
    "a negative id", dict(batch=WB.BanditBatch(_with(S_IDS, -1), A_IDS, BATCH.r)), "batch.s").bad(
    "an id past the end", dict(batch=WB.BanditBatch(S_IDS, _with(A_IDS, 4), BATCH.r)), "batch.a").bad(
    "a zero in mu", dict(behaviour_probs=torch.tensor([[1.0, 0, 0, 0]] * 3, dtype=F64)),
    "behaviour_probs").floats("probs", inf=False).bad(
    "NaN rewards", dict(batch=WB.BanditBatch(S_IDS, A_IDS, _with(BATCH.r, NAN))), "rewards").bad(
    "not a batch", dict(batch=None), "batch").flag("self_normalised").device(
    "behaviour_probs").skip_meta("the batch's ids need values").bf16("probs", "behaviour_probs")
world("pgbook.exact.offpolicy.off_policy_gradient", EO.off_policy_gradient,
      behaviour_probs=MU, batch=BATCH2).bad(
    "a negative id", dict(batch=WB.BanditBatch(_with(BATCH2.s, -1), BATCH2.a, BATCH2.r)),
    "batch.s").bad("3-D batch", dict(batch=WB.BanditBatch(BATCH2.s[None], BATCH2.a[None],
                                                            BATCH2.r[None])), "batch").floats(
    "behaviour_probs", inf=False).flag("self_normalised").bad(
    "unknown baseline", dict(baseline="nope"), "baseline").skip_meta(
    "the batch's ids need values").bf16("theta")
spec("pgbook.exact.offpolicy.exact_weight_second_moment", EO.exact_weight_second_moment,
     dict(probs=PROBS, behaviour_probs=MU)).floats("probs", inf=False).floats(
    "behaviour_probs", inf=False).bad("tables of different sizes", dict(behaviour_probs=MU[:, :3]),
                                      "probs and behaviour_probs").bad(
    "rho of the wrong size", dict(rho=torch.tensor([1.0], dtype=F64)), "rho").device(
    "behaviour_probs").grad("probs").meta().bf16("probs", "behaviour_probs")
spec("pgbook.exact.offpolicy.exact_is_J_variance", EO.exact_is_J_variance,
     dict(bandit=BANDIT, probs=PROBS, behaviour_probs=MU)).count("n_samples").flag(
    "self_normalised").floats("probs", inf=False).floats("behaviour_probs", inf=False).bad(
    "not a bandit", dict(bandit=None), "bandit").device("probs").grad("probs").meta(
    bandit=BANDIT.to("meta"), probs=PROBS.to("meta"), behaviour_probs=MU.to("meta")).bf16(
    "probs", "behaviour_probs")
spec("pgbook.exact.offpolicy.snis_bias_coefficient", EO.snis_bias_coefficient,
     dict(bandit=BANDIT, probs=PROBS, behaviour_probs=MU)).floats("probs", inf=False).floats(
    "behaviour_probs", inf=False).bad("tables of different sizes",
                                      dict(behaviour_probs=MU[:2]), "probs and behaviour_probs").grad(
    "probs").meta(bandit=BANDIT.to("meta"), probs=PROBS.to("meta"),
                  behaviour_probs=MU.to("meta")).bf16("probs", "behaviour_probs")

spec("pgbook.exact.offpolicy.exact_tis_J_moments", EO.exact_tis_J_moments,
     dict(bandit=BANDIT, probs=PROBS, behaviour_probs=MU, c=1.5), out=lambda r: r[1]).bad(
    "c = 0", dict(c=0.0), "c").bad("c NaN", dict(c=NAN), "c").bad("c a string", dict(c="1"), "c").bad(
    "c True", dict(c=True), "c").bad("a negative level in a grid",
                                     dict(c=torch.tensor([1.0, -1.0], dtype=F64)), "c").bad(
    "levels on another device", dict(c=torch.tensor([1.0], device="meta")), "device").floats(
    "probs", inf=False).floats("behaviour_probs", inf=False).bad(
    "a zero in mu", dict(behaviour_probs=torch.tensor([[1.0, 0, 0, 0]] * 3, dtype=F64)),
    "behaviour_probs").bad("not a bandit", dict(bandit=None), "bandit").count("n_samples").device(
    "behaviour_probs").grad("probs").meta(bandit=BANDIT.to("meta"), probs=PROBS.to("meta"),
                                          behaviour_probs=MU.to("meta")).bf16(
    "probs", "behaviour_probs")

# -- pgbook.exact.proximal --------------------------------------------------------------------
world("pgbook.exact.proximal.fisher_information", EP.fisher_information).meta(**META_WORLD).bf16(
    "theta")
world("pgbook.exact.proximal.kl_gradient", EP.kl_gradient, theta_ref=0.5 * TH).bad(
    "NaN theta_ref", dict(theta_ref=NAN_TH), "theta_ref").meta(
    theta_ref=TH.to("meta"), **META_WORLD).bf16("theta", "theta_ref")
EYE = torch.eye(12, dtype=F64)
spec("pgbook.exact.proximal.check_positive_definite", EP.check_positive_definite, dict(M=EYE)
     ).floats("M").bad("not symmetric", dict(M=EYE + torch.triu(EYE.roll(1, 1))), "M").bad(
    "singular", dict(M=EYE * 0), "M").bad("not square", dict(M=EYE[:3]), "M").bad(
    "another size", dict(size=3), "M").skip_grad(
    "returns its input; gradcheck's one-entry perturbation breaks the symmetry it checks").meta(
    ).bf16("M")
spec("pgbook.exact.proximal.preconditioned_step", EP.preconditioned_step,
     dict(theta=TH, grad=TH.flip(0), M=EYE, eta=0.1)).floats("theta").floats("grad").bad(
    "M not positive definite", dict(M=-EYE), "M").number("eta", positive=True).device(
    "grad").bad("grad of another size", dict(grad=TH[:3]), "grad").grad("theta", "grad").meta(
    ).bf16("theta", "grad")
world("pgbook.exact.proximal.proximal_gradient_step", EP.proximal_gradient_step, eta=0.1).number(
    "eta", positive=True).meta(**META_WORLD).bf16("theta")
world("pgbook.exact.proximal.natural_gradient", EP.natural_gradient).number(
    "damping", positive=True).number("rtol").number("atol").meta(**META_WORLD).bf16("theta")
world("pgbook.exact.proximal.proximal_objective", EP.proximal_objective, theta_as="theta_k",
      eta=0.5, out=lambda f: f(TH)).number(
    "eta", positive=True).option("divergence").bad(
    "a divergence matrix that is not positive definite", dict(divergence=-EYE), "divergence").bad(
    "NaN theta_k", dict(theta_k=NAN_TH), "theta_k").flag("linearise").skip_meta(
    "returns a function; proximal_point_step covers its shapes").skip_bf16(
    "returns a function; proximal_point_step covers bfloat16")
world("pgbook.exact.proximal.proximal_point_step", EP.proximal_point_step, theta_as="theta_k",
      eta=0.5, max_iter=20).option("solver").option(
    "divergence").count("max_iter").number("tol", positive=True).bad(
    "polish = -1", dict(polish=-1), "polish").number("eta", positive=True).bad(
    "NaN theta_k", dict(theta_k=NAN_TH), "theta_k").meta(
    bandit=BANDIT.to("meta"), theta_k=TH.to("meta")).bf16("theta_k")
world("pgbook.exact.proximal.update_path", EP.update_path, theta_as="theta0", eta=0.1,
      n_steps=2).option("rule").count("n_steps").number("eta", positive=True).bad(
    "kl_step with the proximal point", dict(rule="proximal_point", kl_step=0.1), "kl_step").number(
    "kl_step", positive=True).meta(bandit=BANDIT.to("meta"), theta0=TH.to("meta")).bf16("theta0")
world("pgbook.exact.proximal.step_to_kl", EP.step_to_kl, direction=TH.flip(0), delta=0.01).number(
    "delta", positive=True).bad("NaN direction", dict(direction=NAN_TH), "direction").count(
    "rounds").bad("points = 1", dict(points=1), "points").skip_meta(
    "a root search on values (returns 0 on meta)").bf16("theta", "direction")
world("pgbook.exact.proximal.reference_point_path", EP.reference_point_path,
      theta_as="theta0", eta=0.5, n_steps=2, lr=0.1).count("n_steps").number("lr", positive=True).bad(
    "refresh = 0", dict(refresh=0), "refresh").bad("refresh = 'never'", dict(refresh="never"),
                                                    "refresh").bad(
    "tau = 1.5", dict(refresh="ema", tau=1.5), "tau").option("divergence").meta(
    bandit=BANDIT.to("meta"), theta0=TH.to("meta")).bf16("theta0")

# -- pgbook.exact.stats -----------------------------------------------------------------------
EXACT3 = torch.tensor([0.1, -0.2, 0.3], dtype=F64)
spec("pgbook.exact.stats.EstimatorStats", EST.EstimatorStats, dict(estimates=ESTIMATES)).floats(
    "estimates").bad("one estimate", dict(estimates=ESTIMATES[:1]), "estimates").bad(
    "1-D", dict(estimates=ESTIMATES[0]), "estimates").skip_grad("a record of estimates").meta(
    ).bf16("estimates")
for _name in ("z_scores", "max_abs_z", "relative_error", "summary"):
    s = spec(f"pgbook.exact.stats.EstimatorStats.{_name}", getattr(ESTATS, _name),
             dict(exact=EXACT3)).floats("exact", dtype=False).bad(
        "exact of another size", dict(exact=EXACT3[:2]), "exact")
    if _name != "z_scores":
        s.values_only("returns a Python number or string")
SPECS["pgbook.exact.stats.EstimatorStats.z_scores"].device("exact").grad("exact").meta(
    _fn=EST.EstimatorStats(ESTIMATES.to("meta")).z_scores, exact=EXACT3.to("meta")).skip_bf16(
    "statistics run in the estimates' dtype (EstimatorStats's own bfloat16 run covers it)")
SPECS["pgbook.exact.stats.EstimatorStats.relative_error"].bad(
    "a zero exact vector", dict(exact=torch.zeros(3, dtype=F64)), "exact")
for _name in ("mse", "mse_stderr", "bias_squared"):
    spec(f"pgbook.exact.stats.EstimatorStats.{_name}", getattr(ESTATS, _name), dict(exact=EXACT3)
         ).floats("exact", dtype=False).bad("exact of another size", dict(exact=EXACT3[:2]),
                                            "exact").device("exact").grad("exact").meta(
        _fn=getattr(EST.EstimatorStats(ESTIMATES.to("meta")), _name),
        exact=EXACT3.to("meta")).skip_bf16(
        "statistics run in the estimates' dtype (EstimatorStats's own bfloat16 run covers it)")
SEEDS = EST.compare_over_seeds(lambda m, s: float(s) + len(m) + 0.1 * s * s, [0, 1, 2],
                               methods=["a", "bb"])
record("pgbook.exact.stats.SeedComparison", EST.SeedComparison, "values", methods=("a",),
       seeds=(0, 1))
spec("pgbook.exact.stats.SeedComparison.difference", SEEDS.difference, dict(a="bb", b="a")).bad(
    "an unknown method", dict(a="c"), "method").bad("a number", dict(b=1), "method")
spec("pgbook.exact.stats.SeedComparison.summary", SEEDS.summary, dict(baseline="bb")).bad(
    "an unknown baseline", dict(baseline="c"), "method")
spec("pgbook.exact.stats.compare_over_seeds", EST.compare_over_seeds,
     dict(fn=lambda m, s: s + len(m) + 0.5 * s * s, seeds=[0, 1, 2], methods=["a", "bb"]),
     out=lambda r: r.values).bad("fn not callable", dict(fn=3), "fn").bad(
    "one seed", dict(seeds=[0]), "seeds").bad("a repeated seed", dict(seeds=[0, 0]), "seeds").bad(
    "a float seed", dict(seeds=[0, 1.5]), "seeds").bad("methods a string", dict(methods="ab"),
                                                       "methods").bad(
    "a repeated method", dict(methods=["a", "a"]), "methods").bad(
    "fn returning NaN", dict(fn=lambda m, s: NAN), "fn returned").bad(
    "fn returning a vector", dict(fn=lambda m, s: torch.zeros(2)), "fn returned").bad(
    "fn returning a string", dict(fn=lambda m, s: "1"), "fn returned").bad(
    "dicts with different methods", dict(methods=None, fn=lambda s: {f"m{s}": 1.0}),
    "fn returned").bad("an unknown option", dict(method="a"), "method").values_only(
    "runs Python callables; the values come back as float64 on the CPU")
spec("pgbook.exact.stats.EstimatorStats.is_unbiased", ESTATS.is_unbiased, dict(exact=EXACT3)
     ).floats("exact", dtype=False).number("z", positive=True).values_only("returns a bool")
spec("pgbook.exact.stats.variance_difference", EST.variance_difference,
     dict(a=ESTATS, b=EST.EstimatorStats(ESTIMATES.flip(0))), out=lambda r: r[0]).bad(
    "not EstimatorStats", dict(b=ESTIMATES), "b").bad(
    "different shapes", dict(b=EST.EstimatorStats(ESTIMATES[:5])), "a and b").meta(
    a=EST.EstimatorStats(ESTIMATES.to("meta")), b=EST.EstimatorStats(ESTIMATES.to("meta"))).skip_bf16(
    "takes EstimatorStats, in their estimates' dtype")
spec("pgbook.exact.stats.cosine", EST.cosine, dict(u=ESTIMATES, v=EXACT3)).floats("u").floats(
    "v").bad("v of another size", dict(v=EXACT3[:2]), "v").device("v").grad("u", "v").meta(
    ).bf16("u", "v")
spec("pgbook.exact.stats.relative_error", EST.relative_error, dict(estimate=ESTIMATES, exact=EXACT3)
     ).floats("estimate").floats("exact").bad("a zero exact vector",
                                              dict(exact=torch.zeros(3, dtype=F64)), "exact").bad(
    "exact of another size", dict(exact=EXACT3[:2]), "estimate").device("exact").grad(
    "estimate", "exact").meta().bf16("estimate", "exact")
spec("pgbook.exact.stats.estimates_from_loss", EST.estimates_from_loss,
     dict(loss_fn=lambda t, b: (t * b).sum(), theta=EXACT3, batches=ESTIMATES)).bad(
    "not callable", dict(loss_fn=3), "loss_fn").bad("integer theta", dict(theta=EXACT3.long()),
                                                     "theta").bad(
    "batches of different lengths", dict(batches=(ESTIMATES, ESTIMATES[:3]), loss_fn=lambda t, b:
                                         (t * b[0]).sum()), "batches").bad(
    "a list batch", dict(batches=[ESTIMATES]), "batches").device("batches").grad("batches").meta().bf16(
    "theta", "batches")

# -- pgbook.worlds.seqlm ----------------------------------------------------------------------
SX, STOK, SMASK = SEQS.x, SEQS.tokens, SEQS.mask
spec("pgbook.worlds.seqlm.SeqSpace", WS.SeqSpace,
     dict(tokens=("a", "b"), max_len=2, rho=SPACE.rho)).bad("no tokens", dict(tokens=()),
                                                            "tokens").bad(
    "eos among the tokens", dict(tokens=("a", "⏎")), "tokens").count("max_len").floats(
    "rho", inf=False).bad("too many responses to enumerate", dict(max_len=40), "V**T").bad(
    "contexts of the wrong length", dict(contexts=["x"]), "contexts").meta(
    rho=SPACE.rho.to("meta")).skip_bf16("a world (ρ sets the dtype), not a computation")
spec("pgbook.worlds.seqlm.SeqSpace.response_mask", SPACE.response_mask, dict(tokens=STOK)).bad(
    "a token id past V", dict(tokens=_with(STOK, 3)), "tokens").bad(
    "another length", dict(tokens=_wider(STOK)), "tokens").bad(
    "dtype a string", dict(dtype="float"), "dtype").meta(tokens=STOK.to("meta")).skip_bf16(
    "takes ids")
spec("pgbook.worlds.seqlm.SeqSpace.encode", SPACE.encode, dict(texts=["ab", "b"])).bad(
    "an unknown token", dict(texts=["az"]), "texts").bad("too long", dict(texts=["aba"]), "texts").bad(
    "not strings", dict(texts=[1, 2]), "texts")
spec("pgbook.worlds.seqlm.SeqSpace.decode", SPACE.decode, dict(tokens=STOK)).bad(
    "a token id past V", dict(tokens=_with(STOK, 7)), "tokens").bad(
    "a list", dict(tokens=STOK.tolist()), "tokens").values_only("returns strings")
spec("pgbook.worlds.seqlm.SeqSpace.sample_contexts", SPACE.sample_contexts,
     dict(n=4, generator=G0)).count("n").bad("no generator", dict(generator=None), "generator")
spec("pgbook.worlds.seqlm.SeqSpace.check", SPACE.check, dict(x=SX, tokens=STOK, mask=SMASK)).ids(
    "x", 2).ids("tokens", 3).mask("mask").shape("mask").device("mask").meta(
    x=SX.to("meta"), tokens=STOK.to("meta"), mask=SMASK.to("meta")).skip_bf16("checks ids")
spec("pgbook.worlds.seqlm.Sequences", WS.Sequences, dict(x=SX, tokens=STOK, mask=SMASK)).bad(
    "float tokens", dict(tokens=STOK.double()), "tokens").bad(
    "tokens with another number of rows", dict(tokens=STOK[:3]), "tokens").bad(
    "mask of another shape", dict(mask=_wider(SMASK)), "mask").bad(
    "logp of another shape", dict(logp=SMASK[:2]), "logp").device("mask").skip_grad("a record").meta(
    x=SX.to("meta"), tokens=STOK.to("meta"), mask=SMASK.to("meta")).skip_bf16(
    "a record: it stores, it computes nothing")
spec("pgbook.worlds.seqlm.Sequences.view", lambda: SEQS.view(2, -1), {}).bad(
    "a shape of another size", lambda: SEQS.view(5, 5), "shape").bad(
    "a non-integer size", lambda: SEQS.view(2.5), "shape")
for _pol, _th, _cls in ((MPOL, STH, "MLPPolicy"), (TPOL, TTH, "TabularPolicy"),
                        (WS.Tempered(MPOL, 0.5), STH, "Tempered")):
    spec(f"pgbook.worlds.seqlm.{_cls}.logits", _pol.logits, dict(theta=_th, x=SX, tokens=STOK)
         ).floats("theta", nan=False, inf=False).bad("theta of the wrong size",
                                                     dict(theta=_th[:3]), "theta").ids(
        "x", 2).ids("tokens", 3).bad("tokens of another length", dict(tokens=_wider(STOK)),
                                     "tokens").device("x").grad("theta").meta(
        theta=_th.to("meta"), x=SX.to("meta"), tokens=STOK.to("meta")).bf16("theta")
spec("pgbook.worlds.seqlm.SeqPolicy.token_logprobs", MPOL.token_logprobs,
     dict(theta=STH, x=SX, tokens=STOK)).floats("theta", inf=False).ids("x", 2).ids(
    "tokens", 3).grad("theta").meta(theta=STH.to("meta"), x=SX.to("meta"),
                                    tokens=STOK.to("meta")).bf16("theta")
spec("pgbook.worlds.seqlm.SeqPolicy.init", MPOL.init, {}).bad(
    "an integer dtype", dict(dtype=torch.long), "dtype").bad(
    "not a generator", dict(generator=0), "generator").bad(
    "a negative scale", dict(generator=pg.make_generator(0), scale=-1.0), "scale").bad(
    "a NaN scale", dict(generator=pg.make_generator(0), scale=NAN), "scale").meta(
    device="meta").skip_bf16("takes no float input")
spec("pgbook.worlds.seqlm.SeqPolicy.sample", MPOL.sample, dict(theta=STH, x=4, generator=G0),
     out=lambda q: q.tokens).bad("x = 0", dict(x=0), "n").bad(
    "a prompt id past X", dict(x=torch.tensor([0, 2])), "x").bad(
    "float prompts", dict(x=torch.tensor([0.0, 1.0])), "x").bad("NaN theta", dict(
        theta=_with(STH, NAN)), "theta").bad("no generator", dict(generator=None), "generator").skip_meta(
    "sampling needs values").bf16("theta", close=False)
spec("pgbook.worlds.seqlm.MLPPolicy", WS.MLPPolicy, dict(space=SPACE)).count("hidden").bad(
    "not a space", dict(space=None), "space")
spec("pgbook.worlds.seqlm.MLPPolicy.unflatten", MPOL.unflatten, dict(theta=STH),
     out=lambda d: d["W"]).bad("theta of the wrong size", dict(theta=STH[:4]), "theta").bad(
    "a list", dict(theta=STH.tolist()), "theta").grad("theta").meta(theta=STH.to("meta")).bf16(
    "theta")
spec("pgbook.worlds.seqlm.TabularPolicy", WS.TabularPolicy, dict(space=SPACE)).bad(
    "not a space", dict(space="space"), "space")
spec("pgbook.worlds.seqlm.TabularPolicy.prefix_codes", TPOL.prefix_codes, dict(tokens=STOK)).ids(
    "tokens", 3).bad("another length", dict(tokens=_wider(STOK)), "tokens").meta(
    tokens=STOK.to("meta")).skip_bf16("takes ids")
spec("pgbook.worlds.seqlm.Tempered", WS.Tempered, dict(policy=MPOL, temperature=0.5)).number(
    "temperature", positive=True).bad("zero temperature", dict(temperature=0.0), "temperature").bad(
    "not a policy", dict(policy=POL), "policy")
spec("pgbook.worlds.seqlm.SeqReward", WS.SeqReward,
     dict(token_fn=lambda x, t, m: m, name="r", outcome=False)).bad(
    "not callable", dict(token_fn=3), "token_fn").bad("name not a string", dict(name=None),
                                                      "name").flag("outcome")
spec("pgbook.worlds.seqlm.SeqReward.token_rewards", REWARD.token_rewards,
     dict(x=SX, tokens=STOK, mask=SMASK)).ids("x", 2).ids("tokens", 3).mask("mask").shape(
    "mask").device("mask").bad("tokens with another number of rows", dict(tokens=STOK[:3]),
                               "tokens").meta(
    x=SX.to("meta"), tokens=STOK.to("meta"), mask=SMASK.to("meta")).skip_bf16(
    "the rewards take the mask's (or the table's) dtype")
spec("pgbook.worlds.seqlm.SeqReward.of", REWARD.of, dict(seqs=SEQS)).bad(
    "an all-zero mask", dict(seqs=WS.Sequences(SX, STOK, torch.zeros_like(SMASK))), "mask").bad(
    "a negative prompt id", dict(seqs=WS.Sequences(_with(SX, -1), STOK, SMASK)), "x").bad(
    "a mask holding 2", dict(seqs=WS.Sequences(SX, STOK, _with(SMASK, 2.0))), "mask").meta(
    seqs=WS.Sequences(SX.to("meta"), STOK.to("meta"), SMASK.to("meta"))).skip_bf16(
    "the rewards take the mask's dtype (a float64 world here)")
spec("pgbook.worlds.seqlm.outcome_reward", WS.outcome_reward, dict(fn=lambda x, t, m: x * 1.0)
     ).bad("not callable", dict(fn=None), "fn").bad(
    "fn returning the wrong shape",
    lambda: WS.outcome_reward(lambda x, t, m: t * 1.0).of(SEQS), "fn(x, tokens, mask)")
spec("pgbook.worlds.seqlm.equals_target", WS.equals_target, dict(space=SPACE, targets=["a", "b"])
     ).bad("a target per prompt missing", dict(targets=["a"]), "targets").bad(
    "a string, not a list", dict(targets="ab"), "targets").bad(
    "a negative prompt id", lambda: WS.equals_target(SPACE, ["a", "b"])(
        _with(SX, -1), STOK, SMASK), "x").bad("not a space", dict(space=None), "space")
spec("pgbook.worlds.seqlm.contains", WS.contains, dict(space=SPACE, pattern="ab")).bad(
    "an empty pattern", dict(pattern=""), "pattern").bad("an unknown token", dict(pattern="z"),
                                                         "texts").bad(
    "not a space", dict(space=3), "space")
spec("pgbook.worlds.seqlm.token_table_reward", WS.token_table_reward, dict(table=TABLE)).floats(
    "table").bad("1-D table", dict(table=TABLE[0]), "table").bad(
    "a prompt id past the table", lambda: WS.token_table_reward(TABLE[:1]).of(SEQS), "x").bad(
    "a token id past the table", lambda: WS.token_table_reward(TABLE[:, :2]).of(SEQS),
    "tokens").values_only("returns a reward; SeqReward.token_rewards and .of have the runs")

# -- pgbook.exact.seqlm -----------------------------------------------------------------------
def lm(qualname: str, fn: Callable, out: Callable | None = None, takes_seqs: bool = True,
       **kw: object) -> Spec:
    """A function of (policy, θ, ..., seqs) on the enumerable LM with the common bad worlds."""
    s = spec(qualname, fn, dict(policy=MPOL, theta=STH, **kw), out=out).bad(
        "NaN theta", dict(theta=_with(STH, NAN)), "theta").bad(
        "theta of the wrong size", dict(theta=STH[:4]), "theta").bad(
        "not a policy", dict(policy=POL), "policy")
    if takes_seqs:
        s.bad("seqs with a negative prompt id", dict(seqs=WS.Sequences(_with(SX, -1), STOK, SMASK)),
              "x").bad("seqs with a mask holding 0.5",
                       dict(seqs=WS.Sequences(SX, STOK, _with(SMASK, 0.5))), "mask").bad(
            "seqs that are not Sequences", dict(seqs=STOK), "seqs")
    return s


META_LM = dict(policy=WS.MLPPolicy(WS.SeqSpace(tokens=("a", "b"), max_len=2,
                                               rho=SPACE.rho.to("meta")), hidden=3),
               theta=STH.to("meta"))
for _name in ("sequence_logprobs", "sequence_probs", "joint_probs"):
    lm(f"pgbook.exact.seqlm.{_name}", getattr(ES, _name)).grad("theta").meta(**META_LM).bf16("theta")
lm("pgbook.exact.seqlm.exact_expectation", ES.exact_expectation, values=SEQS.mask.sum(-1)).floats(
    "values", dtype=False).bad("values of another length", dict(values=SMASK[:3, 0]), "values").grad(
    "theta", "values").meta(values=SMASK.sum(-1).to("meta"), **META_LM).bf16("theta", "values")
lm("pgbook.exact.seqlm.exact_J", ES.exact_J, reward=REWARD).bad(
    "not a reward", dict(reward=TABLE), "reward").grad("theta").meta(**META_LM).bf16("theta")
lm("pgbook.exact.seqlm.exact_gradient", ES.exact_gradient, reward=REWARD).bad(
    "not a reward", dict(reward=None), "reward").meta(**META_LM).bf16("theta")
for _name in ("exact_kl", "exact_forward_kl"):
    lm(f"pgbook.exact.seqlm.{_name}", getattr(ES, _name), ref_theta=0.5 * STH).bad(
        "NaN ref_theta", dict(ref_theta=_with(STH, NAN)), "ref_theta").bad(
        "a reference on another space", dict(ref_policy=WS.MLPPolicy(WS.SeqSpace(max_len=2))),
        "ref_policy").bad("not a policy", dict(ref_policy=POL), "ref_policy").grad("theta").meta(
        ref_theta=STH.to("meta"), **META_LM).bf16("theta", "ref_theta")
spec("pgbook.exact.seqlm.reward_weights", ES.reward_weights, dict(reward=REWARD, seqs=SEQS)
     ).option("weighting").bad("not a reward", dict(reward=None), "reward").bad(
    "not Sequences", dict(seqs=STOK), "seqs").meta(
    seqs=WS.Sequences(SX.to("meta"), STOK.to("meta"), SMASK.to("meta"))).skip_bf16(
    "the weights take the reward's dtype")
for _name in ("token_pg_surrogate", "per_sequence_estimates", "exact_estimator_mean",
              "exact_estimator_moments", "exact_total_variance"):
    s = lm(f"pgbook.exact.seqlm.{_name}", getattr(ES, _name), weights=SW,
           out=(lambda r: r[1]) if _name == "exact_estimator_moments" else None,
           **({} if _name.startswith("exact_") else {"seqs": SEQS})).floats(
        "weights", dtype=False).bad("weights of another shape", dict(weights=_wider(SW)),
                                    "weights").bad(
        "a mask holding 2", dict(mask=_with(SMASK, 2.0)), "mask").bad(
        "an all-zero mask", dict(mask=torch.zeros_like(SMASK)), "mask").bad(
        "weights on another device", dict(weights=SW.to("meta")), "device").meta(
        weights=SW.to("meta"), **META_LM, **({} if _name.startswith("exact_") else {
            "seqs": WS.Sequences(SX.to("meta"), STOK.to("meta"), SMASK.to("meta"))})).bf16(
        "theta", "weights")
    if _name == "token_pg_surrogate":
        s.grad("theta")
SPECS["pgbook.exact.seqlm.exact_total_variance"].count("n_samples")
lm("pgbook.exact.seqlm.exact_expected_gradient", ES.exact_expected_gradient,
   per_sequence_loss=lambda t, sq: MPOL.token_logprobs(t, sq.x, sq.tokens).sum(-1)).bad(
    "not callable", dict(per_sequence_loss=None), "per_sequence_loss").bad(
    "a loss of the wrong shape", dict(per_sequence_loss=lambda t, sq: t.sum()),
    "per_sequence_loss").meta(**META_LM, per_sequence_loss=lambda t, sq: META_LM[
        "policy"].token_logprobs(t, sq.x, sq.tokens).sum(-1)).bf16("theta")
lm("pgbook.exact.seqlm.policy_gradient_estimates", ES.policy_gradient_estimates,
   takes_seqs=False, reward=REWARD, n_samples=3, n_estimates=2, generator=G0).count("n_samples").count("n_estimates").option(
    "weighting").flag("mask_padding").bad("not a reward", dict(reward=None), "reward").skip_meta(
    "sampling needs values").bf16("theta", close=False)

# -- pgbook.exact.critic ----------------------------------------------------------------------
CRIT_T, CRIT_M = EC.TabularCritic(SPACE), EC.MLPCritic(SPACE, hidden=3)
PHI_M = CRIT_M.init(pg.make_generator(13), scale=0.3)
PHI_T = CRIT_T.init(pg.make_generator(14), scale=0.3)
V_ENUM = EC.exact_values(MPOL, STH, REWARD).V                         # the exact V, (N, T)
TARGETS = RA.reward_to_go(REWARD.token_rewards(SX, STOK, SMASK), SMASK)
spec("pgbook.exact.critic.prefix_ids", EC.prefix_ids, dict(space=SPACE, x=SX, tokens=STOK)).ids(
    "x", 2).ids("tokens", 3).bad("not a space", dict(space=MPOL), "space").device("tokens").meta(
    x=SX.to("meta"), tokens=STOK.to("meta")).skip_bf16("takes ids")
record("pgbook.exact.critic.ExactValues", EC.ExactValues, "A", V=V_ENUM, Q=V_ENUM)
record("pgbook.exact.critic.GAEMoments", EC.GAEMoments, "total_variance", lams=EXACT3,
       grad=STH, mean=STH)
GAE_M = EC.gae_moments(MPOL, STH, REWARD, V_ENUM, [0.0, 1.0])
spec("pgbook.exact.critic.GAEMoments.mse", GAE_M.mse, dict(n_samples=2)).count("n_samples")
spec("pgbook.exact.critic.MLPCritic", EC.MLPCritic, dict(space=SPACE)).count("hidden").bad(
    "not a space", dict(space=None), "space")
spec("pgbook.exact.critic.TabularCritic", EC.TabularCritic, dict(space=SPACE)).bad(
    "not a space", dict(space="space"), "space")
for _crit, _phi, _cls in ((CRIT_M, PHI_M, "MLPCritic"), (CRIT_T, PHI_T, "TabularCritic")):
    spec(f"pgbook.exact.critic.{_cls}.values", _crit.values, dict(phi=_phi, x=SX, tokens=STOK)
         ).floats("phi", inf=False).bad("phi of the wrong size", dict(phi=_phi[:3]), "phi").bad(
        "2-D phi", dict(phi=_phi[None]), "phi").ids("x", 2).ids("tokens", 3).bad(
        "tokens of another length", dict(tokens=_wider(STOK)), "tokens").device("x").grad(
        "phi").meta(phi=_phi.to("meta"), x=SX.to("meta"), tokens=STOK.to("meta")).bf16("phi")
spec("pgbook.exact.critic.SeqCritic.init", CRIT_M.init, {}).bad(
    "an integer dtype", dict(dtype=torch.long), "dtype").bad(
    "an integer like", dict(like=SX), "like").bad(
    "not a generator", dict(generator=0), "generator").bad(
    "a negative scale", dict(generator=pg.make_generator(0), scale=-1.0), "scale").bad(
    "a NaN scale", dict(generator=pg.make_generator(0), scale=NAN), "scale").meta(
    device="meta").skip_bf16("takes no float input")
lm("pgbook.exact.critic.exact_values", EC.exact_values, out=lambda r: r.V, reward=REWARD).bad(
    "not a reward", dict(reward=TABLE), "reward").bad(
    "a part of the enumeration", dict(seqs=WS.Sequences(SX[:3], STOK[:3], SMASK[:3])),
    "seqs").skip_meta("checks that the pairs sum to ρ (values)").bf16("theta")
lm("pgbook.exact.critic.critic_error", EC.critic_error, reward=REWARD, values=V_ENUM).floats(
    "values").bad("values of another shape", dict(values=V_ENUM[:3]), "values").bad(
    "not a reward", dict(reward=None), "reward").skip_meta(
    "checks that the pairs sum to ρ (values)").bf16("theta", "values")
lm("pgbook.exact.critic.gae_moments", EC.gae_moments, out=lambda r: r.total_variance,
   reward=REWARD, values=V_ENUM, lams=[0.0, 1.0]).floats("values").bad(
    "values of another shape", dict(values=V_ENUM[:3]), "values").bad(
    "lam = 2", dict(lams=2.0), "lams").bad("no lam", dict(lams=[]), "lams").bad(
    "lams a string", dict(lams="0.5"), "lams").bad("NaN lam", dict(lams=[NAN]), "lams").flag(
    "full_cov").bad("scores of another shape", dict(scores=torch.zeros(2, 2, 2, dtype=F64)),
                    "scores").device("values").bad("not a reward", dict(reward=None), "reward").skip_meta(
    "exact values check that the pairs sum to ρ (values)").bf16("theta", "values")
lm("pgbook.exact.critic.token_scores", EC.token_scores).meta(**META_LM).bf16("theta")
spec("pgbook.exact.critic.fit_critic", EC.fit_critic,
     dict(critic=CRIT_M, phi=PHI_M, seqs=SEQS, targets=TARGETS, mask=SMASK, steps=2),
     out=lambda r: r[0]).bad("not a critic", dict(critic=MPOL), "critic").floats(
    "phi", inf=False).bad("phi of the wrong size", dict(phi=PHI_M[:3]), "phi").bad(
    "seqs that are not Sequences", dict(seqs=STOK), "seqs").bad(
    "seqs with a negative prompt id", dict(seqs=WS.Sequences(_with(SX, -1), STOK, SMASK)),
    "x").floats("targets").bad("targets of another shape", dict(targets=TARGETS[:3]),
                               "targets").mask("mask").shape("mask").device("targets").count(
    "steps").number("lr", positive=True).skip_meta("an optimiser loop on values").bf16(
    "phi", "targets", close=False)

# -- pgbook.exact.reward_side -----------------------------------------------------------------
RN = REWARD.of(SEQS)                                          # R on the enumeration, (N,)
RN01 = (RN > 0).to(F64)
for _name in ("group_update_weights", "exact_group_update"):
    lm(f"pgbook.exact.reward_side.{_name}", getattr(ER, _name), rewards=RN, group_size=2).floats(
        "rewards").bad("rewards of another length", dict(rewards=RN[:3]), "rewards").count(
        "group_size").option("advantage").option("aggregation").bad(
        "an option the advantage does not take", dict(temperature=1.0), "temperature").count(
        "n_groups").bad("max_tokens below the longest response", dict(max_tokens=1),
                        "max_tokens").bad(
        "a loss_mask holding 0.5", dict(aggregation="constant", loss_mask=_with(RN01, 0.5)),
        "loss_mask").bad("a loss_mask with seq_mean_token_mean", dict(loss_mask=RN01),
                         "loss_mask").bad(
        "rewards other than 0/1 where the estimator needs them", dict(advantage="grpo"),
        "rewards").bad("token_mean on two prompts", dict(rewards=RN01, aggregation="token_mean"),
                       "aggregation").device("rewards").skip_meta(
        "reads the responses' lengths (values)").bf16("theta", "rewards")
SPECS["pgbook.exact.reward_side.exact_group_update"].bad(
    "weights and the options they replace", dict(weights=RN, advantage="rloo"), "weights").bad(
    "weights of another length", dict(weights=RN[:3]), "weights").bad(
    "NaN weights", dict(weights=_with(RN, NAN)), "weights")
lm("pgbook.exact.reward_side.exact_group_training", ER.exact_group_training, rewards=RN,
   group_size=2, steps=1, lr=0.1).count("steps").number("lr", positive=True).bad(
    "rewards as a list", dict(rewards=RN.tolist()), "rewards").bad(
    "frozen holding 0.5", dict(frozen=_with(torch.zeros_like(STH), 0.5)), "frozen").bad(
    "frozen of another shape", dict(frozen=torch.zeros(3, dtype=torch.bool)), "frozen").skip_meta(
    "reads the responses' lengths (values)").bf16("theta", "rewards")
lm("pgbook.exact.reward_side.greedy_responses", ER.greedy_responses).skip_meta(
    "an argmax over values").skip_bf16("returns indices (bfloat16 logits may tie)")
spec("pgbook.exact.reward_side.prefix_ids", ER.prefix_ids, dict(policy=MPOL)).bad(
    "not a policy", dict(policy=POL), "policy").bad(
    "seqs that are not Sequences", dict(seqs=STOK), "seqs").bad(
    "seqs with a negative prompt id", dict(seqs=WS.Sequences(_with(SX, -1), STOK, SMASK)), "x")
lm("pgbook.exact.reward_side.prefix_values", ER.prefix_values, rewards=RN).floats("rewards").bad(
    "rewards of another length", dict(rewards=RN[:3]), "rewards").device("rewards").skip_meta(
    "groups the enumeration by prefix (torch.unique on values)").bf16("theta", "rewards")
lm("pgbook.exact.reward_side.token_scores", ER.token_scores).meta(**META_LM).bf16("theta")
for _name in ("pass_at_k", "pass_at_k_weight"):
    spec(f"pgbook.exact.reward_side.{_name}", getattr(ER, _name), dict(p=P_SUCC, k=3)).floats(
        "p").bad("p = 1.5", dict(p=P_SUCC + 1), "p").bad("p = -0.1", dict(p=P_SUCC - 0.3), "p").count(
        "k").grad("p").meta().bf16("p")
_MU_RS = ETJ.Mismatched(MPOL, 0.5, pg.make_generator(15))     # a sampler μ for the off-policy path
lm("pgbook.exact.reward_side.sampled_group_estimates", ER.sampled_group_estimates,
   out=lambda d: d["grpo"], rewards=RN, estimators=["grpo", ("RLOO", "rloo", {})], n_batches=2,
   prompts_per_batch=2, group_size=2, generator=G0).floats("rewards").bad(
    "rewards of another length", dict(rewards=RN[:3]), "rewards").bad(
    "one name, not a list", dict(estimators="grpo"), "estimators").bad(
    "a number", dict(estimators=[3]), "estimators").bad(
    "a triple without options", dict(estimators=[("a", "grpo")]), "estimators").bad(
    "an unknown estimator", dict(estimators=["grpoo"]), "advantage").bad(
    "a token estimator", dict(estimators=["reward_to_go"]), "estimators").count(
    "n_batches").count("prompts_per_batch").count("group_size").bad(
    "no generator", dict(generator=None), "generator").bad(
    "scores of another shape", dict(scores=torch.zeros(2, 2, 2, dtype=F64)), "scores").bad(
    "a sampler that is not a policy", dict(sampler=POL), "sampler").bad(
    "a correction without a sampler", dict(correction="token_truncate"), "correction").bad(
    "an unknown correction", dict(sampler=_MU_RS, correction="tiss"), "correction").bad(
    "a negative correction_max", dict(sampler=_MU_RS, correction="token_truncate",
                                      correction_max=-1.0), "correction_max").skip_meta(
    "sampling needs values").bf16("theta", "rewards", close=False)

# -- pgbook.exact.trajectory ------------------------------------------------------------------
MIS = ETJ.Mismatched(MPOL, 0.5, pg.make_generator(15))
META_MIS = ETJ.Mismatched(META_LM["policy"], 0.5, pg.make_generator(15))
spec("pgbook.exact.trajectory.Mismatched", ETJ.Mismatched,
     dict(policy=MPOL, scale=0.5, generator=pg.make_generator(16))).bad(
    "not a policy", dict(policy=POL), "policy").number("scale", positive=True).bad(
    "no generator", dict(generator=None), "generator").count("df")
spec("pgbook.exact.trajectory.Mismatched.logits", MIS.logits, dict(theta=STH, x=SX, tokens=STOK)
     ).floats("theta", nan=False, inf=False).bad("theta of the wrong size", dict(theta=STH[:3]),
                                                 "theta").ids("x", 2).ids("tokens", 3).bad(
    "tokens of another length", dict(tokens=_wider(STOK)), "tokens").device("x").grad(
    "theta").meta(_fn=META_MIS.logits, theta=STH.to("meta"), x=SX.to("meta"),
                  tokens=STOK.to("meta")).bf16("theta")
lm("pgbook.exact.trajectory.sequence_entropy", ETJ.sequence_entropy).grad("theta").meta(
    **META_LM).bf16("theta")
lm("pgbook.exact.trajectory.token_scores", ETJ.token_scores).meta(**META_LM).bf16("theta")
THETAS = torch.stack([STH, 0.5 * STH])
spec("pgbook.exact.trajectory.path_stats", ETJ.path_stats,
     dict(policy=MPOL, thetas=THETAS, reward=REWARD), out=lambda d: d["J"]).floats(
    "thetas").bad("thetas of the wrong size", dict(thetas=THETAS[:, :3]), "thetas").bad(
    "not a reward", dict(reward=TABLE), "reward").bad("not a policy", dict(policy=POL), "policy").bad(
    "seqs with a negative prompt id", dict(seqs=WS.Sequences(_with(SX, -1), STOK, SMASK)),
    "x").device("thetas").meta(policy=META_LM["policy"], thetas=THETAS.to("meta")).bf16("thetas")
ENUM_P = ES.sequence_probs(MPOL, STH).detach()
spec("pgbook.exact.trajectory.sample_enumerated", ETJ.sample_enumerated,
     dict(probs=ENUM_P, rho=SPACE.rho, x_of=SX, n_batches=2, prompts_per_batch=2, group_size=3,
          generator=G0)).floats("probs", inf=False).bad(
    "probs not summing to one per prompt", dict(probs=ENUM_P * 2), "probs").bad(
    "rho of another length", dict(rho=torch.ones(3, dtype=F64) / 3), "probs and x_of").bad(
    "rho not summing to one", dict(rho=SPACE.rho * 2), "rho").bad(
    "x_of not prompt-major", dict(x_of=SX.flip(0)), "x_of").bad(
    "x_of past the prompts", dict(x_of=_with(SX, 2)), "x_of").bad(
    "float x_of", dict(x_of=SX.double()), "x_of").count("n_batches").count(
    "prompts_per_batch").count("group_size").bad("no generator", dict(generator=None),
                                                 "generator").device("x_of").skip_meta(
    "sampling needs values").skip_bf16(
    "samples in float64 (probabilities rounded to bfloat16 and back no longer sum to 1)")
lm("pgbook.exact.trajectory.batch_updates", ETJ.batch_updates, reward=REWARD, loss="ppo_clip",
   n_batches=2, prompts_per_batch=2, group_size=2, generator=G0).option("loss").option(
    "aggregation").option("advantage").bad("trainer_noise = -1", dict(trainer_noise=-1.0),
                                           "trainer_noise").bad(
    "a noise level per batch, of another length", dict(trainer_noise=[0.1, 0.1, 0.1]),
    "trainer_noise").bad("NaN old_theta", dict(old_theta=_with(STH, NAN)), "old_theta").bad(
    "a sampler that is no policy", dict(sampler=POL), "sampler").bad(
    "a sampler of another space", dict(sampler=WS.MLPPolicy(WS.SeqSpace(max_len=3))),
    "sampler").bad("an unknown correction", dict(sampler=MIS, correction="tis"), "correction").bad(
    "not a reward", dict(reward=None), "reward").count("n_batches").count(
    "prompts_per_batch").count("group_size").bad("no generator", dict(generator=None),
                                                 "generator").skip_meta(
    "sampling needs values").bf16("theta", close=False)
lm("pgbook.exact.trajectory.corrected_gradient", ETJ.corrected_gradient,
   out=lambda d: d["update"], reward=REWARD, sampler=MIS, correction="token_truncate").option(
    "correction").bad("a sampler that is no policy", dict(sampler=None), "sampler").bad(
    "not a reward", dict(reward=None), "reward").number("correction_max", positive=True).bad(
    "grad of another shape", dict(grad=STH[:3]), "grad").bad(
    "NaN grad", dict(grad=_with(STH, NAN)), "grad").meta(**META_LM, sampler=META_MIS).bf16(
    "theta")

# exact.offpolicy on the enumerable LM
lm("pgbook.exact.offpolicy.exact_prefix_weight_second_moment",
   EO.exact_prefix_weight_second_moment, behaviour_theta=0.5 * STH).bad(
    "NaN behaviour_theta", dict(behaviour_theta=_with(STH, NAN)), "behaviour_theta").bad(
    "behaviour_theta of the wrong size", dict(behaviour_theta=STH[:3]), "behaviour_theta").bad(
    "a behaviour policy that is none", dict(behaviour_policy=POL), "behaviour_policy").bad(
    "a behaviour policy on another space",
    dict(behaviour_policy=WS.MLPPolicy(WS.SeqSpace(max_len=3))), "behaviour").flag(
    "per_token").device("behaviour_theta").meta(**META_LM, behaviour_theta=STH.to("meta")).bf16(
    "theta", "behaviour_theta")

# -- pgbook.exact.agentic ---------------------------------------------------------------------
def tree(qualname: str, fn: Callable, out: Callable | None = None, takes_ep: bool = True,
         **kw: object) -> Spec:
    """A function of (policy, θ, ..., ep) on the enumerable tool tree with the common bad worlds."""
    s = spec(qualname, fn, dict(policy=MKV, theta=MTH, **({"ep": EPS} if takes_ep else {}), **kw),
             out=out).bad("NaN theta", dict(theta=_with(MTH, NAN)), "theta").bad(
        "theta of the wrong size", dict(theta=MTH[:4]), "theta").bad(
        "2-D theta", dict(theta=MTH[None]), "theta").bad(
        "a list theta", dict(theta=MTH.tolist()), "theta").bad(
        "not a policy", dict(policy=POL), "policy")
    if takes_ep:
        s.bad("ep that are not Episodes", dict(ep=EPS.tokens), "ep").bad(
            "the episodes of a larger world", dict(ep=BIG_EPS), "ep").bad(
            "episodes with a token past V", dict(ep=_episodes(tokens=_with(EPS.tokens, 6))), "ep")
    return s


def _episodes(**fields: torch.Tensor) -> WAG.Episodes:
    """EPS with some fields replaced."""
    return WAG.Episodes(**{f: fields.get(f, getattr(EPS, f)) for f in EPS.__dataclass_fields__})


BIG_EPS = WAG.LookupWorld(n_values=2, max_turns=3).enumerate()          # T = 6, not 4
META_TREE = dict(policy=MKV, theta=MTH.to("meta"))
TW = EA.credit_weights(MKV, MTH, EPS, "turn")                          # weights (N, T)
PM_ALL = (EPS.policy_mask + EPS.obs_mask).clamp(max=1)                  # policy and tool tokens
for _name in ("episode_logprobs", "episode_probs", "exact_J", "exact_gradient", "state_values",
              "answer_information"):
    s = tree(f"pgbook.exact.agentic.{_name}", getattr(EA, _name))
    if _name in ("episode_logprobs", "episode_probs", "exact_J"):
        s.grad("theta").meta(**META_TREE).bf16("theta")
SPECS["pgbook.exact.agentic.episode_logprobs"].kw["mask"] = PM_ALL
SPECS["pgbook.exact.agentic.episode_logprobs"].mask("mask").shape("mask").device("mask").meta(
    mask=PM_ALL.to("meta"), **META_TREE)
SPECS["pgbook.exact.agentic.exact_J"].kw["rewards"] = EPS.rewards
SPECS["pgbook.exact.agentic.exact_J"].floats("rewards").bad(
    "rewards of another length", dict(rewards=EPS.rewards[:3]), "rewards").device("rewards").meta(
    rewards=EPS.rewards.to("meta"), **META_TREE)
SPECS["pgbook.exact.agentic.exact_gradient"].kw["rewards"] = EPS.rewards
SPECS["pgbook.exact.agentic.exact_gradient"].floats("rewards").grad("rewards").meta(
    rewards=EPS.rewards.to("meta"), **META_TREE).bf16("theta")
for _name in ("state_values", "answer_information"):
    SPECS[f"pgbook.exact.agentic.{_name}"].skip_meta(
        "the tasks' groups are read from values").bf16("theta")
tree("pgbook.exact.agentic.emission_probability", EA.emission_probability,
     token_ids=LWORLD.env_ids).bad("a negative id", dict(token_ids=[-1]), "token_ids").bad(
    "an id past V", dict(token_ids=[6]), "token_ids").bad(
    "a string", dict(token_ids="AB"), "token_ids").bad("no id", dict(token_ids=[]),
                                                         "token_ids").bad(
    "a float id", dict(token_ids=[1.5]), "token_ids").grad("theta").meta(**META_TREE).bf16("theta")
tree("pgbook.exact.agentic.credit_weights", EA.credit_weights, credit="anchor").option(
    "credit").skip_meta("the tasks' groups are read from values").bf16("theta")
for _name in ("expected_gradient", "per_episode_gradients", "estimator_moments"):
    tree(f"pgbook.exact.agentic.{_name}", getattr(EA, _name), weights=TW, mask=PM_ALL,
         out=(lambda r: r[1]) if _name == "estimator_moments" else None).floats(
        "weights", dtype=False).bad("weights of another shape", dict(weights=TW[:, :3]),
                                    "weights").device("weights").mask("mask").shape(
        "mask").device("mask").meta(weights=TW.to("meta"), mask=PM_ALL.to("meta"),
                                    **META_TREE).bf16("theta", "weights")
tree("pgbook.exact.agentic.per_turn_scores", EA.per_turn_scores, mask=PM_ALL).mask("mask").shape(
    "mask").device("mask").meta(mask=PM_ALL.to("meta"), **META_TREE).bf16("theta")
tree("pgbook.exact.agentic.expected_update", EA.expected_update, credit="turn", mask="all",
     out=lambda r: r[0]).option("credit").option("mask").skip_meta(
    "the tasks' groups are read from values").bf16("theta")
tree("pgbook.exact.agentic.stale_expected_gradient", EA.stale_expected_gradient,
     behaviour=torch.stack([0.9 * MTH, 0.8 * MTH])).option("correction").floats(
    "behaviour").bad("behaviour of the wrong size", dict(behaviour=MTH[:4]), "behaviour").bad(
    "one behaviour per turn, one too many", dict(behaviour=torch.stack([MTH] * 3)),
    "behaviour").device("behaviour").skip_meta("the tasks' groups are read from values").bf16(
    "theta", "behaviour")
tree("pgbook.exact.agentic.reply_probability", EA.reply_probability, takes_ep=False,
     world=LWORLD).bad("not a LookupWorld", dict(world=EPS), "world").bad(
    "a world of another shape", dict(world=WAG.LookupWorld(n_values=2, max_turns=3)),
    "world").grad("theta").meta(**META_TREE).bf16("theta")
spec("pgbook.exact.agentic.turn_returns_exact", EA.turn_returns_exact,
     dict(turn_rewards=TURN_R, gamma=0.9)).floats("turn_rewards").bad(
    "a scalar", dict(turn_rewards=TURN_R[0, 0]), "turn_rewards").number(
    "gamma", positive=True).bad("gamma = 1.5", dict(gamma=1.5), "gamma").grad(
    "turn_rewards").meta().bf16("turn_rewards")
SCORES = EA.per_turn_scores(MKV, MTH, EPS)                               # (N, K, P)
SIDX = torch.tensor([[0, 5, 9, 70], [3, 3, 40, 73]])                      # M = 2 batches of 4
SADV = torch.randn(2, 4, 2, generator=pg.make_generator(32), dtype=F64)
spec("pgbook.exact.agentic.sampled_estimates", EA.sampled_estimates,
     dict(scores=SCORES, idx=SIDX, turn_advantages=SADV)).floats("scores").bad(
    "2-D scores", dict(scores=SCORES[:, 0]), "scores").ids("idx", len(EPS)).bad(
    "1-D idx", dict(idx=SIDX[0]), "idx").floats("turn_advantages").shape(
    "turn_advantages").device("idx").device("turn_advantages").grad(
    "scores", "turn_advantages").meta().bf16("scores", "turn_advantages")

# -- pgbook.worlds.answers --------------------------------------------------------------------
ASPACE = WA.answer_space(3)
APOL, ATH = WA.answer_policy(ASPACE)
AREW = WA.answer_reward(ASPACE)
AQ = ES.sequence_probs(APOL, ATH)                              # p(y) over the enumeration, (N,)
spec("pgbook.worlds.answers.answer_space", WA.answer_space, dict(max_len=3)).count(
    "max_len").bad("max_len = 1", dict(max_len=1), "max_len").bad(
    "an integer dtype", dict(dtype=torch.long), "dtype").bad("a string dtype", dict(dtype="f64"),
                                                             "dtype")
spec("pgbook.worlds.answers.answer_reward", WA.answer_reward, dict(space=ASPACE)).bad(
    "another world", dict(space=SPACE), "space").bad("not a space", dict(space=None), "space").flag(
    "finished_only")
spec("pgbook.worlds.answers.answer_policy", WA.answer_policy, dict(space=ASPACE),
     out=lambda r: r[1]).bad("another world", dict(space=SPACE), "space")
for _o in ("p_correct", "stop", "first_stop"):
    SPECS["pgbook.worlds.answers.answer_policy"].number(_o).bad(
        f"{_o} = 1", {_o: 1.0}, _o).bad(f"{_o} = 0", {_o: 0.0}, _o)
SPECS["pgbook.worlds.answers.answer_policy"].meta(space=WA.answer_space(3, device="meta")
                                                  ).skip_bf16("builds a world in the space's dtype")
spec("pgbook.worlds.answers.answer_head", WA.answer_head, dict(policy=APOL)).bad(
    "not a tabular policy", dict(policy=WS.MLPPolicy(ASPACE)), "policy").bad(
    "a tabular policy of another world", dict(policy=TPOL), "space")
spec("pgbook.worlds.answers.answer_stats", WA.answer_stats,
     dict(space=ASPACE, probs=AQ, reward=AREW), out=lambda d: d["length_pmf"]).floats(
    "probs", inf=False).bad("probs of another length", dict(probs=AQ[:3]), "probs").bad(
    "probs not summing to one", dict(probs=AQ * 2), "probs").bad(
    "a negative probability", dict(probs=AQ - 0.01), "probs").bad(
    "not a reward", dict(reward=None), "reward").bad("another world", dict(space=SPACE), "space").bad(
    "seqs that are not Sequences", dict(seqs=STOK), "seqs").grad("probs").meta(
    space=WA.answer_space(3, device="meta"), probs=AQ.to("meta"), reward=AREW).skip_bf16(
    "probabilities rounded to bfloat16 and back no longer sum to 1 (the float64 reference run "
    "refuses them)")

# -- pgbook.train.seqlm -----------------------------------------------------------------------
RUN_X = torch.tensor([[0, 1, 1], [1, 0, 0]])
record("pgbook.train.seqlm.SeqLMHistory", TS.SeqLMHistory, "loss", thetas=THETAS, reward=R4,
       clip_fraction=R4, zero_variance_groups=R4, rollouts=R4, ratio_max=R4)
spec("pgbook.train.seqlm.sample_runs", TS.sample_runs,
     dict(policy=MPOL, thetas=THETAS, x=RUN_X, generator=G0), out=lambda q: q.tokens).bad(
    "not a policy", dict(policy=POL), "policy").floats("thetas", inf=False).bad(
    "thetas of the wrong size", dict(thetas=THETAS[:, :3]), "thetas").bad(
    "1-D thetas", dict(thetas=STH), "thetas").bad("x with another number of runs",
                                                  dict(x=RUN_X[:1]), "x").ids("x", 2).bad(
    "no generator", dict(generator=None), "generator").device("x").skip_meta(
    "sampling needs values").bf16("thetas", close=False)
spec("pgbook.train.seqlm.grpo_seqlm", TS.grpo_seqlm,
     dict(policy=MPOL, theta0=STH, reward=REWARD, steps=1, prompts_per_step=2, group_size=2,
          generator=pg.make_generator(17)), out=lambda h: h.thetas).bad(
    "not a policy", dict(policy=POL), "policy").floats("theta0", inf=False).bad(
    "theta0 of the wrong size", dict(theta0=STH[:3]), "theta0").bad(
    "3-D theta0", dict(theta0=STH[None, None]), "theta0").bad(
    "not a reward", dict(reward=TABLE), "reward").bad(
    "a sampler of another space", dict(sampler=WS.MLPPolicy(WS.SeqSpace(max_len=3))),
    "sampler").count("steps").count("prompts_per_step").count("group_size").bad(
    "groups of one", dict(group_size=1), "group_size").count("epochs_per_batch").count(
    "minibatches").bad("minibatches not dividing the prompts", dict(minibatches=3),
                       "minibatches").number("lr", positive=True).bad(
    "trainer_noise = -1", dict(trainer_noise=-1.0), "trainer_noise").option("method").option(
    "advantage").bad("a token estimator", dict(advantage="reward_to_go"), "advantage").option(
    "loss").option("aggregation").bad("a correction without a sampler",
                                      dict(correction="token_truncate"), "correction").bad(
    "an unknown correction", dict(sampler=MIS, correction="tis"), "correction").bad(
    "dynamic_sampling = 'yes'", dict(dynamic_sampling="yes"), "dynamic_sampling").bad(
    "loss_options a list", dict(loss_options=["eps_low"]), "loss_options").bad(
    "a misspelt option", dict(epochs=2), "epochs").bad(
    "no generator", dict(generator=None), "generator").skip_meta(
    "training needs values (sampling, rewards)").bf16("theta0", close=False)

# -- pgbook.train.actor_critic ----------------------------------------------------------------
record("pgbook.train.actor_critic.ActorCriticHistory", TAC.ActorCriticHistory, "seconds",
       step=R4, J=THETAS, critic_error=None, theta=STH, phi=None)
lm("pgbook.train.actor_critic.actor_critic_train", TAC.actor_critic_train, takes_seqs=False,
   out=lambda h: h.theta, reward=REWARD, steps=1, n_samples=4, lr=0.1,
   generator=pg.make_generator(18), critic=CRIT_M, phi=PHI_M).bad(
    "not a reward", dict(reward=TABLE), "reward").count("steps").count("n_samples").count(
    "runs").count("eval_every").number("lr", positive=True).option("advantage").number(
    "lam", positive=True).bad("lam = 2", dict(lam=2.0), "lam").bad(
    "a critic that is no critic", dict(critic=MPOL), "critic").bad(
    "a critic of another space", dict(critic=EC.MLPCritic(WS.SeqSpace(max_len=3))), "critic").bad(
    "no critic for advantage='critic'", dict(critic=None), "critic").bad(
    "a critic for another advantage", dict(advantage="reward_to_go"), "critic").bad(
    "NaN phi", dict(phi=_with(PHI_M, NAN)), "phi").bad("phi of the wrong size",
                                                      dict(phi=PHI_M[:3]), "phi").number(
    "critic_lr", positive=True).count("critic_steps").bad(
    "group without group_size", dict(advantage="group", critic=None, phi=None), "group_size").bad(
    "a group size not dividing n_samples",
    dict(advantage="group", critic=None, phi=None, group_size=3), "group_size").bad(
    "group_size for another advantage", dict(group_size=2), "group_size").flag("progress").bad(
    "no generator", dict(generator=None), "generator").skip_meta(
    "training needs values (sampling)").bf16("theta", close=False)

# -- pgbook.worlds.tasks ----------------------------------------------------------------------
RESP = TASK.responses(torch.cat([PROB.prompts, PROB.targets], 1))
for _name in ("exact_match", "partial_credit"):
    spec(f"pgbook.worlds.tasks.{_name}", getattr(WT, _name),
         dict(responses=RESP, targets=PROB.targets)).bad(
        "float responses", dict(responses=RESP.double()), "responses").bad(
        "targets of another shape", dict(targets=PROB.targets[:1]), "targets").bad(
        "1-D", dict(responses=RESP[0], targets=PROB.targets[0]), "responses").bad(
        "an integer dtype", dict(dtype=torch.long), "dtype").bad(
        "targets on another device", dict(targets=PROB.targets.to("meta")), "device").meta(
        responses=RESP.to("meta"), targets=PROB.targets.to("meta")).skip_bf16("takes token ids")
record("pgbook.worlds.tasks.Problems", WT.Problems, "targets", prompts=PROB.prompts)
spec("pgbook.worlds.tasks.Problems.repeat_interleave", PROB.repeat_interleave,
     dict(group_size=2), out=lambda q: q.prompts).count("group_size")
for _cls, _kw, _bad in (("Reverse", dict(min_len=2, max_len=3), dict(letters="")),
                        ("SortDigits", dict(min_len=2, max_len=3), dict(n_digits=11)),
                        ("Add", dict(digits=1), dict(digits=0))):
    s = spec(f"pgbook.worlds.tasks.{_cls}", getattr(WT, _cls), _kw).bad(
        f"{next(iter(_bad))} = {next(iter(_bad.values()))!r}", _bad, next(iter(_bad)))
    if "min_len" in _kw:
        s.count("min_len").count("max_len").bad("min_len > max_len", dict(min_len=4), "min_len")
_TASKS = {"Reverse": (TASK, "abc>"), "SortDigits": (WT.SortDigits(), "3141:"),
          "Add": (WT.Add(1), "3+5=")}
for _cls, (_task, _prompt) in _TASKS.items():
    spec(f"pgbook.worlds.tasks.{_cls}.solve", _task.solve, dict(prompt=_prompt)).bad(
        "not a string", dict(prompt=3), "prompt").bad(
        "a character outside the alphabet", dict(prompt="@@"), "prompt")
SPECS["pgbook.worlds.tasks.Add.solve"].bad("one number", dict(prompt="35="), "prompt")
spec("pgbook.worlds.tasks.Task.sample", TASK.sample, dict(n=3, generator=G0),
     out=lambda q: q.prompts).count("n").bad("not a generator", dict(generator=0), "generator")
spec("pgbook.worlds.tasks.Task.responses", TASK.responses, dict(tokens=DEMO)).bad(
    "another width", dict(tokens=DEMO[:, :3]), "tokens").bad("float", dict(tokens=DEMO.double()),
                                                               "tokens").bad(
    "1-D", dict(tokens=DEMO[0]), "tokens").meta(tokens=DEMO.to("meta")).skip_bf16("takes ids")
spec("pgbook.worlds.tasks.Task.reward", TASK.reward, dict(tokens=DEMO, targets=PROB.targets)).bad(
    "targets of another shape", dict(targets=PROB.targets[:1]), "targets").flag("partial").bad(
    "an integer dtype", dict(dtype=torch.int32), "dtype").meta(
    tokens=DEMO.to("meta"), targets=PROB.targets.to("meta")).skip_bf16("takes ids")
spec("pgbook.worlds.tasks.Task.check", TASK.check, dict(prompt="abc>", response="cba")).bad(
    "a response that is not a string", dict(response=3), "response")
spec("pgbook.worlds.tasks.Task.demonstrations", TASK.demonstrations, dict(problems=PROB),
     out=lambda r: r[0]).bad("noise > 1", dict(noise=1.5), "noise").number(
    "noise", positive=True).bad("noise without a generator", dict(noise=0.5), "generator").bad(
    "not Problems", dict(problems=PROB.prompts), "problems").meta(
    problems=WT.Problems(PROB.prompts.to("meta"), PROB.targets.to("meta"))).skip_bf16("ids")
spec("pgbook.worlds.tasks.demonstration_loss", WT.demonstration_loss,
     dict(model=MODEL, seq=DEMO, mask=DEMO_MASK)).mask("mask").shape("mask").bad(
    "an empty batch", dict(seq=DEMO[:0], mask=DEMO_MASK[:0]), "mask").bad(
    "a token past the vocabulary", dict(seq=_with(DEMO, 99)), "idx").device("mask").meta(
    model=META_MODEL, seq=DEMO.to("meta"), mask=DEMO_MASK.to("meta")).skip_bf16(
    "the model's dtype decides (a bfloat16 GPT is covered by tests/test_gpt.py)")
spec("pgbook.worlds.tasks.policy_config", WT.policy_config, dict(task=TASK)).bad(
    "an unknown field", dict(n_layers=2), "n_layers").bad("not a task", dict(task=None), "task").bad(
    "a bad field value", dict(n_head=3), "n_embd")
spec("pgbook.worlds.tasks.pretrain", WT.pretrain,
     dict(model=MODEL, task=TASK, steps=1, batch_size=2, lr=1e-3, generator=pg.make_generator(9),
          progress=False)).count("steps").count("batch_size").number("lr", positive=True).bad(
    "not a model", dict(model=None), "model").bad("not a task", dict(task=None), "task").bad(
    "no generator", dict(generator=None), "generator").bad("warmup = -1", dict(warmup=-1),
                                                           "warmup").bad(
    "noise > 1", dict(noise=2.0), "noise")
SPECS["pgbook.worlds.tasks.pretrain"].kw["model"] = WG.GPT(CFG)   # trained in place: its own
spec("pgbook.worlds.tasks.pretrained_policy", WT.pretrained_policy,
     dict(task=TASK, steps=1, batch_size=2, progress=False, n_embd=8, n_head=1),
     out=lambda r: r[1]).bad("a float seed", dict(seed=0.5), "seed").count("steps").bad(
    "an unknown config field", dict(width=3), "width")
spec("pgbook.worlds.tasks.success_rate", WT.success_rate,
     dict(model=MODEL, task=TASK, n=2, generator=G0)).count("n").bad(
    "not a task", dict(task="reverse"), "task").number("temperature", positive=True).flag("partial")

# -- pgbook.worlds.gpt ------------------------------------------------------------------------
spec("pgbook.worlds.gpt.GPTConfig", WG.GPTConfig, dict(vocab_size=10)).count("vocab_size").count(
    "block_size").count("n_layer").count("n_head").count("n_embd").count("mlp_ratio").number(
    "init_std", positive=True).bad("n_embd not a multiple of n_head", dict(n_head=3), "n_embd")
spec("pgbook.worlds.gpt.GPT", WG.GPT, dict(config=CFG)).bad(
    "a dict config", dict(config={"vocab_size": 10}), "config").bad(
    "not a generator", dict(generator=3), "generator")
spec("pgbook.worlds.gpt.GPT.forward", MODEL.forward, dict(idx=DEMO)).bad(
    "a token past the vocabulary", dict(idx=_with(DEMO, 99)), "idx").bad(
    "a negative token", dict(idx=_with(DEMO, -1)), "idx").bad(
    "more positions than block_size", dict(idx=torch.zeros(1, 99, dtype=torch.long)),
    "block_size").bad("float ids", dict(idx=DEMO.double()), "idx").bad(
    "1-D", dict(idx=DEMO[0]), "idx").device("idx").meta(
    _fn=META_MODEL.forward, idx=DEMO.to("meta")).skip_bf16(
    "a module: GPT.to(torch.bfloat16) is covered by tests/test_gpt.py")
spec("pgbook.worlds.gpt.CharTokenizer", WG.CharTokenizer, dict(chars="abc")).bad(
    "empty", dict(chars=""), "chars").bad("repeated", dict(chars="aa"), "chars").bad(
    "a list", dict(chars=["a"]), "chars")
spec("pgbook.worlds.gpt.CharTokenizer.encode", TOKENIZER.encode, dict(text="abc")).bad(
    "an unknown character", dict(text="az"), "text").bad("not a string", dict(text=3), "text")
spec("pgbook.worlds.gpt.CharTokenizer.decode", TOKENIZER.decode, dict(ids=[3, 4, 2])).bad(
    "an id past the vocabulary", dict(ids=[99]), "ids").bad("a negative id", dict(ids=[-1]), "ids").bad(
    "a 2-D tensor", dict(ids=DEMO), "ids")
spec("pgbook.worlds.gpt.CharTokenizer.decode_batch", TOKENIZER.decode_batch, dict(tokens=DEMO)
     ).bad("1-D", dict(tokens=DEMO[0]), "tokens").bad("an id past the vocabulary",
                                                      dict(tokens=_with(DEMO, 99)), "ids").values_only(
    "returns strings")
spec("pgbook.worlds.gpt.CharTokenizer.encode_batch", TOKENIZER.encode_batch, dict(texts=["ab", "c"])
     ).bad("an unknown character", dict(texts=["az"]), "text").bad(
    "a length too short", dict(length=1), "length").bad("a string, not a list", dict(texts="ab"),
                                                        "texts").count("length")
record("pgbook.worlds.gpt.Sample", WG.Sample, "mask", tokens=DEMO, logprobs=DEMO * 0.0)
spec("pgbook.worlds.gpt.sample", WG.sample,
     dict(model=MODEL, prompts=PROB.prompts, max_new_tokens=TASK.max_new_tokens, generator=G0),
     out=lambda q: q.tokens).count("max_new_tokens").bad(
    "past block_size", dict(max_new_tokens=99), "max_new_tokens").bad(
    "float prompts", dict(prompts=PROB.prompts.double()), "prompts").bad(
    "a prompt token past the vocabulary", dict(prompts=_with(PROB.prompts, 99)), "prompts").bad(
    "eos_id past the vocabulary", dict(eos_id=99), "eos_id").bad(
    "pad_id = -1", dict(pad_id=-1), "pad_id").number("temperature", positive=True).bad(
    "no generator", dict(generator=None), "generator").bad(
    "meta prompts", dict(prompts=PROB.prompts.to("meta")), "prompts").skip_meta(
    "sampling needs values").skip_bf16("a module: sampling in bfloat16 is covered by test_gpt")
spec("pgbook.worlds.gpt.logprobs", WG.logprobs, dict(model=MODEL, tokens=DEMO)).bad(
    "float tokens", dict(tokens=DEMO.double()), "tokens").bad(
    "one position", dict(tokens=DEMO[:, :1]), "tokens").bad(
    "a token past the vocabulary", dict(tokens=_with(DEMO, 99)), "idx").number(
    "temperature", positive=True).bad("zero temperature", dict(temperature=0.0), "temperature").count(
    "chunk_size").meta(model=META_MODEL, tokens=DEMO.to("meta")).skip_bf16(
    "the model's dtype decides (a bfloat16 GPT is covered by tests/test_gpt.py)")
spec("pgbook.worlds.gpt.next_token_logits", WG.next_token_logits,
     dict(model=MODEL, tokens=DEMO, prompt_len=2)).count("prompt_len").bad(
    "prompt_len = T", dict(prompt_len=DEMO.shape[1]), "prompt_len").bad(
    "1-D", dict(tokens=DEMO[0]), "tokens").bad(
    "a token past the vocabulary", dict(tokens=_with(DEMO, 99)), "idx").meta(
    model=META_MODEL, tokens=DEMO.to("meta")).skip_bf16(
    "the model's dtype decides (a bfloat16 GPT is covered by tests/test_gpt.py)")
spec("pgbook.worlds.gpt.GPT.new_cache", MODEL.new_cache, dict(max_len=4)).count("max_len")
spec("pgbook.worlds.gpt.KVCache", WG.KVCache, dict(max_len=4)).count("max_len")
_KV = torch.zeros(2, 1, 3, 8, dtype=F64)
spec("pgbook.worlds.gpt.KVCache.update", lambda **kw: WG.KVCache(4).update(**kw),
     dict(layer=0, k=_KV, v=_KV)).bad("v of another shape", dict(v=_KV[:, :, :2]), "k, v").bad(
    "3-D keys", dict(k=_KV[0], v=_KV[0]), "k, v").bad(
    "more positions than max_len", dict(k=_KV.repeat(1, 1, 2, 1), v=_KV.repeat(1, 1, 2, 1)),
    "k").grad("k", "v").skip_meta("a cache of values").skip_bf16("stores its inputs as they are")
spec("pgbook.worlds.gpt.KVCache.select", lambda **kw: _filled_cache().select(**kw),
     dict(rows=torch.tensor([0, 0, 1]))).bad("float rows", dict(rows=torch.tensor([0.0])),
                                             "rows").bad(
    "a row past the batch", dict(rows=torch.tensor([2])), "rows").bad(
    "2-D rows", dict(rows=torch.tensor([[0]])), "rows").skip_meta("a cache of values")


def _filled_cache() -> WG.KVCache:
    c = WG.KVCache(4)
    c.update(0, _KV, _KV)
    return c


# -- pgbook.worlds.envs -----------------------------------------------------------------------
STORES = ["12", "34", "56", "78"]                                    # a = 1, b = 2 in episode 0
ACTS, ALENS = ENV.encode_turns(["[a]", "3$", "?ab", "[b]"])          # (4, 3), (4,)


def _env_state(turn: int = 0) -> WE.EnvState:
    st = ENV.state_of("abab", STORES)
    st.turn = turn
    return st


def _env_step(actions: object, lengths: object, state: object = None) -> WE.EnvStep:
    """LookupEnv.step on a fresh state (the step advances the state it is given)."""
    return ENV.step(_env_state() if state is None else state, actions, lengths)


ESTATE = _env_state()
record("pgbook.worlds.envs.EnvState", WE.EnvState, "done", prompts=ESTATE.prompts,
       targets=ESTATE.targets, turn=0)
spec("pgbook.worlds.envs.EnvState.repeat_interleave", ESTATE.repeat_interleave,
     dict(group_size=2), out=lambda s: s.prompts).count("group_size")
record("pgbook.worlds.envs.EnvStep", WE.EnvStep, "outcome", obs=ACTS, obs_len=ALENS,
       reward=R4, done=ESTATE.done)
spec("pgbook.worlds.envs.LookupEnv", WE.LookupEnv, dict(n_keys=2, digits=1, max_turns=2)).count(
    "n_keys").bad("27 keys", dict(n_keys=27), "n_keys").count("digits").bad(
    "7 digits", dict(digits=7), "digits").count("max_turns").number("call_reward").number(
    "invalid_penalty", positive=True)
spec("pgbook.worlds.envs.LookupEnv.reset", ENV.reset, dict(n=3, generator=G0),
     out=lambda s: s.prompts).count("n").bad("no generator", dict(generator=None),
                                             "generator").bad("a seed", dict(generator=0),
                                                              "generator")
spec("pgbook.worlds.envs.LookupEnv.state_of", ENV.state_of, dict(asked="ab", stores=STORES[:2]),
     out=lambda s: s.targets).bad("a store of another width", dict(stores=["1", "34"]),
                                  "stores").bad("a store that is not digits",
                                                dict(stores=["1x", "34"]), "stores").bad(
    "one store per asked key missing", dict(stores=STORES[:1]), "stores").bad(
    "an unknown key", dict(asked="az"), "asked").bad("asked not a string", dict(asked=[0, 1]),
                                                      "asked").bad(
    "stores a string", dict(asked="a", stores="12"), "stores").bad(
    "no episode", dict(asked="", stores=[]), "asked")
spec("pgbook.worlds.envs.LookupEnv.encode_turns", ENV.encode_turns, dict(texts=["[a]", "3$"]),
     out=lambda r: r[0]).bad("an unknown character", dict(texts=["[z]"]), "texts").bad(
    "an empty turn", dict(texts=[""]), "texts").bad("a turn past action_len",
                                                    dict(texts=["[a]]"]), "texts").bad(
    "a string, not a list", dict(texts="[a]"), "texts").bad("not strings", dict(texts=[1]),
                                                           "texts").bad(
    "no turn", dict(texts=[]), "texts")
spec("pgbook.worlds.envs.LookupEnv.parse_calls", ENV.parse_calls,
     dict(actions=ACTS, lengths=ALENS), out=lambda r: r[0]).bad(
    "float actions", dict(actions=ACTS.double()), "actions").bad(
    "1-D actions", dict(actions=ACTS[0]), "actions").bad("a list", dict(actions=ACTS.tolist()),
                                                         "actions").bad(
    "lengths of another length", dict(lengths=ALENS[:3]), "lengths").bad(
    "float lengths", dict(lengths=ALENS.double()), "lengths").device("lengths").meta().skip_bf16(
    "takes token ids")
spec("pgbook.worlds.envs.LookupEnv.step", _env_step, dict(actions=ACTS, lengths=ALENS),
     out=lambda s: s.reward).bad("float actions", dict(actions=ACTS.double()), "actions").bad(
    "int32 actions", dict(actions=ACTS.int()), "actions").bad("1-D actions", dict(actions=ACTS[0]),
                                                            "actions").bad(
    "a list", dict(actions=ACTS.tolist()), "actions").bad(
    "another number of rows", dict(actions=ACTS[:3], lengths=ALENS[:3]), "actions").bad(
    "an id past the vocabulary", dict(actions=_with(ACTS, 99)), "actions").bad(
    "a negative id", dict(actions=_with(ACTS, -1)), "actions").bad(
    "more columns than action_len", dict(actions=_wider(ACTS)), "actions").bad(
    "a length of 0", dict(lengths=_with(ALENS, 0)), "lengths").bad(
    "a length past the columns", dict(lengths=_with(ALENS, 4)), "lengths").device("lengths").bad(
    "a spent turn budget", dict(state=_env_state(2)), "state").bad(
    "not an EnvState", dict(state=ESTATE.prompts), "state").skip_meta(
    "the environment needs values (refused on meta with a ValueError)").skip_bf16(
    "takes token ids")
spec("pgbook.worlds.envs.LookupEnv.step_text", ENV.step_text,
     dict(prompt="^a?", action="[b]", turn=0, store={"a": "1", "b": "2"})).bad(
    "prompt not a string", dict(prompt=3), "prompt").bad(
    "a prompt asking no key of the store", dict(prompt="^z?"), "prompt").bad(
    "action not a string", dict(action=None), "action").bad("an empty action", dict(action=""),
                                                            "action").bad(
    "turn = -1", dict(turn=-1), "turn").bad("turn past the budget", dict(turn=2), "turn").bad(
    "turn = 1.5", dict(turn=1.5), "turn").bad("store not a dict", dict(store=["1", "2"]),
                                              "store").bad(
    "a store value that is not a string", dict(store={"a": 1, "b": 2}), "store")
spec("pgbook.worlds.envs.LookupEnv.demonstrations", ENV.demonstrations, dict(n=2, generator=G0),
     out=lambda r: r[0]).count("n").bad("no generator", dict(generator=None), "generator").number(
    "p_tool", positive=True).bad("p_tool = 1.5", dict(p_tool=1.5), "p_tool").number(
    "noise", positive=True).bad("noise = 2", dict(noise=2.0), "noise")

# -- pgbook.worlds.agentic --------------------------------------------------------------------
record("pgbook.worlds.agentic.Episodes", WAG.Episodes, "outcomes",
       **{f: getattr(EPS, f) for f in EPS.__dataclass_fields__ if f != "outcomes"})
META_EPS = WAG.Episodes(*(getattr(EPS, f).to("meta") for f in EPS.__dataclass_fields__))
EIDX = torch.tensor([0, 3, 73])
spec("pgbook.worlds.agentic.Episodes.index", EPS.index, dict(idx=EIDX),
     out=lambda e: e.tokens).ids("idx", len(EPS)).bad("a list", dict(idx=EIDX.tolist()),
                                                      "idx").meta(
    _fn=META_EPS.index, idx=EIDX.to("meta")).skip_bf16("takes indices")
spec("pgbook.worlds.agentic.TurnSpace", WAG.TurnSpace,
     dict(X=1, token_names=("?", "a", "!"), T=2, pad_id=2)).count("X").count("T").bad(
    "pad_id = -1", dict(pad_id=-1), "pad_id").bad("pad_id past V", dict(pad_id=3), "pad_id").bad(
    "no token", dict(token_names=()), "token_names").bad(
    "a repeated token", dict(token_names=("a", "a")), "token_names").bad(
    "names that are not strings", dict(token_names=(1, 2)), "token_names")
spec("pgbook.worlds.agentic.TurnSpace.check", LWORLD.space.check,
     dict(x=EPS.x, tokens=EPS.tokens, mask=EPS.policy_mask)).ids("x", 1).ids(
    "tokens", LWORLD.V).shape("tokens").bad("tokens with another number of rows",
                                            dict(tokens=EPS.tokens[:3]), "tokens").device(
    "tokens").mask("mask").shape("mask").device("mask").meta().skip_bf16("checks ids")
spec("pgbook.worlds.agentic.MarkovMLPPolicy", WAG.MarkovMLPPolicy, dict(space=LWORLD.space)).count(
    "hidden").bad("not a space", dict(space=EPS), "space")
spec("pgbook.worlds.agentic.MarkovMLPPolicy.table", MKV.table, dict(theta=MTH)).floats(
    "theta").bad("theta of the wrong size", dict(theta=MTH[:4]), "theta").bad(
    "2-D theta", dict(theta=MTH[None]), "theta").grad("theta").meta().bf16("theta")
spec("pgbook.worlds.agentic.MarkovMLPPolicy.token_logprobs", MKV.token_logprobs,
     dict(theta=MTH, x=EPS.x, tokens=EPS.tokens)).floats("theta").bad(
    "theta of the wrong size", dict(theta=MTH[:4]), "theta").ids("x", 1).ids(
    "tokens", LWORLD.V).shape("tokens").device("x").grad("theta").meta().bf16("theta")
VPROBS = torch.tensor([[0.5, 0.5], [0.9, 0.1]], dtype=F64)
LRHO = torch.tensor([0.25, 0.75], dtype=F64)
spec("pgbook.worlds.agentic.LookupWorld", WAG.LookupWorld,
     dict(n_values=2, max_turns=2, value_probs=VPROBS, rho=LRHO),
     out=lambda w: w.value_probs).count("n_values").bad("one value", dict(n_values=1),
                                                        "n_values").bad(
    "9 values", dict(n_values=9), "n_values").count("max_turns").count("obs_len").number(
    "noise", positive=True).bad("noise = 1.5", dict(noise=1.5), "noise").floats(
    "value_probs", inf=False).bad("value_probs of another width", dict(value_probs=VPROBS[:, :1]),
                                  "value_probs").bad(
    "value_probs not summing to one", dict(value_probs=VPROBS * 2), "value_probs").floats(
    "rho", inf=False).bad("rho of another length", dict(rho=LRHO[:1]), "rho").device("rho").number(
    "invalid_penalty", positive=True).number("call_reward").skip_grad(
    "a world: it stores value_probs").meta(
    value_probs=VPROBS.to("meta"), rho=LRHO.to("meta")).skip_bf16(
    "a world: value_probs set its dtype, nothing is computed")
spec("pgbook.worlds.agentic.LookupWorld.action_positions", LWORLD.action_positions,
     dict(device="cpu")).bad("not a device", dict(device="nope"), "device").bad(
    "a number", dict(device=1.5), "device")
spec("pgbook.worlds.agentic.LookupWorld.decode", LWORLD.decode, dict(ep=EPS.index(EIDX))).bad(
    "not Episodes", dict(ep=EPS.tokens), "ep").bad("the episodes of a larger world",
                                                   dict(ep=BIG_EPS), "ep").values_only(
    "returns strings")
spec("pgbook.worlds.agentic.LookupWorld.demonstrations", LWORLD.demonstrations,
     dict(p_tool=0.3)).number("p_tool", positive=True).bad("p_tool = 1.5", dict(p_tool=1.5),
                                                           "p_tool")
EPROBS = EA.episode_probs(MKV, MTH, EPS)
spec("pgbook.worlds.agentic.LookupWorld.sample", LWORLD.sample,
     dict(probs=EPROBS, n=3, generator=G0, group_size=2)).floats("probs", inf=False).bad(
    "probs of another length", dict(probs=EPROBS[:5]), "probs").bad(
    "negative probs", dict(probs=EPROBS - 0.1), "probs").bad(
    "probs not summing to one", dict(probs=EPROBS * 2), "probs").count("n").count(
    "group_size").bad("no generator", dict(generator=None), "generator").bad(
    "probs on meta", dict(probs=EPROBS.to("meta")), "probs").skip_meta(
    "sampling needs values (refused on meta with a ValueError)").bf16("probs", close=False)
record("pgbook.worlds.agentic.Rollout", WAG.Rollout, "targets", tokens=ACTS, logprobs=ADV,
       policy_mask=MASK, obs_mask=MASK, turn_ids=TURN_IDS, turn_rewards=TURN_R,
       outcomes=ANCHORS, anchors=ANCHORS)


def _rollout(model: object = None, env: object = ENV, state: object = None,
             generator: object = None, **kw: object) -> WAG.Rollout:
    """rollout on a fresh state (a rollout consumes the state it is given)."""
    state = ENV.reset(2, pg.make_generator(33)).repeat_interleave(2) if state is None else state
    return WAG.rollout(AMODEL if model is None else model, env, state,
                       pg.make_generator(34) if generator is None else generator, **kw)


spec("pgbook.worlds.agentic.rollout", _rollout, dict(temperature=1.0, tool=True),
     out=lambda r: r.logprobs).bad("not a model", dict(model="gpt"), "model").bad(
    "a model whose block is shorter than a rollout",
    dict(model=WG.GPT(WG.GPTConfig(vocab_size=ENV.tokenizer.vocab_size, block_size=4,
                                   n_embd=8, n_head=1))), "model").bad(
    "not an environment", dict(env=TASK), "env").bad("not an EnvState", dict(state=PROB),
                                                     "state").bad(
    "a state on meta", dict(state=WE.EnvState(ESTATE.prompts.to("meta"), ESTATE.targets.to("meta"),
                                              0, ESTATE.done.to("meta"))), "state").bad(
    "a state whose budget is spent", dict(state=_env_state(2)), "state").bad(
    "not a generator", dict(generator=0), "generator").number(
    "temperature", positive=True).flag("tool").values_only(
    "samples (its log-probs are float32 whatever the model's dtype)")

# -- pgbook.worlds.teachers -------------------------------------------------------------------
spec("pgbook.worlds.teachers.table_policy", WTE.table_policy,
     dict(space=SPACE, answers=["a", "b"], confidence=0.9), out=lambda r: r[1]).bad(
    "a string, not a list", dict(answers="ab"), "answers").bad(
    "an answer per prompt missing", dict(answers=["a"]), "answers").bad(
    "an unknown token", dict(answers=["a", "z"]), "answers").bad(
    "an answer longer than max_len", dict(answers=["a", "bbb"]), "answers").bad(
    "confidence below 1/V", dict(confidence=0.2), "confidence").bad(
    "confidence = 1", dict(confidence=1.0), "confidence").bad(
    "NaN confidence", dict(confidence=NAN), "confidence").bad(
    "a string confidence", dict(confidence="0.9"), "confidence").bad(
    "a confidence per prompt, one too many", dict(confidence=[0.9] * 3), "confidence").bad(
    "an integer dtype", dict(dtype=torch.long), "dtype").bad("not a space", dict(space=MPOL),
                                                            "space")
spec("pgbook.worlds.teachers.teacher_wrong", WTE.teacher_wrong,
     dict(task=TASK, targets=PROB.targets, wrong_first="a")).bad(
    "an empty wrong_first", dict(wrong_first=""), "wrong_first").bad(
    "not an answer character", dict(wrong_first="z"), "wrong_first").bad(
    "not a string", dict(wrong_first=3), "wrong_first").bad(
    "1-D targets", dict(targets=PROB.targets[0]), "targets").bad(
    "float targets", dict(targets=PROB.targets.double()), "targets").bad(
    "a list", dict(targets=PROB.targets.tolist()), "targets").bad(
    "not a task", dict(task="reverse"), "task").meta(targets=PROB.targets.to("meta")).skip_bf16(
    "takes token ids")
SYS = WTE.SystematicErrors(TASK, "a")
spec("pgbook.worlds.teachers.SystematicErrors", WTE.SystematicErrors,
     dict(task=TASK, wrong_first="a")).bad("not a task", dict(task="reverse"), "task").bad(
    "not an answer character", dict(wrong_first="z"), "wrong_first").bad(
    "an empty wrong_first", dict(wrong_first=""), "wrong_first")
META_PROB = WT.Problems(PROB.prompts.to("meta"), PROB.targets.to("meta"))
spec("pgbook.worlds.teachers.SystematicErrors.wrong_targets", SYS.wrong_targets,
     dict(problems=PROB)).bad("not Problems", dict(problems=PROB.targets), "problems").meta(
    problems=META_PROB).skip_bf16("takes token ids")
spec("pgbook.worlds.teachers.SystematicErrors.demonstrations", SYS.demonstrations,
     dict(problems=PROB), out=lambda r: r[0]).bad("not Problems", dict(problems=PROB.targets),
                                                   "problems").bad(
    "noise = 1.5", dict(noise=1.5), "noise").bad("noise without a generator", dict(noise=0.5),
                                                 "generator").meta(problems=META_PROB).skip_bf16(
    "takes token ids")
spec("pgbook.worlds.teachers.train_teacher", WTE.train_teacher,
     dict(task=TASK, steps=1, batch_size=2, progress=False, n_embd=8, n_head=1),
     out=lambda r: r[1]).count("steps").count("batch_size").number("lr", positive=True).bad(
    "not an answer character", dict(wrong_first="z"), "wrong_first").bad(
    "noise = 2", dict(noise=2.0), "noise").bad("an unknown config field", dict(width=3),
                                               "width").bad(
    "not a task", dict(task="reverse"), "task").bad("a float seed", dict(seed=0.5), "seed")

# -- pgbook.train.reinforce -------------------------------------------------------------------
spec("pgbook.train.reinforce.weighted_log_likelihood", TR.weighted_log_likelihood,
     dict(policy=POL, theta=TH, batch=BATCH, weights=BATCH.r)).floats("weights").floats(
    "theta").bad("weights of another shape", dict(weights=BATCH.r[:3]), "weights").bad(
    "a bad id", dict(batch=WB.BanditBatch(_with(S_IDS, 7), A_IDS, BATCH.r)), "s").bad(
    "not a batch", dict(batch=None), "batch").grad("theta").meta(
    theta=TH.to("meta"), batch=WB.BanditBatch(S_IDS.to("meta"), A_IDS.to("meta"),
                                              BATCH.r.to("meta")),
    weights=BATCH.r.to("meta")).bf16("theta", "weights")
spec("pgbook.train.reinforce.sft_loss", TR.sft_loss, dict(policy=POL, theta=TH, s=S_IDS, a=A_IDS)
     ).bad("an empty batch", dict(s=S_IDS[:0], a=A_IDS[:0]), "s").ids("s", 3).ids("a", 4).floats(
    "theta").grad("theta").meta(theta=TH.to("meta"), s=S_IDS.to("meta"), a=A_IDS.to("meta")).bf16(
    "theta")
spec("pgbook.train.reinforce.empirical_policy", TR.empirical_policy,
     dict(s=S_IDS, a=A_IDS, n_contexts=3, n_actions=4)).ids("s", 3).ids("a", 4).count(
    "n_contexts").count("n_actions").bad("shapes differ", dict(a=A_IDS[:2]), "s and a").bad(
    "an integer dtype", dict(dtype=torch.long), "dtype").device("a").skip_meta(
    "counting needs values").skip_bf16("takes ids")
spec("pgbook.train.reinforce.fit_weighted_mle", TR.fit_weighted_mle,
     dict(policy=POL, theta0=TH, batch=BATCH, steps=2), out=lambda f: f.theta).count("steps").number(
    "lr", positive=True).bad("NaN weights", dict(weights=_with(BATCH.r, NAN)), "weights").bad(
    "weights of another shape", dict(weights=BATCH.r[:3]), "weights").bad(
    "not a batch", dict(batch=None), "batch").bad("a bad id",
                                                  dict(batch=WB.BanditBatch(S_IDS, _with(A_IDS, 9),
                                                                            BATCH.r)),
                                                  "batch.a").floats("theta0").skip_meta(
    "values drive the loop").bf16("theta0")
world("pgbook.train.reinforce.reinforce", TR.reinforce, theta_as="theta0", steps=2, batch_size=4,
      lr=0.5, generator=G0, progress=False, out=lambda h: h.J).count("steps").count(
    "batch_size").number("lr", positive=True).bad("a learning-rate tensor with NaN",
                                                  dict(lr=torch.tensor([NAN], dtype=F64)), "lr").bad(
    "unknown baseline", dict(baseline="nope"), "baseline").bad(
    "no generator", dict(generator=None), "generator").skip_meta("sampling needs values").bf16(
    "theta0", close=False)
world("pgbook.train.reinforce.rejection_sampling_ft", TR.rejection_sampling_ft, theta_as="theta0",
      iterations=2, batch_size=4, lr=0.5, generator=G0, out=lambda h: h.J).count(
    "iterations").count("batch_size").count("sft_steps").number("lr", positive=True).bad(
    "a learning-rate tensor with NaN", dict(lr=torch.tensor([NAN], dtype=F64)), "lr").number(
    "success").bad("no generator", dict(generator=None), "generator").skip_meta(
    "sampling needs values").bf16("theta0", close=False)
record("pgbook.train.reinforce.History", TR.History, "optimum", J=TH, theta=TH, grad_norm=TH,
       batch_reward=TH)
record("pgbook.train.reinforce.MLEFit", TR.MLEFit, "objective", theta=TH)

# -- pgbook.train.ppo -------------------------------------------------------------------------
PB = TP.collect(BANDIT, POL, TH, 8, pg.make_generator(10))
PB2 = TP.collect(BANDIT, POL, TH, (2, 8), pg.make_generator(11))
BAD_PB = TP.PPOBatch(_with(PB.s, -1), PB.a, PB.adv, PB.old_logp, PB.theta_old)
spec("pgbook.train.ppo.PPOBatch", TP.PPOBatch,
     dict(s=PB.s, a=PB.a, adv=PB.adv, old_logp=PB.old_logp, theta_old=PB.theta_old)).bad(
    "float ids", dict(s=PB.s.double()), "s").bad("integer advantages", dict(adv=PB.s), "adv").bad(
    "shapes differ", dict(adv=PB.adv[:3]), "s, a, adv and old_logp").bad(
    "2-D theta_old", dict(theta_old=PB.theta_old[None]), "theta_old").device("adv").skip_grad("a record").meta(
    s=PB.s.to("meta"), a=PB.a.to("meta"), adv=PB.adv.to("meta"), old_logp=PB.old_logp.to("meta"),
    theta_old=TH.to("meta")).skip_bf16("a record: it stores, it computes nothing")
spec("pgbook.train.ppo.make_batch", TP.make_batch,
     dict(policy=POL, theta_old=TH, s=S_IDS, a=A_IDS, adv=BATCH.r), out=lambda b: b.old_logp).ids(
    "s", 3).ids("a", 4).floats("adv").floats("theta_old").bad(
    "shapes differ", dict(adv=BATCH.r[:3]), "s, a and adv").bad(
    "empty", dict(s=S_IDS[:0], a=A_IDS[:0], adv=BATCH.r[:0]), "s").device("adv").bf16(
    "theta_old", "adv").skip_meta("the ids need values")
world("pgbook.train.ppo.collect", TP.collect, theta_as="theta_old", n=8, generator=G0,
      out=lambda b: b.adv).count("n").bad("unknown baseline", dict(baseline="nope"), "baseline").bad(
    "no generator", dict(generator=None), "generator").skip_meta("sampling needs values").bf16(
    "theta_old", close=False)
for _name, _extra in (("surrogate", {}), ("batch_kl", {}), ("ppo_objective", {"beta": 0.1})):
    s = spec(f"pgbook.train.ppo.{_name}", getattr(TP, _name),
             dict(policy=POL, theta=0.9 * TH, batch=PB, **_extra)).bad(
        "a batch with a negative id", dict(batch=BAD_PB), "batch.s").bad(
        "not a PPOBatch", dict(batch=BATCH), "batch").floats("theta").bad(
        "theta (M, P) for a (N,) batch", dict(theta=TH.expand(2, -1)), "theta").grad("theta").meta(
        theta=TH.to("meta"), batch=TP.PPOBatch(PB.s.to("meta"), PB.a.to("meta"), PB.adv.to("meta"),
                                               PB.old_logp.to("meta"), TH.to("meta"))).bf16("theta")
    if _name != "batch_kl":
        s.bad("eps_high without eps_low", dict(eps_high=0.2), "eps").bad(
            "eps_low = 1", dict(eps_low=1.0), "eps_low").number("eps_low", positive=True)
SPECS["pgbook.train.ppo.ppo_objective"].number("beta", positive=True).bad(
    "a beta tensor with NaN", dict(beta=torch.tensor([NAN, 0.1], dtype=F64), batch=PB2,
                                   theta=TH.expand(2, -1)), "beta").bad(
    "a negative beta tensor", dict(beta=torch.tensor([-1.0, 0.1], dtype=F64), batch=PB2,
                                   theta=TH.expand(2, -1)), "beta")
spec("pgbook.train.ppo.adaptive_beta", TP.adaptive_beta, dict(beta=0.5, kl=0.02, kl_target=0.01)
     ).number("beta", positive=True).number("kl").number("kl_target", positive=True).number(
    "factor", positive=True).number("tolerance", positive=True).bad(
    "a kl tensor with NaN", dict(kl=torch.tensor([NAN])), "kl").bad(
    "tensors on different devices", dict(beta=torch.tensor([0.5]), kl=torch.tensor([0.1],
                                                                                   device="meta")),
    "device")
spec("pgbook.train.ppo.run_epochs", TP.run_epochs,
     dict(bandit=BANDIT, policy=POL, batch=PB, epochs=2, lr=0.05), out=lambda h: h.J).count(
    "epochs").number("lr", positive=True).option("optimizer").bad(
    "a batch with a negative id", dict(batch=BAD_PB), "batch.s").bad(
    "not a PPOBatch", dict(batch=BATCH), "batch").bad("not a bandit", dict(bandit=None), "bandit").bad(
    "eps_low = 1.5", dict(eps_low=1.5), "eps_low").number("beta", positive=True).skip_meta(
    "an optimiser loop on values").skip_bf16("trains in the batch's dtype: see make_batch")
world("pgbook.train.ppo.ppo_iterations", TP.ppo_iterations, theta_as="theta0", iterations=1,
      n_samples=8, generator=G0, epochs=1, lr=0.05, out=lambda r: r["J"]).count(
    "iterations").count("n_samples").count("epochs").option("optimizer").number(
    "kl_target", positive=True).number("lr", positive=True).number("beta", positive=True).skip_meta(
    "sampling needs values").skip_bf16("trains in θ's dtype: see make_batch")
PH = TP.run_epochs(BANDIT, POL, PB, 1, 0.05)
record("pgbook.train.ppo.PPOHistory", TP.PPOHistory, "theta", surrogate=PH.J, objective=PH.J,
       J=PH.J, kl=PH.J, batch_kl=PH.J, clip_frac=PH.J)

# -- pgbook.train.grpo ------------------------------------------------------------------------
HIST = TG.GRPOHistory(**{k: torch.linspace(0, 1, 6, dtype=F64) for k in TG.METRICS})
record("pgbook.train.grpo.GRPOHistory", TG.GRPOHistory, "seconds",
       **{k: torch.zeros(2) for k in TG.METRICS if k != "seconds"})
spec("pgbook.train.grpo.GRPOHistory.smoothed", HIST.smoothed, dict(name="reward")).option(
    "name").count("window")
for _name in ("first_step", "time_to"):
    spec(f"pgbook.train.grpo.GRPOHistory.{_name}", getattr(HIST, _name), dict(target=0.5)).number(
        "target").option("name").count("window")
spec("pgbook.train.grpo.grpo_train", TG.grpo_train,
     dict(model=WG.GPT(CFG), task=TASK, steps=1, prompts_per_step=2, group_size=2,
          generator=pg.make_generator(12), progress=False), out=lambda h: h.reward).count(
    "steps").count("prompts_per_step").count("group_size").bad(
    "groups of one", dict(group_size=1), "group_size").count("epochs_per_batch").count(
    "minibatches").bad("minibatches not dividing the prompts", dict(minibatches=3),
                       "minibatches").option("method").option("advantage").option("loss").option(
    "aggregation").option("kl").bad("a critic advantage", dict(advantage="value"), "advantage").bad(
    "beta without a KL", dict(beta=0.1, kl="none"), "beta").number("beta", positive=True).number(
    "lr", positive=True).number("temperature", positive=True).bad(
    "eps_low = 1", dict(eps_low=1.0), "eps_low").number("stop_at").bad(
    "not a model", dict(model="gpt"), "model").bad("not a task", dict(task=None), "task").bad(
    "the model as its own reference", dict(ref_model=MODEL, model=MODEL), "ref_model").bad(
    "no generator", dict(generator=None), "generator").bad(
    "PPO's KL penalty", dict(kl="kl_penalty"), "kl").bad(
    "the model as its own sampler", dict(sampler=MODEL, model=MODEL), "sampler").bad(
    "a sampler that is no module", dict(sampler="vllm"), "sampler").bad(
    "an unknown correction", dict(correction="tis"), "correction").bad(
    "dynamic_sampling = 'yes'", dict(dynamic_sampling="yes"), "dynamic_sampling").count(
    "max_gen_batches").bad("loss_options a list", dict(loss_options=["eps_low"]),
                           "loss_options").bad(
    "std_eps among the advantage options", dict(advantage_options={"std_eps": 0.1}),
    "advantage_options").bad("an unknown shaping", dict(shaping="overlong_cut"), "shaping").bad(
    "an unknown token credit", dict(token_credit="top"), "token_credit").bad(
    "a misspelt option", dict(prompt_per_step=2), "prompt_per_step").skip_meta(
    "training needs values (refused on meta with a ValueError)").skip_bf16(
    "a training loop: the model's dtype decides; covered by tests/test_llm_train.py")

spec("pgbook.train.grpo.check_on_policy", TG.check_on_policy,
     dict(logp=LP, old_logp=LP.clone(), mask=MASK)).floats("logp").floats(
    "old_logp", dtype=False).mask("mask").shape("old_logp", match="logp and old_logp").shape(
    "mask").device("mask").device("old_logp").bad(
    "ratios away from 1 (old log-probs of another policy)", dict(old_logp=OLD), "old_logp").number(
    "atol", positive=True).meta().bf16("logp", "old_logp")

# -- pgbook.train.ppo_llm ---------------------------------------------------------------------
VMODEL = TPL.ValueModel.from_policy(MODEL)
spec("pgbook.train.ppo_llm.hidden_states", TPL.hidden_states, dict(model=MODEL, idx=DEMO)).bad(
    "not a GPT", dict(model=VMODEL), "model").bad(
    "a token past the vocabulary", dict(idx=_with(DEMO, 99)), "idx").bad(
    "a negative token", dict(idx=_with(DEMO, -1)), "idx").bad(
    "float ids", dict(idx=DEMO.double()), "idx").bad("1-D", dict(idx=DEMO[0]), "idx").bad(
    "more positions than block_size", dict(idx=torch.zeros(1, 99, dtype=torch.long)),
    "block_size").device("idx").meta(model=META_MODEL, idx=DEMO.to("meta")).skip_bf16(
    "a module: the model's dtype decides (a bfloat16 GPT is covered by tests/test_gpt.py)")
spec("pgbook.train.ppo_llm.ValueModel", TPL.ValueModel, None).bad(
    "a body that is no GPT", lambda: TPL.ValueModel(nn.Linear(2, 2)), "body")
spec("pgbook.train.ppo_llm.ValueModel.from_policy", TPL.ValueModel.from_policy,
     dict(policy=MODEL)).bad("not a GPT", dict(policy="gpt"), "policy")
spec("pgbook.train.ppo_llm.ValueModel.forward", VMODEL.forward, dict(idx=DEMO)).bad(
    "a token past the vocabulary", dict(idx=_with(DEMO, 99)), "idx").bad(
    "float ids", dict(idx=DEMO.double()), "idx").bad("1-D", dict(idx=DEMO[0]), "idx").device(
    "idx").meta(_fn=TPL.ValueModel.from_policy(META_MODEL).forward, idx=DEMO.to("meta")).skip_bf16(
    "a module: the model's dtype decides")
spec("pgbook.train.ppo_llm.state_bytes", TPL.state_bytes, None).bad(
    "not a module", lambda: TPL.state_bytes(MODEL, "critic"), "modules").bad(
    "optimizer_slots = -1", lambda: TPL.state_bytes(MODEL, optimizer_slots=-1), "optimizer_slots").bad(
    "optimizer_slots = 1.5", lambda: TPL.state_bytes(MODEL, optimizer_slots=1.5), "optimizer_slots")
spec("pgbook.train.ppo_llm.update_activation_bytes", TPL.update_activation_bytes,
     dict(model=MODEL, tokens=DEMO, mask=DEMO_MASK.to(torch.float32), critic=VMODEL)).bad(
    "not a GPT", dict(model=VMODEL), "model").bad("a critic that is no critic",
                                                  dict(critic=MODEL), "critic").bad(
    "a token past the vocabulary", dict(tokens=_with(DEMO, 99)), "idx").mask(
    "mask").shape("mask").values_only("counts bytes (a Python int)")
record("pgbook.train.ppo_llm.PPOHistory", TPL.PPOHistory, "seconds",
       **{k: R4 for k in TPL.PPO_METRICS if k != "seconds"})
PPO_KW = dict(model=WG.GPT(CFG), task=TASK, steps=1, batch_size=2, generator=pg.make_generator(19),
              progress=False)
spec("pgbook.train.ppo_llm.ppo_train", TPL.ppo_train, PPO_KW, out=lambda h: h.reward).bad(
    "not a model", dict(model="gpt"), "model").bad("not a task", dict(task=None), "task").count(
    "steps").count("batch_size").count("epochs_per_batch").count("minibatches").bad(
    "minibatches not dividing the batch", dict(minibatches=3), "minibatches").option(
    "critic").bad("a value model with a shared head", dict(critic="shared", value_model=VMODEL),
                  "value_model").bad("a value model that is none", dict(value_model=MODEL),
                                     "value_model").number("gamma", positive=True).bad(
    "lam = 2", dict(lam=2.0), "lam").number("eps_low", positive=True).bad(
    "eps_low = 1", dict(eps_low=1.0), "eps_low").number("eps_value", positive=True).number(
    "vf_coef", positive=True).number("lr", positive=True).number(
    "temperature", positive=True).option("kl").bad("beta without a KL", dict(beta=0.1), "beta").bad(
    "a method without GAE", dict(method="GRPO"), "method").bad(
    "the model as its own reference", dict(ref_model=PPO_KW["model"]), "ref_model").bad(
    "a reference that is no model", dict(ref_model="frozen"), "ref_model").flag(
    "whiten_advantages").flag("partial_reward").flag("progress").bad(
    "no generator", dict(generator=None), "generator").skip_meta(
    "training needs values (refused on meta with a ValueError)").skip_bf16(
    "a training loop: the model's dtype decides; covered by tests/test_ppo_llm.py")
spec("pgbook.train.ppo_llm.compare_ppo_grpo", TPL.compare_ppo_grpo,
     dict(task=TASK, model=MODEL, steps=1, responses_per_step=4, group_size=2, progress=False),
     out=lambda r: r["PPO"]["reward"]).bad("not a GPT", dict(model="gpt"), "model").bad(
    "an unknown critic", dict(ppo_critic="joint"), "ppo_critic").bad(
    "an unknown method", dict(grpo_method="GRPOO"), "grpo_method").count(
    "responses_per_step").count("group_size").bad(
    "a group size not dividing the responses", dict(group_size=3), "group_size").bad(
    "a float seed", dict(seed=0.5), "seed").values_only(
    "trains two models: tests/test_ppo_llm.py covers their dtypes")

# -- pgbook.train.agentic ---------------------------------------------------------------------
AHIST = TAG.AgentHistory(**{k: torch.linspace(0, 1, 6, dtype=F64) for k in TAG.AGENT_METRICS})
record("pgbook.train.agentic.AgentHistory", TAG.AgentHistory, "seconds",
       **{k: R4 for k in TAG.AGENT_METRICS if k != "seconds"})
spec("pgbook.train.agentic.AgentHistory.smoothed", AHIST.smoothed, dict(name="reward")).option(
    "name").count("window")
for _name in ("first_step", "time_to"):
    spec(f"pgbook.train.agentic.AgentHistory.{_name}", getattr(AHIST, _name),
         dict(target=0.5)).number("target").option("name").count("window")
record("pgbook.train.agentic.TreeHistory", TAG.TreeHistory, "theta", J=R4, reward=R4,
       reward_std=R4, zero_variance=R4, grad_norm=R4, kept=R4)
spec("pgbook.train.agentic.agent_config", TAG.agent_config, dict(env=ENV, n_embd=8, n_head=1)
     ).bad("an unknown field", dict(n_layers=2), "n_layers").bad(
    "not an environment", dict(env=TASK), "env").bad("a bad field value", dict(n_head=3), "n_embd")
spec("pgbook.train.agentic.pretrain_agent", TAG.pretrain_agent,
     dict(env=ENV, steps=1, batch_size=2, progress=False, n_embd=8, n_head=1),
     out=lambda r: r[1]).count("steps").count("batch_size").number("lr", positive=True).bad(
    "p_tool = 1.5", dict(p_tool=1.5), "p_tool").bad("noise = 2", dict(noise=2.0), "noise").bad(
    "a float seed", dict(seed=0.5), "seed").bad("not an environment", dict(env=TASK), "env").bad(
    "an unknown config field", dict(width=3), "width").flag("progress")
for _name in ("evaluate_agent", "written_reply"):
    spec(f"pgbook.train.agentic.{_name}", getattr(TAG, _name),
         dict(model=AMODEL, env=ENV, n=2, generator=pg.make_generator(35))).count("n").bad(
        "no generator", dict(generator=None), "generator").bad(
        "not a model", dict(model="gpt"), "model").bad("not an environment", dict(env=TASK), "env")
SPECS["pgbook.train.agentic.evaluate_agent"].number("temperature", positive=True).flag("tool")
AGENT_KW = dict(model=WG.GPT(TAG.agent_config(ENV, n_embd=8, n_head=1)), env=ENV, steps=1,
                prompts_per_step=1, group_size=2, generator=pg.make_generator(36), progress=False)
spec("pgbook.train.agentic.agent_grpo_train", TAG.agent_grpo_train, AGENT_KW,
     out=lambda h: h.reward).count("steps").count("prompts_per_step").count("group_size").bad(
    "groups of one", dict(group_size=1), "group_size").option("advantage").bad(
    "a critic advantage", dict(advantage="value"), "advantage").option("mask").number(
    "keep_fraction", positive=True).bad("keep_fraction = 1.5", dict(keep_fraction=1.5),
                                        "keep_fraction").number("lr", positive=True).number(
    "max_grad_norm", positive=True).number("temperature", positive=True).count("window").number(
    "stop_at").bad("advantage_options a list", dict(advantage_options=["std_eps"]),
                   "advantage_options").bad(
    "an option the estimator does not take", dict(advantage_options={"temperature": 1.0}),
    "temperature").bad("not a model", dict(model="gpt"), "model").bad(
    "not an environment", dict(env=TASK), "env").bad("no generator", dict(generator=None),
                                                     "generator").bad(
    "a misspelt option", dict(prompt_per_step=1), "prompt_per_step").flag("progress").skip_meta(
    "training needs values (sampling)").skip_bf16(
    "a training loop: the model's dtype decides; covered by tests/test_agentic.py")


def _tree(s: Spec) -> Spec:
    """The bad worlds of the tree trainers."""
    return s.bad("NaN theta", dict(theta=_with(MTH, NAN)), "theta").bad(
        "theta of the wrong size", dict(theta=MTH[:4]), "theta").bad(
        "not a policy", dict(policy=POL), "policy").bad(
        "not a LookupWorld", dict(world=EPS), "world").bad(
        "a world of another shape", dict(world=WAG.LookupWorld(n_values=2, max_turns=3)),
        "world").count("steps").number("lr", positive=True).option("mask")


_tree(spec("pgbook.train.agentic.exact_ascent", TAG.exact_ascent,
           dict(policy=MKV, theta=MTH, world=LWORLD, steps=1, lr=0.1),
           out=lambda r: r["J"])).option("credit").bad(
    "a misspelt option", dict(step=1), "step").skip_meta(
    "the tasks' groups are read from values").bf16("theta", close=False)
_tree(spec("pgbook.train.agentic.tree_grpo_train", TAG.tree_grpo_train,
           dict(policy=MKV, theta=MTH, world=LWORLD, steps=1, prompts_per_step=2, group_size=2,
                generator=pg.make_generator(37), runs=2),
           out=lambda h: h.theta)).bad(
    "an MLPPolicy without a table", dict(policy=WS.MLPPolicy(LWORLD.space, hidden=3)),
    "policy").count("prompts_per_step").count("group_size").bad(
    "groups of one", dict(group_size=1), "group_size").count("runs").option("advantage").number(
    "keep_fraction", positive=True).bad("keep_fraction = 1.5", dict(keep_fraction=1.5),
                                        "keep_fraction").bad(
    "advantage_options a list", dict(advantage_options=["std_eps"]), "advantage_options").bad(
    "no generator", dict(generator=None), "generator").skip_meta(
    "sampling needs values").bf16("theta", close=False)
spec("pgbook.train.agentic.fit_demonstrations", TAG.fit_demonstrations,
     dict(policy=MKV, world=LWORLD, steps=1)).number("p_tool", positive=True).bad(
    "p_tool = 1.5", dict(p_tool=1.5), "p_tool").count("steps").number("lr", positive=True).bad(
    "a float seed", dict(seed=0.5), "seed").bad("a negative scale", dict(scale=-1.0),
                                                "scale").bad(
    "not a policy", dict(policy=POL), "policy").bad("not a LookupWorld", dict(world=EPS),
                                                    "world").bad(
    "a world of another shape", dict(world=WAG.LookupWorld(n_values=2, max_turns=3)),
    "world").bad("a misspelt option", dict(step=1), "step")

# -- pgbook.train.distill ---------------------------------------------------------------------
T_POL, T_TH = WTE.table_policy(SPACE, ["a", "b"], 0.8)
record("pgbook.train.distill.SeqOPDHistory", TDI.SeqOPDHistory, "seconds", step=R4, J=R4,
       kl_teacher=R4, zero_variance=R4, teacher_fraction=R4, theta=STH)
spec("pgbook.train.distill.seqlm_opd_train", TDI.seqlm_opd_train,
     dict(policy=MPOL, theta=STH, reward=REWARD, teacher_policy=T_POL, teacher_theta=T_TH,
          steps=1, prompts_per_step=2, group_size=2, lr=0.1, generator=pg.make_generator(38),
          coef=[0.5, 1.0]), out=lambda h: h.theta).bad("not a policy", dict(policy=POL),
                                                        "policy").floats(
    "theta").bad("theta of the wrong size", dict(theta=STH[:4]), "theta").bad(
    "not a reward", dict(reward=TABLE), "reward").bad(
    "a teacher that is no policy", dict(teacher_policy=POL), "teacher_policy").bad(
    "a teacher on another space", dict(teacher_policy=WS.TabularPolicy(WS.SeqSpace(max_len=3)),
                                       teacher_theta=WS.TabularPolicy(WS.SeqSpace(max_len=3)).init(
                                           pg.make_generator(0))), "teacher_policy").floats(
    "teacher_theta").bad("teacher_theta of the wrong size", dict(teacher_theta=T_TH[:4]),
                         "teacher_theta").bad(
    "3-D teacher_theta", dict(teacher_theta=T_TH[None, None]), "teacher_theta").bad(
    "one teacher per run, one too many", dict(teacher_theta=T_TH.expand(3, -1)),
    "teacher_theta").count("steps").count("prompts_per_step").count("group_size").bad(
    "groups of one", dict(group_size=1), "group_size").number("lr", positive=True).bad(
    "no generator", dict(generator=None), "generator").bad(
    "a negative coef", dict(coef=-1.0), "coef").bad("NaN coef", dict(coef=NAN), "coef").bad(
    "a string coef", dict(coef="1"), "coef").bad(
    "use_verifier = 0.5", dict(use_verifier=0.5), "use_verifier").bad(
    "use_verifier = 'yes'", dict(use_verifier="yes"), "use_verifier").option("gate").number(
    "discount", positive=True).bad("discount = 1.5", dict(discount=1.5), "discount").count(
    "runs").bad("runs disagreeing with coef", dict(runs=3), "runs").count("eval_every").number(
    "std_eps", positive=True).flag("progress").bad("a misspelt option", dict(step=1),
                                                   "step").skip_meta(
    "training needs values (sampling)").bf16("theta", close=False)

# -- pgbook.train.distributed -----------------------------------------------------------------
SHARDS = torch.tensor([0, 0, 1, 1])
AGG_KW = dict(per_token_loss=ADV, mask=MASK)
spec("pgbook.train.distributed.row_terms", TDD.row_terms,
     dict(AGG_KW, aggregation="seq_mean_token_mean"), out=lambda r: r[0]).floats(
    "per_token_loss").bad("1-D", dict(per_token_loss=ADV[0], mask=MASK[0]), "per_token_loss").mask(
    "mask", allzero=False).shape("mask").device("mask").option("aggregation").count(
    "max_tokens").bad("max_tokens below the longest", dict(aggregation="constant", max_tokens=2),
                      "max_tokens").grad("per_token_loss").meta().bf16("per_token_loss")
spec("pgbook.train.distributed.global_normaliser", TDD.global_normaliser,
     dict(mask=MASK, aggregation="token_mean")).mask("mask").bad("1-D", dict(mask=MASK[0]),
                                                                  "mask").option(
    "aggregation").count("max_tokens").meta().skip_bf16("counts, in float64 whatever the mask's dtype")
spec("pgbook.train.distributed.shard_loss", TDD.shard_loss,
     dict(AGG_KW, aggregation="token_mean", normaliser=torch.tensor(13.0, dtype=F64),
          world_size=2)).floats("per_token_loss").mask("mask", allzero=False).shape(
    "mask").device("mask").option("aggregation").bad(
    "a zero normaliser", dict(normaliser=torch.tensor(0.0, dtype=F64)), "normaliser").bad(
    "a NaN normaliser", dict(normaliser=NAN), "normaliser").bad(
    "a string normaliser", dict(normaliser="13"), "normaliser").bad(
    "a normaliser of shape (2,)", dict(normaliser=torch.ones(2, dtype=F64)), "normaliser").bad(
    "a normaliser on another device", dict(normaliser=torch.tensor(13.0, device="meta")),
    "device").count("world_size").count("max_tokens").grad("per_token_loss").meta().bf16(
    "per_token_loss")
spec("pgbook.train.distributed.data_parallel_loss", TDD.data_parallel_loss,
     dict(AGG_KW, aggregation="token_mean", shards=SHARDS, world_size=2)).floats(
    "per_token_loss").mask("mask").shape("mask").device("mask").option("aggregation").ids(
    "shards", 2).bad("shards of another length", dict(shards=SHARDS[:3]), "shards").bad(
    "2-D shards", dict(shards=SHARDS[None]), "shards").device("shards").count(
    "world_size").count("micro_batches").option("normalisation").count("max_tokens").grad(
    "per_token_loss").meta().bf16("per_token_loss")
spec("pgbook.train.distributed.group_layout", TDD.group_layout,
     dict(n_groups=4, group_size=2, world_size=2, micro_batches=2)).count("n_groups").count(
    "group_size").count("world_size").bad("world_size not dividing n_groups", dict(world_size=3),
                                          "world_size").count("micro_batches").bad(
    "micro_batches not dividing the groups per rank", dict(micro_batches=3), "micro_batches").bad(
    "not a device", dict(device="nope"), "device").bad("a misspelt option", dict(micro_batch=2),
                                                      "micro_batch")
spec("pgbook.train.distributed.token_losses", TDD.token_losses,
     dict(logp=LP, old_logp=OLD, advantages_tok=ADV, mask=MASK)).floats("logp").floats(
    "advantages_tok", dtype=False).floats("old_logp", dtype=False).mask(
    "mask", allzero=False).shape(
    "mask").shape("old_logp").shape("advantages_tok").device("mask").device("old_logp").bad(
    "1-D logp", dict(logp=LP[0]), "logp").option("loss").option("kl").bad(
    "the KL in the reward", dict(kl="k1_in_reward", beta=0.1, ref_logp=REF), "kl").bad(
    "a KL without the reference", dict(kl="k3_loss", beta=0.1), "ref_logp").bad(
    "beta without a KL", dict(beta=0.1), "beta").bad(
    "NaN reference on a response token", dict(kl="k3_loss", beta=0.1, ref_logp=_with(REF, NAN)),
    "ref_logp").number("beta", positive=True).number("eps_low", positive=True).bad(
    "loss_options a list", dict(loss_options=["dual_clip"]), "loss_options").bad(
    "an option the loss does not take", dict(loss_options={"dual_klip": 2.0}), "dual_klip").bad(
    "a misspelt option", dict(eps=0.2), "eps").grad("logp").meta().bf16(
    "logp", "old_logp", "advantages_tok")
record("pgbook.train.distributed.DDPHistory", TDD.DDPHistory, "world_size", reward=R4, loss=R4,
       tokens=R4, loss_first=R4, grad_first=R4, grad_first_local=None, params_first=R4,
       params=R4)
DDP_KW = dict(model=WG.GPT(CFG), task=TASK, steps=1, prompts_per_step=2, group_size=2, seed=0)
spec("pgbook.train.distributed.ddp_grpo_train", TDD.ddp_grpo_train, DDP_KW,
     out=lambda h: h.loss).bad("not a model", dict(model="gpt"), "model").bad(
    "a model on meta", dict(model=META_MODEL), "model").bad("not a task", dict(task=None),
                                                            "task").count("steps").count(
    "prompts_per_step").count("group_size").bad("groups of one", dict(group_size=1),
                                                "group_size").bad(
    "a float seed", dict(seed=0.5), "seed").bad("a bool seed", dict(seed=True), "seed").option(
    "method").bad("a bandit method", dict(method="REINFORCE"), "method").bad(
    "beta for a method without a KL", dict(method="DAPO", beta=0.1), "beta").number(
    "beta", positive=True).count("epochs_per_batch").count("micro_batches").bad(
    "micro_batches not dividing the groups", dict(micro_batches=3), "micro_batches").number(
    "eps_low", positive=True).number("eps_high", positive=True).number(
    "lr", positive=True).number("max_grad_norm", positive=True).number(
    "temperature", positive=True).number("std_eps", positive=True).option(
    "normalisation").bad("the model as its own reference", dict(ref_model=DDP_KW["model"]),
                         "ref_model").bad("a reference that is no model",
                                          dict(ref_model="frozen"), "ref_model").bad(
    "advantage_options a list", dict(advantage_options=["std_eps"]), "advantage_options").flag(
    "partial_reward").flag("record_local").flag("progress").bad(
    "a misspelt option", dict(stesp=1), "stesp").skip_meta(
    "training needs values (refused on meta with a ValueError)").skip_bf16(
    "a training loop: the model's dtype decides; covered by tests/test_distributed.py")
LAUNCH_RUNS = [dict(steps=1, prompts_per_step=2, group_size=2, seed=0)]


def _launch(**over: object) -> object:
    """launch with one bad argument: every one is refused before a process starts."""
    return TDD.launch(**{**dict(model=MODEL, task=TASK, runs=LAUNCH_RUNS, nproc=2), **over})


spec("pgbook.train.distributed.launch", TDD.launch, None).bad(
    "nproc = 0", lambda: _launch(nproc=0), "nproc").bad(
    "nproc = 1.5", lambda: _launch(nproc=1.5), "nproc").bad(
    "an unknown device", lambda: _launch(device="tpu"), "device").bad(
    "no run", lambda: _launch(runs=[]), "runs").bad(
    "runs not a list", lambda: _launch(runs="GRPO"), "runs").bad(
    "a run with an unknown option", lambda: _launch(runs=[dict(LAUNCH_RUNS[0], lr_typo=1.0)]),
    "runs").bad("a run with a bad value", lambda: _launch(runs=[dict(LAUNCH_RUNS[0], steps=0)]),
                "steps").bad(
    "an unknown start method", lambda: _launch(start_method="nope"), "start_method").bad(
    "not a model", lambda: _launch(model="gpt"), "model").bad(
    "not a task", lambda: _launch(task=None), "task").bad(
    "a reference that is no model", lambda: _launch(ref_model="frozen"), "ref_model").bad(
    "timeout_s = -1", lambda: _launch(timeout_s=-1.0), "timeout_s").bad(
    "NaN timeout_s", lambda: _launch(timeout_s=NAN), "timeout_s").bad(
    "a misspelt option", lambda: _launch(n_proc=2), "n_proc")
spec("pgbook.train.distributed.main", TDD.main, None).bad(
    "argv a string", lambda: TDD.main("--nproc 2"), "argv").bad(
    "nproc = 0", lambda: TDD.main(["--nproc", "0"]), "nproc").bad(
    "an unknown method", lambda: TDD.main(["--method", "GRPOO"]), "method").bad(
    "steps = 0", lambda: TDD.main(["--steps", "0"]), "steps").bad(
    "prompts not a multiple of nproc", lambda: TDD.main(["--prompts", "3"]), "prompts").bad(
    "group size 1", lambda: TDD.main(["--group-size", "1"]), "group").bad(
    "a negative beta", lambda: TDD.main(["--beta", "-1"]), "beta").bad(
    "lr = 0", lambda: TDD.main(["--lr", "0"]), "lr")
spec("pgbook.train.distributed.trainer_options", TDD.trainer_options,
     dict(method_name="GRPO", beta=0.01)).bad("an unknown method", dict(method_name="GRPOO"),
                                              "method").bad(
    "a bandit method", dict(method_name="REINFORCE"), "method").bad(
    "not a string", dict(method_name=3), "method").number("beta", positive=True).number(
    "eps_low", positive=True).number("eps_high", positive=True).count("max_tokens").bad(
    "a misspelt option", dict(eps=0.2), "eps")
spec("pgbook.train.distributed.trainer_table", TDD.trainer_table, dict(names=["GRPO", "DAPO"])).bad(
    "one name, not a list", dict(names="GRPO"), "names").bad(
    "an unknown method", dict(names=["GRPOO"]), "method").bad("a number", dict(names=3),
                                                              "names").flag("markdown").number(
    "beta", positive=True)

# -- pgbook.registry --------------------------------------------------------------------------
spec("pgbook.registry.Component", RG.Component,
     dict(kind="advantage", name="x", fn=None, side="reward")).bad(
    "a side that is neither", dict(side="both"), "side").bad("an empty name", dict(name=""), "name").bad(
    "a fn that is not callable", dict(fn=3), "fn")
spec("pgbook.registry.Component.__call__", RG.get("kl", "none"), None).bad(
    "calling a label", lambda: RG.get("kl", "none")(1), "label")
spec("pgbook.registry.Method", RG.Method, dict(name="m", parent=None)).bad(
    "a name that is not a string", dict(name=3), "name").bad("parts not a dict",
                                                             dict(parts=["grpo"]), "parts")
spec("pgbook.registry.components", RG.components, {}).option("kind").bad(
    "a list kind", dict(kind=["kl"]), "kind")
spec("pgbook.registry.get", RG.get, dict(kind="advantage", name="grpo")).option("kind").option(
    "name", match="advantage").bad("an unhashable kind", dict(kind=["kl"]), "kind")
spec("pgbook.registry.resolve", RG.resolve, dict(kind="advantage", name="grpo", form="group")
     ).option("kind").option("name", match="advantage").bad(
    "a label", dict(kind="kl", name="none", form=None), "label").bad(
    "the wrong form", dict(name="reward_to_go"), "form")
spec("pgbook.registry.method", RG.method, dict(name="GRPO")).option("name", match="method").bad(
    "a list", dict(name=["GRPO"]), "method")
spec("pgbook.registry.register", RG.register, dict(kind="advantage", name="x", side="reward")).bad(
    "a bad side", dict(side="up"), "side").bad("an empty kind", dict(kind=""), "kind").bad(
    "a summary that is not a string", dict(summary=3), "summary").bad(
    "registering a non-function", lambda: RG.register("advantage", "x", side="reward")(3),
    "expected a function").bad(
    "a taken name", lambda: RG.register("advantage", "grpo", side="reward")(lambda r, g: r),
    "already registered")
spec("pgbook.registry.register_label", RG.register_label,
     dict(kind="data", name="on_policy", side="trajectory", summary="samples drawn from the "
                                                                    "current policy π_θ")).bad(
    "a bad side", dict(side="up"), "side").bad("a label over a function",
                                               dict(kind="advantage", name="grpo"),
                                               "already registered").bad(
    "a summary that is not a string", dict(summary=None), "summary")
_GRPO = RG.method("GRPO")   # the good call registers GRPO again, exactly as methods.py does
spec("pgbook.registry.register_method", RG.register_method,
     dict(name="GRPO", parent=_GRPO.parent, **_GRPO.parts, fixes=_GRPO.fixes,
          chapter=_GRPO.chapter, reference=_GRPO.reference)).bad(
    "an unknown parent", dict(parent="nope"), "parent").bad(
    "an unknown component", dict(advantage="nope"), "advantage/nope").bad(
    "a component name that is not a string", dict(advantage=3), "advantage").bad(
    "redefining a method", dict(fixes="something else"), "already registered").bad(
    "changing nothing", dict(name="GRPO twin", parent="GRPO"), "changes no component").bad(
    "fixes not a string", dict(fixes=3), "fixes")
spec("pgbook.registry.unregister", RG.unregister, None).bad(
    "unknown component", lambda: RG.unregister("advantage", "nope"), "advantage").bad(
    "a component a method uses", lambda: RG.unregister("advantage", "grpo"), "used by methods")
spec("pgbook.registry.unregister_method", RG.unregister_method, None).bad(
    "unknown method", lambda: RG.unregister_method("nope"), "method").bad(
    "a method with children", lambda: RG.unregister_method("GRPO"), "children")

# -- pgbook.exercises -------------------------------------------------------------------------
spec("pgbook.exercises.Result", EX.Result, dict(key="02.1", title="t", status="correct",
                                                message="m")).bad(
    "an unknown status", dict(status="fine"), "status")
spec("pgbook.exercises.check", EX.check, dict(key="02.1", fn=lambda probs, a: probs, quiet=True),
     out=lambda r: r.status).bad("an unknown key", dict(key="99.9"), "key").bad(
    "a key that is not a string", dict(key=2.1), "key")
spec("pgbook.exercises.checker", EX.checker, dict(key="02.1")).bad(
    "an unknown key", dict(key="99.9"), "key").bad("a list", dict(key=["02.1"]), "key")
spec("pgbook.exercises.exercise", EX.exercise, dict(key="99.1", title="t")).bad(
    "a key without a dot", dict(key="991"), "key").bad("a title that is not a string",
                                                       dict(title=None), "title")
spec("pgbook.exercises.expect", EX.expect, dict(condition=True, message="m")).bad(
    "a message that is not a string", dict(message=3), "message").bad(
    "a false condition", dict(condition=False), "m", EX.Wrong)
spec("pgbook.exercises.expect_close", EX.expect_close, dict(got=TH, want=TH, what="θ")).bad(
    "want not a tensor", dict(want=[1.0]), "want").bad(
    "got with NaN", dict(got=_with(TH, NAN)), "NaN", EX.Wrong).bad(
    "got of another shape", dict(got=TH[:3]), "shape", EX.Wrong).values_only(
    "compares values (in float64 on the CPU)")
spec("pgbook.exercises.expect_shape", EX.expect_shape, dict(x=TH, shape=(12,), what="θ")).bad(
    "shape not a tuple", dict(shape=12), "shape").bad("another shape", dict(shape=(3,)), "θ",
                                                      EX.Wrong).grad("x").meta().bf16("x")
spec("pgbook.exercises.list_exercises", EX.list_exercises, {}).bad(
    "a chapter number as an int", dict(chapter=2), "chapter")

# -- pgbook.plots and pgbook.widgets ----------------------------------------------------------
spec("pgbook.plots.setup", PL.setup, {}).bad("dpi = 0", dict(dpi=0), "dpi").bad(
    "dpi a string", dict(dpi="72"), "dpi")
spec("pgbook.plots.landscape", PL.landscape,
     dict(f=lambda t: t.pow(2).sum(-1), n=5, colorbar=False)).bad(
    "f not callable", dict(f=3), "f").bad("n = 1", dict(n=1), "n").bad(
    "ax not an Axes", dict(ax="left"), "ax")
spec("pgbook.plots.path", PL.path, dict(points=torch.zeros(3, 2))).values_only("draws").bad(
    "1-D points", dict(points=torch.zeros(3)), "points").bad(
    "one coordinate", dict(points=torch.zeros(3, 1)), "points").bad(
    "strings", dict(points=[["a", "b"]]), "points")
spec("pgbook.plots.gradient_cloud", PL.gradient_cloud, dict(estimates=ESTIMATES, exact=EXACT3)
     ).values_only("draws").bad("1-D estimates", dict(estimates=EXACT3), "estimates").bad(
    "exact of another size", dict(exact=EXACT3[:2]), "exact").bad(
    "dims out of range", dict(dims=(0, 5)), "dims").bad("meta estimates",
                                                       dict(estimates=ESTIMATES.to("meta")),
                                                       "estimates")
spec("pgbook.plots.variance_curve", PL.variance_curve, dict(bs=[0.0, 1.0], variances=[2.0, 1.0])
     ).bad("lengths differ", dict(variances=[1.0]), "variances").bad(
    "2-D bs", dict(bs=[[0.0]], variances=[[1.0]]), "bs")
spec("pgbook.plots.curves", PL.curves, dict(xs=[0, 1], ys_by_label={"a": [1.0, 2.0]})).bad(
    "not a dict", dict(ys_by_label=[[1.0, 2.0]]), "ys_by_label").bad(
    "lengths differ", dict(ys_by_label={"a": [1.0]}), "ys_by_label")
spec("pgbook.plots.scaling", PL.scaling, dict(ns=[10, 100], values=[0.1, 0.03])).bad(
    "lengths differ", dict(values=[0.1]), "values").bad(
    "reference of another length", dict(reference=[1.0]), "reference")
spec("pgbook.plots.panel_grid", PL.panel_grid,
     dict(draw=lambda ax, r, c: None, rows=[1], cols=[1, 2])).bad(
    "no rows", dict(rows=[]), "panel_grid").bad("draw not callable", dict(draw=None), "draw")
spec("pgbook.plots.policy_bars", PL.policy_bars, dict(probs=PROBS)).values_only("draws").bad(
    "3-D probs", dict(probs=PROBS[None]), "probs").bad(
    "action names of the wrong length", dict(action_names=["a"]), "action_names").bad(
    "context names of the wrong length", dict(context_names=["s"]), "context_names")
spec("pgbook.plots.method_map", PL.method_map, dict(methods=RG.methods()[:3])).bad(
    "names instead of methods", dict(methods=["GRPO"]), "methods").bad(
    "a name instead of a list", dict(methods="GRPO"), "methods").bad(
    "wrap = 0", dict(wrap=0), "wrap").bad("ax not an Axes", dict(ax="left"), "ax").bad(
    "highlight of a method not drawn", dict(highlight=["GRPOO"]), "highlight").bad(
    "highlight as one string", dict(highlight="GRPO"), "highlight")
spec("pgbook.plots.map_layout", PL.map_layout, dict(methods=RG.methods()[:4])).bad(
    "names instead of methods", dict(methods=["GRPO", "RLOO"]), "methods").bad(
    "a number", dict(methods=3), "methods")
spec("pgbook.plots.map_geometry", PL.map_geometry, None).bad(
    "not an Axes", lambda: PL.map_geometry("the map"), "ax")
spec("pgbook.plots.coordinate_errorbars", PL.coordinate_errorbars,
     dict(reference=EXACT3, mean=EXACT3, stderr=EXACT3.abs())).values_only("draws").bad(
    "mean of another length", dict(mean=EXACT3[:2]), "mean").bad(
    "2-D vectors", dict(reference=ESTIMATES, mean=ESTIMATES, stderr=ESTIMATES), "reference").bad(
    "labels of the wrong length", dict(labels=["a"]), "labels").bad(
    "strings", dict(stderr=["a", "b", "c"]), "stderr").bad("ax not an Axes", dict(ax="left"), "ax")
spec("pgbook.plots.curves_with_derivative", PL.curves_with_derivative,
     dict(x=[0.0, 1.0, 2.0], curves={"J": [0.0, 1.0, 1.5]}, derivative=[1.0, 0.75, 0.5])).bad(
    "curves not a dict", dict(curves=[[0.0, 1.0, 1.5]]), "curves").bad(
    "a curve of another length", dict(curves={"J": [0.0]}), "curves['J']").bad(
    "derivative of another length", dict(derivative=[1.0]), "derivative").bad(
    "styles not a dict", dict(styles=["--"]), "styles").bad("ax not an Axes", dict(ax=1), "ax")
spec("pgbook.plots.ellipse", PL.ellipse,
     dict(center=[0.0, 0.0], M=[[2.0, 0.0], [0.0, 1.0]], level=1.0)).bad(
    "level = 0", dict(level=0.0), "level").bad("level NaN", dict(level=NAN), "level").bad(
    "M not positive definite", dict(M=[[-1.0, 0.0], [0.0, 1.0]]), "M").bad(
    "M not symmetric", dict(M=[[1.0, 0.5], [0.0, 1.0]]), "M").bad(
    "a 3-D center", dict(center=[0.0, 0.0, 0.0]), "center").bad("n = 2", dict(n=2), "n").bad(
    "ax not an Axes", dict(ax="left"), "ax")
spec("pgbook.plots.level_line", PL.level_line, dict(point=[0.0, 0.0], normal=[1.0, 1.0])).bad(
    "a zero normal", dict(normal=[0.0, 0.0]), "normal").bad(
    "a 3-vector", dict(point=[0.0, 0.0, 0.0]), "point").bad(
    "NaN point", dict(point=[NAN, 0.0]), "point").bad("ax not an Axes", dict(ax="left"), "ax")
spec("pgbook.plots.runs_band", PL.runs_band, dict(xs=[0, 1, 2], runs=torch.zeros(3, 2))
     ).values_only("draws").bad("runs of another length", dict(runs=torch.zeros(2, 2)), "runs").bad(
    "2-D xs", dict(xs=[[0, 1, 2]]), "xs").bad("3-D runs", dict(runs=torch.zeros(3, 2, 1)),
                                              "runs").bad("ax not an Axes", dict(ax="left"), "ax")
spec("pgbook.widgets.progress", WI.progress, dict(iterable=range(2), desc="x", disable=True)).bad(
    "desc not a string", dict(desc=3), "desc").bad("total = -1", dict(total=-1), "total").bad(
    "an option tqdm does not take", dict(bar_colour="red"), "bar_colour").bad(
    "not an iterable", dict(iterable=3), "iterable")
spec("pgbook.widgets.control", WI.control, dict(name="b", spec=(0.0, 1.0, 0.1))).bad(
    "an empty list", dict(spec=[]), "b").bad("an initial value not offered",
                                             dict(spec=["x", "y"], initial="z"), "b").bad(
    "a name that is not a string", dict(name=3), "name")
spec("pgbook.widgets.static_panels", WI.static_panels,
     dict(draw=lambda ax, **kw: None, settings=[{"b": 1.0}])).bad(
    "no settings", dict(settings=[]), "settings").bad("settings not dicts", dict(settings=[1.0]),
                                                      "settings").bad(
    "draw not callable", dict(draw="plot"), "draw").bad("ncols = 0", dict(ncols=0), "ncols")
spec("pgbook.widgets.explore", WI.explore, None).bad(
    "draw not callable", lambda: WI.explore("plot", {"b": (0.0, 1.0, 0.1)}), "draw").bad(
    "no controls", lambda: WI.explore(lambda ax, **kw: None, {}), "controls").bad(
    "a control spec that is not one", lambda: WI.explore(lambda ax, **kw: None, {"b": object()}),
    "b")

# parameters added by the merges (issue 8's follow-up): their bad values
SPECS["pgbook.exact.offpolicy.off_policy_J"].number("truncate", positive=True)
SPECS["pgbook.methods.policy_loss"].bad(
    "a negative correction_max", dict(sampler_logp=OLD, correction="token_truncate",
                                      correction_max=-1.0), "correction_max").bad(
    "correction_min above correction_max", dict(sampler_logp=OLD, correction="token_mask",
                                                correction_min=3.0), "correction_min").number(
    "eps_low", positive=True).count("max_tokens")
SPECS["pgbook.methods.method_loss"].number("std_eps", positive=True).number(
    "eps_low", positive=True)
SPECS["pgbook.train.seqlm.grpo_seqlm"].number("eps_low", positive=True).number(
    "std_eps", positive=True).count("max_gen_batches").bad(
    "a negative correction_max", dict(sampler=MIS, correction="token_truncate",
                                      correction_max=-1.0), "correction_max")
SPECS["pgbook.exact.trajectory.batch_updates"].number("eps_low", positive=True).bad(
    "a negative correction_max", dict(sampler=MIS, correction="token_truncate",
                                      correction_max=-1.0), "correction_max")
SPECS["pgbook.exact.trajectory.corrected_gradient"].bad(
    "correction_min above correction_max", dict(correction="token_mask", correction_min=3.0),
    "correction_min")
SPECS["pgbook.train.grpo.grpo_train"].number("eps_high", positive=True).number(
    "max_grad_norm", positive=True).count("window").flag("partial_reward")
SPECS["pgbook.train.ppo_llm.ppo_train"].number("eps_high", positive=True).number(
    "max_grad_norm", positive=True).number("critic_lr", positive=True)
SPECS["pgbook.train.ppo_llm.compare_ppo_grpo"].number("lr", positive=True).number(
    "beta", positive=True).bad("lam = 2", dict(lam=2.0), "lam")
for _q in ("pgbook.worlds.bandits.SoftmaxPolicy.scores",
           "pgbook.worlds.bandits.SoftmaxPolicy.scores (linear)"):
    SPECS[_q].flag("autograd")

# parameters added by chapter 16: the teacher of method_loss and grpo_train
SPECS["pgbook.methods.method_loss"].bad(
    "teacher_logp for a method without a teacher", dict(teacher_logp=REF), "teacher_logp").bad(
    "a teacher method without teacher_logp", dict(name="OPD"), "teacher_logp").bad(
    "NaN teacher_logp on a response token", dict(name="OPD", teacher_logp=_with(REF, NAN)),
    "teacher_logp").bad("teacher_logp of another shape",
                        dict(name="OPD", teacher_logp=REF[:, :3]), "teacher_logp").bad(
    "teacher_logp on another device", dict(name="OPD", teacher_logp=REF.to("meta")), "device").bad(
    "a negative teacher_coef", dict(name="OPD", teacher_logp=REF, teacher_coef=-1.0),
    "teacher_coef").bad("NaN teacher_coef", dict(name="OPD", teacher_logp=REF, teacher_coef=NAN),
                        "teacher_coef").bad(
    "teacher_coef for a method without a teacher", dict(teacher_coef=0.5), "teacher_coef")
TEACHER_GPT = WG.GPT(CFG)
SPECS["pgbook.train.grpo.grpo_train"].bad(
    "a teacher that is no model", dict(teacher="gpt"), "teacher").bad(
    "a teacher method without a teacher", dict(method="OPD"), "teacher").bad(
    "the model as its own teacher", dict(model=MODEL, teacher=MODEL), "teacher").bad(
    "a teacher on another device", dict(teacher=META_MODEL), "teacher").bad(
    "a negative teacher_coef", dict(teacher=TEACHER_GPT, teacher_coef=-1.0), "teacher_coef").bad(
    "NaN teacher_coef", dict(teacher=TEACHER_GPT, teacher_coef=NAN), "teacher_coef").bad(
    "teacher_coef without a teacher", dict(teacher_coef=0.5), "teacher_coef").bad(
    "an unknown teacher_signal", dict(teacher=TEACHER_GPT, teacher_signal="kl"),
    "teacher_signal").bad("a teacher_signal without a teacher", dict(teacher_signal="reverse_kl"),
                          "teacher").bad(
    "an unknown teacher_gate", dict(teacher=TEACHER_GPT, teacher_gate="never"), "teacher_gate")



# Abstract methods and types whose every argument is acceptable: no bad input exists.
EXEMPT = {
    "pgbook.worlds.bandits.SoftmaxPolicy.logits": "abstract (TabularSoftmax, LinearSoftmax)",
    "pgbook.worlds.seqlm.SeqPolicy.logits": "abstract (MLPPolicy, TabularPolicy, Tempered)",
    "pgbook.exact.critic.SeqCritic.values": "abstract (MLPCritic, TabularCritic)",
    "pgbook.worlds.tasks.Task.solve": "abstract (Reverse, SortDigits, Add)",
    "pgbook.worlds.envs.Env.reset": "abstract (LookupEnv)",
    "pgbook.worlds.envs.Env.step": "abstract (LookupEnv)",
    "pgbook.worlds.envs.Env.step_text": "abstract (LookupEnv)",
    "pgbook.exercises.Wrong": "an exception type: any message is a message",
    "pgbook._validate.UnknownOptionError": "an exception type: any message is a message",
}


# =============================================================================================
# The tests
# =============================================================================================
def _modules() -> list:
    names = ["pgbook", *sorted(m.name for m in pkgutil.walk_packages(pgbook.__path__, "pgbook."))]
    return [importlib.import_module(n) for n in names]


def _public_callables() -> list[tuple[str, object]]:
    """(qualified name, object) for every callable a module's ``__all__`` defines there, and
    the public methods (defined in the class body) of every class among them."""
    out = []
    for mod in _modules():
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.ismodule(obj) or not callable(obj):
                continue
            if getattr(obj, "__module__", None) != mod.__name__:
                continue   # a re-export: checked where it is defined
            out.append((f"{mod.__name__}.{name}", obj))
            if inspect.isclass(obj):
                for k, v in vars(obj).items():
                    f = getattr(v, "__func__", v)
                    if not k.startswith("_") and inspect.isfunction(f):
                        out.append((f"{mod.__name__}.{name}.{k}", f))
    return out


def _takes_no_arguments(obj: object) -> bool:
    """A callable with nothing to get wrong: no parameter besides self."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    return all(p in ("self", "cls") for p in sig.parameters)


def _is_checker_module(name: str) -> bool:
    """pgbook.exercises.chNN: the checkers, reached through pgbook.exercises.check."""
    return name.startswith("pgbook.exercises.ch")


def test_every_module_has_all():
    missing = [m.__name__ for m in _modules()
               if not hasattr(m, "__all__") and not _is_checker_module(m.__name__)]
    assert not missing, f"modules without __all__: {missing}"


def test_checker_modules_export_nothing():
    """pgbook.exercises.chNN: checkers are reached through pgbook.exercises.check("NN.k", fn),
    so a chapter's module exports nothing (``__all__ = []``, CONTRIBUTING.md)."""
    exported = {m.__name__: list(m.__all__) for m in _modules()
                if _is_checker_module(m.__name__) and getattr(m, "__all__", None)}
    assert not exported, f"checker modules with a non-empty __all__: {exported}"


def test_every_public_callable_has_bad_input_cases():
    missing = [q for q, obj in _public_callables()
               if q not in EXEMPT and not _takes_no_arguments(obj)
               and (q not in SPECS or not SPECS[q].cases)]
    assert not missing, ("public callables with no bad-input cases in tests/test_contract.py "
                         f"(add a spec): {missing}")


def test_exemptions_and_specs_name_real_callables():
    public = {q for q, _ in _public_callables()}
    assert set(EXEMPT) <= public, sorted(set(EXEMPT) - public)
    extra = {q.split(" (")[0] for q in SPECS} - public - {"pgbook.registry.Component.__call__"}
    assert not extra, f"specs for names that are not public callables: {sorted(extra)}"


def test_every_public_function_and_method_has_type_hints():
    missing = []
    for q, obj in _public_callables():
        f = obj.__init__ if inspect.isclass(obj) else obj
        if inspect.isclass(obj) and (is_dataclass(obj) or f is object.__init__
                                     or not inspect.isfunction(f)):
            continue   # dataclasses and NamedTuples: the fields carry the annotations
        sig = inspect.signature(f)
        params = [n for n, p in sig.parameters.items() if n not in ("self", "cls")
                  and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                  and p.annotation is inspect.Parameter.empty]
        no_return = sig.return_annotation is inspect.Signature.empty and not inspect.isclass(obj)
        if params or no_return:
            missing.append(f"{q}: {params}{' and the return' if no_return else ''}")
    for mod in _modules():   # the fields of the dataclasses the modules export
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.isclass(obj) and is_dataclass(obj) and obj.__module__ == mod.__name__:
                missing += [f"{mod.__name__}.{name}.{fl.name}" for fl in fields(obj)
                            if fl.type in (None, inspect.Parameter.empty)]
    assert not missing, "missing type hints:\n" + "\n".join(missing)


CASES = [pytest.param(c, id=f"{q}: {c.what}") for q, sp in SPECS.items() for c in sp.cases]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt
    plt.close("all")


@pytest.mark.parametrize("case", CASES)
def test_bad_input_raises_a_clear_error(case: Case):
    with pytest.raises(Exception) as info:
        case.call()
    assert isinstance(info.value, case.exc), (
        f"expected {case.exc.__name__}, got {type(info.value).__name__}: {info.value}")
    assert case.match in str(info.value), (
        f"the message should name {case.match!r}: {info.value}")


def _snapshot(x: object) -> object:
    """The tensors inside ``x`` (recursively through dicts, tuples, lists, dataclasses), cloned."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone() if x.device.type != "meta" else ("meta", x.shape, x.dtype)
    if isinstance(x, dict):
        return {k: _snapshot(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return [_snapshot(v) for v in x]
    if is_dataclass(x) and not isinstance(x, type):
        return {f.name: _snapshot(getattr(x, f.name)) for f in fields(x)}
    return None


def _same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and \
            torch.equal(torch.nan_to_num(a.double(), nan=1e300),
                        torch.nan_to_num(b.double(), nan=1e300))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    return a == b


GOOD = [pytest.param(sp, id=q) for q, sp in SPECS.items() if sp.kw is not None]


@pytest.mark.parametrize("sp", GOOD)
def test_good_call_works_and_mutates_no_input(sp: Spec):
    before = _snapshot(sp.kw)
    sp.call()
    assert _same(_snapshot(sp.kw), before), f"{sp.qualname} changed one of its inputs"


# -- properties -------------------------------------------------------------------------------
def _lm_inputs(seed: int, lp_scale: float, adv_scale: float, B: int = 4, T: int = 6,
               dtype: torch.dtype = F64) -> dict:
    g = pg.make_generator(seed)
    lp = -torch.rand(B, T, generator=g, dtype=dtype) * lp_scale - 1e-3
    old = -torch.rand(B, T, generator=g, dtype=dtype) * lp_scale - 1e-3
    ref = -torch.rand(B, T, generator=g, dtype=dtype) * lp_scale - 1e-3
    adv = torch.randn(B, T, generator=g, dtype=dtype) * adv_scale
    mask = (torch.rand(B, T, generator=g) < 0.7).to(dtype)
    mask[:, 0] = 1
    rewards = torch.randn(B, generator=g, dtype=dtype) * adv_scale
    return dict(lp=lp, old=old, ref=ref, adv=adv, mask=mask, rewards=rewards)


def _masked_calls(d: dict) -> dict[str, Callable[[torch.Tensor, dict], torch.Tensor]]:
    """Functions of (logp, inputs) that take a mask: each must ignore masked positions."""
    m = d["mask"]
    return {
        "policy_loss ppo_clip": lambda lp, d: ME.policy_loss(lp, d["old"], d["adv"], m)[0],
        "policy_loss k3": lambda lp, d: ME.policy_loss(
            lp, d["old"], d["adv"], m, kl="k3_loss", beta=0.1, ref_logp=d["ref"],
            aggregation="token_mean")[0],
        "method_loss GRPO": lambda lp, d: ME.method_loss("GRPO", lp, d["old"], d["rewards"], m, 2)[0],
        "method_loss Dr. GRPO": lambda lp, d: ME.method_loss(
            "Dr. GRPO", lp, d["old"], d["rewards"], m, 2)[0],
        "method_loss REINFORCE++-baseline": lambda lp, d: ME.method_loss(
            "REINFORCE++-baseline", lp, d["old"], d["rewards"], m, 2)[0],
        **{f"aggregate {k}": (lambda lp, d, k=k: AG.aggregate(lp, m, k))
           for k in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant")},
        "sequence_logprob": lambda lp, d: TT.sequence_logprob(lp, m),
        "token_pg_loss": lambda lp, d: TL.token_pg_loss(lp, d["adv"], m),
        "reward_to_go": lambda lp, d: RA.reward_to_go(d["adv"], m),
        "kl_in_reward": lambda lp, d: KL.kl_in_reward(d["rewards"], lp, d["ref"], m, 0.1),
        "broadcast_to_tokens": lambda lp, d: RA.broadcast_to_tokens(d["rewards"], m),
    }


def _poison(x: torch.Tensor, mask: torch.Tensor, seed: int) -> torch.Tensor:
    """``x`` with NaN, +inf or −inf at every masked position."""
    g = pg.make_generator(seed)
    junk = torch.tensor([NAN, INF, -INF], dtype=x.dtype)[torch.randint(0, 3, x.shape, generator=g)]
    return torch.where(mask != 0, x, junk)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), lp_scale=st.floats(1e-3, 30.0),
       adv_scale=st.floats(1e-3, 1e3))
def test_masked_positions_reach_neither_the_value_nor_the_gradient(seed, lp_scale, adv_scale):
    d = _lm_inputs(seed, lp_scale, adv_scale)
    bad = {k: (_poison(v, d["mask"], seed + i) if v.shape == d["mask"].shape and k != "mask" else v)
           for i, (k, v) in enumerate(d.items())}
    for name, f in _masked_calls(d).items():
        lp_clean = d["lp"].clone().requires_grad_(True)
        lp_bad = bad["lp"].clone().requires_grad_(True)
        clean, poisoned = f(lp_clean, d), f(lp_bad, bad)
        g_clean = g_bad = None
        if clean.requires_grad:
            (g_clean,) = torch.autograd.grad(clean.sum(), lp_clean, allow_unused=True)
            (g_bad,) = torch.autograd.grad(poisoned.sum(), lp_bad, allow_unused=True)
        assert bool(torch.isfinite(poisoned).all()), name
        torch.testing.assert_close(poisoned, clean, rtol=1e-12, atol=1e-12, msg=name)
        if g_clean is not None:
            assert bool(torch.isfinite(g_bad).all()), name
            torch.testing.assert_close(g_bad, g_clean, rtol=1e-12, atol=1e-12, msg=name)


def _finite_calls() -> dict[str, Callable[[dict], object]]:
    """Functions of finite LM-shaped inputs (log-probs, advantages, rewards, masks)."""
    return {
        "score_function_loss": lambda d: TL.score_function_loss(d["lp"], d["adv"]),
        "ratio": lambda d: TL.ratio(d["lp"], d["old"]),
        "importance_weighted_loss": lambda d: TL.importance_weighted_loss(d["lp"], d["adv"], d["old"]),
        "ppo_clip_loss": lambda d: TL.ppo_clip_loss(d["lp"], d["adv"], d["old"], eps_high=0.28),
        "ppo_dual_clip_loss": lambda d: TL.ppo_dual_clip_loss(d["lp"], d["adv"], d["old"]),
        **{f"kl_estimate {k}": (lambda d, k=k: KL.kl_estimate(d["lp"], d["ref"], k))
           for k in ("k1", "k2", "k3")},
        "kl_in_reward k3": lambda d: KL.kl_in_reward(d["rewards"], d["lp"], d["ref"], d["mask"],
                                                     0.1, "k3"),
        "policy_loss": lambda d: ME.policy_loss(d["lp"], d["old"], d["adv"], d["mask"],
                                                loss="ppo_dual_clip")[0],
        **{f"method_loss {k}": (lambda d, k=k: ME.method_loss(k, d["lp"], d["old"], d["rewards"],
                                                             d["mask"], 2)[0])
           for k in ("GRPO", "RLOO", "Dr. GRPO", "REINFORCE++-baseline")},
        **{f"advantage {k}": (lambda d, k=k: RA.compute_advantages(
            d["rewards"], k, group_size=2, mask=d["mask"]))
           for k in ("grpo", "grpo_mean", "rloo", "plain", "reinforce_pp_baseline",
                     "group_mean_batch_std_seq")},
        "reward_to_go": lambda d: RA.reward_to_go(d["adv"], d["mask"]),
        "importance_weights": lambda d: TI.importance_weights(d["lp"], d["old"]),
        "effective_sample_size": lambda d: TI.effective_sample_size(
            TI.importance_weights(d["lp"], d["old"])),
        "is_estimate snis": lambda d: TI.is_estimate(d["adv"], TI.importance_weights(
            d["lp"], d["old"]), self_normalised=True),
        "entropy_from_logits": lambda d: TT.entropy_from_logits(
            d["adv"][..., None] * torch.linspace(-1.0, 1.0, 5, dtype=d["adv"].dtype)),
        "token_logprobs": lambda d: TT.token_logprobs(
            d["adv"][..., None].expand(-1, -1, 3) * torch.tensor([1.0, -1.0, 0.5], dtype=F64),
            (d["mask"] * 2).long()),
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), lp_scale=st.floats(1e-3, 30.0),
       adv_scale=st.floats(1e-3, 1e3), low=st.booleans())
def test_finite_inputs_give_finite_outputs_and_mutate_nothing(seed, lp_scale, adv_scale, low):
    d = _lm_inputs(seed, lp_scale, adv_scale, dtype=torch.float32 if low else F64)
    if low:   # float32 and bfloat16 inputs, at a scale bfloat16 resolves
        d = {k: (v.bfloat16() if k in ("adv", "rewards") else v) for k, v in d.items()}
    before = {k: v.clone() for k, v in d.items()}
    for name, f in _finite_calls().items():
        out = f(d)
        assert bool(torch.isfinite(out.float()).all()), f"{name} gave a non-finite output"
        for k, v in d.items():
            assert torch.equal(v, before[k]), f"{name} changed its input {k}"
