"""Unit tests for pgbook.advantages: group-relative advantage estimators."""

import inspect

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pgbook as pg
from pgbook import registry
from pgbook.reward import advantages as A


def _group_estimators():
    """The built-in group estimators that take the rewards alone, by name, from the registry
    (estimators with a required option, such as a mask or k, are tested on their own)."""
    def rewards_only(fn):
        return all(p.default is not p.empty for p in inspect.signature(fn).parameters.values()
                   if p.kind is p.KEYWORD_ONLY)

    return {c.name: c.fn for c in registry.components("advantage")
            if c.form in ("group", "batch") and rewards_only(c.fn)}


GROUP_ADVANTAGES = _group_estimators()
CENTRED = {"grpo", "grpo_mean", "rloo", "group_mean_batch_std_seq", "gpg"}   # advantages sum to 0 per group


def _call(fn, r, G, mask=None):
    """Call an estimator; those that take the response mask get ``mask`` (default: all ones)."""
    import inspect
    if "mask" in inspect.signature(fn).parameters:
        m = torch.ones(r.shape[0], 3, dtype=r.dtype, device=r.device) if mask is None else mask
        return fn(r, G, mask=m)
    return fn(r, G)


R = torch.tensor([1.0, 0.0, 1.0, 0.0,  1.0, 1.0, 1.0, 1.0,  0.3, 0.1, 0.2, 0.9],
                 dtype=torch.float64)


def test_by_hand():
    g = R.view(3, 4)
    mu = g.mean(1, keepdim=True)
    sd = g.std(1, keepdim=True)
    want_grpo = torch.where(sd > 0, (g - mu) / (sd + 1e-6), torch.zeros_like(g)).reshape(-1)
    torch.testing.assert_close(A.grpo_advantage(R, 4), want_grpo, rtol=0, atol=1e-15)
    torch.testing.assert_close(A.grpo_mean_advantage(R, 4), (g - mu).reshape(-1), rtol=0, atol=1e-15)
    loo = (g.sum(1, keepdim=True) - g) / 3
    torch.testing.assert_close(A.rloo_advantage(R, 4), (g - loo).reshape(-1), rtol=0, atol=1e-15)
    c = (g - mu).reshape(-1)
    torch.testing.assert_close(A.group_mean_batch_std_seq_advantage(R, 4), c / (c.std() + 1e-6),
                               rtol=0, atol=1e-15)
    assert torch.equal(A.plain_advantage(R, 4), R)
    pop = torch.where(sd > 0, (g - mu) / (g.std(1, unbiased=False, keepdim=True) + 1e-6), 0 * g)
    torch.testing.assert_close(A.grpo_advantage(R, 4, unbiased=False), pop.reshape(-1),
                               rtol=0, atol=1e-15)


def test_zero_variance_groups_are_zero_and_counted():
    r = torch.tensor([0.1] * 4 + [0.0, 1.0, 0.0, 1.0], dtype=torch.float32)  # 0.1 is inexact
    for name in ("grpo", "grpo_mean", "group_mean_batch_std_seq", "rloo"):
        adv = GROUP_ADVANTAGES[name](r, 4)
        assert torch.equal(adv[:4], torch.zeros(4)), name
        assert bool(torch.isfinite(adv).all())
    assert A.zero_variance_groups(r, 4).tolist() == [True, False]
    stats = A.advantage_stats(r, 4)
    assert int(stats["zero_variance_groups"]) == 1 and float(stats["zero_variance_fraction"]) == 0.5
    # every group zero-variance: no NaN anywhere, even with eps = 0
    same = torch.ones(6, dtype=torch.float64)
    for name in ("grpo", "group_mean_batch_std_seq"):
        assert torch.equal(GROUP_ADVANTAGES[name](same, 3, std_eps=0.0), torch.zeros(6, dtype=torch.float64))
    assert torch.equal(A.grpo_advantage(same, 1), torch.zeros(6, dtype=torch.float64))


@settings(max_examples=40, deadline=None)
@given(n_groups=st.integers(1, 5), G=st.integers(2, 6), seed=st.integers(0, 10_000),
       binary=st.booleans())
