"""Every exercise checker passes a correct solution, rejects typical wrong ones with a message,
and reports an unfinished one as "not done yet" without raising."""

import importlib
import pkgutil

import pytest

import pgbook as pg
from pgbook import exercises

from . import exercise_solutions

SOLUTIONS = {}
for _mod in pkgutil.iter_modules(exercise_solutions.__path__):
    SOLUTIONS.update(importlib.import_module(f"{exercise_solutions.__name__}.{_mod.name}").SOLUTIONS)

KEYS = [k for k, _ in exercises.list_exercises()]


def test_every_exercise_has_solutions():
    missing = [k for k in KEYS if k not in SOLUTIONS]
    assert not missing, f"exercises without test solutions: {missing}"
    for k in KEYS:
        assert len(SOLUTIONS[k]["wrong"]) >= 2, f"{k}: expected at least two wrong solutions"


@pytest.mark.parametrize("key", KEYS)
def test_checker_accepts_correct_and_rejects_wrong(key):
    assert exercises.check(key, SOLUTIONS[key]["correct"], quiet=True).status == "correct"
    for wrong in SOLUTIONS[key]["wrong"]:
        res = exercises.check(key, wrong, quiet=True)
        assert res.status == "wrong", f"{key}: {wrong.__name__} was not rejected"
        assert res.message


@pytest.mark.parametrize("key", KEYS)
def test_unfinished_is_todo_and_does_not_raise(key, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError

    res = pg.exercises.check(key, stub)
    assert res.status == "todo" and not res
    assert "not done yet" in capsys.readouterr().out
