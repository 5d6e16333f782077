"""Coursework reuse: pgbook used from outside the package, as a student would.

* the three assignments, each in its final short form (``test_assignment_*``);
* the registry end to end: a new advantage and a new policy loss registered from outside,
  used by ``compute_advantages``, ``method_loss``, ``grpo_train`` and the exact group tools;
* unknown options are errors (a ValueError naming them) everywhere options are taken;
* ``causal_logprobs`` (the causal shift done once) and ``check_on_policy`` (the first-epoch
  sanity check, also run by ``grpo_train``);
* ``EstimatorStats.mse`` and ``compare_over_seeds``.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import pgbook as pg
from pgbook import registry
from pgbook._validate import UnknownOptionError
from pgbook.exact import groups as Gp
from pgbook.exact.bandits import (
    baseline_bias,
    exact_gradient,
    exact_total_variance,
    policy_gradient_estimates,
)
from pgbook.exact.stats import EstimatorStats, SeedComparison, compare_over_seeds, cosine
from pgbook.methods import method_loss, policy_loss
from pgbook.reward.advantages import compute_advantages
from pgbook.train.grpo import check_on_policy, grpo_train
from pgbook.trajectory.losses import ppo_clip_loss
from pgbook.trajectory.tokens import CausalLogprobs, causal_logprobs
from pgbook.worlds import bandits as W
from pgbook.worlds import gpt, tasks

TASK = tasks.Reverse(min_len=1, max_len=2, letters="ab")


def _gpt(dtype=torch.float32, seed=0):
    return gpt.GPT(tasks.policy_config(TASK, n_embd=16), pg.make_generator(seed)).to(dtype)


# =============================================================================================
# The pieces a student registers (assignment b), defined at module level like a notebook cell
# =============================================================================================
def rank_advantage(rewards, group_size, *, std_eps=1e-6):
    """Â_i = (1/(G−1)) Σ_j sign(R_i − R_j): the response's centred rank in its group."""
    r = rewards.view(-1, group_size)
    return (torch.sign(r[:, :, None] - r[:, None, :]).sum(-1) / (group_size - 1)).reshape(-1)


def scaled_clip_loss(logp, advantages, old_logp, *, eps_low=0.2, eps_high=None, scale=1.0):
    """PPO's clipped loss times a constant: a policy loss with an option of its own."""
    return scale * ppo_clip_loss(logp, advantages, old_logp, eps_low=eps_low, eps_high=eps_high)


@pytest.fixture
def rank_grpo():
    """Register the rank advantage, the scaled loss and two methods; remove them after."""
    registry.register("advantage", "rank", side="reward", form="group")(rank_advantage)
    registry.register("policy_loss", "scaled_clip", side="trajectory", form="token")(
        scaled_clip_loss)
    registry.register_method("Rank GRPO", "GRPO", advantage="rank", chapter="coursework",
                             fixes="z-scores let one outlier reward set a group's scale")
    registry.register_method("Scaled Rank GRPO", "Rank GRPO", policy_loss="scaled_clip",
                             chapter="coursework", fixes="a test of a user's policy loss")
    yield
    registry.unregister_method("Scaled Rank GRPO")
    registry.unregister_method("Rank GRPO")
    registry.unregister("policy_loss", "scaled_clip")
    registry.unregister("advantage", "rank")