def test_properties(n_groups, G, seed, binary):
    gen = pg.make_generator(seed)
    r = torch.rand(n_groups * G, generator=gen, dtype=torch.float64)
    if binary:
        r = (r > 0.5).to(torch.float64)
    for name in ("grpo", "grpo_mean", "rloo", "group_mean_batch_std_seq"):
        adv = GROUP_ADVANTAGES[name](r, G).view(n_groups, G)
        torch.testing.assert_close(adv.sum(1), torch.zeros(n_groups, dtype=torch.float64),
                                   rtol=0, atol=1e-9)
    mean = A.grpo_mean_advantage(r, G)
    torch.testing.assert_close(A.rloo_advantage(r, G), G / (G - 1) * mean, rtol=0, atol=1e-12)
    sd = r.view(n_groups, G).std(1).repeat_interleave(G)
    z = A.grpo_advantage(r, G, std_eps=0.0)
    torch.testing.assert_close(z * sd, mean, rtol=0, atol=1e-12)
    # a shift of all rewards changes no baseline estimator; a scale changes only the mean ones
    torch.testing.assert_close(A.rloo_advantage(r + 5.0, G), A.rloo_advantage(r, G), rtol=0, atol=1e-12)
    torch.testing.assert_close(A.grpo_advantage(3 * r, G, std_eps=0.0), z, rtol=0, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_dtypes(dtype):
    r = R.to(dtype)
    for fn in GROUP_ADVANTAGES.values():
        out = _call(fn, r, 4)
        assert out.dtype == dtype and out.shape == (12,)
        tol = 2e-2 if dtype == torch.bfloat16 else 1e-6
        torch.testing.assert_close(out.double(), _call(fn, R, 4), rtol=tol, atol=tol)


def test_meta_device():
    r = torch.empty(8, device="meta")
    for fn in GROUP_ADVANTAGES.values():
        out = _call(fn, r, 4, torch.empty(8, 5, device="meta"))
        assert out.device.type == "meta" and out.shape == (8,)
    assert A.zero_variance_groups(r, 4).shape == (2,)
    m = torch.empty(8, 5, device="meta")
    assert A.broadcast_to_tokens(r, m).device.type == "meta"


def test_bad_inputs():
    with pytest.raises(ValueError, match="NaN"):
        A.grpo_advantage(torch.tensor([1.0, float("nan")]), 2)
    with pytest.raises(ValueError, match="infinite"):
        A.rloo_advantage(torch.tensor([1.0, float("inf")]), 2)
    with pytest.raises(ValueError, match="divisor"):
        A.grpo_mean_advantage(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="at least 2"):
        A.rloo_advantage(torch.zeros(6), 1)
    with pytest.raises(ValueError, match="floating"):
        A.grpo_advantage(torch.zeros(6, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="dimension"):
        A.grpo_advantage(torch.zeros(2, 3), 3)
    with pytest.raises(ValueError, match="empty"):
        A.grpo_advantage(torch.zeros(0), 1)
    with pytest.raises(ValueError, match="integer"):
        A.grpo_advantage(torch.zeros(4), 2.0)
    with pytest.raises(ValueError, match="eps"):
        A.grpo_advantage(torch.zeros(4), 2, std_eps=-1.0)


def test_group_index_regrouping():
    gen = pg.make_generator(7)
    r = torch.rand(12, generator=gen, dtype=torch.float64)
    idx = torch.tensor([2, 0, 1, 1, 2, 0, 0, 1, 2, 2, 0, 1])
    order, G = A.group_by_index(idx)
    assert G == 4 and torch.equal(idx[order], torch.tensor([0] * 4 + [1] * 4 + [2] * 4))
    for name in GROUP_ADVANTAGES:
        got = A.compute_advantages(r, name, group_index=idx, mask=torch.ones(12, 3))
        back = torch.empty_like(r)
        back[order] = _call(GROUP_ADVANTAGES[name], r[order], 4)
        torch.testing.assert_close(got, back, rtol=0, atol=0)
        # each group's advantages only depend on that group's rewards
        for k in range(3):
            sel = idx == k
            torch.testing.assert_close(got[sel].sum(), torch.zeros((), dtype=torch.float64),
                                       rtol=0, atol=1e-12) if name in CENTRED else None
    contiguous = A.compute_advantages(r, "grpo", group_size=4)
    torch.testing.assert_close(contiguous, A.grpo_advantage(r, 4))
    with pytest.raises(ValueError, match="equal size"):
        A.group_by_index(torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="exactly one"):
        A.compute_advantages(r, "grpo")
    with pytest.raises(ValueError, match="exactly one"):
        A.compute_advantages(r, "grpo", group_size=4, group_index=idx)
    with pytest.raises(ValueError, match="expected one of"):
        A.compute_advantages(r, "reward", group_size=4)
    with pytest.raises(ValueError, match="integer"):
        A.group_by_index(idx.double())
    with pytest.raises(ValueError, match="shape"):
        A.compute_advantages(r, "grpo", group_index=idx[:6])


def test_broadcast_to_tokens():
    adv = torch.tensor([0.5, -1.0], dtype=torch.float64)
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    out = A.broadcast_to_tokens(adv, m)
    assert out.dtype == torch.float64
    assert out.tolist() == [[0.5, 0.5, 0.0], [-1.0, 0.0, 0.0]]
    assert A.broadcast_to_tokens(adv.bfloat16(), m.bool()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="rows"):
        A.broadcast_to_tokens(adv, m[:1])
    with pytest.raises(ValueError, match="NaN"):
        A.broadcast_to_tokens(torch.tensor([float("nan"), 0.0]), m)


def test_registered_on_reward_side_with_their_form():
    forms = {"grpo": "group", "grpo_mean": "group", "rloo": "group", "plain": "group",
             "group_mean_batch_std_seq": "batch", "reinforce_pp_baseline": "batch"}
    for name, form in forms.items():
        c = registry.get("advantage", name)
        assert c.side == "reward" and c.form == form and c.fn is getattr(A, f"{name}_advantage")
    # the bandit world's "none" (no baseline) is a different piece, of form "baseline"
    from pgbook.reward import baselines
    assert registry.get("advantage", "none").fn is baselines.no_baseline
