"""Bad inputs to pgbook.plots raise a ValueError that names the argument (and leave no
figure open); one valid call per function still draws (Agg backend, set in conftest)."""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from pgbook import plots

matplotlib.use("Agg")
NAN = float("nan")
I2 = np.eye(2)


@pytest.fixture(autouse=True)
def _close_figures():
    plt.close("all")
    yield
    plt.close("all")


def _draw(ax, r, c):
    ax.plot([0, 1], [r, c])


def quad(t):
    return (t ** 2).sum(-1)


BAD = [
    # landscape
    (lambda: plots.landscape(quad, n=5, dtype=torch.int64), "dtype: expected a floating torch.dtype"),
    (lambda: plots.landscape(lambda t: quad(t) * NAN, n=5), "f: expected finite"),
    (lambda: plots.landscape(lambda t: quad(t)[0], n=5), r"f: expected f\(θ\) of shape \(5, 5\)"),
    (lambda: plots.landscape(lambda t: 1.0, n=5), r"f: expected f\(θ\) of shape"),
    (lambda: plots.landscape(quad, xlim=(1,), n=5), "xlim: expected a pair"),
    (lambda: plots.landscape(quad, ylim="ab", n=5), "ylim: expected a pair"),
    (lambda: plots.landscape(quad, xlim=(1, 1), n=5), "xlim: expected two different"),
    (lambda: plots.landscape(quad, device="nope", n=5), "device: expected a torch device"),
    (lambda: plots.landscape(quad, n=5, colorbar="yes"), "colorbar: expected True or False"),
    # gradient_cloud
    (lambda: plots.gradient_cloud(torch.ones(4, 2), torch.ones(2), max_points=-2), "max_points"),
    (lambda: plots.gradient_cloud(torch.ones(4, 2), torch.ones(2), max_points=0), "max_points"),
    (lambda: plots.gradient_cloud(torch.ones(4, 2), torch.ones(2), max_points=2.5), "max_points"),
    (lambda: plots.gradient_cloud(torch.ones(4, 2), torch.ones(2), dims=None), "dims: expected two"),
    (lambda: plots.gradient_cloud(torch.ones(4, 2), torch.ones(2), dims=(0,)), "dims: expected two"),
    (lambda: plots.gradient_cloud(torch.ones(0, 2), torch.ones(2)), "estimates: expected at least"),
    (lambda: plots.gradient_cloud(torch.full((3, 2), NAN), torch.ones(2)), "estimates: expected finite"),
    # path
    (lambda: plots.path(np.array([[0.0, NAN]])), "points: expected finite"),
    (lambda: plots.path(np.zeros((0, 2))), "points: expected at least one"),
    (lambda: plots.path(np.zeros((3, 3))), r"points: expected shape \(K, 2\)"),
    (lambda: plots.path(np.zeros((3, 2), dtype=complex)), "points: expected real numbers"),
    (lambda: plots.path(torch.zeros(3, 2, dtype=torch.complex64)), "points: expected real numbers"),
    (lambda: plots.path(torch.zeros(3, 2, dtype=torch.bool)), "points: expected real numbers"),
    (lambda: plots.path(torch.zeros(2, 2, device="meta")), "points: a meta tensor"),
    (lambda: plots.path(np.zeros((3, 2)), color="zz"), "path: matplotlib refused"),
    # variance_curve
    (lambda: plots.variance_curve([], []), "bs: expected at least one"),
    (lambda: plots.variance_curve([0, 1], [1, NAN]), "variances: expected finite"),
    (lambda: plots.variance_curve([0, 1], [1, 2], current=(NAN, NAN)), "current"),
    (lambda: plots.variance_curve([0, 1], [1, 2], current=1.0), r"current: expected a pair \(b, var\)"),
    (lambda: plots.variance_curve([0, 1], [1, 2], mc=5), r"mc: expected a pair \(bs, vars\)"),
    (lambda: plots.variance_curve([0, 1], [1, 2], mc=([0, 1],)), r"mc: expected a pair"),
    (lambda: plots.variance_curve([0, 1], [1, 2], mc=([0, 1, 2], [1])), r"mc\[1\]: expected shape"),
    (lambda: plots.variance_curve([0, 1], [1, 2], optimal=(1,)), r"optimal: expected a pair \(b\*"),
    (lambda: plots.variance_curve([0, 1], [1, 2], optimal=("a", "b")), "optimal: expected a real"),
    # curves
    (lambda: plots.curves([0, 1], {}), "ys_by_label: expected at least one curve"),
    (lambda: plots.curves([0, 1], {"a": [1, 2]}, target=NAN), "target"),
    (lambda: plots.curves([0, 1], {"a": [1, 2]}, target="x"), "target: expected a real number"),
    (lambda: plots.curves([0, 1], {"a": [1, 2]}, logy="yes"), "logy: expected True or False"),
    # scaling
    (lambda: plots.scaling([0, 10], [1, 0.1]), r"ns \(log axis\): expected values > 0"),
    (lambda: plots.scaling([1, 10], [1, -0.1]), r"values \(log axis\): expected values > 0"),
    (lambda: plots.scaling([1, 10], [1, 0.1], reference=[1, -1]), r"reference \(log axis\)"),
    (lambda: plots.scaling([], []), "expected at least one value"),
    (lambda: plots.scaling([1, 10], [1, 0.1], stderr=[-1, -1]), "stderr: expected values ≥ 0"),
    # coordinate_errorbars
    (lambda: plots.coordinate_errorbars([], [], []), "reference: expected at least one"),
    (lambda: plots.coordinate_errorbars([NAN, 1], [1, 1], [0.1, 0.1]), "reference: expected finite"),
    (lambda: plots.coordinate_errorbars([1, 1], [1, 1], [0.1, 0.1], labels=iter(["a", "b"])),
     "labels: expected a list of 2 names"),
    (lambda: plots.coordinate_errorbars([1, 1], [1, 1], [0.1, 0.1], labels=5), "labels: expected"),
    (lambda: plots.coordinate_errorbars([1, 1], [1, 1], [0.1, 0.1], labels="ab"), "labels: expected"),
    # policy_bars
    (lambda: plots.policy_bars([0.5, 0.5], action_names="ab"), "action_names: expected a list of 2"),
    (lambda: plots.policy_bars([0.5, 0.5], action_names=5), "action_names: expected a list of 2"),
    (lambda: plots.policy_bars([0.5, 0.5], context_names=[1]), "context_names: expected a list of 1"),
    # curves_with_derivative
    (lambda: plots.curves_with_derivative([], {}, []), "x: expected at least one"),
    (lambda: plots.curves_with_derivative([0, 1], {}, [0, 1]), "curves: expected a dict"),
    (lambda: plots.curves_with_derivative([0, 1], {"a": [0, 1]}, [0, 1], vlines=0.5),
     "vlines: expected a list"),
    (lambda: plots.curves_with_derivative([0, 1], {"a": [0, 1]}, [0, 1], styles={"a": {"bogus": 1}}),
     r"styles\['a'\]: matplotlib refused"),
    (lambda: plots.curves_with_derivative([0, 1], {"a": [0, 1]}, [0, 1], styles={"a": 3}),
     "styles: expected a dict"),
    # ellipse
    (lambda: plots.ellipse([NAN, 0], I2, 1.0), "center: expected a finite"),
    (lambda: plots.ellipse([0, 0], I2, None), "level: expected a real number"),
    (lambda: plots.ellipse([0, 0], I2, [1.0]), "level: expected a real number"),
    (lambda: plots.ellipse([0, 0], I2, 1j), "level: expected a"),
    (lambda: plots.ellipse([0, 0], I2, 1.0, bogus=1), "ellipse: matplotlib refused"),
    # runs_band
    (lambda: plots.runs_band([0, 1], np.ones((2, 0))), "runs: expected at least one value"),
    # panel_grid
    (lambda: plots.panel_grid(_draw, None, [3]), "rows: expected a list"),
    (lambda: plots.panel_grid(_draw, 3, [3]), "rows: expected a list"),
    # method_map / map_geometry
    (lambda: plots.method_map(cell=(1,)), "cell: expected a pair"),
    (lambda: plots.map_geometry(plt.subplots()[1]), "ax: expected the Axes of a method_map"),
]


