"""Exercises with checkers: write a small function, and the checker compares it with exact
quantities and says what is wrong.

Every chapter ends with 2–4 exercises. Each asks for one function (an estimator, a baseline,
a ratio, an advantage, ...) and calls its checker::

    def my_baseline(rewards):
        raise NotImplementedError     # your code here

    pg.exercises.check("03.1", my_baseline)

The checker calls the function on inputs whose right answer is known exactly (enumerated
bandits and sequence models) and prints one of

* ``○ 03.1 not done yet``: the function still raises ``NotImplementedError``;
* ``✗ 03.1 <what is wrong>``: a wrong shape, a wrong sign, a missing baseline, a biased
  estimator..., in words that point at the mistake;
* ``✓ 03.1 <what was checked>``.

It never raises, so a chapter with unsolved exercises still runs top to bottom; it returns
a :class:`Result` (truthy when correct). ``pg.exercises.list_exercises("03")`` lists a
chapter's exercises; ``help(pg.exercises.checker("03.1"))`` shows what one expects.

Writing a checker (in ``pgbook/exercises/chNN.py``)::

    @exercise("03.1", "The variance-optimal constant baseline")
    def check_optimal_constant(fn):
        got = fn(...)
        expect_close(got, exact, "b*", hint="weight each reward by ‖∇log π‖²")
        return "b* matches the exact minimiser of the variance"

A checker raises :class:`Wrong` (directly or through the ``expect_*`` helpers) with a
message for the reader, and returns a short description of what it verified. The tests
(``tests/test_exercises.py``) run every checker on a correct solution and on at least two
typical wrong ones; the solutions live in the tests, not in the chapters.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Result",
    "Wrong",
    "check",
    "checker",
    "exercise",
    "expect",
    "expect_close",
    "expect_shape",
    "list_exercises",
]


class Wrong(Exception):
    """Raised by a checker when the reader's function gives a wrong answer."""


@dataclass(frozen=True)
class Result:
    """What a checker found: ``status`` is ``"todo"``, ``"wrong"`` or ``"correct"``."""

    key: str
    title: str
    status: str
    message: str

    def __post_init__(self) -> None:
        if self.status not in ("todo", "wrong", "correct"):
            raise ValueError(f"status: expected 'todo', 'wrong' or 'correct', got {self.status!r}")

    def __bool__(self) -> bool:
        return self.status == "correct"

    def __str__(self) -> str:
        mark = {"todo": "○", "wrong": "✗", "correct": "✓"}[self.status]
        return f"{mark} {self.key} {self.title}: {self.message}"


@dataclass(frozen=True)
class _Exercise:
    key: str
    title: str
    fn: Callable


_EXERCISES: dict[str, _Exercise] = {}


def exercise(key: str, title: str) -> Callable[[Callable], Callable]:
    """Decorator: register ``fn(user_function) -> str`` as the checker of exercise ``key``
    (``"CC.n"``: chapter and number)."""
    if not isinstance(key, str) or "." not in key:
        raise ValueError(f"key: expected 'CC.n' (chapter.number), got {key!r}")
    if not isinstance(title, str):
        raise ValueError(f"title: expected a string, got {title!r}")

    def deco(fn: Callable) -> Callable:
        if key in _EXERCISES and _EXERCISES[key].fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"exercise {key} is already registered")
        _EXERCISES[key] = _Exercise(key, title, fn)
        return fn

    return deco


def _load_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if mod.name.startswith("ch"):
            importlib.import_module(f"{__name__}.{mod.name}")


def checker(key: str) -> Callable:
    """The checker function of exercise ``key`` (its docstring says what it expects)."""
    _load_all()
    if not isinstance(key, str) or key not in _EXERCISES:
        raise ValueError(f"key: expected one of {sorted(_EXERCISES)}, got {key!r}")
    return _EXERCISES[key].fn


def list_exercises(chapter: str | None = None) -> list[tuple[str, str]]:
    """``(key, title)`` of every exercise (of one chapter, e.g. ``"03"``), in order."""
    if chapter is not None and not isinstance(chapter, str):
        raise ValueError(f"chapter: expected a chapter number as a string such as '03', got "
                         f"{chapter!r}")
    _load_all()
    keys = sorted(_EXERCISES, key=lambda k: (k.split(".")[0], int(k.split(".")[1])))
    chapters = sorted({k.split(".")[0] for k in keys})
    if chapter is not None and chapter not in chapters:
        raise ValueError(f"chapter: expected one of {', '.join(repr(c) for c in chapters)}, got "
                         f"{chapter!r}")
    return [(k, _EXERCISES[k].title) for k in keys
            if chapter is None or k.split(".")[0] == chapter]


