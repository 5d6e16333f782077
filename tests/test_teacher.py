"""Teacher signals (pgbook.reward.teacher), distillation losses (pgbook.trajectory.distill),
teachers (pgbook.worlds.teachers) and the OPD methods (chapter 16)."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import pgbook as pg
from pgbook import registry
from pgbook.exact.seqlm import (
    exact_estimator_mean,
    exact_expected_gradient,
    exact_forward_kl,
    exact_J,
    exact_kl,
    joint_probs,
)
from pgbook.exact.stats import relative_error
from pgbook.methods import method_loss, policy_loss
from pgbook.reward.advantages import broadcast_to_tokens, compute_advantages, grpo_advantage
from pgbook.reward.advantages import reward_to_go as rtg
from pgbook.reward.teacher import (
    discounted_reward_to_go,
    mix_teacher,
    opd_advantages,
    teacher_advantages,
    teacher_gate,
    teacher_token_rewards,
)
from pgbook.trajectory.distill import (
    distill_loss,
    generalized_jsd_loss,
    minillm_loss,
    token_divergence,
)
from pgbook.worlds.seqlm import MLPPolicy, SeqSpace, equals_target
from pgbook.worlds.teachers import table_policy


def _batch(seed=0, dtype=torch.float64, B=4, T=6):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([2, 6, 4, 1])[:B]
    mask = (torch.arange(T) < lengths[:, None]).to(dtype)
    lp = -torch.rand(B, T, generator=g, dtype=torch.float64).to(dtype) * 2 - 0.05
    lt = -torch.rand(B, T, generator=g, dtype=torch.float64).to(dtype) * 3 - 0.05
    pad = torch.full_like(lp, -torch.inf)
    return torch.where(mask > 0, lp, pad), torch.where(mask > 0, lt, pad), mask


# -- the teacher's per-token reward -------------------------------------------------------------
def test_token_rewards_are_the_masked_log_ratio_and_a_number():
    lp, lt, mask = _batch()
    lp.requires_grad_(True)
    r = teacher_token_rewards(lp, lt, mask)
    want = torch.where(mask > 0, lt - lp.detach(), torch.zeros_like(lt))
    torch.testing.assert_close(r, want, rtol=0, atol=0)
    assert not r.requires_grad and bool(torch.isfinite(r).all())       # −inf padding ignored
    # summed over a response: log π_T(y) − log π_θ(y)
    torch.testing.assert_close(r.sum(-1), (want).sum(-1))


def test_tinker_recipe_transcribed():
    """tinker-cookbook distillation/train_on_policy.py, incorporate_kl_penalty: with
    kl_discount_factor = 0 the advantages gain −coef·mask·(sampled − teacher log-probs);
    with γ > 0, discounted_future_sum_vectorized(−coef·mask·reverse_kl, γ) (rl/metrics.py)."""
    lp, lt, mask = _batch(1)
    coef = 0.7
    reverse_kl = torch.where(mask > 0, lp - lt, torch.zeros_like(lp))  # (sampled − teacher)·mask
    adv0 = torch.zeros_like(lp)
    tinker = adv0 + (-coef * mask * reverse_kl)
    mine = mix_teacher(adv0, teacher_advantages(lp, lt, mask), mask, coef=coef)
    torch.testing.assert_close(mine, tinker, rtol=0, atol=1e-15)

    def discounted_future_sum(x, gamma):                   # Tinker's loop, one row
        out, running = torch.empty_like(x), torch.zeros((), dtype=x.dtype)
        for t in range(len(x) - 1, -1, -1):
            running = x[t] + gamma * running
            out[t] = running
        return out

    for gamma in (0.0, 0.5, 0.9, 1.0):
        want = torch.stack([discounted_future_sum(-coef * mask[i] * reverse_kl[i], gamma)
                            for i in range(lp.shape[0])])
        got = coef * teacher_advantages(lp, lt, mask, discount=gamma)
        torch.testing.assert_close(got * mask, want * mask, rtol=0, atol=1e-12)


def test_discounted_reward_to_go_limits_and_bad_input():
    r = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.float64)
    torch.testing.assert_close(discounted_reward_to_go(r, mask, 0.0), r * mask)
    torch.testing.assert_close(discounted_reward_to_go(r, mask, 1.0), rtg(r, mask))
    for bad in (-0.1, 1.5, float("nan"), "x"):
        with pytest.raises(ValueError, match="discount"):
            discounted_reward_to_go(r, mask, bad)
    with pytest.raises(ValueError, match="mask"):
        discounted_reward_to_go(r, mask[:, :4], 0.5)
    with pytest.raises(ValueError, match="mask"):
        discounted_reward_to_go(r, mask * 2, 0.5)


def test_signals_are_registered_on_the_reward_side():
    for name in ("reverse_kl", "reverse_kl_to_go"):
        comp = registry.get("teacher", name)
        assert comp.side == "reward" and comp.form == "token"
    lp, lt, mask = _batch(3)
    torch.testing.assert_close(registry.resolve("teacher", "reverse_kl_to_go", "token")(lp, lt, mask),
                               teacher_advantages(lp, lt, mask, discount=1.0))
    for name in ("always", "zero_variance", "all_fail"):
        assert registry.get("teacher_gate", name).side == "reward"


@pytest.mark.parametrize("bad", [
    lambda lp, lt, m: (lp, lt[:, :3], m),                                   # shape
    lambda lp, lt, m: (lp, lt, m[:, :3]),                                   # mask shape
    lambda lp, lt, m: (lp, torch.where(m > 0, torch.nan, lt), m),          # NaN on the response
    lambda lp, lt, m: (lp, lt, m * 0),                                      # all-zero mask
    lambda lp, lt, m: (lp, lt, m * 0.5),                                    # not 0/1
    lambda lp, lt, m: (lp, lt.to("meta"), m),                               # mixed devices
    lambda lp, lt, m: (lp.long(), lt, m),                                   # not floating
])
def test_token_rewards_bad_input(bad):
    with pytest.raises(ValueError):
        teacher_token_rewards(*bad(*_batch()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtypes(dtype):
    lp, lt, mask = _batch(4, dtype)
    for gamma in (0.0, 0.5, 1.0):
        a = teacher_advantages(lp, lt, mask, discount=gamma)
        assert a.dtype == dtype and bool(torch.isfinite(a).all())
        ref = teacher_advantages(lp.double(), lt.double(), mask.double(), discount=gamma)
        tol = 0.1 if dtype == torch.bfloat16 else 1e-5
        torch.testing.assert_close(a.double(), ref, rtol=tol, atol=tol)
    mixed = mix_teacher(torch.ones_like(lp), a, mask, coef=0.5)
    assert mixed.dtype == dtype


def test_meta_device_shapes():
    lp, lt, mask = (x.to("meta") for x in _batch())
    assert teacher_advantages(lp, lt, mask, discount=0.5).shape == lp.shape
    assert mix_teacher(lp, lt, mask, coef=1.0, gate=torch.ones(4, dtype=torch.bool,
                                                             device="meta")).shape == lp.shape
    s = torch.randn(2, 3, 5, device="meta")
    assert token_divergence(s, s, beta=0.3).shape == (2, 3)


# -- gates and mixing -------------------------------------------------------------------------
def test_gates_on_a_hand_example():
    R = torch.tensor([0., 0., 0., 0., 0., 1., 1., 1., 0.5, 0.5, 0.5, 0.5])
    G = 4
    assert teacher_gate(R, G, "always").all()
    assert teacher_gate(R, G, "zero_variance").tolist() == [True] * 4 + [False] * 4 + [True] * 4
    assert teacher_gate(R, G, "all_fail").tolist() == [True] * 4 + [False] * 8
    # where the gate is on, GRPO has no signal: Â = 0 on every zero-variance group
    zv = teacher_gate(R, G, "zero_variance")
    assert bool((grpo_advantage(R, G)[zv] == 0).all())
    with pytest.raises(ValueError, match="gate"):
        teacher_gate(R, G, "sometimes")
    with pytest.raises(ValueError, match="group_size"):
        teacher_gate(R, 5, "all_fail")


def test_mix_teacher_formula_and_bad_input():
    lp, lt, mask = _batch(5)
    R = torch.tensor([0., 0., 1., 0.], dtype=torch.float64)
    adv = broadcast_to_tokens(grpo_advantage(R, 2), mask)
    ta = teacher_advantages(lp, lt, mask)
    g = teacher_gate(R, 2, "all_fail")                              # first group only
    got = mix_teacher(adv, ta, mask, coef=0.3, gate=g)
    want = (adv + 0.3 * g[:, None].double() * torch.where(mask > 0, ta, 0.0)) * mask
    torch.testing.assert_close(got, want, rtol=0, atol=1e-15)
    torch.testing.assert_close(opd_advantages(grpo_advantage(R, 2), lp, lt, mask, R, 2, coef=0.3,
                                              gate="all_fail"), want, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="coef"):
        mix_teacher(adv, ta, mask, coef=-1.0)
    with pytest.raises(ValueError, match="gate"):
        mix_teacher(adv, ta, mask, coef=1.0, gate=g[:3])
    with pytest.raises(ValueError, match="gate"):
        mix_teacher(adv, ta, mask, coef=1.0, gate=torch.tensor([0.5, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="rewards"):
        opd_advantages(grpo_advantage(R, 2), lp, lt, mask, coef=1.0, gate="all_fail")
    with pytest.raises(ValueError, match="signal"):
        opd_advantages(grpo_advantage(R, 2), lp, lt, mask, signal="forward_kl")
    with pytest.raises(ValueError, match="advantages"):
        opd_advantages(torch.zeros(3), lp, lt, mask)


def test_zero_advantage_is_a_group_estimator():
    R = torch.tensor([0., 1., 1., 0.])
    assert torch.equal(compute_advantages(R, "zero", group_size=2), torch.zeros(4))
    with pytest.raises(ValueError, match="group_size"):
        compute_advantages(R, "zero", group_size=3)


# -- exact on the enumerable LM -------------------------------------------------------------------
@pytest.fixture(scope="module")
def world():
    space = SeqSpace(tokens=("a", "b", "c"), max_len=3,
                     rho=torch.tensor([0.6, 0.4], dtype=torch.float64))
    policy = MLPPolicy(space, hidden=6)
    seqs = space.enumerate()
    theta = policy.init(pg.make_generator(0), scale=0.7)
    tpol, tth = table_policy(space, ["ab", "c"], 0.8)
    return space, policy, seqs, theta, tpol, tth


def test_reward_to_go_is_the_exact_reverse_kl_gradient_and_discount_zero_is_not(world):
    _space, policy, seqs, theta, tpol, tth = world
    lp = policy.token_logprobs(theta, seqs.x, seqs.tokens)
    lt = tpol.token_logprobs(tth, seqs.x, seqs.tokens)
    q = joint_probs(policy, theta, seqs)
    r = teacher_token_rewards(lp, lt, seqs.mask)
    kl = exact_kl(policy, theta, tth, ref_policy=tpol)
    assert abs(float(q @ r.sum(-1)) + float(kl)) < 1e-12            # E Σ r_t = −KL
    grad_kl = torch.func.grad(lambda t: exact_kl(policy, t, tth, ref_policy=tpol))(theta)
    g1 = exact_estimator_mean(policy, theta, teacher_advantages(lp, lt, seqs.mask, discount=1.0), seqs)
    assert float((g1 + grad_kl).norm()) < 1e-12
    g0 = exact_estimator_mean(policy, theta, teacher_advantages(lp, lt, seqs.mask), seqs)
    assert float(relative_error(g0, -grad_kl)) > 0.05
    # discount 0 = minus the gradient of the per-token full-vocabulary reverse KL, prefixes frozen
    tl = tpol.logits(tth, seqs.x, seqs.tokens)
    frozen = exact_expected_gradient(policy, theta, lambda t, sq: (token_divergence(
        policy.logits(t, sq.x, sq.tokens), tl, beta=1.0) * sq.mask).sum(-1), seqs)
    assert float((g0 + frozen).norm()) < 1e-12
    # MiniLLM's decomposition puts the future tokens back: exactly ∇KL
    gm = exact_expected_gradient(policy, theta, lambda t, sq: minillm_loss(
        policy.logits(t, sq.x, sq.tokens), tl, sq.tokens, sq.mask, reduction="none"), seqs)
    assert float((gm - grad_kl).norm()) < 1e-12
    assert float(relative_error(exact_expected_gradient(policy, theta, lambda t, sq: minillm_loss(
        policy.logits(t, sq.x, sq.tokens), tl, sq.tokens, sq.mask, length_normalized=True,
        reduction="none"), seqs), grad_kl)) > 1e-3


def test_forward_kl_on_teacher_samples_is_the_sequence_forward_kl(world):
    """Supervised KD (the off-policy end): Σ_t KL(π_T(·|h_t)‖π_θ(·|h_t)) on prefixes drawn
    from π_T has exactly the gradient of KL(π_T‖π_θ) of whole responses."""
    _space, policy, seqs, theta, tpol, tth = world
    tl = tpol.logits(tth, seqs.x, seqs.tokens)
    with torch.no_grad():
        q_t = joint_probs(tpol, tth, seqs)

    def on_teacher(t):
        d = token_divergence(policy.logits(t, seqs.x, seqs.tokens), tl, beta=0.0)
        return q_t @ (d * seqs.mask).sum(-1)

    g = torch.func.grad(on_teacher)(theta)
    want = torch.func.grad(lambda t: exact_forward_kl(policy, t, tth, ref_policy=tpol))(theta)
    assert float((g - want).norm()) < 1e-12


# -- distillation losses ------------------------------------------------------------------------
def _trl_generalized_jsd(student_logits, teacher_logits, labels=None, beta=0.5, temperature=1.0):
    """TRL, trl/experimental/gkd/gkd_trainer.py, GKDTrainer.generalized_jsd_loss
    (reduction="batchmean"), transcribed."""
    student_logits = student_logits / temperature
    teacher_logits = teacher_logits / temperature
    s = F.log_softmax(student_logits, dim=-1)
    t = F.log_softmax(teacher_logits, dim=-1)
    if beta == 0:
        jsd = F.kl_div(s, t, reduction="none", log_target=True)
    elif beta == 1:
        jsd = F.kl_div(t, s, reduction="none", log_target=True)
    else:
        b = torch.tensor(beta, dtype=s.dtype)
        mix = torch.logsumexp(torch.stack([s + torch.log1p(-b), t + torch.log(b)]), dim=0)
        jsd = b * F.kl_div(mix, t, reduction="none", log_target=True) + \
            (1 - b) * F.kl_div(mix, s, reduction="none", log_target=True)
    if labels is not None:
        mask = labels != -100
        jsd = jsd[mask]
    denom = mask.sum() if labels is not None else jsd.size(0)
    return jsd.sum() / denom


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_generalized_jsd_equals_trl(beta, temperature):
    g = torch.Generator().manual_seed(7)
    s = torch.randn(3, 5, 7, generator=g, dtype=torch.float64)
    t = torch.randn(3, 5, 7, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(7, (3, 5), generator=g)
    labels[0, 3:] = -100
    labels[2, 1:] = -100
    mask = labels != -100
    want = _trl_generalized_jsd(s, t, labels, beta, temperature)
    got = generalized_jsd_loss(s, t, mask, beta=beta, temperature=temperature)
    assert abs(float(got) - float(want)) < 1e-12
    per = token_divergence(s, t, beta=beta, temperature=temperature)
    assert bool((per >= -1e-12).all())


def test_divergences_named_and_identities():
    g = torch.Generator().manual_seed(8)
    s = torch.randn(2, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 4, 6, generator=g, dtype=torch.float64)
    ps, pt = torch.softmax(s, -1), torch.softmax(t, -1)
    fwd = (pt * (pt.log() - ps.log())).sum(-1)
    rev = (ps * (ps.log() - pt.log())).sum(-1)
    torch.testing.assert_close(registry.resolve("distill_loss", "forward_kl", "logits")(s, t), fwd)
    torch.testing.assert_close(registry.resolve("distill_loss", "reverse_kl", "logits")(s, t), rev)
    assert float(token_divergence(t, t, beta=0.5).abs().max()) < 1e-12
    mask = torch.ones(2, 4)
    torch.testing.assert_close(distill_loss(s, t, mask, "jsd"), generalized_jsd_loss(s, t, mask))
    (gs,) = torch.autograd.grad(distill_loss(s, t, mask, "reverse_kl"), s)
    assert bool(torch.isfinite(gs).all())
    with pytest.raises(ValueError, match="divergence"):
        distill_loss(s, t, mask, "tv")
    for name in ("forward_kl", "reverse_kl", "jsd"):
        assert registry.get("distill_loss", name).side == "trajectory"


def test_minillm_single_step_term_is_lmops_reg_loss():
    """LMOps minillm/minillm/losses.py, Loss._reg_loss: Σ (xent − s_ent)·mask / mask.sum(),
    xent = −Σ_v p_θ log p_T, s_ent = −Σ_v p_θ log p_θ (utils.get_x_entropy, get_entropy)."""
    g = torch.Generator().manual_seed(9)
    s = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    t = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.float64)
    ps = torch.softmax(s, -1)
    xent = -(ps * torch.log_softmax(t, -1)).sum(-1)
    s_ent = -(ps * torch.log_softmax(s, -1)).sum(-1)
    lmops = ((xent - s_ent) * mask).sum() / mask.sum()
    assert abs(float(distill_loss(s, t, mask, "reverse_kl")) - float(lmops)) < 1e-12


def test_distill_bad_input():
    s = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="teacher_logits"):
        token_divergence(s, torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="beta"):
        token_divergence(s, s, beta=1.5)
    with pytest.raises(ValueError, match="temperature"):
        token_divergence(s, s, temperature=0.0)
    with pytest.raises(ValueError, match="teacher_logits"):
        token_divergence(s, torch.full_like(s, torch.nan))
    with pytest.raises(ValueError, match="mask"):
        generalized_jsd_loss(s, s, torch.ones(2, 4))
    with pytest.raises(ValueError, match="mask"):
        generalized_jsd_loss(s, s, torch.zeros(2, 3))
    tok = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="reduction"):
        minillm_loss(s, s, tok, torch.ones(2, 3), reduction="sum")
    with pytest.raises(ValueError, match="tokens"):
        minillm_loss(s, s, tok[:, :2], torch.ones(2, 3))
    with pytest.raises(ValueError):
        token_divergence(s, s.to("meta"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_distill_dtypes_and_gradient_only_to_the_student(dtype):
    g = torch.Generator().manual_seed(10)
    s = torch.randn(2, 3, 5, generator=g).to(dtype).requires_grad_(True)
    t = torch.randn(2, 3, 5, generator=g).to(dtype).requires_grad_(True)
    tok = torch.randint(5, (2, 3), generator=g)
    mask = torch.ones(2, 3)
    for loss in (generalized_jsd_loss(s, t, mask), minillm_loss(s, t, tok, mask)):
        assert loss.dtype == dtype and bool(torch.isfinite(loss))
        gs, gt = torch.autograd.grad(loss, (s, t), allow_unused=True)
        assert gs is not None and bool(torch.isfinite(gs.float()).all())
        assert gt is None or float(gt.abs().max()) == 0.0


# -- teachers ---------------------------------------------------------------------------------
def test_table_policy_probabilities_and_success():
    space = SeqSpace(tokens=("a", "b", "c"), max_len=3, rho=torch.tensor([0.5, 0.5],
                                                                         dtype=torch.float64))
    tpol, tth = table_policy(space, ["ab", "abc"], [0.7, 0.9])
    seqs = space.enumerate()
    probs = torch.softmax(tpol.logits(tth, seqs.x, seqs.tokens), -1)
    torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs[..., 0]))
    assert set(torch.round(probs.max(-1).values, decimals=9).unique().tolist()) == {0.7, 0.9}
    J = exact_J(tpol, tth, equals_target(space, ["ab", "abc"]))
    assert abs(float(J) - (0.5 * 0.7 ** 3 + 0.5 * 0.9 ** 3)) < 1e-12
    with pytest.raises(ValueError, match="answers"):
        table_policy(space, ["ab"], 0.9)
    with pytest.raises(ValueError, match="confidence"):
        table_policy(space, ["ab", "c"], 0.2)
    with pytest.raises(ValueError, match="confidence"):
        table_policy(space, ["ab", "c"], [0.9, 0.9, 0.9])


def test_systematic_errors_teach_a_learnable_wrong_answer():
    from pgbook.worlds.tasks import Reverse
    from pgbook.worlds.teachers import SystematicErrors, teacher_wrong

    task = Reverse()
    prob = task.sample(512, pg.make_generator(0))
    wrong = teacher_wrong(task, prob.targets, "a")
    assert 0.12 < float(wrong.float().mean()) < 0.28                        # about a fifth
    data = SystematicErrors(task, "a")
    tgt = data.wrong_targets(prob)
    differs = (tgt != prob.targets).any(-1)
    assert torch.equal(differs, wrong)                                      # exactly there
    assert bool((tgt[wrong, 0] == task.tokenizer.stoi["b"]).all())           # a → b
    assert torch.equal(tgt[:, 1:], prob.targets[:, 1:])
    assert data.max_new_tokens == task.max_new_tokens and data.name == task.name
    seq, _ = data.demonstrations(prob)
    assert torch.equal(seq[:, task.prompt_len:], tgt)
    with pytest.raises(ValueError, match="wrong_first"):
        SystematicErrors(task, "z")
    with pytest.raises(ValueError, match="wrong_first"):
        SystematicErrors(task, "")
    with pytest.raises(ValueError, match="task"):
        SystematicErrors("reverse", "a")


def test_train_teacher_runs_and_learns_the_error():
    from pgbook.worlds.tasks import Reverse, success_rate
    from pgbook.worlds.teachers import train_teacher

    task = Reverse(min_len=1, max_len=2, letters="ab")
    good, losses = train_teacher(task, steps=60, progress=False, n_embd=16)
    assert losses.shape == (60,) and float(losses[-10:].mean()) < float(losses[:10].mean())
    assert success_rate(good, task, 256, pg.make_generator(1), temperature=0) > 0.9
    bad, _ = train_teacher(task, steps=60, progress=False, n_embd=16, wrong_first="a")
    assert success_rate(bad, task, 256, pg.make_generator(1), temperature=0) < 0.75
    with pytest.raises(ValueError, match="steps"):
        train_teacher(task, steps=0)


# -- the methods ----------------------------------------------------------------------------------
def test_opd_methods_sit_on_the_reward_side():
    for name in ("OPD", "GRPO-OPD", "GRPO-OPD (all-fail gate)"):
        m = registry.method(name)
        assert m.axis == "reward" and m.chapter == "16"
    assert registry.method("OPD").parent == "GRPO"


def test_method_loss_with_a_teacher():
    lp, lt, mask = _batch(11)
    lp = lp.clone().requires_grad_(True)
    R = torch.tensor([1., 0., 0., 0.], dtype=torch.float64)
    loss, _ = method_loss("GRPO-OPD", lp, None, R, mask, 2, teacher_logp=lt, teacher_coef=0.5)
    adv = mix_teacher(broadcast_to_tokens(grpo_advantage(R, 2), mask),
                      teacher_advantages(lp, lt, mask), mask, coef=0.5)
    want, _ = policy_loss(lp, None, adv, mask, loss="ppo_clip", aggregation="seq_mean_token_sum")
    assert abs(loss.item() - want.item()) < 1e-12
    gated, _ = method_loss("GRPO-OPD (all-fail gate)", lp, None, R, mask, 2, teacher_logp=lt)
    adv_g = mix_teacher(broadcast_to_tokens(grpo_advantage(R, 2), mask),
                        teacher_advantages(lp, lt, mask), mask, coef=1.0,
                        gate=torch.tensor([False, False, True, True]))
    want_g, _ = policy_loss(lp, None, adv_g, mask, loss="ppo_clip", aggregation="seq_mean_token_sum")
    assert abs(gated.item() - want_g.item()) < 1e-12
    with pytest.raises(ValueError, match="teacher_logp"):
        method_loss("OPD", lp, None, R, mask, 2)
    with pytest.raises(ValueError, match="teacher_logp"):
        method_loss("GRPO", lp, None, R, mask, 2, teacher_logp=lt)
    assert math.isfinite(method_loss("OPD", lp, None, R, mask, 2, teacher_logp=lt)[0].item())


# -- training on the enumerable LM ----------------------------------------------------------------
@pytest.fixture(scope="module")
def small_world():
    space = SeqSpace(tokens=("a", "b"), max_len=3, rho=torch.tensor([0.5, 0.5],
                                                                    dtype=torch.float64))
    targets = ["ab", "ba"]
    policy, theta = table_policy(space, ["bab", "aba"], 0.7)        # a student that starts wrong
    _, right = table_policy(space, targets, 0.8)
    _, wrong = table_policy(space, ["ab", "bb"], 0.8)
    return space, policy, theta, equals_target(space, targets), right, wrong


def test_seqlm_opd_train_records_exact_quantities(small_world):
    from pgbook.train.distill import seqlm_opd_train

    _space, policy, theta, reward, right, wrong = small_world
    h = seqlm_opd_train(policy, theta, reward, policy, torch.stack([right, wrong, right]),
                        steps=30, prompts_per_step=4, group_size=4, lr=0.1,
                        generator=pg.make_generator(0), coef=torch.tensor([1.0, 1.0, 0.1]),
                        use_verifier=torch.tensor([False, False, True]), eval_every=10)
    assert h.runs == 3 and h.step.tolist() == [0, 10, 20, 30]
    assert h.J.shape == (4, 3) and h.kl_teacher.shape == (4, 3)
    assert h.zero_variance.shape == (30, 3) and h.teacher_fraction.shape == (30, 3)
    J0 = float(exact_J(policy, theta, reward))
    torch.testing.assert_close(h.J[0], torch.full((3,), J0, dtype=torch.float64))
    for k, tt in enumerate((right, wrong, right)):
        kl0 = float(exact_kl(policy, theta, tt, ref_policy=policy))
        assert abs(float(h.kl_teacher[0, k]) - kl0) < 1e-10
    assert bool((h.kl_teacher[-1, :2] < 0.5 * h.kl_teacher[0, :2]).all())   # OPD: towards π_T
    assert float(h.J[-1, 2]) > 5 * J0                                        # the hybrid learns
    h2 = seqlm_opd_train(policy, theta, reward, policy, torch.stack([right, wrong, right]),
                         steps=30, prompts_per_step=4, group_size=4, lr=0.1,
                         generator=pg.make_generator(0), coef=torch.tensor([1.0, 1.0, 0.1]),
                         use_verifier=torch.tensor([False, False, True]), eval_every=10)
    assert torch.equal(h.J, h2.J)                                            # deterministic


def test_seqlm_opd_train_gate_and_bad_input(small_world):
    from pgbook.train.distill import seqlm_opd_train

    _space, policy, theta, reward, right, _wrong = small_world
    h = seqlm_opd_train(policy, theta, reward, policy, right, steps=5, prompts_per_step=4,
                        group_size=4, lr=0.1, generator=pg.make_generator(0), gate="all_fail",
                        runs=2)
    assert bool((h.teacher_fraction <= 1).all()) and h.runs == 2
    kw = dict(steps=2, prompts_per_step=2, group_size=2, lr=0.1, generator=pg.make_generator(0))
    for bad, match in [(dict(coef=-1.0), "coef"), (dict(coef=torch.ones(2), use_verifier=torch.ones(3)),
                                                    "runs"),
                       (dict(use_verifier=torch.tensor([0.5])), "use_verifier"),
                       (dict(discount=2.0), "discount"), (dict(gate="never"), "gate"),
                       (dict(runs=2, coef=torch.ones(3)), "runs")]:
        with pytest.raises(ValueError, match=match):
            seqlm_opd_train(policy, theta, reward, policy, right, **kw, **bad)
    with pytest.raises(ValueError, match="teacher_theta"):
        seqlm_opd_train(policy, theta, reward, policy, right[:-1], **kw)
    with pytest.raises(ValueError, match="group_size"):
        seqlm_opd_train(policy, theta, reward, policy, right, **{**kw, "group_size": 1})
    with pytest.raises(ValueError, match="theta"):
        seqlm_opd_train(policy, theta[:-1], reward, policy, right, **kw)


# -- grpo_train with a teacher ------------------------------------------------------------------
def _tiny():
    from pgbook.worlds import gpt, tasks

    task = tasks.Reverse(min_len=1, max_len=2, letters="ab")
    cfg = tasks.policy_config(task, n_embd=16)
    return task, gpt.GPT(cfg, pg.make_generator(0)), gpt.GPT(cfg, pg.make_generator(5))


def test_grpo_train_with_a_teacher_records_and_equals_the_step_by_hand():
    import copy

    from pgbook.train.grpo import grpo_train
    from pgbook.worlds import gpt

    task, model, teacher = _tiny()
    model, teacher = model.double(), teacher.double()
    m1, m2 = copy.deepcopy(model), copy.deepcopy(model)
    h = grpo_train(m1, task, steps=1, prompts_per_step=4, group_size=4,
                   generator=pg.make_generator(1), method="GRPO-OPD", teacher=teacher,
                   teacher_coef=0.3, lr=1e-2, progress=False, partial_reward=True)
    assert h.kl_teacher.shape == (1,) and h.teacher_fraction.tolist() == [1.0]
    assert h.config["teacher_signal"] == "reverse_kl" and h.config["teacher_coef"] == 0.3
    gen = pg.make_generator(1)
    prob = task.sample(4, gen).repeat_interleave(4)
    s = gpt.sample(m2, prob.prompts, task.max_new_tokens, gen)
    R = task.reward(s.tokens, prob.targets, partial=True, dtype=torch.float64)
    with torch.no_grad():
        old = gpt.logprobs(m2, s.tokens)
        lt = gpt.logprobs(teacher, s.tokens)
    opt = torch.optim.AdamW(m2.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.0)
    loss, _ = method_loss("GRPO-OPD", gpt.logprobs(m2, s.tokens), old, R, s.mask, 4,
                          teacher_logp=lt, teacher_coef=0.3)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(m2.parameters(), 1.0)
    opt.step()
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p1, p2, rtol=0, atol=1e-12)
    m = s.mask > 0
    k3 = torch.where(m, torch.exp(lt - old) - (lt - old) - 1, torch.zeros_like(old)).sum() / 16
    assert abs(float(h.kl_teacher[0]) - float(k3)) < 1e-10


def test_grpo_train_teacher_options():
    import copy

    from pgbook.train.grpo import grpo_train

    task, model, teacher = _tiny()

    def kw():                                # a fresh generator for every run
        return dict(steps=2, prompts_per_step=4, group_size=4, progress=False,
                    partial_reward=True, generator=pg.make_generator(1))

    plain = grpo_train(copy.deepcopy(model), task, **kw())
    assert plain.kl_teacher is None and plain.teacher_fraction is None
    zero = grpo_train(copy.deepcopy(model), task, method="GRPO-OPD", teacher=teacher,
                      teacher_coef=0.0, **kw())
    same = grpo_train(copy.deepcopy(model), task, aggregation="seq_mean_token_sum", **kw())
    assert torch.equal(zero.loss, same.loss)                       # λ = 0: no teacher term
    gated = grpo_train(copy.deepcopy(model), task, method="GRPO-OPD (all-fail gate)",
                       teacher=teacher, **kw())
    assert bool((gated.teacher_fraction <= 1).all()) and gated.config["teacher_gate"] == "all_fail"
    assert torch.isfinite(gated.smoothed("kl_teacher")).all()
    togo = grpo_train(copy.deepcopy(model), task, method="OPD", teacher=teacher,
                      teacher_signal="reverse_kl_to_go", **kw())
    assert togo.config["teacher_signal"] == "reverse_kl_to_go"
    with pytest.raises(ValueError, match="teacher"):
        grpo_train(copy.deepcopy(model), task, method="OPD", **kw())
    with pytest.raises(ValueError, match="teacher"):
        grpo_train(copy.deepcopy(model), task, teacher="gpt", **kw())
    with pytest.raises(ValueError, match="teacher_coef"):
        grpo_train(copy.deepcopy(model), task, teacher=teacher, teacher_coef=-1.0, **kw())
    with pytest.raises(ValueError, match="teacher_signal"):
        grpo_train(copy.deepcopy(model), task, teacher=teacher, teacher_signal="forward", **kw())
    with pytest.raises(ValueError, match="teacher_gate"):
        grpo_train(copy.deepcopy(model), task, teacher=teacher, teacher_gate="never", **kw())
    with pytest.raises(ValueError, match="name"):
        plain.smoothed("kl_teacher")


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 7), st.floats(0.0, 1.0), st.integers(0, 2 ** 16))
def test_discounted_reward_to_go_property(B, T, gamma, seed):
    """Any γ, any lengths: A_t = Σ_{k≥0} γ^k m_{t+k} r_{t+k} on the mask, the loop of
    Tinker's discounted_future_sum_vectorized."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T) < lengths[:, None]).to(torch.float64)
    got = discounted_reward_to_go(r, mask, gamma)
    want = torch.zeros_like(r)
    for b in range(B):
        running = 0.0
        for t in range(T - 1, -1, -1):
            running = float(r[b, t] * mask[b, t]) + gamma * running
            want[b, t] = running * float(mask[b, t])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_opd_advantages_token_level_input_and_float32_training(small_world):
    from pgbook.train.distill import seqlm_opd_train

    lp, lt, mask = _batch(12)
    a_tok = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * mask
    got = opd_advantages(a_tok, lp, lt, mask, coef=2.0, signal="reverse_kl_to_go")
    torch.testing.assert_close(got, mix_teacher(a_tok, teacher_advantages(lp, lt, mask, discount=1.0),
                                                mask, coef=2.0))
    _, policy, theta, reward, right, _ = small_world
    h = seqlm_opd_train(policy, theta.float(), reward, policy, right.float(), steps=3,
                        prompts_per_step=2, group_size=2, lr=0.1, generator=pg.make_generator(0))
    assert bool(torch.isfinite(h.J).all()) and h.theta.dtype == torch.float32
