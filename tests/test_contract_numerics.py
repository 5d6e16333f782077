"""The numerics of the contract, on the calls of tests/test_contract.py's SPECS:

* ``torch.autograd.gradcheck`` (float64) for every differentiable public function;
* a ``meta``-device run of every tensor function, whose output has the CPU run's shapes;
* a bfloat16 run of every function that takes floats: finite, in bfloat16 or float32 (the
  library computes low precision in float32), and close to the float64 result.

Each spec says which arguments are differentiated, moved to meta or cast to bfloat16, or why
not (``skip_meta``/``skip_bf16``); the coverage tests fail when a spec with tensor arguments
says neither, and when a function whose output carries a gradient is not gradchecked.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass

import pytest
import torch

from pgbook.worlds.bandits import context_bandit

from .test_contract import EXEMPT, SPECS, Spec

F64 = torch.float64


def _tensors(x: object) -> list[torch.Tensor]:
    """The tensors of an output: a tensor, or those inside tuples, lists, dicts, dataclasses."""
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in _tensors(v)]
    if is_dataclass(x) and not isinstance(x, type):
        return [t for f in fields(x) for t in _tensors(getattr(x, f.name))]
    return []


def _has_tensor(kw: dict, floating: bool = False) -> bool:
    return any(t.is_floating_point() or not floating for v in kw.values() for t in _tensors(v))


def _to_meta(x: object) -> object:
    return x.to("meta") if isinstance(x, torch.Tensor) else x


def _real(specs: dict) -> list:
    return [pytest.param(sp, id=q) for q, sp in specs.items() if q not in EXEMPT and sp.kw is not None]


# -- coverage -------------------------------------------------------------------------------
def test_every_tensor_function_has_a_meta_run_or_a_reason():
    missing = [q for q, sp in SPECS.items() if sp.kw is not None and _has_tensor(sp.kw)
               and sp.meta_kw is None and sp.no_meta is None]
    assert not missing, f"specs with tensors but no meta run (spec.meta() or skip_meta): {missing}"


def test_every_function_of_floats_has_a_bf16_run_or_a_reason():
    missing = [q for q, sp in SPECS.items() if sp.kw is not None and _has_tensor(sp.kw, True)
               and not sp.bf16_args and sp.no_bf16 is None]
    assert not missing, f"specs with floats but no bfloat16 run (spec.bf16() or skip_bf16): {missing}"


@pytest.mark.parametrize("sp", _real(SPECS))
def test_differentiable_outputs_are_gradchecked(sp: Spec):
    """An output that carries a gradient from a float64 input must be gradchecked."""
    if sp.grad_args or sp.no_grad:
        return
    floats = {k: v for k, v in sp.kw.items() if isinstance(v, torch.Tensor)
              and v.dtype == F64}
    if not floats:
        return
    kw = {**sp.kw, **{k: v.detach().clone().requires_grad_(True) for k, v in floats.items()}}
    outs = _tensors(sp.out(sp.fn(**kw)))
    assert not any(t.requires_grad for t in outs), (
        f"{sp.qualname}: its output is differentiable in {sorted(floats)}; mark .grad(...)")


# -- gradcheck ------------------------------------------------------------------------------
@pytest.mark.parametrize("sp", [p for p in _real(SPECS) if p.values[0].grad_args])
def test_gradcheck(sp: Spec):
    names = sp.grad_args
    inputs = tuple(sp.kw[n].detach().clone().requires_grad_(True) for n in names)

    def f(*xs):
        return tuple(t for t in _tensors(sp.out(sp.fn(**{**sp.kw, **dict(zip(names, xs))})))
                     if t.is_floating_point())

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


# -- meta -----------------------------------------------------------------------------------
@pytest.mark.parametrize("sp", [p for p in _real(SPECS) if p.values[0].meta_kw is not None])
def test_meta_run_has_the_cpu_shapes(sp: Spec):
    over = dict(sp.meta_kw)
    fn = over.pop("_fn", sp.fn)   # a method of a world that lives on meta
    kw = {k: _to_meta(v) for k, v in sp.kw.items()} if not over else {**sp.kw, **over}
    cpu = _tensors(sp.out(sp.call()))
    meta = _tensors(sp.out(fn(**kw)))
    assert len(meta) == len(cpu), sp.qualname
    for m, c in zip(meta, cpu):
        assert m.device.type == "meta", sp.qualname
        assert m.shape == c.shape and m.dtype == c.dtype, (sp.qualname, m.shape, c.shape)


# -- bfloat16 -------------------------------------------------------------------------------
@pytest.mark.parametrize("sp", [p for p in _real(SPECS) if p.values[0].bf16_args])
def test_bfloat16_runs_finite_and_close(sp: Spec):
    low = {k: sp.kw[k].bfloat16() for k in sp.bf16_args}
    ref = _tensors(sp.out(sp.call(**{k: v.double() for k, v in low.items()})))
    out = _tensors(sp.out(sp.call(**low)))
    assert len(out) == len(ref), sp.qualname
    # low precision computes in float32; an output may also keep the dtype of another input
    allowed = {torch.bfloat16, torch.float32} | {
        t.dtype for k, v in sp.kw.items() if k not in low for t in _tensors(v)}
    for o, r in zip(out, ref):
        if not o.is_floating_point():
            continue
        assert o.dtype in allowed, (sp.qualname, o.dtype)
        assert bool(torch.isfinite(o).all()), sp.qualname
        if not sp.bf16_close:
            continue
        scale = float(r.abs().max()) if r.numel() else 0.0
        torch.testing.assert_close(o.double(), r.double(), rtol=5e-2, atol=5e-2 * max(scale, 1.0),
                                   msg=sp.qualname)


# -- Bandit.to ------------------------------------------------------------------------------
def test_bandit_to_takes_what_tensor_to_takes():
    b = context_bandit()
    assert b.to(torch.bfloat16).dtype == torch.bfloat16          # a dtype passed positionally
    assert b.to("cpu", torch.float32).dtype == torch.float32      # device, dtype
    assert b.to(dtype=torch.float32).rho.dtype == torch.float32   # keywords
    assert b.to(torch.zeros(1, dtype=torch.bfloat16)).dtype == torch.bfloat16  # like a tensor
    m = b.to("meta")
    assert m.device.type == "meta" and m.dtype == F64
    low = b.to(torch.bfloat16)
    assert low.rho.dtype == low.means.dtype == torch.bfloat16
    assert low.noise_std == b.noise_std and low.action_names == b.action_names
    torch.testing.assert_close(low.means.double(), b.means, rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="dtype"):
        b.to(torch.long)
