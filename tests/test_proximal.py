"""Unit tests for pgbook.proximal: Fisher information, exact KL, proximal / preconditioned /
natural steps and the reference-point update family."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pgbook as pg
from pgbook import registry
from pgbook.exact import bandits as XB
from pgbook.exact import proximal as px
from pgbook.worlds import bandits as bandits_
from pgbook.worlds.bandits import Bandit, LinearSoftmax, SoftmaxPolicy, TabularSoftmax

F64 = torch.float64


def _kl(bandit, policy, theta_ref, theta):
    return XB.exact_kl(bandit, policy.log_probs(theta_ref), policy.log_probs(theta))


def _theta(P, seed=0, dtype=F64, scale=1.0):
    return scale * torch.randn(P, dtype=dtype, generator=pg.make_generator(seed))


class _SquaredLogits(SoftmaxPolicy):
    """A non-linear policy (logits = φ·θ + θ²) to exercise the autograd fallback."""

    def __init__(self, features):
        self.features = features
        self.n_contexts, self.n_actions, self.n_params = features.shape

    def logits(self, theta):
        self._check_theta(theta)
        return torch.einsum("sap,...p->...sa", self.features.to(theta.dtype), theta + theta ** 2)


# -- Fisher information and KL -------------------------------------------------------------------
@pytest.mark.parametrize("which", ["tabular", "linear", "nonlinear"])
def test_fisher_is_hessian_of_kl_and_matches_autograd_scores(which):
    b = bandits_.context_bandit()
    if which == "tabular":
        pol = TabularSoftmax(3, 4)
    else:
        feats = torch.randn(3, 4, 5, dtype=F64, generator=pg.make_generator(1))
        pol = LinearSoftmax(feats) if which == "linear" else _SquaredLogits(feats)
    th = _theta(pol.n_params, seed=2, scale=0.5)
    F = px.fisher_information(b, pol, th)
    H = torch.func.hessian(lambda t: _kl(b, pol, th, t))(th)
    torch.testing.assert_close(F, H, rtol=0, atol=1e-12)
    torch.testing.assert_close(pol.scores(th), pol.scores(th, autograd=True), rtol=0, atol=1e-14)
    torch.testing.assert_close(F, F.T, rtol=0, atol=0)
    assert float(torch.linalg.eigvalsh(F).min()) > -1e-14


def test_tabular_fisher_is_singular_with_one_null_direction_per_context():
    b = bandits_.context_bandit()
    F = px.fisher_information(b, TabularSoftmax(3, 4), _theta(12))
    assert int(torch.linalg.matrix_rank(F)) == 3 * (4 - 1)
    ones = torch.zeros(3, 4, dtype=F64)
    ones[1] = 1.0
    assert float((F @ ones.flatten()).abs().max()) < 1e-15


def test_exact_kl_values_and_broadcasting():
    b = bandits_.context_bandit()
    pol = TabularSoftmax(3, 4)
    t0, t1 = _theta(12, 0), _theta(12, 1)
    p, q = pol.probs(t0), pol.probs(t1)
    by_hand = sum(float(b.rho[s]) * float((p[s] * (p[s] / q[s]).log()).sum()) for s in range(3))
    assert float(_kl(b, pol, t0, t1)) == pytest.approx(by_hand, abs=1e-14)
    assert float(_kl(b, pol, t0, t0)) == 0.0
    many = torch.stack([t0, t1, t0 + 1.0])  # a constant shift does not move the policy
    kls = _kl(b, pol, t0, many)
    assert kls.shape == (3,)
    assert float(kls[2]) < 1e-14 and float(kls[1]) > 0.01
    assert XB.state_kl(pol.log_probs(t0), pol.log_probs(many)).shape == (3, 3)


def test_kl_gradient_matches_autograd_and_is_exactly_zero_at_reference():
    b, pol = bandits_.two_param_bandit()
    t0, t1 = _theta(2, 3), _theta(2, 4)
    auto = torch.func.grad(lambda t: _kl(b, pol, t0, t))(t1)
    torch.testing.assert_close(px.kl_gradient(b, pol, t0, t1), auto, rtol=0, atol=1e-15)
    assert torch.equal(px.kl_gradient(b, pol, t0, t0), torch.zeros(2, dtype=F64))


# -- preconditioned, proximal-gradient and natural steps ---------------------------------------------
def test_preconditioned_step_is_the_argmax_of_the_penalised_linearisation():
    b, pol = bandits_.two_param_bandit()
    th = torch.tensor([-1.0, 0.5], dtype=F64)
    g = XB.exact_gradient(b, pol, th)
    M = torch.tensor([[2.0, 0.7], [0.7, 0.5]], dtype=F64)
    closed = px.preconditioned_step(th, g, M, 0.8)
    torch.testing.assert_close(closed, th + 0.8 * torch.linalg.solve(M, g), rtol=0, atol=1e-15)
    numeric = px.proximal_point_step(b, pol, th, 0.8, divergence=M, linearise=True)
    torch.testing.assert_close(numeric, closed, rtol=0, atol=1e-12)
    eye = torch.eye(2, dtype=F64)
    torch.testing.assert_close(px.preconditioned_step(th, g, eye, 0.8),
                               px.proximal_gradient_step(b, pol, th, 0.8), rtol=0, atol=1e-15)
    euclid = px.proximal_point_step(b, pol, th, 0.8, divergence="euclidean", linearise=True)
    torch.testing.assert_close(euclid, th + 0.8 * g, rtol=0, atol=1e-12)


def test_proximal_point_solvers_agree():
    b, pol = bandits_.two_param_bandit()
    th = torch.tensor([0.2, -0.3], dtype=F64)
    a = px.proximal_point_step(b, pol, th, 1.0, "kl")
    c = px.proximal_point_step(b, pol, th, 1.0, "kl", solver="ascent", max_iter=400, lr=0.5)
    torch.testing.assert_close(a, c, rtol=0, atol=1e-8)
    f = px.proximal_objective(b, pol, th, 1.0, "kl")
    grad_at_a = torch.func.grad(f)(a)
    assert float(grad_at_a.abs().max()) < 1e-9
    assert float(f(a)) > float(f(th))


def test_natural_gradient_tabular_is_the_centred_advantage():
    b = bandits_.context_bandit()
    pol = TabularSoftmax(3, 4)
    th = _theta(12, 5, scale=2.0)
    ng = px.natural_gradient(b, pol, th).view(3, 4)
    A = b.advantages(pol.probs(th))
    torch.testing.assert_close(ng, A - A.mean(-1, keepdim=True), rtol=0, atol=1e-12)
    # damped: the solution of (F + λI) x = ∇J
    F = px.fisher_information(b, pol, th)
    x = px.natural_gradient(b, pol, th, damping=0.1)
    torch.testing.assert_close((F + 0.1 * torch.eye(12, dtype=F64)) @ x,
                               XB.exact_gradient(b, pol, th), rtol=0, atol=1e-13)


def test_natural_gradient_path_is_invariant_to_a_linear_reparametrisation():
    b, pol = bandits_.two_param_bandit()
    A = torch.tensor([[1.0, 0.0], [2.0, 0.3]], dtype=F64)  # θ = A ψ
    pol2 = LinearSoftmax(pol.features @ A)
    th0 = torch.tensor([-1.0, 2.0], dtype=F64)
    psi0 = torch.linalg.solve(A, th0)
    nat = px.update_path(b, pol, th0, 0.5, 8, "natural")
    nat2 = px.update_path(b, pol2, psi0, 0.5, 8, "natural") @ A.T
    torch.testing.assert_close(nat, nat2, rtol=0, atol=1e-10)
    gd = px.update_path(b, pol, th0, 0.5, 8, "gradient")
    gd2 = px.update_path(b, pol2, psi0, 0.5, 8, "gradient") @ A.T
    assert float((gd - gd2).abs().max()) > 0.1


def test_natural_gradient_survives_a_nearly_deterministic_policy():
    b = bandits_.context_bandit()
    pol = TabularSoftmax(3, 4)
    path = px.update_path(b, pol, torch.zeros(12, dtype=F64), 10.0, 12, "natural")
    J = XB.exact_J(b, pol, path)
    assert bool(torch.isfinite(path).all())
    assert float(J.diff().min()) >= -1e-12 and float(J[-1]) > 1 - 1e-9


# -- paths --------------------------------------------------------------------------------------------
def test_update_path_gradient_and_trust_region():
    b, pol = bandits_.two_param_bandit()
    th0 = torch.tensor([-2.0, 2.5], dtype=F64)
    p = px.update_path(b, pol, th0, 0.7, 3, "gradient")
    assert p.shape == (4, 2)
    torch.testing.assert_close(p[1], px.proximal_gradient_step(b, pol, th0, 0.7), rtol=0, atol=0)
    tr = px.update_path(b, pol, th0, 1.0, 4, "natural", kl_step=0.05)
    kls = _kl(b, pol, tr[:-1], tr[1:])
    torch.testing.assert_close(kls, torch.full_like(kls, 0.05), rtol=1e-5, atol=0)
    pp = px.update_path(b, pol, th0, 1.0, 2, "proximal_point")
    torch.testing.assert_close(pp[1], px.proximal_point_step(b, pol, th0, 1.0), rtol=0, atol=0)


def test_step_to_kl_hits_the_target():
    b = bandits_.context_bandit()
    pol = TabularSoftmax(3, 4)
    th = _theta(12, 7)
    d = XB.exact_gradient(b, pol, th)
    s = px.step_to_kl(b, pol, th, d, 0.02)
    assert float(_kl(b, pol, th, th + s * d)) == pytest.approx(0.02, rel=1e-5)
    shift = torch.ones(12, dtype=F64)  # moves no probability
    assert float(px.step_to_kl(b, pol, th, shift, 0.02)) == 0.0


@pytest.mark.parametrize("div", ["kl", "euclidean", "matrix"])
def test_reference_point_every_step_is_exactly_gradient_ascent(div):
    b, pol = bandits_.two_param_bandit()
    th0 = torch.tensor([-1.0, 1.5], dtype=F64)
    D = torch.tensor([[2.0, 0.3], [0.3, 1.0]], dtype=F64) if div == "matrix" else div
    gd = px.update_path(b, pol, th0, 0.6, 15, "gradient")
    assert torch.equal(px.reference_point_path(b, pol, th0, 0.3, 15, lr=0.6, refresh=1,
                                               divergence=D), gd)
    assert torch.equal(px.reference_point_path(b, pol, th0, 0.3, 15, lr=0.6, refresh="ema",
                                               tau=1.0, divergence=D), gd)
    slow = px.reference_point_path(b, pol, th0, 0.3, 15, lr=0.6, refresh=5, divergence=D)
    assert float((slow - gd).abs().max()) > 1e-3


def test_reference_point_with_long_inner_loop_is_the_proximal_point():
    b, pol = bandits_.two_param_bandit()
    th0 = torch.tensor([-1.0, 0.5], dtype=F64)
    path = px.reference_point_path(b, pol, th0, 2.0, 300, lr=0.5, refresh=1000)
    torch.testing.assert_close(path[-1], px.proximal_point_step(b, pol, th0, 2.0), rtol=0,
                               atol=1e-8)


# -- dtypes and devices ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_dtypes(dtype):
    b = bandits_.context_bandit(dtype=dtype)
    pol = TabularSoftmax(3, 4)
    th = _theta(12, 8).to(dtype)
    F = px.fisher_information(b, pol, th)
    ng = px.natural_gradient(b, pol, th)
    kl = _kl(b, pol, th, th + 0.1)
    M = torch.eye(12, dtype=dtype) * 2
    step = px.preconditioned_step(th, ng, M, 0.5)
    assert F.dtype == ng.dtype == kl.dtype == step.dtype == dtype
    ref_ng = px.natural_gradient(bandits_.context_bandit(), pol, th.double())
    tol = 1e-4 if dtype == torch.float32 else 0.1
    assert float((ng.double() - ref_ng).abs().max()) < tol
    path = px.reference_point_path(b, pol, th, 1.0, 3, lr=0.5, refresh=2)
    assert path.dtype == dtype and path.shape == (4, 12)
    b2, lin = bandits_.two_param_bandit(dtype=dtype)
    t2 = torch.tensor([-1.0, 0.5], dtype=dtype)
    pp = px.proximal_point_step(b2, lin, t2, 2.0, "kl")
    pp64 = px.proximal_point_step(bandits_.two_param_bandit()[0], lin, t2.double(), 2.0, "kl")
    assert pp.dtype == dtype and float((pp.double() - pp64).abs().max()) < 10 * tol


def test_meta_device_shapes():
    b = bandits_.context_bandit(device="meta")
    pol = TabularSoftmax(3, 4)
    th = torch.zeros(12, dtype=F64, device="meta")
    assert px.fisher_information(b, pol, th).shape == (12, 12)
    assert px.natural_gradient(b, pol, th).shape == (12,)
    assert _kl(b, pol, th, th).shape == ()
    assert px.kl_gradient(b, pol, th, th).shape == (12,)
    M = torch.eye(12, dtype=F64, device="meta")
    out = px.preconditioned_step(th, th, M, 0.1)
    assert out.shape == (12,) and out.device.type == "meta"
    assert px.update_path(b, pol, th, 0.1, 2, "gradient").shape == (3, 12)


# -- bad input ------------------------------------------------------------------------------------------
def test_bad_inputs_raise():
    b, pol = bandits_.two_param_bandit()
    th = torch.zeros(2, dtype=F64)
    g = XB.exact_gradient(b, pol, th)
    with pytest.raises(ValueError, match="positive-definite"):
        px.preconditioned_step(th, g, torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=F64), 0.1)
    with pytest.raises(ValueError, match="positive-definite"):
        px.preconditioned_step(th, g, torch.zeros(2, 2, dtype=F64), 0.1)
    with pytest.raises(ValueError, match="symmetric"):
        px.preconditioned_step(th, g, torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=F64), 0.1)
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        px.preconditioned_step(th, g, torch.eye(3, dtype=F64), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        px.preconditioned_step(th, g, torch.full((2, 2), float("nan"), dtype=F64), 0.1)
    with pytest.raises(ValueError, match="eta"):
        px.preconditioned_step(th, g, torch.eye(2, dtype=F64), -1.0)
    with pytest.raises(ValueError, match="grad"):
        px.preconditioned_step(th, torch.zeros(3, dtype=F64), torch.eye(2, dtype=F64), 0.1)
    with pytest.raises(ValueError, match="theta"):
        px.fisher_information(b, pol, torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="finite"):
        px.natural_gradient(b, pol, torch.tensor([0.0, float("inf")], dtype=F64))
    with pytest.raises(ValueError, match="damping"):
        px.natural_gradient(b, pol, th, damping=-1.0)
    with pytest.raises(ValueError, match="contexts"):
        px.fisher_information(bandits_.context_bandit(), pol, th)
    with pytest.raises(ValueError, match="divergence"):
        px.proximal_point_step(b, pol, th, 1.0, divergence="l1")
    with pytest.raises(ValueError, match="solver"):
        px.proximal_point_step(b, pol, th, 1.0, solver="newton")
    with pytest.raises(ValueError, match="rule"):
        px.update_path(b, pol, th, 1.0, 3, rule="adam")
    with pytest.raises(ValueError, match="kl_step"):
        px.update_path(b, pol, th, 1.0, 3, rule="proximal_point", kl_step=0.1)
    with pytest.raises(ValueError, match="refresh"):
        px.reference_point_path(b, pol, th, 1.0, 3, lr=0.1, refresh="never")
    with pytest.raises(ValueError, match="refresh"):
        px.reference_point_path(b, pol, th, 1.0, 3, lr=0.1, refresh=0)
    with pytest.raises(ValueError, match="tau"):
        px.reference_point_path(b, pol, th, 1.0, 3, lr=0.1, refresh="ema", tau=1.5)
    with pytest.raises(ValueError, match="n_steps"):
        px.reference_point_path(b, pol, th, 1.0, 0, lr=0.1)
    with pytest.raises(ValueError, match="actions"):
        XB.state_kl(torch.zeros(3, 4, dtype=F64), torch.zeros(3, 5, dtype=F64))


def test_natural_pg_is_on_the_map():
    m = pg.method("Natural PG")
    assert m.parent == "REINFORCE + baseline"
    assert m.axis == "trajectory"
    assert registry.get("step", "gradient").side == "trajectory"


# -- property test: Kakade's identity on random bandits -------------------------------------------------
@settings(max_examples=20, deadline=None)
@given(S=st.integers(1, 4), A=st.integers(2, 5), seed=st.integers(0, 10_000))
def test_property_natural_gradient_and_kl_quadratic(S, A, seed):
    g = pg.make_generator(seed)
    rho = torch.softmax(torch.randn(S, dtype=F64, generator=g), 0)
    b = Bandit(rho, torch.randn(S, A, dtype=F64, generator=g))
    pol = TabularSoftmax(S, A)
    th = torch.randn(S * A, dtype=F64, generator=g)
    adv = b.advantages(pol.probs(th))
    ng = px.natural_gradient(b, pol, th).view(S, A)
    torch.testing.assert_close(ng, adv - adv.mean(-1, keepdim=True), rtol=0, atol=1e-10)
    # KL(θ‖θ+δ) − ½δᵀFδ shrinks like |δ|³: a 10× smaller δ gives a ~1000× smaller error
    d = torch.randn(S * A, dtype=F64, generator=g)
    F = px.fisher_information(b, pol, th)
    err = [abs(float(_kl(b, pol, th, th + h * d) - 0.5 * h * h * d @ F @ d))
           for h in (1e-2, 1e-3)]
    if err[0] > 1e-13:
        assert 200 < err[0] / max(err[1], 1e-300) < 5000
