"""The book's widget: a static figure that reads without a kernel, and controls that redraw it.

Every chapter widget has the same shape. A function ``draw(ax, **setting)`` draws one panel
for one setting of the parameters; :func:`explore` draws it at a few fixed settings side
by side (the static figure: it is saved in the notebook and reads in any viewer), then
shows controls and a live panel that ``draw`` redraws whenever a control moves::

    def draw(ax, baseline=0.0, bandit="context"):
        ...

    widgets.explore(draw, controls={"baseline": (-0.5, 1.5, 0.02),
                                    "bandit": ["context", "offset"]},
                    static=[{"baseline": 0.0}, {"baseline": 0.5, "bandit": "offset"}])

Controls are given by value:

================================  ==================================================
spec                              control
================================  ==================================================
``(min, max, step)`` floats       a float slider (ints: an int slider); min ≤ max, step > 0
a list of values                  a selection slider for numbers, a dropdown otherwise
a list of ``(label, value)``      a dropdown with those labels
``True`` / ``False``              a checkbox
an ``ipywidgets`` widget          used as it is
================================  ==================================================

The first value of each spec (the list's first element, the range's minimum) is the
initial one unless ``initial`` says otherwise. The live panel is drawn on a fresh
``matplotlib.figure.Figure`` (not pyplot's global state) inside one output area, so a
change redraws exactly one figure and no figure leaks to JupyterLab's log console.
A callback should take well under a second. A ``draw`` that needs several side-by-side
axes per setting (a landscape and a bar chart, J and KL) takes ``axes=k``: it then receives
a tuple of k axes, and each static setting is one row of k panels.

:func:`progress` is the book's progress bar for loops slower than a couple of seconds: a
``tqdm`` bar whose saved output is the finished bar (never a bar frozen at 0 %).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from ._validate import keyword_names, unknown_options

if TYPE_CHECKING:  # ipywidgets is imported when a widget is built
    import ipywidgets
    from tqdm.std import tqdm

__all__ = ["control", "explore", "progress", "static_panels"]


def control(name: str, spec: object, initial: object = None) -> ipywidgets.Widget:
    """An ipywidgets control for ``spec`` (see the module docstring), labelled ``name``."""
    import ipywidgets as w

    if not isinstance(name, str):
        raise ValueError(f"name: expected a string, got {name!r}")

    if isinstance(spec, w.Widget):
        return spec
    if isinstance(spec, bool):
        if initial is not None and not isinstance(initial, bool):
            raise ValueError(f"{name}: expected True or False as the initial value of a "
                             f"checkbox, got {initial!r}")
        return w.Checkbox(value=spec if initial is None else initial, description=name)
    if isinstance(spec, tuple) and spec and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in spec):
        if len(spec) != 3:
            raise ValueError(f"{name}: a tuple of numbers is a slider's range (min, max, step), "
                             f"got {len(spec)} number(s) {spec!r}; for a choice among values "
                             f"pass a list")
        lo, hi, step = spec
        if not lo <= hi:
            raise ValueError(f"{name}: expected (min, max, step) with min ≤ max, got {spec!r}")
        if not step > 0:
            raise ValueError(f"{name}: expected (min, max, step) with step > 0, got {spec!r}")
        value = lo if initial is None else initial
        integer = all(isinstance(x, int) and not isinstance(x, bool) for x in spec)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (integer and not isinstance(value, int)):
            raise ValueError(f"{name}: expected {'an integer' if integer else 'a number'} as "
                             f"the initial value of the slider {spec!r}, got {value!r}")
        if not lo <= value <= hi:
            raise ValueError(f"{name}: expected an initial value in [{lo}, {hi}] (the "
                             f"slider's range), got {value!r}")
        if integer:
            return w.IntSlider(value=value, min=lo, max=hi, step=step, description=name,
                               continuous_update=False)
        return w.FloatSlider(value=value, min=lo, max=hi, step=step, description=name,
                             continuous_update=False)
    if isinstance(spec, (list, tuple)) and spec:
        labelled = all(isinstance(x, tuple) and len(x) == 2 for x in spec)
        values = [v for _, v in spec] if labelled else list(spec)
        value = values[0] if initial is None else initial
        if value not in values:
            raise ValueError(f"{name}: initial value {value!r} is not one of {values}")
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric and not labelled:
            return w.SelectionSlider(options=values, value=value, description=name,
                                     continuous_update=False)
        options = list(spec) if labelled else [(str(v), v) for v in values]
        return w.Dropdown(options=options, value=value, description=name)
    raise ValueError(f"{name}: expected (min, max, step), a non-empty list, a bool or a widget, "
                     f"got {spec!r}")


def _title(setting: Mapping) -> str:
    def fmt(v):
        return f"{v:g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k} = {fmt(v)}" for k, v in setting.items())


def _check_axes(axes) -> int:
    if isinstance(axes, bool) or not isinstance(axes, int) or axes < 1:
        raise ValueError(f"axes: expected an integer ≥ 1 (axes per setting), got {axes!r}")
    return axes


def static_panels(draw: Callable, settings: Sequence[Mapping], *, defaults: Mapping | None = None,
                  panel_size: tuple[float, float] = (3.6, 2.8), ncols: int | None = None,
                  sharey: bool = True, titles: bool = True, axes: int = 1) -> Figure:
    """``draw(ax, **setting)`` at each setting, as one row (or grid) of panels; returns the
    pyplot figure (shown by the notebook as the static twin of a widget). With ``axes=k``
    each setting is a row of k panels and ``draw`` receives the tuple of its k axes
    (``sharey`` then applies within each column of panels)."""
    if not callable(draw):
        raise ValueError(f"draw: expected a function draw(ax, **setting), got "
                         f"{type(draw).__name__}")
    if not settings:
        raise ValueError("settings: expected at least one setting to draw")
    if not all(isinstance(x, Mapping) for x in settings):
        raise ValueError(f"settings: expected a list of dicts {{name: value}}, got {settings!r}")
    if ncols is not None and (isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1):
        raise ValueError(f"ncols: expected an integer ≥ 1, got {ncols!r}")
    k = _check_axes(axes)
    n = len(settings)
    if k > 1:
        fig, grid = plt.subplots(n, k, figsize=(panel_size[0] * k, panel_size[1] * n),
                                 sharey="col" if sharey else False, squeeze=False)
        for row, setting in zip(grid, settings):
            draw(tuple(row), **{**(defaults or {}), **setting})
            if titles:
                row[0].set_title(_title(setting), fontsize=9, loc="left")
        fig.tight_layout()
        return fig
    cols = min(n, ncols or n)
    rows = -(-n // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(panel_size[0] * cols, panel_size[1] * rows),
                             sharey=sharey, squeeze=False)
    for ax, setting in zip(grid.flat, settings):
        draw(ax, **{**(defaults or {}), **setting})
        if titles:
            ax.set_title(_title(setting), fontsize=9)
    for ax in list(grid.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def explore(draw: Callable, controls: Mapping, static: Sequence[Mapping] | None = None, *,
            initial: Mapping | None = None, figsize: tuple[float, float] = (5.2, 3.3),
            panel_size: tuple[float, float] = (3.6, 2.8), ncols: int | None = None,
            sharey: bool = True, on_change: Callable | None = None,
            axes: int = 1) -> ipywidgets.VBox:
    """Show the static panels (``static`` settings, if any), then the controls and a live
    panel that ``draw(ax, **values)`` redraws on every change.

    ``on_change(values, controls)`` may adjust other controls before the redraw (e.g. move a
    slider's range when a dropdown changes); those adjustments trigger no extra redraw.
    ``axes=k`` gives ``draw`` a tuple of k side-by-side axes (the live figure is then
    ``figsize`` wide in total). Returns the ipywidgets box (displayed already).
    """
    import ipywidgets as w
    from IPython.display import display

    if not callable(draw):
        raise ValueError(f"draw: expected a function draw(ax, **values), got "
                         f"{type(draw).__name__}")
    if not isinstance(controls, Mapping) or not controls:
        raise ValueError(f"controls: expected a non-empty dict {{name: spec}}, got {controls!r}")
    if on_change is not None and not callable(on_change):
        raise ValueError(f"on_change: expected a function or None, got "
                         f"{type(on_change).__name__}")
    k = _check_axes(axes)
    if initial is not None and not isinstance(initial, Mapping):
        raise ValueError(f"initial: expected a dict {{name: value}}, got "
                         f"{type(initial).__name__}")
    if static is not None and (isinstance(static, (str, Mapping)) or
                               not isinstance(static, Sequence)):
        raise ValueError(f"static: expected a list of dicts {{name: value}}, got "
                         f"{type(static).__name__}")
    have = list(controls)
    for where, setting in [("initial", initial or {})] + \
            [(f"static[{i}]", x) for i, x in enumerate(static or ())]:
        if not isinstance(setting, Mapping):
            raise ValueError(f"{where}: expected a dict {{name: value}}, got "
                             f"{type(setting).__name__}")
        for key in setting:
            if key not in controls:
                raise ValueError(f"{where}: {key!r} is not a control (have {have})")
    init = dict(initial or {})
    ctl = {name: control(name, spec, init.get(name)) for name, spec in controls.items()}
    if static:
        defaults = {name: c.value for name, c in ctl.items()}
        fig = static_panels(draw, static, defaults=defaults, panel_size=panel_size,
                            ncols=ncols, sharey=sharey, axes=k)
        plt.show()
        plt.close(fig)
    out = w.Output()
    busy = {"flag": False}

    def redraw(_change=None):
        if busy["flag"]:
            return
        busy["flag"] = True
        try:
            values = {name: c.value for name, c in ctl.items()}
            if on_change is not None and _change is not None:
                with _hold(ctl.values()):
                    on_change(values, ctl)
                values = {name: c.value for name, c in ctl.items()}
            fig = Figure(figsize=figsize, dpi=plt.rcParams["figure.dpi"])
            if k == 1:
                draw(fig.add_subplot(), **values)
            else:
                draw(tuple(fig.subplots(1, k)), **values)
            fig.tight_layout()
            with out:
                out.clear_output(wait=True)
                display(fig)
        finally:
            busy["flag"] = False

    for c in ctl.values():
        c.observe(redraw, names="value")
    box = w.VBox([w.HBox(list(ctl.values())), out])
    display(box)
    redraw()
    return box


def progress(iterable: Iterable | None = None, *, desc: str | None = None,
             total: float | None = None, **kwargs: object) -> tqdm:
    """A progress bar for a loop slower than a couple of seconds, whose *saved* output is
    the finished bar.

    In a Jupyter kernel it is ``tqdm.notebook``'s widget bar, shown under a display id;
    when the loop ends (or the bar is closed), that display is replaced by the final bar as
    plain text (``desc: 100%|██████████| 10/10 [00:03<00:00]``), so a saved notebook never
    shows the "0%" snapshot that a widget bar leaves in its text/plain output. Outside a
    kernel it is ``tqdm.auto``'s text bar. Use it like ``tqdm``: ``for x in progress(xs,
    desc="runs"):``; other keyword arguments go to tqdm (an option tqdm does not take is
    an error naming it).
    """
    from tqdm.std import tqdm as std_tqdm

    if iterable is not None and not isinstance(iterable, Iterable):
        raise ValueError(f"iterable: expected an iterable (or None with total), got "
                         f"{type(iterable).__name__}")
    if desc is not None and not isinstance(desc, str):
        raise ValueError(f"desc: expected a string label, got {desc!r}")
    if total is not None and (isinstance(total, bool) or not isinstance(total, (int, float))
                              or not 0 <= total < float("inf")):
        raise ValueError(f"total: expected a finite number ≥ 0 of iterations, got {total!r}")
    unknown_options("progress()", kwargs, [k for k in keyword_names(std_tqdm.__init__, 1)[0]
                                           if k not in ("iterable", "desc", "total")])
    try:
        from IPython import get_ipython

        shell = get_ipython()
        in_kernel = shell is not None and "IPKernelApp" in shell.config
    except ImportError:  # pragma: no cover - IPython is a dependency of ipywidgets
        in_kernel = False
    if not in_kernel:
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, **kwargs)
    return _notebook_bar()(iterable, desc=desc, total=total, **kwargs)


def _notebook_bar():
    from IPython.display import Pretty, display
    from tqdm.notebook import tqdm as tqdm_notebook

    class _Bar(tqdm_notebook):
        def __init__(self, *args, **kwargs):
            kwargs["display"] = False
            super().__init__(*args, **kwargs)
            self._handle = None
            if not self.disable:
                self._handle = display(self.container, display_id=True)
                self.displayed = True

        def close(self):
            if self.disable or getattr(self, "_closed_text", False):
                return super().close()
            super().close()
            self._closed_text = True
            if self._handle is not None and not self.leave:   # leave=False: nothing stays
                self._handle.update(Pretty(""))
            elif self._handle is not None:
                d = dict(self.format_dict)
                d.update(ncols=72, ascii=False, colour=None)
                self._handle.update(Pretty(self.format_meter(**d)))

    return _Bar


class _hold:
    """Hold the trait notifications of several widgets (a change to one fires none)."""

    def __init__(self, widgets):
        self.ctx = [wd.hold_trait_notifications() for wd in widgets]

    def __enter__(self):
        for c in self.ctx:
            c.__enter__()

    def __exit__(self, *exc):
        for c in reversed(self.ctx):
            c.__exit__(*exc)
