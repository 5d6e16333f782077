"""Named pieces and the methods composed from them: the book's map, drawn from the code.

J(θ) = Σ_τ p_θ(τ) R(τ) has two factors. Every piece of the library is registered as a
:class:`Component` of some *kind* (an advantage estimator, a policy loss, an aggregation,
a KL placement, ...) and says which factor of J(θ) it changes:

* ``"reward"``: a stop-gradient scalar that multiplies ∇log p_θ(τ): R itself, baselines,
  advantages, shaping, teacher signals, and how token terms are weighted when they are
  aggregated;
* ``"trajectory"``: anything that depends on θ or on how the samples were drawn: the
  log-derivative trick, importance ratios, clipping, sequence-level ratios, masks, which
  samples enter at all.

A :class:`Method` is one choice per kind plus the method it descends from. Its sides are
*computed*: the sides of the components in which it differs from its parent. Every
function of pgbook that takes a piece by name (``compute_advantages``, ``policy_loss``,
``method_loss``, ``grpo_train``, the exact group tools) resolves it here, so a piece you
register works everywhere a built-in one does.

Usage, in the style of verl's ``core_algos``::

    from pgbook import registry

    @registry.register("advantage", "rank", side="reward", form="group")
    def rank_advantage(rewards, group_size, *, std_eps=1e-6):
        ...                                            # (N,) → (N,)

    registry.register_method("Rank GRPO", "GRPO", advantage="rank",
                             fixes="...", chapter="yours")

The ``form`` of a component says how it is called (its signature), so that a function
asking for a piece can check it got one it knows how to call:

==============  ============ =======================================================
kind            form         signature
==============  ============ =======================================================
advantage       ``group``    ``fn(rewards (N,), group_size, **options) -> (N,)``, groups
                             contiguous, each group's advantages from its own rewards
                             (options such as ``std_eps``, ``mask`` are keywords)
advantage       ``batch``    the same, reading the whole batch (e.g. batch whitening)
advantage       ``baseline`` ``fn(bandit, policy, theta, batch) -> b`` (batch shape);
                             the weight is r − b (Part I)
advantage       ``token``    ``fn(token_rewards (B, T), mask (B, T)) -> (B, T)``
advantage       ``critic``   ``fn(token_rewards (B, T), values (B, T) or (B, T+1),
                             mask (B, T), gamma, lam, **options) -> (advantages,
                             returns)``, each (B, T): a learned V(h_t) as baseline
                             (GAE, :mod:`pgbook.reward.critic`)
policy_loss     ``token``    ``fn(logp, advantages, old_logp, **options) -> per-token loss``
                             (a loss may take ``mask`` and ``generator`` keywords and carry
                             a ``clip_mask`` attribute: see :func:`pgbook.methods.policy_loss`)
aggregation     ``token``    ``fn(per_token_loss (B, T), mask (B, T), max_tokens=None)
                             -> scalar``
kl              ``token``    ``fn(logp, ref_logp) -> per-token term`` (in the loss), or
                ``reward``   the reward-side placement applied before the advantages
reward          ``response`` ``fn(responses (n, N), targets (n, N), dtype) -> (n,)``
correction      ``weights``  ``fn(old_logp, sampler_logp, mask, *, c_max, c_min) -> (B, T)``
                             sampler/trainer importance weights (chapter 14)
shaping         ``rollout``  ``fn(rewards (B,), mask (B, T), *, truncated, max_tokens)
                             -> (rewards, mask)``: reward shaping after the verifier
                             (chapter 13)
token_credit    ``entropy``  ``fn(advantages_tok, entropy, mask, *, group_size)
                             -> advantages_tok``: token-level credit (chapter 13)
==============  ============ =======================================================

The kinds are fixed (:data:`KINDS`: the table's, the teacher and distillation pieces of
chapter 16, and the labels ``data``, ``step``, ``mask``, ``selection``): registering under
another kind raises, so a misspelt kind never becomes a new, empty one. A function
registered with a kind and form of the table must take the table's leading positional
arguments (checked once, when it is registered; without a form, the fewest of its kind).

A component registered with :func:`register_label` has no function: it names a choice that
a method makes (e.g. ``data="on_policy"``) without being called by the library.

In a notebook: running a cell that registers a function again replaces it (the same
module and name: a re-definition); registering a *different* function under a taken name
raises, and so does registering a method under a taken name with other parts (pass
``replace=True``). To remove your pieces, remove the methods first, children before
parents, then the components they use::

    registry.unregister_method("Rank GRPO")          # ValueError while a child remains
    registry.unregister("advantage", "rank")          # ValueError while a method uses it

Options: every function that calls a piece forwards only the options the piece's signature
takes; any other keyword raises :class:`pgbook._validate.UnknownOptionError` (a ValueError)
naming it, so a misspelt option never passes silently.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from ._validate import check_flag

__all__ = [
    "KINDS",
    "SIDES",
    "Component",
    "Method",
    "components",
    "get",
    "method",
    "methods",
    "register",
    "register_label",
    "register_method",
    "resolve",
    "unregister",
    "unregister_method",
]

SIDES = ("reward", "trajectory")

#: every kind of component (see the module docstring); ``register`` refuses any other
KINDS = ("advantage", "aggregation", "correction", "data", "distill_loss", "kl", "mask",
         "policy_loss", "reward", "selection", "shaping", "step", "teacher", "teacher_gate",
         "token_credit")

#: (kind, form) -> how many positional arguments the library passes a piece of that form
#: (the table of the module docstring; the turn-level advantages of pgbook.reward.turns)
_POSITIONAL = {
    ("advantage", "group"): 2, ("advantage", "batch"): 2, ("advantage", "baseline"): 4,
    ("advantage", "token"): 2, ("advantage", "critic"): 3, ("advantage", "turn"): 2,
    ("policy_loss", "token"): 3, ("aggregation", "token"): 2, ("kl", "token"): 2,
    ("kl", "reward"): 2, ("reward", "response"): 3, ("correction", "weights"): 3,
    ("shaping", "rollout"): 2, ("token_credit", "entropy"): 3,
}


@dataclass(frozen=True)
class Component:
    """One named piece: its ``kind`` (e.g. ``"advantage"``), ``name``, callable, ``side``
    of J(θ), ``form`` (how it is called, see the module docstring), a one-line ``summary``
    and the paper it comes from (``reference``)."""

    kind: str
    name: str
    fn: Callable | None
    side: str
    summary: str = ""
    form: str | None = None
    reference: str = ""

    def __post_init__(self) -> None:
        _check_name(self.kind, "kind")
        _check_name(self.name, "name")
        _check_side(self.side)
        if self.fn is not None and not callable(self.fn):
            raise ValueError(f"fn: expected a callable or None, got {type(self.fn).__name__}")

    def __call__(self, *args, **kwargs) -> object:
        if self.fn is None:
            raise ValueError(f"component {self.kind}/{self.name} is a label with no function")
        return self.fn(*args, **kwargs)


_COMPONENTS: dict[str, dict[str, Component]] = {}
_METHODS: dict[str, Method] = {}


def _check_side(side: str) -> str:
    if side not in SIDES:
        raise ValueError(f"side: expected one of {SIDES}, got {side!r}")
    return side


def _check_kind(kind: str) -> str:
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    return kind


def _check_signature(fn: Callable, kind: str, name: str, form: str | None) -> None:
    """``fn`` must take the positional arguments its kind and form are called with (the
    fewest of the kind's forms when ``form`` is None), and require no more of them."""
    if form is not None:
        if (kind, form) not in _POSITIONAL:
            return
        n, how = _POSITIONAL[kind, form], f"kind {kind!r}, form {form!r}"
    else:
        counts = [v for (k, _), v in _POSITIONAL.items() if k == kind]
        if not counts:
            return
        n, how = min(counts), f"kind {kind!r}, at least"
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):          # a builtin without a signature: not checked
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes = len(positional) + (10 ** 9 if any(p.kind is p.VAR_POSITIONAL for p in params)
                               else 0)
    required = sum(p.default is p.empty for p in positional)
    if takes < n or (form is not None and required > n):
        raise ValueError(f"register({kind!r}, {name!r}): expected a function taking {n} "
                         f"positional argument(s) (the library calls {how} with {n}; see the "
                         f"table in pgbook.registry), got {getattr(fn, '__qualname__', fn)!r} with "
                         f"signature {inspect.signature(fn)}")


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what}: expected a non-empty string, got {value!r}")
    return value


