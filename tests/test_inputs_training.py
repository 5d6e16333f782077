"""Bad inputs to the trainers, the widgets and the tasks are refused with a ValueError that
says what was expected (second input audit: trainers, widgets, tasks)."""

from __future__ import annotations

import copy

import pytest
import torch

import pgbook as pg
from pgbook import widgets
from pgbook.train.actor_critic import actor_critic_train
from pgbook.train.grpo import grpo_train
from pgbook.train.ppo import ppo_iterations
from pgbook.train.ppo_llm import ValueModel, ppo_train
from pgbook.worlds import bandits as W
from pgbook.worlds import gpt, tasks
from pgbook.worlds import seqlm as S

F64 = torch.float64
TASK = tasks.Reverse(min_len=1, max_len=2, letters="ab")
OTHER = tasks.Reverse(letters="abcd", max_len=3)


def _gpt(task=TASK):
    return gpt.GPT(tasks.policy_config(task, n_embd=16), pg.make_generator(0))


GRPO = dict(steps=1, prompts_per_step=2, group_size=2, progress=False)
PPO = dict(steps=1, batch_size=2, progress=False)


# -- grpo_train / ppo_train: setup checks -----------------------------------------------------
@pytest.mark.parametrize("kw, match", [
    (lambda m: dict(ref_model=_gpt(OTHER)), "ref_model: expected a model over the task's vocabulary"),
    (lambda m: dict(teacher=_gpt(OTHER)), "teacher: expected a model over the task's vocabulary"),
    (lambda m: dict(sampler=_gpt(OTHER)), "sampler: expected the model's state-dict layout"),
    (lambda m: dict(ref_model="x"), "ref_model: expected a torch.nn.Module"),
    (lambda m: dict(teacher="x"), "teacher: expected a torch.nn.Module"),
    (lambda m: dict(sampler="x"), "sampler: expected a separate module"),
    (lambda m: dict(optimizer=torch.optim.SGD(_gpt().parameters(), lr=1.0)),
     "optimizer: .*holds none of them"),
    (lambda m: dict(optimizer="adam"), "optimizer: expected a torch.optim.Optimizer"),
    (lambda m: dict(optimizer=torch.optim.SGD(m.parameters(), lr=1.0), lr=123),
     "lr: the optimizer passed has its own learning rate"),
    (lambda m: dict(loss_options={"eps_low": 0.1}), "loss_options: 'eps_low' is set by "
                                                     "grpo_train itself; pass eps_low="),
    (lambda m: dict(loss_options={"ref_logp": None}), "loss_options: 'ref_logp'.*ref_model="),
], ids=["ref-vocab", "teacher-vocab", "sampler-layout", "ref-str", "teacher-str", "sampler-str",
        "optimizer-other", "optimizer-str", "optimizer+lr", "loss_options-eps_low",
        "loss_options-ref_logp"])
def test_grpo_train_refuses_at_setup(kw, match):
    m = _gpt()
    with pytest.raises(ValueError, match=match):
        grpo_train(m, TASK, generator=pg.make_generator(0), **kw(m), **GRPO)


def test_grpo_train_refuses_a_model_over_another_vocabulary():
    with pytest.raises(ValueError, match=r"model: expected a model over the task's vocabulary "
                                         r"\(vocab_size = 6.*got config.vocab_size = 8"):
        grpo_train(_gpt(OTHER), TASK, generator=pg.make_generator(0), **GRPO)


def test_grpo_train_refuses_a_block_too_short():
    cfg = tasks.policy_config(TASK, n_embd=16, block_size=4)
    with pytest.raises(ValueError, match=r"model: expected config.block_size ≥ prompt_len \+ "
                                         r"max_new_tokens = 7"):
        grpo_train(gpt.GPT(cfg, pg.make_generator(0)), TASK, generator=pg.make_generator(0),
                   **GRPO)


