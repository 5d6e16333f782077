"""Unit tests for pgbook.train.ppo_llm: PPO with a value head on the tiny GPT."""

import copy

import pytest
import torch

import pgbook as pg
from pgbook import methods as rl
from pgbook.reward.critic import gae, value_loss
from pgbook.train.ppo_llm import (
    PPO_METRICS,
    ValueModel,
    compare_ppo_grpo,
    hidden_states,
    ppo_train,
    state_bytes,
    update_activation_bytes,
)
from pgbook.worlds import gpt, tasks

TASK = tasks.Reverse(min_len=1, max_len=2, letters="ab")


def _model(dtype=torch.float32, seed=0):
    return gpt.GPT(tasks.policy_config(TASK, n_embd=16), pg.make_generator(seed)).to(dtype)


def _train(model, steps=2, **kw):
    opts = dict(steps=steps, batch_size=16, generator=pg.make_generator(1), progress=False,
                partial_reward=True)
    opts.update(kw)
    return ppo_train(model, TASK, **opts)


def test_value_model_is_causal_aligned_and_starts_at_zero():
    pol = _model()
    vm = ValueModel.from_policy(pol)
    idx = TASK.sample(3, pg.make_generator(0)).prompts
    torch.testing.assert_close(hidden_states(pol, idx) @ pol.wte.weight.T, pol(idx), rtol=0, atol=1e-6)
    assert torch.equal(vm(idx), torch.zeros(idx.shape))               # zero head: V ≡ 0
    torch.nn.init.normal_(vm.v_head.weight, generator=pg.make_generator(1))
    v = vm(idx)
    idx2 = idx.clone()
    idx2[:, -1] = 3 + (idx2[:, -1] - 2) % 2
    assert torch.equal(vm(idx2)[:, :-1], v[:, :-1])                   # position t sees tokens ≤ t
    # the critic is a copy: training it does not touch the policy
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(vm.parameters(), pol.parameters()))
    n_body = sum(p.numel() for p in pol.parameters())
    assert sum(p.numel() for p in vm.parameters()) == n_body + pol.config.n_embd + 1


def test_records_every_metric_and_counts():
    model = _model()
    h = _train(model, steps=3, epochs_per_batch=2, minibatches=2, lam=0.95)
    assert h.steps == 3
    for name in PPO_METRICS:
        x = getattr(h, name)
        assert x.shape == (3,) and x.dtype == torch.float64 and bool(torch.isfinite(x).all())
    assert float(h.kl_ref[0]) == 0.0 and float(h.kl_ref[1:].min()) > 0
    n = sum(p.numel() for p in model.parameters())
    assert h.config["n_params"] == {"policy": n, "critic": n + 17, "trained": 2 * n + 17}
    assert h.config["state_bytes"] == (2 * n + 17) * 4 * 4              # params, grads, 2 Adam slots
    assert h.config["method"] == "PPO (value head, GAE)" and h.config["advantage"] == "gae"
    assert isinstance(h.value_model, ValueModel)


def test_one_step_equals_the_pieces_by_hand():
    """μ = 1: sample → outcome reward on the last token → values → gae (whitened) →
    PPO-clip token mean + clipped value loss → two AdamW steps."""
    m1 = _model(torch.float64)
    m2 = copy.deepcopy(m1)
    v2 = ValueModel.from_policy(m2)
    _train(m1, steps=1, lr=1e-2, lam=0.9)
    gen = pg.make_generator(1)
    prob = TASK.sample(16, gen)
    s = gpt.sample(m2, prob.prompts, TASK.max_new_tokens, gen)
    R = TASK.reward(s.tokens, prob.targets, partial=True, dtype=torch.float64)
    mask = s.mask
    with torch.no_grad():
        old = gpt.logprobs(m2, s.tokens)
        v_old = torch.cat([torch.zeros(16, 1, dtype=torch.float64), v2(s.tokens[:, :-1])], 1) * mask
    last = (mask * torch.arange(mask.shape[1])).argmax(1)
    r = torch.zeros_like(mask)
    r[torch.arange(16), last] = R
    adv, ret = gae(r, v_old, mask, 1.0, 0.9, whiten=True)
    opt = torch.optim.AdamW(m2.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.0)
    vopt = torch.optim.AdamW(v2.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.0)
    pl, _ = rl.policy_loss(gpt.logprobs(m2, s.tokens), old, adv, mask, loss="ppo_clip",
                           aggregation="token_mean", eps_low=0.2)
    v = torch.cat([torch.zeros(16, 1, dtype=torch.float64), v2(s.tokens[:, :-1])], 1)
    vl, _ = value_loss(v, ret, mask, old_values=v_old, eps_value=0.2)
    (pl + vl).backward()
    torch.nn.utils.clip_grad_norm_(m2.parameters(), 1.0)
    torch.nn.utils.clip_grad_norm_(v2.parameters(), 1.0)
    opt.step()
    vopt.step()
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p1, p2, rtol=0, atol=1e-12)


