"""Chapter 13's reward-side pieces: each estimator against its reference implementation
(transcribed below, with the file and function it comes from), shaping, token credit, the
exact group-update tools and the trainer hooks."""

import math
from collections import defaultdict
from functools import partial

import numpy as np
import pytest
import torch

import pgbook as pg
from pgbook import registry
from pgbook.aggregation import aggregate
from pgbook.exact import reward_side as X
from pgbook.exact.groups import binary_group_weight
from pgbook.exact.seqlm import exact_gradient, sequence_probs
from pgbook.exact.stats import EstimatorStats
from pgbook.reward import advantages as A
from pgbook.reward import shaping as S
from pgbook.worlds import answers
from pgbook.worlds.seqlm import MLPPolicy, SeqSpace, contains

F64 = torch.float64


def _ragged(n, T, seed, contiguous=True):
    """A (n, T) 0/1 mask with lengths 1 … T (contiguous) or holes (not contiguous)."""
    g = torch.Generator().manual_seed(seed)
    if contiguous:
        L = torch.randint(1, T + 1, (n,), generator=g)
        return (torch.arange(T)[None] < L[:, None]).to(F64)
    m = (torch.rand(n, T, generator=g) > 0.3).to(F64)
    m[:, 0] = 1.0
    return m


# -- verl (volcengine/verl, verl/trainer/ppo/core_algos.py and verl/utils/torch_functional.py),
#    transcribed with their per-sample loops -------------------------------------------------
def verl_masked_whiten(values, mask):
    """verl/utils/torch_functional.py: masked_mean, masked_var (unbiased), masked_whiten."""
    mean = (values * mask).sum() / (mask.sum() + 1e-8)
    centered = values - mean
    var = (centered ** 2 * mask).sum() / (mask.sum() + 1e-8)
    var = var * mask.sum() / (mask.sum() - 1)
    return (values - mean) * torch.rsqrt(var + 1e-8)


def verl_reinforce_plus_plus(token_level_rewards, response_mask, gamma):
    """core_algos.py: compute_reinforce_plus_plus_outcome_advantage."""
    returns = torch.zeros_like(token_level_rewards)
    running_return = 0
    for t in reversed(range(token_level_rewards.shape[1])):
        running_return = token_level_rewards[:, t] + gamma * running_return
        returns[:, t] = running_return
        running_return = running_return * response_mask[:, t]
    return verl_masked_whiten(returns, response_mask) * response_mask


def verl_rloo(scores, index):
    """core_algos.py: compute_rloo_outcome_advantage (sequence part)."""
    scores = scores.clone()
    id2score, id2mean = defaultdict(list), {}
    for i in range(len(scores)):
        id2score[index[i]].append(scores[i])
    for idx in id2score:
        id2mean[idx] = torch.tensor(0.0) if len(id2score[idx]) == 1 else torch.mean(torch.stack(id2score[idx]))
    for i in range(len(scores)):
        n = len(id2score[index[i]])
        if n > 1:
            scores[i] = scores[i] * n / (n - 1) - id2mean[index[i]] * n / (n - 1)
    return scores


def verl_opo(scores, response_mask, index):
    """core_algos.py: compute_opo_outcome_advantage (sequence part)."""
    scores = scores.clone()
    length = response_mask.sum(-1)
    id2score, id2len, id2bsl = defaultdict(list), defaultdict(list), {}
    for i in range(len(scores)):
        id2score[index[i]].append(scores[i])
        id2len[index[i]].append(length[i])
    for idx in id2score:
        if len(id2score[idx]) == 1:
            id2bsl[idx] = torch.tensor(0.0)
        else:
            s, ln = torch.stack(id2score[idx]), torch.stack(id2len[idx])
            id2bsl[idx] = (ln * s).sum() / ln.sum()
    for i in range(len(scores)):
        scores[i] = scores[i] - id2bsl[index[i]]
    return scores


def verl_gpg(scores, index, f_norm=1.0):
    """core_algos.py: compute_gpg_outcome_advantage (sequence part)."""
    scores = scores.clone()
    bsz = scores.shape[0]
    alpha = bsz / torch.count_nonzero(scores).clamp(min=1)
    id2score, id2mean = defaultdict(list), {}
    for i in range(bsz):
        id2score[index[i]].append(scores[i])
    for idx in id2score:
        id2mean[idx] = torch.tensor(0.0) if len(id2score[idx]) == 1 else torch.mean(torch.stack(id2score[idx]))
    for i in range(bsz):
        scores[i] = alpha * (scores[i] - id2mean[index[i]]) / f_norm
    return scores


