"""The exercise checkers judge what a reader's function returns, not how: NaN, complex, bool,
None, strings, lists and (1,)-shaped "scalars" are refused with a message that names them; a
correct formula computed in float32 passes (at float32's tolerance) while a wrong one still
fails; a checker's own failure is not reported as the reader's; a loss the checker
differentiates must carry a gradient; an unknown chapter is refused."""

import importlib
import pkgutil
import re

import numpy as np
import pytest
import torch

from pgbook import exercises

from . import exercise_solutions

SOLUTIONS = {}
for _mod in pkgutil.iter_modules(exercise_solutions.__path__):
    SOLUTIONS.update(importlib.import_module(f"{exercise_solutions.__name__}.{_mod.name}").SOLUTIONS)

KEYS = [k for k, _ in exercises.list_exercises()]


def _map(out, f):
    if isinstance(out, torch.Tensor):
        return f(out)
    if isinstance(out, tuple):
        return tuple(_map(o, f) for o in out)
    if isinstance(out, list):
        return [_map(o, f) for o in out]
    return out


def _then(fn, f):
    def g(*args, **kwargs):
        return _map(fn(*args, **kwargs), f)
    return g


def _float32(t):
    return t.float() if t.dtype == torch.float64 else t


def _check(key, fn):
    return exercises.check(key, fn, quiet=True)


# -- 2: float32 answers are judged at float32's tolerance ---------------------------------
@pytest.mark.parametrize("key", KEYS)
def test_correct_formula_in_float32_passes(key):
    res = _check(key, _then(SOLUTIONS[key]["correct"], _float32))
    assert res.status == "correct", res.message


_EQUAL_PAIR = re.compile(r"expected ([-\d.e+]+), got ([-\d.e+]+)")


@pytest.mark.parametrize("key", KEYS)
def test_wrong_formula_in_float32_fails_and_never_prints_equal_numbers(key):
    for wrong in SOLUTIONS[key]["wrong"]:
        res = _check(key, _then(wrong, _float32))
        assert res.status == "wrong", f"{key}: {wrong.__name__} in float32 was accepted"
        for a, b in _EQUAL_PAIR.findall(res.message):
            assert a != b, res.message
        assert "constant factor 1 " not in res.message + " ", res.message


@pytest.mark.parametrize("key", ["05.1", "12.1", "A1.1", "A1.3"])
def test_float32_messages_are_not_self_contradicting(key):
    # a float32 answer that is wrong by a little more than float32 rounding
    res = _check(key, _then(SOLUTIONS[key]["correct"], lambda t: (t * (1 + 1e-3)).float()))
    assert res.status == "wrong"
    for a, b in _EQUAL_PAIR.findall(res.message):
        assert a != b, res.message
    assert "constant factor 1 " not in res.message + " ", res.message


# -- 1: NaN / inf answers -------------------------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf"), torch.tensor(float("nan"))])
@pytest.mark.parametrize("key", ["06.3", "07.2", "08.3", "11.2"])
def test_scalar_nan_or_inf_refused(key, value):
    res = _check(key, lambda *a, **k: value)
    assert res.status == "wrong"
    assert re.search(r"your result is (NaN|inf)", res.message), res.message


@pytest.mark.parametrize("key", KEYS)
def test_nan_answer_never_accepted(key):
    res = _check(key, _then(SOLUTIONS[key]["correct"], lambda t: t.detach().clone()
                            .fill_(float("nan")) if t.is_floating_point() else t))
    # 07.3 returns a bool mask; 06.3, 07.2, 08.3, 11.2 return plain numbers (tested below)
    assert res.status != "correct" or key in ("06.3", "07.2", "07.3", "08.3", "11.2"), res.message


@pytest.mark.parametrize("key", ["03.1", "05.1", "16.3"])
def test_tensor_nan_refused_with_position(key):
    res = _check(key, _then(SOLUTIONS[key]["correct"],
                            lambda t: t.detach().clone().fill_(float("nan"))))
    assert res.status == "wrong"
    assert re.search(r"NaN", res.message), res.message


def test_expect_close_names_the_nan_position():
    got = torch.tensor([1.0, float("nan"), 3.0], dtype=torch.float64)
    with pytest.raises(exercises.Wrong, match=r"x: your result is NaN at 1"):
        exercises.expect_close(got, torch.ones(3, dtype=torch.float64), "x")


# -- 3: complex and bool answers ----------------------------------------------------------
@pytest.mark.parametrize("key", ["01.1", "03.1", "10.1", "10.2", "16.1", "17.1"])
def test_complex_answer_refused(key):
    res = _check(key, _then(SOLUTIONS[key]["correct"], lambda t: t.detach() + 3j
                            if t.is_floating_point() else t))
    assert res.status == "wrong"
    assert "complex" in res.message, res.message


@pytest.mark.parametrize("key", ["07.2", "06.3"])
def test_complex_or_bool_scalar_refused(key):
    res = _check(key, lambda *a: 1 + 0j)
    assert res.status == "wrong" and "expected a real number, got complex" in res.message
    res = _check(key, lambda *a: True)
    assert res.status == "wrong" and "got bool" in res.message


def test_bool_tensor_refused_where_numbers_are_expected():
    with pytest.raises(exercises.Wrong, match="got a boolean tensor"):
        exercises.expect_close(torch.ones(3, dtype=torch.bool), torch.ones(3), "x")
    # an exact comparison (a mask) still takes a boolean tensor
    exercises.expect_close(torch.ones(3, dtype=torch.bool), torch.ones(3), "mask", atol=0, rtol=0)


