"""Input checks shared by every pgbook function.

Each check raises a ``ValueError`` that names the argument, says what was expected and
what came, so that a wrong shape or a NaN reward fails loudly at the call that received
it instead of turning into a silent NaN three functions later.

The checks never create tensors on a default device: anything they compute is computed on
the device of the tensor being checked (and the ``meta`` device is accepted: value checks
are skipped there, shape and device checks are not).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "check_finite",
    "check_generator",
    "check_index",
    "check_mask",
    "check_pair",
    "check_positive",
    "check_positive_int",
    "check_probs",
    "check_same_device",
    "check_same_shape",
    "check_shape",
    "check_tensor",
    "make_generator",
    "to_work",
    "work_dtype",
]

_LOW = (torch.float16, torch.bfloat16)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype pgbook computes in for inputs of ``dtype``: float32 for float16/bfloat16
    (and float32), float64 for float64 (``torch.promote_types(dtype, torch.float32)``).
    Results are cast back to the input's dtype where a function says so."""
    return torch.promote_types(dtype, torch.float32)


def to_work(x: Tensor) -> Tensor:
    """``x`` in :func:`work_dtype` (a no-op for float32 and float64)."""
    return x.to(work_dtype(x.dtype))


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``: the book's only source of
    randomness (every sampling function takes one explicitly)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an integer, got {seed!r} ({type(seed).__name__})")
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def check_generator(generator, device: torch.device | str | None = None,
                    name: str = "generator") -> torch.Generator:
    """``generator`` must be a ``torch.Generator`` (on the type of ``device`` when given)."""
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"{name}: expected a torch.Generator (pgbook.make_generator(seed)), "
                         f"got {type(generator).__name__}")
    if device is not None and torch.device(generator.device).type != torch.device(device).type:
        raise ValueError(f"{name}: expected a generator on {torch.device(device)}, "
                         f"got one on {generator.device}")
    return generator


def _is_meta(x: Tensor) -> bool:
    """True when ``x`` holds no readable values: the meta device, or a tensor inside a
    ``torch.func`` transform (vmap/grad), where data-dependent checks cannot run. Such
    values are checked by the caller before the transform."""
    if x.device.type == "meta":
        return True
    try:
        return bool(torch._C._functorch.is_functorch_wrapped_tensor(x))
    except AttributeError:  # pragma: no cover - older torch
        return False


def check_tensor(x, name: str, *, ndim: int | None = None, floating: bool = False) -> Tensor:
    """``x`` must be a tensor (of ``ndim`` dimensions; of a floating dtype when asked)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(
            f"{name}: expected {ndim} dimension(s), got shape {tuple(x.shape)} ({x.dim()} dims)"
        )
    if floating and not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    return x


def check_shape(x: Tensor, name: str, shape: Sequence[int | None]) -> Tensor:
    """``x.shape`` must match ``shape``; ``None`` entries match any size."""
    check_tensor(x, name)
    ok = x.dim() == len(shape) and all(s is None or s == d for s, d in zip(shape, x.shape))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
    return x


def check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )


def check_pair(x: Tensor, other: Tensor, name_x: str, name_other: str) -> None:
    """``x`` a floating tensor and ``other`` a tensor of the same shape on the same device
    (log-probs and their advantages, ratios' old log-probs, reference log-probs)."""
    check_tensor(x, name_x, floating=True)
    check_tensor(other, name_other)
    check_same_shape(x, other, name_x, name_other)
    check_same_device(**{name_x: x, name_other: other})


def check_finite(x: Tensor, name: str) -> Tensor:
    """No NaN and no ±inf in ``x`` (skipped on the meta device, which holds no values)."""
    check_tensor(x, name)
    if not x.is_floating_point() or _is_meta(x):
        return x
    total = float(x.detach().sum())  # a finite sum has no NaN or inf in it: one pass (isfinite
    if total - total == 0:           # takes four on a CPU); an overflowing sum of finite
        return x                     # values just falls through to the count below
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(bad.sum()) - n_nan
        raise ValueError(
            f"{name}: expected finite values, got {n_nan} NaN and {n_inf} infinite "
            f"entr{'y' if n_nan + n_inf == 1 else 'ies'} out of {x.numel()}"
        )
    return x


def check_same_device(**tensors: Tensor) -> torch.device:
    """All tensors on one device; returns it."""
    devices = {name: t.device for name, t in tensors.items() if isinstance(t, Tensor)}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"expected all tensors on one device, got {listing}")
    return next(iter(devices.values())) if devices else torch.device("cpu")


def check_positive_int(n, name: str) -> int:
    """``n`` must be an integer ≥ 1 (sample counts, group sizes, epochs)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(f"{name}: expected an integer ≥ 1, got {n!r} ({type(n).__name__})")
    if n < 1:
        raise ValueError(f"{name}: expected an integer ≥ 1, got {n}")
    return n


def check_positive(x: float, name: str, *, allow_zero: bool = False) -> float:
    """``x`` must be a finite real number > 0 (or ≥ 0 with ``allow_zero``)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a real number, got {x!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{name}: expected a finite number, got {v}")
    if v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name}: expected a number {'≥' if allow_zero else '>'} 0, got {v}")
    return v


def check_probs(p: Tensor, name: str, *, dim: int = -1, atol: float | None = None) -> Tensor:
    """``p`` must be finite, non-negative and sum to one along ``dim``."""
    check_tensor(p, name, floating=True)
    check_finite(p, name)
    if _is_meta(p):
        return p
    if bool((p < 0).any()):
        raise ValueError(f"{name}: expected non-negative probabilities, min is {p.min().item():.3g}")
    tol = atol if atol is not None else (1e-3 if p.dtype in (torch.float16, torch.bfloat16) else 1e-5)
    sums = p.sum(dim=dim)
    err = (sums - 1).abs().max().item() if sums.numel() else 0.0
    if err > tol:
        raise ValueError(
            f"{name}: expected probabilities summing to 1 along dim {dim}, "
            f"largest deviation is {err:.3g} (tolerance {tol:g})"
        )
    return p


def check_mask(mask: Tensor, name: str, shape: Sequence[int] | None = None) -> Tensor:
    """A 0/1 (or bool) mask of ``shape`` that is not all zero."""
    check_tensor(mask, name)
    if shape is not None and tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(mask.shape)}")
    if _is_meta(mask):
        return mask
    if mask.is_floating_point():
        check_finite(mask, name)
        if bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError(f"{name}: expected a 0/1 mask, got values other than 0 and 1")
    if mask.numel() == 0 or not bool((mask != 0).any()):
        raise ValueError(f"{name}: the mask is all zero, so there is no token to average over")
    return mask


def check_index(idx: Tensor, name: str, size: int) -> Tensor:
    """An integer tensor with values in [0, size)."""
    check_tensor(idx, name)
    if idx.is_floating_point() or idx.dtype == torch.bool:
        raise ValueError(f"{name}: expected an integer tensor, got dtype {idx.dtype}")
    if not _is_meta(idx) and idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= size):
        raise ValueError(
            f"{name}: expected indices in [0, {size}), got range "
            f"[{int(idx.min())}, {int(idx.max())}]"
        )
    return idx