def verl_grpo_passk(scores, index, norm_adv_by_std_in_grpo=True, epsilon=1e-6):
    """core_algos.py: compute_grpo_passk_outcome_advantage (sequence part)."""
    advantages = torch.zeros_like(scores)
    id2scores, id2indices = defaultdict(list), defaultdict(list)
    for i in range(scores.shape[0]):
        id2scores[index[i]].append(scores[i])
        id2indices[index[i]].append(i)
    for idx in id2scores:
        rewards = torch.stack(id2scores[idx])
        topk, topk_idx = torch.topk(rewards, 2)
        i_max = id2indices[idx][topk_idx[0].item()]
        advantage = topk[0] - topk[1]
        if norm_adv_by_std_in_grpo:
            advantage = advantage / (torch.std(rewards) + epsilon)
        advantages[i_max] = advantage
    return advantages


def verl_remax(token_level_rewards, reward_baselines, response_mask):
    """core_algos.py: compute_remax_outcome_advantage."""
    returns = (token_level_rewards * response_mask).flip(dims=[-1]).cumsum(dim=-1).flip(dims=[-1])
    return returns - reward_baselines.unsqueeze(-1) * response_mask


def chen_calc_adv(val, k):
    """RUCAIBox/Passk_Training, code/passk_adv.py: calc_adv (math.comb for scipy's comb)."""
    c = len(np.where(val == 1)[0])
    n = len(val)
    rho = 1 - math.comb(n - c, k) / math.comb(n, k)
    sigma = np.sqrt(rho * (1 - rho))
    adv_p = (1 - rho) / (sigma + 1e-6)
    adv_n = (1 - rho - (math.comb(n - c - 1, k - 1) / math.comb(n - 1, k - 1) if n - c - 1 >= 0 else 0)) / (sigma + 1e-6)
    new_val = np.where(val == 1, adv_p, val)
    return np.where(new_val == 0, adv_n, new_val)


def _outcome_tokens(R, mask):
    """R on the last masked token of each row (verl's token_level_rewards of an outcome reward)."""
    last = (mask * torch.arange(mask.shape[1])).argmax(-1)
    return torch.zeros_like(mask).scatter(-1, last[:, None], R[:, None])


# -- equality with the references ----------------------------------------------------------
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reinforce_plus_plus_equals_verl(contiguous, gamma):
    g = torch.Generator().manual_seed(3)
    R = torch.randint(0, 2, (12,), generator=g).to(F64)
    mask = _ragged(12, 7, 1, contiguous)
    kl = -0.05 * torch.randn(12, 7, generator=g, dtype=F64) * mask            # −β·k1 per token
    mine = A.reinforce_plus_plus_advantage(R, 4, mask=mask, token_rewards=kl, gamma=gamma)
    ref = verl_reinforce_plus_plus(_outcome_tokens(R, mask) + kl, mask, gamma)
    assert (mine - ref).abs().max() < 1e-9
    # via compute_advantages, and the outcome-only case
    got = A.compute_advantages(R, "reinforce_plus_plus", group_size=4, mask=mask)
    assert (got - verl_reinforce_plus_plus(_outcome_tokens(R, mask), mask, 1.0)).abs().max() < 1e-9
    assert got.shape == (12, 7) and bool((got[mask == 0] == 0).all())


