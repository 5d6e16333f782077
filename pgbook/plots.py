"""Figures the chapters share. Every function draws on a given matplotlib ``Axes`` (or makes
one) and returns it, so a chapter can compose panels and a widget can redraw one.

Figures are kept small (``setup()`` sets a modest DPI) so executed notebooks stay light.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from torch import Tensor

from ._validate import (
    check_flag,
    check_float_dtype,
    check_number,
    check_positive_int,
    check_probs,
)

if TYPE_CHECKING:
    from .registry import Method

__all__ = [
    "SIDE_COLORS",
    "coordinate_errorbars",
    "curves",
    "curves_with_derivative",
    "ellipse",
    "gradient_cloud",
    "landscape",
    "level_line",
    "map_geometry",
    "map_layout",
    "method_map",
    "panel_grid",
    "path",
    "policy_bars",
    "runs_band",
    "scaling",
    "setup",
    "variance_curve",
]

#: what the plotting functions accept as data: a tensor, an array or a sequence of numbers
ArrayLike = Tensor | np.ndarray | Sequence[float]

SIDE_COLORS = {"reward": "#d95f02", "trajectory": "#1b9e77", "both": "#7570b3",
               "objective": "#444444", "none": "#999999"}


def setup(dpi: int = 72) -> None:
    """Book style: small figures, readable fonts, no top/right spines."""
    if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not dpi > 0:
        raise ValueError(f"dpi: expected a positive number, got {dpi!r}")
    plt.rcParams.update({
        "figure.dpi": dpi, "savefig.dpi": dpi, "figure.figsize": (6.0, 3.6),
        "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
        "grid.alpha": 0.25, "font.size": 10, "legend.frameon": False,
    })


def _ax(ax: Axes | None) -> Axes:
    if ax is not None and not isinstance(ax, Axes):
        raise ValueError(f"ax: expected a matplotlib Axes (or None), got {type(ax).__name__}")
    return ax if ax is not None else plt.subplots()[1]


def _np(x: ArrayLike, name: str = "data", ndim: int | None = None) -> np.ndarray:
    """``x`` as a float64 array (of ``ndim`` dimensions when given): a ValueError names the
    argument if it is not real numeric data of that shape (bool and complex are refused)."""
    if isinstance(x, Tensor):
        if x.device.type == "meta":
            raise ValueError(f"{name}: a meta tensor holds no values to draw")
        if x.dtype == torch.bool or x.is_complex():
            raise ValueError(f"{name}: expected real numbers, got a {x.dtype} tensor")
    elif isinstance(x, np.ndarray) and x.dtype.kind in "bc":
        raise ValueError(f"{name}: expected real numbers, got an array of dtype {x.dtype}")
    try:
        if isinstance(x, Tensor):
            a = x.detach().to("cpu", torch.float64).numpy()
        else:
            a = np.asarray(x, dtype=float)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name}: expected numbers (a tensor, an array or a list), got "
                         f"{type(x).__name__}") from None
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimension(s), got shape {a.shape}")
    return a


def _data(x: ArrayLike, name: str, ndim: int | None = None, finite: bool = True,
          low: float | None = None, strict: bool = False) -> np.ndarray:
    """:func:`_np`, and at least one value, all finite when ``finite``, all ≥ ``low`` (> when
    ``strict``) when given: a ValueError names the argument otherwise."""
    a = _np(x, name, ndim)
    if a.size == 0:
        raise ValueError(f"{name}: expected at least one value, got shape {a.shape}")
    if finite and not np.isfinite(a).all():
        raise ValueError(f"{name}: expected finite values, got {int((~np.isfinite(a)).sum())} "
                         f"NaN/inf of {a.size}")
    if low is not None and not (a > low if strict else a >= low).all():
        raise ValueError(f"{name}: expected values {'>' if strict else '≥'} {low:g}, got "
                         f"minimum {np.nanmin(a):.4g}")
    return a


def _pair(x: object, name: str, what: str, positive: bool = False) -> tuple[float, float]:
    """``x`` as two finite numbers (``what`` says what they are), > 0 when ``positive``."""
    if isinstance(x, (str, bytes, Mapping)) or not isinstance(x, (Sequence, np.ndarray, Tensor)) \
            or getattr(x, "ndim", 1) != 1 or len(x) != 2:
        raise ValueError(f"{name}: expected a pair {what} of two numbers, got {x!r}")
    a, b = (check_number(v, name) for v in x)
    if positive and not (a > 0 and b > 0):
        raise ValueError(f"{name}: expected a pair {what} of two positive numbers, got {x!r}")
    return a, b


def _names(names: object, n: int, name: str) -> list[str]:
    """``names`` as a list of ``n`` strings (a list or tuple, not a bare string)."""
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence) \
            or len(names) != n or not all(isinstance(s, str) for s in names):
        raise ValueError(f"{name}: expected a list of {n} names (strings), got {names!r}")
    return list(names)


def _closes_on_error(fn: Callable) -> Callable:
    """Close the figures ``fn`` opened if it fails (never one the caller passed via ``ax=``),
    and report an error matplotlib raises on a drawing option as a ValueError that names
    the pgbook function."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        before = set(plt.get_fignums())
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            for num in set(plt.get_fignums()) - before:
                plt.close(num)
            tb = e.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            mod = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
            if isinstance(e, (TypeError, AttributeError, ValueError)) \
                    and mod.split(".")[0] == "matplotlib":
                raise ValueError(f"{fn.__name__}: matplotlib refused a drawing option "
                                 f"({type(e).__name__}: {e})") from e
            raise
    return wrapper


