"""Unit tests for pgbook.exact.critic (exact V, Q, A; learned critics; GAE moments) and
pgbook.train.actor_critic (actor–critic and REINFORCE on the enumerable LM)."""

import itertools

import pytest
import torch

import pgbook as pg
from pgbook.exact import critic as EC
from pgbook.exact import seqlm as S
from pgbook.reward.advantages import reward_to_go
from pgbook.reward.critic import gae
from pgbook.train.actor_critic import ADVANTAGES, actor_critic_train
from pgbook.worlds import seqlm as W

F64 = torch.float64


def small():
    sp = W.SeqSpace(tokens=("a", "b"), max_len=3, rho=torch.tensor([0.6, 0.4], dtype=F64))
    pol = W.MLPPolicy(sp, hidden=4)
    th = pol.init(pg.make_generator(0), scale=1.0)
    table = torch.tensor([[1.0, -0.3, 0.2], [-0.5, 1.0, 0.0]], dtype=F64)
    return sp, pol, th, {"outcome": W.contains(sp, "ab"), "per-token": W.token_table_reward(table)}


def brute_values(sp, pol, th, reward):
    """V(h) by brute force: for each prompt and prefix, the probability-weighted mean
    reward-to-go over the enumerated responses that extend it."""
    seqs = sp.enumerate()
    p = S.sequence_probs(pol, th, seqs)
    G = reward_to_go(reward.token_rewards(seqs.x, seqs.tokens, seqs.mask), seqs.mask)
    out = torch.zeros_like(G)
    for n in range(len(seqs)):
        for t in range(sp.T):
            if seqs.mask[n, t] == 0:
                continue
            same = (seqs.x == seqs.x[n]) & (seqs.mask[:, t] > 0) & \
                (seqs.tokens[:, :t] == seqs.tokens[n, :t]).all(1)
            out[n, t] = (p[same] * G[same, t]).sum() / p[same].sum()
    return out


@pytest.mark.parametrize("kind", ["outcome", "per-token"])
def test_exact_values_by_brute_force_and_the_bellman_identities(kind):
    sp, pol, th, rewards = small()
    R = rewards[kind]
    seqs = sp.enumerate()
    ex = EC.exact_values(pol, th, R, seqs)
    torch.testing.assert_close(ex.V, brute_values(sp, pol, th, R), rtol=0, atol=1e-13)
    # V(h_1) averaged over ρ is J; E[Q | h] = V(h): the advantage has mean zero at every prefix
    q = S.joint_probs(pol, th, seqs)
    torch.testing.assert_close(q @ ex.V[:, 0], S.exact_J(pol, th, R, seqs), rtol=0, atol=1e-14)
    ids = EC.prefix_ids(sp, seqs.x, seqs.tokens)
    live = seqs.mask > 0
    w = (q[:, None] * seqs.mask)[live]
    n_ids = int(ids.max()) + 1
    num = torch.zeros(n_ids, dtype=F64).index_add_(0, ids[live], w * ex.A[live])
    assert num.abs().max() < 1e-14
    # the policy-gradient theorem with prefixes as states: E[Σ_t A ∇log π] = ∇J
    g = S.exact_estimator_mean(pol, th, ex.A, seqs)
    torch.testing.assert_close(g, S.exact_gradient(pol, th, R, seqs), rtol=0, atol=1e-13)


def test_gae_moments_match_the_direct_moments_and_lambda_one_is_unbiased():
    sp, pol, th, rewards = small()
    R = rewards["per-token"]
    seqs = sp.enumerate()
    ex = EC.exact_values(pol, th, R, seqs)
    crit = EC.TabularCritic(sp)
    bad = crit.values(crit.init(pg.make_generator(3), 0.7), seqs.x, seqs.tokens) * seqs.mask
    lams = [0.0, 0.5, 1.0]
    mo = EC.gae_moments(pol, th, R, torch.stack([ex.V, bad]), lams, seqs, full_cov=True)
    r = R.token_rewards(seqs.x, seqs.tokens, seqs.mask)
    for c, V in enumerate([ex.V, bad]):
        for k, lam in enumerate(lams):
            A = gae(r, V, seqs.mask, 1.0, lam)[0]
            mean, cov = S.exact_estimator_moments(pol, th, A, seqs)
            torch.testing.assert_close(mo.mean[c, k], mean, rtol=0, atol=1e-13)
            torch.testing.assert_close(mo.cov[c, k], cov, rtol=0, atol=1e-12)
            torch.testing.assert_close(mo.total_variance[c, k], cov.trace(), rtol=0, atol=1e-12)
    assert mo.relative_bias[0].max() < 1e-12                 # the exact V: unbiased for every λ
    assert mo.relative_bias[1, -1] < 1e-12                   # λ = 1: unbiased for any critic
    assert mo.relative_bias[1, 0] > 0.05                     # λ = 0 with a wrong critic: biased
    torch.testing.assert_close(mo.mse(4), mo.bias.pow(2).sum(-1) + mo.total_variance / 4)
    assert mo.cosine().shape == (2, 3)