def test_rloo_opo_gpg_passk_remax_equal_verl():
    g = torch.Generator().manual_seed(5)
    for G in (1, 2, 4):
        if G == 1:
            R = torch.tensor([1.0, 0.0, 0.5], dtype=F64)
        else:
            R = torch.randint(0, 3, (3 * G,), generator=g).to(F64) / 2
            R[:G] = 1.0                                                          # a zero-variance group
        n = R.shape[0]
        index = [i // G for i in range(n)]
        mask = _ragged(n, 6, G)
        assert (A.opo_advantage(R, G, mask=mask) - verl_opo(R, mask, index)).abs().max() < 1e-12
        assert (A.gpg_advantage(R, G) - verl_gpg(R, index)).abs().max() < 1e-12
        assert (A.gpg_advantage(R, G, f_norm=2.0) - verl_gpg(R, index, 2.0)).abs().max() < 1e-12
        if G > 1:
            assert (A.rloo_advantage(R, G) - verl_rloo(R, index)).abs().max() < 1e-12
            for norm in (True, False):
                got = A.grpo_passk_advantage(R, G, norm_by_std=norm)
                assert (got - verl_grpo_passk(R, index, norm)).abs().max() < 1e-12
        b = torch.rand(n // G, generator=g, dtype=F64)
        got = A.remax_advantage(R, G, reward_baselines=b)
        ref = verl_remax(_outcome_tokens(R, mask), b.repeat_interleave(G), mask)
        assert (A.broadcast_to_tokens(got, mask) - ref).abs().max() < 1e-12
        assert torch.equal(A.remax_advantage(R, G, reward_baselines=b.repeat_interleave(G)), got)


def test_passk_analytic_equals_the_authors_code_and_grpo_at_k1():
    for G in (2, 5, 8):
        for c in range(G + 1):
            r = torch.tensor([1.0] * c + [0.0] * (G - c), dtype=F64)
            for k in range(1, G + 1):
                got = A.passk_analytic_advantage(r, G, k=k)
                ref = torch.tensor(chen_calc_adv(r.numpy(), k))
                assert (got - ref).abs().max() < 1e-9, (G, c, k)
                assert abs(float(got.sum())) < 1e-9                              # zero-sum
            # ε = 0: groups whose k-subsets all score alike get 0, never 0/0
            assert bool(torch.isfinite(A.passk_analytic_advantage(r, G, k=1, std_eps=0.0)).all())
            assert bool(torch.isfinite(A.grpo_passk_advantage(r, G, std_eps=0.0)).all())
            # k = 1: GRPO's z-score with the population standard deviation
            assert (A.passk_analytic_advantage(r, G, k=1) - A.grpo_advantage(r, G, unbiased=False)).abs().max() < 1e-9


def test_pkpo_is_unbiased_for_pass_at_k():
    p = torch.tensor([0.03, 0.2, 0.5, 0.8, 0.97], dtype=F64)
    G = 6
    for k in range(1, G + 1):
        want = X.pass_at_k_weight(p, k)
        for baseline in ("none", "loo") if k < G else ("none",):
            w = binary_group_weight(p, G, "pkpo", k=k, baseline=baseline)
            assert (w - want).abs().max() < 1e-12, (k, baseline)
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0], dtype=F64)
    # k = 1: no baseline is REINFORCE, the leave-one-out baseline is RLOO
    assert torch.equal(A.pkpo_advantage(r, 6, k=1, baseline="none"), r)
    assert (A.pkpo_advantage(r, 6, k=1) - A.rloo_advantage(r, 6)).abs().max() < 1e-12
    # the formula: k for a correct response, k·ρ(n−1, c, k−1) for a wrong one
    c, n, k = 2, 6, 3
    wrong = k * (1 - math.comb(n - 1 - c, k - 1) / math.comb(n - 1, k - 1))
    assert torch.allclose(A.pkpo_advantage(r, 6, k=3, baseline="none"),
                          torch.where(r > 0, torch.full_like(r, 3.0), torch.full_like(r, wrong)))
    # verl's grpo_passk estimates ∇pass@G: its weight is (1−p)^(G−1)·√G/(1 + ε√G)
    w = binary_group_weight(p, G, "grpo_passk", std_eps=0.0)
    assert (w - X.pass_at_k_weight(p, G) / math.sqrt(G)).abs().max() < 1e-12


def test_pass_at_k_helpers():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                want = 1 - math.comb(n - c, k) / math.comb(n, k)
                got = A.pass_at_k_estimate(torch.tensor(float(n), dtype=F64), torch.tensor(float(c), dtype=F64), k)
                assert abs(float(got) - want) < 1e-12
    p = torch.tensor([0.1, 0.5], dtype=F64)
    g = torch.func.grad(lambda q: X.pass_at_k(q, 4).sum())(p)
    assert torch.allclose(g, X.pass_at_k_weight(p, 4), rtol=0, atol=1e-12)


# -- TRL (huggingface/trl, trl/trainer/grpo_trainer.py, GRPOTrainer._compute_loss) ----------
def test_aggregations_equal_trl_loss_types():
    g = torch.Generator().manual_seed(2)
    per_token_loss = torch.randn(6, 9, generator=g, dtype=F64)
    mask = _ragged(6, 9, 4)
    max_completion_length = 12
    trl = {  # loss_type: formula in GRPOTrainer._compute_loss (one process, no accumulation)
        "grpo": ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean(),
        "dr_grpo": (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length),
        "dapo": (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0),
    }
    assert abs(aggregate(per_token_loss, mask, "seq_mean_token_mean") - trl["grpo"]) < 1e-12
    assert abs(aggregate(per_token_loss, mask, "constant", max_completion_length) - trl["dr_grpo"]) < 1e-12
    assert abs(aggregate(per_token_loss, mask, "token_mean") - trl["dapo"]) < 1e-12


def trl_soft_overlong(lengths, max_completion_len, soft_punish_cache):
    """trl/rewards/other_rewards.py: _SoftOverlongPunishment.__call__."""
    out = []
    for n in lengths:
        if n <= max_completion_len - soft_punish_cache:
            out.append(0.0)
        elif max_completion_len - soft_punish_cache < n <= max_completion_len:
            out.append((max_completion_len - soft_punish_cache - n) / soft_punish_cache)
        else:
            out.append(-1.0)
    return out


