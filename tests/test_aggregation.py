"""Unit tests for pgbook.aggregation: token-loss reductions and their weights."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pgbook as pg
from pgbook import aggregation as G
from pgbook import registry

L = torch.tensor([[1.0, 2.0, 3.0, 9.0],
                  [4.0, 5.0, 7.0, 7.0],
                  [6.0, 8.0, 8.0, 8.0]], dtype=torch.float64)
M = torch.tensor([[1, 1, 1, 0],
                  [1, 0, 0, 0],
                  [1, 1, 0, 0]])

AGGREGATIONS = {c.name: c.fn for c in registry.components("aggregation", form="token")}


def test_by_hand():
    assert float(G.aggregate(L, M, "token_mean")) == pytest.approx((1 + 2 + 3 + 4 + 6 + 8) / 6, abs=1e-15)
    assert float(G.aggregate(L, M, "seq_mean_token_mean")) == pytest.approx((2 + 4 + 7) / 3, abs=1e-15)
    assert float(G.aggregate(L, M, "seq_mean_token_sum")) == pytest.approx((6 + 4 + 14) / 3, abs=1e-15)
    assert float(G.aggregate(L, M, "constant")) == pytest.approx(24 / (3 * 4), abs=1e-15)
    assert float(G.aggregate(L, M, "constant", max_tokens=8)) == pytest.approx(24 / (3 * 8), abs=1e-15)


def test_token_weights_are_the_gradient():
    w = G.token_weights(M, "seq_mean_token_mean")
    assert w.tolist()[0][:3] == pytest.approx([1 / 9] * 3) and w[1, 0] == pytest.approx(1 / 3)
    assert float(w[0, 3]) == 0.0
    # token_mean: every token the same weight; constant: 1/(B·L)
    assert set(G.token_weights(M, "token_mean")[M.bool()].tolist()) == {1 / 6}
    assert set(G.token_weights(M, "constant", 5)[M.bool()].tolist()) == {1 / 15}


def test_padding_values_never_leak():
    bad = L.clone()
    bad[~M.bool()] = float("nan")
    x = bad.clone().requires_grad_()
    for mode in AGGREGATIONS:
        out = G.aggregate(x, M, mode)
        assert torch.isfinite(out)
        (g,) = torch.autograd.grad(out, x)
        assert bool(torch.isfinite(g).all()) and bool((g[~M.bool()] == 0).all())


def test_empty_rows_left_out_of_sequence_means():
    m = M.clone()
    m[1] = 0
    assert float(G.aggregate(L, m, "seq_mean_token_mean")) == pytest.approx((2 + 7) / 2)
    assert float(G.aggregate(L, m, "seq_mean_token_sum")) == pytest.approx((6 + 14) / 2)
    assert float(G.aggregate(L, m, "constant")) == pytest.approx(20 / 12)


@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 5), T=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_equal_lengths_make_modes_agree(B, T, seed):
    x = torch.randn(B, T, generator=pg.make_generator(seed), dtype=torch.float64)
    full = torch.ones(B, T)
    tm = G.aggregate(x, full, "token_mean")
    torch.testing.assert_close(G.aggregate(x, full, "seq_mean_token_mean"), tm, rtol=0, atol=1e-12)
    torch.testing.assert_close(G.aggregate(x, full, "constant"), tm, rtol=0, atol=1e-12)
    torch.testing.assert_close(G.aggregate(x, full, "seq_mean_token_sum"), T * tm, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_dtypes(dtype):
    for mode in AGGREGATIONS:
        out = G.aggregate(L.to(dtype), M, mode)
        assert out.dtype == dtype and out.dim() == 0
        torch.testing.assert_close(out.double(), G.aggregate(L, M, mode), rtol=1e-2, atol=0)


def test_meta_device():
    x = torch.empty(3, 4, device="meta")
    m = torch.empty(3, 4, device="meta")
    for mode in AGGREGATIONS:
        out = G.aggregate(x, m, mode, max_tokens=4)
        assert out.device.type == "meta" and out.shape == ()


def test_bad_inputs():
    with pytest.raises(ValueError, match="all zero"):
        G.aggregate(L, torch.zeros_like(M), "token_mean")
    with pytest.raises(ValueError, match="expected one of"):
        G.aggregate(L, M, "mean")
    with pytest.raises(ValueError, match="shape"):
        G.aggregate(L, M[:, :3], "token_mean")
    with pytest.raises(ValueError, match="0/1"):
        G.aggregate(L, M * 2.0, "token_mean")
    with pytest.raises(ValueError, match="longest"):
        G.aggregate(L, M, "constant", max_tokens=2)
    with pytest.raises(ValueError, match="dimension"):
        G.aggregate(L[0], M[0], "token_mean")
    with pytest.raises(ValueError, match="floating"):
        G.aggregate(L.long(), M, "token_mean")


def test_registered_on_reward_side():
    for mode, fn in AGGREGATIONS.items():
        c = registry.get("aggregation", mode)
        assert c.side == "reward" and c.fn is fn
