"""Input checks shared by every pgbook function.

Each check raises a ``ValueError`` that names the argument, says what was expected and
what came, so that a wrong shape or a NaN reward fails loudly at the call that received
it instead of turning into a silent NaN three functions later.

The checks never create tensors on a default device: anything they compute is computed on
the device of the tensor being checked (and the ``meta`` device is accepted: value checks
are skipped there, shape and device checks are not).
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import functools
import inspect
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

__all__ = [
    "LOG_RATIO_CLAMP",
    "UnknownOptionError",
    "check_finite",
    "check_finite_where",
    "check_flag",
    "check_float_dtype",
    "check_generator",
    "check_in_range",
    "check_index",
    "check_mask",
    "check_nonnegative_int",
    "check_number",
    "check_option",
    "check_options",
    "check_pair",
    "check_positive",
    "check_positive_int",
    "check_probs",
    "check_same_device",
    "check_same_shape",
    "check_shape",
    "check_tensor",
    "keyword_names",
    "make_generator",
    "parameters",
    "reject_unknown_options",
    "to_work",
    "unknown_options",
    "values_checked",
    "work_dtype",
]

#: |log r| bound applied before exponentiating a log-ratio in a loss (policy ratios, k3):
#: verl's ``compute_policy_loss_vanilla`` and ``kl_penalty_forward`` clamp to [−20, 20], so a
#: ratio is at most e²⁰ ≈ 4.9e8 and never overflows float32 or bfloat16.
LOG_RATIO_CLAMP = 20.0

_LOW = (torch.float16, torch.bfloat16)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype pgbook computes in for inputs of ``dtype``: float32 for float16/bfloat16
    (and float32), float64 for float64 (``torch.promote_types(dtype, torch.float32)``).
    Results are cast back to the input's dtype where a function says so."""
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype: expected a torch.dtype, got {dtype!r}")
    return torch.promote_types(dtype, torch.float32)


def to_work(x: Tensor) -> Tensor:
    """``x`` in :func:`work_dtype` (a no-op for float32 and float64)."""
    check_tensor(x, "x")
    return x.to(work_dtype(x.dtype))


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``: the book's only source of
    randomness (every sampling function takes one explicitly)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an integer, got {seed!r} ({type(seed).__name__})")
    if not -(2 ** 63) <= seed < 2 ** 64:
        raise ValueError(f"seed: expected an integer in [-2**63, 2**64), got {seed}")
    try:
        g = torch.Generator(device=device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device: expected a torch device with a generator, got {device!r} "
                         f"({e})") from None
    g.manual_seed(seed)
    return g


def check_generator(generator: torch.Generator, device: torch.device | str | None = None,
                    name: str = "generator") -> torch.Generator:
    """``generator`` must be a ``torch.Generator`` (on the type of ``device`` when given)."""
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"{name}: expected a torch.Generator (pgbook.make_generator(seed)), "
                         f"got {type(generator).__name__}")
    if device is not None and torch.device(device).type != "meta" and \
            torch.device(generator.device).type != torch.device(device).type:
        raise ValueError(f"{name}: expected a generator on {torch.device(device)}, "
                         f"got one on {generator.device}")
    return generator


def _is_transformed(x: Tensor) -> bool:
    """True when ``x`` is a tensor seen inside a ``torch.func`` transform (vmap, grad)."""
    try:
        return bool(torch._C._functorch.is_functorch_wrapped_tensor(x))
    except AttributeError:  # pragma: no cover - older torch
        return False


def _is_meta(x: Tensor) -> bool:
    """True when ``x`` holds no readable values: the meta device, or a tensor inside a
    ``torch.func`` transform (vmap/grad), where data-dependent checks cannot run. Functions
    that enter a transform check their inputs' values *before* entering it."""
    return x.device.type == "meta" or _is_transformed(x)


#: set (by :func:`values_checked`) while a function that has checked its inputs' values
#: computes with pgbook's own pieces on values derived from them
_VALUES_CHECKED = contextvars.ContextVar("pgbook_values_checked", default=False)


@contextlib.contextmanager
def values_checked() -> Iterator[None]:
    """Inside this block the *value* checks (finite, 0/1 mask, index range) are skipped; the
    checks of types, shapes and devices still run. For a pgbook function that has checked
    its inputs and then hands values computed from them to other pgbook functions (the
    policy loss to its aggregation and metrics), so that each value is read once. Only
    values derived from checked ones may be passed to the calls inside it."""
    token = _VALUES_CHECKED.set(True)
    try:
        yield
    finally:
        _VALUES_CHECKED.reset(token)