def _check_text(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected a string, got {value!r}")
    return value


def _same_definition(a: Callable | None, b: Callable | None) -> bool:
    """True when ``b`` is ``a`` or a re-definition of it (same module and qualified name),
    as happens when a notebook cell that registers a function is run again."""
    if a is b:
        return True
    if a is None or b is None:
        return False
    return (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == \
        (getattr(b, "__module__", None), getattr(b, "__qualname__", None))


def register(kind: str, name: str, *, side: str, summary: str = "", form: str | None = None,
             reference: str = "") -> Callable[[Callable], Callable]:
    """Decorator: register ``fn`` as component ``kind/name`` on ``side`` of J(θ).

    Registering another function under a taken name raises ValueError (unregister it first);
    registering a re-definition of the same function (a re-run notebook cell) replaces it.
    ``kind`` must be one of :data:`KINDS`, and ``fn`` must take the positional arguments
    of its kind and form (the module docstring's table), checked here, once.
    """
    _check_kind(kind)
    _check_name(name, "name")
    _check_side(side)
    _check_text(summary, "summary")
    _check_text(reference, "reference")
    if form is not None:
        _check_name(form, "form")

    def deco(fn: Callable) -> Callable:
        if not callable(fn):
            raise ValueError(f"register({kind!r}, {name!r}): expected a function, got "
                             f"{type(fn).__name__}")
        _check_signature(fn, kind, name, form)
        table = _COMPONENTS.setdefault(kind, {})
        if name in table and not _same_definition(table[name].fn, fn):
            raise ValueError(f"component {kind}/{name} is already registered "
                             f"(registry.unregister({kind!r}, {name!r}) first to replace it)")
        doc = (fn.__doc__ or "").strip().split("\n")[0]
        table[name] = Component(kind, name, fn, side, summary or doc, form, reference)
        return fn

    return deco


def register_label(kind: str, name: str, *, side: str, summary: str,
                   reference: str = "") -> Component:
    """Register a component that is a named choice rather than a function (e.g. ``"none"``);
    ``kind`` one of :data:`KINDS`."""
    _check_kind(kind)
    _check_name(name, "name")
    _check_side(side)
    _check_text(summary, "summary")
    _check_text(reference, "reference")
    table = _COMPONENTS.setdefault(kind, {})
    if name in table and table[name].fn is not None:
        raise ValueError(f"component {kind}/{name} is already registered with a function")
    comp = Component(kind, name, None, side, summary, None, reference)
    table[name] = comp
    return comp


def unregister(kind: str, name: str) -> None:
    """Remove component ``kind/name`` (a ValueError if a registered method uses it)."""
    get(kind, name)
    users = [m.name for m in _METHODS.values() if m.parts.get(kind) == name]
    if users:
        raise ValueError(f"component {kind}/{name} is used by methods {users}; "
                         f"unregister those first (registry.unregister_method)")
    del _COMPONENTS[kind][name]


def get(kind: str, name: str) -> Component:
    """The component ``kind/name``; a ValueError lists the registered names if absent."""
    if not isinstance(kind, str) or kind not in _COMPONENTS:
        raise ValueError(f"kind: expected one of {sorted(_COMPONENTS)}, got {kind!r}")
    if not isinstance(name, str) or name not in _COMPONENTS[kind]:
        raise ValueError(f"{kind}: expected one of {sorted(_COMPONENTS[kind])}, got {name!r}")
    return _COMPONENTS[kind][name]


def resolve(kind: str, name: str, form: str | None = None, *, what: str | None = None
            ) -> Callable:
    """The function of component ``kind/name``, checked to be callable and (when ``form`` is
    given) of that form; ``what`` names the argument in error messages (default: kind)."""
    what = what or kind
    if not isinstance(kind, str) or kind not in _COMPONENTS:
        raise ValueError(f"kind: expected one of {sorted(_COMPONENTS)}, got {kind!r}")
    table = _COMPONENTS.get(kind, {})
    if not isinstance(name, str) or name not in table:
        ok = sorted(n for n, c in table.items() if c.fn is not None
                    and (form is None or c.form == form))
        raise ValueError(f"{what}: expected one of {ok}, got {name!r}")
    comp = table[name]
    if comp.fn is None:
        callable_names = sorted(n for n, c in _COMPONENTS[kind].items() if c.fn is not None
                                and (form is None or c.form == form))
        raise ValueError(f"{what}: {name!r} is a label with no function here; expected one of "
                         f"{callable_names}")
    if form is not None and comp.form != form:
        ok = sorted(n for n, c in table.items() if c.form == form)
        raise ValueError(f"{what}: expected one of {ok} (a {kind} of form {form!r}), got "
                         f"{name!r} (form {comp.form!r})")
    return comp.fn


def components(kind: str | None = None, form: str | None = None) -> list[Component]:
    """All registered components (of one kind; of one form)."""
    if kind is not None and (not isinstance(kind, str) or kind not in _COMPONENTS):
        raise ValueError(f"kind: expected one of {sorted(_COMPONENTS)}, got {kind!r}")
    kinds = [kind] if kind is not None else sorted(_COMPONENTS)
    return [c for k in kinds for c in _COMPONENTS[k].values() if form is None or c.form == form]


@dataclass(frozen=True)
class Method:
    """A named method: one component name per kind, and the method it modifies.

    ``fixes`` says which failure of ``parent`` it addresses; ``chapter`` where the book
    derives it; ``reference`` the paper. :meth:`changes` and :meth:`sides` are computed
    from the components.
    """

    name: str
    parent: str | None
    parts: dict = field(default_factory=dict)
    fixes: str = ""
    chapter: str = ""
    reference: str = ""

    def __post_init__(self) -> None:
        _check_name(self.name, "name")
        if self.parent is not None:
            _check_name(self.parent, "parent")
        if not isinstance(self.parts, dict):
            raise ValueError(f"parts: expected a dict {{kind: component name}}, got "
                             f"{type(self.parts).__name__}")

    def resolved_parts(self) -> dict:
        """Components inherited from the parent, overridden by this method's own."""
        base = dict(_METHODS[self.parent].resolved_parts()) if self.parent else {}
        base.update(self.parts)
        return base

    def changes(self) -> dict:
        """``{kind: (parent's choice, this method's choice)}`` for every kind that differs."""
        if self.parent is None:
            return {}
        mine = self.resolved_parts()
        theirs = _METHODS[self.parent].resolved_parts()
        return {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}

    def sides(self) -> frozenset:
        """The factors of J(θ) this method changes relative to its parent."""
        return frozenset(get(k, new).side for k, (_, new) in self.changes().items())

    @property
    def axis(self) -> str:
        """``"objective"`` (the root), ``"reward"``, ``"trajectory"`` or ``"both"``."""
        if self.parent is None:
            return "objective"
        s = self.sides()
        return "both" if len(s) == 2 else (next(iter(s)) if s else "none")


def register_method(name: str, parent: str | None, *, fixes: str = "", chapter: str = "",
                    reference: str = "", replace: bool = False, **parts: str) -> Method:
    """Register a method composed of named components (``kind=name`` keyword arguments),
    as a child of ``parent``. A method must change at least one component of its parent.
    An existing name raises ValueError unless ``replace=True`` (or the definition is
    identical, as when a notebook cell runs again)."""
    _check_name(name, "name")
    _check_text(fixes, "fixes")
    _check_text(chapter, "chapter")
    _check_text(reference, "reference")
    check_flag(replace, "replace")
    if parent is not None and parent == name:
        raise ValueError(f"parent: a method cannot be its own parent (got parent={parent!r} "
                         f"for method {name!r})")
    if parent is not None and (not isinstance(parent, str) or parent not in _METHODS):
        raise ValueError(f"parent: method {parent!r} is not registered (have {sorted(_METHODS)})")
    for kind, comp in parts.items():
        if not isinstance(comp, str) or kind not in _COMPONENTS or comp not in _COMPONENTS[kind]:
            have = sorted(_COMPONENTS.get(kind, {}))
            raise ValueError(f"method {name}: component {kind}/{comp} is not registered"
                             + (f" (have {have})" if have else f" (no kind {kind!r})"))
    m = Method(name, parent, dict(parts), fixes, chapter, reference)
    if name in _METHODS and not replace and _METHODS[name] != m:
        raise ValueError(f"method {name!r} is already registered (pass replace=True to "
                         f"redefine it)")
    if parent is not None and not m.changes():
        raise ValueError(f"method {name}: it changes no component of its parent {parent!r}")
    _METHODS[name] = m
    return m


def unregister_method(name: str) -> None:
    """Remove a method (a ValueError if another method descends from it)."""
    method(name)
    children = [m.name for m in _METHODS.values() if m.parent == name]
    if children:
        raise ValueError(f"method {name!r} has children {children}; unregister those first")
    del _METHODS[name]


def methods() -> list[Method]:
    """Every registered method, parents before children."""
    return list(_METHODS.values())


def method(name: str) -> Method:
    """The registered method ``name``; a ValueError lists the names if absent."""
    if not isinstance(name, str) or name not in _METHODS:
        raise ValueError(f"method: expected one of {sorted(_METHODS)}, got {name!r}")
    return _METHODS[name]