def test_grpo_train_valid_optimizer_sampler_and_lr_still_work():
    m = _gpt()
    h = grpo_train(m, TASK, generator=pg.make_generator(0),
                   optimizer=torch.optim.SGD(m.parameters(), lr=1e-3), **GRPO)
    assert h.steps == 1 and h.config["lr"] == 1e-3
    m = _gpt()
    h = grpo_train(m, TASK, generator=pg.make_generator(0), sampler=copy.deepcopy(m),
                   ref_model=copy.deepcopy(m), lr=2e-3, **GRPO)
    assert h.steps == 1 and h.config["lr"] == 2e-3


def test_grpo_train_default_lr_unchanged():
    """lr=None is the documented default 1e-3: the same run as passing it."""
    runs = []
    for kw in ({}, {"lr": 1e-3}):
        m = _gpt()
        grpo_train(m, TASK, generator=pg.make_generator(0), **kw, **GRPO)
        runs.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("kw, match", [
    (lambda: dict(value_model=ValueModel.from_policy(_gpt(OTHER))),
     "value_model: expected a model over the task's vocabulary"),
    (lambda: dict(ref_model=_gpt(OTHER)), "ref_model: expected a model over the task's vocabulary"),
    (lambda: dict(critic="shared", critic_lr=0.5), "critic_lr: a shared value head"),
], ids=["value-vocab", "ref-vocab", "shared-critic_lr"])
def test_ppo_train_refuses_at_setup(kw, match):
    with pytest.raises(ValueError, match=match):
        ppo_train(_gpt(), TASK, generator=pg.make_generator(0), **kw(), **PPO)


def test_ppo_train_refuses_a_model_over_another_vocabulary_and_valid_still_works():
    with pytest.raises(ValueError, match="model: expected a model over the task's vocabulary"):
        ppo_train(_gpt(OTHER), TASK, generator=pg.make_generator(0), **PPO)
    h = ppo_train(_gpt(), TASK, generator=pg.make_generator(0), critic_lr=1e-3, **PPO)
    assert h.reward.shape == (1,)


# -- ppo_iterations, actor_critic_train: options that would be ignored -----------------------
def test_ppo_iterations_refuses_kl_target_with_beta_zero():
    b, pol, th = W.context_bandit(), W.TabularSoftmax(3, 4), torch.zeros(12, dtype=F64)
    kw = dict(iterations=1, n_samples=8, generator=pg.make_generator(0), epochs=1, lr=0.5,
              kl_target=1e-4)
    with pytest.raises(ValueError, match=r"kl_target: .*pass an initial beta > 0"):
        ppo_iterations(b, pol, th, **kw)
    assert ppo_iterations(b, pol, th, beta=0.5, **kw)["beta"].tolist() == [0.5]


@pytest.fixture(scope="module")
def seq_world():
    sp = S.SeqSpace(tokens=("a", "b"), max_len=3, rho=torch.tensor([0.6, 0.4], dtype=F64))
    pol = S.MLPPolicy(sp, hidden=4)
    return pol, pol.init(pg.make_generator(0), scale=1.0), S.contains(sp, "ab")


@pytest.mark.parametrize("kw, match", [
    (dict(advantage="reward_to_go", critic_lr=0.5), "critic_lr: advantage='reward_to_go' does not use it"),
    (dict(advantage="reward_to_go", lam=0.5), "lam: advantage='reward_to_go' does not use it"),
    (dict(advantage="reward_to_go", critic_steps=5), "critic_steps: advantage='reward_to_go'"),
    (dict(advantage="group", group_size=2, lam=0.5), "lam: advantage='group' does not use it"),
    (dict(advantage="prompt_value", critic_lr=7), "critic_lr: advantage='prompt_value'"),
    (dict(advantage="exact_critic", critic_lr=0.5), "critic_lr: advantage='exact_critic'"),
], ids=["rtg-critic_lr", "rtg-lam", "rtg-critic_steps", "group-lam", "pv-critic_lr",
        "exact-critic_lr"])
def test_actor_critic_refuses_unused_critic_options(seq_world, kw, match):
    pol, th, rew = seq_world
    with pytest.raises(ValueError, match=match):
        actor_critic_train(pol, th, rew, steps=1, n_samples=4, lr=0.1,
                           generator=pg.make_generator(0), **kw)


