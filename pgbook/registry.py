"""Named pieces and the methods composed from them: the book's map, drawn from the code.

J(θ) = Σ_τ p_θ(τ) R(τ) has two factors. Every piece of the library is registered as a
:class:`Component` of some *kind* (an advantage estimator, a baseline, a policy loss, an
aggregation, a KL placement, ...) and says which factor of J(θ) it changes:

* ``"reward"``: what scalar weights a sampled trajectory (R, baselines, advantages, shaping,
  teacher signals, how token terms are weighted when they are aggregated);
* ``"trajectory"``: how p_θ(τ) enters the update (log-probs, importance ratios, clipping,
  sequence-level ratios, masks, which samples enter at all).

A :class:`Method` is one choice per kind, plus the method it descends from. The sides a
method changes are *computed*: the sides of the components in which it differs from its
parent. Chapter 00 and chapter 15 draw the map from :func:`methods`.

Usage, in the style of verl's ``core_algos``::

    @register("advantage", "rloo", side="reward", summary="leave-one-out mean baseline")
    def rloo_advantage(rewards, group_size): ...

    get("advantage", "rloo")(rewards, group_size=4)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

SIDES = ("reward", "trajectory")


@dataclass(frozen=True)
class Component:
    """One named piece: ``kind`` (e.g. ``"advantage"``), ``name``, the callable, its side."""

    kind: str
    name: str
    fn: Callable | None
    side: str
    summary: str = ""

    def __call__(self, *args, **kwargs):
        if self.fn is None:
            raise ValueError(f"component {self.kind}/{self.name} is a label with no function")
        return self.fn(*args, **kwargs)


_COMPONENTS: dict[str, dict[str, Component]] = {}
_METHODS: dict[str, Method] = {}


def _check_side(side: str) -> str:
    if side not in SIDES:
        raise ValueError(f"side: expected one of {SIDES}, got {side!r}")
    return side


def register(kind: str, name: str, *, side: str, summary: str = ""):
    """Decorator: register ``fn`` as component ``kind/name`` on ``side`` of J(θ)."""
    _check_side(side)

    def deco(fn):
        table = _COMPONENTS.setdefault(kind, {})
        if name in table and table[name].fn is not fn:
            raise ValueError(f"component {kind}/{name} is already registered")
        table[name] = Component(kind, name, fn, side, summary or (fn.__doc__ or "").split("\n")[0])
        return fn

    return deco


def register_label(kind: str, name: str, *, side: str, summary: str) -> Component:
    """Register a component that is a named choice rather than a function (e.g. ``"none"``)."""
    _check_side(side)
    comp = Component(kind, name, None, side, summary)
    _COMPONENTS.setdefault(kind, {})[name] = comp
    return comp


def get(kind: str, name: str) -> Component:
    """The component ``kind/name``; a ValueError lists the registered names if absent."""
    _load_all()
    if kind not in _COMPONENTS:
        raise ValueError(f"kind: expected one of {sorted(_COMPONENTS)}, got {kind!r}")
    if name not in _COMPONENTS[kind]:
        raise ValueError(f"{kind}: expected one of {sorted(_COMPONENTS[kind])}, got {name!r}")
    return _COMPONENTS[kind][name]


def components(kind: str | None = None) -> list[Component]:
    """All registered components (of one kind)."""
    _load_all()
    kinds = [kind] if kind is not None else sorted(_COMPONENTS)
    return [c for k in kinds for c in _COMPONENTS.get(k, {}).values()]


@dataclass(frozen=True)
class Method:
    """A named method: one component name per kind, and the method it modifies.

    ``fixes`` says which failure of ``parent`` it addresses; ``chapter`` where the book
    derives it. :meth:`changes` and :meth:`sides` are computed from the components.
    """

    name: str
    parent: str | None
    parts: dict = field(default_factory=dict)
    fixes: str = ""
    chapter: str = ""
    reference: str = ""

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
        theirs = _METHODS[self.parent].resolved_parts() if self.parent else {}
        return {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}

    def sides(self) -> frozenset:
        """The factors of J(θ) this method changes relative to its parent."""
        return frozenset(get(k, new).side for k, (_, new) in self.changes().items())

    @property
    def axis(self) -> str:
        if self.parent is None:
            return "objective"
        s = self.sides()
        return "both" if len(s) == 2 else (next(iter(s)) if s else "none")


def register_method(name: str, parent: str | None, *, fixes: str = "", chapter: str = "",
                    reference: str = "", **parts: str) -> Method:
    """Register a method composed of named components (``kind=name`` keyword arguments)."""
    if parent is not None and parent not in _METHODS:
        raise ValueError(f"parent: method {parent!r} is not registered (have {sorted(_METHODS)})")
    for kind, comp in parts.items():
        if kind not in _COMPONENTS or comp not in _COMPONENTS[kind]:
            raise ValueError(f"method {name}: component {kind}/{comp} is not registered")
    m = Method(name, parent, dict(parts), fixes, chapter, reference)
    _METHODS[name] = m
    return m


def methods() -> list[Method]:
    """Every registered method, parents before children."""
    _load_all()
    return list(_METHODS.values())


def method(name: str) -> Method:
    _load_all()
    if name not in _METHODS:
        raise ValueError(f"method: expected one of {sorted(_METHODS)}, got {name!r}")
    return _METHODS[name]


_LOADED = False


def _load_all() -> None:
    """Import every module that registers components or methods (once)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import importlib

    from . import _modules

    for mod in _modules.REGISTERING:
        try:
            importlib.import_module(f"pgbook.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"pgbook.{mod}":
                raise
