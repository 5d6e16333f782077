"""Unit tests for the enumerable autoregressive tiny LM (pgbook.seqlm)."""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pgbook as pg
from pgbook import registry
from pgbook.exact import seqlm as S
from pgbook.exact import stats as stats_
from pgbook.worlds import seqlm as seqlm_

F64 = torch.float64




def small_space(**kw):
    """2 content tokens + EOS, T = 3, two prompts: 11 responses per prompt."""
    kw.setdefault("rho", torch.tensor([0.6, 0.4], dtype=F64))
    return seqlm_.SeqSpace(tokens=("a", "b"), max_len=3, **kw)


def setup(kind="mlp", seed=0, scale=1.0):
    sp = small_space()
    pol = seqlm_.MLPPolicy(sp, hidden=4) if kind == "mlp" else seqlm_.TabularPolicy(sp)
    th = pol.init(pg.make_generator(seed), scale=scale)
    return sp, pol, th


TABLE = torch.tensor([[1.0, -0.3, 0.2], [-0.5, 1.0, 0.0]], dtype=F64)


# -- the space and its enumeration ---------------------------------------------------------
def test_enumeration_is_complete_canonical_and_ordered():
    sp = small_space()
    assert sp.V == 3 and sp.eos_id == 2 and sp.pad_id == 2
    assert sp.n_per_context == 1 + 2 + 4 + 8
    e = sp.enumerate()
    assert len(e) == 2 * 15 and e.tokens.shape == (30, 3) and e.mask.dtype == F64
    per = e.view(2, 15)
    assert torch.equal(per.tokens[0], per.tokens[1]) and torch.equal(per.x[:, 0], torch.tensor([0, 1]))
    texts = sp.decode(per.tokens[0])
    assert texts[:4] == ["⏎", "a⏎", "b⏎", "aa⏎"] and texts[-1] == "bbb"
    assert len(set(texts)) == 15
    # canonical: everything after the first EOS is EOS padding, the mask covers EOS itself
    assert torch.equal(e.lengths[:4], torch.tensor([1, 2, 2, 3]))
    assert bool(((e.mask == 1) | (e.tokens == sp.pad_id)).all())
    # brute force: every string of length ≤ T that ends with EOS or has length T
    brute = {"".join(p) + "⏎" for L in range(3) for p in itertools.product("ab", repeat=L)}
    brute |= {"".join(p) for p in itertools.product("ab", repeat=3)}
    assert set(texts) == brute


def test_response_mask_encode_decode():
    sp = small_space()
    tok = sp.encode(["ab", "a⏎b", "bbb", ""])
    assert tok.tolist() == [[0, 1, 2], [0, 2, 2], [1, 1, 1], [2, 2, 2]]
    assert sp.response_mask(tok).tolist() == [[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]]
    assert sp.decode(tok) == ["ab⏎", "a⏎", "bbb", "⏎"]


def test_space_bad_input():
    with pytest.raises(ValueError, match="sum"):
        seqlm_.SeqSpace(rho=torch.tensor([0.5, 0.2], dtype=F64))
    with pytest.raises(ValueError, match="distinct"):
        seqlm_.SeqSpace(tokens=("a", "a"))
    with pytest.raises(ValueError, match="too many"):
        seqlm_.SeqSpace(tokens=tuple("abcdefghi"), max_len=8)
    with pytest.raises(ValueError, match="contexts"):
        small_space(contexts=["only one"])
    with pytest.raises(ValueError, match="max_len"):
        seqlm_.SeqSpace(max_len=0)
    sp = small_space()
    with pytest.raises(ValueError, match="unknown token"):
        sp.encode(["az"])
    with pytest.raises(ValueError, match="longer"):
        sp.encode(["abab"])
    with pytest.raises(ValueError, match="shape"):
        sp.response_mask(torch.zeros(2, 4, dtype=torch.long))