@pytest.mark.parametrize("call, match", BAD, ids=[m for _, m in BAD])
def test_bad_input_raises_value_error_and_leaves_no_figure_open(call, match):
    before = plt.get_fignums()
    with pytest.raises(ValueError, match=match):
        call()
    if "map_geometry" not in match and "method_map" not in match:
        assert plt.get_fignums() == before


def test_a_failed_call_keeps_the_callers_figure_open():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="path: matplotlib refused"):
        plots.path(np.zeros((3, 2)), ax=ax, color="zz")
    assert plt.get_fignums() == [fig.number]


def test_curves_with_derivative_blank_xlabel():
    _, twin = plots.curves_with_derivative([0, 1], {"a": [0, 1]}, [1, 1], xlabel="  ")
    assert twin.get_ylabel() == "d / dx"


VALID = [
    lambda: plots.landscape(quad, n=5, colorbar=False),
    lambda: plots.path(torch.zeros(3, 2)),
    lambda: plots.gradient_cloud(torch.randn(5, 3), torch.zeros(3), dims=[0, 2], max_points=3),
    lambda: plots.variance_curve([0, 1], [1, 2], mc=([0.5], [1.5]), optimal=(0.2, torch.tensor(1.0)),
                                 current=(torch.tensor(0.5), 1.5)),
    lambda: plots.curves([0, 1], {"a": [1, 2]}, target=2, logy=True),
    lambda: plots.scaling([1, 10], [1, 0.1], reference=[1, 0.1], stderr=[0, 0.01]),
    lambda: plots.coordinate_errorbars([1, 2], [1, 2], [0.1, 0], labels=("a", "b")),
    lambda: plots.policy_bars([0.5, 0.5], action_names=["x", "y"], context_names=("s",)),
    lambda: plots.curves_with_derivative([0, 1], {"a": [0, 1]}, [1, 1], vlines=[0.5],
                                         styles={"a": {"ls": "--"}}, xlabel="ratio r"),
    lambda: plots.ellipse([0, 0], I2, 1),
    lambda: plots.runs_band([0, 1], np.ones((2, 3))),
    lambda: plots.panel_grid(_draw, range(2), [3]),
    lambda: plots.map_geometry(plots.method_map(cell=[1.45, 0.19])),
]


@pytest.mark.parametrize("call", VALID)
def test_valid_call_still_draws(call):
    assert call() is not None


def test_landscape_refuses_the_meta_device():
    with pytest.raises(ValueError, match="device: expected a device with values"):
        plots.landscape(quad, n=5, device="meta")
    assert plt.get_fignums() == []