@_closes_on_error
def landscape(f: Callable[[Tensor], Tensor], xlim: tuple[float, float] = (-3, 3),
              ylim: tuple[float, float] = (-3, 3), n: int = 61, ax: Axes | None = None,
              levels: int = 20, cmap: str = "viridis", dtype: torch.dtype = torch.float64,
              device: torch.device | str = "cpu", colorbar: bool = True) -> Axes:
    """Contours of a scalar function of a 2-vector θ, e.g. ``f = lambda t: exact_J(b, p, t)``.

    ``f`` must accept a batch of parameters (..., 2) and return (...); the grid is evaluated
    in one call.
    """
    if not callable(f):
        raise ValueError(f"f: expected a function of θ (..., 2), got {type(f).__name__}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n: expected an integer ≥ 2 (grid points per axis), got {n!r}")
    lims = [_pair(lim, name, "(low, high)") for name, lim in (("xlim", xlim), ("ylim", ylim))]
    for name, (lo, hi) in zip(("xlim", "ylim"), lims):
        if lo == hi:
            raise ValueError(f"{name}: expected two different numbers (low, high), got {lo, hi}")
    check_float_dtype(dtype)
    check_flag(colorbar, "colorbar")
    if ax is not None:
        _ax(ax)
    try:
        xs = torch.linspace(*lims[0], n, dtype=dtype, device=device)
        ys = torch.linspace(*lims[1], n, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"device: expected a torch device the grid can be made on, got "
                         f"{device!r} ({e})") from None
    if xs.device.type == "meta":
        raise ValueError("device: expected a device with values to draw, got meta")
    X, Y = torch.meshgrid(xs, ys, indexing="xy")
    with torch.no_grad():
        Z = f(torch.stack([X, Y], -1))
    if not isinstance(Z, (Tensor, np.ndarray)) or tuple(Z.shape) != (n, n):
        raise ValueError(f"f: expected f(θ) of shape ({n}, {n}) for θ of shape ({n}, {n}, 2), "
                         f"got {type(Z).__name__} of shape {tuple(getattr(Z, 'shape', ()))}")
    Zn = _np(Z, "f(θ)")
    if not np.isfinite(Zn).all():
        raise ValueError(f"f: expected finite values on the grid, got "
                         f"{int((~np.isfinite(Zn)).sum())} NaN/inf of {Zn.size}")
    ax = _ax(ax)
    cs = ax.contourf(_np(X), _np(Y), Zn, levels=levels, cmap=cmap)
    ax.contour(_np(X), _np(Y), Zn, levels=levels, colors="k", linewidths=0.3, alpha=0.5)
    if colorbar:
        ax.figure.colorbar(cs, ax=ax, shrink=0.85)
    ax.set_xlabel(r"$\theta_1$")
    ax.set_ylabel(r"$\theta_2$")
    ax.grid(False)
    return ax


@_closes_on_error
def path(points: ArrayLike, ax: Axes | None = None, label: str | None = None, color: str = "w",
         marker: str = "o", ms: float = 2.5, **kw) -> Axes:
    """Draw an optimisation path given as (K, 2) points."""
    p = _data(points, "points", 2)
    if p.shape[1] != 2:
        raise ValueError(f"points: expected shape (K, 2), got {p.shape}")
    ax = _ax(ax)
    ax.plot(p[:, 0], p[:, 1], color=color, marker=marker, ms=ms, lw=1.2, label=label, **kw)
    return ax


