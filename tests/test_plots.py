"""Smoke and content tests for pgbook.plots: every figure helper draws what it says on a
given Axes and returns it (Agg backend, set in conftest)."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

import pgbook as pg
from pgbook import plots
from pgbook.exact import bandits as XB
from pgbook.worlds import bandits

F64 = torch.float64


@pytest.fixture(autouse=True)
def _close_figures():
    plots.setup()
    yield
    plt.close("all")


def test_setup_sets_small_dpi():
    plots.setup(dpi=50)
    assert plt.rcParams["figure.dpi"] == 50
    plots.setup()
    assert plt.rcParams["figure.dpi"] == 72


def test_landscape_evaluates_the_grid_in_one_call():
    b, pol = bandits.two_param_bandit()
    calls = []

    def f(t):
        calls.append(t.shape)
        return XB.exact_J(b, pol, t)

    ax = plots.landscape(f, n=11, colorbar=False)
    assert calls == [(11, 11, 2)]
    assert ax.get_xlabel() == r"$\theta_1$"


def test_path_and_curves():
    _, ax = plt.subplots()
    assert plots.path(torch.zeros(4, 2, dtype=torch.bfloat16), ax=ax) is ax
    assert len(ax.lines) == 1
    ax2 = plots.curves(np.arange(3), {"a": [1, 2, 3], "b": torch.tensor([3.0, 2.0, 1.0])},
                       target=4.0, logy=True, ylabel="J")
    assert len(ax2.lines) == 3 and ax2.get_yscale() == "log"


@pytest.mark.parametrize("dtype", [torch.float32, F64, torch.bfloat16])
def test_gradient_cloud_marks_exact_and_mean(dtype):
    est = torch.randn(50, 3, generator=pg.make_generator(0)).to(dtype)
    ax = plots.gradient_cloud(est, torch.zeros(3, dtype=dtype), dims=(0, 2))
    star = next(ln for ln in ax.lines if ln.get_marker() == "*")
    assert star.get_xdata()[0] == 0.0
    cross = next(ln for ln in ax.lines if ln.get_marker() == "x")
    assert cross.get_xdata()[0] == pytest.approx(float(est[:, 0].double().mean()), rel=1e-6)
    assert ax.get_ylabel() == r"$\hat g_{2}$"


def test_variance_curve_marks_optimal_mc_and_current():
    bs = torch.linspace(-1, 1, 21, dtype=F64)
    ax = plots.variance_curve(bs, bs ** 2 + 1, optimal=(0.0, 1.0), mc=([0.5], [1.25]),
                              current=(0.5, 1.25), label="exact")
    labels = [ln.get_label() for ln in ax.lines]
    assert "optimal baseline" in labels and "Monte Carlo" in labels and "b = 0.5" in labels
    # without the optional marks only the curve is drawn
    _, ax2 = plt.subplots()
    plots.variance_curve(bs, bs ** 2, ax=ax2)
    assert len(ax2.lines) == 1


def test_scaling_is_log_log_with_reference_and_error_bars():
    ns = torch.tensor([10, 100, 1000])
    ax = plots.scaling(ns, [1.0, 0.3, 0.1], reference=[1.0, 0.316, 0.1], stderr=[0.1, 0.03, 0.01],
                       ylabel="error")
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(ax.containers) == 1  # the error bars
    assert ax.get_ylabel() == "error"
    _, ax2 = plt.subplots()
    plots.scaling([1, 2], [1.0, 0.5], ax=ax2)  # no reference, no error bars
    assert len(ax2.lines) == 1


def test_panel_grid_calls_draw_for_every_pair():
    seen = []

    def draw(ax, r, c):
        seen.append((r, c))
        ax.plot([0, 1], [r, c])
        ax.set_xlabel("x")
        ax.set_ylabel("y")

    axes = plots.panel_grid(draw, [1, 2], [10, 20, 30], row_name="N", col_name="c")
    assert axes.shape == (2, 3)
    assert seen == [(1, 10), (1, 20), (1, 30), (2, 10), (2, 20), (2, 30)]
    assert axes[0, 1].get_title() == "N=1, c=20"
    assert axes[0, 0].get_xlabel() == "" and axes[1, 0].get_xlabel() == "x"
    assert axes[1, 1].get_ylabel() == "" and axes[1, 0].get_ylabel() == "y"
    axes = plots.panel_grid(draw, ["a"], ["b"], row_name="r", col_name="k")
    assert axes.shape == (1, 1) and axes[0, 0].get_title() == "r=a, k=b"
    with pytest.raises(ValueError, match="at least one"):
        plots.panel_grid(draw, [], [1])


def test_policy_bars_draws_one_bar_per_context_and_action():
    p = bandits.TabularSoftmax(3, 4).probs(torch.zeros(12, dtype=F64))
    ax = plots.policy_bars(p, action_names=["w", "x", "y", "z"], title="uniform")
    assert len(ax.patches) == 12
    assert [t.get_text() for t in ax.get_xticklabels()] == ["s0", "s1", "s2"]
    assert ax.get_title() == "uniform"
    _, ax2 = plt.subplots()
    plots.policy_bars(p[0].to(torch.bfloat16), ax=ax2)  # a single context (A,)
    assert len(ax2.patches) == 4
    with pytest.raises(ValueError, match="probs"):
        plots.policy_bars(torch.zeros(2, 2, 2))


def test_method_map_draws_registered_methods():
    ax = plots.method_map()
    names = {(t.get_gid() or "").removeprefix("method:") for t in ax.texts}   # names wrap
    assert {"J(θ)", "REINFORCE", "REINFORCE + baseline"} <= names


def test_method_map_scales_without_overlaps_or_hidden_arrows():
    from pgbook import registry

    ax = plots.method_map()
    geo = plots.map_geometry(ax)
    assert set(geo["boxes"]) == {m.name for m in registry.methods()}
    assert len(geo["arrows"]) == len(registry.methods()) - 1
    # 30 more methods (as later chapters add them): still no overlap, every arrow visible
    added = []
    advantages = ["grpo", "rloo", "grpo_mean", "value"]
    try:
        parents = ["GRPO", "REINFORCE + baseline", "PPO-clip"]
        for k in range(30):
            parent = parents[k % len(parents)] if k < 6 else added[(k * 7) % len(added)]
            old = registry.method(parent).resolved_parts().get("advantage")
            adv = next(a for a in advantages[k % 4:] + advantages if a != old)
            registry.register_method(f"test method number {k}", parent, advantage=adv,
                                     chapter=f"{13 + k % 5}")
            added.append(f"test method number {k}")
        _, ax = plt.subplots()
        plt.close(ax.figure)
        ax = plots.method_map()
        geo = plots.map_geometry(ax)
        boxes = list(geo["boxes"].values())
        assert len(boxes) == len(registry.methods())
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert not a.overlaps(b), "two boxes of the map overlap"
        for edge, (gap, inside) in geo["arrows"].items():
            assert gap < 2.0 and not inside, edge
        depth_rows = plots.map_layout(registry.methods())
        assert len(set(depth_rows.values())) == len(depth_rows)
    finally:
        for name in reversed(added):
            registry.unregister_method(name)


def test_explore_static_panels_with_several_axes():
    from pgbook import widgets

    seen = []

    def draw(axes, a=1.0):
        seen.append((len(axes), a))
        axes[0].plot([0, 1], [0, a])
        axes[1].plot([0, 1], [a, 0])

    fig = widgets.static_panels(draw, [{"a": 0.5}, {"a": 2.0}], axes=2)
    assert seen == [(2, 0.5), (2, 2.0)] and len(fig.axes) == 4
    assert fig.axes[0].get_title(loc="left") == "a = 0.5"
    with pytest.raises(ValueError, match="axes"):
        widgets.static_panels(draw, [{"a": 1.0}], axes=0)


def test_progress_outside_a_kernel_is_a_plain_tqdm():
    from pgbook import widgets

    bar = widgets.progress(range(3), desc="x", disable=True)
    assert list(bar) == [0, 1, 2]


def test_coordinate_errorbars():
    ax = plots.coordinate_errorbars(torch.tensor([1.0, -0.5]), [0.9, -0.4], np.array([0.05, 0.05]),
                                    labels=["a", "b"])
    assert len(ax.patches) == 2 and len(ax.containers) == 2       # bars + error bars
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    with pytest.raises(ValueError, match="reference"):
        plots.coordinate_errorbars([1.0, 2.0], [1.0], [0.1])


def test_ellipse_and_level_line():
    M = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)
    ax = plots.ellipse(torch.zeros(2, dtype=F64), M, 1.0)
    pts = np.column_stack(ax.lines[0].get_data())
    q = np.einsum("ni,ij,nj->n", pts, M.numpy(), pts)
    assert np.allclose(q, 1.0)                                     # every point on δᵀMδ = 1
    ax.set_xlim(-2, 2)
    ax.set_ylim(-2, 2)
    plots.level_line([0.5, 0.5], [1.0, 2.0], ax=ax)
    x, y = ax.lines[1].get_data()
    assert np.allclose(np.array(x) * 1.0 + np.array(y) * 2.0, 1.5)  # gᵀθ constant along the line
    assert ax.get_xlim() == (-2, 2)
    with pytest.raises(ValueError, match="level"):
        plots.ellipse([0.0, 0.0], M, 0.0)
    with pytest.raises(ValueError, match="normal"):
        plots.level_line([0.0, 0.0], [0.0, 0.0], ax=ax)


def test_curves_with_derivative():
    x = torch.linspace(0, 1, 11, dtype=F64)
    ax, twin = plots.curves_with_derivative(x, {"a": x ** 2, "b": x}, 2 * x, vlines=[0.5],
                                            xlabel="ratio r", styles={"b": dict(ls=":")})
    labels = [ln.get_label() for ln in ax.lines]
    assert labels[:2] == ["a", "b"] and ax.lines[1].get_linestyle() == ":"
    assert len(twin.lines) == 1 and twin.get_ylabel() == "d / dr"


def test_explore_redraws_once_per_change_with_on_change():
    from pgbook import widgets

    calls = []

    def draw(axes, which="a", b=0.0):
        calls.append((which, b, len(axes)))

    def follow(values, controls):      # moving the dropdown shifts the slider's range by 10
        shift = 0.0 if values["which"] == "a" else 10.0
        s = controls["b"]
        if s.min != shift:
            s.min, s.max = -1e9, 1e9
            s.value = s.value + (10.0 if shift else -10.0)
            s.min, s.max = shift, shift + 1.0

    box = widgets.explore(draw, {"which": ["a", "b"], "b": (0.0, 1.0, 0.1)}, on_change=follow, axes=2)
    dropdown, slider = box.children[0].children
    assert calls == [("a", 0.0, 2)]
    calls.clear()
    slider.value = 0.5
    assert calls == [("a", 0.5, 2)]
    calls.clear()
    dropdown.value = "b"
    assert calls == [("b", 10.5, 2)] and (slider.min, slider.max) == (10.0, 11.0)
