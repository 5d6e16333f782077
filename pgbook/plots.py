"""Figures the chapters share. Every function draws on a given matplotlib ``Axes`` (or makes
one) and returns it, so a chapter can compose panels and a widget can redraw one.

Figures are kept small (``setup()`` sets a modest DPI) so executed notebooks stay light.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

SIDE_COLORS = {"reward": "#d95f02", "trajectory": "#1b9e77", "both": "#7570b3",
               "objective": "#444444", "none": "#999999"}


def setup(dpi: int = 72) -> None:
    """Book style: small figures, readable fonts, no top/right spines."""
    plt.rcParams.update({
        "figure.dpi": dpi, "savefig.dpi": dpi, "figure.figsize": (6.0, 3.6),
        "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
        "grid.alpha": 0.25, "font.size": 10, "legend.frameon": False,
    })


def _ax(ax):
    return ax if ax is not None else plt.subplots()[1]


def _np(x) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=float)


def landscape(f, xlim=(-3, 3), ylim=(-3, 3), n: int = 61, ax=None, levels: int = 20,
              cmap: str = "viridis", dtype=torch.float64, device="cpu", colorbar: bool = True):
    """Contours of a scalar function of a 2-vector θ, e.g. ``f = lambda t: exact_J(b, p, t)``.

    ``f`` must accept a batch of parameters (..., 2) and return (...); the grid is evaluated
    in one call.
    """
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


def path(points, ax=None, label=None, color="w", marker="o", ms=2.5, **kw):
    """Draw an optimisation path given as (K, 2) points."""
    ax = _ax(ax)
    p = _np(points)
    ax.plot(p[:, 0], p[:, 1], color=color, marker=marker, ms=ms, lw=1.2, label=label, **kw)
    return ax


def gradient_cloud(estimates: Tensor, exact: Tensor, dims=(0, 1), ax=None, label=None,
                   color="C0", max_points: int = 2000, alpha: float = 0.25):
    """Scatter two coordinates of M gradient estimates around the exact gradient (a star)
    and their sample mean (a cross)."""
    ax = _ax(ax)
    e = _np(estimates)[:max_points]
    i, j = dims
    ax.scatter(e[:, i], e[:, j], s=4, alpha=alpha, color=color, label=label, lw=0)
    m = _np(estimates).mean(0)
    g = _np(exact)
    ax.plot(g[i], g[j], "k*", ms=12, label=r"exact $\nabla J$")
    ax.plot(m[i], m[j], "x", color="crimson", ms=9, mew=2, label="mean of estimates")
    ax.set_xlabel(rf"$\hat g_{{{i}}}$")
    ax.set_ylabel(rf"$\hat g_{{{j}}}$")
    return ax


def variance_curve(bs, variances, ax=None, label=None, optimal=None, color="C0", mc=None,
                   current=None):
    """Total variance against a baseline value; ``optimal = (b*, var*)`` is marked, and
    ``mc = (bs, vars)`` adds Monte-Carlo points; ``current = (b, var)`` marks the baseline a
    widget has selected (a dashed vertical line and a dot)."""
    ax = _ax(ax)
    ax.plot(_np(bs), _np(variances), color=color, label=label)
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


def curves(xs, ys_by_label: dict, ax=None, xlabel="step", ylabel="", target=None, logy=False):
    """Several learning curves; ``target`` draws a dashed horizontal line (e.g. max J)."""
    ax = _ax(ax)
    for k, (label, ys) in enumerate(ys_by_label.items()):
        ax.plot(_np(xs), _np(ys), label=label, color=f"C{k}")
    if target is not None:
        ax.axhline(float(target), ls="--", color="k", lw=1, label="optimum")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return ax


def scaling(ns, values, reference=None, stderr=None, ax=None, label="Monte Carlo",
            ref_label="exact", ylabel="", color="C0"):
    """A quantity against the sample size N on log-log axes: measured ``values`` (K,) at
    ``ns`` (K,) as dots with ±2 ``stderr`` bars, and the exact ``reference`` (K,) as a line
    (e.g. σ/√N for an error, tr Σ/N for a variance). Returns the axes."""
    ax = _ax(ax)
    n, v = _np(ns), _np(values)
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


def panel_grid(draw, rows, cols, row_name="", col_name="", figsize=None, sharex=True,
               sharey=True):
    """A small grid of panels: ``draw(ax, row_value, col_value)`` fills the panel for each
    pair (the static twin of a two-slider widget). Panels are titled with both values and
    inner tick labels are hidden when axes are shared. Returns the (R, C) array of axes."""
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


def policy_bars(probs, ax=None, action_names=None, context_names=None, title=None):
    """π(a|s) as grouped bars: one group per context, one bar per action. ``probs`` is
    (S, A) or (A,) (a single context). Returns the axes."""
    ax = _ax(ax)
    p = _np(probs)
    if p.ndim == 1:
        p = p[None]
    if p.ndim != 2:
        raise ValueError(f"probs: expected shape (S, A) or (A,), got {p.shape}")
    S, A = p.shape
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


def method_map(ax=None, methods=None, figsize=(9, 5.5)):
    """The book's map, drawn from :func:`pgbook.registry.methods`: each method is a node,
    placed by generation (how many modifications from J(θ)) and coloured by the factor of
    J(θ) it changes relative to its parent; edges point from parent to child."""
    from .registry import methods as all_methods

    ms = list(methods) if methods is not None else all_methods()
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