def trl_high_entropy_mask(entropies, mask, threshold):
    """trl/trainer/grpo_trainer.py: GRPOTrainer.get_high_entropy_mask (one process)."""
    local = entropies[mask.bool()].float()
    entropy_threshold = torch.quantile(local, threshold)
    masked_entropies = entropies * mask.float()
    return (masked_entropies >= entropy_threshold) & mask.bool()


def test_shaping_equals_trl():
    lengths = torch.arange(0, 30)
    for L_max, cache in ((20, 4), (20, 0), (10, 10)):
        want = torch.tensor(trl_soft_overlong(lengths.tolist(), L_max, cache), dtype=torch.float32)
        assert torch.allclose(S.soft_overlong_penalty(lengths, L_max, cache), want)
    g = torch.Generator().manual_seed(8)
    ent = torch.rand(5, 8, generator=g)
    mask = _ragged(5, 8, 9).float()
    for rho in (0.2, 0.5, 1.0):
        assert torch.equal(S.high_entropy_mask(ent, mask, rho), trl_high_entropy_mask(ent, mask, 1 - rho))


# -- shaping and token credit ------------------------------------------------------------------
def test_overlong_treatments():
    R = torch.tensor([1.0, 0.0, 1.0, 1.0])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.float32)
    tokens = torch.tensor([[5, 2, 0, 0], [5, 5, 5, 5], [5, 5, 5, 2], [2, 0, 0, 0]])
    cut = S.truncated_responses(tokens, mask, eos_id=2)
    assert cut.tolist() == [False, True, False, False]
    r, m = S.overlong_punish(R, mask, truncated=cut, max_tokens=4)
    assert r.tolist() == [1.0, 0.0, 1.0, 1.0] and torch.equal(m, mask)
    r, m = S.overlong_punish(R, mask, truncated=torch.tensor([True, False, False, False]), max_tokens=4, value=-1.0)
    assert r.tolist() == [-1.0, 0.0, 1.0, 1.0]
    r, m = S.overlong_mask(R, mask, truncated=cut, max_tokens=4)
    assert torch.equal(r, R) and m[1].sum() == 0 and torch.equal(m[[0, 2, 3]], mask[[0, 2, 3]])
    r, m = S.overlong_soft(R, mask, truncated=cut, max_tokens=4, cache=2)
    assert torch.allclose(r, R + torch.tensor([0.0, -1.0, -1.0, 0.0])) and torch.equal(m, mask)
    assert registry.get("shaping", "overlong_mask").side == "trajectory"
    assert registry.get("shaping", "overlong_soft").side == "reward"


def test_token_credit():
    g = torch.Generator().manual_seed(4)
    B, T, G = 8, 6, 4
    mask = _ragged(B, T, 11)
    ent = torch.rand(B, T, generator=g, dtype=F64)
    adv = A.broadcast_to_tokens(torch.randn(B, generator=g, dtype=F64), mask)
    top = S.top_entropy_advantages(adv, ent, mask, group_size=G)
    low = S.low_entropy_advantages(adv, ent, mask, group_size=G)
    assert torch.allclose(top + low, adv)
    frac = (top != 0).sum() / (mask > 0).sum()
    assert 0.15 < float(frac) < 0.3
    w = S.entropy_weighted_advantages(torch.ones_like(adv) * mask, ent, mask, group_size=G)
    # the weights average to 1 over the responses of a group still running at each position
    wg, mg = w.view(2, G, T), mask.view(2, G, T)
    assert torch.allclose(wg.sum(1), mg.sum(1), atol=1e-12)
    assert torch.equal(S.entropy_weighted_advantages(adv, ent, mask, group_size=G, strength=0.0), adv)
    # all-zero entropies at a position: weight 1, no NaN
    z = S.entropy_weighted_advantages(adv, torch.zeros_like(ent), mask, group_size=G)
    assert torch.equal(z, adv)
    # padding may hold NaN in the entropy without reaching the result
    ent_nan = torch.where(mask > 0, ent, torch.full_like(ent, float("nan")))
    assert torch.equal(S.entropy_weighted_advantages(adv, ent_nan, mask, group_size=G),
                       S.entropy_weighted_advantages(adv, ent, mask, group_size=G))