def _no_values(x: Tensor) -> bool:
    """True when a value check of ``x`` is skipped: no readable values (:func:`_is_meta`),
    or inside :func:`values_checked`."""
    return _VALUES_CHECKED.get() or _is_meta(x)


def check_tensor(x: Tensor, name: str, *, ndim: int | None = None, floating: bool = False,
                 nonempty: bool = False) -> Tensor:
    """``x`` must be a tensor (of ``ndim`` dimensions; of a floating dtype when asked; with at
    least one element when ``nonempty``). A Python list or number is refused: pass
    ``torch.tensor(...)`` (the dtype and device are then yours to choose)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(
            f"{name}: expected {ndim} dimension(s), got shape {tuple(x.shape)} ({x.dim()} dims)"
        )
    if floating and not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if nonempty and x.numel() == 0:
        raise ValueError(f"{name}: expected at least one element, got shape {tuple(x.shape)}")
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
    """``a`` and ``b`` must have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )


def check_pair(x: Tensor, other: Tensor, name_x: str, name_other: str) -> None:
    """``x`` and ``other`` real floating tensors of the same shape on the same device
    (log-probs and their advantages, ratios' old log-probs, reference log-probs): a bool,
    integer or complex ``other`` is refused, never read as numbers."""
    check_tensor(x, name_x, floating=True)
    check_tensor(other, name_other, floating=True)
    check_same_shape(x, other, name_x, name_other)
    check_same_device(**{name_x: x, name_other: other})


def _bad_count(x: Tensor) -> str:
    n_nan = int(torch.isnan(x).sum())
    n_inf = int(torch.isinf(x).sum())
    return (f"{n_nan} NaN and {n_inf} infinite entr{'y' if n_nan + n_inf == 1 else 'ies'} "
            f"out of {x.numel()}")


def check_finite(x: Tensor, name: str) -> Tensor:
    """No NaN and no ±inf in ``x`` (skipped on the meta device, which holds no values)."""
    check_tensor(x, name)
    if not x.is_floating_point() or _no_values(x) or x.numel() == 0:
        return x
    # one reduction: a NaN or ±inf entry makes the sum non-finite (the exact, slower test runs
    # only then, and lets through finite values whose sum merely overflowed)
    if not math.isfinite(float(x.detach().sum())) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: expected finite values, got {_bad_count(x)}")
    return x


def check_finite_where(x: Tensor, mask: Tensor, name: str) -> Tensor:
    """No NaN and no ±inf in ``x`` where ``mask`` is non-zero (masked positions, e.g.
    padding, may hold anything: they never reach a value or a gradient)."""
    check_tensor(x, name)
    if not x.is_floating_point() or _no_values(x) or _is_meta(mask):
        return x
    bad = ~torch.isfinite(x) & (mask != 0)
    if bool(bad.any()):
        raise ValueError(f"{name}: expected finite values where the mask is 1, got "
                         f"{int(bad.sum())} NaN or infinite entr"
                         f"{'y' if int(bad.sum()) == 1 else 'ies'} there")
    return x


def check_same_device(**tensors: Tensor) -> torch.device:
    """All tensors on one device; returns it."""
    devices = {name: t.device for name, t in tensors.items() if isinstance(t, Tensor)}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"expected all tensors on one device, got {listing}")
    return next(iter(devices.values())) if devices else torch.device("cpu")


def check_positive_int(n: int, name: str) -> int:
    """``n`` must be an integer ≥ 1 (sample counts, group sizes, epochs)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(f"{name}: expected an integer ≥ 1, got {n!r} ({type(n).__name__})")
    if n < 1:
        raise ValueError(f"{name}: expected an integer ≥ 1, got {n}")
    return n


def check_flag(flag: bool, name: str) -> bool:
    """``flag`` must be ``True`` or ``False`` (a string such as ``"yes"``, a number or None
    would be read by its truth value, silently)."""
    if not isinstance(flag, bool):
        raise ValueError(f"{name}: expected True or False, got {flag!r}")
    return flag


def check_nonnegative_int(n: int, name: str) -> int:
    """``n`` must be an integer ≥ 0 (token ids, offsets)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(f"{name}: expected an integer ≥ 0, got {n!r} ({type(n).__name__})")
    if n < 0:
        raise ValueError(f"{name}: expected an integer ≥ 0, got {n}")
    return n


