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

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

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
            message = ex.fn(fn)
            res = Result(key, ex.title, "correct", message or "correct")
        except NotImplementedError:
            res = Result(key, ex.title, "todo", "not done yet (the function raises "
                                                 "NotImplementedError)")
        except Wrong as e:
            res = Result(key, ex.title, "wrong", str(e))
        except Exception as e:  # the reader's code failed: say how, do not stop the chapter
            res = Result(key, ex.title, "wrong",
                         f"your function raised {type(e).__name__}: {e}")
    if not quiet:
        print(res)
    return res


# -- helpers for checkers -----------------------------------------------------------------
def expect(condition: bool, message: str) -> None:
    """Raise :class:`Wrong` with ``message`` unless ``condition``."""
    if not isinstance(message, str):
        raise ValueError(f"message: expected a string, got {message!r}")
    if not condition:
        raise Wrong(message)


def expect_shape(x: object, shape: tuple, what: str) -> Tensor:
    """``x`` must be a tensor of ``shape``; returns it."""
    if not isinstance(shape, (tuple, list, torch.Size)):
        raise ValueError(f"shape: expected a tuple of sizes, got {shape!r}")
    if not isinstance(x, Tensor):
        raise Wrong(f"{what}: expected a torch.Tensor of shape {tuple(shape)}, got "
                    f"{type(x).__name__}")
    if tuple(x.shape) != tuple(shape):
        raise Wrong(f"{what}: expected shape {tuple(shape)}, got {tuple(x.shape)}")
    return x


def expect_close(got: object, want: Tensor, what: str, *, atol: float = 1e-8,
                 rtol: float = 1e-6, hint: str = "") -> None:
    """``got`` must equal ``want`` (a tensor) within tolerance; the message says how it
    differs: shape, NaN, the opposite sign, a constant multiple, or just the largest error."""
    if not isinstance(want, Tensor):
        raise ValueError(f"want: expected the right answer as a torch.Tensor, got "
                         f"{type(want).__name__}")
    got = expect_shape(got, tuple(want.shape), what)
    g = got.detach().to(torch.float64).cpu()
    w = want.detach().to(torch.float64).cpu()
    if not bool(torch.isfinite(g).all()):
        raise Wrong(f"{what}: your result holds NaN or inf")
    if torch.allclose(g, w, atol=atol, rtol=rtol):
        return
    extra = f" ({hint})" if hint else ""
    if w.abs().max() > 0 and torch.allclose(g, -w, atol=atol, rtol=rtol):
        raise Wrong(f"{what}: the sign is flipped (you return minus the right answer){extra}")
    den = float((w * w).sum())
    if den > 0:
        c = float((g * w).sum()) / den
        if abs(c) > 1e-12 and torch.allclose(g, c * w, atol=atol, rtol=max(rtol, 1e-6)):
            raise Wrong(f"{what}: off by a constant factor {c:.4g}{extra}")
    err = float((g - w).abs().max())
    raise Wrong(f"{what}: largest error {err:.3g} (tolerance {atol:g}){extra}")
