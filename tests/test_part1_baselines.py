"""Part I additions for chapters 03-04: the estimated (running-mean) baseline in the REINFORCE
loop, rejection-sampling fine-tuning, the per-coordinate optimal baseline and the
action-dependent control variate with its expectation added back; TRPO on the map."""

import pytest
import torch

import pgbook as pg
from pgbook import registry
from pgbook.exact import bandits as XB
from pgbook.reward import baselines as BL
from pgbook.train.reinforce import reinforce, rejection_sampling_ft, weighted_log_likelihood
from pgbook.worlds import bandits
from pgbook.worlds.bandits import TabularSoftmax

F64 = torch.float64


# -- running_mean_update / RunningMean -------------------------------------------------------------
def test_running_mean_update_cumulative_and_ema_by_hand():
    table = torch.tensor([[0.0, 5.0, 1.0]], dtype=F64)
    counts = torch.tensor([[0.0, 2.0, 1.0]], dtype=F64)
    s = torch.tensor([[0, 1, 1, 0]])
    r = torch.tensor([[1.0, 2.0, 4.0, 3.0]], dtype=F64)
    cum, n = BL.running_mean_update(table, counts, s, r)
    # context 0 first seen: its batch mean 2; context 1: (2·5 + 2 + 4) / 4 = 4; context 2 unseen
    torch.testing.assert_close(cum, torch.tensor([[2.0, 4.0, 1.0]], dtype=F64))
    torch.testing.assert_close(n, torch.tensor([[2.0, 4.0, 1.0]], dtype=F64))
    ema, _ = BL.running_mean_update(table, counts, s, r, decay=0.25)
    torch.testing.assert_close(ema, torch.tensor([[2.0, 0.75 * 5 + 0.25 * 3, 1.0]], dtype=F64))


def test_running_mean_cumulative_equals_the_mean_of_everything_seen():
    gen = pg.make_generator(0)
    table = torch.zeros(4, 3, dtype=F64)
    counts = torch.zeros(4, 3, dtype=F64)
    all_s, all_r = [], []
    for _ in range(5):
        s = torch.randint(0, 3, (4, 6), generator=gen)
        r = torch.randn(4, 6, generator=gen, dtype=F64)
        table, counts = BL.running_mean_update(table, counts, s, r)
        all_s.append(s)
        all_r.append(r)
    s, r = torch.cat(all_s, 1), torch.cat(all_r, 1)
    for run in range(4):
        for c in range(3):
            sel = r[run][s[run] == c]
            if sel.numel():
                assert abs(float(table[run, c] - sel.mean())) < 1e-12
            assert counts[run, c] == sel.numel()


