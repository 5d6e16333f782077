"""Unit tests for pgbook.tasks: prompt generators, verifiable rewards, pretraining."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgbook import make_generator, registry
from pgbook.worlds import gpt, tasks
from pgbook.worlds.gpt import BOS, EOS, PAD
from pgbook.worlds.tasks import Add, Problems, Reverse, SortDigits

ALL = [Reverse(), SortDigits(), Add(), Reverse(1, 3, "xy"), SortDigits(3, 3, 4), Add(1)]


def _strings(task, prob):
    tok = task.tokenizer
    return tok.decode_batch(prob.prompts), tok.decode_batch(prob.targets)


@pytest.mark.parametrize("task", ALL, ids=repr)
def test_vectorised_problems_match_string_reference(task):
    prob = task.sample(300, make_generator(0))
    P, N = task.prompt_len, task.max_new_tokens
    assert prob.prompts.shape == (300, P) and prob.targets.shape == (300, N)
    assert prob.prompts.dtype == prob.targets.dtype == torch.long
    prompts, answers = _strings(task, prob)
    for p, a in zip(prompts, answers):
        assert p.endswith(task.sep) and a == task.solve(p) and task.check(p, a)
    # layout: BOS right after the left padding, separator last; answer, EOS, then PAD
    first = (prob.prompts != PAD).float().argmax(1)
    assert (prob.prompts.gather(1, first[:, None]) == BOS).all()
    assert (prob.prompts[:, -1] == task.tokenizer.stoi[task.sep]).all()
    n_eos = (prob.targets == EOS).sum(1)
    assert (n_eos == 1).all()
    eos_at = (prob.targets == EOS).float().argmax(1)
    assert (prob.targets[torch.arange(N)[None] > eos_at[:, None]] == PAD).all()


def test_problem_lengths_cover_the_range():
    task = Reverse(2, 6)
    prob = task.sample(500, make_generator(1))
    lens = (prob.targets != PAD).sum(1) - 1
    assert set(lens.tolist()) == {2, 3, 4, 5, 6}
    add = Add(2).sample(2000, make_generator(1))
    alen = (add.targets != PAD).sum(1) - 1
    assert set(alen.tolist()) == {1, 2, 3}  # e.g. 0+3, 12+30, 57+68: carries happen


def test_problems_are_deterministic_and_repeat():
    a = Reverse().sample(16, make_generator(5))
    b = Reverse().sample(16, make_generator(5))
    assert torch.equal(a.prompts, b.prompts) and torch.equal(a.targets, b.targets)
    g = a.repeat_interleave(3)
    assert g.prompts.shape == (48, 8)
    assert torch.equal(g.prompts[3:6], a.prompts[1:2].expand(3, -1))
    with pytest.raises(ValueError):
        a.repeat_interleave(0)


def test_rewards_exact_and_partial():
    task = Reverse()
    prob = task.sample(64, make_generator(2))
    full = torch.cat([prob.prompts, prob.targets], 1)
    assert (task.reward(full, prob.targets) == 1).all()
    assert (task.reward(prob.targets, prob.targets, partial=True) == 1).all()
    wrong = prob.targets.clone()
    wrong[:, 0] = 3 + (wrong[:, 0] - 3 + 1) % 5          # first letter always wrong
    assert (task.reward(wrong, prob.targets) == 0).all()
    k = (prob.targets != PAD).sum(1).double()
    torch.testing.assert_close(task.reward(wrong, prob.targets, partial=True, dtype=torch.float64),
                               (k - 1) / k)
    no_eos = prob.targets.clone()
    no_eos[no_eos == EOS] = PAD                            # never stops: wrong
    assert (task.reward(no_eos, prob.targets) == 0).all()
    r = task.reward(wrong, prob.targets, dtype=torch.bfloat16)
    assert r.dtype == torch.bfloat16


@pytest.mark.parametrize("task", ALL[:3], ids=repr)
def test_reward_matches_string_check(task):
    """Corrupted responses laid out as sampling writes them (PAD after the first EOS)."""
    g = make_generator(3)
    prob = task.sample(400, g)
    V = task.tokenizer.vocab_size
    noise = torch.randint(2, V, prob.targets.shape, generator=g)      # letters or EOS
    y = torch.where(torch.rand(prob.targets.shape, generator=g) < 0.15, noise, prob.targets)
    y[:5] = torch.randint(3, V, (5, y.shape[1]), generator=g)          # never stops
    after_eos = (torch.cumsum((y == EOS).long(), 1) - (y == EOS).long()) > 0
    y = torch.where(after_eos, torch.full_like(y, PAD), y)
    r = task.reward(y, prob.targets)
    tok = task.tokenizer
    has_eos = (y == EOS).any(1)
    by_string = [bool(e) and task.check(tok.decode(p), tok.decode(row))
                 for p, row, e in zip(prob.prompts, y, has_eos)]
    assert r.tolist() == [float(b) for b in by_string]
    assert 0.1 < r.mean() < 0.9  # both outcomes occur, so the comparison has teeth
    part = task.reward(y, prob.targets, partial=True)
    assert ((part == 1) == (r == 1)).all() and (part[r == 0] < 1).all()


def test_registered_rewards_and_meta():
    assert registry.get("reward", "exact_match").side == "reward"
    assert registry.get("reward", "partial_credit").side == "reward"
    y = torch.zeros(5, 7, dtype=torch.long, device="meta")
    assert tasks.exact_match(y, y).shape == (5,)
    assert tasks.partial_credit(y, y).shape == (5,)


@pytest.mark.parametrize("bad", [
    lambda t, p: t.reward(p.targets[:, :3], p.targets),
    lambda t, p: t.reward(p.targets, p.targets[:3]),
    lambda t, p: t.reward(p.targets, p.targets.to("meta")),
    lambda t, p: t.sample(0, make_generator(0)),
    lambda t, p: t.sample(3, 0),
    lambda t, p: t.demonstrations(p, noise=1.5, generator=make_generator(0)),
    lambda t, p: t.demonstrations(p, noise=-0.1, generator=make_generator(0)),
    lambda t, p: t.demonstrations(p, noise=0.3),
    lambda t, p: tasks.exact_match(p.targets[0], p.targets[0]),
])
def test_bad_input(bad):
    t = Reverse()
    with pytest.raises(ValueError):
        bad(t, t.sample(4, make_generator(0)))


@pytest.mark.parametrize("kw", [{"min_len": 4, "max_len": 3}, {"min_len": 0},
                                {"letters": "aa"}])
def test_bad_task_options(kw):
    with pytest.raises(ValueError):
        Reverse(**kw)
    with pytest.raises(ValueError):
        SortDigits(n_digits=11)
    with pytest.raises(ValueError):
        Add(0)


def test_demonstrations_noise_rate():
    task = Reverse(letters="abcde")
    prob = task.sample(4000, make_generator(6))
    seq, mask = task.demonstrations(prob)
    assert torch.equal(seq, torch.cat([prob.prompts, prob.targets], 1))
    assert torch.equal(mask[:, task.prompt_len:], (prob.targets != PAD).long())
    assert (mask[:, :task.prompt_len] == 0).all()
    q = 0.3
    noisy, _ = task.demonstrations(prob, q, make_generator(7))
    ans = (prob.targets != PAD) & (prob.targets != EOS)
    changed = (noisy[:, task.prompt_len:] != prob.targets)[ans].double()
    p = q * (1 - 1 / 5)                                   # replaced by a different letter
    se = (p * (1 - p) / changed.numel()) ** 0.5
    assert abs(changed.mean().item() - p) < 5 * se
    assert torch.equal(noisy[:, task.prompt_len:][~ans], prob.targets[~ans])   # EOS, PAD kept
    assert (noisy[:, task.prompt_len:][ans] >= 3).all()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10**6), lo=st.integers(1, 4), extra=st.integers(0, 3))
def test_reverse_property(seed, lo, extra):
    task = Reverse(lo, lo + extra, "pqr")
    prob = task.sample(20, make_generator(seed))
    prompts, answers = _strings(task, prob)
    assert all(a == p[:-1][::-1] and lo <= len(a) <= lo + extra for p, a in zip(prompts, answers))


def test_pretrain_and_success_rate():
    task = Reverse()
    model = gpt.GPT(tasks.policy_config(task), make_generator(0))
    g = make_generator(9)
    before = tasks.success_rate(model, task, 200, g)
    losses = tasks.pretrain(model, task, 40, 16, 1e-2, make_generator(1), progress=False,
                            noise=0.25)
    assert losses.shape == (40,) and torch.isfinite(losses).all()
    assert losses[-10:].mean() < losses[:10].mean() - 0.5
    assert before == 0.0
    greedy = tasks.success_rate(model, task, 200, make_generator(2), temperature=0.0)
    assert 0.0 <= greedy <= 1.0
    with pytest.raises(ValueError):
        tasks.pretrain(model, task, 0, 32, 1e-2, make_generator(1))
    with pytest.raises(ValueError):
        tasks.pretrain(model, task, 5, 32, -1.0, make_generator(1))


def test_policy_config_overrides():
    task = Add()
    cfg = tasks.policy_config(task, n_layer=2, n_embd=48)
    assert cfg.vocab_size == task.tokenizer.vocab_size == 3 + 11 + 1
    assert cfg.block_size == task.prompt_len + task.max_new_tokens
    assert (cfg.n_layer, cfg.n_embd) == (2, 48)
    assert isinstance(Problems(*task.sample(2, make_generator(0))), Problems)