@_closes_on_error
def gradient_cloud(estimates: Tensor, exact: Tensor, dims: tuple[int, int] = (0, 1),
                   ax: Axes | None = None, label: str | None = None, color: str = "C0",
                   max_points: int = 2000, alpha: float = 0.25) -> Axes:
    """Scatter two coordinates of M gradient estimates around the exact gradient (a star)
    and their sample mean (a cross)."""
    full = _data(estimates, "estimates", 2)
    g = _data(exact, "exact", 1)
    if full.shape[1] != g.shape[0]:
        raise ValueError(f"exact: expected {full.shape[1]} coordinates (those of the "
                         f"estimates), got shape {g.shape}")
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence) or len(dims) != 2 \
            or not all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k < g.shape[0]
                       for k in dims):
        raise ValueError(f"dims: expected two coordinates in [0, {g.shape[0]}), got {dims!r}")
    i, j = dims
    check_positive_int(max_points, "max_points")
    ax = _ax(ax)
    e = full[:max_points]
    ax.scatter(e[:, i], e[:, j], s=4, alpha=alpha, color=color, label=label, lw=0)
    m = full.mean(0)
    ax.plot(g[i], g[j], "k*", ms=12, label=r"exact $\nabla J$")
    ax.plot(m[i], m[j], "x", color="crimson", ms=9, mew=2, label="mean of estimates")
    ax.set_xlabel(rf"$\hat g_{{{i}}}$")
    ax.set_ylabel(rf"$\hat g_{{{j}}}$")
    return ax


@_closes_on_error
def variance_curve(bs: ArrayLike, variances: ArrayLike, ax: Axes | None = None,
                   label: str | None = None, optimal: tuple[float, float] | None = None,
                   color: str = "C0", mc: tuple[ArrayLike, ArrayLike] | None = None,
                   current: tuple[float, float] | None = None) -> Axes:
    """Total variance against a baseline value; ``optimal = (b*, var*)`` is marked, and
    ``mc = (bs, vars)`` adds Monte-Carlo points; ``current = (b, var)`` marks the baseline a
    widget has selected (a dashed vertical line and a dot)."""
    b, v = _data(bs, "bs", 1), _data(variances, "variances", 1)
    if b.shape != v.shape:
        raise ValueError(f"variances: expected shape {b.shape} (that of bs), got {v.shape}")
    if mc is not None:
        if isinstance(mc, (str, bytes)) or not isinstance(mc, Sequence) or len(mc) != 2:
            raise ValueError(f"mc: expected a pair (bs, vars) of two vectors, got {mc!r}")
        mb, mv = _data(mc[0], "mc[0]", 1), _data(mc[1], "mc[1]", 1)
        if mb.shape != mv.shape:
            raise ValueError(f"mc[1]: expected shape {mb.shape} (that of mc[0]), got {mv.shape}")
    if optimal is not None:
        optimal = _pair(optimal, "optimal", "(b*, var*)")
    if current is not None:
        current = _pair(current, "current", "(b, var)")
    ax = _ax(ax)
    ax.plot(b, v, color=color, label=label)
    if mc is not None:
        ax.plot(mb, mv, "o", color=color, ms=4, label="Monte Carlo")
    if optimal is not None:
        ax.plot(optimal[0], optimal[1], "r*", ms=12, label="optimal baseline")
    if current is not None:
        ax.axvline(current[0], color="k", ls="--", lw=0.8)
        ax.plot(current[0], current[1], "ko", ms=6, label=f"b = {current[0]:.3g}")
    ax.set_xlabel("baseline b")
    ax.set_ylabel(r"tr Cov$[\hat g]$")
    return ax


@_closes_on_error
def curves(xs: ArrayLike, ys_by_label: Mapping[str, ArrayLike], ax: Axes | None = None,
           xlabel: str = "step", ylabel: str = "", target: float | None = None,
           logy: bool = False) -> Axes:
    """Several learning curves; ``target`` draws a dashed horizontal line (e.g. max J)."""
    if not isinstance(ys_by_label, Mapping):
        raise ValueError(f"ys_by_label: expected a dict {{label: ys}}, got "
                         f"{type(ys_by_label).__name__}")
    if not ys_by_label:
        raise ValueError("ys_by_label: expected at least one curve {label: ys}, got an empty dict")
    x = _data(xs, "xs", 1)
    ys = {label: _np(y, f"ys_by_label[{label!r}]", 1) for label, y in ys_by_label.items()}
    for label, y in ys.items():
        if y.shape != x.shape:
            raise ValueError(f"ys_by_label[{label!r}]: expected shape {x.shape} (that of xs), "
                             f"got {y.shape}")
    if target is not None:
        target = check_number(target, "target")
    check_flag(logy, "logy")
    ax = _ax(ax)
    for k, (label, y) in enumerate(ys.items()):
        ax.plot(x, y, label=label, color=f"C{k}")
    if target is not None:
        ax.axhline(target, ls="--", color="k", lw=1, label="optimum")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return ax


