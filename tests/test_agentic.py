"""Chapter 15's library: environments, multi-turn rollouts, the enumerable tool tree, turn-level
credit, the policy-token mask and the agentic trainers."""

from __future__ import annotations

import copy
import math
import random

import pytest
import torch

import pgbook as pg
from pgbook.exact import agentic as xa
from pgbook.reward import turns as rt
from pgbook.reward.advantages import grpo_advantage, grpo_mean_advantage
from pgbook.train import agentic as ta
from pgbook.trajectory import agentic as tja
from pgbook.worlds.agentic import LookupWorld, MarkovMLPPolicy, rollout
from pgbook.worlds.envs import (
    BAD_ACTION,
    BUDGET,
    OUTCOMES,
    PARSE_ERROR,
    RIGHT,
    TOOL,
    WRONG,
    LookupEnv,
)
from pgbook.worlds.gpt import EOS, GPT, PAD, logprobs
from pgbook.worlds.seqlm import MLPPolicy


# -- the lookup environment ------------------------------------------------------------------
def _texts(env, n, rng):
    """Random turns over the environment's characters (and EOS), of 1 … A tokens."""
    chars = env.tokenizer.chars + "$"
    return ["".join(rng.choice(chars) for _ in range(rng.randint(1, env.action_len))) for _ in range(n)]


@pytest.mark.parametrize("digits", [1, 2])
def test_lookup_step_equals_string_reference(digits):
    env = LookupEnv(n_keys=4, digits=digits, max_turns=3, call_reward=0.25, invalid_penalty=0.1)
    rng = random.Random(digits)
    keys = env.keys
    n = 300
    asked = "".join(rng.choice(keys) for _ in range(n))
    stores = ["".join(rng.choice("0123456789") for _ in range(env.n_keys * digits)) for _ in range(n)]
    # a mix of calls, answers and noise
    texts = []
    for i in range(n):
        r = rng.random()
        if r < 0.25:
            texts.append(f"[{rng.choice(keys)}]")
        elif r < 0.5:
            k = keys.index(asked[i])
            v = stores[i][k * digits:(k + 1) * digits] if rng.random() < 0.5 else \
                "".join(rng.choice("0123456789") for _ in range(digits))
            texts.append(v + "$")
        else:
            texts.extend(_texts(env, 1, rng))
    for turn in range(3):
        state = env.state_of(asked, stores)
        for _ in range(turn):     # advance the budget with calls that keep every episode live
            env.step(state, *env.encode_turns([f"[{keys[0]}]"] * n))
        out = env.step(state, *env.encode_turns(texts))
        for i, t in enumerate(texts):
            store = {k: stores[i][j * digits:(j + 1) * digits] for j, k in enumerate(keys)}
            obs, rew, done, code = env.step_text("^" + asked[i] + "?", t, turn, store)
            got_obs = env.tokenizer.decode(out.obs[i, :out.obs_len[i]])
            assert (got_obs, round(out.reward[i].item(), 6), bool(out.done[i]), int(out.outcome[i])) == \
                (obs, round(rew, 6), done, code), (turn, t)


def test_lookup_outcomes_and_budget():
    env = LookupEnv(n_keys=5, digits=1, max_turns=3, invalid_penalty=0.5)
    st = env.state_of("ccccc", ["38150"] * 5)
    out = env.step(st, *env.encode_turns(["[c]", "1$", "8$", "[7]", "c?a"]))
    assert out.outcome.tolist() == [TOOL, RIGHT, WRONG, PARSE_ERROR, BAD_ACTION]
    assert out.reward.tolist() == [0.0, 1.0, 0.0, -0.5, -0.5]
    assert out.done.tolist() == [False, True, True, False, False]
    # the finished episodes are left alone on the next turn
    out2 = env.step(st, *env.encode_turns(["[c]"] * 5))
    assert out2.outcome.tolist() == [TOOL, -1, -1, TOOL, TOOL] and out2.reward[1:3].tolist() == [0, 0]
    out3 = env.step(st, *env.encode_turns(["[c]"] * 5))
    assert out3.outcome.tolist() == [BUDGET, -1, -1, BUDGET, BUDGET] and bool(out3.done.all())
    with pytest.raises(ValueError, match="budget"):
        env.step(st, *env.encode_turns(["1$"] * 5))
    assert len(OUTCOMES) == 6