def test_critics_values_are_causal_and_fit_reaches_the_least_squares_table():
    sp, pol, th, rewards = small()
    R = rewards["outcome"]
    seqs = sp.enumerate()
    for crit in (EC.TabularCritic(sp), EC.MLPCritic(sp, hidden=4)):
        phi = crit.init(pg.make_generator(1), 0.5)
        v = crit.values(phi, seqs.x, seqs.tokens)
        assert v.shape == seqs.tokens.shape
        # value before token t depends only on x and y_<t
        tok2 = seqs.tokens.clone()
        tok2[:, -1] = (tok2[:, -1] + 1) % sp.V
        assert torch.equal(crit.values(phi, seqs.x, tok2)[:, :-1], v[:, :-1])
    # a table fitted long enough on the enumeration weighted... on samples: per-prefix means
    s = pol.sample(th, 400, pg.make_generator(2))
    G = reward_to_go(R.token_rewards(s.x, s.tokens, s.mask), s.mask)
    tab = EC.TabularCritic(sp)
    phi, losses = EC.fit_critic(tab, tab.init(), s, G, steps=400, lr=0.2)
    assert losses[-1] < losses[0]
    ids = EC.prefix_ids(sp, s.x, s.tokens)[s.mask > 0]
    g = G[s.mask > 0]
    for i in ids.unique()[:10]:
        assert abs(float(phi[i]) - float(g[ids == i].mean())) < 1e-3
    # its error against the exact V is small where many samples fell, and the exact V has none
    err = EC.critic_error(pol, th, R, torch.stack([EC.exact_values(pol, th, R, seqs).V,
                                                   tab.values(phi, seqs.x, seqs.tokens)]), seqs)
    assert err[0] < 1e-12 and 0 < err[1] < 0.1


def test_token_scores_are_the_per_token_gradients():
    sp, pol, th, _ = small()
    seqs = sp.enumerate()
    Sc = EC.token_scores(pol, th, seqs)
    for n, t in itertools.product([0, 5, 17], range(sp.T)):
        def f(p, n=n, t=t):
            return pol.token_logprobs(p, seqs.x[n:n + 1], seqs.tokens[n:n + 1])[0, t]

        want = torch.func.grad(f)(th) * seqs.mask[n, t]
        torch.testing.assert_close(Sc[n, t], want, rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_theta(dtype):
    _, pol, th, rewards = small()
    R = rewards["outcome"]
    ex64 = EC.exact_values(pol, th, R)
    ex = EC.exact_values(pol, th.to(dtype), R)
    assert ex.V.dtype == torch.float32
    torch.testing.assert_close(ex.V.double(), ex64.V, rtol=0, atol=0.05 if dtype == torch.bfloat16 else 1e-5)


def test_critics_on_meta_and_in_low_precision():
    sp, *_ = small()
    seqs = sp.enumerate()
    for crit in (EC.TabularCritic(sp), EC.MLPCritic(sp, hidden=4)):
        phi = crit.init(pg.make_generator(0), 0.5)
        v64 = crit.values(phi, seqs.x, seqs.tokens)
        vb = crit.values(phi.to(torch.bfloat16), seqs.x, seqs.tokens)
        assert vb.dtype == torch.bfloat16
        torch.testing.assert_close(vb.double(), v64, rtol=0, atol=0.05)
        meta = crit.values(torch.empty(crit.n_params, device="meta"), seqs.x.to("meta"),
                           seqs.tokens.to("meta"))
        assert meta.device.type == "meta" and meta.shape == seqs.tokens.shape
    assert EC.MLPCritic(sp, hidden=4).n_params == sp.X * 4 + (sp.V + 1) * 4 + sp.T * 4 + 4 + 1


def test_bad_inputs():
    sp, pol, th, rewards = small()
    R = rewards["outcome"]
    seqs = sp.enumerate()
    crit = EC.TabularCritic(sp)
    with pytest.raises(ValueError, match="phi: expected shape"):
        crit.values(torch.zeros(3, dtype=F64), seqs.x, seqs.tokens)
    with pytest.raises(ValueError, match="lams: expected values in"):
        EC.gae_moments(pol, th, R, torch.zeros_like(seqs.mask), [1.5], seqs)
    with pytest.raises(ValueError, match="values: expected shape"):
        EC.gae_moments(pol, th, R, torch.zeros(3, 4, dtype=F64), [1.0], seqs)
    bad = torch.zeros_like(seqs.mask)
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="values: expected finite"):
        EC.critic_error(pol, th, R, bad, seqs)
    with pytest.raises(ValueError, match="full enumeration"):
        EC.exact_values(pol, th, R, pol.sample(th, 5, pg.make_generator(0)))
    with pytest.raises(ValueError, match="steps"):
        EC.fit_critic(crit, crit.init(), seqs, torch.zeros_like(seqs.mask), steps=0)
    with pytest.raises(ValueError, match="targets: expected shape"):
        EC.fit_critic(crit, crit.init(), seqs, torch.zeros(2, 2, dtype=F64), steps=1)


