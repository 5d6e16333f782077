"""Bad inputs to the exact-analysis tools, the bandit and sequence worlds and the reward
baselines raise a ValueError that names the argument (and valid calls still work)."""

from __future__ import annotations

import pytest
import torch

import pgbook as pg
from pgbook.exact import agentic as EA
from pgbook.exact import bandits as EB
from pgbook.exact import groups as EG
from pgbook.exact import seqlm as ES
from pgbook.exact import stats as EST
from pgbook.exact import trajectory as ETJ
from pgbook.reward import baselines as RB
from pgbook.train import ppo as TP
from pgbook.train import reinforce as TR
from pgbook.worlds import agentic as WAG
from pgbook.worlds import bandits as WB
from pgbook.worlds import seqlm as WS

F64 = torch.float64

# -- the bandit world: functions of one parameter vector θ (P,) -----------------------------
BANDIT = WB.context_bandit()
POL = WB.TabularSoftmax(3, 4)
TH = torch.zeros(12, dtype=F64)
BATCH = BANDIT.sample(POL.probs(TH), 8, pg.make_generator(0))
W8 = torch.ones(8, dtype=F64)
GROUPS = WB.sample_groups(BANDIT, POL.probs(TH), 2, 2, pg.make_generator(1))

ONE_THETA = {
    "RB.optimal_baseline": lambda t: RB.optimal_baseline(BANDIT, POL, t, BATCH),
    "RB.optimal_baseline_table": lambda t: RB.optimal_baseline_table(BANDIT, POL, t),
    "RB.optimal_constant_baseline": lambda t: RB.optimal_constant_baseline(BANDIT, POL, t),
    "RB.optimal_coordinate_baseline_table":
        lambda t: RB.optimal_coordinate_baseline_table(BANDIT, POL, t),
    "RB.baseline_table": lambda t: RB.baseline_table(BANDIT, POL, t),
    "RB.value_baseline": lambda t: RB.value_baseline(BANDIT, POL, t, BATCH),
    "RB.no_baseline": lambda t: RB.no_baseline(BANDIT, POL, t, BATCH),
    "RB.sample_weights": lambda t: RB.sample_weights(BANDIT, POL, t, BATCH),
    "EB.exact_gradient": lambda t: EB.exact_gradient(BANDIT, POL, t),
    "EB.exact_estimator_moments": lambda t: EB.exact_estimator_moments(BANDIT, POL, t),
    "EB.exact_total_variance": lambda t: EB.exact_total_variance(BANDIT, POL, t),
    "EB.baseline_bias": lambda t: EB.baseline_bias(BANDIT, POL, t, "value"),
    "EB.exact_coordinate_baseline_variance":
        lambda t: EB.exact_coordinate_baseline_variance(BANDIT, POL, t,
                                                        torch.zeros(3, 12, dtype=F64)),
    "EB.policy_gradient_estimates":
        lambda t: EB.policy_gradient_estimates(BANDIT, POL, t, 4, 3, pg.make_generator(2)),
    "EB.reinforce_surrogate": lambda t: EB.reinforce_surrogate(POL, t, BATCH, W8),
    "EB.score": lambda t: EB.score(POL, t, BATCH.s, BATCH.a),
    "EG.group_estimates": lambda t: EG.group_estimates(BANDIT, POL, t, GROUPS),
    "POL.scores": lambda t: POL.scores(t),
    "POL.log_prob": lambda t: POL.log_prob(t, BATCH.s, BATCH.a),
    "TR.weighted_log_likelihood": lambda t: TR.weighted_log_likelihood(POL, t, BATCH, W8),
    "TR.sft_loss": lambda t: TR.sft_loss(POL, t, BATCH.s, BATCH.a),
    "TR.fit_weighted_mle": lambda t: TR.fit_weighted_mle(POL, t, BATCH, steps=2),
    "TP.collect": lambda t: TP.collect(BANDIT, POL, t, 8, pg.make_generator(3)),
}


@pytest.mark.parametrize("name", sorted(ONE_THETA))
def test_one_theta_refuses_a_batch_of_thetas(name):
    fn = ONE_THETA[name]
    fn(TH)                                                   # one θ (P,) works
    with pytest.raises(ValueError, match=r"theta0?(_old)?: expected shape \(12,\).*got \(1, 12\)"):
        fn(TH[None])


def test_batched_theta_still_works_where_supported():
    assert EB.exact_J(BANDIT, POL, torch.stack([TH, TH + 0.1])).shape == (2,)
    assert POL.probs(TH[None]).shape == (1, 3, 4)
    h = TR.reinforce(BANDIT, POL, torch.stack([TH, TH]), 2, 4, 0.1,
                     generator=pg.make_generator(4), progress=False)
    assert h.J.shape == (3, 2)