def test_lookup_bad_inputs():
    env = LookupEnv()
    st = env.state_of("ab", ["1234567890", "0987654321"])
    a, ln = env.encode_turns(["[a]", "12$"])
    with pytest.raises(ValueError, match="rows"):
        env.step(st, a[:1], ln[:1])
    with pytest.raises(ValueError, match="int64"):
        env.step(st, a.float(), ln)
    with pytest.raises(ValueError, match="token ids"):
        env.step(st, a - 5, ln)
    with pytest.raises(ValueError, match="token ids"):
        env.step(st, a + 100, ln)
    with pytest.raises(ValueError, match="lengths"):
        env.step(st, a, ln + 5)
    with pytest.raises(ValueError, match="columns"):
        env.step(st, torch.cat([a, a], 1), ln)
    with pytest.raises(ValueError, match="meta"):
        env.step(st, a.to("meta"), ln)
    with pytest.raises(ValueError, match="device"):
        env.step(st, a.to("meta"), ln.to("meta"))
    with pytest.raises(ValueError, match="n_keys"):
        LookupEnv(n_keys=30)
    with pytest.raises(ValueError, match="digits"):
        LookupEnv(digits=0)
    with pytest.raises(ValueError, match="invalid_penalty"):
        LookupEnv(invalid_penalty=-1)
    with pytest.raises(ValueError, match="stores"):
        env.state_of("a", ["12"])
    with pytest.raises(ValueError, match="asked"):
        env.state_of("z", ["1234567890"])
    with pytest.raises(ValueError, match="tokens per turn"):
        env.encode_turns(["[abc]"])
    with pytest.raises(ValueError, match="generator"):
        env.reset(3, None)
    with pytest.raises(ValueError, match="p_tool"):
        env.demonstrations(4, pg.make_generator(0), p_tool=1.5)


def test_lookup_reset_and_demonstrations():
    env = LookupEnv(n_keys=5, digits=2)
    st = env.reset(64, pg.make_generator(0))
    assert st.prompts.shape == (64, 3) and st.targets.shape == (64, 3)
    key = st.prompts[:, 1] - env.key0
    assert torch.equal(st.targets[:, :2], st.store[torch.arange(64), key])
    assert bool((st.targets[:, 2] == EOS).all())
    again = env.reset(64, pg.make_generator(0))
    assert torch.equal(st.store, again.store) and torch.equal(st.prompts, again.prompts)
    tok, pm, om = env.demonstrations(256, pg.make_generator(1), p_tool=0.5, noise=0.0)
    assert tok.shape == pm.shape == om.shape == (256, env.max_len)
    assert not bool((pm.bool() & om.bool()).any()) and bool((pm.sum(1) > 0).all())
    # without noise, a demonstration that calls the tool answers with the tool's reply, which is the value asked
    called = tok[:, 3] == env.open_id
    assert 0.35 < called.float().mean() < 0.65
    reply = tok[called][:, 7:9]
    answer = tok[called][:, 9:11]
    assert torch.equal(reply, answer)
    assert bool((om[called][:, 6:9] == 1).all()) and bool((tok[called][:, 6] == env.reply_id).all())


# -- rollouts ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def agent():
    env = LookupEnv(n_keys=5, digits=1)
    model, _ = ta.pretrain_agent(env, seed=0, steps=60, batch_size=32, progress=False, p_tool=0.5)
    return env, model


def _replay(env, r, i):
    """Split row i of a rollout into its turns and replay them through step_text."""
    T = env.tokenizer
    asked = T.decode(r.tokens[i, :3])
    outcomes, rewards = [], []
    for k in range(env.max_turns):
        pos = ((r.turn_ids[i] == k) & (r.policy_mask[i] > 0)).nonzero().flatten()
        if pos.numel() == 0:
            break
        text = "".join("$" if t == EOS else T.itos[t] for t in r.tokens[i, pos].tolist())
        obs_pos = ((r.turn_ids[i] == k) & (r.obs_mask[i] > 0)).nonzero().flatten()
        obs_text = T.decode(r.tokens[i, obs_pos])
        outcomes.append((text, obs_text))
        rewards.append(r.turn_rewards[i, k].item())
    return asked, outcomes, rewards


def test_rollout_masks_logprobs_and_replay(agent):
    env, model = agent
    g = pg.make_generator(3)
    state = env.reset(8, g).repeat_interleave(4)
    store = state.store.clone()
    r = rollout(model, env, state, g)
    B, W = r.tokens.shape
    assert W == env.max_len and B == 32
    pm, om = r.policy_mask > 0, r.obs_mask > 0
    assert not bool((pm & om).any()) and not bool(pm[:, :env.prompt_len].any())
    assert bool(((r.turn_ids >= 0) == (pm | om)).all())
    assert bool((r.logprobs[~pm] == 0).all())
    # the recorded log-probs are the model's on the policy's tokens
    lp = logprobs(model, r.tokens)
    assert (lp - r.logprobs)[pm].abs().max() < 1e-5
    # every row's turns, replayed on strings, give the same observations and rewards
    for i in range(B):
        asked, turns_, rewards = _replay(env, r, i)
        st = {k: "".join(env.tokenizer.itos[t] for t in store[i, j].tolist()) for j, k in enumerate(env.keys)}
        for k, (text, obs_text) in enumerate(turns_):
            obs, rew, _done, code = env.step_text(asked, text, k, st)
            assert obs == obs_text and abs(rew - rewards[k]) < 1e-6 and code == r.outcomes[i, k].item()
    # groups share their task
    assert torch.equal(store.view(8, 4, *store.shape[1:])[:, 0], store.view(8, 4, *store.shape[1:])[:, 3])


