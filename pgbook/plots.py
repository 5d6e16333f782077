"""Figures the chapters share. Every function draws on a given matplotlib ``Axes`` (or makes
one) and returns it, so a chapter can compose panels and a widget can redraw one.

Figures are kept small (``setup()`` sets a modest DPI) so executed notebooks stay light.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from torch import Tensor

__all__ = [
    "SIDE_COLORS",
    "curves",
    "gradient_cloud",
    "landscape",
    "method_map",
    "panel_grid",
    "path",
    "policy_bars",
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
    argument if it is not numeric data of that shape."""
    try:
        if isinstance(x, Tensor):
            if x.device.type == "meta":
                raise ValueError(f"{name}: a meta tensor holds no values to draw")
            a = x.detach().to("cpu", torch.float64).numpy()
        else:
            a = np.asarray(x, dtype=float)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name}: expected numbers (a tensor, an array or a list), got "
                         f"{type(x).__name__}") from None
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimension(s), got shape {a.shape}")
    return a


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
    ax = _ax(ax)
    xs = torch.linspace(*xlim, n, dtype=dtype, device=device)
    ys = torch.linspace(*ylim, n, dtype=dtype, device=device)
    X, Y = torch.meshgrid(xs, ys, indexing="xy")
    with torch.no_grad():
        Z = f(torch.stack([X, Y], -1))
    cs = ax.contourf(_np(X), _np(Y), _np(Z), levels=levels, cmap=cmap)
    ax.contour(_np(X), _np(Y), _np(Z), levels=levels, colors="k", linewidths=0.3, alpha=0.5)
    if colorbar:
        ax.figure.colorbar(cs, ax=ax, shrink=0.85)
    ax.set_xlabel(r"$\theta_1$")
    ax.set_ylabel(r"$\theta_2$")
    ax.grid(False)
    return ax


def path(points: ArrayLike, ax: Axes | None = None, label: str | None = None, color: str = "w",
         marker: str = "o", ms: float = 2.5, **kw) -> Axes:
    """Draw an optimisation path given as (K, 2) points."""
    p = _np(points, "points", 2)
    if p.shape[1] < 2:
        raise ValueError(f"points: expected shape (K, 2), got {p.shape}")
    ax = _ax(ax)
    ax.plot(p[:, 0], p[:, 1], color=color, marker=marker, ms=ms, lw=1.2, label=label, **kw)
    return ax


def gradient_cloud(estimates: Tensor, exact: Tensor, dims: tuple[int, int] = (0, 1),
                   ax: Axes | None = None, label: str | None = None, color: str = "C0",
                   max_points: int = 2000, alpha: float = 0.25) -> Axes:
    """Scatter two coordinates of M gradient estimates around the exact gradient (a star)
    and their sample mean (a cross)."""
    full = _np(estimates, "estimates", 2)
    g = _np(exact, "exact", 1)
    if full.shape[1] != g.shape[0]:
        raise ValueError(f"exact: expected {full.shape[1]} coordinates (those of the "
                         f"estimates), got shape {g.shape}")
    i, j = dims
    if not all(isinstance(k, int) and 0 <= k < g.shape[0] for k in (i, j)):
        raise ValueError(f"dims: expected two coordinates in [0, {g.shape[0]}), got {dims!r}")
    ax = _ax(ax)
    e = full[:max_points]
    ax.scatter(e[:, i], e[:, j], s=4, alpha=alpha, color=color, label=label, lw=0)
    m = full.mean(0)
    ax.plot(g[i], g[j], "k*", ms=12, label=r"exact $\nabla J$")
    ax.plot(m[i], m[j], "x", color="crimson", ms=9, mew=2, label="mean of estimates")
    ax.set_xlabel(rf"$\hat g_{{{i}}}$")
    ax.set_ylabel(rf"$\hat g_{{{j}}}$")
    return ax


