"""Unit tests for pgbook._validate's shared machinery: checks skipped inside
``values_checked``, the remembered mask proof, cached signatures."""

import pytest
import torch

import pgbook as pg
from pgbook import _validate as V
from pgbook import registry


def test_values_checked_skips_value_checks_only():
    bad = torch.tensor([0.0, float("nan")])
    with pytest.raises(ValueError, match="finite"):
        V.check_finite(bad, "x")
    with V.values_checked():
        V.check_finite(bad, "x")                          # values: skipped
        V.check_mask(torch.tensor([0.5, 1.0]), "mask")
        V.check_index(torch.tensor([-1, 3]), "idx", 2)
        with pytest.raises(ValueError, match=r"expected a torch\.Tensor"):
            V.check_finite([1.0], "x")                    # types: still checked
        with pytest.raises(ValueError, match="expected shape"):
            V.check_mask(torch.ones(3), "mask", (2,))     # shapes: still checked
    with pytest.raises(ValueError, match="finite"):      # and on again after the block
        V.check_finite(bad, "x")


def test_values_checked_is_reset_by_an_exception():
    with pytest.raises(RuntimeError), V.values_checked():
        raise RuntimeError("inside")
    with pytest.raises(ValueError, match="0/1"):
        V.check_mask(torch.tensor([0.5, 1.0]), "mask")


def test_check_index_one_readback_same_message():
    V.check_index(torch.tensor([[0, 4], [2, 1]]), "ids", 5)
    with pytest.raises(ValueError, match=r"expected ids in \[0, 5\).*got range \[-2, 4\]"):
        V.check_index(torch.tensor([[0, 4], [-2, 1]]), "ids", 5)
    with pytest.raises(ValueError, match=r"got range \[0, 5\]"):
        V.check_index(torch.tensor([0, 5]), "ids", 5)


def test_policy_loss_still_refuses_a_loss_that_returns_nan():
    """policy_loss computes its aggregation and metrics inside ``values_checked``; the
    per-token loss itself (a registered loss may be anyone's code) is checked before."""
    @registry.register("policy_loss", "nan_on_token_3", side="trajectory", form="token")
    def nan_loss(logp, advantages, old_logp):
        out = -advantages * logp
        out = out.clone()
        out[:, 3] = float("nan")
        return out

    try:
        lp = torch.randn(2, 5, requires_grad=True)
        mask = torch.ones(2, 5)
        with pytest.raises(ValueError, match="per_token_loss: expected finite"):
            pg.methods.policy_loss(lp, None, torch.ones(2, 5), mask, loss="nan_on_token_3")
        mask[:, 3] = 0                     # a NaN on a masked token never reaches the loss
        value, _ = pg.methods.policy_loss(lp, None, torch.ones(2, 5), mask,
                                          loss="nan_on_token_3")
        assert torch.isfinite(value)
    finally:
        registry.unregister("policy_loss", "nan_on_token_3")


def test_parameters_are_cached_and_unhashable_callables_work():
    def f(a, b=2, *, c=3):
        return a
    assert V.parameters(f) is V.parameters(f)
    assert list(V.parameters(f)) == ["a", "b", "c"]

    class Unhashable:
        __hash__ = None

        def __call__(self, x, y=1):
            return x
    assert list(V.parameters(Unhashable())) == ["x", "y"]
    assert V.keyword_names(f, skip=1) == (["b", "c"], False)
