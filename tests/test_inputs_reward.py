"""Bad inputs to the turn-level advantages, reward shaping, distillation, compose, the
aggregations and the agentic/answer worlds raise a ValueError saying what was expected (and
the MT-GRPO outcome is read at the last turn taken, whatever the turn mask)."""

from __future__ import annotations

import pytest
import torch

from pgbook import aggregation as AG
from pgbook import registry
from pgbook.methods import compose
from pgbook.reward import shaping as SH
from pgbook.reward import turns as TU
from pgbook.trajectory import distill as DI
from pgbook.worlds import agentic as AW
from pgbook.worlds import answers as WA

t = torch.tensor


# -- item 1: MT-GRPO's outcome is the reward of the last turn taken ------------------------
def test_mt_grpo_outcome_at_last_turn_taken_with_a_gap_in_the_mask():
    r = t([[0., 1., 5., 0.], [0., 1., 0., 0.]])
    adv = TU.mt_grpo_advantage(r, 2, turn_mask=t([[0, 1, 1, 0], [1, 1, 0, 0]]),
                               tool_turns=t([[0, 1, 0, 0], [1, 0, 0, 0]]))
    # R^O = (5, 1) and R^T = (1, 0): z = ±1/√2 each (ε = 1e-4)
    z = 1 / 2 ** 0.5
    want = t([[0., 2 * z, z, 0.], [-2 * z, -z, 0., 0.]])
    torch.testing.assert_close(adv, want, atol=1e-3, rtol=0)


def test_mt_grpo_leading_mask_unchanged():
    """On a leading-run mask the last turn taken is index n_taken − 1, as before."""
    r = t([[0., 1., 0.], [2., 3., 0.], [1., 0., 0.], [0., 0., 4.]], dtype=torch.float64)
    m = t([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 1]])
    tool = t([[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1]])
    adv = TU.mt_grpo_advantage(r, 2, turn_mask=m, tool_turns=tool)
    rm = r * m
    R_O = rm.gather(1, (m.sum(1) - 1)[:, None]).squeeze(1)
    R_T = rm.sum(1) - R_O

    def z(x):
        g = x.view(-1, 2)
        return ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + 1e-4)).reshape(-1)

    k = torch.arange(3)
    first = torch.where(tool.bool(), k, 3).min(1).values
    before = (k[None, :] <= first[:, None]).to(r.dtype)
    want = torch.where((first < 3)[:, None], z(R_O)[:, None] + z(R_T)[:, None] * before,
                       z(R_O + R_T)[:, None].expand(4, 3)) * m
    torch.testing.assert_close(adv, want, rtol=0, atol=1e-12)


# -- items 7 and 8: integer anchors and turn ids ---------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bool, torch.complex64, torch.float32])
def test_gigpo_refuses_non_integer_anchors(dtype):
    R = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="anchors: expected an integer tensor"):
        TU.gigpo_advantage(R, 2, anchors=torch.ones(4, 3).to(dtype))
    assert TU.gigpo_advantage(R, 2, anchors=torch.ones(4, 3, dtype=torch.long)).shape == (4, 3)


TV = t([[1., 2., 3.], [4., 5., 6.]])
IDS = t([[0, 1, -1], [2, 2, 0]])


@pytest.mark.parametrize("call, match", [
    (lambda: TU.turns_to_tokens(TV, IDS.to(torch.complex64)), "turn_ids: expected an integer"),
    (lambda: TU.turns_to_tokens(TV, IDS.to(torch.bool)), "turn_ids: expected an integer"),
    (lambda: TU.turns_to_tokens(torch.zeros(2, 0), torch.full((2, 3), -1)),
     r"turn_values: expected at least one turn"),
])
def test_turns_to_tokens_refuses(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_turns_to_tokens_small_integer_ids(dtype):
    ids = IDS.clamp_min(0)
    want = TU.turns_to_tokens(TV, ids)
    assert torch.equal(TU.turns_to_tokens(TV, ids.to(dtype)), want)
    assert torch.equal(want, t([[1., 2., 1.], [6., 6., 4.]]))


# -- item 2: soft overlong penalty lengths ---------------------------------------------------
@pytest.mark.parametrize("lengths", [t([3 + 1j, 9 + 0j]), t([True, False])])
def test_soft_overlong_penalty_refuses_bool_and_complex(lengths):
    with pytest.raises(ValueError, match="lengths: expected integer or floating lengths"):
        SH.soft_overlong_penalty(lengths, 8, 4)
    torch.testing.assert_close(SH.soft_overlong_penalty(t([3, 6, 9]), 8, 4),
                               t([0., -0.5, -1.]))


# -- item 6: group size in every token-credit function ---------------------------------------
@pytest.mark.parametrize("fn", [SH.top_entropy_advantages, SH.low_entropy_advantages,
                                SH.entropy_weighted_advantages])
def test_token_credit_refuses_group_size_not_dividing_B(fn):
    A = t([[1., 1., 1.], [-1., -1., -1.]])
    H = t([[0.1, 0.5, 0.9], [0.2, 0.4, 0.3]])
    M = torch.ones(2, 3)
    with pytest.raises(ValueError, match="group_size: expected a divisor of the number of "
                                         "responses B = 2, got 3"):
        fn(A, H, M, group_size=3)
    assert fn(A, H, M, group_size=2).shape == (2, 3)


# -- item 3: distillation ------------------------------------------------------------------
S = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(1))
TL = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(2))
MK = torch.ones(2, 3)


