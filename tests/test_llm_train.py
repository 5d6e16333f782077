"""Unit tests for pgbook.llm_train (the GRPO loop for the tiny GPT)."""

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pgbook as pg
from pgbook import methods as rl
from pgbook.train.grpo import METRICS, GRPOHistory, grpo_train
from pgbook.worlds import gpt, tasks

TASK = tasks.Reverse(min_len=1, max_len=2, letters="ab")


def _model(dtype=torch.float32, seed=0):
    cfg = tasks.policy_config(TASK, n_embd=16)
    return gpt.GPT(cfg, pg.make_generator(seed)).to(dtype)


def _train(model, steps=2, **kw):
    opts = dict(steps=steps, prompts_per_step=4, group_size=4, generator=pg.make_generator(1),
                progress=False, partial_reward=True)   # partial credit: a signal from an untrained model
    opts.update(kw)
    return grpo_train(model, TASK, **opts)


def test_records_every_metric_and_ratio_is_exactly_one_on_the_first_epoch():
    h = _train(_model(), steps=3, epochs_per_batch=2, method="GRPO", beta=0.04)
    assert h.steps == 3
    for name in METRICS:
        x = getattr(h, name)
        assert x.shape == (3,) and x.dtype == torch.float64 and bool(torch.isfinite(x).all())
    assert bool((h.first_epoch_ratio_error == 0).all())          # old log-probs = trainer's own
    assert float(h.logprob_gap.max()) < 1e-5                     # sampled ≈ recomputed
    assert float(h.kl_ref[0]) == 0.0                             # π_θ0 is the reference
    assert float(h.kl_ref[1:].min()) > 0                         # then it moves away
    assert bool(((h.reward >= 0) & (h.reward <= 1)).all())
    assert bool(((h.zero_variance_groups >= 0) & (h.zero_variance_groups <= 4)).all())
    assert bool((h.length >= 1).all()) and bool((h.length <= TASK.max_new_tokens).all())
    assert bool((h.seconds.diff() > 0).all()) and bool((h.entropy > 0).all())
    assert bool((h.ratio_max >= 1).all())
    assert h.config["kl"] == "k3_loss" and h.config["beta"] == 0.04
    assert h.config["epochs_per_batch"] == 2 and h.config["aggregation"] == "seq_mean_token_mean"


def test_one_step_equals_the_method_loss_by_hand():
    """μ = 1: one grpo_train step is sample → reward → rl.method_loss → clipped AdamW step."""
    m1 = _model(torch.float64)
    m2 = copy.deepcopy(m1)
    _train(m1, steps=1, method="RLOO", lr=1e-2)
    gen = pg.make_generator(1)
    prob = TASK.sample(4, gen).repeat_interleave(4)
    s = gpt.sample(m2, prob.prompts, TASK.max_new_tokens, gen)
    R = TASK.reward(s.tokens, prob.targets, partial=True, dtype=torch.float64)
    with torch.no_grad():
        old = gpt.logprobs(m2, s.tokens)
    opt = torch.optim.AdamW(m2.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.0)
    loss, _ = rl.method_loss("RLOO", gpt.logprobs(m2, s.tokens), old, R, s.mask, 4)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(m2.parameters(), 1.0)
    opt.step()
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p1, p2, rtol=0, atol=1e-12)
    assert any(not torch.equal(p, q) for p, q in zip(m1.parameters(), _model(torch.float64).parameters()))


def test_deterministic_given_the_generator():
    h1, h2 = _train(_model(), steps=3, epochs_per_batch=2), _train(_model(), steps=3, epochs_per_batch=2)
    for name in METRICS:
        if name != "seconds":
            assert torch.equal(getattr(h1, name), getattr(h2, name)), name


@pytest.mark.parametrize("kw", [
    dict(method="GRPO", beta=0.1),
    dict(method="GRPO", kl="k1_in_reward", beta=0.1),
    dict(method="GRPO", kl="k2_loss", beta=0.1),
    dict(method="Dr. GRPO"),
    dict(method="REINFORCE++-baseline", eps_high=0.28),
    dict(method="GRPO", advantage="rloo", loss="importance_weighted", aggregation="token_mean"),
    dict(minibatches=2, epochs_per_batch=2),
    dict(temperature=0.7, max_grad_norm=None, partial_reward=False),
])
def test_method_and_option_variants_run(kw):
    h = _train(_model(), **kw)
    assert h.steps == 2 and bool(torch.isfinite(h.loss).all())
    for k in ("advantage", "policy_loss", "aggregation", "kl"):
        assert k in h.config


def test_kl_in_reward_changes_the_update_and_beta_zero_does_not():
    base = _model()
    plain = _train(copy.deepcopy(base), steps=3)
    zero = _train(copy.deepcopy(base), steps=3, kl="k1_in_reward", beta=0.0)
    shaped = _train(copy.deepcopy(base), steps=3, kl="k1_in_reward", beta=1.0)
    assert torch.equal(plain.loss, zero.loss)
    assert not torch.equal(plain.loss, shaped.loss)