# -- policies --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mlp", "tabular"])
def test_probabilities_sum_to_one_and_log_p_is_sum_of_token_logps(kind):
    sp, pol, th = setup(kind)
    e = sp.enumerate()
    p = S.sequence_probs(pol, th, e)
    torch.testing.assert_close(p.view(2, -1).sum(-1), torch.ones(2, dtype=F64), rtol=0, atol=1e-14)
    # the direct product of token probabilities over the response
    probs = torch.softmax(pol.logits(th, e.x, e.tokens), -1)
    tok_p = probs.gather(-1, e.tokens[..., None]).squeeze(-1)
    direct = torch.where(e.mask > 0, tok_p, torch.ones_like(tok_p)).prod(-1)
    torch.testing.assert_close(p, direct, rtol=1e-13, atol=0)
    q = S.joint_probs(pol, th, e)
    assert abs(float(q.sum()) - 1) < 1e-14
    torch.testing.assert_close(S.sequence_probs(seqlm_.Tempered(pol, 0.5), th, e).view(2, -1).sum(-1),
                               torch.ones(2, dtype=F64), rtol=0, atol=1e-14)


@pytest.mark.parametrize("kind", ["mlp", "tabular"])
def test_logits_are_causal(kind):
    sp, pol, th = setup(kind)
    x = torch.tensor([0, 1])
    a = sp.encode(["aab", "bab"])
    for t in range(sp.T):
        b = a.clone()
        b[:, t:] = 1 - b[:, t:].clamp(max=1)  # change tokens at positions ≥ t
        torch.testing.assert_close(pol.logits(th, x, a)[:, : t + 1], pol.logits(th, x, b)[:, : t + 1])


def test_tabular_prefixes_are_distinct_and_parameters_unshared():
    sp = small_space()
    pol = seqlm_.TabularPolicy(sp)
    e = sp.enumerate().view(2, -1)
    codes = pol.prefix_codes(e.tokens[0])  # (15, T)
    prefixes = {}
    for row, c in zip(e.tokens[0].tolist(), codes.tolist()):
        for t in range(sp.T):
            prefixes.setdefault(tuple(row[:t]), set()).add(c[t])
    assert all(len(v) == 1 for v in prefixes.values())
    assert len({next(iter(v)) for v in prefixes.values()}) == len(prefixes)
    assert pol.n_params == 2 * (1 + 3 + 9) * 3


def test_mlp_blocks_cover_theta():
    sp, pol, th = setup()
    blocks = pol.unflatten(th)
    assert sum(v.numel() for v in blocks.values()) == pol.n_params == th.numel()
    assert blocks["b"].shape == (sp.V,) and blocks["E_prev"].shape == (sp.V + 1, 4)