def check(key: str, fn: Callable, *, quiet: bool = False) -> Result:
    """Run the checker of exercise ``key`` on the reader's function ``fn``; print and return
    the :class:`Result`. Never raises for a wrong or unfinished answer."""
    if not isinstance(key, str):
        raise ValueError(f"key: expected an exercise key such as '02.1', got {key!r}")
    ex = _EXERCISES.get(key) or (_load_all(), _EXERCISES.get(key))[1]
    if ex is None:
        raise ValueError(f"key: expected one of {sorted(_EXERCISES)}, got {key!r}")
    if not callable(fn):
        res = Result(key, ex.title, "wrong", f"expected a function, got {type(fn).__name__}")
    else:
        try:
            message = ex.fn(_guarded(fn))
            res = Result(key, ex.title, "correct", message or "correct")
        except _Todo:
            res = Result(key, ex.title, "todo", "not done yet (the function raises "
                                                 "NotImplementedError)")
        except Wrong as e:
            res = Result(key, ex.title, "wrong", str(e))
        except _Raised as e:  # the reader's code failed: say how, do not stop the chapter
            res = Result(key, ex.title, "wrong",
                         f"your function raised {type(e.error).__name__}: {e.error}")
        except Exception as e:  # the checker could not use what the function returned
            res = Result(key, ex.title, "wrong",
                         f"the checker could not use your result ({type(e).__name__}: {e}); "
                         f"help(pg.exercises.checker({key!r})) says what it expects")
    if not quiet:
        print(res)
    return res


class _Todo(Exception):
    """The reader's function raised NotImplementedError."""


class _Raised(Exception):
    """The reader's function raised ``error`` (told apart from the checker's own failures)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _guarded(fn: Callable) -> Callable:
    """``fn``, with what it raises marked as the reader's (:class:`_Todo`, :class:`_Raised`)."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NotImplementedError as e:
            raise _Todo() from e
        except Exception as e:
            raise _Raised(e) from e

    return call


# -- helpers for checkers -----------------------------------------------------------------
# (expect_scalar, expect_loss, near, atol_for, fmt_pair and fmt_distinct are imported by name
# by the chapters' checkers; they join __all__ once tests/test_contract.py has specs for them)
def expect(condition: bool, message: str) -> None:
    """Raise :class:`Wrong` with ``message`` unless ``condition``."""
    if not isinstance(message, str):
        raise ValueError(f"message: expected a string, got {message!r}")
    if not condition:
        raise Wrong(message)


def expect_shape(x: object, shape: tuple, what: str) -> Tensor:
    """``x`` must be a real (not complex) tensor of ``shape``; returns it."""
    if not isinstance(shape, (tuple, list, torch.Size)):
        raise ValueError(f"shape: expected a tuple of sizes, got {shape!r}")
    if not isinstance(x, Tensor):
        raise Wrong(f"{what}: expected a torch.Tensor of shape {tuple(shape)}, got "
                    f"{type(x).__name__}")
    if tuple(x.shape) != tuple(shape):
        raise Wrong(f"{what}: expected shape {tuple(shape)}, got {tuple(x.shape)}")
    if x.is_complex():
        raise Wrong(f"{what}: expected real numbers, got a complex tensor ({x.dtype})")
    return x


def _low_precision(x: Tensor) -> bool:
    return x.dtype in (torch.float32, torch.float16, torch.bfloat16)


def _tolerance(got: Tensor, atol: float, rtol: float) -> tuple[float, float]:
    """The tolerance for an answer in ``got``'s precision: as asked for float64 (and integer
    answers); for float32 (or half) at least what rounding to that precision costs."""
    if got.dtype == torch.float32:
        return max(atol, 1e-6), max(rtol, 1e-5)
    if got.dtype in (torch.float16, torch.bfloat16):
        return max(atol, 1e-3), max(rtol, 1e-2)
    return atol, rtol


def _check_dtype(got: Tensor, what: str, *, allow_bool: bool = False) -> None:
    if got.is_complex():
        raise Wrong(f"{what}: expected real numbers, got a complex tensor ({got.dtype})")
    if got.dtype == torch.bool and not allow_bool:
        raise Wrong(f"{what}: expected numbers, got a boolean tensor")


def _check_finite(got: Tensor, what: str) -> None:
    if got.is_floating_point():
        bad = ~torch.isfinite(got.detach())
        if bool(bad.any()):
            idx = tuple(int(i) for i in torch.nonzero(bad)[0])
            kind = "NaN" if bool(got.detach()[idx].isnan()) else "inf"
            where = f" at {idx if len(idx) > 1 else idx[0]}" if idx else ""
            raise Wrong(f"{what}: your result is {kind}{where}")


def fmt_distinct(a: float, b: float, digits: int = 6) -> tuple[str, str]:
    """``a`` and ``b`` printed with at least ``digits`` significant digits, and more where
    needed for two different numbers to print differently."""
    a, b = float(a), float(b)
    for d in range(digits, 18):
        sa, sb = f"{a:.{d}g}", f"{b:.{d}g}"
        if sa != sb or a == b:
            break
    return sa, sb


def fmt_pair(want: float, got: float) -> str:
    """``"expected W, got G"`` with enough digits that two different numbers print
    differently."""
    w, g = fmt_distinct(want, got)
    return f"expected {w}, got {g}"


