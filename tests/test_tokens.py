"""Unit tests for pgbook.tokens: token log-probs, masks, sequence log-probs, entropy."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pgbook as pg
from pgbook.trajectory import tokens as T


def _data(B=3, Tn=5, V=11, dtype=torch.float64, seed=0, scale=3.0):
    g = pg.make_generator(seed)
    z = (scale * torch.randn(B, Tn, V, generator=g, dtype=torch.float64)).to(dtype)
    y = torch.randint(0, V, (B, Tn), generator=g)
    return z, y


def _reference(z, y):
    """float64 log_softmax + gather on the same (possibly rounded) logits."""
    return torch.log_softmax(z.double(), -1).gather(-1, y[..., None]).squeeze(-1)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-13), (torch.float32, 2e-6),
                                        (torch.bfloat16, 2e-6)])
def test_token_logprobs_matches_reference(dtype, atol):
    z, y = _data(dtype=dtype)
    out = T.token_logprobs(z, y)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(out.double(), _reference(z, y), rtol=0, atol=atol)
    naive = T.naive_token_logprobs(z, y)
    assert naive.dtype == out.dtype
    torch.testing.assert_close(naive.double(), _reference(z, y), rtol=0, atol=atol)


def test_bfloat16_needs_float32_logsumexp():
    # a bfloat16 logsumexp would be rounded to the bf16 grid (spacing 0.0625 near 10):
    # the float32 rule keeps the error at float32 level
    z, y = _data(B=4, Tn=64, V=2000, dtype=torch.bfloat16, scale=4.0)
    err_ours = (T.token_logprobs(z, y).double() - _reference(z, y)).abs().max()
    lse_bf16 = torch.logsumexp(z, -1)
    err_bf16 = (z.gather(-1, y[..., None]).squeeze(-1).double() - lse_bf16.double()
                - _reference(z, y)).abs().max()
    assert err_ours < 1e-5 < 1e-3 < err_bf16


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk", [None, 1, 2, 7])
def test_gradient_matches_naive(dtype, chunk):
    z, y = _data(dtype=dtype, seed=1)
    w = torch.randn(y.shape, generator=pg.make_generator(2), dtype=torch.float64)
    z1 = z.clone().requires_grad_()
    z2 = z.clone().requires_grad_()
    (T.token_logprobs(z1, y, chunk_size=chunk) * w.to(torch.promote_types(dtype, torch.float32))).sum().backward()
    (torch.log_softmax(z2.double(), -1).gather(-1, y[..., None]).squeeze(-1) * w).sum().backward()
    assert z1.grad.dtype == dtype
    tol = {torch.float64: 1e-13, torch.float32: 1e-6, torch.bfloat16: 1e-2}[dtype]
    torch.testing.assert_close(z1.grad.double(), z2.grad.double(), rtol=0, atol=tol)


def test_gradcheck_and_double_backward():
    z, y = _data(B=2, Tn=3, V=4, seed=3)
    z.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: T.token_logprobs(x, y, chunk_size=1), (z,))
    assert torch.autograd.gradgradcheck(lambda x: T.token_logprobs(x, y), (z,))


def test_functorch_grad_and_vmap():
    z, y = _data(B=2, Tn=3, V=5, seed=4)
    g1 = torch.func.grad(lambda x: T.token_logprobs(x, y, chunk_size=1).sum())(z)
    g2 = torch.func.grad(lambda x: T.naive_token_logprobs(x, y).sum())(z)
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-14)
    zz = torch.randn(4, 2, 3, 5, dtype=torch.float64, generator=pg.make_generator(5))
    out = torch.func.vmap(lambda x: T.token_logprobs(x, y))(zz)
    torch.testing.assert_close(out, torch.stack([T.naive_token_logprobs(x, y) for x in zz]))


def test_saves_no_log_softmax_copy():
    """Memory: what autograd keeps for backward. Ours: the logits (the caller's tensor, no
    new memory) and the (B, T) logsumexp; naive: a (B, T, V) log-softmax as well."""
    z, y = _data(B=2, Tn=8, V=300, dtype=torch.float32)
    z.requires_grad_()

    def saved_new_elements(fn):
        sizes = []

        def pack(t):
            if t.untyped_storage().data_ptr() != z.untyped_storage().data_ptr():
                sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(z, y)
        return max(sizes, default=0)

    assert saved_new_elements(T.token_logprobs) <= 2 * 8          # lse (B, T) / tokens
    assert saved_new_elements(T.naive_token_logprobs) >= 2 * 8 * 300


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 5), Tn=st.integers(1, 4), V=st.integers(1, 9), chunk=st.integers(1, 6),
       seed=st.integers(0, 10_000))
def test_chunked_equals_unchunked_float64(B, Tn, V, chunk, seed):
    z, y = _data(B, Tn, V, seed=seed)
    full = T.token_logprobs(z, y)
    assert torch.equal(T.token_logprobs(z, y, chunk_size=chunk), full)
    assert bool((full <= 1e-12).all())
    # probabilities over the vocabulary sum to one
    every = torch.stack([T.token_logprobs(z, torch.full_like(y, v)) for v in range(V)], -1)
    torch.testing.assert_close(every.exp().sum(-1), torch.ones(B, Tn, dtype=torch.float64),
                               rtol=0, atol=1e-12)


def test_meta_device_forward_backward():
    z = torch.empty(2, 3, 7, device="meta", requires_grad=True)
    y = torch.empty(2, 3, dtype=torch.long, device="meta")
    out = T.token_logprobs(z, y, chunk_size=1)
    assert out.device.type == "meta" and out.shape == (2, 3)
    out.sum().backward()
    assert z.grad.device.type == "meta" and z.grad.shape == z.shape
    assert T.naive_token_logprobs(z, y).device.type == "meta"
    assert T.entropy_from_logits(z).device.type == "meta"
    m = T.response_mask(y, eos_id=0)
    assert m.device.type == "meta" and m.shape == (2, 3)
    assert T.sequence_logprob(out, m).shape == (2,)


def test_bad_inputs():
    z, y = _data()
    with pytest.raises(ValueError, match="int64"):
        T.token_logprobs(z, y.int())
    with pytest.raises(ValueError, match="shape"):
        T.token_logprobs(z, y[:, :-1])
    with pytest.raises(ValueError, match="ids in"):
        T.token_logprobs(z, y + 11)
    with pytest.raises(ValueError, match="floating"):
        T.token_logprobs(z.long(), y)
    with pytest.raises(ValueError, match="chunk_size"):
        T.token_logprobs(z, y, chunk_size=0)
    with pytest.raises(ValueError, match="one device"):
        T.token_logprobs(z, torch.empty(y.shape, dtype=torch.long, device="meta"))
    with pytest.raises(ValueError, match=r"torch\.Tensor"):
        T.token_logprobs(z.numpy(), y)


def test_response_mask():
    toks = torch.tensor([[7, 1, 2, 0, 3, 0],
                         [7, 5, 1, 1, 1, 1],
                         [0, 0, 4, 4, 0, 4]])
    m = T.response_mask(toks, eos_id=0, prompt_len=1)
    assert m.dtype == torch.float32
    assert m.tolist() == [[0, 1, 1, 1, 0, 0],   # EOS included, then nothing
                          [0, 1, 1, 1, 1, 1],   # no EOS: truncated response
                          [0, 1, 0, 0, 0, 0]]   # EOS inside the prompt is ignored
    assert T.response_mask(toks, 0).tolist()[2] == [1, 0, 0, 0, 0, 0]
    assert T.response_mask(toks, 0, dtype=torch.bool).dtype == torch.bool
    with pytest.raises(ValueError, match="prompt_len"):
        T.response_mask(toks, 0, prompt_len=6)
    with pytest.raises(ValueError, match="eos_id"):
        T.response_mask(toks, -1)
    with pytest.raises(ValueError, match="integer"):
        T.response_mask(toks.double(), 0)
    with pytest.raises(ValueError, match="dimension"):
        T.response_mask(toks[0], 0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_sequence_logprob(dtype):
    lp = torch.tensor([[-1.0, -2.0, float("-inf")], [-0.5, float("nan"), -0.25]], dtype=dtype)
    m = torch.tensor([[1, 1, 0], [1, 0, 1]], dtype=torch.float32)
    out = T.sequence_logprob(lp, m)
    assert out.dtype == dtype
    assert out.float().tolist() == [-3.0, -0.75]
    with pytest.raises(ValueError, match="0/1"):
        T.sequence_logprob(lp, m * 2)
    with pytest.raises(ValueError, match="shape"):
        T.sequence_logprob(lp, m[:, :2])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_entropy(dtype):
    z, _ = _data(dtype=dtype, seed=6)
    H = T.entropy_from_logits(z, chunk_size=2)
    p = torch.softmax(z.double(), -1)
    ref = -(p * torch.log(p)).sum(-1)
    assert H.dtype == torch.promote_types(dtype, torch.float32)
    torch.testing.assert_close(H.double(), ref, rtol=0, atol=1e-12 if dtype == torch.float64 else 1e-5)
    flat = T.entropy_from_logits(torch.zeros(2, 3, 8, dtype=dtype))
    torch.testing.assert_close(flat.double(), torch.full((2, 3), math.log(8), dtype=torch.float64),
                               rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="floating"):
        T.entropy_from_logits(torch.zeros(2, 3, dtype=torch.long))