@_closes_on_error
def scaling(ns: ArrayLike, values: ArrayLike, reference: ArrayLike | None = None,
            stderr: ArrayLike | None = None, ax: Axes | None = None, label: str = "Monte Carlo",
            ref_label: str = "exact", ylabel: str = "", color: str = "C0") -> Axes:
    """A quantity against the sample size N on log-log axes: measured ``values`` (K,) at
    ``ns`` (K,) as dots with ±2 ``stderr`` bars, and the exact ``reference`` (K,) as a line
    (e.g. σ/√N for an error, tr Σ/N for a variance). Returns the axes."""
    n = _data(ns, "ns (log axis)", 1, low=0, strict=True)
    v = _data(values, "values (log axis)", 1, low=0, strict=True)
    ref = None if reference is None else _data(reference, "reference (log axis)", 1, low=0,
                                               strict=True)
    se = None if stderr is None else _data(stderr, "stderr", 1, low=0)
    for name, x in (("values", v), ("reference", ref), ("stderr", se)):
        if x is not None and x.shape != n.shape:
            raise ValueError(f"{name}: expected shape {n.shape} (that of ns), got {x.shape}")
    ax = _ax(ax)
    if ref is not None:
        ax.plot(n, ref, "-", color="k", lw=1, label=ref_label)
    yerr = None if se is None else 2 * se
    ax.errorbar(n, v, yerr=yerr, fmt="o", color=color, ms=4, capsize=2, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("samples per estimate N")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return ax


@_closes_on_error
def coordinate_errorbars(reference: ArrayLike, mean: ArrayLike, stderr: ArrayLike,
                         ax: Axes | None = None, labels: Sequence[str] | None = None,
                         ref_label: str = "exact", mc_label: str = "Monte Carlo: mean ± 2 se",
                         color: str = "C0", ylabel: str = "gradient") -> Axes:
    """Compare a vector estimate with an exact one, coordinate by coordinate: the exact
    ``reference`` (P,) as grey bars, the Monte-Carlo ``mean`` (P,) as dots with ±2 ``stderr``
    bars. ``labels`` names the coordinates (default: their indices). Returns the axes."""
    ref, m, se = _np(reference, "reference"), _np(mean, "mean"), _np(stderr, "stderr")
    if not (ref.shape == m.shape == se.shape) or ref.ndim != 1:
        raise ValueError(f"reference, mean, stderr: expected three vectors of one shape (P,), got "
                         f"{ref.shape}, {m.shape}, {se.shape}")
    ref, m, se = _data(ref, "reference"), _data(m, "mean"), _data(se, "stderr", low=0)
    if labels is not None:
        labels = _names(labels, len(ref), "labels")
    ax = _ax(ax)
    k = np.arange(len(ref))
    ax.bar(k, ref, color="#bbbbbb", label=ref_label)
    ax.errorbar(k, m, yerr=2 * se, fmt="o", color=color, ms=4, capsize=2, label=mc_label)
    ax.set_xticks(k, labels if labels is not None else [str(i) for i in k], fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return ax


@_closes_on_error
def curves_with_derivative(x: ArrayLike, curves: Mapping[str, ArrayLike], derivative: ArrayLike,
                           ax: Axes | None = None, vlines: Iterable[float] = (),
                           xlabel: str = "", ylabel: str = "",
                           dlabel: str = "derivative (right axis)",
                           styles: dict | None = None) -> tuple[Axes, Axes]:
    """Several curves y(x) on ``ax`` and one ``derivative`` dy/dx on a twin right axis (thin
    black), with vertical guides at ``vlines``; ``styles`` maps a label to ``ax.plot`` keywords.
    Returns ``(ax, twin)``."""
    xs = _data(x, "x", 1, finite=False)
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError(f"curves: expected a dict {{label: ys}} with at least one curve, got "
                         f"{curves!r}")
    ys = {label: _np(y, f"curves[{label!r}]", 1) for label, y in curves.items()}
    dy = _np(derivative, "derivative", 1)
    for name, y in [*((f"curves[{k!r}]", v) for k, v in ys.items()), ("derivative", dy)]:
        if y.shape != xs.shape:
            raise ValueError(f"{name}: expected shape {xs.shape} (that of x), got {y.shape}")
    if styles is not None and (not isinstance(styles, Mapping) or not all(
            isinstance(s, Mapping) and all(isinstance(k, str) for k in s)
            for s in styles.values())):
        raise ValueError(f"styles: expected a dict {{label: {{plot keyword: value}}}}, got "
                         f"{styles!r}")
    if isinstance(vlines, (str, bytes)) or not isinstance(vlines, Iterable):
        raise ValueError(f"vlines: expected a list of x positions, got {vlines!r}")
    vlines = [check_number(v, "vlines") for v in vlines]
    if not isinstance(xlabel, str):
        raise ValueError(f"xlabel: expected a string, got {xlabel!r}")
    ax = _ax(ax)
    label = None
    try:
        for label, y in ys.items():
            ax.plot(xs, y, label=label, **(styles or {}).get(label, {}))
    except (AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"styles[{label!r}]: matplotlib refused these plot keywords: "
                         f"{e}") from None
    twin = ax.twinx()
    twin.plot(xs, dy, color="k", lw=0.8, alpha=0.6)
    twin.set_ylabel("d / dx" if not xlabel.strip() else f"d / d{xlabel.split()[-1]}",
                    fontsize=8)
    twin.grid(False)
    ax.plot([], [], color="k", lw=0.8, alpha=0.6, label=dlabel)
    for v in vlines:
        ax.axvline(v, color="gray", lw=0.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return ax, twin


@_closes_on_error
def ellipse(center: ArrayLike, M: ArrayLike, level: float, ax: Axes | None = None, n: int = 100,
            **kw: object) -> Axes:
    """Draw the ellipse {θ : (θ − c)ᵀ M (θ − c) = level} in two dimensions (``M`` (2, 2)
    positive definite, ``center`` (2,)); ``kw`` go to ``ax.plot``. Returns the axes."""
    Mn, c = _np(M, "M"), _np(center, "center")
    if Mn.shape != (2, 2) or c.shape != (2,):
        raise ValueError(f"M, center: expected shapes (2, 2) and (2,), got {Mn.shape} and {c.shape}")
    if not np.isfinite(c).all():
        raise ValueError(f"center: expected a finite 2-vector, got {c.tolist()}")
    if isinstance(level, complex) or check_number(level, "level") <= 0:
        raise ValueError(f"level: expected a finite number > 0, got {level!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 3:
        raise ValueError(f"n: expected an integer ≥ 3 (points on the ellipse), got {n!r}")
    if not (np.isfinite(Mn).all() and np.allclose(Mn, Mn.T)
            and np.all(np.linalg.eigvalsh((Mn + Mn.T) / 2) > 0)):
        raise ValueError(f"M: expected a finite symmetric positive definite (2, 2) matrix, got "
                         f"{Mn.tolist()}")
    ax = _ax(ax)
    L = np.linalg.cholesky(np.linalg.inv(Mn))        # δ = √level · L u with |u| = 1
    angle = np.linspace(0, 2 * np.pi, n)
    pts = (np.sqrt(float(level)) * L @ np.stack([np.cos(angle), np.sin(angle)])).T + c
    ax.plot(pts[:, 0], pts[:, 1], **kw)
    return ax


@_closes_on_error
def level_line(point: ArrayLike, normal: ArrayLike, ax: Axes | None = None,
               **kw: object) -> Axes:
    """Draw the straight line through ``point`` (2,) perpendicular to ``normal`` (2,) across
    the axes' current limits: the level line of the linear function θ ↦ normalᵀθ (e.g. the
    first-order expansion of J, whose normal is ∇J). Returns the axes."""
    p, g = _np(point, "point"), _np(normal, "normal")
    if p.shape != (2,) or g.shape != (2,) or not np.linalg.norm(g) > 0 \
            or not np.isfinite(np.concatenate([p, g])).all():
        raise ValueError(f"point, normal: expected two finite 2-vectors with a non-zero normal, "
                         f"got {p.tolist()} and {g.tolist()}")
    ax = _ax(ax)
    direction = np.array([-g[1], g[0]]) / np.linalg.norm(g)
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    span = 2 * np.hypot(x1 - x0, y1 - y0)
    ends = p + np.outer([-span, span], direction)
    ax.plot(ends[:, 0], ends[:, 1], **kw)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    return ax


@_closes_on_error
def panel_grid(draw: Callable[[Axes, object, object], object], rows: Iterable, cols: Iterable,
               row_name: str = "", col_name: str = "", figsize: tuple[float, float] | None = None,
               sharex: bool = True, sharey: bool = True) -> np.ndarray:
    """A small grid of panels: ``draw(ax, row_value, col_value)`` fills the panel for each
    pair (the static twin of a two-slider widget). Panels are titled with both values and
    inner tick labels are hidden when axes are shared. Returns the (R, C) array of axes."""
    if not callable(draw):
        raise ValueError(f"draw: expected a function draw(ax, row, col), got {type(draw).__name__}")
    for name, v in (("rows", rows), ("cols", cols)):
        if isinstance(v, (str, bytes)) or not isinstance(v, Iterable):
            raise ValueError(f"{name}: expected a list of values (one panel each), got {v!r}")
    rows, cols = list(rows), list(cols)
    if not rows or not cols:
        raise ValueError(f"panel_grid: expected at least one row and one column, got "
                         f"{len(rows)} and {len(cols)}")
    size = figsize or (2.6 * len(cols), 2.3 * len(rows))
    fig, axes = plt.subplots(len(rows), len(cols), figsize=size, sharex=sharex, sharey=sharey,
                             squeeze=False)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax = axes[i, j]
            draw(ax, r, c)
            ax.set_title(f"{row_name}={r:g}, {col_name}={c:g}" if isinstance(r, (int, float))
                         and isinstance(c, (int, float)) else f"{row_name}={r}, {col_name}={c}",
                         fontsize=9)
            if sharex and i < len(rows) - 1:
                ax.set_xlabel("")
            if sharey and j > 0:
                ax.set_ylabel("")
    fig.tight_layout()
    return axes


@_closes_on_error
def policy_bars(probs: ArrayLike, ax: Axes | None = None,
                action_names: Sequence[str] | None = None,
                context_names: Sequence[str] | None = None, title: str | None = None) -> Axes:
    """π(a|s) as grouped bars: one group per context, one bar per action. ``probs`` is
    (S, A) or (A,) (a single context): probabilities in [0, 1], each row summing to 1.
    Returns the axes."""
    p = _np(probs, "probs")
    if p.ndim == 1:
        p = p[None]
    if p.ndim != 2:
        raise ValueError(f"probs: expected shape (S, A) or (A,), got {p.shape}")
    S, A = p.shape
    if p.size == 0:
        raise ValueError(f"probs: expected at least one context and one action, got shape "
                         f"{p.shape}")
    # finite, ≥ 0, rows summing to 1 within the input dtype's rounding (check_probs)
    check_probs(probs.detach().cpu().reshape(S, A) if isinstance(probs, Tensor)
                and probs.is_floating_point() else torch.from_numpy(p), "probs")
    if action_names is not None:
        action_names = _names(action_names, A, "action_names")
    if context_names is not None:
        context_names = _names(context_names, S, "context_names")
    ax = _ax(ax)
    names = action_names or [f"a{k}" for k in range(A)]
    width = 0.8 / A
    for a in range(A):
        ax.bar(np.arange(S) + (a - (A - 1) / 2) * width, p[:, a], width=width, color=f"C{a}",
               label=names[a])
    ax.set_xticks(range(S))
    ax.set_xticklabels(context_names or [f"s{k}" for k in range(S)])
    ax.set_ylim(0, 1)
    ax.set_ylabel(r"$\pi(a|s)$")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=min(A, 4))
    return ax


def _methods_list(methods: Iterable[Method]) -> list[Method]:
    """``methods`` as a list of registered :class:`pgbook.registry.Method` records."""
    from .registry import Method

    if isinstance(methods, (str, bytes)) or not isinstance(methods, Iterable):
        raise ValueError(f"methods: expected Method records (pgbook.registry.methods()), got "
                         f"{methods!r}")
    ms = list(methods)
    bad = [m for m in ms if not isinstance(m, Method)]
    if bad:
        raise ValueError(f"methods: expected Method records (pgbook.registry.methods(), or "
                         f"pgbook.registry.method(name)), got {type(bad[0]).__name__} {bad[0]!r}")
    return ms


def map_layout(methods: Iterable[Method]) -> dict:
    """Positions of the map's nodes as a compact tidy tree: ``{name: (depth, row)}``.

    ``depth`` is the generation (modifications from the root J(θ)). Subtrees are placed
    depth first in registration order: a leaf takes the first free row of its column at or
    below the rows already used by its elder siblings' subtrees, and every other method
    sits at the middle of its children's rows (its subtree moved down until that row is free
    in its column). Rows in a column are at least 1 apart, and a parent's children occupy a
    band of rows that no other parent of that column reaches into, so the parent→child
    edges drawn between adjacent columns cross neither each other nor any box. Columns are
    packed independently (a short branch fills rows beside a long one), so the map grows by
    about one row per leaf of its widest generation, not per leaf of the tree.
    """
    ms = _methods_list(methods)
    names = [m.name for m in ms]
    children: dict = {n: [] for n in names}
    roots = []
    for m in ms:
        if m.parent in children:
            children[m.parent].append(m.name)
        else:
            roots.append(m.name)
    out: dict = {}
    free: dict = {}                  # depth -> the first row free in that column

    def place(name, depth, lo):
        while True:
            kept_out, kept_free = dict(out), dict(free)
            kids = children[name]
            if not kids:
                row = max(lo, free.get(depth, 0.0))
            else:
                start = lo
                for k in kids:
                    start = place(k, depth + 1, start) + 1.0
                row = (out[kids[0]][1] + out[kids[-1]][1]) / 2
                if row < free.get(depth, 0.0):   # the column is taken there: move the subtree
                    out.clear(), out.update(kept_out)
                    free.clear(), free.update(kept_free)
                    lo += kept_free.get(depth, 0.0) - row
                    continue
            out[name] = (depth, row)
            free[depth] = row + 1.0
            return row

    for r in roots:
        place(r, 0, 0.0)
    top = min((r for _, r in out.values()), default=0.0)
    return {n: (d, r - top) for n, (d, r) in out.items()}


@_closes_on_error
def method_map(ax: Axes | None = None, methods: Iterable[Method] | None = None,
               figsize: tuple[float, float] | None = None, wrap: int = 18,
               cell: tuple[float, float] = (1.45, 0.19),
               highlight: Iterable[str] = ()) -> Axes:
    """The book's map, drawn from :func:`pgbook.registry.methods`: each method is a box,
    coloured by the factor of J(θ) it changes relative to its parent, placed as a compact
    tidy tree (:func:`map_layout`: one column per generation), with an elbow arrow from each
    parent to each child that ends on the child's border (boxes are opaque and drawn above
    the edges, so no box hides an arrow and no edge crosses a box).

    The layout scales with the registry: the figure size follows from the grid (``cell``
    inches per column and per line of text in a row) unless ``figsize`` is given. Names are
    wrapped at ``wrap`` characters; the chapter that derives a method is printed beside its
    box. The methods named in ``highlight`` (e.g. the ones you just composed) get a black
    border. Every box carries the gid ``"method:<name>"`` and every arrow
    ``"edge:<parent>-><child>"``, so :func:`map_geometry` can measure the drawn figure.
    Returns the axes.
    """
    import textwrap

    from .registry import methods as all_methods

    ms = _methods_list(methods) if methods is not None else all_methods()
    if isinstance(wrap, bool) or not isinstance(wrap, int) or wrap < 1:
        raise ValueError(f"wrap: expected an integer ≥ 1 (characters per line), got {wrap!r}")
    if isinstance(highlight, str) or not isinstance(highlight, Iterable):
        raise ValueError(f"highlight: expected a list of method names, got {highlight!r}")
    marked = set(highlight)
    unknown = sorted(str(n) for n in marked - {m.name for m in ms})
    if unknown:
        raise ValueError(f"highlight: expected names of the methods drawn, got {unknown}")
    if ax is not None:
        _ax(ax)
    cell = _pair(cell, "cell", "(inches per column, inches per line)", positive=True)
    if figsize is not None:
        figsize = _pair(figsize, "figsize", "(width, height) in inches", positive=True)
    layout = map_layout(ms)
    n_cols = max((d for d, _ in layout.values()), default=0) + 1
    n_rows = max((r for _, r in layout.values()), default=0) + 1
    if ax is None:
        # a row must hold the tallest wrapped name: cell[1] inches per line of 7 pt text
        lines = max((textwrap.fill(m.name, wrap).count("\n") + 1 for m in ms), default=1)
        row_h = cell[1] * (lines + 0.6)
        size = figsize or (cell[0] * n_cols + 1.7, row_h * n_rows + 0.9)
        _, ax = plt.subplots(figsize=size)
    x_of = {name: d for name, (d, _) in layout.items()}
    y_of = {name: -r for name, (_, r) in layout.items()}
    by_name = {m.name: m for m in ms}
    for m in ms:
        x, y = x_of[m.name], y_of[m.name]
        edge = dict(ec="black", lw=1.6) if m.name in marked else dict(ec="none")
        box = ax.text(x, y, textwrap.fill(m.name, wrap), ha="left", va="center", fontsize=7,
                      color="white", zorder=3, gid=f"method:{m.name}",
                      bbox=dict(boxstyle="round,pad=0.3", fc=SIDE_COLORS[m.axis], **edge))
        if m.chapter:
            ax.annotate(m.chapter, xy=(1, 0.5), xycoords=box, xytext=(2, 0),
                        textcoords="offset points", ha="left", va="center", fontsize=6,
                        color="#888888", zorder=3)
    for m in ms:
        if m.parent not in by_name:
            continue
        x0, y0, x1, y1 = x_of[m.parent], y_of[m.parent], x_of[m.name], y_of[m.name]
        xm = x1 - 0.12         # the elbow: in the gap before the child's column
        color = SIDE_COLORS[m.axis]
        ax.plot([x0 + 0.05, xm, xm], [y0, y0, y1], color=color, lw=0.9, alpha=0.8, zorder=1,
                solid_capstyle="butt")
        ax.annotate("", xy=(x1 - 0.01, y1), xytext=(xm, y1), zorder=2,
                    gid=f"edge:{m.parent}->{m.name}",
                    arrowprops=dict(arrowstyle="-|>", color=color, lw=0.9, alpha=0.8,
                                    shrinkA=0, shrinkB=0, mutation_scale=7))
    for side in ("objective", "trajectory", "reward", "both"):
        ax.plot([], [], "s", color=SIDE_COLORS[side], label=f"changes: {side}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_xlim(-0.15, n_cols - 0.05)
    ax.set_ylim(-(n_rows - 0.5), 0.6)
    ax.set_xticks(range(n_cols), [str(d) for d in range(n_cols)], fontsize=7)
    ax.set_xlabel("generation: modifications from J(θ)   (grey: the chapter that derives it)",
                  fontsize=8)
    ax.set_yticks([])
    ax.grid(False)
    for name in ("top", "right", "left"):
        ax.spines[name].set_visible(False)
    ax.set_title("The map: each method, the method whose failure it fixes, and the factor of "
                 "J(θ) it changes", fontsize=10)
    return ax


# -- chapter 14 ---------------------------------------------------------------------------------
@_closes_on_error
def runs_band(xs: ArrayLike, runs: ArrayLike, ax: Axes | None = None, label: str | None = None,
              color: str = "C0", alpha: float = 0.2, ls: str = "-") -> Axes:
    """The mean of several runs as a line and ±1 standard error as a band: ``runs`` (K, R)
    (K points on ``xs`` (K,), R runs; R = 1 draws the line alone). Returns the axes."""
    x, y = _data(xs, "xs", 1, finite=False), _data(runs, "runs", finite=False)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"runs: expected shape ({x.shape[0]}, R) (one row per point of xs) or "
                         f"({x.shape[0]},), got {_np(runs).shape}")
    ax = _ax(ax)
    mean = y.mean(1)
    ax.plot(x, mean, ls, color=color, label=label)
    if y.shape[1] > 1:
        se = y.std(1, ddof=1) / np.sqrt(y.shape[1])
        ax.fill_between(x, mean - se, mean + se, color=color, alpha=alpha, lw=0)
    return ax


@_closes_on_error
def map_geometry(ax: Axes) -> dict:
    """Measure a drawn :func:`method_map` (draws the figure first), in display pixels:
    ``{"boxes": {name: Bbox}, "arrows": {(parent, child): (tip_gap, tip_inside)}}``, where
    ``tip_gap`` is the distance from the arrow's tip to the child's box (0 when the tip
    touches it) and ``tip_inside`` says whether the tip lies inside the box (hidden)."""
    if not isinstance(ax, Axes):
        raise ValueError(f"ax: expected the matplotlib Axes of a method_map, got "
                         f"{type(ax).__name__}")
    if not any((t.get_gid() or "").startswith("method:") for t in ax.texts):
        raise ValueError("ax: expected the Axes of a method_map (boxes with gid "
                         "'method:<name>'), got an Axes with none")
    fig = ax.figure
    fig.canvas.draw()
    boxes, arrows = {}, {}
    for t in ax.texts:
        gid = t.get_gid() or ""
        if gid.startswith("method:"):
            boxes[gid[len("method:"):]] = t.get_bbox_patch().get_window_extent()
    for t in ax.texts:
        gid = t.get_gid() or ""
        if gid.startswith("edge:") and getattr(t, "arrow_patch", None) is not None:
            parent, child = gid[len("edge:"):].split("->")
            v = t.arrow_patch.get_transform().transform(t.arrow_patch.get_path().vertices)
            box = boxes[child]
            tip = v[np.argmax(v[:, 0])]                    # the arrow points right
            dx = max(box.x0 - tip[0], 0.0, tip[0] - box.x1)
            dy = max(box.y0 - tip[1], 0.0, tip[1] - box.y1)
            inside = bool(box.padded(-1).contains(*tip))
            arrows[(parent, child)] = (float(np.hypot(dx, dy)), inside)
    return {"boxes": boxes, "arrows": arrows}