@pytest.mark.parametrize("dtype", [torch.float32, F64, torch.bfloat16])
def test_dtypes(dtype):
    g = torch.Generator().manual_seed(6)
    R = torch.randint(0, 2, (8,), generator=g).to(dtype)
    R[0], R[1] = 1, 0
    mask = _ragged(8, 5, 2).to(dtype)
    tol = 5e-2 if dtype == torch.bfloat16 else 1e-5
    cases = [(A.opo_advantage, dict(mask=mask)), (A.gpg_advantage, {}), (A.grpo_passk_advantage, {}),
             (A.passk_analytic_advantage, dict(k=2)), (A.pkpo_advantage, dict(k=2)),
             (A.remax_advantage, dict(reward_baselines=torch.full((2,), 0.5, dtype=dtype))),
             (A.reinforce_plus_plus_advantage, dict(mask=mask))]
    for fn, kw in cases:
        out = fn(R, 4, **kw)
        assert out.dtype == dtype, fn.__name__
        ref = fn(R.double(), 4, **{k: (v.double() if torch.is_tensor(v) else v) for k, v in kw.items()})
        assert torch.allclose(out.double(), ref, atol=tol, rtol=tol), fn.__name__
    ent = torch.rand(8, 5, generator=g).to(dtype)
    adv = A.broadcast_to_tokens(R, mask)
    for name in ("top_entropy", "low_entropy", "entropy_weighted"):
        assert registry.resolve("token_credit", name)(adv, ent, mask, group_size=4).dtype == dtype
    r, m = S.overlong_soft(R, mask, truncated=torch.zeros(8, dtype=torch.bool), max_tokens=5)
    assert r.dtype == dtype and m.dtype == dtype


def test_meta_device():
    R = torch.empty(8, device="meta")
    mask = torch.empty(8, 5, device="meta")
    for fn, kw in [(A.opo_advantage, dict(mask=mask)), (A.gpg_advantage, {}), (A.grpo_passk_advantage, {}),
                   (A.passk_analytic_advantage, dict(k=2)), (A.pkpo_advantage, dict(k=2)),
                   (A.remax_advantage, dict(reward_baselines=torch.empty(2, device="meta")))]:
        out = fn(R, 4, **kw)
        assert out.device.type == "meta" and out.shape == (8,), fn.__name__
    out = A.reinforce_plus_plus_advantage(R, 4, mask=mask)
    assert out.device.type == "meta" and out.shape == (8, 5)
    ent = torch.empty(8, 5, device="meta")
    for name in ("top_entropy", "low_entropy", "entropy_weighted"):
        assert registry.resolve("token_credit", name)(mask, ent, mask, group_size=4).device.type == "meta"
    r, m = S.overlong_mask(R, mask, truncated=torch.empty(8, dtype=torch.bool, device="meta"), max_tokens=5)
    assert r.device.type == m.device.type == "meta"