def check_number(x: float, name: str) -> float:
    """``x`` must be a finite real number (an int, a float or a one-element tensor; not a
    bool or a string); returns it as a float."""
    if isinstance(x, (bool, str, bytes)) or x is None:
        raise ValueError(f"{name}: expected a real number, got {x!r} ({type(x).__name__})")
    if isinstance(x, Tensor) and (x.numel() != 1 or x.is_complex() or _is_meta(x)):
        raise ValueError(f"{name}: expected a real number, got a tensor of shape "
                         f"{tuple(x.shape)} on {x.device}")
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a real number, got {x!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {v}")
    return v


def check_positive(x: float, name: str, *, allow_zero: bool = False) -> float:
    """``x`` must be a finite real number > 0 (or ≥ 0 with ``allow_zero``)."""
    v = check_number(x, name)
    if v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name}: expected a number {'≥' if allow_zero else '>'} 0, got {v}")
    return v


def check_float_dtype(dtype: torch.dtype, name: str = "dtype") -> torch.dtype:
    """``dtype`` must be a floating ``torch.dtype`` (e.g. ``torch.float64``)."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{name}: expected a floating torch.dtype such as torch.float64, "
                         f"got {dtype!r}")
    return dtype


def check_option(value: str, name: str, options: Sequence[str]) -> str:
    """``value`` must be one of ``options`` (an option a function does not know is an error,
    never ignored)."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name}: expected one of {tuple(options)}, got {value!r}")
    return value


def check_in_range(x: Tensor, name: str, low: float, high: float, *, low_open: bool = False,
                   high_open: bool = False) -> Tensor:
    """Every entry of ``x`` in the interval from ``low`` to ``high`` (open at an end when
    asked); NaN is never in range. Skipped on the meta device."""
    check_tensor(x, name)
    if _is_meta(x) or x.numel() == 0:
        return x
    ok = (x > low if low_open else x >= low) & (x < high if high_open else x <= high)
    if not bool(ok.all()):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        if low_open and high_open:
            interval += f" (strictly between {low:g} and {high:g})"
        bad = x[~ok]
        n_nan = int(torch.isnan(bad).sum()) if bad.is_floating_point() else 0
        raise ValueError(f"{name}: expected values in {interval}, got {bad.numel()} outside it"
                         + (f" ({n_nan} NaN)" if n_nan else f" (e.g. {bad.flatten()[0].item():.4g})"))
    return x


def check_probs(p: Tensor, name: str, *, dim: int = -1, atol: float | None = None) -> Tensor:
    """``p`` must be finite, non-negative and sum to one along ``dim``."""
    check_tensor(p, name, floating=True)
    if _is_meta(p) or p.numel() == 0:
        return p
    q = p.detach()
    sums = q.sum(dim=dim)
    total, low, err = torch.stack([q.sum(), q.amin(), (sums - 1).abs().amax()]).tolist()
    if not math.isfinite(total):
        check_finite(p, name)
    if low < 0:
        raise ValueError(f"{name}: expected non-negative probabilities, min is {low:.3g}")
    if atol is not None:
        tol = atol
    else:  # n values each rounded to the dtype's unit roundoff (bfloat16: 2⁻⁸)
        n = p.shape[dim] if p.dim() else 1
        tol = max(1e-3 if p.dtype in _LOW else 1e-5, n * torch.finfo(p.dtype).eps / 2)
    if err > tol:
        raise ValueError(
            f"{name}: expected probabilities summing to 1 along dim {dim}, "
            f"largest deviation is {err:.3g} (tolerance {tol:g})"
        )
    return p


#: elements of a float mask checked at a time on the CPU (the block's temporaries stay in cache)
_MASK_BLOCK = 1 << 16
#: the masks proven 0/1, each with what must be unchanged for the proof to hold (see
#: ``check_mask``); keyed by identity, an entry goes when its tensor does (nothing is
#: stored on the tensor, so no proof travels with a copy, a pickle or a saved file)
_MASK_PROOFS: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _memo_key(mask: Tensor) -> tuple | None:
    """What must be unchanged for an earlier proof that ``mask`` is 0/1 to still hold: its
    version counter (bumped by every in-place write, through any view), storage address,
    shape, strides and dtype. ``None`` when the tensor cannot remember (an inference tensor
    has no version counter; a tensor inside a ``torch.func`` transform or on the meta
    device holds no values)."""
    if mask.is_inference():
        return None
    try:
        return (mask._version, mask.data_ptr(), mask.shape, mask.stride(), mask.dtype)
    except RuntimeError:  # pragma: no cover - tensors without storage (some subclasses)
        return None