# -- 4: list_exercises refuses an unknown chapter -----------------------------------------
@pytest.mark.parametrize("chapter", ["3", "99", "", "3.1"])
def test_list_exercises_unknown_chapter(chapter):
    with pytest.raises(ValueError, match=r"chapter: expected one of '00', '01', .* got"):
        exercises.list_exercises(chapter)


def test_list_exercises_int_chapter_refused():
    with pytest.raises(ValueError, match=r"chapter: expected a chapter number as a string"):
        exercises.list_exercises(3)


def test_list_exercises_valid():
    assert [k for k, _ in exercises.list_exercises("03")] == ["03.1", "03.2"]


# -- 5: the checker's own failures are not the reader's -----------------------------------
@pytest.mark.parametrize("value, fragment", [
    (None, "expected a number or 0-dim tensor, got NoneType"),
    ("0.5", "expected a number or 0-dim tensor, got str"),
    ([0.5], "expected a number or 0-dim tensor, got list"),
    (torch.ones(2, dtype=torch.float64), r"expected a 0-dim tensor \(a scalar\), got shape \(2,\)"),
])
@pytest.mark.parametrize("key", ["06.3", "07.2", "11.2"])
def test_scalar_answer_of_the_wrong_type(key, value, fragment):
    res = _check(key, lambda *a: value)
    assert res.status == "wrong"
    assert re.search(fragment, res.message), res.message
    assert "your function raised" not in res.message


@pytest.mark.parametrize("key", ["10.3", "11.1", "12.1", "14.2", "A1.1", "A1.3"])
def test_detached_result_gets_the_differentiable_message(key):
    res = _check(key, _then(SOLUTIONS[key]["correct"], lambda t: t.detach()))
    assert res.status == "wrong"
    assert "your function raised" not in res.message
    assert re.search(r"differentiable|no gradient", res.message), res.message


@pytest.mark.parametrize("key", ["00.1", "07.2", "12.1"])
def test_exception_in_the_readers_function_is_reported_as_theirs(key):
    res = _check(key, lambda *a, **k: 1 / 0)
    assert res.status == "wrong"
    assert res.message.startswith("your function raised ZeroDivisionError")


def test_checker_failure_is_not_blamed_on_the_reader():
    # a tuple where a tensor is expected: the checker cannot use it, the function did not fail
    res = _check("04.2", lambda *a: (None, None))
    assert res.status == "wrong"
    assert "your function raised" not in res.message


def test_not_implemented_in_the_checker_path_is_still_todo():
    def stub(*a, **k):
        raise NotImplementedError
    assert _check("12.1", stub).status == "todo"


# -- 6: one rule for scalar answers -------------------------------------------------------
def _scalar_from(key, to):
    return _then(SOLUTIONS[key]["correct"], to)


@pytest.mark.parametrize("key", ["00.1", "01.2", "02.3", "14.4"])
@pytest.mark.parametrize("form", ["python", "numpy64", "numpy32", "tensor"])
def test_scalar_answer_forms_accepted(key, form):
    to = {"python": lambda t: float(t),
          "numpy64": lambda t: np.float64(float(t)),
          "numpy32": lambda t: np.float32(float(t)),
          "tensor": lambda t: t}[form]
    res = _check(key, _scalar_from(key, to))
    assert res.status == "correct", res.message


@pytest.mark.parametrize("key", ["06.3", "07.2", "08.3", "11.2"])
@pytest.mark.parametrize("form", ["python", "numpy32", "tensor"])
def test_number_answer_forms_accepted(key, form):
    correct = SOLUTIONS[key]["correct"]
    to = {"python": float, "numpy32": lambda v: np.float32(float(v)),
          "tensor": lambda v: torch.tensor(float(v), dtype=torch.float64)}[form]
    res = _check(key, lambda *a, **k: to(correct(*a, **k)))
    assert res.status == "correct", res.message


@pytest.mark.parametrize("key", ["00.1", "14.4", "12.1", "A1.1", "A1.3", "10.3"])
def test_shape_1_scalar_refused(key):
    res = _check(key, _scalar_from(key, lambda t: t.reshape(1)))
    assert res.status == "wrong"
    assert "expected a 0-dim tensor (a scalar), got shape (1,)" in res.message, res.message


@pytest.mark.parametrize("key", ["10.3", "12.1", "A1.1", "A1.3"])
def test_loss_must_be_a_tensor_with_gradient(key):
    res = _check(key, _then(SOLUTIONS[key]["correct"], lambda t: float(t.detach())))
    assert res.status == "wrong"
    assert "expected a 0-dim tensor (a loss to differentiate), got float" in res.message


def test_expect_scalar_and_loss_helpers():
    assert exercises.expect_scalar(np.float32(0.5), "x").dtype == torch.float32
    assert exercises.expect_scalar(2, "x").dtype == torch.float64
    with pytest.raises(exercises.Wrong, match=r"x: the loss must be differentiable"):
        exercises.expect_loss(torch.tensor(0.5), "x")
    x = torch.tensor(0.5, requires_grad=True)
    assert exercises.expect_loss(x * 2, "x").requires_grad


def test_fmt_pair_prints_different_numbers_differently():
    a = 0.035427
    b = float(torch.tensor(a, dtype=torch.float32))
    w, g = exercises.fmt_distinct(a, b)
    assert w != g
    assert exercises.fmt_pair(1.0, 1.0) == "expected 1, got 1"
    assert float(w) == pytest.approx(a) and float(g) == pytest.approx(b)