def variance_curve(bs: ArrayLike, variances: ArrayLike, ax: Axes | None = None,
                   label: str | None = None, optimal: tuple[float, float] | None = None,
                   color: str = "C0", mc: tuple[ArrayLike, ArrayLike] | None = None,
                   current: tuple[float, float] | None = None) -> Axes:
    """Total variance against a baseline value; ``optimal = (b*, var*)`` is marked, and
    ``mc = (bs, vars)`` adds Monte-Carlo points; ``current = (b, var)`` marks the baseline a
    widget has selected (a dashed vertical line and a dot)."""
    b, v = _np(bs, "bs", 1), _np(variances, "variances", 1)
    if b.shape != v.shape:
        raise ValueError(f"variances: expected shape {b.shape} (that of bs), got {v.shape}")
    ax = _ax(ax)
    ax.plot(b, v, color=color, label=label)
    if mc is not None:
        ax.plot(_np(mc[0]), _np(mc[1]), "o", color=color, ms=4, label="Monte Carlo")
    if optimal is not None:
        ax.plot(float(optimal[0]), float(optimal[1]), "r*", ms=12, label="optimal baseline")
    if current is not None:
        ax.axvline(float(current[0]), color="k", ls="--", lw=0.8)
        ax.plot(float(current[0]), float(current[1]), "ko", ms=6, label=f"b = {float(current[0]):.3g}")
    ax.set_xlabel("baseline b")
    ax.set_ylabel(r"tr Cov$[\hat g]$")
    return ax


def curves(xs: ArrayLike, ys_by_label: Mapping[str, ArrayLike], ax: Axes | None = None,
           xlabel: str = "step", ylabel: str = "", target: float | None = None,
           logy: bool = False) -> Axes:
    """Several learning curves; ``target`` draws a dashed horizontal line (e.g. max J)."""
    if not isinstance(ys_by_label, Mapping):
        raise ValueError(f"ys_by_label: expected a dict {{label: ys}}, got "
                         f"{type(ys_by_label).__name__}")
    x = _np(xs, "xs", 1)
    ys = {label: _np(y, f"ys_by_label[{label!r}]", 1) for label, y in ys_by_label.items()}
    for label, y in ys.items():
        if y.shape != x.shape:
            raise ValueError(f"ys_by_label[{label!r}]: expected shape {x.shape} (that of xs), "
                             f"got {y.shape}")
    ax = _ax(ax)
    for k, (label, y) in enumerate(ys.items()):
        ax.plot(x, y, label=label, color=f"C{k}")
    if target is not None:
        ax.axhline(float(target), ls="--", color="k", lw=1, label="optimum")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return ax


