"""Bad inputs refused with a ValueError that says what was expected: pass@k counts, DPO,
the registry and compose, the critic's value loss, widget controls and policy bars."""

import numpy as np
import pytest
import torch

import pgbook.boundary as BD
import pgbook.methods as ME
import pgbook.plots as PL
import pgbook.registry as RG
import pgbook.reward.advantages as RA
import pgbook.reward.critic as RC
import pgbook.trajectory.losses as TL
import pgbook.widgets as WI

F64 = torch.float64
t = torch.tensor


# -- pass@k counts ---------------------------------------------------------------------------
N3 = t([4.0, 4.0, 4.0], dtype=F64)
C3 = t([1.0, 2.0, 0.0], dtype=F64)


@pytest.mark.parametrize("n, c, match", [
    (t([4.5, 4.0], dtype=F64), t([1.0, 1.0], dtype=F64), "n: expected whole numbers"),
    (N3, t(1.0, dtype=F64), "n and c must have the same shape"),
    (N3, t([1.0, 1.0], dtype=F64), "n and c must have the same shape"),
    (N3, t([True, False, True]), "c: expected a real tensor of counts"),
    (N3, C3.to(torch.complex128), "c: expected a real tensor of counts"),
    (N3.to(torch.complex128), C3, "n: expected a floating-point tensor"),
    (torch.zeros(0, dtype=F64), torch.zeros(0, dtype=F64), "n: expected at least one element"),
    (N3, t([1.0, 5.0, 0.0], dtype=F64), "c: expected 0 ≤ c ≤ n"),
])
def test_pass_at_k_estimate_refuses(n, c, match):
    with pytest.raises(ValueError, match=match):
        RA.pass_at_k_estimate(n, c, 2)


def test_pass_at_k_estimate_valid_counts():
    got = RA.pass_at_k_estimate(N3, C3, 2)
    torch.testing.assert_close(got, t([0.5, 5 / 6, 0.0], dtype=F64), rtol=0, atol=1e-15)
    # integer c, same values
    assert torch.equal(RA.pass_at_k_estimate(N3, C3.long(), 2), got)


@pytest.mark.parametrize("a, b, match", [
    (t([2.0, 3.0, 5.0], dtype=F64), torch.zeros(0, dtype=F64), "b: expected at least one"),
    (t([2.0, 3.0, 5.0], dtype=F64), t([5.0, 5.0]), "a and b: expected shapes that broadcast"),
    (t([2.0, 3.0], dtype=F64).to(torch.complex128), t([5.0, 5.0]), "a: expected a floating"),
    (t([2.0, 3.0], dtype=F64), t([5.0, 5.0]).to(torch.complex128), "b: expected a real tensor"),
    (t([2.0, 3.0], dtype=F64), t([True, True]), "b: expected a real tensor"),
    (t([2.0, 3.0], dtype=F64), t([5.0, 5.5], dtype=F64), "b: expected whole numbers"),
])
def test_comb_ratio_refuses(a, b, match):
    with pytest.raises(ValueError, match=match):
        RA.comb_ratio(a, b, 2)


def test_comb_ratio_valid_counts():
    got = RA.comb_ratio(t([2.0, 3.0, 5.0], dtype=F64), t([5, 5, 6]), 2)
    torch.testing.assert_close(got, t([0.1, 0.3, 2 / 3], dtype=F64), rtol=0, atol=1e-15)


# -- clip_fraction -----------------------------------------------------------------------------
LP = -torch.rand(2, 3, generator=torch.Generator().manual_seed(0), dtype=F64) - 0.1


@pytest.mark.parametrize("adv", [LP.to(torch.complex128), LP > -0.5, LP.long()])
def test_clip_fraction_refuses_non_floating_advantages(adv):
    with pytest.raises(ValueError, match="advantages: expected a floating-point tensor"):
        TL.clip_fraction(LP, LP, adv)


def test_clip_fraction_valid():
    out = TL.clip_fraction(LP, LP - 1.0, torch.ones_like(LP))   # r = e > 1.2, A > 0: clipped
    assert out.dtype == torch.bool and bool(out.all())


# -- DPO ---------------------------------------------------------------------------------------
X2 = t([-1.0, -2.0])


@pytest.mark.parametrize("args, match", [
    ((t([5.0, -1.0]), X2, X2, X2), r"chosen_logp: expected log-probabilities ≤ 0"),
    ((X2, X2, X2, t([-1.0, 0.5])), r"ref_rejected_logp: expected log-probabilities ≤ 0"),
    ((torch.zeros(0),) * 4, "chosen_logp: expected at least one element"),
    ((t([-3e38]), t([-1.0]), t([-1.0]), t([-3e38])), "dpo_loss: β Δ .* overflows"),
])
def test_dpo_loss_refuses(args, match):
    with pytest.raises(ValueError, match=match):
        BD.dpo_loss(*args)


@pytest.mark.parametrize("logp, ref, beta, match", [
    (t([3e38]), t([-3e38]), 10.0, r"logp: expected log-probabilities ≤ 0"),
    (t([-3e38]), t([0.0]), 10.0, r"implied_reward: β \(logp − ref_logp\) overflows"),
    (torch.zeros(0), torch.zeros(0), 0.1, "logp: expected at least one element"),
    (X2, t([-1.0, 2.0]), 0.1, r"ref_logp: expected log-probabilities ≤ 0"),
])
def test_implied_reward_refuses(logp, ref, beta, match):
    with pytest.raises(ValueError, match=match):
        BD.implied_reward(logp, ref, beta)