# =============================================================================================
# The three assignments, in their final short form
# =============================================================================================
def test_assignment_a_custom_bandit_baselines_monte_carlo_vs_exact():
    """(a) A bandit of one's own; baselines compared by Monte Carlo and exactly, with the
    same baseline specs for both tools."""
    bandit = W.Bandit(rho=torch.tensor([0.6, 0.4], dtype=torch.float64),
                      means=torch.tensor([[1.0, 0.2, 0.0], [0.3, 0.9, 0.5]], dtype=torch.float64),
                      noise_std=0.1)
    policy = W.TabularSoftmax(2, 3)
    theta = torch.tensor([1.0, 0.0, -1.0, 0.0, 0.5, 0.0], dtype=torch.float64)
    exact = exact_gradient(bandit, policy, theta)
    variances = {}
    for baseline in ["none", "value", "optimal", 0.5, torch.tensor([0.4, 0.6])]:
        stats = EstimatorStats(policy_gradient_estimates(
            bandit, policy, theta, n_samples=16, n_estimates=2000,
            generator=pg.make_generator(0), baseline=baseline))
        var = exact_total_variance(bandit, policy, theta, baseline, n_samples=16)
        # the Monte-Carlo variance matches the exact one within 4 standard errors
        assert abs(float(stats.total_variance - var)) < 4 * float(stats.total_variance_stderr)
        assert stats.is_unbiased(exact)          # a state baseline leaves E[ĝ] = ∇J
        variances[str(baseline)] = float(var)
    # the variance-optimal baseline beats the value baseline by more than 30 % here
    assert variances["optimal"] < 0.7 * variances["value"] < 0.7 * variances["none"]
    # an action-dependent table is biased: MSE = ‖bias‖² + tr Cov, within 4 standard errors
    table = torch.tensor([[0.9, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    stats = EstimatorStats(policy_gradient_estimates(bandit, policy, theta, 16, 2000,
                                                     pg.make_generator(1), baseline=table))
    mse = (baseline_bias(bandit, policy, theta, table).pow(2).sum()
           + exact_total_variance(bandit, policy, theta, table, n_samples=16))
    assert abs(float(stats.mse(exact) - mse)) < 4 * float(stats.mse_stderr(exact))
    assert not stats.is_unbiased(exact)


def test_assignment_b_rank_advantage_is_a_reward_side_child_of_grpo_that_trains(rank_grpo):
    """(b) A new advantage (rank-based, within a group) registered as a reward-side child
    of GRPO: it is on the map, the exact tools accept it, and the trainer trains with it."""
    from pgbook import plots

    m = pg.method("Rank GRPO")
    assert m.axis == "reward" and m.changes() == {"advantage": ("grpo", "rank")}
    ax = plots.method_map()
    node = {t.get_text(): t for t in ax.texts}["Rank GRPO"]
    assert node.get_bbox_patch().get_facecolor()[:3] == pytest.approx(
        tuple(int(plots.SIDE_COLORS["reward"][i:i + 2], 16) / 255 for i in (1, 3, 5)))
    plots.plt.close(ax.figure)
    # exactly: an ascent direction on the bandit (cosine with ∇J above 0.9)
    bandit, policy = W.context_bandit(), W.TabularSoftmax(3, 4)
    theta = torch.randn(12, dtype=torch.float64, generator=pg.make_generator(0))
    mean = Gp.exact_group_moments(bandit, policy, theta, 4, "rank")["mean"]
    assert float(cosine(mean, exact_gradient(bandit, policy, theta))) > 0.9
    # and it trains: a few GRPO steps on the tiny GPT
    model = _gpt()
    before = copy.deepcopy(model.state_dict())
    h = grpo_train(model, TASK, method="Rank GRPO", steps=2, prompts_per_step=2, group_size=4,
                   generator=pg.make_generator(1), progress=False, partial_reward=True)
    assert h.config["advantage"] == "rank" and bool((h.first_epoch_ratio_error == 0).all())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_assignment_c_grpo_loop_for_a_model_pgbook_did_not_define():
    """(c) A GRU, your own sampler; pgbook's causal log-probs, sanity check, loss."""

    class GRULM(nn.Module):
        def __init__(self, vocab=8, width=32):
            super().__init__()
            self.emb, self.head = nn.Embedding(vocab, width), nn.Linear(width, vocab)
            self.gru = nn.GRU(width, width, batch_first=True)

        def forward(self, ids):
            return self.head(self.gru(self.emb(ids))[0])

    @torch.no_grad()
    def rollout(model, prompts, n_new, gen):
        ids, logps = prompts, []
        for _ in range(n_new):
            logp = model(ids)[:, -1].log_softmax(-1)
            tok = torch.multinomial(logp.exp(), 1, generator=gen)
            ids, logps = torch.cat([ids, tok], 1), [*logps, logp.gather(-1, tok)]
        return ids, torch.cat(logps, 1)

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = GRULM().eval()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen, G, N, seen = pg.make_generator(0), 8, 4, []
    for _step in range(20):
        x = torch.randint(3, 8, (8,), generator=gen).repeat_interleave(G)
        ids, old_logp = rollout(model, torch.stack([torch.ones_like(x), x], 1), N, gen)
        rewards = (ids[:, 2:] == x[:, None]).float().mean(1)
        for epoch in range(2):
            lp = causal_logprobs(model, ids, prompt_len=2)
            if epoch == 0:
                check_on_policy(lp.logp, old_logp, lp.mask)
            loss, _ = method_loss("GRPO", lp.logp, old_logp, rewards, lp.mask, group_size=G)
            opt.zero_grad()
            loss.backward()
            opt.step()
        seen.append(float(rewards.mean()))
    # chance is 1/8 of the tokens; the last 5 steps (40 groups) average above 0.6
    assert sum(seen[:3]) / 3 < 0.3 and sum(seen[-5:]) / 5 > 0.6


# =============================================================================================
# The registry end to end
# =============================================================================================
def test_register_method_with_parent_grpo_right_after_import():
    """In a fresh interpreter: import pgbook, then register at once (no lazy loading)."""
    code = ("import pgbook\n"
            "m = pgbook.registry.register_method('Mine', 'GRPO', advantage='rloo')\n"
            "print(m.axis, sorted(m.changes()))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "reward ['advantage']"


def test_user_advantage_in_compute_advantages(rank_grpo):
    r = torch.tensor([0.0, 1.0, 5.0, 1.0, 2.0, 2.0, 2.0, 2.0], dtype=torch.float64)
    adv = compute_advantages(r, "rank", group_size=4)
    assert adv.tolist() == [-1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    # any order with a group id: the same advantages, scattered back
    perm = torch.randperm(8, generator=pg.make_generator(0))
    idx = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    assert torch.equal(compute_advantages(r[perm], "rank", group_index=idx[perm]), adv[perm])
    with pytest.raises(ValueError, match="takes no option 'unbiased'"):
        compute_advantages(r, "rank", group_size=4, unbiased=False)


def test_user_pieces_in_method_loss_and_policy_loss(rank_grpo):
    g = pg.make_generator(0)
    logp = (torch.randn(8, 5, generator=g, dtype=torch.float64) - 2).requires_grad_(True)
    old = logp.detach() + 0.1 * torch.randn(8, 5, generator=g, dtype=torch.float64)
    rewards = torch.rand(8, generator=g, dtype=torch.float64)
    mask = torch.ones(8, 5, dtype=torch.float64)
    mask[:, 4] = 0
    l1, _ = method_loss("Rank GRPO", logp, old, rewards, mask, group_size=4)
    # by hand: rank advantages, PPO clip, GRPO's per-sequence token means
    adv = rank_advantage(rewards, 4)[:, None].expand(8, 5)
    ref = (ppo_clip_loss(logp, adv, old) * mask).sum(1).div(mask.sum(1)).mean()
    torch.testing.assert_close(l1, ref, rtol=0, atol=1e-14)
    l2, _ = method_loss("Scaled Rank GRPO", logp, old, rewards, mask, group_size=4, scale=2.0)
    torch.testing.assert_close(l2, 2 * l1, rtol=0, atol=1e-14)
    l3, _ = policy_loss(logp, old, adv * mask, mask, loss="scaled_clip",
                        aggregation="seq_mean_token_mean", scale=3.0, eps_low=0.2)
    torch.testing.assert_close(l3, 3 * l1, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="takes no option 'scael'; did you mean 'scale'"):
        method_loss("Scaled Rank GRPO", logp, old, rewards, mask, group_size=4, scael=2.0)


def test_user_pieces_in_grpo_train_as_overrides(rank_grpo):
    h = grpo_train(_gpt(), TASK, advantage="rank", loss="scaled_clip", steps=2,
                   prompts_per_step=2, group_size=4, epochs_per_batch=2,
                   generator=pg.make_generator(2), progress=False, partial_reward=True)
    assert (h.config["advantage"], h.config["policy_loss"]) == ("rank", "scaled_clip")
    assert bool(torch.isfinite(h.loss).all()) and bool((h.first_epoch_ratio_error == 0).all())


def test_user_advantage_in_the_exact_group_tools(rank_grpo):
    bandit, policy = W.context_bandit(), W.TabularSoftmax(3, 4)
    theta = torch.randn(12, dtype=torch.float64, generator=pg.make_generator(3))
    counts = Gp.exact_group_moments(bandit, policy, theta, 3, "rank")
    seqs = Gp.exact_group_moments(bandit, policy, theta, 3, "rank", enumerate="sequences")
    for k in ("mean", "cov", "context_mean", "context_var"):
        torch.testing.assert_close(counts[k], seqs[k], rtol=0, atol=1e-14)
    # Monte-Carlo groups: unbiased for the exact mean within 4 standard errors
    batch = W.sample_groups(bandit, policy.probs(theta), 20000, 3, pg.make_generator(4))
    stats = EstimatorStats(Gp.group_estimates(bandit, policy, theta, batch, "rank"))
    assert stats.is_unbiased(counts["mean"], z=4.0)
    # 0/1 rewards: the per-context weight is the same number by both exact routes
    b2, p2, th2 = W.difficulty_bandit([0.2, 0.5, 0.9])
    w = Gp.context_weights(b2, p2, th2, 4, "rank")
    torch.testing.assert_close(w, Gp.binary_group_weight(torch.tensor([0.2, 0.5, 0.9],
                               dtype=torch.float64), 4, "rank"), rtol=0, atol=1e-12)


def test_rerunning_a_registration_cell_replaces_and_unregister_removes(rank_grpo):
    ns: dict = {}
    cell = ("import torch\nfrom pgbook import registry\n"
            "@registry.register('advantage', 'rank2', side='reward', form='group')\n"
            "def rank2(rewards, group_size):\n    return rewards - rewards.mean()\n"
            "registry.register_method('Rank2', 'GRPO', advantage='rank2')\n")
    exec(compile(cell, "<cell>", "exec"), ns)
    first = ns["rank2"]
    exec(compile(cell, "<cell>", "exec"), ns)          # the same cell, run again
    assert ns["rank2"] is not first and registry.get("advantage", "rank2").fn is ns["rank2"]
    with pytest.raises(ValueError, match="already registered"):   # another function: refused
        registry.register("advantage", "rank2", side="reward", form="group")(rank_advantage)
    with pytest.raises(ValueError, match="used by methods"):      # remove the method first
        registry.unregister("advantage", "rank2")
    registry.unregister_method("Rank2")
    registry.unregister("advantage", "rank2")
    with pytest.raises(ValueError, match="expected one of"):
        compute_advantages(torch.zeros(4), "rank2", group_size=2)
    with pytest.raises(ValueError, match="has children"):
        registry.unregister_method("Rank GRPO")


# =============================================================================================
# Unknown options are errors (a ValueError naming them), everywhere options are taken
# =============================================================================================
def _bandit_world():
    b, pol = W.context_bandit(), W.TabularSoftmax(3, 4)
    return b, pol, torch.zeros(12, dtype=torch.float64)


def _loss_inputs():
    lp = torch.zeros(4, 3)
    return lp, lp, torch.zeros(4), torch.ones(4, 3)


def _call_policy_loss(**kw):
    lp, old, _, mask = _loss_inputs()
    return policy_loss(lp, old, lp, mask, **kw)


def _call_method_loss(**kw):
    lp, old, r, mask = _loss_inputs()
    return method_loss("GRPO", lp, old, r, mask, 2, **kw)


def _call_batch_updates(**kw):
    from pgbook.exact.trajectory import batch_updates
    from pgbook.worlds.seqlm import MLPPolicy, SeqSpace, contains
    space = SeqSpace(tokens=("a",), max_len=2)
    policy = MLPPolicy(space, hidden=2)
    return batch_updates(policy, policy.init(), contains(space, "a"), loss="ppo_clip", n_batches=1,
                         prompts_per_batch=1, group_size=2, generator=pg.make_generator(0), **kw)


def _call_group_estimates(**kw):
    b, pol, th = _bandit_world()
    batch = W.sample_groups(b, pol.probs(th), 2, 3, pg.make_generator(0))
    return Gp.group_estimates(b, pol, th, batch, "grpo", **kw)


CALLS = {   # name: (call with one bad keyword, the bad keyword)
    "policy_loss": (lambda: _call_policy_loss(eps=0.2), "eps"),
    "method_loss": (lambda: _call_method_loss(eps=0.2), "eps"),
    "grpo_train": (lambda: grpo_train(_gpt(), TASK, steps=1, prompts_per_step=2, group_size=2,
                                      generator=pg.make_generator(0), eps=0.2), "eps"),
    "compute_advantages": (lambda: compute_advantages(torch.zeros(4), "grpo", group_size=2,
                                                      eps=1e-6), "eps"),
    "exact_group_moments": (lambda: Gp.exact_group_moments(*_bandit_world(), 2, "grpo",
                                                           std_epsilon=0.1), "std_epsilon"),
    "context_weights": (lambda: Gp.context_weights(*_bandit_world(), 2, "grpo",
                                                   unbaised=True), "unbaised"),
    "binary_group_weight": (lambda: Gp.binary_group_weight(torch.tensor([0.5]), 2, "rloo",
                                                           std_eps=0.1, eps=1), "eps"),
    "group_estimates": (lambda: _call_group_estimates(mask=None), "mask"),
    "causal_logprobs": (lambda: causal_logprobs(torch.zeros(1, 3, 4), torch.zeros(
        1, 3, dtype=torch.long), prompt_length=1), "prompt_length"),
    "check_on_policy": (lambda: check_on_policy(torch.zeros(1, 2), torch.zeros(1, 2),
                                                torch.ones(1, 2), rtol=0.1), "rtol"),
    "compare_over_seeds": (lambda: compare_over_seeds(lambda m, s: 0.0, [0, 1],
                                                      method=["a"]), "method"),
    "policy_config": (lambda: tasks.policy_config(TASK, n_embed=8), "n_embed"),
    "pretrained_policy": (lambda: tasks.pretrained_policy(TASK, steps=1, n_embed=8), "n_embed"),
    "group_update_weights": (lambda: _call_reward_side("group_update_weights", std_epsilon=0.1),
                             "std_epsilon"),
    "exact_group_update": (lambda: _call_reward_side("exact_group_update", std_epsilon=0.1),
                           "std_epsilon"),
    "exact_group_training": (lambda: _call_reward_side("exact_group_training", std_epsilon=0.1),
                             "std_epsilon"),
    "batch_updates": (lambda: _call_batch_updates(eps=0.2), "eps"),          # chapter 14
    "train_teacher": (lambda: pg.worlds.teachers.train_teacher(TASK, steps=1, n_embed=8), "n_embed"),
    # chapter 15
    "agent_config": (lambda: pg.train.agentic.agent_config(pg.worlds.envs.LookupEnv(), n_embed=8),
                     "n_embed"),
    "pretrain_agent": (lambda: pg.train.agentic.pretrain_agent(pg.worlds.envs.LookupEnv(), steps=1,
                                                               progress=False, n_embed=8), "n_embed"),
    "compute_turn_advantages": (lambda: pg.reward.turns.compute_turn_advantages(
        torch.zeros(4, 2), "gigpo", group_size=2, step_weigth=1.0), "step_weigth"),
}


def _call_reward_side(name, **bad):
    from pgbook.exact import reward_side
    from pgbook.worlds.seqlm import SeqSpace, TabularPolicy

    space = SeqSpace(max_len=3, rho=torch.ones(1, dtype=torch.float64))
    policy = TabularPolicy(space)
    rewards = torch.zeros(space.n_per_context, dtype=torch.float64)
    extra = {"steps": 1, "lr": 0.1} if name == "exact_group_training" else {}
    return getattr(reward_side, name)(policy, policy.init(), rewards, 2, advantage="grpo",
                                      **extra, **bad)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_an_unknown_option_is_a_value_error_naming_it(name):
    call, bad = CALLS[name]
    with pytest.raises(ValueError, match=f"takes no option '{bad}'") as info:
        call()
    assert isinstance(info.value, UnknownOptionError) and isinstance(info.value, TypeError)


def _names_world():
    return W.context_bandit(), W.TabularSoftmax(3, 4), torch.zeros(12, dtype=torch.float64)


NAMES = {   # an unknown option *name* (a value naming a piece or a mode): argument, call
    "loss": lambda: policy_loss(*_loss_inputs()[:2], torch.zeros(4, 3), torch.ones(4, 3),
                                loss="ppo"),
    "aggregation": lambda: policy_loss(*_loss_inputs()[:2], torch.zeros(4, 3),
                                       torch.ones(4, 3), aggregation="mean"),
    "kl": lambda: policy_loss(*_loss_inputs()[:2], torch.zeros(4, 3), torch.ones(4, 3),
                              kl="k4"),
    "method": lambda: method_loss("GRPOO", *_loss_inputs()[:2], torch.zeros(4),
                                  torch.ones(4, 3), 2),
    "estimator": lambda: compute_advantages(torch.zeros(4), "zscore", group_size=2),
    "enumerate": lambda: Gp.exact_group_moments(*_names_world(), 2, enumerate="perms"),
    "baseline": lambda: policy_gradient_estimates(*_names_world(), 2, 2, pg.make_generator(0),
                                                  baseline="valeu"),
    "mode": lambda: pg.aggregation.aggregate(torch.zeros(2, 2), torch.ones(2, 2), "tokne_mean"),
    "kind": lambda: pg.kl.kl_estimate(torch.zeros(2), torch.zeros(2), "k4"),
}


@pytest.mark.parametrize("arg", sorted(NAMES))
def test_an_unknown_option_name_is_a_value_error_naming_the_argument(arg):
    with pytest.raises(ValueError, match=f"^{arg}: expected"):
        NAMES[arg]()


def test_a_piece_of_another_form_is_named_as_such():
    with pytest.raises(ValueError, match="estimator: 'value' is not a group estimator"):
        compute_advantages(torch.zeros(4), "value", group_size=2)   # a bandit baseline
    with pytest.raises(ValueError, match=r"form 'group'.*got 'reinforce_pp_baseline'"):
        Gp.exact_group_moments(*_names_world(), 2, "reinforce_pp_baseline")  # reads the whole batch


def test_a_misspelt_option_gets_the_close_names():
    with pytest.raises(ValueError, match="did you mean 'eps_high', 'eps_low', 'std_eps'"):
        _call_method_loss(eps=0.2)
    with pytest.raises(ValueError, match="did you mean 'eps_high', 'eps_low'"):
        CALLS["grpo_train"][0]()
    with pytest.raises(ValueError, match="did you mean 'std_eps'"):
        CALLS["compute_advantages"][0]()


def test_every_public_function_taking_options_is_audited():
    """Each public function with **kwargs forwards them somewhere that checks them; a new
    one must join CALLS (plots/widgets forward theirs to matplotlib, which raises)."""
    import importlib
    import pkgutil

    found = set()
    for info in pkgutil.walk_packages(pg.__path__, "pgbook."):
        if info.name.split(".")[1] in ("plots", "widgets", "exercises", "_validate"):
            continue
        mod = importlib.import_module(info.name)
        for fname in getattr(mod, "__all__", []):
            fn = getattr(mod, fname)
            if inspect.isfunction(fn) and any(p.kind is p.VAR_KEYWORD for p in
                                              inspect.signature(fn).parameters.values()):
                found.add(fname)
    # register_method takes components as kind=name (an unknown kind is an error there)
    assert found - {"register_method"} <= set(CALLS), sorted(found - set(CALLS))
    with pytest.raises(ValueError, match="no kind 'advnatage'"):
        registry.register_method("x", "GRPO", advnatage="rloo")


def test_one_name_per_meaning_clip_range_and_std_eps():
    """eps_low/eps_high is the clip range and std_eps the ε of a z-score, everywhere."""
    for fn in (policy_loss, method_loss, grpo_train, ppo_clip_loss):
        params = inspect.signature(fn).parameters
        assert "eps" not in params and "eps_low" in params, fn.__name__
    for fn in (method_loss, grpo_train):
        assert "std_eps" in inspect.signature(fn).parameters


# =============================================================================================
# causal_logprobs: the shift done once
# =============================================================================================
def _left_padded_sample(dtype=torch.float64, seed=1):
    model = gpt.GPT(tasks.policy_config(tasks.Reverse(1, 3, "abc"), n_embd=16),
                    pg.make_generator(0)).to(dtype)
    task = tasks.Reverse(1, 3, "abc")
    g = pg.make_generator(seed)
    prob = task.sample(6, g)
    s = gpt.sample(model, prob.prompts, task.max_new_tokens, g)
    return model, s, prob.prompts.shape[1]


def _hand_shifted(logits, ids, P):
    """The reference: logits at t score the token at t + 1, by hand."""
    lp = torch.log_softmax(logits[:, :-1].to(torch.float64), -1).gather(
        -1, ids[:, 1:, None]).squeeze(-1)
    return lp[:, P - 1:]


def test_causal_logprobs_equal_the_hand_shifted_reference_with_left_padded_prompts():
    model, s, P = _left_padded_sample()
    assert bool((s.tokens[:, 0] == gpt.PAD).any())            # some prompts are left-padded
    out = causal_logprobs(model, s.tokens, P, eos_id=gpt.EOS)
    N = s.tokens.shape[1] - P
    assert isinstance(out, CausalLogprobs) and out.logp.shape == out.mask.shape == (6, N)
    ref = _hand_shifted(model(s.tokens), s.tokens, P)
    torch.testing.assert_close(out.logp, ref * out.mask, rtol=0, atol=1e-12)
    assert torch.equal(out.mask, s.mask[:, P:])              # 1 up to and including EOS
    torch.testing.assert_close(out.logp, s.logprobs[:, P:], rtol=0, atol=1e-12)  # = sampler's
    # the same from the logits (on input_ids, or on input_ids[:, :-1]) and from a full mask
    for z in (model(s.tokens), model(s.tokens[:, :-1])):
        o2 = causal_logprobs(z, s.tokens, P, response_mask=s.mask)
        assert torch.equal(o2.logp, out.logp) and torch.equal(o2.mask, out.mask)
    full = causal_logprobs(model, s.tokens, response_mask=s.mask)
    assert full.logp.shape == s.tokens.shape
    torch.testing.assert_close(full.logp, gpt.logprobs(model, s.tokens) * s.mask, rtol=0,
                               atol=1e-12)
    # the tempting fix mask[:, :-1] scores other tokens: it is not what the helper returns
    wrong = s.mask[:, :-1][:, P - 1:]
    assert not torch.equal(wrong, out.mask)


def test_causal_logprobs_gradient_reaches_only_response_tokens():
    model, s, P = _left_padded_sample()
    logits = model(s.tokens).detach().requires_grad_(True)
    out = causal_logprobs(logits, s.tokens, P, eos_id=gpt.EOS)
    out.logp.sum().backward()
    touched = logits.grad.abs().sum(-1) > 0                  # (B, T): positions with a gradient
    expected = torch.zeros_like(touched)
    expected[:, P - 1:-1] = out.mask.to(torch.bool)          # logits at t − 1 score token t
    assert torch.equal(touched, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_causal_logprobs_dtypes(dtype):
    g = pg.make_generator(0)
    logits = torch.randn(3, 6, 7, generator=g).to(dtype)
    ids = torch.randint(0, 7, (3, 6), generator=g)
    out = causal_logprobs(logits, ids, 2, temperature=0.7)
    assert out.logp.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert out.mask.dtype == out.logp.dtype and bool((out.mask == 1).all())
    # the logits are divided by τ in their own dtype (as the sampler would), then promoted
    ref = torch.log_softmax((logits[:, 1:-1] / 0.7).double(), -1).gather(-1, ids[:, 2:, None])
    torch.testing.assert_close(out.logp.double(), ref.squeeze(-1), rtol=0,
                               atol=1e-12 if dtype == torch.float64 else 1e-5)


def test_causal_logprobs_on_meta_gives_shapes():
    logits = torch.empty(2, 5, 9, device="meta")
    ids = torch.empty(2, 5, dtype=torch.long, device="meta")
    out = causal_logprobs(logits, ids, 2, eos_id=2)
    assert out.logp.device.type == "meta" and out.logp.shape == out.mask.shape == (2, 3)
    full = causal_logprobs(logits, ids, response_mask=torch.empty(2, 5, device="meta"))
    assert full.logp.shape == (2, 5)


def test_causal_logprobs_takes_output_objects_and_tuples():
    class Out:
        def __init__(self, logits):
            self.logits = logits

    model, s, P = _left_padded_sample()
    ref = causal_logprobs(model, s.tokens, P)
    for wrap in (Out, lambda z: (z, None)):
        out = causal_logprobs(lambda ids, w=wrap: w(model(ids)), s.tokens, P)
        assert torch.equal(out.logp, ref.logp)
    seen = {}

    def with_mask(ids, attention_mask=None):
        seen["mask"] = attention_mask
        return model(ids)

    am = (s.tokens != gpt.PAD).long()
    causal_logprobs(with_mask, s.tokens, P, attention_mask=am)
    assert torch.equal(seen["mask"], am[:, :-1])             # the model sees ids[:, :-1]


def test_causal_logprobs_with_a_transformers_gpt2_and_its_dropout():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=12, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.GPT2LMHeadModel(cfg)         # built from a config: no download
    g = pg.make_generator(0)
    ids = torch.randint(3, 12, (4, 9), generator=g)
    ids[:2, :2] = 0                                       # two left-padded prompts
    am = (ids != 0).long()
    P = 4
    model.eval()
    out = causal_logprobs(model, ids, P, attention_mask=am)
    ref = _hand_shifted(model(ids, attention_mask=am).logits, ids, P)
    torch.testing.assert_close(out.logp.double(), ref, rtol=0, atol=1e-5)
    assert check_on_policy(out.logp, out.logp.detach(), out.mask) == 0
    model.train()                                         # GPT-2's dropout is on in train mode
    with pytest.raises(ValueError, match="train mode with dropout"):
        check_on_policy(causal_logprobs(model, ids, P, attention_mask=am).logp, out.logp,
                        out.mask)


@pytest.mark.parametrize("kw, match", [
    (dict(prompt_len=0), "prompt_len: expected an integer in"),
    (dict(prompt_len=5), "prompt_len: expected an integer in"),
    (dict(prompt_len=True), "prompt_len"),
    (dict(), "expected prompt_len .* or a \\(B, T\\) response_mask"),
    (dict(prompt_len=2, eos_id=-1), "eos_id: expected a non-negative integer"),
    (dict(prompt_len=2, eos_id=2, response_mask=torch.ones(2, 3)), "eos_id: expected it with"),
    (dict(response_mask=torch.ones(2, 5)), "column 0 must be 0"),
    (dict(prompt_len=2, response_mask=torch.ones(2, 5)), "must be 0 on the prompt columns"),
    (dict(prompt_len=2, response_mask=torch.ones(2, 4)), "response_mask: expected shape"),
    (dict(prompt_len=2, response_mask=torch.full((2, 3), 0.5)), "0/1 mask"),
    (dict(prompt_len=2, response_mask=torch.zeros(2, 3)), "all zero"),
    (dict(prompt_len=2, temperature=0.0), "temperature"),
    (dict(prompt_len=2, attention_mask=torch.ones(2, 5)), "only used when a model is given"),
])
def test_causal_logprobs_bad_inputs(kw, match):
    logits = torch.zeros(2, 5, 4)
    ids = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=match):
        causal_logprobs(logits, ids, **kw)


def test_causal_logprobs_bad_ids_logits_and_models():
    ids = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"input_ids: expected dtype torch\.int64"):
        causal_logprobs(torch.zeros(2, 5, 4), ids.float(), 2)
    with pytest.raises(ValueError, match="at least 2 positions"):
        causal_logprobs(torch.zeros(2, 1, 4), ids[:, :1], 1)
    with pytest.raises(ValueError, match=r"logits: expected shape \(2, 5, V\)"):
        causal_logprobs(torch.zeros(2, 3, 4), ids, 2)
    with pytest.raises(ValueError, match="tokens: expected ids in"):
        causal_logprobs(torch.zeros(2, 5, 4), ids + 4, 2)
    with pytest.raises(ValueError, match="one device"):
        causal_logprobs(torch.zeros(2, 5, 4, device="meta"), ids, 2)
    with pytest.raises(ValueError, match="logits_or_model: expected"):
        causal_logprobs("gpt2", ids, 2)
    with pytest.raises(ValueError, match="the model returned dict"):
        causal_logprobs(lambda x: {"logits": 1}, ids, 2)


# =============================================================================================
# check_on_policy: the first-epoch sanity check, in the trainer and as a helper
# =============================================================================================
class DropoutGPT(nn.Module):
    """The tiny GPT with dropout on its logits (like any model with dropout layers)."""

    def __init__(self, model, p=0.1):
        super().__init__()
        self.model, self.config, self.drop = model, model.config, nn.Dropout(p)

    def forward(self, idx):
        return self.drop(self.model(idx))


def test_grpo_train_stops_a_dropout_model_in_train_mode_and_runs_it_in_eval_mode():
    model = DropoutGPT(_gpt())
    assert model.training                                 # nn.Module's default
    opts = dict(steps=1, prompts_per_step=2, group_size=4, generator=pg.make_generator(0),
                progress=False, partial_reward=True)
    with pytest.raises(ValueError, match="model is in train mode with dropout"):
        grpo_train(model, TASK, **opts)
    h = grpo_train(model.eval(), TASK, **{**opts, "generator": pg.make_generator(0)})
    assert float(h.first_epoch_ratio_error[0]) == 0.0


def test_check_on_policy_passes_on_policy_and_names_the_causes_otherwise():
    g = pg.make_generator(0)
    logits = torch.randn(4, 6, 5, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 5, (4, 6), generator=g)
    lp = causal_logprobs(logits, ids, 2)
    assert float(check_on_policy(lp.logp, lp.logp.detach(), lp.mask)) == 0.0
    # padding may hold anything: −inf and NaN off the mask are ignored
    mask = lp.mask.clone()
    mask[:, -1] = 0
    junk = lp.logp.detach().clone()
    junk[:, -1] = torch.nan
    assert float(check_on_policy(lp.logp, junk, mask)) == 0.0
    # a sampler at temperature 0.8 against a trainer at 1: ratios far from 1
    hot = causal_logprobs(logits, ids, 2, temperature=0.8)
    with pytest.raises(ValueError, match=r"max \|ratio − 1\| = .*dropout.*temperature"):
        check_on_policy(lp.logp, hot.logp, lp.mask)
    # within the tolerance: float32 round-off passes, and atol is the ratio's
    assert float(check_on_policy(lp.logp, lp.logp.float().double(), lp.mask)) < 1e-6
    with pytest.raises(ValueError, match=r"atol = 0\.01"):
        check_on_policy(lp.logp + 0.02 * lp.mask, lp.logp, lp.mask, atol=0.01)
    assert float(check_on_policy(lp.logp + 0.005 * lp.mask, lp.logp, lp.mask, atol=0.01)) \
        == pytest.approx(math.expm1(0.005))
    with pytest.raises(ValueError, match="logp: expected finite"):   # NaN on the mask fails
        bad = lp.logp.detach().clone()
        bad[0, 1] = torch.nan
        check_on_policy(bad, lp.logp, lp.mask)


def test_check_on_policy_dtypes_meta_and_bad_inputs():
    x = torch.zeros(2, 3, dtype=torch.bfloat16)
    assert check_on_policy(x, x.float(), torch.ones(2, 3)).dtype == torch.bfloat16
    meta = torch.empty(2, 3, device="meta")
    assert check_on_policy(meta, meta, meta).device.type == "meta"
    ok = torch.zeros(2, 3)
    for args, match in [((ok, torch.zeros(2, 4), torch.ones(2, 3)), "same shape"),
                        ((ok, ok, torch.zeros(2, 3)), "all zero"),
                        ((ok, ok, torch.full((2, 3), 2.0)), "0/1 mask"),
                        ((ok, ok, torch.ones(2, 3), -1.0), "atol"),
                        ((ok.long(), ok, torch.ones(2, 3)), "floating"),
                        ((ok, ok.long(), torch.ones(2, 3)), "old_logp: expected a floating"),
                        ((ok, ok, torch.ones(2, 3, device="meta")), "one device")]:
        with pytest.raises(ValueError, match=match):
            check_on_policy(*args)


# =============================================================================================
# EstimatorStats.mse and compare_over_seeds
# =============================================================================================
def test_mse_is_bias_squared_plus_total_variance():
    g = pg.make_generator(0)
    est = torch.randn(500, 3, generator=g, dtype=torch.float64) * 0.5 + torch.tensor(
        [1.0, 0.0, -1.0], dtype=torch.float64)
    stats = EstimatorStats(est)
    exact = torch.tensor([0.8, 0.1, -1.0], dtype=torch.float64)
    # identity at float64 precision
    torch.testing.assert_close(stats.mse(exact), stats.bias_squared(exact)
                               + stats.total_variance, rtol=0, atol=1e-14)
    torch.testing.assert_close(stats.mse(exact), (est - exact).pow(2).sum(-1).mean(),
                               rtol=0, atol=1e-14)
    # the truth: ‖bias‖² = 0.05, tr Cov = 0.75, so MSE = 0.8, within 4 standard errors
    assert abs(float(stats.mse(exact)) - 0.8) < 4 * float(stats.mse_stderr(exact))
    # an unbiased estimator: bias² is estimated without bias, near 0 within the mean's error
    assert abs(float(stats.bias_squared(exact.new_tensor([1.0, 0.0, -1.0])))) < 4 * 0.75 / 500


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_mse_dtypes_and_meta(dtype):
    est = torch.randn(50, 3, generator=pg.make_generator(0)).to(dtype)
    stats, exact = EstimatorStats(est), torch.zeros(3, dtype=dtype)
    assert stats.mse(exact).dtype == stats.mse_stderr(exact).dtype == dtype
    torch.testing.assert_close(stats.mse(exact).double(), est.double().pow(2).sum(-1).mean(),
                               rtol=1e-2 if dtype == torch.bfloat16 else 1e-6, atol=0)
    meta = EstimatorStats(torch.empty(50, 3, device="meta"))
    assert meta.mse(torch.empty(3, device="meta")).device.type == "meta"


def test_mse_bad_inputs():
    stats = EstimatorStats(torch.zeros(4, 2))
    for exact, match in [(torch.zeros(3), "expected shape"), (torch.tensor([0.0, math.nan]),
                         "finite"), (torch.zeros(2, device="meta"), "one device")]:
        with pytest.raises(ValueError, match=match):
            stats.mse(exact)
    with pytest.raises(ValueError, match="expected shape"):
        stats.bias_squared(torch.zeros(1))


def _noisy_run(method, seed):
    """A 'training run': a shared seed effect plus a method effect plus a little noise."""
    g = pg.make_generator(seed)
    shared = torch.randn((), generator=g, dtype=torch.float64)
    own = {"a": 0.0, "b": 0.1}[method]
    return shared + own + 0.01 * torch.randn((), generator=pg.make_generator(seed * 7 + len(
        method)), dtype=torch.float64)


def test_compare_over_seeds_pairs_the_seeds():
    cmp = compare_over_seeds(_noisy_run, range(10), methods=["a", "b"])
    assert isinstance(cmp, SeedComparison) and cmp.values.shape == (2, 10)
    assert cmp.methods == ("a", "b") and cmp.seeds == tuple(range(10))
    d, se = cmp.difference("b", "a")
    # paired: the shared seed effect cancels; the difference 0.1 within 4 standard errors,
    # and its error is more than 10 times smaller than either method's own
    assert abs(float(d) - 0.1) < 4 * float(se)
    assert float(se) < 0.1 * float(cmp.stderr.min())
    torch.testing.assert_close(cmp.mean, cmp.values.mean(1), rtol=0, atol=0)
    assert "diff +0.1" in cmp.summary() and cmp.summary().count("\n") == 2
    # the dict form gives the same numbers
    cmp2 = compare_over_seeds(lambda s: {m: _noisy_run(m, s) for m in ("a", "b")}, range(10))
    assert torch.equal(cmp2.values, cmp.values)


@pytest.mark.parametrize("args, kw, match", [
    ((_noisy_run, [0]), dict(methods=["a"]), "at least 2 seeds"),
    ((_noisy_run, [0, 0]), dict(methods=["a"]), "distinct seeds"),
    ((_noisy_run, [0, 1.0]), dict(methods=["a"]), "seeds: expected integers"),
    ((_noisy_run, [0, True]), dict(methods=["a"]), "seeds: expected integers"),
    ((_noisy_run, [0, 1]), dict(methods="a"), "methods: expected a non-empty list"),
    ((_noisy_run, [0, 1]), dict(methods=[]), "methods: expected a non-empty list"),
    ((_noisy_run, [0, 1]), dict(methods=["a", "a"]), "distinct names"),
    ((42, [0, 1]), dict(methods=["a"]), "fn: expected a callable"),
    ((lambda m, s: torch.zeros(2), [0, 1]), dict(methods=["a"]), "method 'a', seed 0.*shape"),
    ((lambda m, s: math.nan, [0, 1]), dict(methods=["a"]), "finite"),
    ((lambda m, s: "1.0", [0, 1]), dict(methods=["a"]), "expected a number, got str"),
    ((lambda s: 1.0, [0, 1]), {}, "expected a non-empty dict"),
    ((lambda s: {"a": 1.0} if s == 0 else {"b": 1.0}, [0, 1]), {}, "expected the methods"),
])
def test_compare_over_seeds_bad_inputs(args, kw, match):
    with pytest.raises(ValueError, match=match):
        compare_over_seeds(*args, **kw)
    cmp = compare_over_seeds(_noisy_run, [0, 1], methods=["a"])
    with pytest.raises(ValueError, match="method: expected one of"):
        cmp.difference("a", "c")


# =============================================================================================
# A user's KL term, in the reward and in the loss
# =============================================================================================
def test_user_kl_terms_in_the_reward_and_in_the_loss():
    from pgbook.kl import kl_estimate

    @registry.register("kl", "k3_in_reward", side="reward", form="reward")
    def k3_in_reward(logp, ref_logp):
        """sg[k3] per token, summed into the reward."""
        return kl_estimate(logp.detach(), ref_logp, "k3")

    @registry.register("kl", "half_k2_loss", side="trajectory", form="token")
    def half_k2_loss(logp, ref_logp):
        return 0.5 * kl_estimate(logp, ref_logp, "k2")

    registry.register_method("GRPO + k3 reward", "GRPO", kl="k3_in_reward")
    try:
        g = pg.make_generator(0)
        logp = (torch.randn(4, 3, generator=g, dtype=torch.float64) - 1).requires_grad_(True)
        ref = logp.detach() + 0.3 * torch.randn(4, 3, generator=g, dtype=torch.float64)
        r = torch.rand(4, generator=g, dtype=torch.float64)
        mask = torch.ones(4, 3, dtype=torch.float64)
        loss, _ = method_loss("GRPO + k3 reward", logp, None, r, mask, 2, ref_logp=ref, beta=0.5)
        shaped = r - 0.5 * kl_estimate(logp.detach(), ref, "k3").sum(1)   # by hand
        by_hand, _ = method_loss("GRPO", logp, None, shaped, mask, 2)
        torch.testing.assert_close(loss, by_hand, rtol=0, atol=1e-14)
        l1, _ = policy_loss(logp, None, torch.zeros_like(logp), mask, kl="half_k2_loss",
                            ref_logp=ref, beta=1.0, aggregation="token_mean")
        torch.testing.assert_close(l1, 0.25 * (ref - logp).pow(2).mean(), rtol=0, atol=1e-14)
        h = grpo_train(_gpt(), TASK, method="GRPO + k3 reward", beta=0.1, steps=1,
                       prompts_per_step=2, group_size=4, generator=pg.make_generator(0),
                       progress=False, partial_reward=True)
        assert h.config["kl"] == "k3_in_reward" and bool(torch.isfinite(h.loss).all())
    finally:
        registry.unregister_method("GRPO + k3 reward")
        registry.unregister("kl", "k3_in_reward")
        registry.unregister("kl", "half_k2_loss")
