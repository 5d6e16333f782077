"""pgbook: policy gradients for language models, derived from J(θ) = E_{τ~p_θ}[R(τ)].

The library mirrors the book: reward-side pieces (advantages, baselines, shaping), trajectory-
side pieces (log-probs, importance ratios, clipping, masks), aggregation and regularisers,
and named methods composed of them (:mod:`pgbook.registry`).
"""

from . import bandits, estimators, losses, measure, registry
from .bandits import (
    Bandit,
    BanditBatch,
    LinearSoftmax,
    TabularSoftmax,
    context_bandit,
    exact_gradient,
    exact_J,
    make_generator,
    noisy_bandit,
    offset_bandit,
    two_param_bandit,
)
from .measure import EstimatorStats, policy_gradient_estimates
from .registry import components, method, methods

__version__ = "0.1.0"