def test_token_logprobs_are_log_softmax_gather():
    sp, pol, th = setup()
    e = sp.enumerate()
    ref = torch.log_softmax(pol.logits(th, e.x, e.tokens), -1).gather(-1, e.tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(pol.token_logprobs(th, e.x, e.tokens), ref, rtol=0, atol=1e-14)


def test_policy_bad_input():
    sp, pol, th = setup()
    x, tok = torch.tensor([0]), sp.encode(["ab"])
    with pytest.raises(ValueError, match="theta"):
        pol.logits(th[:-1], x, tok)
    with pytest.raises(ValueError, match="x"):
        pol.logits(th, torch.tensor([2]), tok)
    with pytest.raises(ValueError, match="tokens"):
        pol.logits(th, x, torch.tensor([[0, 3, 1]]))
    with pytest.raises(ValueError, match="tokens"):
        pol.logits(th, x, torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        seqlm_.Tempered(pol, 0.0)
    with pytest.raises(ValueError, match="generator"):
        pol.sample(th, 4, generator=None)


# -- sampling ----------------------------------------------------------------------------------
def test_sampling_masks_logps_and_frequencies():
    sp, pol, th = setup(scale=0.8)
    s = pol.sample(th, 20000, pg.make_generator(1))
    assert s.tokens.shape == (20000, 3) and s.mask.shape == (20000, 3) and s.logp.shape == (20000, 3)
    assert torch.equal(s.mask, sp.response_mask(s.tokens))
    # padding after EOS is EOS, its log-prob is 0, and recorded log-probs equal recomputed ones
    assert bool((s.tokens[s.mask == 0] == sp.pad_id).all())
    assert bool((s.logp[s.mask == 0] == 0).all())
    recomputed = pol.token_logprobs(th, s.x, s.tokens) * s.mask
    torch.testing.assert_close(s.logp, recomputed, rtol=0, atol=1e-14)
    # empirical frequencies of each (x, y) match exact probabilities within 4.5 standard errors
    e = sp.enumerate()
    q = S.joint_probs(pol, th, e)
    key = lambda x, t: (x * sp.V ** 3 + (t * sp.V ** torch.arange(2, -1, -1)).sum(-1))
    counts = torch.bincount(key(s.x, s.tokens), minlength=2 * sp.V ** 3)[key(e.x, e.tokens)].to(F64)
    freq = counts / 20000
    se = (q * (1 - q) / 20000).sqrt()
    assert float(((freq - q).abs() / se).max()) < 4.5
    # reproducible with the same seed
    s2 = pol.sample(th, 20000, pg.make_generator(1))
    assert torch.equal(s.tokens, s2.tokens) and torch.equal(s.x, s2.x)


def test_sampling_given_contexts_and_view():
    _, pol, th = setup()
    x = torch.tensor([1, 1, 0, 1, 0, 0])
    s = pol.sample(th, x, pg.make_generator(2))
    assert torch.equal(s.x, x)
    v = s.view(2, 3)
    assert v.tokens.shape == (2, 3, 3) and v.logp.shape == (2, 3, 3) and len(v) == 2


# -- rewards -------------------------------------------------------------------------------------
def test_rewards_by_hand():
    sp = small_space()
    tok = sp.encode(["ab", "ba", "bab", "a"])
    x = torch.tensor([0, 1, 1, 0])
    m = sp.response_mask(tok)
    eq = seqlm_.equals_target(sp, ["ab", "bab"])
    assert eq(x, tok, m).tolist() == [1.0, 0.0, 1.0, 0.0]
    has = seqlm_.contains(sp, "ab")
    assert has(x, tok, m).tolist() == [1.0, 0.0, 1.0, 0.0]
    ends_a = seqlm_.contains(sp, "a⏎")
    assert ends_a(x, tok, m).tolist() == [0.0, 1.0, 0.0, 1.0]
    assert seqlm_.contains(sp, "b⏎")(x, tok, m).tolist() == [1.0, 0.0, 0.0, 0.0]  # "bab" is cut
    # an outcome reward sits on the last response token
    r = eq.token_rewards(x, tok, m)
    assert r.tolist() == [[0, 0, 1], [0, 0, 0], [0, 0, 1], [0, 0, 0]]
    per = seqlm_.token_table_reward(TABLE)
    assert per(x, tok, m).tolist() == pytest.approx([1 - 0.3 + 0.2, 1 - 0.5 + 0.0, 1 - 0.5 + 1, 1.2])
    with pytest.raises(ValueError, match="targets"):
        seqlm_.equals_target(sp, ["a"])
    with pytest.raises(ValueError, match="finite"):
        seqlm_.token_table_reward(torch.tensor([[math.nan, 0, 0]], dtype=F64))


def test_reward_to_go_by_hand_and_outcome_equivalence():
    r = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 5.0]], dtype=F64)
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=F64)
    assert S.reward_to_go(r, m).tolist() == [[6, 5, 3], [3, 2, 0]]
    sp = small_space()
    e = sp.enumerate()
    R = seqlm_.contains(sp, "ab")
    rtg = S.reward_weights(R, e, "reward_to_go")
    seq = S.reward_weights(R, e, "sequence")
    torch.testing.assert_close(rtg, seq * e.mask, rtol=0, atol=0)
    with pytest.raises(ValueError, match="weighting"):
        S.reward_weights(R, e, "nope")


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_reward_to_go_property(seed):
    g = pg.make_generator(seed)
    r = torch.randn(6, 4, generator=g, dtype=F64)
    lengths = torch.randint(1, 5, (6,), generator=g)
    m = (torch.arange(4) < lengths[:, None]).to(F64)
    G = S.reward_to_go(r, m)
    nxt = torch.cat([G[:, 1:], torch.zeros(6, 1, dtype=F64)], 1)
    torch.testing.assert_close(G - nxt * m, r * m, rtol=0, atol=1e-12)
    torch.testing.assert_close(G[:, 0], (r * m).sum(-1), rtol=0, atol=1e-12)


# -- exact quantities ---------------------------------------------------------------------------
def test_exact_J_matches_brute_force_and_gradient_matches_finite_differences():
    sp, pol, th = setup()
    R = seqlm_.token_table_reward(TABLE)
    total = 0.0
    for x in range(2):
        for text in sp.decode(sp.enumerate().view(2, -1).tokens[0]):
            tok = sp.encode([text])
            lp = pol.token_logprobs(th, torch.tensor([x]), tok)[0]
            L = len(text)
            p = math.exp(float(lp[:L].sum()))
            total += float(sp.rho[x]) * p * float(R(torch.tensor([x]), tok, sp.response_mask(tok)))
    assert abs(float(S.exact_J(pol, th, R)) - total) < 1e-13
    g = S.exact_gradient(pol, th, R)
    h = 1e-6
    for i in (0, 7, pol.n_params - 1):
        e = torch.zeros_like(th)
        e[i] = h
        fd = (S.exact_J(pol, th + e, R) - S.exact_J(pol, th - e, R)) / (2 * h)
        assert abs(float(fd - g[i])) < 1e-8