def test_dpo_valid():
    out = BD.dpo_loss(X2, X2.flip(0), t([-1.5, -1.0]), t([-1.0, -1.0]), beta=0.5)
    assert out.shape == (2,) and bool(torch.isfinite(out).all())
    torch.testing.assert_close(BD.implied_reward(t([0.0, -1.0]), t([-2.0, -1.0]), 0.5),
                               t([1.0, 0.0]))


# -- registry and compose ----------------------------------------------------------------------
def _adv(rewards, group_size):
    return rewards - rewards.mean()


def test_register_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match=r"kind: expected one of \('advantage'"):
        RG.register("nope", "zz_misc", side="reward")(_adv)
    with pytest.raises(ValueError, match="kind: expected one of"):
        RG.register_label("advantges", "zz_misc", side="reward", summary="typo")
    assert "nope" not in {c.kind for c in RG.components()}


@pytest.mark.parametrize("form, fn, n", [
    (None, lambda: 0, 2),                                   # an advantage takes ≥ 2
    ("group", lambda rewards: 0, 2),
    ("group", lambda a, b, c: 0, 2),                        # one required too many
    ("baseline", lambda bandit, policy: 0, 4),
])
def test_register_refuses_a_function_of_the_wrong_signature(form, fn, n):
    with pytest.raises(ValueError, match=f"expected a function taking {n} positional"):
        RG.register("advantage", "zz_misc", side="reward", form=form)(fn)
    with pytest.raises(ValueError, match="expected one of"):
        RG.get("advantage", "zz_misc")


def test_register_valid_signatures():
    def adv_kw(rewards, group_size, *, std_eps=1e-6):
        return rewards

    def adv_args(*args, **options):
        return args[0]

    try:
        RG.register("advantage", "zz_misc", side="reward", form="group")(adv_kw)
        RG.register("advantage", "zz_misc2", side="reward")(adv_args)
        assert RG.get("advantage", "zz_misc").fn is adv_kw
    finally:
        for name in ("zz_misc", "zz_misc2"):
            if name in {c.name for c in RG.components("advantage")}:
                RG.unregister("advantage", name)


@pytest.mark.parametrize("name", ["ZZ_misc", "GRPO"])
def test_register_method_refuses_its_own_parent(name):
    with pytest.raises(ValueError, match="parent: a method cannot be its own parent"):
        RG.register_method(name, name, advantage="rloo")
    assert RG.method("GRPO").parent != "GRPO"


def test_compose_names_the_parent_it_compares_against():
    with pytest.raises(ValueError, match=r"relative to the new method's parent 'GRPO' "
                                         r"\(compose's parent='GRPO'"):
        ME.compose("ZZ_misc", reward="GRPO", trajectory="GRPO")
    with pytest.raises(ValueError, match=r"compose's parent='RLOO'"):
        ME.compose("ZZ_misc", reward="RLOO", trajectory="GRPO", parent="RLOO")


# -- critic ------------------------------------------------------------------------------------
def test_value_loss_overflow_names_values_and_returns():
    m = torch.ones(4, 5)
    big = torch.full((4, 5), 1e200, dtype=F64)
    with pytest.raises(ValueError, match=r"values − returns overflows torch\.float64"):
        RC.value_loss(big, -big, m)
    with pytest.raises(ValueError, match="values − returns overflows"):
        RC.value_loss(big, -big, m, old_values=big, eps_value=0.2)
    loss, metrics = RC.value_loss(torch.ones(4, 5, dtype=F64), torch.zeros(4, 5, dtype=F64), m)
    assert float(loss) == 0.5 and float(metrics["value_error"]) == 1.0


# -- widgets and plots -------------------------------------------------------------------------
@pytest.mark.parametrize("spec, match", [
    ((5, 1), r"a tuple of numbers is a slider's range \(min, max, step\)"),
    ((1, 5), r"a tuple of numbers is a slider's range"),
    ((5, 1, 1), "min ≤ max"),
    ((0.0, 1.0, 0.0), "step > 0"),
    ((0.0, 1.0, -0.1), "step > 0"),
])
def test_control_refuses_bad_ranges(spec, match):
    pytest.importorskip("ipywidgets")
    with pytest.raises(ValueError, match=match):
        WI.control("x", spec)


def test_control_valid_forms():
    w = pytest.importorskip("ipywidgets")
    assert isinstance(WI.control("x", (0.0, 1.0, 0.1)), w.FloatSlider)
    assert isinstance(WI.control("x", (1, 5, 1)), w.IntSlider)
    assert isinstance(WI.control("x", [5, 1]), w.SelectionSlider)


@pytest.mark.parametrize("probs, match", [
    (t([[2.0, -1.0]]), "expected non-negative probabilities"),
    (t([[0.5, float("nan")]]), "expected finite values"),
    (t([[0.5, 0.4]]), "expected probabilities summing to 1"),
    (np.array([0.2, 0.2]), "expected probabilities summing to 1"),
    (torch.zeros(0, 2), "expected at least one context"),
])
def test_policy_bars_refuses_non_probabilities(probs, match):
    with pytest.raises(ValueError, match=f"probs: {match}"):
        PL.policy_bars(probs)


def test_policy_bars_valid():
    import matplotlib.pyplot as plt

    _, ax = plt.subplots()
    PL.policy_bars(t([[0.25, 0.75], [1.0, 0.0]]), ax=ax)
    assert len(ax.patches) == 4
    plt.close("all")