def test_sample_groups_refuses_probs_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"probs: expected shape \(3, 4\)"):
        WB.sample_groups(BANDIT, POL.probs(TH)[None], 2, 2, pg.make_generator(0))
    assert WB.sample_groups(BANDIT, POL.probs(TH), 2, 2, pg.make_generator(0)).s.shape == (2, 2)


@pytest.mark.parametrize("rho, means, match", [
    (torch.tensor([1.0]), torch.zeros(1, 0), "means: expected at least one element"),
    (torch.zeros(0), torch.zeros(0, 4), "rho: expected at least one element"),
])
def test_bandit_refuses_an_empty_world(rho, means, match):
    with pytest.raises(ValueError, match=match):
        WB.Bandit(rho, means)
    WB.Bandit(torch.tensor([1.0]), torch.zeros(1, 2))


# -- the sequence world ---------------------------------------------------------------------
SPACE = WS.SeqSpace(tokens=("a", "b"), max_len=2, rho=torch.tensor([0.6, 0.4], dtype=F64))
SEQS = SPACE.enumerate()
MPOL = WS.MLPPolicy(SPACE, hidden=3)
STH = MPOL.init(pg.make_generator(4), scale=0.5)
REWARD = WS.token_table_reward(torch.tensor([[1.0, -0.3, 0.2], [-0.5, 1.0, 0.0]], dtype=F64))


def test_seqspace_refuses_no_prompts():
    with pytest.raises(ValueError, match="rho: expected at least one element"):
        WS.SeqSpace(tokens=("a", "b"), max_len=2, rho=torch.zeros(0, dtype=F64))


@pytest.mark.parametrize("value", [0.5, -float("inf"), float("nan"), 2.0])
@pytest.mark.parametrize("use", [
    lambda s: REWARD.of(s),
    lambda s: ES.exact_J(MPOL, STH, REWARD, s),
    lambda s: ES.sequence_logprobs(MPOL, STH, s),
], ids=["SeqReward.of", "exact_J", "sequence_logprobs"])
def test_sequences_with_a_mask_that_is_not_0_1_are_refused_where_used(value, use):
    # Sequences is a container (its values are checked by whatever reads them, as the
    # contract tests build such batches on purpose); every reader refuses the mask
    mask = SEQS.mask.clone()
    mask.view(-1)[0] = value
    with pytest.raises(ValueError, match="mask: expected a 0/1 mask"):
        use(WS.Sequences(SEQS.x, SEQS.tokens, mask))
    use(SEQS)


@pytest.mark.parametrize("theta, match", [
    (torch.full_like(STH, float("nan")), "theta: expected finite values"),
    (STH > 0, "theta: expected a floating-point tensor"),
    (STH.to(torch.complex128), "theta: expected a floating-point tensor"),
    (STH[None], "theta: expected 1 dimension"),
    (STH[:3], r"theta: expected shape \(\d+,\)"),
])
def test_unflatten_refuses_bad_theta(theta, match):
    with pytest.raises(ValueError, match=match):
        MPOL.unflatten(theta)
    assert MPOL.unflatten(STH)["b"].shape == (SPACE.V,)


@pytest.mark.parametrize("dtype", [torch.bool, torch.complex128])
def test_exact_expectation_refuses_bool_or_complex_values(dtype):
    with pytest.raises(ValueError, match="values: expected real numbers"):
        ES.exact_expectation(MPOL, STH, torch.ones(len(SEQS), dtype=dtype))
    assert ES.exact_expectation(MPOL, STH, SEQS.lengths).shape == ()      # integer values
    assert ES.exact_expectation(MPOL, STH, torch.ones(len(SEQS), dtype=F64)).shape == ()


def test_seqlm_exact_J_refuses_a_numpy_theta():
    with pytest.raises(ValueError, match=r"theta: expected a torch\.Tensor, got ndarray"):
        ES.exact_J(MPOL, STH.numpy(), REWARD)
    assert ES.exact_J(MPOL, STH, REWARD).shape == ()


def test_path_stats_refuses_no_thetas():
    thetas = torch.stack([STH, 0.5 * STH])
    with pytest.raises(ValueError, match="thetas: expected at least one element"):
        ETJ.path_stats(MPOL, thetas[:0], REWARD)
    ETJ.path_stats(MPOL, thetas, REWARD)


# -- the agentic tree -----------------------------------------------------------------------
LWORLD = WAG.LookupWorld(n_values=2, max_turns=2)
EPS = LWORLD.enumerate()
MKV = WAG.MarkovMLPPolicy(LWORLD.space, hidden=3)
MTH = MKV.init(pg.make_generator(31), scale=0.5)
TW = EA.credit_weights(MKV, MTH, EPS, "turn")


