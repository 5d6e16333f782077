"""Proximal methods on the exact bandit world (chapter 06): how far one update may move p_θ.

A policy-gradient step changes the *trajectory factor* p_θ(τ) = ρ(s) π_θ(a|s) of
J(θ) = Σ_s ρ(s) Σ_a π_θ(a|s) r(s, a). How far it moves is decided by a proximity term:

    proximal point:     θ_{k+1} = argmax_θ  J(θ) − (1/η) D(θ, θ_k)
    proximal gradient:  replace J by J(θ_k) + ∇J(θ_k)ᵀ(θ − θ_k)
    quadratic D = ½ δᵀ M δ (δ = θ − θ_k, M positive definite):
                        θ_{k+1} = θ_k + η M⁻¹ ∇J(θ_k)            (preconditioned ascent)
    M = I:              θ_{k+1} = θ_k + η ∇J(θ_k)                 (gradient ascent)
    D = KL(π_θk ‖ π_θ) ≈ ½ δᵀ F δ, F the Fisher information:
                        θ_{k+1} = θ_k + η F⁻¹ ∇J(θ_k)              (natural gradient)

and the reference-point family runs inner gradient steps on J(θ) − (1/η) D(θ, θ_ref) with
θ_ref refreshed every step (plain gradient ascent), every K steps, or as an EMA of iterates.

Everything is exact (enumeration over contexts and actions). Shapes: θ is (P,) for a policy
with P parameters; F and M are (P, P). Functions run on the device and dtype of θ; bfloat16
and float16 are computed in float32 inside and returned in the input dtype.
Factor of J(θ): trajectory (all of this is about how p_θ moves; the reward is untouched).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._validate import (
    _is_meta,
    check_finite,
    check_nonnegative_int,
    check_option,
    check_positive,
    check_positive_int,
    check_same_device,
    check_shape,
    check_tensor,
    to_work,
)
from ..worlds.bandits import Bandit, SoftmaxPolicy
from .bandits import check_world, exact_gradient, exact_J, exact_kl

__all__ = [
    "UPDATE_RULES",
    "check_positive_definite",
    "fisher_information",
    "kl_gradient",
    "natural_gradient",
    "preconditioned_step",
    "proximal_gradient_step",
    "proximal_objective",
    "proximal_point_step",
    "reference_point_path",
    "step_to_kl",
    "update_path",
]


def _kl(bandit: Bandit, policy: SoftmaxPolicy, theta_ref: Tensor, theta: Tensor) -> Tensor:
    """KL(π_θref ‖ π_θ) on parameter vectors (:func:`pgbook.exact.bandits.exact_kl`)."""
    return exact_kl(bandit, policy.log_probs(theta_ref), policy.log_probs(theta))

def _check_theta(policy: SoftmaxPolicy, theta: Tensor, name: str = "theta") -> Tensor:
    if not isinstance(policy, SoftmaxPolicy):
        raise ValueError(f"policy: expected a SoftmaxPolicy, got {type(policy).__name__}")
    check_tensor(theta, name, floating=True)
    check_shape(theta, name, (policy.n_params,))
    check_finite(theta, name)
    return theta


# -- the geometry: Fisher information and exact KL -------------------------------------------
def fisher_information(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor) -> Tensor:
    """Exact Fisher information of the policy under the bandit's contexts, shape (P, P):

        F(θ) = Σ_s ρ(s) Σ_a π_θ(a|s) ∇log π_θ(a|s) ∇log π_θ(a|s)ᵀ.

    It is also the Hessian of δ ↦ KL(π_θ ‖ π_{θ+δ}) at δ = 0 (chapter 06). For a tabular
    softmax it is singular: adding a constant to every logit of one context leaves π
    unchanged, so each context contributes a null direction (rank S·(A − 1)); use
    :func:`natural_gradient` (pseudo-inverse or damping) rather than a plain inverse.
    Factor of J(θ): trajectory (the metric of p_θ).
    """
    check_world(bandit, policy, theta, "theta")
    _check_theta(policy, theta)
    return _fisher_and_scores(bandit, policy, theta)[0].to(theta.dtype)


def _fisher_and_scores(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor):
    """(F, scores (S, A, P)) in the working dtype of ``theta``."""
    t = to_work(theta.detach())
    sc = policy.scores(t)  # (S, A, P)
    joint = bandit.rho.to(t.dtype)[:, None] * policy.probs(t)  # (S, A)
    F = torch.einsum("sa,sap,saq->pq", joint, sc, sc)
    return 0.5 * (F + F.T), sc  # symmetric to the last bit


def kl_gradient(bandit: Bandit, policy: SoftmaxPolicy, theta_ref: Tensor, theta: Tensor) -> Tensor:
    """∇_θ KL(π_θref ‖ π_θ), shape (P,), in closed form through the logits:

        ∇_θ KL = Σ_s ρ(s) Σ_a (π_θ(a|s) − π_ref(a|s)) ∂logit_θ(s, a)/∂θ,

    a vector–Jacobian product of the logits with ρ(s)(π_θ − π_ref). It is *exactly* zero at
    θ = θ_ref (the cotangent is zero bit for bit), which makes a reference point refreshed
    every step reduce exactly to gradient ascent.
    """
    check_world(bandit, policy, theta)
    _check_theta(policy, theta_ref, "theta_ref")
    _check_theta(policy, theta)
    t = theta.detach()
    logits, vjp = torch.func.vjp(policy.logits, t)
    diff = torch.softmax(logits, -1) - policy.probs(theta_ref.detach().to(t.dtype))
    (g,) = vjp(bandit.rho.to(t.dtype)[:, None] * diff)
    return g


# -- the closed-form steps --------------------------------------------------------------------
def check_positive_definite(M: Tensor, name: str = "M", size: int | None = None) -> Tensor:
    """``M`` must be a finite, symmetric, positive-definite (P, P) matrix; returns it.

    A quadratic penalty ½ δᵀMδ with an M that is not positive definite has no maximiser
    of gᵀδ − (1/2η) δᵀMδ (the objective is unbounded or flat along some δ), so there is no
    proximal step to take. Value checks are skipped on the meta device.
    """
    check_tensor(M, name, ndim=2, floating=True)
    if M.shape[0] != M.shape[1] or (size is not None and M.shape[0] != size):
        want = f"({size}, {size})" if size is not None else "a square matrix"
        raise ValueError(f"{name}: expected {want}, got shape {tuple(M.shape)}")
    check_finite(M, name)
    if _is_meta(M):
        return M
    W = to_work(M)
    asym = float((W - W.T).abs().max()) if W.numel() else 0.0
    scale = float(W.abs().max()) if W.numel() else 0.0
    tol = 1e3 * torch.finfo(W.dtype).eps * max(scale, 1.0)
    if asym > tol:
        raise ValueError(f"{name}: expected a symmetric matrix, largest |M − Mᵀ| entry is {asym:.3g}")
    _, info = torch.linalg.cholesky_ex(0.5 * (W + W.T))
    if int(info) != 0:
        lam = float(torch.linalg.eigvalsh(0.5 * (W + W.T)).min())
        raise ValueError(
            f"{name}: expected a positive-definite matrix, smallest eigenvalue is {lam:.3g} "
            "(a singular Fisher needs damping F + λI or the pseudo-inverse)"
        )
    return M


def preconditioned_step(theta: Tensor, grad: Tensor, M: Tensor, eta: float) -> Tensor:
    """The maximiser of the linearised, quadratically penalised objective

        gᵀ(θ − θ_k) − (1/2η) (θ − θ_k)ᵀ M (θ − θ_k)   is   θ_k + η M⁻¹ g,

    with θ_k = ``theta`` (P,), g = ``grad`` (P,), M (P, P) positive definite (else
    ValueError). M = I is gradient ascent; M = F (damped) the natural gradient.
    Solved by a Cholesky factorisation (no explicit inverse).
    Factor of J(θ): trajectory (the geometry in which p_θ moves).
    """
    check_tensor(theta, "theta", ndim=1, floating=True)
    check_finite(theta, "theta")
    check_shape(grad, "grad", theta.shape)
    check_tensor(grad, "grad", floating=True)
    check_finite(grad, "grad")
    check_same_device(theta=theta, grad=grad, M=M)
    check_positive_definite(M, "M", theta.shape[0])
    eta = check_positive(eta, "eta")
    W = to_work(M)
    L = torch.linalg.cholesky(0.5 * (W + W.T))
    d = torch.cholesky_solve(to_work(grad).to(W.dtype)[:, None], L)[:, 0]
    return (to_work(theta) + eta * d.to(to_work(theta).dtype)).to(theta.dtype)


def proximal_gradient_step(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor, eta: float) -> Tensor:
    """θ_k + η ∇J(θ_k): the proximal step with J replaced by its first-order expansion and
    D = ½‖θ − θ_k‖² (Euclidean). This is plain gradient ascent on the exact J. The new θ is
    detached (a step, not a differentiable map of θ_k)."""
    check_world(bandit, policy, theta, "theta")
    _check_theta(policy, theta)
    eta = check_positive(eta, "eta")
    return theta.detach() + eta * exact_gradient(bandit, policy, theta)


def natural_gradient(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor,
                     damping: float | None = None, rtol: float | None = None,
                     atol: float | None = None) -> Tensor:
    """The natural-gradient direction F⁻¹∇J(θ), shape (P,).

    ``damping=None``: F⁺∇J with the Moore–Penrose pseudo-inverse: the minimum-norm
    solution of F x = ∇J, well defined for the singular tabular Fisher (∇J is orthogonal to
    F's null space, so F x = ∇J is solved exactly). Eigenvalues below ``atol`` (default
    P·eps·max‖∇log π‖², the size of F's rounding error) or ``rtol``·λ_max are treated as
    zero: without the absolute floor, a nearly deterministic policy (all eigenvalues tiny)
    would invert rounding noise in the null directions and blow the step up. ``damping=λ > 0``: (F + λI)⁻¹∇J, the damped form used in practice.
    For a tabular softmax, F⁺∇J = A(s, a) − mean_a A(s, a): the advantage itself,
    whatever ρ(s) and π(a|s) are (Kakade 2001; chapter 06 checks it).
    Factor of J(θ): trajectory.
    """
    check_world(bandit, policy, theta, "theta")
    _check_theta(policy, theta)
    if rtol is not None:
        rtol = check_positive(rtol, "rtol", allow_zero=True)
    if atol is not None:
        atol = check_positive(atol, "atol", allow_zero=True)
    if damping is not None:
        check_positive(damping, "damping")
    F, sc = _fisher_and_scores(bandit, policy, theta)
    g = to_work(exact_gradient(bandit, policy, theta)).to(F.dtype)
    if damping is None:
        eps = torch.finfo(F.dtype).eps
        rtol = F.shape[0] * eps if rtol is None else rtol
        if atol is None:  # F's rounding error: ~eps · max ‖∇log π‖² (directions below it are noise)
            atol = 0.0 if _is_meta(F) else F.shape[0] * eps * float(sc.pow(2).sum(-1).max())
        x = torch.linalg.pinv(F, hermitian=True, rtol=rtol, atol=atol) @ g
    else:
        lam = check_positive(damping, "damping")
        eye = torch.eye(F.shape[0], dtype=F.dtype, device=F.device)
        x = torch.linalg.solve(F + lam * eye, g)
    return x.to(theta.dtype)


# -- the proximal point, solved numerically ---------------------------------------------------
def _divergence(divergence, bandit: Bandit, policy: SoftmaxPolicy, theta_ref: Tensor):
    """(value_fn(θ), grad_fn(θ)) of D(θ, θ_ref) for ``"euclidean"``, ``"kl"`` or a matrix M."""
    if isinstance(divergence, Tensor):
        M = check_positive_definite(divergence, "divergence", policy.n_params)
        check_same_device(divergence=M, theta=theta_ref)

        def value(t):
            d = t - theta_ref
            return 0.5 * d @ (M.to(d.dtype) @ d)

        return value, lambda t: M.to(t.dtype) @ (t - theta_ref)
    if divergence == "euclidean":
        return (lambda t: 0.5 * ((t - theta_ref) ** 2).sum()), (lambda t: t - theta_ref)
    if divergence == "kl":
        return ((lambda t: _kl(bandit, policy, theta_ref, t)),
                (lambda t: kl_gradient(bandit, policy, theta_ref, t)))
    raise ValueError(
        f"divergence: expected 'euclidean', 'kl' or a (P, P) positive-definite tensor, "
        f"got {divergence!r}"
    )


def proximal_objective(bandit: Bandit, policy: SoftmaxPolicy, theta_k: Tensor, eta: float,
                       divergence: str | Tensor = "kl", linearise: bool = False
                       ) -> Callable[[Tensor], Tensor]:
    """The function θ ↦ J̃(θ) − (1/η) D(θ, θ_k), with J̃ = J (exact) or, with ``linearise``,
    its first-order expansion J(θ_k) + ∇J(θ_k)ᵀ(θ − θ_k). ``divergence`` is ``"kl"``
    (KL(π_θk ‖ π_θ)), ``"euclidean"`` (½‖θ − θ_k‖²) or a positive-definite matrix M
    (½ δᵀMδ). Returns a callable on (P,) tensors, differentiable."""
    check_world(bandit, policy, theta_k, "theta_k")
    _check_theta(policy, theta_k, "theta_k")
    eta = check_positive(eta, "eta")
    if not isinstance(linearise, bool):
        raise ValueError(f"linearise: expected True or False, got {linearise!r}")
    theta_k = theta_k.detach()
    dval, _ = _divergence(divergence, bandit, policy, theta_k)
    if linearise:
        J0 = exact_J(bandit, policy, theta_k).detach()
        g0 = exact_gradient(bandit, policy, theta_k)

        def J(t):
            return J0 + g0 @ (t - theta_k)
    else:
        def J(t):
            return exact_J(bandit, policy, t)

    return lambda t: J(t) - dval(t) / eta


def proximal_point_step(bandit: Bandit, policy: SoftmaxPolicy, theta_k: Tensor, eta: float,
                        divergence: str | Tensor = "kl", linearise: bool = False,
                        solver: str = "lbfgs",
                        max_iter: int = 500, lr: float = 0.1, tol: float = 1e-13,
                        polish: int = 3) -> Tensor:
    """argmax_θ J̃(θ) − (1/η) D(θ, θ_k), found numerically from θ = θ_k; returns (P,).

    ``solver="lbfgs"`` (L-BFGS with a strong-Wolfe line search, stopping when the gradient's
    largest entry is below ``tol``, then up to ``polish`` Newton steps with the autograd
    Hessian, each kept only if it shrinks the gradient) or ``"ascent"`` (``max_iter`` plain
    gradient-ascent steps of size ``lr``). See :func:`proximal_objective` for ``divergence`` and ``linearise``.
    With ``linearise=True`` and a quadratic divergence the answer is known in closed form,
    :func:`preconditioned_step`; chapter 06 checks that the two agree.
    A penalty weaker than the objective's curvature may admit no maximiser; the solver then
    stops at ``max_iter`` wherever it got.
    """
    check_world(bandit, policy, theta_k, "theta_k")
    # the objective is built in the working dtype (float32 for bfloat16 θ): solving a
    # bfloat16-rounded objective would stop far from its maximiser
    f = proximal_objective(bandit, policy, to_work(theta_k.detach()), eta, divergence, linearise)
    check_option(solver, "solver", ("lbfgs", "ascent"))
    check_positive_int(max_iter, "max_iter")
    tol = check_positive(tol, "tol")
    check_nonnegative_int(polish, "polish")
    x = to_work(theta_k.detach()).clone()
    obj = f
    if solver == "ascent":
        lr = check_positive(lr, "lr")
        grad = torch.func.grad(obj)
        for _ in range(max_iter):
            x = x + lr * grad(x)
        return x.to(theta_k.dtype)
    if solver != "lbfgs":
        raise ValueError(f"solver: expected 'lbfgs' or 'ascent', got {solver!r}")
    if _is_meta(x):
        return theta_k.detach().clone()
    p = torch.nn.Parameter(x)
    opt = torch.optim.LBFGS([p], lr=1.0, max_iter=max_iter, tolerance_grad=tol,
                            tolerance_change=0.0, history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -obj(p)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    x = p.detach()
    # L-BFGS's line search compares objective values, so it stalls once the progress per
    # step falls below their rounding error (gradients of ~1e-8 in float64). Newton steps
    # use only the gradient and the Hessian, and bring the gradient down to rounding level.
    def grad(t):
        with torch.enable_grad():
            t = t.detach().requires_grad_(True)
            return torch.autograd.grad(obj(t), t)[0]

    def hess(t):  # torch.autograd.functional is ~5× faster than torch.func here
        with torch.enable_grad():
            return torch.autograd.functional.hessian(obj, t.detach())

    for _ in range(polish):
        gx = grad(x)
        if float(gx.abs().max()) <= tol:
            break
        new = x - torch.linalg.lstsq(hess(x), gx[:, None]).solution[:, 0]
        if not bool(torch.isfinite(new).all()) or float(grad(new).abs().max()) >= float(gx.abs().max()):
            break
        x = new
    return x.to(theta_k.dtype)


# -- paths: gradient, natural, proximal point, reference point --------------------------------
UPDATE_RULES = ("gradient", "natural", "proximal_point")


def update_path(bandit: Bandit, policy: SoftmaxPolicy, theta0: Tensor, eta: float, n_steps: int,
                rule: str = "gradient", damping: float | None = None,
                divergence: str | Tensor = "kl", kl_step: float | None = None) -> Tensor:
    """Iterates θ_0, …, θ_n of one update rule, shape (n_steps + 1, P):

    ``"gradient"``: θ + η∇J;  ``"natural"``: θ + η F⁻¹∇J (see :func:`natural_gradient` for
    ``damping``);  ``"proximal_point"``: argmax J(θ) − (1/η) D(θ, θ_k) with ``divergence``.

    ``kl_step=δ`` (gradient and natural only) replaces the fixed η by a trust region: each
    direction d is scaled (:func:`step_to_kl`) so that the step moves the policy by exactly
    KL(π_θk ‖ π_θk+1) = δ, then halved (as in TRPO's line search) until it does not lower
    the exact J (near the optimum a full KL step would overshoot). Under the quadratic model
    of that KL, ½ s² dᵀFd = δ, the direction d = F⁻¹∇J maximises the first-order gain
    ∇Jᵀ(s d) (Cauchy–Schwarz in the F inner product), which is how chapter 06 compares the
    two rules fairly. With ``rule="natural"`` this is TRPO's step (Schulman et al. 2015) on
    exact quantities, and it differs from TRPO's code in two places, both because the world
    is exact: TRPO scales d by the quadratic model s = √(2δ / dᵀFd) and its line search
    checks the *sampled* KL and surrogate, while here the exact KL sets the length and the
    exact J decides the backtracking.
    """
    check_world(bandit, policy, theta0, "theta0")
    _check_theta(policy, theta0, "theta0")
    eta = check_positive(eta, "eta")
    check_positive_int(n_steps, "n_steps")
    if rule not in UPDATE_RULES:
        raise ValueError(f"rule: expected one of {UPDATE_RULES}, got {rule!r}")
    if kl_step is not None:
        kl_step = check_positive(kl_step, "kl_step")
        if rule == "proximal_point":
            raise ValueError("kl_step: only for rule 'gradient' or 'natural' (the proximal "
                             "point sets its own step through η)")
    pts = [theta0.detach()]
    for _ in range(n_steps):
        t = pts[-1]
        if rule == "proximal_point":
            pts.append(proximal_point_step(bandit, policy, t, eta, divergence))
            continue
        d = (exact_gradient(bandit, policy, t) if rule == "gradient"
             else natural_gradient(bandit, policy, t, damping))
        if kl_step is None:
            pts.append(t + eta * d)
            continue
        step = step_to_kl(bandit, policy, t, d, kl_step)
        J0 = exact_J(bandit, policy, t)
        for _ in range(40):  # backtrack (as TRPO does) until the step does not lower J
            if float(exact_J(bandit, policy, t + step * d)) >= float(J0):
                break
            step = step / 2
        else:
            step = step.new_zeros(())
        pts.append(t + step * d)
    return torch.stack(pts)


def step_to_kl(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor, direction: Tensor,
               delta: float, rounds: int = 5, points: int = 33) -> Tensor:
    """The step length s ≥ 0 with KL(π_θ ‖ π_{θ + s·d}) = δ exactly (to ~points^-rounds
    relative precision), a 0-dim tensor; 0 when d does not move the policy.

    For tabular and linear softmax policies the logits are linear in θ, so the KL along a
    ray is convex in s (the log-normaliser is convex) and zero at s = 0: it increases with s
    and the root is unique. The search is
    vectorised: one call of :func:`exact_kl` on a grid of s per round (a bracket on a
    geometric grid around the quadratic model's guess √(2δ / dᵀFd), then linear refinements).
    """
    check_world(bandit, policy, theta, "theta")
    _check_theta(policy, theta)
    _check_theta(policy, direction, "direction")
    delta = check_positive(delta, "delta")
    check_positive_int(rounds, "rounds")
    if check_positive_int(points, "points") < 2:
        raise ValueError(f"points: expected at least 2 grid points, got {points}")
    t = to_work(theta.detach())   # float32 for bfloat16 θ; the step is returned in θ's dtype
    d = direction.detach().to(t.dtype)
    quad = d @ (fisher_information(bandit, policy, t) @ d)
    if _is_meta(t) or not float(quad) > 0:
        return quad.new_zeros(()).to(theta.dtype)
    s0 = torch.sqrt(2 * delta / quad)
    grid = s0 * 2.0 ** torch.arange(-30, 31, dtype=t.dtype, device=t.device)
    kl = _kl(bandit, policy, t, t + grid[:, None] * d)
    above = (kl >= delta).nonzero()
    if above.numel() == 0:  # the KL saturates below δ along this ray: take the largest step
        return grid[-1].to(theta.dtype)
    k = int(above[0])
    lo, hi = (grid[k - 1] if k > 0 else grid.new_zeros(())), grid[k]
    for _ in range(rounds):
        grid = torch.linspace(0, 1, points, dtype=t.dtype, device=t.device) * (hi - lo) + lo
        kl = _kl(bandit, policy, t, t + grid[:, None] * d)
        k = int((kl >= delta).nonzero()[0])
        lo, hi = grid[max(k - 1, 0)], grid[k]
    return hi.to(theta.dtype)


def reference_point_path(bandit: Bandit, policy: SoftmaxPolicy, theta0: Tensor, eta: float,
                         n_steps: int, lr: float, refresh: int | str = 1, tau: float = 0.1,
                         divergence: str | Tensor = "kl") -> Tensor:
    """The reference-point update family, returning θ_0, …, θ_n, shape (n_steps + 1, P).

    Inner gradient steps on the penalised objective with a moving reference θ_ref:

        θ_{t+1} = θ_t + lr · ( ∇J(θ_t) − (1/η) ∇_θ D(θ_t, θ_ref) ),

    then the reference is updated:
      * ``refresh=K`` (an int): θ_ref ← θ_{t+1} every K inner steps. K = 1 is *exactly*
        gradient ascent with step ``lr`` (the penalty's gradient is exactly zero at
        θ = θ_ref); large K solves each proximal-point problem before moving on.
      * ``refresh="ema"``: θ_ref ← (1 − τ) θ_ref + τ θ_{t+1} after every step (τ = 1 is K = 1).

    ``divergence``: ``"kl"`` (KL(π_ref ‖ π_θ)), ``"euclidean"`` or a positive-definite M.
    ∇J is exact. Factor of J(θ): trajectory (how far p_θ may drift from a reference).
    """
    check_world(bandit, policy, theta0, "theta0")
    _check_theta(policy, theta0, "theta0")
    eta = check_positive(eta, "eta")
    lr = check_positive(lr, "lr")
    check_positive_int(n_steps, "n_steps")
    if refresh == "ema":
        tau = check_positive(tau, "tau")
        if tau > 1:
            raise ValueError(f"tau: expected a number in (0, 1], got {tau}")
    elif isinstance(refresh, bool) or not isinstance(refresh, int):
        raise ValueError(f"refresh: expected an integer K ≥ 1 or 'ema', got {refresh!r}")
    else:
        check_positive_int(refresh, "refresh")
    theta = theta0.detach()
    ref = theta
    pts = [theta]
    for t in range(n_steps):
        _, dgrad = _divergence(divergence, bandit, policy, ref)
        theta = theta + lr * (exact_gradient(bandit, policy, theta) - dgrad(theta) / eta)
        if refresh == "ema":
            ref = (1 - tau) * ref + tau * theta
        elif (t + 1) % refresh == 0:
            ref = theta
        pts.append(theta)
    return torch.stack(pts)