def _fast_01(mask: Tensor) -> bool | None:
    """For a non-empty mask: True if it holds only 0 and 1 and some 1, False if all zero,
    None if not proven 0/1 (the caller's exact check then finds and names the bad values).

    Floats: b = m − m² is 0 exactly at m = 0 and m = 1, > 0 on (0, 1), < 0 elsewhere and
    NaN at NaN or ±inf; so min b = 0 together with Σ b = 0 proves every entry 0 or 1 (a sum
    of non-negative floats is 0 only if each is), and Σ m > 0 that some entry is 1. On the
    CPU this runs in cache-sized blocks through one reused buffer (a mask-sized temporary
    costs several times more than a pass) and reads the scalars back in one go. Integers:
    min ≥ 0 and max ≤ 1."""
    if mask.dtype == torch.bool:
        return bool(mask.any())
    if not mask.is_floating_point():
        lo, hi = torch.aminmax(mask)
        lo, hi = torch.stack([lo, hi]).tolist()
        return bool(hi > 0) if lo >= 0 and hi <= 1 else None
    flat = mask.detach().reshape(-1)
    n = flat.numel()
    step = _MASK_BLOCK if flat.device.type == "cpu" else n
    buf = flat.new_empty(min(step, n))
    parts = []
    for a in range(0, n, step):
        c = flat[a:a + step]
        b = torch.addcmul(c, c, c, value=-1, out=buf[:c.numel()])       # m − m²
        parts += [b.amin(), b.sum(), c.sum()]
    if len(parts) > 3:
        vals = torch.stack(parts).view(-1, 3)
        parts = [vals[:, 0].amin(), vals[:, 1].sum(), vals[:, 2].sum()]
    low, spread, ones = torch.stack(parts).tolist()
    if not (low == 0 and spread == 0):          # also False when either is NaN
        return None
    return ones > 0


def check_mask(mask: Tensor, name: str, shape: Sequence[int] | None = None, *,
               allow_all_zero: bool = False) -> Tensor:
    """A 0/1 mask (bool, integer or floating) of ``shape`` that is not all zero.

    The values are checked in the mask's own dtype, *before* any conversion: a float mask
    holding 0.5 or NaN, or an integer mask holding 2 or −1, is refused (``mask.bool()`` would
    silently read them as 1). An all-zero mask (nothing to sum or average over) is refused
    unless ``allow_all_zero``; single all-zero rows (padding rows) are fine. Value checks are
    skipped on the meta device and inside ``torch.func`` transforms.

    A mask proven 0/1 is remembered (by identity, with its version counter, storage address,
    shape, strides and dtype, for as long as the tensor lives), so the same mask passed on to the next
    function (a trainer hands one response mask to the advantages, the loss, the KL and the
    aggregation) is not read again. Any in-place write to it, through any view, bumps the
    version and the next call checks the values afresh. Writes that bypass the version
    counter (through ``.data``, or a NumPy array sharing the memory) are not seen: do not
    edit a mask that way after passing it to pgbook. Inference tensors (made under
    ``torch.inference_mode``) have no version counter and are checked at every call.
    """
    check_tensor(mask, name)
    if shape is not None and tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(mask.shape)}")
    if mask.is_complex():
        raise ValueError(f"{name}: expected a 0/1 mask (bool, integer or floating), got dtype "
                         f"{mask.dtype}")
    if _no_values(mask):
        return mask
    key = _memo_key(mask)
    memo = _MASK_PROOFS.get(mask) if key is not None else None
    if memo is not None and memo[0] == key:
        ok = memo[1]
    else:
        ok = _fast_01(mask) if mask.numel() else None
        if ok is not None and key is not None:
            _MASK_PROOFS[mask] = (key, ok)
    if ok is not None:                        # proven a 0/1 mask by reductions alone
        if not allow_all_zero and not ok:
            raise ValueError(f"{name}: the mask is all zero, so there is no token to sum or "
                             f"average over (got shape {tuple(mask.shape)})")
        return mask
    if mask.dtype != torch.bool:
        bad = (mask != 0) & (mask != 1)
        if bool(bad.any()):
            vals = mask[bad]
            n_nan = int(torch.isnan(vals).sum()) if vals.is_floating_point() else 0
            raise ValueError(
                f"{name}: expected a 0/1 mask, got {vals.numel()} other value(s)"
                + (f" ({n_nan} NaN)" if n_nan else f" (e.g. {vals.flatten()[0].item():g})")
            )
    if not allow_all_zero and (mask.numel() == 0 or not bool((mask != 0).any())):
        raise ValueError(f"{name}: the mask is all zero, so there is no token to sum or "
                         f"average over (got shape {tuple(mask.shape)})")
    return mask