def test_deterministic_and_the_shared_head():
    h1 = _train(_model(), steps=2)
    h2 = _train(_model(), steps=2)
    for name in PPO_METRICS:
        if name != "seconds":
            assert torch.equal(getattr(h1, name), getattr(h2, name)), name
    model = _model()
    hs = _train(model, steps=2, critic="shared", vf_coef=0.5)
    n = sum(p.numel() for p in model.parameters())
    assert hs.config["n_params"] == {"policy": n, "critic": 17, "trained": n + 17}
    assert hs.config["state_bytes"] == (n + 17) * 16


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtypes(dtype):
    model = _model(dtype)
    h = _train(model, steps=2, kl="k1_in_reward", beta=0.05, lam=0.95)
    assert bool(torch.isfinite(h.value_loss).all()) and next(model.parameters()).dtype == dtype
    assert next(h.value_model.parameters()).dtype == dtype


def test_ppo_learns_a_tiny_task():
    """A few seconds: the success rate of an untrained GPT on 1–2 letter reversal over {a, b}
    rises well above its start, and the critic learns to explain the returns."""
    torch.manual_seed(0)
    model = _model()
    start = tasks.success_rate(model, TASK, 512, pg.make_generator(5))
    h = ppo_train(model, TASK, steps=40, batch_size=64, generator=pg.make_generator(2),
                  lr=1e-2, progress=False, lam=0.95)
    end = tasks.success_rate(model, TASK, 512, pg.make_generator(5))
    assert end > start + 0.3 and float(h.reward[-5:].mean()) > float(h.reward[:5].mean()) + 0.3
    # on this small task the critic does learn: it explains much of the returns' variance
    assert float(h.explained_variance[-5:].mean()) > 0.4


def test_compare_same_budget_and_memory():
    model = _model()
    before = copy.deepcopy(model.state_dict())
    res = compare_ppo_grpo(TASK, model, steps=2, responses_per_step=16, group_size=4, seed=0,
                           progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # untouched
    ppo, grpo = res["PPO"], res["GRPO"]
    assert ppo["reward"].shape == grpo["reward"].shape == (2,)
    assert ppo["history"].config["batch_size"] == 16
    assert grpo["history"].config["prompts_per_step"] * grpo["history"].config["group_size"] == 16
    assert ppo["n_params"]["trained"] == 2 * grpo["n_params"]["trained"] + 17
    assert ppo["state_bytes"] > 2 * grpo["state_bytes"]
    assert 1.8 < ppo["activation_bytes"] / grpo["activation_bytes"] < 2.2
    seq, mask = TASK.demonstrations(TASK.sample(4, pg.make_generator(0)))
    assert update_activation_bytes(model, seq, mask.float()) > 0
    assert state_bytes(model) == sum(p.numel() for p in model.parameters()) * 16


def test_bad_inputs():
    model = _model()
    with pytest.raises(ValueError, match="critic: expected"):
        _train(model, critic="none")
    with pytest.raises(ValueError, match="minibatches"):
        _train(model, minibatches=3)
    with pytest.raises(ValueError, match="lam"):
        _train(model, lam=1.5)
    with pytest.raises(ValueError, match="beta"):
        _train(model, beta=0.1)
    with pytest.raises(ValueError, match="kl: expected"):
        _train(model, kl="k3_loss")
    with pytest.raises(ValueError, match="method: expected a method whose advantage is 'gae'"):
        _train(model, method="GRPO")
    with pytest.raises(ValueError, match="value_model: a shared"):
        _train(model, critic="shared", value_model=ValueModel.from_policy(model))
    with pytest.raises(ValueError, match="eps_low"):
        _train(model, eps_low=1.0)
    with pytest.raises(ValueError, match="task"):
        ppo_train(model, "reverse", steps=1, batch_size=4, generator=pg.make_generator(0))
    with pytest.raises(ValueError, match="body"):
        ValueModel(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="group_size"):
        compare_ppo_grpo(TASK, model, steps=1, responses_per_step=10, group_size=4)


def test_activation_bytes_counts_what_the_graph_keeps():
    """Saved tensors of a graph dropped inside the block do not count, and the count does
    not depend on which addresses the allocator reuses."""
    from pgbook.train.ppo_llm import activation_bytes

    x = torch.randn(100, 100, requires_grad=True)
    with activation_bytes() as kept:
        y = (x * 2).exp()          # exp saves its output: 100 × 100 float32
        z = (x * 3).sin().sum()    # sin saves its input, but this graph is dropped
        del z
    assert kept.bytes == 100 * 100 * 4
    assert y.requires_grad
