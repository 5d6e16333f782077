"""Measuring estimators: many independent estimates, and their statistics against exact values.

An estimator is a surrogate loss ``loss_fn(theta, batch) -> scalar`` whose negative gradient
is the estimate. :func:`estimates_from_loss` evaluates that gradient on M independent
batches at once with ``torch.func.vmap``: one vectorised call, no Python loop over
estimates or samples.

:class:`EstimatorStats` holds the mean, covariance, total variance and standard errors of M
estimates, and tests unbiasedness against an exact gradient in standard errors;
:func:`variance_difference` compares two estimators on common random numbers;
:func:`cosine` and :func:`relative_error` compare a direction with the exact one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .._validate import check_finite, check_positive, check_same_device, check_shape, check_tensor

__all__ = [
    "EstimatorStats",
    "cosine",
    "estimates_from_loss",
    "relative_error",
    "variance_difference",
]


def estimates_from_loss(loss_fn: Callable[..., Tensor], theta: Tensor,
                        batches: Tensor | tuple[Tensor, ...]) -> Tensor:
    """−∇_θ loss_fn(θ, batch_m) for each of M batches stacked along dim 0 → (M, P).

    ``batches`` is a tensor or a tuple of tensors, each with a leading dimension M;
    ``loss_fn`` sees one batch (the same structure without that dimension) at a time.
    Inside the transform the batches' values cannot be read, so ids in them must be checked
    before (the library's callers do).
    """
    if not callable(loss_fn):
        raise ValueError(f"loss_fn: expected a callable loss_fn(theta, batch), got "
                         f"{type(loss_fn).__name__}")
    check_tensor(theta, "theta", floating=True)
    parts = batches if isinstance(batches, tuple) else (batches,)
    if not parts:
        raise ValueError("batches: expected a tensor or a tuple of tensors, got ()")
    for k, b in enumerate(parts):
        check_tensor(b, f"batches[{k}]")
        if b.dim() < 1 or b.shape[0] != parts[0].shape[0] or b.shape[0] == 0:
            raise ValueError(f"batches: expected tensors with one leading dimension M ≥ 1, got "
                             f"shapes {[tuple(x.shape) for x in parts]}")
    check_same_device(theta=theta, **{f"batches[{k}]": b for k, b in enumerate(parts)})
    grad = torch.func.grad(loss_fn)
    return -torch.func.vmap(grad, in_dims=(None, 0))(theta.detach(), batches)


@dataclass
class EstimatorStats:
    """Statistics of M independent estimates (M, P) of a P-dimensional gradient."""

    estimates: Tensor

    def __post_init__(self):
        check_tensor(self.estimates, "estimates", ndim=2, floating=True)
        if self.estimates.shape[0] < 2:
            raise ValueError(
                f"estimates: expected at least 2 estimates, got {self.estimates.shape[0]}"
            )
        check_finite(self.estimates, "estimates")

    @property
    def n(self) -> int:
        return self.estimates.shape[0]

    @property
    def mean(self) -> Tensor:
        return self.estimates.mean(0)

    @property
    def cov(self) -> Tensor:
        """Sample covariance (P, P), unbiased (divides by M − 1)."""
        c = self.estimates - self.mean
        return c.T @ c / (self.n - 1)

    @property
    def total_variance(self) -> Tensor:
        """tr Cov = E‖ĝ − E ĝ‖², the sum of per-coordinate variances."""
        return self.estimates.var(0, unbiased=True).sum()

    @property
    def total_variance_stderr(self) -> Tensor:
        """Standard error of :attr:`total_variance` itself, a scalar:

            se ≈ std_m( ‖ĝ_m − ḡ‖² ) / √M,

        since the total variance is (essentially) the mean of the M squared distances
        ‖ĝ_m − ḡ‖². It lets a chapter compare a Monte-Carlo variance with an exact one, or
        two variances with each other, in standard errors rather than an arbitrary tolerance.
        """
        d2 = (self.estimates - self.mean).pow(2).sum(-1)
        return d2.std(unbiased=True) / math.sqrt(self.n)

    @property
    def stderr(self) -> Tensor:
        """Standard error of each coordinate of the mean, (P,)."""
        return self.estimates.std(0, unbiased=True) / math.sqrt(self.n)

    def z_scores(self, exact: Tensor) -> Tensor:
        """(mean − exact) / stderr per coordinate; coordinates with zero spread give 0 when
        the mean matches exactly and ±inf otherwise."""
        check_shape(exact, "exact", self.mean.shape)
        check_finite(exact, "exact")
        check_same_device(estimates=self.estimates, exact=exact)
        diff = self.mean - exact.to(self.mean.dtype)
        se = self.stderr
        tiny = 1e3 * torch.finfo(se.dtype).eps * (1 + exact.abs().max())
        safe = torch.where(se > 0, se, torch.ones_like(se))
        z = diff / safe
        return torch.where(se > 0, z, torch.where(diff.abs() <= tiny, torch.zeros_like(z),
                                                   torch.sign(diff) * math.inf))

    def max_abs_z(self, exact: Tensor) -> float:
        return float(self.z_scores(exact).detach().abs().max())

    def is_unbiased(self, exact: Tensor, z: float = 4.0) -> bool:
        """True when every coordinate of the mean lies within ``z`` standard errors of
        ``exact``. With P coordinates and z = 4 the false-alarm rate is below P·6e-5."""
        z = check_positive(z, "z")
        return self.max_abs_z(exact) < z

    def relative_error(self, exact: Tensor) -> float:
        """‖mean − exact‖ / ‖exact‖."""
        return float(relative_error(self.mean, exact).detach())

    def summary(self, exact: Tensor | None = None) -> str:
        s = f"M={self.n}  total variance={float(self.total_variance):.4g}"
        if exact is not None:
            s += (f"  ‖mean−∇J‖/‖∇J‖={self.relative_error(exact):.3g}"
                  f"  max|z|={self.max_abs_z(exact):.2f}")
        return s


def variance_difference(a: EstimatorStats, b: EstimatorStats) -> tuple[Tensor, Tensor]:
    """tr Cov[a] − tr Cov[b] and its standard error, for two estimators measured on the
    *same* batches (common random numbers: the m-th estimate of each used the same draws).

    The difference is the mean of d_m = ‖a_m − ā‖² − ‖b_m − b̄‖² (rescaled by M/(M−1)), and
    its standard error std(d)/√M is far smaller than either variance's own error when the
    two estimators are strongly correlated, so small variance gaps can be resolved.
    Returns two scalars.
    """
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, EstimatorStats):
            raise ValueError(f"{name}: expected an EstimatorStats, got {type(x).__name__}")
    if a.estimates.shape != b.estimates.shape:
        raise ValueError(
            f"a and b: expected estimates of the same shape (paired batches), got "
            f"{tuple(a.estimates.shape)} and {tuple(b.estimates.shape)}"
        )
    check_same_device(a=a.estimates, b=b.estimates)
    scale = a.n / (a.n - 1)
    d = ((a.estimates - a.mean).pow(2).sum(-1) - (b.estimates - b.mean).pow(2).sum(-1)) * scale
    return d.mean(), d.std(unbiased=True) / math.sqrt(a.n)


def cosine(u: Tensor, v: Tensor) -> Tensor:
    """Cosine similarity of two vectors (or of each row of u with v), shape ``u.shape[:-1]``
    (0 where either vector is zero, torch's convention)."""
    check_tensor(u, "u", floating=True)
    check_tensor(v, "v", floating=True)
    check_same_device(u=u, v=v)
    if u.dim() < 1 or v.dim() < 1 or u.shape[-1] != v.shape[-1] or v.dim() > u.dim():
        raise ValueError(f"v: expected a vector of u's last dimension (or rows that broadcast "
                         f"against u), got shapes {tuple(u.shape)} and {tuple(v.shape)}")
    check_finite(u, "u")
    check_finite(v, "v")
    return torch.nn.functional.cosine_similarity(u, v.expand_as(u), dim=-1)


def relative_error(estimate: Tensor, exact: Tensor) -> Tensor:
    """‖estimate − exact‖ / ‖exact‖ over the last dimension (rows of ``estimate`` against one
    ``exact`` vector broadcast); shape ``estimate.shape[:-1]``."""
    check_tensor(estimate, "estimate", floating=True)
    check_tensor(exact, "exact", floating=True)
    check_same_device(estimate=estimate, exact=exact)
    check_finite(estimate, "estimate")
    check_finite(exact, "exact")
    if estimate.dim() < 1 or exact.dim() != 1 or estimate.shape[-1:] != exact.shape[-1:]:
        raise ValueError(f"estimate: expected last dimension {exact.shape[-1]} (that of exact), "
                         f"got shape {tuple(estimate.shape)}")
    den = exact.norm(dim=-1)
    if den.device.type != "meta" and bool((den == 0).any()):
        raise ValueError("exact: the relative error of an estimate of a zero vector is undefined")
    return (estimate - exact.to(estimate.dtype)).norm(dim=-1) / den.to(estimate.dtype)
