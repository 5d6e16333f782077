"""pgbook: policy gradients for language models, derived from J(θ) = E_{τ~p_θ}[R(τ)].

J(θ) has two factors, the trajectory probability p_θ(τ) and the reward R(τ), and every
method of the field changes one of them or both. The package is laid out the same way:

* :mod:`pgbook.reward`: what changes the scalar weight of ∇log p_θ(τ): baselines,
  group advantages, returns;
* :mod:`pgbook.trajectory`: what changes ∇log p_θ(τ) itself: token log-probs, masks,
  importance ratios, policy losses and clips;
* :mod:`pgbook.aggregation` (how token terms are summed: reward side) and :mod:`pgbook.kl`
  (a regulariser whose placement decides its side);
* :mod:`pgbook.registry` and :mod:`pgbook.methods`: the named pieces, the composed loss,
  and every named method as a composition of pieces (the map; ``compose`` for your own);
* :mod:`pgbook.boundary`: outside the frame, DPO (the reward implied by the policy);
* :mod:`pgbook.worlds`: bandits, the enumerable tiny LM, the tiny GPT and its tasks;
* :mod:`pgbook.exact`: exact analysis on the enumerable worlds (J, ∇J, moments of
  estimators, group statistics, off-policy and proximal tools) and estimator statistics;
* :mod:`pgbook.train`: the REINFORCE loop, PPO epochs on bandits, the GRPO trainer;
* :mod:`pgbook.plots` and :mod:`pgbook.widgets`: the book's figures and its widget (a static
  figure plus controls), and :mod:`pgbook.exercises`: the chapters' exercises and their
  checkers (all three imported on first use, so ``import pgbook`` needs no matplotlib).

``import pgbook as pg`` registers every built-in piece and method, so
``pg.registry.register_method("Mine", "GRPO", advantage="my_advantage")`` works at once.
"""

from __future__ import annotations

import os

import torch

from . import (
    aggregation,
    boundary,
    exact,
    kl,
    methods,
    registry,
    reward,
    train,
    trajectory,
    worlds,
)
from ._validate import make_generator
from .registry import method

__version__ = "0.2.0"

__all__ = [
    "__version__",
    "aggregation",
    "book_device",
    "boundary",
    "exact",
    "exercises",
    "kl",
    "make_generator",
    "method",
    "methods",
    "plots",
    "registry",
    "reward",
    "train",
    "trajectory",
    "widgets",
    "worlds",
]


def book_device() -> torch.device:
    """The device the chapters run on: ``$PGBOOK_DEVICE`` (e.g. ``cuda``, ``cuda:1``), or the
    CPU when it is unset. Library functions never use it: they run on the device of their
    inputs; a chapter creates its worlds, models and generators on this device."""
    name = os.environ.get("PGBOOK_DEVICE", "cpu").strip() or "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"PGBOOK_DEVICE: expected a torch device such as 'cpu' or 'cuda', "
                         f"got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("PGBOOK_DEVICE: 'cuda' was asked for, but torch.cuda.is_available() is "
                         "False (a CPU build of torch, or no GPU): unset PGBOOK_DEVICE to use "
                         "the CPU")
    return device


def __getattr__(name: str):
    # matplotlib and ipywidgets are imported only when a figure or a widget is wanted
    if name in ("plots", "widgets", "exercises"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'pgbook' has no attribute {name!r}")