def test_bad_inputs():
    R = torch.tensor([1.0, 0.0, 1.0, 0.0])
    mask = torch.ones(4, 3)
    with pytest.raises(ValueError, match="reward_baselines"):
        A.remax_advantage(R, 2, reward_baselines=torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        A.remax_advantage(R, 2, reward_baselines=torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="rows"):
        A.opo_advantage(R, 2, mask=torch.ones(3, 3))
    with pytest.raises(ValueError, match="0/1 mask"):
        A.opo_advantage(R, 2, mask=torch.full((4, 3), 0.5))
    with pytest.raises(ValueError, match="no response tokens"):
        A.opo_advantage(R, 2, mask=torch.tensor([[0.0] * 3, [0.0] * 3, [1.0] * 3, [1.0] * 3]))
    with pytest.raises(ValueError, match="alpha"):
        A.gpg_advantage(R, 2, alpha="everything")
    with pytest.raises(ValueError, match="at least 2"):
        A.grpo_passk_advantage(R, 1)
    with pytest.raises(ValueError, match="0/1"):
        A.pkpo_advantage(torch.tensor([0.5, 1.0]), 2, k=1)
    with pytest.raises(ValueError, match="k: expected"):
        A.pkpo_advantage(R, 2, k=2)                      # the leave-one-out baseline needs k < G
    with pytest.raises(ValueError, match="k: expected"):
        A.passk_analytic_advantage(R, 2, k=3)
    with pytest.raises(ValueError, match="baseline"):
        A.pkpo_advantage(R, 2, k=1, baseline="mean")
    with pytest.raises(ValueError, match="at least 2 response tokens"):
        A.reinforce_plus_plus_advantage(torch.tensor([1.0]), 1, mask=torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="empty row"):
        A.reinforce_plus_plus_advantage(R, 2, mask=torch.tensor([[0.0] * 3] + [[1.0] * 3] * 3))
    with pytest.raises(ValueError, match="gamma"):
        A.reinforce_plus_plus_advantage(R, 2, mask=mask, gamma=1.5)
    with pytest.raises(ValueError, match="token_rewards"):
        A.reinforce_plus_plus_advantage(R, 2, mask=mask, token_rewards=torch.zeros(4, 2))
    with pytest.raises(ValueError, match="takes no option"):
        A.compute_advantages(R, "reinforce_plus_plus", group_size=2, mask=mask, std_eps=1e-3)
    with pytest.raises(ValueError, match="cache"):
        S.soft_overlong_penalty(torch.arange(3), 4, 5)
    with pytest.raises(ValueError, match="negative"):
        S.soft_overlong_penalty(torch.tensor([-1]), 4, 2)
    with pytest.raises(ValueError, match="truncated"):
        S.overlong_mask(R, mask, truncated=torch.zeros(4), max_tokens=3)
    with pytest.raises(ValueError, match="truncated"):
        S.overlong_mask(R, mask, truncated=torch.zeros(3, dtype=torch.bool), max_tokens=3)
    with pytest.raises(ValueError, match="value"):
        S.overlong_punish(R, mask, truncated=torch.zeros(4, dtype=torch.bool), max_tokens=3, value=float("inf"))
    with pytest.raises(ValueError, match="eos_id"):
        S.truncated_responses(torch.zeros(4, 3, dtype=torch.long), mask, eos_id=-1)
    ent = torch.rand(4, 3)
    with pytest.raises(ValueError, match="top_fraction"):
        S.high_entropy_mask(ent, mask, 1.5)
    with pytest.raises(ValueError, match="negative"):
        S.top_entropy_advantages(mask, -ent, mask, group_size=2)
    with pytest.raises(ValueError, match="NaN"):
        S.entropy_weighted_advantages(mask, ent * float("nan"), mask, group_size=2)
    with pytest.raises(ValueError, match="divisor"):
        S.entropy_weighted_advantages(mask, ent, mask, group_size=3)
    with pytest.raises(ValueError, match="strength"):
        S.entropy_weighted_advantages(mask, ent, mask, group_size=2, strength=2.0)
    with pytest.raises(ValueError, match="all zero"):
        S.top_entropy_advantages(mask, ent, torch.zeros(4, 3), group_size=2)


# -- exact tools on the enumerable worlds ------------------------------------------------------
@pytest.fixture(scope="module")
def lm():
    space = SeqSpace(tokens=("a", "b", "c"), max_len=4, rho=torch.tensor([0.5, 0.3, 0.2], dtype=F64))
    policy = MLPPolicy(space, hidden=6)
    theta = policy.init(pg.make_generator(0), scale=0.7)
    reward = contains(space, "b")
    seqs = space.enumerate()
    return space, policy, theta, reward, seqs, reward.of(seqs).to(F64)


def test_group_update_identities(lm):
    _space, policy, theta, reward, seqs, R = lm
    gJ = exact_gradient(policy, theta, reward, seqs)
    for G in (2, 4):
        up = {a: X.exact_group_update(policy, theta, R, G, seqs=seqs, advantage=a, aggregation="seq_mean_token_sum")
              for a in ("plain", "rloo", "grpo_mean")}
        assert (up["plain"] - gJ).abs().max() < 1e-12 and (up["rloo"] - gJ).abs().max() < 1e-12
        assert (up["grpo_mean"] - (G - 1) / G * gJ).abs().max() < 1e-12
        for agg in ("seq_mean_token_mean", "seq_mean_token_sum", "constant"):
            w_closed = X.group_update_weights(policy, theta, R, G, seqs=seqs, advantage="grpo_mean", aggregation=agg)
            w_binary = X.group_update_weights(policy, theta, R, G, seqs=seqs, advantage="grpo_mean", aggregation=agg,
                                              std_eps=1e-6)                      # forces the conditioning on K
            assert (w_closed - w_binary).abs().max() < 1e-12


def test_token_mean_weights_match_monte_carlo():
    space = answers.answer_space(5)
    policy, theta = answers.answer_policy(space, p_correct=0.4, stop=0.3)
    seqs = space.enumerate()
    R = answers.answer_reward(space).of(seqs).to(F64)
    G, M = 3, 2
    w = X.group_update_weights(policy, theta, R, G, seqs=seqs, advantage="grpo", aggregation="token_mean", n_groups=M)
    q = sequence_probs(policy, theta, seqs).detach()
    # Monte Carlo: E[Σ_i Â_i 1[y_i = n] / Σ_j L_j] over batches of M groups = q_n w_n
    n_batch = 40_000
    idx = torch.multinomial(q, n_batch * M * G, replacement=True, generator=pg.make_generator(1)).view(n_batch, M, G)
    r, L = R[idx], seqs.mask.sum(-1)[idx]
    adv = A.grpo_advantage(r.reshape(-1), G).view(n_batch, M, G)
    contrib = (adv / L.sum((1, 2), keepdim=True)).reshape(n_batch, -1)
    onehot = torch.zeros(n_batch, len(seqs), dtype=F64).scatter_add_(1, idx.reshape(n_batch, -1), contrib)
    st = EstimatorStats(onehot)
    assert st.max_abs_z(q * w) < 4.5
    assert not st.is_unbiased(q * X.group_update_weights(policy, theta, R, G, seqs=seqs, advantage="grpo",
                                                         aggregation="token_mean", n_groups=1), z=8)


def test_answer_world_and_length_bias():
    space = answers.answer_space(6)
    policy, theta = answers.answer_policy(space, p_correct=0.5, first_stop=1e-4)
    seqs = space.enumerate()
    reward = answers.answer_reward(space)
    R = reward.of(seqs).to(F64)
    st = answers.answer_stats(space, sequence_probs(policy, theta, seqs).detach(), reward, seqs)
    assert abs(float(st["p_correct"]) - 0.5 * (1 - 1e-4)) < 1e-12
    assert abs(float(st["length_correct"]) - float(st["length_wrong"])) < 0.02
    assert torch.allclose(st["length_pmf"].sum(-1), torch.ones(2, dtype=F64))
    head = answers.answer_head(policy)
    assert int(head.sum()) == space.V
    g_dr = X.exact_group_update(policy, theta, R, 4, seqs=seqs, advantage="grpo_mean", aggregation="constant")
    g_gr = X.exact_group_update(policy, theta, R, 4, seqs=seqs, advantage="grpo", aggregation="seq_mean_token_mean")
    assert g_dr[~head].abs().max() < 1e-15 and g_gr[~head].norm() > 0.05 * g_gr.norm()
    path = X.exact_group_training(policy, theta, R, 4, steps=3, lr=1.0, frozen=head, seqs=seqs,
                                  advantage="grpo", aggregation="seq_mean_token_mean")
    assert path.shape == (4, policy.n_params) and torch.equal(path[:, head], theta[head].expand(4, -1))
    # the tabular fast path equals autograd
    w = X.group_update_weights(policy, theta, R, 4, seqs=seqs, advantage="grpo", aggregation="token_mean")
    ref = pg.exact.seqlm.exact_expected_gradient(
        policy, theta, lambda t, sq: w * pg.exact.seqlm.sequence_logprobs(policy, t, sq), seqs)
    assert (X.exact_group_update(policy, theta, R, 4, seqs=seqs, weights=w) - ref).abs().max() < 1e-15


def test_prefix_values_greedy_and_scores(lm):
    _space, policy, theta, _reward, seqs, R = lm
    V = X.prefix_values(policy, theta, R, seqs)
    q = sequence_probs(policy, theta, seqs).detach()
    # V(x) is E[R | x]; a process advantage sums to R − V(x) over the response
    Jx = (q.view(3, -1) * R.view(3, -1)).sum(1)
    assert (V[:, 0] - Jx[seqs.x]).abs().max() < 1e-12
    adv = (V[:, 1:] - V[:, :-1]) * seqs.mask
    assert (adv.sum(-1) - (R - V[:, 0])).abs().max() < 1e-12
    # brute force for one prefix: responses of prompt 0 starting with "b"
    sel = (seqs.x == 0) & (seqs.tokens[:, 0] == 1)
    assert abs(float((q[sel] * R[sel]).sum() / q[sel].sum()) - float(V[sel][0, 1])) < 1e-12
    gr = X.greedy_responses(policy, theta, seqs)
    logits = policy.logits(theta, seqs.x[gr], seqs.tokens[gr])
    assert bool(((logits.argmax(-1) == seqs.tokens[gr]) | (seqs.mask[gr] == 0)).all())
    sc = X.token_scores(policy, theta, seqs)
    assert (sc.sum(1) - pg.exact.seqlm.per_sequence_estimates(policy, theta, seqs, torch.ones_like(seqs.mask))).abs().max() < 1e-12


def test_sampled_group_estimates_are_unbiased(lm):
    _space, policy, theta, reward, seqs, R = lm
    gJ = exact_gradient(policy, theta, reward, seqs)
    est = X.sampled_group_estimates(policy, theta, R, ["plain", "rloo", "remax", ("gm", "grpo_mean", {}),
                                                       "reinforce_plus_plus"],
                                    n_batches=600, prompts_per_batch=2, group_size=4, generator=pg.make_generator(3),
                                    seqs=seqs)
    for name in ("plain", "rloo", "remax"):
        assert EstimatorStats(est[name]).is_unbiased(gJ, z=4.5), name
    assert EstimatorStats(est["gm"]).is_unbiased(0.75 * gJ, z=4.5)
    assert est["reinforce_plus_plus"].shape == (600, policy.n_params)


def test_exact_tool_errors(lm):
    _space, policy, theta, _reward, seqs, R = lm
    with pytest.raises(ValueError, match="aggregation"):
        X.group_update_weights(policy, theta, R, 4, seqs=seqs, aggregation="sum")
    with pytest.raises(ValueError, match="0/1"):
        X.group_update_weights(policy, theta, R * 0.5, 4, seqs=seqs, advantage="grpo")
    with pytest.raises(ValueError, match="one prompt"):
        X.group_update_weights(policy, theta, R, 4, seqs=seqs, advantage="grpo", aggregation="token_mean")
    with pytest.raises(ValueError, match="lengths"):
        X.group_update_weights(policy, theta, R, 4, seqs=seqs, advantage="opo")
    with pytest.raises(ValueError, match="loss_mask"):
        X.group_update_weights(policy, theta, R, 4, seqs=seqs, loss_mask=torch.ones_like(R))
    with pytest.raises(ValueError, match="rewards"):
        X.group_update_weights(policy, theta, R[:5], 4, seqs=seqs)
    with pytest.raises(ValueError, match="lr"):
        X.exact_group_training(policy, theta, R, 4, steps=1, lr=-1.0, seqs=seqs)


# -- the trainer hooks and the map --------------------------------------------------------------
def test_grpo_train_hooks():
    from pgbook.train.grpo import grpo_train
    from pgbook.worlds.gpt import GPT
    from pgbook.worlds.tasks import Reverse, policy_config

    task = Reverse(max_len=3)
    for kw in [dict(method="DAPO (overlong filtering)"), dict(method="DAPO (soft overlong penalty)"),
               dict(method="GRPO", shaping=partial(S.overlong_soft, cache=2)),
               dict(method="Forking tokens (80/20)"), dict(method="GTPO (entropy-weighted)"),
               dict(method="PKPO", advantage_options={"k": 2}), dict(method="OPO"), dict(method="GPG"),
               dict(method="REINFORCE++", beta=0.05), dict(method="GRPO pass@k (verl)")]:
        model = GPT(policy_config(task), pg.make_generator(0))
        h = grpo_train(model, task, steps=2, prompts_per_step=2, group_size=4, generator=pg.make_generator(1),
                       progress=False, **kw)
        assert h.steps == 2 and bool(torch.isfinite(h.loss).all()), kw
    model = GPT(policy_config(task), pg.make_generator(0))
    with pytest.raises(ValueError, match="shaping"):
        grpo_train(model, task, steps=1, prompts_per_step=2, group_size=2, generator=pg.make_generator(1),
                   progress=False, shaping="overlong_everything")
    with pytest.raises(ValueError, match="advantage_options"):
        grpo_train(model, task, steps=1, prompts_per_step=2, group_size=2, generator=pg.make_generator(1),
                   progress=False, advantage_options={"std_eps": 0.1})


def test_chapter_13_methods_on_the_map():
    assert pg.method("DAPO (overlong filtering)").sides() == {"trajectory"}
    assert pg.method("OPO").sides() == {"reward", "trajectory"}
    for name in ("REINFORCE++", "ReMax", "DAPO (token-level loss)", "DAPO (soft overlong penalty)", "PKPO",
                 "Pass@k training", "GRPO pass@k (verl)", "Forking tokens (80/20)", "GTPO (entropy-weighted)"):
        assert pg.method(name).sides() == {"reward"}, name
        assert pg.method(name).chapter == "13" and pg.method(name).reference


def test_small_helpers():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]])
    assert S.response_lengths(mask).tolist() == [2, 3, 0]
    with pytest.raises(ValueError, match="0/1"):
        S.response_lengths(torch.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="k"):
        X.pass_at_k(torch.tensor([0.5]), 0)
    with pytest.raises(ValueError, match="floating"):
        X.pass_at_k_weight(torch.tensor([1]), 2)
    assert torch.equal(A.comb_ratio(torch.tensor([2.0, 5.0]), torch.tensor([5.0, 5.0]), 3),
                       torch.tensor([0.0, 1.0]))
    space = answers.answer_space(3)
    policy = pg.worlds.seqlm.TabularPolicy(space)
    seqs = space.enumerate()
    ids = X.prefix_ids(policy, seqs)
    # equal ids ⇔ equal (prompt, prefix); ended responses get ids of their own
    L = seqs.mask.sum(-1).long()
    for t in range(space.T + 1):
        for i in range(len(seqs)):
            for j in range(len(seqs)):
                same = bool(L[i] > t and L[j] > t and torch.equal(seqs.tokens[i, :t], seqs.tokens[j, :t]))
                assert (ids[i, t] == ids[j, t]).item() == (same or (i == j)), (i, j, t)
    with pytest.raises(ValueError, match="answer world"):
        answers.answer_reward(SeqSpace(tokens=("x", "y"), max_len=3))
    with pytest.raises(ValueError, match="max_len"):
        answers.answer_space(1)
    with pytest.raises(ValueError, match="p_correct"):
        answers.answer_policy(space, p_correct=1.0)
