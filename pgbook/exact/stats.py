"""Measuring estimators: many independent estimates, and their statistics against exact values.

An estimator is a surrogate loss ``loss_fn(theta, batch) -> scalar`` whose negative gradient
is the estimate. :func:`estimates_from_loss` evaluates that gradient on M independent
batches at once with ``torch.func.vmap``: one vectorised call, no Python loop over
estimates or samples.

:class:`EstimatorStats` holds the mean, covariance, total variance and standard errors of M
estimates, and tests unbiasedness against an exact gradient in standard errors;
:func:`variance_difference` compares two estimators on common random numbers;
:func:`cosine` and :func:`relative_error` compare a direction with the exact one.
:meth:`EstimatorStats.mse` is the mean squared error against an exact gradient
(‖bias‖² + tr Cov, with its standard error), and :func:`compare_over_seeds` runs methods on
the same seeds and reports means, standard errors and paired differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .._validate import (
    check_finite,
    check_positive,
    check_same_device,
    check_shape,
    check_tensor,
    reject_unknown_options,
)

__all__ = [
    "EstimatorStats",
    "SeedComparison",
    "compare_over_seeds",
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
    check_tensor(theta, "theta", ndim=1, floating=True, nonempty=True)  # (P,), P ≥ 1
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

    def _check_exact(self, exact: Tensor) -> Tensor:
        """``exact`` a finite floating (P,) vector on the estimates' device."""
        check_shape(exact, "exact", tuple(self.mean.shape))
        check_tensor(exact, "exact", floating=True)
        check_same_device(estimates=self.estimates, exact=exact)
        return check_finite(exact, "exact")

    def z_scores(self, exact: Tensor) -> Tensor:
        """(mean − exact) / stderr per coordinate; coordinates with zero spread give 0 when
        the mean matches exactly and ±inf otherwise."""
        self._check_exact(exact)
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

    def _sq_errors(self, exact: Tensor) -> Tensor:
        """‖ĝ_m − g‖² for each estimate, (M,)."""
        self._check_exact(exact)
        return (self.estimates - exact.to(self.estimates.dtype)).pow(2).sum(-1)

    def mse(self, exact: Tensor) -> Tensor:
        """Mean squared error against the exact gradient g = ``exact`` (P,), a scalar:

            MSE = E‖ĝ − g‖² = ‖E ĝ − g‖² + tr Cov[ĝ],   estimated by (1/M) Σ_m ‖ĝ_m − g‖²

        (unbiased). It equals :meth:`bias_squared` + :attr:`total_variance` exactly, so a
        biased estimator with a small variance can beat an unbiased one; the standard error
        is :meth:`mse_stderr`."""
        return self._sq_errors(exact).mean()

    def mse_stderr(self, exact: Tensor) -> Tensor:
        """Standard error of :meth:`mse`: std_m(‖ĝ_m − g‖²) / √M, a scalar."""
        return self._sq_errors(exact).std(unbiased=True) / math.sqrt(self.n)

    def bias_squared(self, exact: Tensor) -> Tensor:
        """‖E ĝ − g‖², estimated without bias: ‖ḡ − g‖² − tr Cov/M (the squared distance of
        the mean alone overstates it by the mean's own variance, tr Cov/M; this estimate can
        be slightly negative for an unbiased estimator). A scalar."""
        self._sq_errors(exact)
        return (self.mean - exact.to(self.mean.dtype)).pow(2).sum() - self.total_variance / self.n

    def relative_error(self, exact: Tensor) -> float:
        """‖mean − exact‖ / ‖exact‖."""
        self._check_exact(exact)
        return float(relative_error(self.mean, exact).detach())

    def summary(self, exact: Tensor | None = None) -> str:
        s = f"M={self.n}  total variance={float(self.total_variance):.4g}"
        if exact is not None:
            self._check_exact(exact)
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
    check_tensor(u, "u", floating=True, nonempty=True)
    check_tensor(v, "v", floating=True, nonempty=True)
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
    check_tensor(estimate, "estimate", floating=True, nonempty=True)
    check_tensor(exact, "exact", ndim=1, floating=True, nonempty=True)
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