def check_index(idx: Tensor, name: str, size: int) -> Tensor:
    """An integer tensor with values in [0, size) (negative ids are refused: they would
    wrap around silently when used as indices). Skipped on the meta device and inside
    ``torch.func`` transforms: check before entering one."""
    check_tensor(idx, name)
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise ValueError(f"{name}: expected an integer tensor, got dtype {idx.dtype}")
    if _no_values(idx) or not idx.numel():
        return idx
    lo, hi = torch.stack(torch.aminmax(idx)).tolist()        # one read-back
    if lo < 0 or hi >= size:
        raise ValueError(
            f"{name}: expected ids in [0, {size}) (indices into {size} entries), got range "
            f"[{lo}, {hi}]"
        )
    return idx


# -- options: an option a function does not take is an error, never ignored ----------------
class UnknownOptionError(ValueError, TypeError):
    """An option (keyword argument) that the function, or the piece it dispatches to, does
    not take. A ``ValueError`` like every bad input to pgbook, and a ``TypeError`` like
    Python's own "unexpected keyword argument", so either ``except`` catches it."""


def unknown_options(what: str, given: Iterable[str], accepted: Iterable[str]) -> None:
    """Raise :class:`UnknownOptionError` if ``given`` holds a name not in ``accepted``; the
    message names the unknown options, the closest accepted names and every accepted one."""
    if not isinstance(what, str):
        raise ValueError(f"what: expected a string (the function's name), got {what!r}")
    for name, names in (("given", given), ("accepted", accepted)):
        if isinstance(names, (str, bytes)) or not isinstance(names, Iterable):
            raise ValueError(f"{name}: expected an iterable of option names (a list, a dict's "
                             f"keys), got {names!r}")
    accepted = sorted(set(accepted))
    unknown = sorted(set(given) - set(accepted))
    if not unknown:
        return
    close = set()
    for u in unknown:  # names sharing a word with it (eps → eps_low, std_eps), else similar
        words = set(u.split("_"))
        same = [a for a in accepted if words & set(a.split("_"))]
        close.update(same or difflib.get_close_matches(u, accepted, n=3, cutoff=0.6))
    close = sorted(close)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UnknownOptionError(f"{what} takes no option {', '.join(map(repr, unknown))}{hint} "
                             f"(its options: {accepted})")


@functools.lru_cache(maxsize=1024)
def _cached_parameters(fn: Callable) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(fn).parameters


def parameters(fn: Callable) -> Mapping[str, inspect.Parameter]:
    """``inspect.signature(fn).parameters``, remembered per function (reading a signature
    costs tens of µs, and a trainer asks for the same few at every step)."""
    if not callable(fn):
        raise ValueError(f"fn: expected a callable, got {type(fn).__name__}")
    try:
        return _cached_parameters(fn)
    except TypeError:   # an unhashable callable
        return inspect.signature(fn).parameters


def keyword_names(fn: Callable, skip: int = 0) -> tuple[list[str], bool]:
    """The names ``fn`` accepts as keywords after its first ``skip`` positional parameters
    (those the caller fills), and whether it takes ``**kwargs``."""
    if not callable(fn):
        raise ValueError(f"fn: expected a callable, got {type(fn).__name__}")
    check_nonnegative_int(skip, "skip")
    params = list(parameters(fn).values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    skipped = {p.name for p in positional[:skip]}
    names = [p.name for p in params if p.name not in skipped
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def check_options(fn: Callable, options: dict, what: str, skip: int = 0) -> dict:
    """``options`` checked against what ``fn`` takes as keywords after its first ``skip``
    positional parameters (those the library passes itself, e.g. ``rewards, group_size``
    of an advantage); returns ``options``. Used wherever pgbook forwards ``**options`` to a
    registered piece, so an option the piece does not take fails at once, by name."""
    if not isinstance(options, dict):
        raise ValueError(f"options: expected a dict of keyword arguments, got "
                         f"{type(options).__name__}")
    names, takes_any = keyword_names(fn, skip)
    if not takes_any:
        unknown_options(what, options, names)
    return options


def reject_unknown_options(fn: Callable) -> Callable:
    """Decorator: a misspelt or unknown keyword argument raises :class:`UnknownOptionError`
    (a ValueError naming it, with the closest accepted names) instead of Python's bare
    TypeError. For functions with an explicit signature (no ``**kwargs``)."""
    names, takes_any = keyword_names(fn)
    if takes_any:
        raise ValueError(f"reject_unknown_options: {fn.__qualname__} takes **kwargs; check its "
                         f"options where they are dispatched")
    accepted = frozenset(names)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not accepted.issuperset(kwargs):
            unknown_options(f"{fn.__name__}()", kwargs, accepted)
        return fn(*args, **kwargs)

    return wrapper