def test_rollout_without_tool_greedy_and_dtypes(agent):
    env, model = agent
    g = pg.make_generator(4)
    r = rollout(model, env, env.reset(16, g), g, tool=False)
    assert bool((r.obs_mask == 0).all())
    a = rollout(model, env, env.reset(16, pg.make_generator(5)), pg.make_generator(6), temperature=0.0)
    b = rollout(model, env, env.reset(16, pg.make_generator(5)), pg.make_generator(7), temperature=0.0)
    assert torch.equal(a.tokens, b.tokens)                                   # greedy: no randomness
    m64 = copy.deepcopy(model).double()
    r64 = rollout(m64, env, env.reset(8, pg.make_generator(8)), pg.make_generator(8))
    assert r64.logprobs.dtype == torch.float64
    assert (logprobs(m64, r64.tokens) - r64.logprobs)[r64.policy_mask > 0].abs().max() < 1e-12
    mbf = copy.deepcopy(model).to(torch.bfloat16)
    rbf = rollout(mbf, env, env.reset(8, pg.make_generator(9)), pg.make_generator(9))
    assert rbf.logprobs.dtype == torch.float32 and bool(torch.isfinite(rbf.logprobs).all())


def test_rollout_bad_inputs(agent):
    env, model = agent
    short = GPT(ta.agent_config(env, block_size=5))
    with pytest.raises(ValueError, match="block_size"):
        rollout(short, env, env.reset(2, pg.make_generator(0)), pg.make_generator(0))
    st = env.reset(2, pg.make_generator(0))
    st.prompts = st.prompts.to("meta")
    with pytest.raises(ValueError, match="meta"):
        rollout(model, env, st, pg.make_generator(0))
    with pytest.raises(ValueError, match="generator"):
        rollout(model, env, env.reset(2, pg.make_generator(0)), None)
    with pytest.raises(ValueError, match="temperature"):
        rollout(model, env, env.reset(2, pg.make_generator(0)), pg.make_generator(0), temperature=-1)


# -- the enumerable tree -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tree():
    world = LookupWorld(obs_len=2)
    policy = MarkovMLPPolicy(world.space, hidden=4)
    theta = policy.init(pg.make_generator(0), scale=0.7)
    return world, policy, theta


def test_tree_structure_and_probabilities(tree):
    world, policy, theta = tree
    ep = world.enumerate()
    p = xa.episode_probs(policy, theta, ep)
    assert abs(p.sum().item() - 1) < 1e-12
    assert abs(xa.episode_probs(policy, torch.zeros_like(theta), ep).sum().item() - 1) < 1e-12
    pm, om = ep.policy_mask > 0, ep.obs_mask > 0
    assert not bool((pm & om).any()) and bool((pm.sum(1) == ep.n_turns).all())
    assert bool(((ep.turn_ids >= 0) == (pm | om)).all())
    # the policy's tokens sit at the action columns; the tool's replies end with the value
    assert bool((pm.nonzero()[:, 1] % (1 + world.O) == 0).all())
    calls = ep.outcomes == 2
    assert bool((ep.anchors[:, 1:][calls[:, :-1]] >= 1).all())
    # env_logp: P(s) and the replies; rewards are outcome + penalties
    assert bool((ep.env_logp <= 1e-12).all())
    assert ep.rewards.max() == 1 and ep.rewards.min() >= -0.1 * world.K - 1e-12
    assert len(world.decode(ep.index(torch.arange(5)))) == 5


def test_markov_policy_equals_mlp_policy(tree):
    world, policy, theta = tree
    ep = world.enumerate()
    ref = MLPPolicy(world.space, hidden=4)
    a, b = policy.token_logprobs(theta, ep.x, ep.tokens), ref.token_logprobs(theta, ep.x, ep.tokens)
    assert (a - b).abs().max() < 1e-12
    lp32 = policy.token_logprobs(theta.float(), ep.x, ep.tokens)
    assert lp32.dtype == torch.float32 and (lp32.double() - a).abs().max() < 1e-5
    lpb = policy.token_logprobs(theta.to(torch.bfloat16), ep.x, ep.tokens)
    assert lpb.dtype == torch.float32 and (lpb.double() - a).abs().max() < 0.1
    meta = policy.token_logprobs(theta.to("meta"), ep.x.to("meta"), ep.tokens.to("meta"))
    assert meta.shape == ep.tokens.shape and meta.device.type == "meta"
    with pytest.raises(ValueError, match="theta"):
        policy.token_logprobs(theta[:-1], ep.x, ep.tokens)
    with pytest.raises(ValueError, match="tokens"):
        policy.token_logprobs(theta, ep.x, ep.tokens + 100)