def test_actor_critic_valid_options_still_work(seq_world):
    pol, th, rew = seq_world
    base = dict(steps=1, n_samples=4, lr=0.1)
    h = actor_critic_train(pol, th, rew, advantage="exact_critic", lam=0.5,
                           generator=pg.make_generator(0), **base)
    assert h.config["lam"] == 0.5
    h = actor_critic_train(pol, th, rew, advantage="reward_to_go", generator=pg.make_generator(0),
                           **base)
    assert h.config["lam"] == 1.0


# -- widgets --------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, initial, match", [
    ((0.0, 1.0, 0.1), 5.0, r"x: expected an initial value in \[0.0, 1.0\]"),
    ((0, 10, 1), 2.5, "x: expected an integer as the initial value"),
    ((0, 10, 1), "a", "x: expected an integer as the initial value"),
    ((0.0, 1.0, 0.1), "a", "x: expected a number as the initial value"),
    ((0, 10, 1), True, "x: expected an integer as the initial value"),
    (True, "no", "x: expected True or False as the initial value of a checkbox"),
], ids=["out-of-range", "off-integer", "str-int", "str-float", "bool-int", "checkbox-str"])
def test_control_refuses_bad_initial(spec, initial, match):
    with pytest.raises(ValueError, match=match):
        widgets.control("x", spec, initial)


def test_control_valid_initial_still_works():
    assert widgets.control("x", (0.0, 1.0, 0.1), 1).value == 1.0
    assert widgets.control("x", (0, 10, 1), 3).value == 3
    assert widgets.control("x", True, False).value is False


@pytest.mark.parametrize("kw, match", [
    (dict(initial={"y": 1}), r"initial: 'y' is not a control \(have \['x'\]\)"),
    (dict(initial=[1]), "initial: expected a dict"),
    (dict(static=[{"y": 1}]), r"static\[0\]: 'y' is not a control \(have \['x'\]\)"),
    (dict(static=[[1]]), r"static\[0\]: expected a dict"),
    (dict(static={"x": 1}), "static: expected a list of dicts"),
], ids=["initial-key", "initial-list", "static-key", "static-list", "static-dict"])
def test_explore_refuses_unknown_keys_and_non_dicts(kw, match):
    with pytest.raises(ValueError, match=match):
        widgets.explore(lambda ax, x: None, {"x": (0, 1, 1)}, **kw)


def test_explore_valid_still_works():
    box = widgets.explore(lambda ax, x: None, {"x": (0, 1, 1)}, initial={"x": 1})
    assert box is not None


# -- tasks ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fill", [999, -1], ids=["over-vocab", "negative"])
def test_reward_refuses_ids_outside_the_vocabulary(fill):
    pb = TASK.sample(3, pg.make_generator(0))
    with pytest.raises(ValueError, match=r"tokens: expected ids in \[0, 6\)"):
        TASK.reward(torch.full((3, TASK.max_new_tokens), fill), pb.targets)
    assert TASK.reward(pb.targets, pb.targets).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("task, prompt", [
    (tasks.Reverse(max_len=2), "ababababab>"),
    (tasks.SortDigits(max_len=3), "12345:"),
    (tasks.Add(digits=1), "12+3="),
], ids=["reverse", "sort", "add"])
def test_solve_refuses_a_too_long_prompt(task, prompt):
    with pytest.raises(ValueError, match="prompt: expected at most"):
        task.solve(prompt)


def test_solve_valid_still_works():
    assert tasks.Reverse(max_len=2).solve("ab>") == "ba"
    assert tasks.Add(digits=1).solve("3+4=") == "7"


@pytest.mark.parametrize("which", ["prompts", "targets"])
def test_demonstrations_refuse_non_integer_problems(which):
    pb = TASK.sample(2, pg.make_generator(0))
    bad = pb._replace(**{which: getattr(pb, which).float()})
    with pytest.raises(ValueError, match=f"problems.{which}: expected integer token ids"):
        TASK.demonstrations(bad)
    seq, mask = TASK.demonstrations(pb)
    assert seq.dtype == torch.long and seq.shape == mask.shape