def test_exact_kl():
    sp, pol, th = setup()
    ref = pol.init(pg.make_generator(5))
    assert abs(float(S.exact_kl(pol, th, th))) < 1e-14
    kl, fkl = S.exact_kl(pol, th, ref), S.exact_forward_kl(pol, th, ref)
    assert float(kl) > 0 and float(fkl) > 0 and abs(float(kl - fkl)) > 1e-3
    e = sp.enumerate()
    lp, lr = S.sequence_logprobs(pol, th, e), S.sequence_logprobs(pol, ref, e)
    rho = sp.rho[e.x]
    torch.testing.assert_close(kl, (rho * lp.exp() * (lp - lr)).sum(), rtol=1e-13, atol=0)
    torch.testing.assert_close(fkl, (rho * lr.exp() * (lr - lp)).sum(), rtol=1e-13, atol=0)
    assert abs(float(S.exact_forward_kl(pol, th, ref, ref_policy=pol) - S.exact_kl(pol, ref, th))) < 1e-14
    # ∇_θ KL(ref‖π_θ) = −E_ref[∇log p_θ], and the reverse KL's gradient matches finite differences
    gf = torch.func.grad(lambda t: S.exact_forward_kl(pol, t, ref))(th)
    gf2 = -torch.func.grad(lambda t: (rho * lr.exp() * S.sequence_logprobs(pol, t, e)).sum())(th)
    torch.testing.assert_close(gf, gf2, rtol=1e-12, atol=1e-14)
    gr = torch.func.grad(lambda t: S.exact_kl(pol, t, ref))(th)
    d = torch.zeros_like(th)
    d[3] = 1e-6
    fd = (S.exact_kl(pol, th + d, ref) - S.exact_kl(pol, th - d, ref)) / 2e-6
    assert abs(float(fd - gr[3])) < 1e-8


def test_exact_expectation_and_bad_values():
    sp, pol, th = setup()
    e = sp.enumerate()
    lengths = S.exact_expectation(pol, th, e.lengths, e)
    assert 1 <= float(lengths) <= 3
    both = S.exact_expectation(pol, th, torch.stack([e.lengths.to(F64), torch.ones(len(e), dtype=F64)], 1), e)
    assert both.shape == (2,) and abs(float(both[1]) - 1) < 1e-14
    with pytest.raises(ValueError, match="leading dimension"):
        S.exact_expectation(pol, th, torch.ones(3, dtype=F64), e)


@pytest.mark.parametrize("kind", ["mlp", "tabular"])
@pytest.mark.parametrize("weighting", ["sequence", "reward_to_go"])
def test_token_estimator_exactly_unbiased(kind, weighting):
    sp, pol, th = setup(kind)
    e = sp.enumerate()
    R = seqlm_.token_table_reward(TABLE)
    g = S.exact_gradient(pol, th, R, e)
    w = S.reward_weights(R, e, weighting)
    torch.testing.assert_close(S.exact_estimator_mean(pol, th, w, e), g, rtol=0, atol=1e-14)
    mean, cov = S.exact_estimator_moments(pol, th, w, e)
    torch.testing.assert_close(mean, g, rtol=0, atol=1e-14)
    assert float(torch.linalg.eigvalsh(cov).min()) > -1e-12
    tv = S.exact_total_variance(pol, th, w, e, n_samples=4)
    torch.testing.assert_close(tv, torch.diagonal(cov).sum() / 4, rtol=1e-12, atol=0)
    # the per-response estimates are the gradients of the per-response surrogate
    gn = S.per_sequence_estimates(pol, th, e, w)
    i = 5
    one = seqlm_.Sequences(e.x[i:i + 1], e.tokens[i:i + 1], e.mask[i:i + 1])
    direct = -torch.func.grad(lambda t: S.token_pg_surrogate(pol, t, one, w[i:i + 1]))(th)
    torch.testing.assert_close(gn[i], direct, rtol=0, atol=1e-14)