def scaling(ns: ArrayLike, values: ArrayLike, reference: ArrayLike | None = None,
            stderr: ArrayLike | None = None, ax: Axes | None = None, label: str = "Monte Carlo",
            ref_label: str = "exact", ylabel: str = "", color: str = "C0") -> Axes:
    """A quantity against the sample size N on log-log axes: measured ``values`` (K,) at
    ``ns`` (K,) as dots with ±2 ``stderr`` bars, and the exact ``reference`` (K,) as a line
    (e.g. σ/√N for an error, tr Σ/N for a variance). Returns the axes."""
    n, v = _np(ns, "ns", 1), _np(values, "values", 1)
    for name, x in (("values", v), ("reference", reference), ("stderr", stderr)):
        if x is not None and _np(x, name, 1).shape != n.shape:
            raise ValueError(f"{name}: expected shape {n.shape} (that of ns), got "
                             f"{_np(x, name).shape}")
    ax = _ax(ax)
    if reference is not None:
        ax.plot(n, _np(reference), "-", color="k", lw=1, label=ref_label)
    yerr = None if stderr is None else 2 * _np(stderr)
    ax.errorbar(n, v, yerr=yerr, fmt="o", color=color, ms=4, capsize=2, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("samples per estimate N")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return ax


def panel_grid(draw: Callable[[Axes, object, object], object], rows: Iterable, cols: Iterable,
               row_name: str = "", col_name: str = "", figsize: tuple[float, float] | None = None,
               sharex: bool = True, sharey: bool = True) -> np.ndarray:
    """A small grid of panels: ``draw(ax, row_value, col_value)`` fills the panel for each
    pair (the static twin of a two-slider widget). Panels are titled with both values and
    inner tick labels are hidden when axes are shared. Returns the (R, C) array of axes."""
    if not callable(draw):
        raise ValueError(f"draw: expected a function draw(ax, row, col), got {type(draw).__name__}")
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


def policy_bars(probs: ArrayLike, ax: Axes | None = None,
                action_names: Sequence[str] | None = None,
                context_names: Sequence[str] | None = None, title: str | None = None) -> Axes:
    """π(a|s) as grouped bars: one group per context, one bar per action. ``probs`` is
    (S, A) or (A,) (a single context). Returns the axes."""
    p = _np(probs, "probs")
    if p.ndim == 1:
        p = p[None]
    if p.ndim != 2:
        raise ValueError(f"probs: expected shape (S, A) or (A,), got {p.shape}")
    S, A = p.shape
    if action_names is not None and len(action_names) != A:
        raise ValueError(f"action_names: expected {A} names, got {len(action_names)}")
    if context_names is not None and len(context_names) != S:
        raise ValueError(f"context_names: expected {S} names, got {len(context_names)}")
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


def method_map(ax: Axes | None = None, methods: Iterable | None = None,
               figsize: tuple[float, float] = (9, 5.5)) -> Axes:
    """The book's map, drawn from :func:`pgbook.registry.methods`: each method is a node,
    placed by generation (how many modifications from J(θ)) and coloured by the factor of
    J(θ) it changes relative to its parent; edges point from parent to child."""
    from .registry import Method
    from .registry import methods as all_methods

    ms = list(methods) if methods is not None else all_methods()
    bad = [m for m in ms if not isinstance(m, Method)]
    if bad:
        raise ValueError(f"methods: expected registry Method objects (pgbook.registry.methods()), "
                         f"got {type(bad[0]).__name__}")
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    depth, order = {}, {}
    for m in ms:
        depth[m.name] = 0 if m.parent is None or m.parent not in depth else depth[m.parent] + 1
    rows: dict[int, list] = {}
    for m in ms:
        rows.setdefault(depth[m.name], []).append(m.name)
    for d, names in rows.items():
        for k, name in enumerate(names):
            order[name] = (1.6 * d, -(k - (len(names) - 1) / 2))
    for m in ms:
        if m.parent in order:
            (x0, y0), (x1, y1) = order[m.parent], order[m.name]
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                        arrowprops=dict(arrowstyle="->", color="#888888", lw=0.8,
                                        shrinkA=14, shrinkB=14))
    for m in ms:
        x, y = order[m.name]
        ax.text(x, y, m.name, ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round,pad=0.3", fc=SIDE_COLORS[m.axis], ec="none",
                          alpha=0.85), color="white")
    for side in ("objective", "trajectory", "reward", "both"):
        ax.plot([], [], "s", color=SIDE_COLORS[side], label=f"changes: {side}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    max_d = max(rows) if rows else 0
    max_k = max(len(v) for v in rows.values()) if rows else 1
    ax.set_xlim(-0.8, 1.6 * max_d + 0.8)
    ax.set_ylim(-(max_k / 2) - 0.2, max_k / 2 + 0.2)
    ax.set_xlabel("modifications from J(θ)")
    ax.set_xticks([1.6 * d for d in range(max_d + 1)], [str(d) for d in range(max_d + 1)])
    ax.set_yticks([])
    ax.grid(False)
    for sp in ("left",):
        ax.spines[sp].set_visible(False)
    ax.set_title("The map: each method and the factor of J(θ) it changes")
    return ax


# -- chapter 14 ---------------------------------------------------------------------------------
def runs_band(xs, runs, ax=None, label=None, color="C0", alpha: float = 0.2, ls="-"):
    """The mean of several runs as a line and ±1 standard error as a band: ``runs`` (K, R)
    (K points on ``xs`` (K,), R runs; R = 1 draws the line alone). Returns the axes."""
    ax = _ax(ax)
    y = _np(runs)
    if y.ndim == 1:
        y = y[:, None]
    mean = y.mean(1)
    ax.plot(_np(xs), mean, ls, color=color, label=label)
    if y.shape[1] > 1:
        se = y.std(1, ddof=1) / np.sqrt(y.shape[1])
        ax.fill_between(_np(xs), mean - se, mean + se, color=color, alpha=alpha, lw=0)
    return ax