def test_stop_at_and_custom_reference():
    model = _model()
    ref = copy.deepcopy(model)
    h = _train(model, steps=5, stop_at=0.0, ref_model=ref)
    assert h.steps == 1                                          # any reward ≥ 0
    assert all(not p.requires_grad for p in ref.parameters())
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtypes(dtype):
    model = _model(dtype)
    h = _train(model, steps=2, epochs_per_batch=2, method="GRPO", beta=0.04)
    assert bool(torch.isfinite(h.loss).all()) and bool(torch.isfinite(h.kl_ref).all())
    assert next(model.parameters()).dtype == dtype
    assert bool((h.first_epoch_ratio_error == 0).all())


def test_bad_inputs():
    model = _model()
    with pytest.raises(ValueError, match="steps"):
        _train(model, steps=0)
    with pytest.raises(ValueError, match="group_size"):
        _train(model, group_size=1)
    with pytest.raises(ValueError, match="minibatches"):
        _train(model, minibatches=3)
    with pytest.raises(ValueError, match="eps"):
        _train(model, eps_low=1.5)
    with pytest.raises(ValueError, match="lr"):
        _train(model, lr=-1.0)
    with pytest.raises(ValueError, match="beta"):
        _train(model, kl="none", beta=0.1)                       # no KL term: beta must be 0
    with pytest.raises(ValueError, match="kl_penalty"):
        _train(model, kl="kl_penalty", beta=0.1)
    with pytest.raises(ValueError, match="method"):
        _train(model, method="no such method")
    with pytest.raises(ValueError, match="advantage"):
        _train(model, advantage="reward_to_go")
    with pytest.raises(ValueError, match="ref_model"):
        _train(model, ref_model=model)
    with pytest.raises(ValueError, match="model"):
        grpo_train(lambda x: x, TASK, steps=1, prompts_per_step=2, group_size=2,
                   generator=pg.make_generator(0), progress=False)
    with pytest.raises(ValueError, match="task"):
        grpo_train(model, "reverse", steps=1, prompts_per_step=2, group_size=2,
                   generator=pg.make_generator(0), progress=False)
    with pytest.raises(ValueError, match="generator"):
        grpo_train(model, TASK, steps=1, prompts_per_step=2, group_size=2, generator=0,
                   progress=False)
    with pytest.raises(ValueError, match="meta"):
        _train(_model().to("meta"))


def test_history_helpers():
    r = torch.tensor([0.1, 0.5, 0.9, 0.9, 1.0], dtype=torch.float64)
    z = torch.zeros(5, dtype=torch.float64)
    h = GRPOHistory(reward=r, **{n: z for n in METRICS if n not in ("reward", "seconds")},
                    seconds=torch.arange(1.0, 6.0, dtype=torch.float64))
    torch.testing.assert_close(h.smoothed("reward", 2), torch.tensor([0.1, 0.3, 0.7, 0.9, 0.95],
                                                                     dtype=torch.float64))
    assert h.first_step(0.9, window=2) == 3 and h.time_to(0.9, window=2) == 4.0
    assert h.first_step(0.9, window=1) == 2
    assert h.first_step(2.0) is None and h.time_to(2.0) is None
    assert set(h.as_dict()) == set(METRICS)
    with pytest.raises(ValueError, match="name"):
        h.smoothed("nope")
    with pytest.raises(ValueError, match="window"):
        h.smoothed("reward", 0)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=12), st.integers(1, 6))
def test_smoothed_is_the_trailing_mean(xs, window):
    x = torch.tensor(xs, dtype=torch.float64)
    z = torch.zeros_like(x)
    h = GRPOHistory(reward=x, **{n: z for n in METRICS if n != "reward"})
    want = torch.stack([x[max(0, k - window + 1):k + 1].mean() for k in range(len(xs))])
    torch.testing.assert_close(h.smoothed("reward", window), want, rtol=0, atol=1e-12)


def test_grpo_improves_a_tiny_task():
    """From a briefly pretrained model, ten GRPO steps raise the success rate clearly."""
    task = tasks.Reverse(min_len=1, max_len=3, letters="abc")
    model = gpt.GPT(tasks.policy_config(task), pg.make_generator(4))
    tasks.pretrain(model, task, steps=60, batch_size=32, lr=1e-2, generator=pg.make_generator(4),
                   progress=False, noise=0.3)
    before = tasks.success_rate(model, task, 512, pg.make_generator(5))
    h = grpo_train(model, task, steps=10, prompts_per_step=8, group_size=8, lr=3e-3,
                   epochs_per_batch=2, generator=pg.make_generator(1), progress=False)
    after = tasks.success_rate(model, task, 512, pg.make_generator(5))
    assert after > before + 0.25, (before, after)
    assert float(h.reward[-3:].mean()) > float(h.reward[:3].mean()) + 0.2