# -- comparing methods over seeds ------------------------------------------------------------
@dataclass(frozen=True)
class SeedComparison:
    """Results of K methods on the same S seeds (:func:`compare_over_seeds`).

    ``values`` (K, S) float64 on the CPU: row k is method ``methods[k]``, column s seed
    ``seeds[s]``. Because every method ran on the same seeds, differences are *paired*: the
    noise a seed shares between methods (the same world, the same first batch) cancels in
    :meth:`difference`, whose standard error is often far smaller than either method's own.
    """

    methods: tuple
    seeds: tuple
    values: Tensor

    @property
    def mean(self) -> Tensor:
        """Mean over seeds, (K,)."""
        return self.values.mean(1)

    @property
    def stderr(self) -> Tensor:
        """Standard error of each mean, std over seeds / √S, (K,)."""
        return self.values.std(1, unbiased=True) / math.sqrt(len(self.seeds))

    def _row(self, name: str) -> Tensor:
        if name not in self.methods:
            raise ValueError(f"method: expected one of {list(self.methods)}, got {name!r}")
        return self.values[self.methods.index(name)]

    def difference(self, a: str, b: str) -> tuple[Tensor, Tensor]:
        """Paired difference of methods ``a`` − ``b``: the mean over seeds of
        d_s = v_a,s − v_b,s and its standard error std(d)/√S (two scalars). ``a`` is
        better at z standard errors when d/se = z (for a quantity to maximise)."""
        d = self._row(a) - self._row(b)
        return d.mean(), d.std(unbiased=True) / math.sqrt(len(self.seeds))

    def summary(self, baseline: str | None = None) -> str:
        """One line per method: mean ± standard error, and the paired difference to
        ``baseline`` (default: the first method)."""
        base = self.methods[0] if baseline is None else baseline
        self._row(base)
        width = max(len(str(m)) for m in self.methods)
        lines = [f"{len(self.seeds)} seeds; paired differences against {base!r}"]
        for name, mu, se in zip(self.methods, self.mean.tolist(), self.stderr.tolist()):
            line = f"{name!s:<{width}}  {mu:.4g} ± {se:.2g}"
            if name != base:
                d, dse = self.difference(name, base)
                line += f"   diff {float(d):+.3g} ± {float(dse):.2g}"
            lines.append(line)
        return "\n".join(lines)


def _scalar(value, method, seed) -> float:
    where = f"fn returned for method {method!r}, seed {seed}" if method is not None else \
        f"fn returned for seed {seed}"
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{where}: expected a number, got a tensor of shape "
                             f"{tuple(value.shape)}")
        value = value.detach().cpu().item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {value}")
    return value


@reject_unknown_options
def compare_over_seeds(fn: Callable, seeds: Iterable[int], *,
                       methods: Sequence[str] | None = None) -> SeedComparison:
    """Run every method on the same seeds and compare: means, standard errors, paired
    differences (:class:`SeedComparison`).

    Two forms:

    * ``methods=["GRPO", "Mine"]``: ``fn(method, seed) -> number`` is called for every
      method and seed (e.g. the final reward of a training run, or an estimator's MSE);
    * ``methods=None``: ``fn(seed) -> {name: number}`` returns every method's number for
      one seed (when the methods share the work of a seed, such as one batch of samples);
      every seed must return the same names.

    ``seeds``: at least two distinct integers. A number is an int, a float or a one-element
    tensor, and must be finite. Use one seed for everything random in a run (the world,
    the model's initialisation, the sampler), so that ``seed`` alone fixes the result.
    """
    if not callable(fn):
        raise ValueError(f"fn: expected a callable, got {type(fn).__name__}")
    seeds = tuple(seeds)
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int)]
    if bad:
        raise ValueError(f"seeds: expected integers, got {bad[0]!r} ({type(bad[0]).__name__})")
    if len(seeds) < 2:
        raise ValueError(f"seeds: expected at least 2 seeds (a standard error needs two), got "
                         f"{len(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: expected distinct seeds, got {list(seeds)}")
    if methods is not None:
        if isinstance(methods, str) or not isinstance(methods, Sequence) or not methods:
            raise ValueError(f"methods: expected a non-empty list of names, got {methods!r}")
        methods = tuple(methods)
        if len(set(methods)) != len(methods):
            raise ValueError(f"methods: expected distinct names, got {list(methods)}")
        rows = [[_scalar(fn(m, s), m, s) for s in seeds] for m in methods]
    else:
        results = []
        for s in seeds:
            out = fn(s)
            if not isinstance(out, dict) or not out:
                raise ValueError(f"fn returned for seed {s}: expected a non-empty dict "
                                 f"{{method: number}} (or pass methods=[...] and "
                                 f"fn(method, seed)), got {type(out).__name__}")
            if results and list(out) != list(results[0]):
                raise ValueError(f"fn returned for seed {s}: expected the methods "
                                 f"{list(results[0])} (those of seed {seeds[0]}), got "
                                 f"{list(out)}")
            results.append(out)
        methods = tuple(results[0])
        rows = [[_scalar(r[m], m, s) for r, s in zip(results, seeds)] for m in methods]
    return SeedComparison(methods, seeds, torch.tensor(rows, dtype=torch.float64))