def test_padding_in_the_loss_is_biased_and_tabular_hides_it():
    for kind in ("mlp", "tabular"):
        sp, pol, th = setup(kind)
        e = sp.enumerate()
        R = seqlm_.token_table_reward(TABLE)
        g = S.exact_gradient(pol, th, R, e)
        w = S.reward_weights(R, e, "sequence")
        unmasked = S.exact_estimator_mean(pol, th, w, e, mask=torch.ones_like(e.mask))
        predicted = S.exact_estimator_mean(pol, th, w, e, mask=1 - e.mask)
        torch.testing.assert_close(unmasked - g, predicted, rtol=0, atol=1e-14)
        assert float(predicted.norm()) > 1e-2
        if kind == "tabular":  # the bias lives on prefixes after EOS, which no response uses
            assert abs(float(predicted @ g)) < 1e-15
        else:
            assert abs(float(predicted @ g)) > 1e-3
        # reward-to-go weights are zero on the padding: the missing mask is harmless
        rtg = S.reward_weights(R, e, "reward_to_go")
        torch.testing.assert_close(S.exact_estimator_mean(pol, th, rtg, e, mask=torch.ones_like(e.mask)), g,
                                   rtol=0, atol=1e-14)


def test_exact_expected_gradient_of_a_kl_loss():
    """k3 summed over tokens, used as a loss on on-policy samples, has in expectation the
    gradient of the per-token forward KL Σ_t KL(π_ref(·|h_t) ‖ π_θ(·|h_t)) on prefixes drawn
    from π_θ; that is not the gradient of the sequence-level forward KL (prefixes from π_ref)."""
    sp, pol, th = setup(scale=0.5)
    ref = pol.init(pg.make_generator(9), scale=0.5)
    e = sp.enumerate()
    lr = pol.token_logprobs(ref, e.x, e.tokens)
    ref_lp_all = torch.log_softmax(pol.logits(ref, e.x, e.tokens), -1)

    def k3(t, sq):
        d = lr - pol.token_logprobs(t, sq.x, sq.tokens)
        return ((torch.expm1(d) - d) * sq.mask).sum(-1)

    def token_forward_kl(t, sq):
        lp_all = torch.log_softmax(pol.logits(t, sq.x, sq.tokens), -1)
        kl_t = (ref_lp_all.exp() * (ref_lp_all - lp_all)).sum(-1)
        return (kl_t * sq.mask).sum(-1)

    g = S.exact_expected_gradient(pol, th, k3, e)
    torch.testing.assert_close(g, S.exact_expected_gradient(pol, th, token_forward_kl, e), rtol=0, atol=1e-13)
    g_seq = torch.func.grad(lambda t: S.exact_forward_kl(pol, t, ref))(th)
    assert float((g - g_seq).norm()) > 1e-3
    with pytest.raises(ValueError, match="per_sequence_loss"):
        S.exact_expected_gradient(pol, th, lambda t, sq: t.sum(), e)


def test_monte_carlo_estimates_unbiased_and_variance_matches_exact():
    sp, pol, th = setup(scale=0.8)
    R = seqlm_.token_table_reward(TABLE)
    e = sp.enumerate()
    g = S.exact_gradient(pol, th, R, e)
    for weighting in ("sequence", "reward_to_go"):
        est = S.policy_gradient_estimates(pol, th, R, 8, 2000, pg.make_generator(3), weighting)
        assert est.shape == (2000, pol.n_params)
        stats = stats_.EstimatorStats(est)
        assert stats.is_unbiased(g, z=4.5)
        exact = float(S.exact_total_variance(pol, th, S.reward_weights(R, e, weighting), e, n_samples=8))
        assert float(stats.total_variance) == pytest.approx(exact, rel=0.1)
    biased = S.policy_gradient_estimates(pol, th, R, 8, 2000, pg.make_generator(3), mask_padding=False)
    assert not stats_.EstimatorStats(biased).is_unbiased(g, z=6)


