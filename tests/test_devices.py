"""Device-parametrised tests: every test here takes the ``device`` fixture of conftest.py (the
CPU always, CUDA when a GPU is present; ``pytest -m device`` runs just these, ``make
gpu-check`` runs them on CUDA). Each compares what the device computes with a float64 CPU
reference, so the same test proves a GPU when one is there: token log-probs and entropy
(block by block), the policy losses, the aggregations, the composed loss, the group
advantages and their broadcast, the tiny GPT's KV-cached sampling and shared-prompt passes,
and a few GRPO steps."""

import pytest
import torch

import pgbook as pg
from pgbook import aggregation, methods
from pgbook._validate import check_finite
from pgbook.reward import advantages as A
from pgbook.train.grpo import _trainer_logprobs, grpo_train
from pgbook.trajectory import losses
from pgbook.trajectory import tokens as TK
from pgbook.worlds import gpt
from pgbook.worlds.tasks import Reverse, policy_config

LOW = {torch.float64: 1e-12, torch.float32: 2e-5, torch.bfloat16: 2e-5}


def _logits(shape, dtype, device, seed=0, scale=3.0):
    g = pg.make_generator(seed)
    z = scale * torch.randn(shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, shape[-1], shape[:-1], generator=g)
    return z.to(dtype).to(device), y.to(device)


def _ref_logprobs(z, y):
    """float64 log_softmax + gather on the CPU, on the same (possibly rounded) logits."""
    return torch.log_softmax(z.double().cpu(), -1).gather(-1, y.cpu()[..., None]).squeeze(-1)


def _ref_entropy(z):
    logp = torch.log_softmax(z.double().cpu(), -1)
    return -(logp.exp() * logp).sum(-1)