@pytest.mark.parametrize("fn", [EA.expected_gradient, EA.per_episode_gradients])
@pytest.mark.parametrize("dtype", [torch.complex128, torch.bool])
def test_agentic_gradients_refuse_non_floating_weights(fn, dtype):
    with pytest.raises(ValueError, match="weights: expected a floating-point tensor"):
        fn(MKV, MTH, EPS, TW.to(dtype))
    assert fn(MKV, MTH, EPS, TW).shape[-1] == MKV.n_params


def test_turn_returns_exact_refuses_no_turns():
    with pytest.raises(ValueError, match=r"turn_rewards: expected shape \(\*N, K\) with K ≥ 1"):
        EA.turn_returns_exact(torch.zeros(4, 0, dtype=F64))
    assert EA.turn_returns_exact(torch.ones(4, 2, dtype=F64))[0].tolist() == [2.0, 1.0]


# -- estimator statistics -------------------------------------------------------------------
STATS = EST.EstimatorStats(torch.randn(5, 3, generator=pg.make_generator(5), dtype=F64))
EXACT = torch.ones(3, dtype=F64)


@pytest.mark.parametrize("method", ["z_scores", "max_abs_z", "is_unbiased", "mse",
                                    "bias_squared", "relative_error", "summary"])
@pytest.mark.parametrize("exact, match", [
    (torch.ones(3, dtype=torch.complex128), "exact: expected a floating-point tensor"),
    (torch.tensor([True, False, True]), "exact: expected a floating-point tensor"),
    (torch.tensor(1.0, dtype=F64), r"exact: expected shape \(3\), got \(\)"),
])
def test_estimator_stats_refuse_bad_exact(method, exact, match):
    with pytest.raises(ValueError, match=match):
        getattr(STATS, method)(exact)
    getattr(STATS, method)(EXACT)


def test_relative_error_refuses_a_scalar_exact():
    with pytest.raises(ValueError, match=r"exact: expected 1 dimension\(s\), got shape \(\)"):
        EST.relative_error(torch.ones(3, dtype=F64), torch.tensor(1.0, dtype=F64))
    assert float(EST.relative_error(2 * EXACT, EXACT)) == pytest.approx(1.0)


def test_cosine_refuses_empty_vectors():
    with pytest.raises(ValueError, match="u: expected at least one element"):
        EST.cosine(torch.zeros(0), torch.zeros(0))
    assert float(EST.cosine(EXACT, EXACT)) == pytest.approx(1.0)


def test_estimates_from_loss_refuses_an_empty_theta():
    def loss(t, b):
        return (t * b).sum()

    with pytest.raises(ValueError, match="theta: expected at least one element"):
        EST.estimates_from_loss(loss, torch.zeros(0, dtype=F64), torch.ones(5, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"theta: expected 1 dimension"):
        EST.estimates_from_loss(loss, torch.zeros(1, 3, dtype=F64), torch.ones(5, 3, dtype=F64))
    assert EST.estimates_from_loss(loss, torch.zeros(3, dtype=F64),
                                   torch.ones(5, 3, dtype=F64)).shape == (5, 3)


# -- running means and success weights ------------------------------------------------------
TABLE3 = torch.tensor([0.1, 0.2, 0.3], dtype=F64)


@pytest.mark.parametrize("counts", [torch.tensor([True, False, True]),
                                    torch.ones(3, dtype=torch.complex128)])
def test_running_means_refuse_bool_or_complex_counts(counts):
    with pytest.raises(ValueError, match="counts: expected a real"):
        RB.running_mean_update(TABLE3, counts, BATCH.s, BATCH.r)
    with pytest.raises(ValueError, match="counts: expected a real"):
        RB.RunningMean().weights(TABLE3, counts, BATCH.s, BATCH.r)
    for good in (torch.tensor([1.0, 0.0, 2.0], dtype=F64), torch.tensor([1, 0, 2])):
        RB.running_mean_update(TABLE3, good, BATCH.s, BATCH.r)
        RB.RunningMean().weights(TABLE3, good, BATCH.s, BATCH.r)


def test_success_weights_refuse_no_samples():
    with pytest.raises(ValueError, match="rewards: expected shape"):
        RB.success_weights(torch.tensor([], dtype=F64))
    with pytest.raises(ValueError, match="rewards: expected shape"):
        RB.success_weights(torch.zeros(2, 0, dtype=F64))
    assert RB.success_weights(torch.tensor([1.0, 0.0], dtype=F64)).tolist() == [2.0, 0.0]