@pytest.mark.parametrize("call, match", [
    (lambda: DI.token_divergence(S, TL, temperature=1e-300),
     "temperature: expected a temperature at which student_logits / temperature stays finite"),
    (lambda: DI.token_divergence(torch.zeros(2, 0), torch.zeros(2, 0)),
     r"student_logits: expected a vocabulary of at least one token"),
    (lambda: DI.generalized_jsd_loss(S, TL, MK.to("meta")),
     "student_logits on cpu, mask on meta"),
    (lambda: DI.distill_loss(S, TL, MK.to("meta")), "student_logits on cpu, mask on meta"),
])
def test_distill_refuses(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_distill_valid_calls():
    assert DI.token_divergence(S, TL, temperature=0.5).shape == (2, 3)
    assert torch.isfinite(DI.generalized_jsd_loss(S, TL, MK, temperature=0.5))


# -- item 4: compose's replace -----------------------------------------------------------------
@pytest.mark.parametrize("replace", [1, "yes", None])
def test_compose_refuses_non_bool_replace(replace):
    with pytest.raises(ValueError, match="replace: expected True or False"):
        compose("test: inputs replace", reward="Dr. GRPO", trajectory="DAPO", replace=replace)
    with pytest.raises(ValueError, match="replace: expected True or False"):
        registry.register_method("test: inputs replace", "GRPO", replace=replace,
                                 advantage="rloo")
    m = compose("test: inputs replace", reward="Dr. GRPO", trajectory="DAPO", replace=True)
    try:
        assert m.parent == "GRPO"
    finally:
        registry.unregister_method("test: inputs replace")


# -- item 5: max_tokens in every aggregation ------------------------------------------------
L = t([[1., 2., 3.], [4., 5., 6.]])
M2 = t([[1, 1, 0], [1, 1, 1]])


@pytest.mark.parametrize("fn", [AG.token_mean, AG.seq_mean_token_mean, AG.seq_mean_token_sum,
                                AG.constant])
@pytest.mark.parametrize("bad", [-3, 0, 2.5, True])
def test_aggregations_validate_max_tokens(fn, bad):
    with pytest.raises(ValueError, match="max_tokens: expected an integer ≥ 1"):
        fn(L, M2, max_tokens=bad)
    assert torch.equal(fn(L, M2, max_tokens=8), fn(L, M2, 8))


def test_token_mean_ignores_a_valid_max_tokens():
    assert torch.equal(AG.token_mean(L, M2, max_tokens=8), AG.token_mean(L, M2))


# -- items 9 and 10: worlds ------------------------------------------------------------------
def test_answer_space_bad_device():
    with pytest.raises(ValueError, match="device: expected a torch device"):
        WA.answer_space(3, device="nope")
    assert WA.answer_space(3).X == 1


def test_lookup_world_on_meta_has_shapes_but_no_enumeration():
    """Building a world on meta is part of the contract (shapes only); enumerating it, and
    its repr (which counted the trajectories), no longer raise NotImplementedError."""
    w = AW.LookupWorld(n_values=2, value_probs=torch.ones(1, 2, device="meta") / 2)
    assert "trajectories=?" in repr(w)
    with pytest.raises(ValueError, match="value_probs: expected a tensor with values to "
                                         "enumerate"):
        w.enumerate()
    with pytest.raises(ValueError, match="value_probs: expected a tensor with values"):
        w.demonstrations(0.3)
    ok = AW.LookupWorld(n_values=2, value_probs=torch.ones(1, 2, dtype=torch.float64) / 2)
    assert "trajectories=" in repr(ok) and len(ok.enumerate()) > 0


@pytest.fixture(scope="module")
def episodes():
    return AW.LookupWorld(n_values=2, max_turns=2).enumerate()


@pytest.mark.parametrize("idx, match", [
    (t([[0, 1]]), r"idx: expected 1 dimension\(s\)"),
    (t(0), r"idx: expected 1 dimension\(s\)"),
    (t([True, False]), r"idx: expected a bool tensor of shape"),
    (t([0.0, 1.0]), "idx: expected an integer tensor"),
])
def test_episodes_index_refuses(episodes, idx, match):
    with pytest.raises(ValueError, match=match):
        episodes.index(idx)


def test_episodes_index_valid(episodes):
    world = AW.LookupWorld(n_values=2, max_turns=2)
    sub = episodes.index(t([0, 1]))
    assert sub.tokens.shape[0] == 2 and len(world.decode(sub)) == 2
    keep = torch.arange(len(episodes)) % 2 == 0
    assert len(episodes.index(keep)) == int(keep.sum())