# -- token log-probs and entropy -------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk", [None, 2])
def test_token_logprobs_values_and_gradient(device, dtype, chunk):
    z, y = _logits((3, 5, 11), dtype, device)
    w = torch.randn(3, 5, generator=pg.make_generator(1), dtype=torch.float64)
    z1 = z.clone().requires_grad_()
    out = TK.token_logprobs(z1, y, chunk_size=chunk)
    assert out.device == z.device and out.dtype == torch.promote_types(dtype, torch.float32)
    torch.testing.assert_close(out.double().cpu(), _ref_logprobs(z, y), rtol=0, atol=LOW[dtype])
    (out * w.to(out.dtype).to(device)).sum().backward()
    z2 = z.double().cpu().requires_grad_()
    (_ref_logprobs(z2, y) * w).sum().backward()
    assert z1.grad.dtype == dtype and z1.grad.device == z.device
    tol = {torch.float64: 1e-13, torch.float32: 1e-6, torch.bfloat16: 1e-2}[dtype]
    torch.testing.assert_close(z1.grad.double().cpu(), z2.grad, rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_many_small_blocks_and_strided_logits(device, dtype, monkeypatch):
    """Blocks of one row (the block size shrunk to fit a tiny vocabulary) over logits that
    cannot be viewed as rows (a slice), against one block over a contiguous copy."""
    full, y = _logits((4, 7, 5), dtype, device, seed=2)
    z = full[:, :-1]                                   # (4, 6, 5), strides of (4, 7, 5)
    y = y[:, :-1].contiguous()
    w = torch.randn(4, 6, generator=pg.make_generator(3), dtype=torch.float64).to(device)
    outs = []
    for block in (TK._BLOCK, 7):
        monkeypatch.setattr(TK, "_BLOCK", block)
        zz = (z if block == 7 else z.contiguous()).detach().requires_grad_()
        lp = TK.token_logprobs(zz, y)
        H = TK.entropy_from_logits(zz)
        ((lp + H) * w.to(lp.dtype)).sum().backward()
        outs.append((lp, H, zz.grad))
    for a, b in zip(outs[0], outs[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=LOW[dtype] if a.dtype != dtype else
                                   {torch.float64: 1e-13, torch.float32: 1e-6,
                                    torch.bfloat16: 1e-2}[dtype])
    torch.testing.assert_close(outs[1][0].double().cpu(), _ref_logprobs(z, y), rtol=0,
                               atol=LOW[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_entropy_values_and_gradient(device, dtype):
    z, _ = _logits((2, 4, 9), dtype, device, seed=4)
    w = torch.randn(2, 4, generator=pg.make_generator(5), dtype=torch.float64)
    z1 = z.clone().requires_grad_()
    H = TK.entropy_from_logits(z1)
    assert H.device == z.device and H.dtype == torch.promote_types(dtype, torch.float32)
    torch.testing.assert_close(H.double().cpu(), _ref_entropy(z), rtol=0, atol=LOW[dtype])
    (H * w.to(H.dtype).to(device)).sum().backward()
    z2 = z.double().cpu().requires_grad_()
    (_ref_entropy(z2) * w).sum().backward()
    tol = {torch.float64: 1e-13, torch.float32: 1e-6, torch.bfloat16: 1e-2}[dtype]
    torch.testing.assert_close(z1.grad.double().cpu(), z2.grad, rtol=0, atol=tol)
    torch.testing.assert_close(TK.naive_entropy(z).double().cpu(), _ref_entropy(z), rtol=0,
                               atol=LOW[dtype])


def test_entropy_double_backward_functorch_and_meta(device):
    z, _ = _logits((2, 3, 4), torch.float64, device, seed=6)
    z.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: TK.entropy_from_logits(x, chunk_size=1), (z,))
    assert torch.autograd.gradgradcheck(lambda x: TK.entropy_from_logits(x), (z,))
    g1 = torch.func.grad(lambda x: TK.entropy_from_logits(x).sum())(z.detach())
    g2 = torch.func.grad(lambda x: TK.naive_entropy(x).sum())(z.detach())
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-14)
    zz = torch.randn(3, 2, 3, 4, dtype=torch.float64, generator=pg.make_generator(7)).to(device)
    out = torch.func.vmap(TK.entropy_from_logits)(zz)
    torch.testing.assert_close(out, torch.stack([TK.naive_entropy(x) for x in zz]))
    m = torch.empty(2, 3, 7, device="meta", requires_grad=True)
    H = TK.entropy_from_logits(m)
    H.sum().backward()
    assert H.shape == (2, 3) and m.grad.shape == m.shape and m.grad.device.type == "meta"
    assert TK.entropy_from_logits(z[0, 0]).shape == ()          # one distribution (V,)


@pytest.mark.parametrize("chunk", [None, 1])
def test_entropy_and_logprobs_with_forbidden_tokens(device, chunk):
    """A −inf logit (a forbidden token) adds 0 to the entropy and gets a zero gradient: the
    blocked path equals the entropy of the allowed tokens alone, with no NaN anywhere."""
    z, y = _logits((2, 3, 6), torch.float64, device, seed=8)
    z[..., 0] = -torch.inf
    y = y.clamp(min=1)
    z1 = z.clone().requires_grad_()
    H = TK.entropy_from_logits(z1, chunk_size=chunk)
    torch.testing.assert_close(H.cpu(), _ref_entropy(z[..., 1:]), rtol=0, atol=1e-12)
    H.sum().backward()
    z2 = z[..., 1:].cpu().clone().requires_grad_()
    _ref_entropy(z2).sum().backward()
    assert bool((z1.grad[..., 0] == 0).all())
    torch.testing.assert_close(z1.grad[..., 1:].cpu(), z2.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(TK.naive_entropy(z).cpu(), H.detach().cpu(), rtol=0, atol=1e-12)
    lp = TK.token_logprobs(z, y, chunk_size=chunk)
    torch.testing.assert_close(lp.cpu(), _ref_logprobs(z[..., 1:], y - 1), rtol=0, atol=1e-12)


def test_entropy_saves_no_vocabulary_sized_copy(device):
    z, _ = _logits((2, 8, 300), torch.float32, device, seed=8)
    z.requires_grad_()
    sizes = []

    def pack(t):
        if t.untyped_storage().data_ptr() != z.untyped_storage().data_ptr():
            sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        TK.entropy_from_logits(z)
    assert max(sizes, default=0) <= 2 * 8                      # lse and H, (B, T)
    sizes.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        TK.naive_entropy(z)
    assert max(sizes) >= 2 * 8 * 300


# -- policy losses, aggregations, the composed loss ------------------------------------------

def _batch(device, dtype=torch.float32, B=8, T=6, seed=0):
    g = pg.make_generator(seed)
    lp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    old = lp + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    ref = lp + 0.2 * torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).double()
    adv = A.broadcast_to_tokens(A.grpo_advantage(torch.randint(0, 2, (B,), generator=g).double(),
                                                 4), mask)
    on = [x.to(device, dtype) for x in (lp, old, ref, adv, mask)]
    return (lp, old, ref, adv, mask), on


@pytest.mark.parametrize("name", ["score_function", "importance_weighted", "ppo_clip",
                                  "ppo_dual_clip"])
def test_policy_losses(device, name):
    cpu, dev = _batch(device)
    fn = getattr(losses, f"{name}_loss")
    want = fn(cpu[0], cpu[3], cpu[1])
    got = fn(dev[0], dev[3], dev[1])
    assert got.device == dev[0].device and got.dtype == torch.float32
    torch.testing.assert_close(got.double().cpu(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum",
                                  "constant"])
def test_aggregations(device, name):
    cpu, dev = _batch(device, seed=1)
    want = aggregation.aggregate(cpu[0], cpu[4], name)
    got = aggregation.aggregate(dev[0], dev[4], name)
    assert got.device == dev[0].device
    torch.testing.assert_close(got.double().cpu(), want, rtol=1e-5, atol=1e-6)


def test_methods_policy_loss(device):
    cpu, dev = _batch(device, seed=2)
    outs = []
    for lp, old, ref, adv, mask in (cpu, dev):
        lp = lp.clone().requires_grad_()
        loss, met = methods.policy_loss(lp, old, adv, mask, loss="ppo_clip",
                                        aggregation="seq_mean_token_mean", eps_low=0.2,
                                        eps_high=0.28, ref_logp=ref, kl="k3_loss", beta=0.04)
        loss.backward()
        outs.append((loss, met, lp.grad))
    (l0, m0, g0), (l1, m1, g1) = outs
    assert l1.device == dev[0].device
    torch.testing.assert_close(l1.double().cpu(), l0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g1.double().cpu(), g0, rtol=1e-5, atol=1e-6)
    for k in ("clip_fraction", "ratio_max", "kl"):
        torch.testing.assert_close(m1[k].double().cpu(), m0[k].double(), rtol=1e-5, atol=1e-6)


# -- advantages -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_advantages(device, dtype):
    g = pg.make_generator(3)
    R = torch.randint(0, 3, (48,), generator=g).double() / 3
    R[:8] = 0.1                                         # a zero-variance group of 0.1s
    R[8:16] = 1.0
    Rd = R.to(dtype).to(device)
    for fn in (A.grpo_advantage, A.grpo_mean_advantage, A.rloo_advantage, A.plain_advantage):
        got = fn(Rd, 8)
        want = fn(Rd.double().cpu(), 8)
        assert got.device == Rd.device and got.dtype == dtype
        torch.testing.assert_close(got.double().cpu(), want, rtol=0,
                                   atol=1e-12 if dtype == torch.float64 else 1e-2)
        if fn is not A.plain_advantage:                 # exact zeros, never 0/0
            assert bool((got[:16] == 0).all())
    adv = A.grpo_advantage(Rd, 8)
    mask = (torch.rand(48, 5, generator=g) > 0.4)
    for m in (mask, mask.long(), mask.float(), mask.double()):
        out = A.broadcast_to_tokens(adv, m.to(device))
        assert out.dtype == dtype and out.device == Rd.device and out.shape == (48, 5)
        want = torch.where(mask, adv.cpu()[:, None], torch.zeros((), dtype=dtype))
        assert torch.equal(out.cpu(), want)


def test_check_finite_fast_path_still_counts(device):
    x = torch.zeros(1000, device=device)
    assert check_finite(x, "x") is x
    big = torch.full((4,), 3e38, device=device)       # finite entries whose sum overflows
    assert check_finite(big, "big") is big
    x[3] = float("nan")
    x[7] = float("inf")
    x[9] = -float("inf")
    with pytest.raises(ValueError, match="1 NaN and 2 infinite"):
        check_finite(x, "x")
    with pytest.raises(ValueError, match="1 NaN"):
        check_finite(x.bfloat16(), "x")


# -- the tiny GPT: KV cache, cached sampling, shared prompts ------------------------------------

def _model(device, dtype=torch.float64, V=9, block=40, **kw):
    kw = {"n_layer": 2, "init_std": 0.3, **kw}
    return gpt.GPT(gpt.GPTConfig(V, block_size=block, **kw), pg.make_generator(0)).to(device, dtype)


def _prompts(device, B=12, P=6, V=9, repeat=1, seed=1):
    x = torch.randint(3, V, (B // repeat, P), generator=pg.make_generator(seed))
    x[:, 0] = gpt.BOS
    return x.repeat_interleave(repeat, 0).to(device)


@pytest.mark.parametrize("grads", ["none", "all", "first"])
def test_kv_cache_forward_equals_full_forward(device, grads):
    """Chunks through a cache give the full pass's logits: written in place (no autograd),
    concatenated (autograd), or both in turn."""
    m = _model(device)
    x = _prompts(device, P=20)
    full = m(x)
    c = m.new_cache()
    parts = []
    for i, (a, b) in enumerate(((0, 7), (7, 8), (8, 20))):
        with torch.set_grad_enabled(grads == "all" or (grads == "first" and i == 0)):
            parts.append(m(x[:, a:b], c))
    assert c.length == 20
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=0, atol=1e-12)
    if grads != "none":
        torch.cat(parts, 1).sum().backward()
        assert m.wte.weight.grad is not None
    with pytest.raises(ValueError, match="max_len"):
        gpt.KVCache(0)
    c2 = m.new_cache(8)
    m(x[:, :8], c2)
    with pytest.raises(ValueError, match="cache"):
        m(x[:, 8:9], c2)                                # the cache holds 8 positions
    with pytest.raises(ValueError, match="block_size"):
        m(torch.zeros(12, 30, dtype=torch.long, device=device), c)   # 20 cached + 30 > 40
    rows = torch.tensor([0, 0, 3], device=device)
    c3 = m.new_cache()
    m(x[:, :5], c3)
    c3.select(rows)
    torch.testing.assert_close(m(x[rows, 5:9], c3), m(x[rows, :9])[:, 5:], rtol=0, atol=1e-12)


@pytest.mark.parametrize("tau", [0.0, 0.7, 1.0, 1.5])
def test_cached_sampling_equals_uncached(device, tau):
    """Same random draws in the same order: the same tokens; log-probs equal at float64."""
    m = _model(device)
    x = _prompts(device, B=24, repeat=4)
    a = gpt.sample(m, x, 25, pg.make_generator(2, device), tau)
    b = gpt.sample(m, x, 25, pg.make_generator(2, device), tau, cache=False)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)
    torch.testing.assert_close(a.logprobs, b.logprobs, rtol=0, atol=1e-12)
    assert a.tokens.device == x.device and 0 < a.mask.sum() < a.mask.numel()
    m32 = _model(device, torch.float32)
    a = gpt.sample(m32, x, 25, pg.make_generator(2, device), tau)
    b = gpt.sample(m32, x, 25, pg.make_generator(2, device), tau, cache=False)
    assert torch.equal(a.tokens, b.tokens)               # at these seeds: no draw on a boundary
    torch.testing.assert_close(a.logprobs, b.logprobs, rtol=0, atol=1e-5)
    rec = gpt.logprobs(m32, a.tokens, temperature=tau if tau > 0 else 1.0).detach()
    assert float(((rec - a.logprobs) * a.mask).abs().max()) < 1e-5


def test_cached_sampling_bfloat16_and_autocast(device):
    x = _prompts(device, B=8)
    mb = _model(device, torch.bfloat16)
    a = gpt.sample(mb, x, 10, pg.make_generator(3, device))
    rec = gpt.logprobs(mb, a.tokens).detach()
    assert a.logprobs.dtype == torch.float32 and float(((rec - a.logprobs) * a.mask).abs().max()) < 5e-2
    m = _model(device, torch.float32)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        s = gpt.sample(m, x, 10, pg.make_generator(3, device))
        rec = gpt.logprobs(m, s.tokens).detach()
    assert float(((rec - s.logprobs) * s.mask).abs().max()) < 5e-2


@pytest.mark.parametrize("repeat", [1, 4])
def test_shared_prompt_pass_equals_plain_pass(device, repeat):
    """logprobs(..., prompt_len=P) runs each run of equal prompts once: same values, and the
    same gradients (float64), whether prompts repeat or not."""
    m = _model(device)
    x = _prompts(device, B=12, repeat=repeat)
    s = gpt.sample(m, x, 9, pg.make_generator(4, device))
    w = torch.randn(s.tokens.shape, generator=pg.make_generator(5), dtype=torch.float64)
    grads, values = [], []
    for P in (None, 6):
        m.zero_grad()
        lp = gpt.logprobs(m, s.tokens, prompt_len=P)
        (lp * w.to(device)).sum().backward()
        values.append(lp.detach())
        grads.append(torch.cat([p.grad.reshape(-1) for p in m.parameters()]))
    torch.testing.assert_close(values[1], values[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-12)
    with torch.no_grad():
        lp_t, ent = _trainer_logprobs(m, s.tokens, 1.0, 6)
    torch.testing.assert_close(lp_t, values[0], rtol=0, atol=1e-12)
    z = m(s.tokens[:, :-1])
    torch.testing.assert_close(ent[:, 1:], _ref_entropy(z.detach()).to(device), rtol=0, atol=1e-12)
    for bad in (0, 15, 2.5):
        with pytest.raises(ValueError, match="prompt_len"):
            gpt.logprobs(m, s.tokens, prompt_len=bad)


# -- GRPO steps ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [{}, {"minibatches": 2}, {"kl": "k1_in_reward", "beta": 0.1}])
def test_grpo_steps(device, kw):
    task = Reverse()
    model = gpt.GPT(policy_config(task), pg.make_generator(0)).to(device)
    h = grpo_train(model, task, steps=2, prompts_per_step=4, group_size=4, epochs_per_batch=2,
                   generator=pg.make_generator(1, device), progress=False, **kw)
    assert h.steps == 2 and all(bool(torch.isfinite(v).all()) for v in h.as_dict().values())
    # the old log-probs are the trainer's own pass: ratio exactly 1 on the first update (where
    # they come from a separate pass, a GPU may pick other kernels and round differently)
    exact = not kw or device.type == "cpu"
    assert float(h.first_epoch_ratio_error.max()) <= (0.0 if exact else 1e-5)
    assert float(h.logprob_gap.max()) < 1e-5             # cached sampler vs trainer
    assert float(h.kl_ref[0]) == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64, torch.int64])
def test_check_mask_on_a_large_mask(device, dtype):
    """check_mask's fast path (min and sum of m − m², block by block) accepts exactly the 0/1
    masks: one bad value deep in a mask of several blocks is still found."""
    from pgbook._validate import _MASK_BLOCK, check_mask
    n = 3 * _MASK_BLOCK + 5
    m = (torch.arange(n, device=device) % 3 == 0).to(dtype)
    assert check_mask(m, "mask") is m
    floats = [0.5, float("nan"), float("inf"), -float("inf"), 1 - 2 ** -8, 1e20, 1e-30,
              torch.finfo(dtype).tiny / 4 if dtype.is_floating_point else 0]
    bad = [2, -1] + (floats if dtype != torch.int64 else [])
    for v in bad:
        m2 = m.clone()
        m2[2 * _MASK_BLOCK + 7] = v
        with pytest.raises(ValueError, match="mask: expected a 0/1 mask"):
            check_mask(m2, "mask")
    if dtype.is_floating_point:   # m − m² = +1/4 and −1/4: the sum cancels, the min does not
        m2 = m.clone()
        m2[5], m2[6] = 0.5, (1 + 2 ** 0.5) / 2
        with pytest.raises(ValueError, match="mask: expected a 0/1 mask"):
            check_mask(m2, "mask")
    with pytest.raises(ValueError, match="all zero"):
        check_mask(torch.zeros_like(m), "mask")
    check_mask(torch.zeros_like(m), "mask", allow_all_zero=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_check_mask_remembers_a_proof_until_the_mask_changes(device, dtype):
    """A mask proven 0/1 is not read again while unchanged; any in-place write (directly,
    through a view, or filling it with zeros) makes the next call check it afresh."""
    from pgbook._validate import _MASK_PROOFS, check_mask
    m = (torch.arange(40, device=device).view(4, 10) % 3 == 0).to(dtype)
    check_mask(m, "mask")
    assert _MASK_PROOFS[m][1] is True
    check_mask(m, "mask")                                  # from the memo
    m[1, 2] = 2
    with pytest.raises(ValueError, match="mask: expected a 0/1 mask"):
        check_mask(m, "mask")
    m[1, 2] = 1
    check_mask(m, "mask")
    m[2].fill_(3)                                          # through a view
    with pytest.raises(ValueError, match="mask: expected a 0/1 mask"):
        check_mask(m, "mask")
    m.zero_()
    check_mask(m, "mask", allow_all_zero=True)             # remembered as all zero ...
    with pytest.raises(ValueError, match="all zero"):      # ... which is still refused
        check_mask(m, "mask")
    v = m[:, :5]                                           # a view is a tensor of its own
    v.fill_(1)
    check_mask(v, "mask")
    m[0, 0] = -1                                           # shares the base's version counter
    with pytest.raises(ValueError, match="mask: expected a 0/1 mask"):
        check_mask(v, "mask")
    with torch.inference_mode():                           # no version counter: checked each time
        w = torch.ones(3, 4, device=device, dtype=dtype)
        check_mask(w, "mask")
        assert w not in _MASK_PROOFS
        w[0, 0] = 5
        with pytest.raises(ValueError, match="mask: expected a 0/1 mask"):
            check_mask(w, "mask")


def test_a_remembered_proof_does_not_travel_with_a_copy():
    """The proof lives beside the tensor, not on it: a deep copy, a pickle or a saved and
    loaded mask is checked afresh (a stale proof could otherwise meet a tensor that reuses
    the freed memory of the one it was made for)."""
    import copy
    import io

    from pgbook._validate import _MASK_PROOFS, check_mask
    m = torch.ones(3, 4)
    check_mask(m, "mask")
    assert m in _MASK_PROOFS
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    for other in (copy.deepcopy(m), torch.load(buf, weights_only=True)):
        assert other not in _MASK_PROOFS
        other[0, 0] = 0.5
        with pytest.raises(ValueError, match="mask: expected a 0/1 mask"):
            check_mask(other, "mask")
    n = len(_MASK_PROOFS)
    del m
    assert len(_MASK_PROOFS) == n - 1                     # gone with its tensor