def test_tree_sampling_groups_share_a_task(tree):
    world, policy, theta = tree
    ep = world.enumerate()
    p = xa.episode_probs(policy, theta, ep)
    idx = world.sample(p, 50, pg.make_generator(0), group_size=4)
    g = ep.groups[idx].view(50, 4)
    assert bool((g == g[:, :1]).all())
    # single draws follow p: the empirical mean reward is within 4 standard errors of J
    one = world.sample(p, 20000, pg.make_generator(1))
    R = ep.rewards[one]
    J = (p @ ep.rewards).item()
    assert abs(R.mean().item() - J) < 4 * R.std().item() / math.sqrt(20000)
    with pytest.raises(ValueError, match="probs"):
        world.sample(p[:-1], 3, pg.make_generator(0))


def test_lookup_world_bad_inputs():
    with pytest.raises(ValueError, match="n_values"):
        LookupWorld(n_values=1)
    with pytest.raises(ValueError, match="noise"):
        LookupWorld(noise=2.0)
    with pytest.raises(ValueError, match="value_probs"):
        LookupWorld(value_probs=torch.ones(1, 4, dtype=torch.float64) / 4)
    with pytest.raises(ValueError, match="value_probs"):
        LookupWorld(value_probs=torch.ones(1, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="rho"):
        LookupWorld(rho=torch.ones(2, dtype=torch.float64) / 2)
    with pytest.raises(ValueError, match="call_reward"):
        LookupWorld(call_reward=float("nan"))
    with pytest.raises(ValueError, match="p_tool"):
        LookupWorld().demonstrations(-0.1)


# -- exact analysis ------------------------------------------------------------------------------
def test_masked_estimator_is_exact_and_unmasked_is_biased(tree):
    world, policy, theta = tree
    ep = world.enumerate()
    g = xa.exact_gradient(policy, theta, ep)
    for credit in xa.CREDITS:
        w = xa.credit_weights(policy, theta, ep, credit)
        assert (xa.expected_gradient(policy, theta, ep, w) - g).norm() < 1e-12
        fused, J = xa.expected_update(policy, theta, ep, credit, "policy")
        assert (fused - g).norm() < 1e-12 and abs(J.item() - xa.exact_J(policy, theta, ep).item()) < 1e-14
        mean, var = xa.estimator_moments(policy, theta, ep, w)
        assert (mean - g).norm() < 1e-12 and var > 0
        unmasked, _ = xa.expected_update(policy, theta, ep, credit, "all")
        assert (unmasked - g).norm() > 0.1 * g.norm()
    # the bias is the advantage-weighted score of the tool's tokens, transcribed
    w = xa.credit_weights(policy, theta, ep, "outcome")
    bias = xa.expected_gradient(policy, theta, ep, w, ep.obs_mask)
    assert (xa.expected_update(policy, theta, ep, "outcome", "all")[0] - g - bias).norm() < 1e-12
    with pytest.raises(ValueError, match="credit"):
        xa.credit_weights(policy, theta, ep, "nope")
    with pytest.raises(ValueError, match="mask"):
        xa.expected_update(policy, theta, ep, "outcome", "tool")


def test_scores_estimates_and_information(tree):
    world, policy, theta = tree
    ep = world.enumerate()
    S = xa.per_turn_scores(policy, theta, ep)
    ones = torch.ones_like(ep.policy_mask)
    assert (S.sum(1) - xa.per_episode_gradients(policy, theta, ep, ones)).abs().max() < 1e-12
    p = xa.episode_probs(policy, theta, ep)
    idx = world.sample(p, 12, pg.make_generator(2), 4).view(3, 16)
    A = torch.randn(3, 16, world.K, generator=pg.make_generator(3), dtype=torch.float64)
    ref = torch.einsum("mbk,mbkp->mp", A, S[idx]) / 16
    assert (xa.sampled_estimates(S, idx, A) - ref).abs().max() < 1e-12
    info = xa.answer_information(policy, theta, ep).item()
    assert 0 <= info <= math.log(world.S) + 1e-12
    rp = xa.reply_probability(policy, theta, world).item()
    assert 0 < rp < 1
    V, Va = xa.state_values(policy, theta, ep)
    assert V.shape == ep.rewards.shape and Va.shape == ep.turn_rewards.shape


def test_stale_gradient_corrections(tree):
    world, policy, theta = tree
    ep = world.enumerate()
    g = xa.exact_gradient(policy, theta, ep)
    old = theta + 0.3 * torch.randn(theta.shape, generator=pg.make_generator(4), dtype=theta.dtype)
    assert (xa.stale_expected_gradient(policy, theta, theta, ep, "none") - g).norm() < 1e-12
    assert (xa.stale_expected_gradient(policy, theta, old, ep, "trajectory") - g).norm() < 1e-12
    per_turn = torch.stack([old, theta + 0.1, theta])
    assert (xa.stale_expected_gradient(policy, theta, per_turn, ep, "trajectory") - g).norm() < 1e-12
    assert (xa.stale_expected_gradient(policy, theta, old, ep, "none") - g).norm() > 1e-3
    assert (xa.stale_expected_gradient(policy, theta, old, ep, "with_observations") - g).norm() > 1e-4
    with pytest.raises(ValueError, match="behaviour"):
        xa.stale_expected_gradient(policy, theta, per_turn[:2], ep)
    with pytest.raises(ValueError, match="correction"):
        xa.stale_expected_gradient(policy, theta, old, ep, "tis")


# -- turn-level credit -------------------------------------------------------------------------
def _turn_batch(seed=0, N=12, K=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(0, 3, (N, K), generator=g).to(dtype) - 1
    n_turns = torch.randint(1, K + 1, (N,), generator=g)
    taken = torch.arange(K)[None, :] < n_turns[:, None]
    anchors = torch.randint(0, 3, (N, K), generator=g)
    return torch.where(taken, r, torch.zeros_like(r)), taken, anchors


def test_turn_returns_and_tokens():
    r, taken, _ = _turn_batch()
    for gamma in (1.0, 0.9, 0.0):
        G = rt.turn_returns(r, gamma, taken)
        ref = torch.zeros_like(r)
        for i in range(r.shape[0]):
            run = 0.0
            for k in reversed(range(r.shape[1])):
                run = (r[i, k].item() if taken[i, k] else 0.0) + gamma * run
                ref[i, k] = run if taken[i, k] else 0.0
        assert (G - ref).abs().max() < 1e-12
    ids = torch.tensor([[-1, 0, 0, 1, 2, -1]]).expand(r.shape[0], -1)
    w = rt.turns_to_tokens(G, ids)
    assert torch.equal(w[:, 0], torch.zeros_like(w[:, 0])) and torch.equal(w[:, 3], G[:, 1])
    with pytest.raises(ValueError, match="gamma"):
        rt.turn_returns(r, 1.5)
    with pytest.raises(ValueError, match="turn_ids"):
        rt.turns_to_tokens(G, ids + 5)
    with pytest.raises(ValueError, match="turn_ids"):
        rt.turns_to_tokens(G, ids.float())
    with pytest.raises(ValueError, match="finite"):
        rt.turn_returns(r.masked_fill(taken, float("nan")))
    with pytest.raises(ValueError, match="turn_mask"):
        rt.turn_returns(r, 1.0, torch.zeros_like(taken))


def test_turn_rtg_reduces_to_group_advantages_for_one_turn():
    R = torch.randn(16, 1, generator=pg.make_generator(0), dtype=torch.float64)
    assert (rt.turn_rtg_advantage(R, 4)[:, 0] - grpo_mean_advantage(R[:, 0], 4)).abs().max() < 1e-12
    z = rt.turn_rtg_advantage(R, 4, scale=True)[:, 0]
    assert (z - grpo_advantage(R[:, 0], 4)).abs().max() < 1e-12
    with pytest.raises(ValueError, match="group_size"):
        rt.turn_rtg_advantage(R, 5)


def _mt_grpo_reference(turn_rewards, taken, tool, G, coef, eps=1e-4):
    """Zeng et al.'s MTGRPOEnvTrainer (verifiers/trainers/mt_grpo_env_trainer.py):
    _compute_normalized_advantages, then _assign_advantages with advantage_est="aae",
    transcribed with turns for token segments."""
    N, K = turn_rewards.shape

    def norm(x):
        m = x.view(-1, G).mean(1).repeat_interleave(G)
        s = x.view(-1, G).std(1).repeat_interleave(G)
        return (x - m) / (s + eps)

    last = [int(taken[i].sum()) - 1 for i in range(N)]
    outcome = torch.stack([turn_rewards[i, last[i]] for i in range(N)])
    turn = torch.stack([turn_rewards[i, :last[i]].sum() for i in range(N)])
    out_adv, turn_adv, comb_adv = norm(outcome), norm(turn), norm(turn + outcome)
    adv = torch.zeros(N, K, dtype=turn_rewards.dtype)
    for i in range(N):
        first = next((k for k in range(K) if tool[i, k] and taken[i, k]), None)
        for k in range(K):
            if not taken[i, k]:
                continue
            if first is not None:
                adv[i, k] = out_adv[i] + coef * turn_adv[i] * (1.0 if k <= first else 0.0)
            else:
                adv[i, k] = comb_adv[i]
    return adv


def test_mt_grpo_equals_the_authors_assignment():
    r, taken, _ = _turn_batch(1, N=16)
    tool = torch.rand(r.shape, generator=torch.Generator().manual_seed(2)) < 0.4
    for coef in (1.0, 0.5):
        got = rt.mt_grpo_advantage(r, 4, turn_mask=taken, tool_turns=tool, turn_coef=coef)
        assert (got - _mt_grpo_reference(r, taken, tool, 4, coef)).abs().max() < 1e-10


def _gigpo_reference(turn_rewards, taken, anchors, G, gamma, std_norm, w, eps=1e-6):
    """verl-agent's compute_gigpo_outcome_advantage (gigpo/core_gigpo.py): one row per step;
    episode_norm_reward with compute_mean_std_cross_steps=True, build_step_group with exact
    matching, step_norm_reward on compute_step_discounted_returns, transcribed."""
    N, K = turn_rewards.shape
    rows = [(i, k) for i in range(N) for k in range(K) if taken[i, k]]
    index = [i // G for i, _ in rows]
    episode = [float(turn_rewards[i][taken[i]].sum()) for i, _ in rows]
    returns = []
    for i, k in rows:
        run = 0.0
        for kk in reversed(range(k, K)):
            if taken[i, kk]:
                run = float(turn_rewards[i, kk]) + gamma * run
        returns.append(run)
    by_idx = {}
    for j, idx in enumerate(index):
        by_idx.setdefault(idx, []).append(episode[j])
    ep_adv = []
    for j, idx in enumerate(index):
        vals = torch.tensor(by_idx[idx], dtype=torch.float64)
        m, s = (torch.tensor(0.0), torch.tensor(1.0)) if len(vals) == 1 else (vals.mean(), vals.std())
        ep_adv.append((episode[j] - m) / (s + eps) if std_norm else episode[j] - m)
    clusters = {}
    for j, (i, k) in enumerate(rows):
        clusters.setdefault((index[j], int(anchors[i, k])), []).append(returns[j])
    adv = torch.zeros(N, K, dtype=torch.float64)
    for j, (i, k) in enumerate(rows):
        vals = torch.tensor(clusters[(index[j], int(anchors[i, k]))], dtype=torch.float64)
        m, s = (vals.mean(), torch.tensor(1.0)) if len(vals) == 1 else (vals.mean(), vals.std())
        step = (returns[j] - m) / (s + eps) if std_norm else returns[j] - m
        adv[i, k] = ep_adv[j] + w * step
    return adv


@pytest.mark.parametrize("std_norm", [True, False])
def test_gigpo_equals_verl_agent(std_norm):
    r, taken, anchors = _turn_batch(3, N=16)
    for gamma, w in ((0.95, 1.0), (1.0, 0.5)):
        got = rt.gigpo_advantage(r, 4, turn_mask=taken, anchors=anchors, gamma=gamma, step_weight=w,
                                 std_normalise=std_norm)
        ref = _gigpo_reference(r, taken, anchors, 4, gamma, std_norm, w)
        assert (got - ref).abs().max() < 1e-10


def test_turn_advantages_dtypes_meta_and_registry():
    r, taken, anchors = _turn_batch(4, N=8)
    for dt in (torch.float32, torch.bfloat16):
        for name, opts in (("turn_rtg", {}), ("mt_grpo", {}), ("gigpo", {"anchors": anchors})):
            a = rt.compute_turn_advantages(r.to(dt), name, group_size=4, turn_mask=taken, **opts)
            ref = rt.compute_turn_advantages(r, name, group_size=4, turn_mask=taken, **opts)
            assert a.dtype == dt and (a.double() - ref).abs().max() < (0.1 if dt == torch.bfloat16 else 1e-4)
    meta = rt.turn_returns(r.to("meta"), 0.9)
    assert meta.shape == r.shape and meta.device.type == "meta"
    assert rt.turns_to_tokens(r.to("meta"), torch.zeros(8, 5, dtype=torch.long, device="meta")).shape == (8, 5)
    assert rt.turn_rtg_advantage(r.to("meta"), 4).device.type == "meta"
    assert rt.mt_grpo_advantage(r.to("meta"), 4).shape == r.shape
    assert tja.reward_variance_filter(r[:, 0].to("meta"), 4).shape == (8,)
    with pytest.raises(ValueError, match="meta"):
        rt.gigpo_advantage(r.to("meta"), 4)
    with pytest.raises(ValueError, match="estimator"):
        rt.compute_turn_advantages(r, "grpo", group_size=4)
    with pytest.raises(ValueError, match="nope"):
        rt.compute_turn_advantages(r, "gigpo", group_size=4, nope=1)
    with pytest.raises(ValueError, match="anchors"):
        rt.gigpo_advantage(r, 4, anchors=anchors.float())
    for name in ("turn_rtg", "mt_grpo", "gigpo"):
        c = pg.registry.get("advantage", name)
        assert c.side == "reward" and c.form == "turn"
    assert pg.method("Multi-turn GRPO (tool-token mask)").sides() == {"trajectory"}
    assert pg.method("GiGPO").sides() == {"reward"} and pg.method("MT-GRPO").sides() == {"reward"}
    assert pg.method("Reward-variance filter (StarPO-S)").sides() == {"trajectory"}


# -- the trajectory side -------------------------------------------------------------------------
def test_trajectory_logprob_and_ratio():
    lp = torch.tensor([[-1.0, -2.0, -float("inf"), -0.5], [-0.1, float("nan"), -0.2, -0.3]],
                      dtype=torch.float64, requires_grad=True)
    pm = torch.tensor([[1, 1, 0, 1], [1, 0, 1, 0]], dtype=torch.float64)
    out = tja.trajectory_logprob(lp, pm, torch.tensor([-1.0, -2.0], dtype=torch.float64))
    assert torch.allclose(out, torch.tensor([-4.5, -2.3], dtype=torch.float64))
    out.sum().backward()
    assert torch.equal(lp.grad, pm)                                           # the tool's tokens get nothing
    old = torch.zeros(2, 4, dtype=torch.float64)
    assert torch.allclose(tja.trajectory_log_ratio(lp.detach(), old, pm), torch.tensor([-3.5, -0.3], dtype=torch.float64))
    for dt in (torch.float32, torch.bfloat16):
        assert tja.trajectory_logprob(lp.detach().to(dt), pm).dtype == dt
    meta = tja.trajectory_log_ratio(lp.detach().to("meta"), old.to("meta"), pm.to("meta"))
    assert meta.shape == (2,) and meta.device.type == "meta"
    with pytest.raises(ValueError, match="policy_mask"):
        tja.trajectory_logprob(lp, pm * 0.5)
    with pytest.raises(ValueError, match="policy_mask"):
        tja.trajectory_logprob(lp, torch.zeros_like(pm))
    with pytest.raises(ValueError, match="env_logp"):
        tja.trajectory_logprob(lp, pm, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="device"):
        tja.trajectory_log_ratio(lp.detach(), old.to("meta"), pm)


def test_reward_variance_filter():
    R = torch.tensor([1, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 1, 1], dtype=torch.float64)
    keep = tja.reward_variance_filter(R, 4, keep_fraction=0.25)
    assert keep.view(4, 4)[:, 0].tolist() == [False, True, False, False]   # std ties: first kept
    keep = tja.reward_variance_filter(R, 4, keep_fraction=1.0)
    assert keep.view(4, 4)[:, 0].tolist() == [False, True, True, True]    # zero variance never enters
    assert tja.reward_variance_filter(R.float(), 4, 0.5).view(4, 4)[:, 0].tolist() == [False, True, True, False]
    with pytest.raises(ValueError, match="keep_fraction"):
        tja.reward_variance_filter(R, 4, 0.0)
    with pytest.raises(ValueError, match="keep_fraction"):
        tja.reward_variance_filter(R, 4, 1.5)
    with pytest.raises(ValueError, match="group_size"):
        tja.reward_variance_filter(R, 5)
    with pytest.raises(ValueError, match="finite"):
        tja.reward_variance_filter(R.masked_fill(R > 0, float("inf")), 4)


# -- trainers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("advantage,mask,keep", [("grpo", "policy", 1.0), ("gigpo", "all", 0.5),
                                                 ("mt_grpo", "policy", 1.0), ("turn_rtg", "policy", 1.0)])
def test_agent_grpo_train_runs(agent, advantage, mask, keep):
    env, model = agent
    m = copy.deepcopy(model)
    h = ta.agent_grpo_train(m, env, steps=2, prompts_per_step=4, group_size=4, generator=pg.make_generator(0),
                            advantage=advantage, mask=mask, keep_fraction=keep, progress=False)
    assert h.steps == 2 and all(torch.isfinite(getattr(h, k)).all() for k in ta.AGENT_METRICS)
    assert h.smoothed("reward", 2).shape == (2,) and h.config["mask"] == mask


def test_agent_trainer_learns_and_rejects_bad_options(agent):
    env, model = agent
    m = copy.deepcopy(model)
    before = ta.evaluate_agent(m, env, 512, pg.make_generator(1))
    h = ta.agent_grpo_train(m, env, steps=12, prompts_per_step=16, group_size=8, generator=pg.make_generator(2),
                            progress=False)
    after = ta.evaluate_agent(m, env, 512, pg.make_generator(1))
    se = math.sqrt(0.25 / 512)
    assert after["success"] > before["success"] + 4 * se and after["tool_rate"] > before["tool_rate"]
    assert h.first_step(0.0) == 0 and h.time_to(2.0) is None
    assert h.logprob_gap.max() < 1e-5                   # the rollout's log-probs are the trainer's
    w = ta.written_reply(m, env, 64, pg.make_generator(3))
    assert 0 <= w["marker"] <= 1 and 0 <= w["right"] <= 1
    with pytest.raises(ValueError, match="mask"):
        ta.agent_grpo_train(m, env, steps=1, prompts_per_step=2, group_size=2, generator=pg.make_generator(0),
                            mask="tool", progress=False)
    with pytest.raises(ValueError, match="group_size"):
        ta.agent_grpo_train(m, env, steps=1, prompts_per_step=2, group_size=1, generator=pg.make_generator(0),
                            progress=False)
    with pytest.raises(ValueError, match="keep_fraction"):
        ta.agent_grpo_train(m, env, steps=1, prompts_per_step=2, group_size=2, generator=pg.make_generator(0),
                            keep_fraction=2, progress=False)
    with pytest.raises(ValueError, match="advantage"):
        ta.agent_grpo_train(m, env, steps=1, prompts_per_step=2, group_size=2, generator=pg.make_generator(0),
                            advantage="nope", progress=False)
    with pytest.raises(ValueError, match="learning_rate"):
        ta.agent_grpo_train(m, env, steps=1, prompts_per_step=2, group_size=2, generator=pg.make_generator(0),
                            learning_rate=1e-3)
    with pytest.raises(ValueError, match="env"):
        ta.agent_grpo_train(m, "env", steps=1, prompts_per_step=2, group_size=2, generator=pg.make_generator(0))


def test_tree_trainers(tree):
    world, policy, theta = tree
    th0 = ta.fit_demonstrations(policy, world, steps=30, lr=0.1)
    ep = world.enumerate()
    q = world.demonstrations(0.3)
    assert abs(xa.exact_J(policy, th0, ep).item() - (q @ ep.rewards).item()) < 0.1
    out = ta.exact_ascent(policy, th0, world, steps=5, lr=1.0)
    assert out["J"].shape == (6,) and bool((out["J"].diff() > 0).all())
    h = ta.tree_grpo_train(policy, th0, world, steps=6, prompts_per_step=4, group_size=4, runs=3,
                           generator=pg.make_generator(0), advantage="gigpo", keep_fraction=0.5)
    assert h.J.shape == (6, 3) and h.theta.shape == (3, theta.shape[0])
    assert bool((h.kept <= 0.5 + 1e-12).all())
    with pytest.raises(ValueError, match="advantage"):
        ta.tree_grpo_train(policy, th0, world, steps=1, prompts_per_step=2, group_size=2,
                           generator=pg.make_generator(0), advantage="nope")
    with pytest.raises(ValueError, match="credit"):
        ta.exact_ascent(policy, th0, world, steps=1, lr=1.0, credit="nope")
    with pytest.raises(ValueError, match="steps"):
        ta.exact_ascent(policy, th0, world, steps=0, lr=1.0)


def test_pad_and_eos_layout_constants():
    assert PAD == 0 and EOS == 2


def test_policy_loss_takes_the_policy_token_mask_unchanged(agent):
    """The loss path: tool tokens (even NaN there) never reach the value or the gradient."""
    env, model = agent
    g = pg.make_generator(11)
    r = rollout(model, env, env.reset(4, g).repeat_interleave(4), g)
    lp = logprobs(model, r.tokens)
    poisoned = torch.where(r.obs_mask > 0, torch.full_like(lp, float("nan")), lp)
    adv = pg.reward.turns.turns_to_tokens(torch.ones_like(r.turn_rewards), r.turn_ids)
    loss, _ = pg.methods.policy_loss(poisoned, None, adv, r.policy_mask, loss="score_function",
                                     aggregation="token_mean")
    ref = -(lp * r.policy_mask).sum() / r.policy_mask.sum()
    assert torch.isfinite(loss) and abs(loss.item() - ref.item()) < 1e-6
    leaf = lp.detach().requires_grad_()
    loss2, _ = pg.methods.policy_loss(leaf, None, adv, r.policy_mask, loss="score_function",
                                      aggregation="token_mean")
    (grad,) = torch.autograd.grad(loss2, leaf)
    assert bool((grad[r.obs_mask > 0] == 0).all()) and bool((grad[r.policy_mask > 0] != 0).all())