def test_running_mean_update_dtypes_meta_and_bad_inputs():
    for dtype in (torch.float32, torch.bfloat16):
        t, _n = BL.running_mean_update(torch.zeros(2, 3, dtype=dtype), torch.zeros(2, 3, dtype=dtype),
                                      torch.tensor([[0, 1], [2, 2]]), torch.ones(2, 2, dtype=dtype))
        assert t.dtype == dtype and t.tolist() == [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    m, _ = BL.running_mean_update(torch.zeros(2, 3, device="meta"), torch.zeros(2, 3, device="meta"),
                                  torch.zeros(2, 4, dtype=torch.long, device="meta"),
                                  torch.zeros(2, 4, device="meta"))
    assert m.device.type == "meta" and m.shape == (2, 3)
    good = dict(table=torch.zeros(2, 3, dtype=F64), counts=torch.zeros(2, 3, dtype=F64),
                s=torch.zeros(2, 4, dtype=torch.long), r=torch.zeros(2, 4, dtype=F64))
    bad = [("counts", torch.zeros(3, 3, dtype=F64)), ("s", torch.full((2, 4), 3)),
           ("s", torch.full((2, 4), -1)), ("r", torch.full((2, 4), float("nan"), dtype=F64)),
           ("s and r", torch.zeros(2, 5, dtype=F64)), ("table", torch.zeros(2, 3, dtype=torch.long))]
    for name, value in bad:
        key = "r" if name == "s and r" else name
        with pytest.raises(ValueError, match=name.split()[0]):
            BL.running_mean_update(**{**good, key: value})
    with pytest.raises(ValueError, match="decay"):
        BL.running_mean_update(**good, decay=1.5)
    for kw in (dict(decay=0.0), dict(decay=2.0), dict(init="guess"), dict(init=float("inf"))):
        with pytest.raises(ValueError, match=next(iter(kw))):
            BL.RunningMean(**kw)
    # the exact tools cannot use a learned baseline: they say so
    b = bandits.context_bandit()
    pol = TabularSoftmax(3, 4)
    with pytest.raises(ValueError, match="training loop"):
        XB.exact_total_variance(b, pol, pol.init(), BL.RunningMean())


def test_running_mean_weights_leave_one_out_start():
    rm = BL.RunningMean(decay=0.5)
    table = torch.tensor([[9.0, 2.0]], dtype=F64)
    counts = torch.tensor([[0.0, 3.0]], dtype=F64)
    s = torch.tensor([[0, 1, 0]])
    r = torch.tensor([[1.0, 2.0, 4.0]], dtype=F64)
    w = rm.weights(table, counts, s, r)
    # unseen context 0: the mean of the other two rewards; seen context 1: its table value
    torch.testing.assert_close(w, torch.tensor([[1.0 - 3.0, 0.0, 4.0 - 1.5]], dtype=F64))
    with pytest.raises(ValueError, match="N ≥ 2"):
        rm.weights(table, counts, s[:, :1], r[:, :1])
    fixed = BL.RunningMean(decay=0.5, init=0.0)
    torch.testing.assert_close(fixed.weights(table, counts, s, r),
                               torch.tensor([[1.0 - 9.0, 0.0, 4.0 - 9.0]], dtype=F64))


def test_reinforce_with_running_mean_is_unbiased_step_and_learns():
    b = bandits.offset_bandit(10.0)
    pol = TabularSoftmax(3, 4)
    # one step: the estimate from a fixed table b(s) is a state baseline, so E[ĝ] = ∇J; check
    # the loop's first update against the estimator with the leave-one-out weights by hand
    h = reinforce(b, pol, pol.init(), 1, 8, 1.0, BL.RunningMean(), pg.make_generator(0), progress=False)
    batch = b.sample(pol.probs(pol.init()), 8, pg.make_generator(0))
    w = (batch.r.sum() - batch.r) / 7
    g = torch.func.grad(weighted_log_likelihood, argnums=1)(pol, pol.init(), batch, batch.r - w)
    torch.testing.assert_close(h.theta[1], pol.init() + g, rtol=0, atol=1e-12)
    # vectorised runs learn to within 0.05 of the optimum at η = 1 (the oracle's level)
    runs = reinforce(b, pol, pol.init().expand(8, 12), 150, 16, 1.0, BL.RunningMean(0.1),
                     pg.make_generator(1), progress=False)
    assert runs.J.shape == (151, 8)
    assert float((runs.optimum - runs.final_J).max()) < 0.05


# -- success_weights / rejection_sampling_ft ------------------------------------------------------
def test_success_weights():
    r = torch.tensor([[1.0, 0.0, 1.0, 0.5], [0.0, 0.0, 0.0, 0.0]], dtype=F64)
    torch.testing.assert_close(BL.success_weights(r), torch.tensor([[2.0, 0, 2.0, 0], [0, 0, 0, 0]], dtype=F64))
    torch.testing.assert_close(BL.success_weights(r, normalise=False), (r >= 1).to(F64))
    torch.testing.assert_close(BL.success_weights(r, success=0.5, normalise=False), (r >= 0.5).to(F64))
    assert BL.success_weights(r.to(torch.bfloat16)).dtype == torch.bfloat16
    assert BL.success_weights(torch.zeros(3, 4, device="meta")).shape == (3, 4)
    with pytest.raises(ValueError, match="rewards"):
        BL.success_weights(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="rewards"):
        BL.success_weights(torch.tensor(1.0))
    with pytest.raises(ValueError, match="success"):
        BL.success_weights(r, success=float("nan"))


def test_rft_step_is_rescaled_reinforce_on_the_binary_reward():
    b = bandits.context_bandit()
    pol = TabularSoftmax(3, 4)
    th = 0.5 * b.means.flatten()
    h = rejection_sampling_ft(b, pol, th, 1, 32, 0.7, pg.make_generator(4))
    batch = b.sample(pol.probs(th), 32, pg.make_generator(4))
    keep = (batch.r >= 1).to(F64)
    K = keep.sum()
    g_reinforce = torch.func.grad(weighted_log_likelihood, argnums=1)(pol, th, batch, keep)
    torch.testing.assert_close(h.theta[1], th + 0.7 * (32 / K) * g_reinforce, rtol=0, atol=1e-12)
    # expected one-step direction with normalise=False: ∇ P_θ(r ≥ 1), exactly
    success = (b.means >= 1).to(F64)
    mean, _ = XB.exact_estimator_moments(bandits.Bandit(b.rho, success), pol, th)
    grad_p = torch.func.grad(lambda t: b.J(pol.probs(t), rewards=success))(th)
    torch.testing.assert_close(mean, grad_p, rtol=0, atol=1e-14)


def test_rft_learns_vectorised_and_bad_inputs():
    b = bandits.context_bandit()
    pol = TabularSoftmax(3, 4)
    h = rejection_sampling_ft(b, pol, pol.init().expand(6, 12), 60, 16, 1.0, pg.make_generator(0),
                              sft_steps=2)
    assert h.J.shape == (61, 6) and h.grad_norm.shape == (60, 6)
    assert float(h.final_J.min()) > float(h.J[0].max()) + 0.3
    with pytest.raises(ValueError, match="iterations"):
        rejection_sampling_ft(b, pol, pol.init(), 0, 16, 1.0, pg.make_generator(0))
    with pytest.raises(ValueError, match="sft_steps"):
        rejection_sampling_ft(b, pol, pol.init(), 2, 16, 1.0, pg.make_generator(0), sft_steps=0)
    with pytest.raises(ValueError, match="lr"):
        rejection_sampling_ft(b, pol, pol.init(), 2, 16, -1.0, pg.make_generator(0))
    with pytest.raises(ValueError, match="generator"):
        rejection_sampling_ft(b, pol, pol.init(), 2, 16, 1.0, None)


# -- per-coordinate baseline and control variates -------------------------------------------------
def _fixed():
    b = bandits.context_bandit()
    pol = TabularSoftmax(3, 4)
    return b, pol, 2.0 * b.means.flatten()


def test_coordinate_baseline_beats_the_scalar_optimum_and_matches_by_hand():
    b, pol, th = _fixed()
    table = BL.optimal_coordinate_baseline_table(b, pol, th)
    assert table.shape == (3, 12)
    scalar = BL.optimal_baseline_table(b, pol, th)
    v_scalar = XB.exact_coordinate_baseline_variance(b, pol, th, scalar[:, None].expand(3, 12))
    assert abs(float(v_scalar - XB.exact_total_variance(b, pol, th, "optimal"))) < 1e-14
    v_coord = XB.exact_coordinate_baseline_variance(b, pol, th, table)
    assert float(v_coord) < float(v_scalar)
    # each coordinate's variance is a parabola in its own b_k: perturbing any entry raises it
    gen = pg.make_generator(0)
    for _ in range(10):
        bumped = table + 0.05 * torch.randn(table.shape, generator=gen, dtype=F64)
        assert float(XB.exact_coordinate_baseline_variance(b, pol, th, bumped)) > float(v_coord)
    # the value b*_k(s) by hand for coordinate (s=0, a'=1)
    p, sc = pol.probs(th), pol.scores(th)
    w = p[0] * sc[0, :, 1] ** 2
    assert abs(float((w * b.means[0]).sum() / w.sum() - table[0, 1])) < 1e-14
    # Monte Carlo: the per-coordinate estimator is unbiased with the predicted variance
    N, M = 8, 20_000
    batch = b.sample(p, (M, N), pg.make_generator(5))
    scores = sc[batch.s, batch.a]                                   # (M, N, P)
    est = (scores * (batch.r[..., None] - table[batch.s])).mean(1)
    g = XB.exact_gradient(b, pol, th)
    st = pg.exact.stats.EstimatorStats(est)
    assert st.max_abs_z(g) < 4.5
    assert abs(float(st.total_variance) * N - float(v_coord)) < 4.5 * float(st.total_variance_stderr) * N


def test_control_variate_is_unbiased_for_any_table():
    b, pol, th = _fixed()
    g = XB.exact_gradient(b, pol, th)
    gen = pg.make_generator(1)
    for table in (b.means, torch.zeros(3, 4, dtype=F64), torch.randn(3, 4, generator=gen, dtype=F64)):
        mean, cov = XB.exact_control_variate_moments(b, pol, th, table)
        assert (mean - g).abs().max() < 1e-14
        assert cov.shape == (12, 12) and torch.allclose(cov, cov.T)
    # b = 0 is the plain estimator; b = r leaves only the context's randomness
    _, c0 = XB.exact_control_variate_moments(b, pol, th, torch.zeros(3, 4, dtype=F64))
    _, plain = XB.exact_estimator_moments(b, pol, th)
    torch.testing.assert_close(c0, plain, rtol=0, atol=1e-14)
    _, cr = XB.exact_control_variate_moments(b, pol, th, b.means)
    per_context = torch.stack([torch.func.grad(
        lambda t, s=s: (pol.probs(t)[s] * b.means[s]).sum())(th) for s in range(3)])   # ∇V(s)
    ctx_cov = (b.rho[:, None, None] * per_context[:, :, None] * per_context[:, None, :]).sum(0) \
        - torch.outer(g, g)
    torch.testing.assert_close(cr, ctx_cov, rtol=0, atol=1e-14)


def test_coordinate_and_cv_bad_inputs():
    b, pol, th = _fixed()
    with pytest.raises(ValueError, match="table"):
        XB.exact_coordinate_baseline_variance(b, pol, th, torch.zeros(3, 4, dtype=F64))
    with pytest.raises(ValueError, match="table"):
        XB.exact_coordinate_baseline_variance(b, pol, th, torch.full((3, 12), float("nan"), dtype=F64))
    with pytest.raises(ValueError, match="n_samples"):
        XB.exact_coordinate_baseline_variance(b, pol, th, torch.zeros(3, 12, dtype=F64), n_samples=0)
    with pytest.raises(ValueError, match="table"):
        XB.exact_control_variate_moments(b, pol, th, torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="table"):
        XB.exact_control_variate_moments(b, pol, th, torch.full((3, 4), float("inf"), dtype=F64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_coordinate_and_cv_dtypes(dtype):
    b, pol, th = _fixed()
    ref = XB.exact_coordinate_baseline_variance(b, pol, th, BL.optimal_coordinate_baseline_table(b, pol, th))
    b2, th2 = b.to(dtype=dtype), th.to(dtype)
    v = XB.exact_coordinate_baseline_variance(b2, pol, th2, BL.optimal_coordinate_baseline_table(b2, pol, th2))
    assert v.dtype == dtype
    assert abs(float(v) - float(ref)) < (1e-5 if dtype == torch.float32 else 5e-2)
    mean, _ = XB.exact_control_variate_moments(b2, pol, th2, b2.means)
    assert mean.dtype == dtype


# -- the map: TRPO is PPO's parent, rejection sampling is SFT's child ------------------------------
def test_trpo_and_rejection_sampling_on_the_map():
    trpo = pg.method("TRPO")
    assert trpo.parent == "Natural PG" and trpo.axis == "trajectory"
    assert trpo.changes()["kl"] == ("none", "kl_constraint")
    for name in ("PPO-KL", "PPO-clip"):
        assert pg.method(name).parent == "TRPO"
        assert pg.method(name).changes()["step"] == ("natural", "gradient")
    rft = pg.method("Rejection-sampling FT")
    assert rft.parent == "SFT (weighted MLE, A = 1)" and rft.axis == "both"
    assert rft.changes() == {"advantage": ("unit", "success"), "data": ("dataset", "on_policy")}
    assert registry.get("advantage", "success").side == "reward"
    # the LLM loss of the PPO family is unchanged by the new parent
    assert pg.methods.method_config("PPO-clip")["policy_loss"] == "ppo_clip"
    assert pg.methods.method_config("PPO-clip")["kl"] == "none"


def test_new_exact_tools_on_meta():
    meta = bandits.Bandit(torch.full((3,), 1 / 3, device="meta"), torch.zeros(3, 4, device="meta"))
    pol = TabularSoftmax(3, 4)
    th = torch.zeros(12, device="meta")
    assert BL.optimal_coordinate_baseline_table(meta, pol, th).shape == (3, 12)
    v = XB.exact_coordinate_baseline_variance(meta, pol, th, torch.zeros(3, 12, device="meta"))
    assert v.shape == () and v.device.type == "meta"
    mean, cov = XB.exact_control_variate_moments(meta, pol, th, torch.zeros(3, 4, device="meta"))
    assert mean.shape == (12,) and cov.shape == (12, 12) and cov.device.type == "meta"