# -- the actor–critic trainer ------------------------------------------------------------------
def _train(advantage, **kw):
    sp, pol, th, rewards = small()
    opts = dict(steps=6, n_samples=8, lr=0.5, generator=pg.make_generator(1), runs=3,
                advantage=advantage)
    if advantage == "critic":
        crit = EC.TabularCritic(sp)
        opts.update(critic=crit, phi=crit.init(), lam=0.5)
    if advantage == "group":
        opts.update(group_size=4)
    opts.update(kw)
    return actor_critic_train(pol, th, rewards["per-token"], **opts), (sp, pol, th, rewards)


@pytest.mark.parametrize("advantage", ADVANTAGES)
def test_every_advantage_trains_and_records_exact_J(advantage):
    h, (sp, pol, th, rewards) = _train(advantage, eval_every=2)
    assert h.J.shape == (4, 3) and h.step.tolist() == [0, 2, 4, 6]
    R = rewards["per-token"]
    J0 = float(S.exact_J(pol, th, R))
    assert torch.allclose(h.J[0], torch.full((3,), J0, dtype=F64), rtol=0, atol=1e-12)
    assert bool((h.J[-1] > h.J[0]).all())                             # every run improved
    assert not torch.equal(h.J[-1, 0], h.J[-1, 1])                    # runs differ in samples
    assert h.mean().shape == (4,) and h.stderr().shape == (4,)
    # the recorded J is that of the final θ
    for k in range(3):
        assert abs(float(S.exact_J(pol, h.theta[k], R)) - float(h.J[-1, k])) < 1e-12
    if advantage == "critic":
        assert h.critic_error.shape == (4, 3) and h.phi.shape == (3, EC.TabularCritic(sp).n_params)
        ex = EC.exact_values(pol, th, R)
        err0 = EC.critic_error(pol, th, R, torch.zeros_like(ex.V))
        torch.testing.assert_close(h.critic_error[0], err0.expand(3), rtol=0, atol=1e-12)
    else:
        assert h.critic_error is None and h.phi is None


def test_one_run_step_is_the_estimator_by_hand():
    """runs = 1, one step: θ + η (1/B) Σ_b Σ_t m Â ∇log π with the exact prompt value as baseline."""
    h, (sp, pol, th, rewards) = _train("prompt_value", runs=1, steps=1)
    R = rewards["per-token"]
    gen = pg.make_generator(1)
    x = sp.sample_contexts(8, gen).view(1, 8)
    from pgbook.train.actor_critic import _sample
    tokens, m = _sample(pol, th[None], x, gen)
    x, tokens, m = x[0], tokens[0], m[0]
    ex = EC.exact_values(pol, th, R)
    seqs = sp.enumerate()
    Vx = torch.stack([ex.V[seqs.x == k][0, 0] for k in range(sp.X)])
    G = reward_to_go(R.token_rewards(x, tokens, m), m)
    A = (G - Vx[x, None]) * m
    g = torch.func.grad(lambda t: (A * pol.token_logprobs(t, x, tokens)).sum() / 8)(th)
    torch.testing.assert_close(h.theta[0], th + 0.5 * g, rtol=0, atol=1e-13)


def test_exact_critic_step_uses_the_exact_values_of_the_sampled_prefixes():
    """runs = 1, one step of the oracle critic at λ = 0: Â = δ with the exact V = A exactly."""
    h, (sp, pol, th, rewards) = _train("exact_critic", runs=1, steps=1, lam=0.0)
    R = rewards["per-token"]
    gen = pg.make_generator(1)
    x = sp.sample_contexts(8, gen).view(1, 8)
    from pgbook.train.actor_critic import _sample
    tokens, m = _sample(pol, th[None], x, gen)
    x, tokens, m = x[0], tokens[0], m[0]
    seqs = sp.enumerate()
    ex = EC.exact_values(pol, th, R, seqs)
    table = torch.zeros(sp.X * EC._prefix_table(sp).n_prefixes, dtype=F64)
    ids = EC.prefix_ids(sp, seqs.x, seqs.tokens)
    table[ids[seqs.mask > 0]] = ex.V[seqs.mask > 0]
    V = table[EC.prefix_ids(sp, x, tokens)] * m
    A = gae(R.token_rewards(x, tokens, m), V, m, 1.0, 0.0)[0]
    g = torch.func.grad(lambda t: (A * pol.token_logprobs(t, x, tokens)).sum() / 8)(th)
    torch.testing.assert_close(h.theta[0], th + 0.5 * g, rtol=0, atol=1e-13)


def test_trainer_bad_inputs():
    with pytest.raises(ValueError, match="advantage: expected one of"):
        _train("ppo")
    with pytest.raises(ValueError, match="critic, phi"):
        _train("critic", critic=None)
    with pytest.raises(ValueError, match="group_size"):
        _train("group", group_size=3)
    with pytest.raises(ValueError, match="group_size: only"):
        _train("reward_to_go", group_size=4)
    with pytest.raises(ValueError, match="lam"):
        _train("critic", lam=2.0)
    with pytest.raises(ValueError, match="critic, phi: only"):
        sp, *_ = small()
        _train("reward_to_go", critic=EC.TabularCritic(sp), phi=EC.TabularCritic(sp).init())