def test_loss_bad_input():
    sp, pol, th = setup()
    lp = torch.zeros(2, 3, dtype=F64)
    with pytest.raises(ValueError, match="mask"):
        S.token_pg_loss(lp, lp, torch.ones(2, 2, dtype=F64))
    with pytest.raises(ValueError, match="0/1"):
        S.token_pg_loss(lp, lp, torch.full((2, 3), 0.5, dtype=F64))
    with pytest.raises(ValueError, match="same shape"):
        S.token_pg_loss(lp, torch.zeros(2, dtype=F64), torch.ones(2, 3, dtype=F64))
    with pytest.raises(ValueError, match="finite"):
        S.token_pg_loss(lp, torch.full((2, 3), math.nan, dtype=F64), torch.ones(2, 3, dtype=F64))
    with pytest.raises(ValueError, match="n_samples"):
        S.policy_gradient_estimates(pol, th, seqlm_.contains(sp, "a"), 0, 2, pg.make_generator(0))
    with pytest.raises(ValueError, match="weighting"):
        S.policy_gradient_estimates(pol, th, seqlm_.contains(sp, "a"), 2, 2, pg.make_generator(0), "x")


# -- dtypes and devices -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision(dtype):
    sp, pol, th64 = setup()
    th = th64.to(dtype)
    e = sp.enumerate()
    lp = pol.token_logprobs(th, e.x, e.tokens)
    assert lp.dtype == torch.float32  # pgbook.tokens' rule: float32 log-probs for low precision
    tol = 1e-5 if dtype == torch.float32 else 0.1
    torch.testing.assert_close(lp.double(), pol.token_logprobs(th64, e.x, e.tokens), rtol=0, atol=tol)
    s = pol.sample(th, 64, pg.make_generator(0))
    assert s.logp.dtype == torch.float32 and s.mask.dtype == dtype
    R = seqlm_.contains(sp, "ab")
    loss = S.token_pg_surrogate(pol, th, s, S.reward_weights(R, s, "sequence").to(dtype))
    assert torch.isfinite(loss)
    assert torch.isfinite(S.exact_J(pol, th, R)).item()


def test_meta_device_shapes():
    sp, pol, _ = setup()
    th = torch.empty(pol.n_params, device="meta", dtype=F64)
    x = torch.empty(7, dtype=torch.long, device="meta")
    tok = torch.empty(7, 3, dtype=torch.long, device="meta")
    assert pol.logits(th, x, tok).shape == (7, 3, sp.V)
    lp = pol.token_logprobs(th, x, tok)
    assert lp.shape == (7, 3) and lp.device.type == "meta"
    m = torch.empty(7, 3, device="meta", dtype=F64)
    assert S.token_pg_loss(lp, torch.empty(7, 3, device="meta", dtype=F64), m).shape == ()
    assert S.reward_to_go(torch.empty(7, 3, device="meta", dtype=F64), m).shape == (7, 3)
    assert S.token_pg_surrogate(pol, th, seqlm_.Sequences(x, tok, m), torch.empty(7, 3, device="meta", dtype=F64)).shape == ()
    tab = seqlm_.TabularPolicy(sp)
    tt = torch.empty(tab.n_params, device="meta", dtype=F64)
    assert tab.token_logprobs(tt, x, tok).shape == (7, 3)


def test_registered_method():
    m = pg.method("REINFORCE (reward-to-go)")
    assert m.parent == "REINFORCE" and m.axis == "reward" and m.chapter == "09"
    assert registry.get("advantage", "reward_to_go").fn is S.reward_to_go


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(0, 1000), st.booleans())
def test_any_small_space_is_normalised_and_rtg_unbiased(n_tokens, max_len, seed, tabular):
    sp = seqlm_.SeqSpace(tokens="abc"[:n_tokens], max_len=max_len, rho=torch.tensor([0.3, 0.7], dtype=F64))
    pol = seqlm_.TabularPolicy(sp) if tabular else seqlm_.MLPPolicy(sp, hidden=3)
    th = pol.init(pg.make_generator(seed))
    e = sp.enumerate()
    assert len(e) == 2 * sp.n_per_context
    torch.testing.assert_close(S.sequence_probs(pol, th, e).view(2, -1).sum(-1), torch.ones(2, dtype=F64),
                               rtol=0, atol=1e-13)
    table = torch.randn(2, sp.V, generator=pg.make_generator(seed + 1), dtype=F64)
    R = seqlm_.token_table_reward(table)
    g = S.exact_gradient(pol, th, R, e)
    w = S.reward_weights(R, e, "reward_to_go")
    torch.testing.assert_close(S.exact_estimator_mean(pol, th, w, e), g, rtol=0, atol=1e-12)