def atol_for(got: Tensor, atol: float) -> float:
    """The absolute tolerance ``atol`` (for float64) in ``got``'s precision."""
    return _tolerance(got, atol, 0.0)[0]


def expect_scalar(x: object, what: str) -> Tensor:
    """``x`` must be one number: a Python int or float, a NumPy scalar, or a 0-dim tensor,
    real and finite; returns it as a 0-dim tensor in its own precision (a Python number as
    float64)."""
    if isinstance(x, (bool, np.bool_)):
        raise Wrong(f"{what}: expected a number or 0-dim tensor, got bool")
    if isinstance(x, (complex, np.complexfloating)):
        raise Wrong(f"{what}: expected a real number, got complex")
    if isinstance(x, (int, float)):
        t = torch.tensor(float(x), dtype=torch.float64)
    elif isinstance(x, (np.floating, np.integer)):
        t = torch.from_numpy(np.asarray(x))
        if not t.is_floating_point():
            t = t.to(torch.float64)
    elif isinstance(x, Tensor):
        if x.dim() != 0:
            raise Wrong(f"{what}: expected a 0-dim tensor (a scalar), got shape "
                        f"{tuple(x.shape)}")
        _check_dtype(x, what)
        t = x
    else:
        raise Wrong(f"{what}: expected a number or 0-dim tensor, got {type(x).__name__}")
    _check_finite(t, what)
    return t


def expect_loss(x: object, what: str = "loss") -> Tensor:
    """``x`` must be a 0-dim floating tensor through which gradients flow (a loss the
    checker differentiates); returns it."""
    if not isinstance(x, Tensor):
        raise Wrong(f"{what}: expected a 0-dim tensor (a loss to differentiate), got "
                    f"{type(x).__name__}")
    x = expect_scalar(x, what)
    if not x.requires_grad:
        raise Wrong(f"{what}: the loss must be differentiable (no .detach(), no .item()): "
                    f"got a tensor without a gradient")
    return x


def near(got: object, want: object, *, atol: float = 1e-9, rtol: float = 0.0) -> bool:
    """Whether the number or tensor ``got`` equals ``want`` within a tolerance that follows
    ``got``'s precision (for the checkers' diagnoses of typical mistakes)."""
    g = got if isinstance(got, Tensor) else torch.tensor(float(got), dtype=torch.float64)
    w = want if isinstance(want, Tensor) else torch.tensor(float(want), dtype=torch.float64)
    if g.is_complex() or w.is_complex() or g.shape != w.shape:
        return False
    a, r = _tolerance(g, atol, rtol)
    return bool(torch.allclose(g.detach().to(torch.float64).cpu(),
                               w.detach().to(torch.float64).cpu(), atol=a, rtol=r))


def expect_close(got: object, want: Tensor, what: str, *, atol: float = 1e-8,
                 rtol: float = 1e-6, hint: str = "") -> None:
    """``got`` must equal ``want`` (a tensor) within tolerance; the message says how it
    differs: shape, NaN, the opposite sign, a constant multiple, or just the largest error.

    The tolerance follows ``got``'s precision: a float32 answer is held to what float32
    rounding allows (atol ≥ 1e-6, rtol ≥ 1e-5). A 0-dim ``want`` takes any scalar answer
    (:func:`expect_scalar`). Complex answers are refused, and boolean ones unless the
    comparison is exact (``atol == rtol == 0``: a mask)."""
    if not isinstance(want, Tensor):
        raise ValueError(f"want: expected the right answer as a torch.Tensor, got "
                         f"{type(want).__name__}")
    if want.dim() == 0:
        got = expect_scalar(got, what)
    got = expect_shape(got, tuple(want.shape), what)
    _check_dtype(got, what, allow_bool=(atol == 0 and rtol == 0))
    _check_finite(got, what)
    atol, rtol = _tolerance(got, atol, rtol)
    g = got.detach().to(torch.float64).cpu()
    w = want.detach().to(torch.float64).cpu()
    if torch.allclose(g, w, atol=atol, rtol=rtol):
        return
    extra = f" ({hint})" if hint else ""
    if w.abs().max() > 0 and torch.allclose(g, -w, atol=atol, rtol=rtol):
        raise Wrong(f"{what}: the sign is flipped (you return minus the right answer){extra}")
    den = float((w * w).sum())
    if den > 0:
        c = float((g * w).sum()) / den
        if abs(c) > 1e-12 and abs(c - 1) > max(rtol, 1e-6) \
                and torch.allclose(g, c * w, atol=atol, rtol=max(rtol, 1e-6)):
            raise Wrong(f"{what}: off by a constant factor {c:.6g}{extra}")
    err = float((g - w).abs().max())
    prec = " (computed in float32; the inputs were float64)" if got.dtype == torch.float32 else ""
    raise Wrong(f"{what}: largest error {err:.3g} (tolerance {atol:g} + {rtol:g}·|expected|)"
                f"{prec}{extra}")
