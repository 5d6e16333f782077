import torch


def logp_correct(token_logp, policy_mask, env_logp):
    return env_logp + torch.where(policy_mask > 0, token_logp, torch.zeros_like(token_logp)).sum(-1)


def logp_with_tool_tokens(token_logp, policy_mask, env_logp):
    live = torch.isfinite(token_logp)
    return env_logp + torch.where(live, token_logp, torch.zeros_like(token_logp)).sum(-1)


def logp_no_env(token_logp, policy_mask, env_logp):
    return torch.where(policy_mask > 0, token_logp, torch.zeros_like(token_logp)).sum(-1)


def logp_multiplied(token_logp, policy_mask, env_logp):
    return env_logp + (token_logp * policy_mask).sum(-1)          # −inf × 0 = NaN on the padding


def _returns(turn_rewards, gamma):
    out = torch.zeros_like(turn_rewards)
    run = torch.zeros_like(turn_rewards[:, 0])
    for k in range(turn_rewards.shape[1] - 1, -1, -1):
        run = turn_rewards[:, k] + gamma * run
        out[:, k] = run
    return out


def _to_tokens(values, turn_ids, policy_mask):
    w = torch.gather(values, 1, turn_ids.clamp_min(0))
    return torch.where((turn_ids >= 0) & (policy_mask > 0), w, torch.zeros_like(w))


def weights_correct(turn_rewards, turn_ids, policy_mask, gamma):
    return _to_tokens(_returns(turn_rewards, gamma), turn_ids, policy_mask)


def weights_total(turn_rewards, turn_ids, policy_mask, gamma):
    return _to_tokens(turn_rewards.sum(1, keepdim=True).expand_as(turn_rewards), turn_ids, policy_mask)


def weights_past(turn_rewards, turn_ids, policy_mask, gamma):
    return _to_tokens(torch.cumsum(turn_rewards, 1), turn_ids, policy_mask)


def weights_on_tool_tokens(turn_rewards, turn_ids, policy_mask, gamma):
    w = torch.gather(_returns(turn_rewards, gamma), 1, turn_ids.clamp_min(0))
    return torch.where(turn_ids >= 0, w, torch.zeros_like(w))


def weights_no_discount(turn_rewards, turn_ids, policy_mask, gamma):
    return _to_tokens(_returns(turn_rewards, 1.0), turn_ids, policy_mask)


def _step(returns, key, turn_mask):
    out = torch.zeros_like(returns)
    N, K = returns.shape
    groups = {}
    for i in range(N):
        for k in range(K):
            if turn_mask[i, k]:
                groups.setdefault(key(i, k), []).append(float(returns[i, k]))
    for i in range(N):
        for k in range(K):
            if turn_mask[i, k]:
                vals = groups[key(i, k)]
                out[i, k] = returns[i, k] - sum(vals) / len(vals)
    return out


def step_correct(returns, anchors, groups, turn_mask):
    return _step(returns, lambda i, k: (int(groups[i]), int(anchors[i, k])), turn_mask)


def step_across_tasks(returns, anchors, groups, turn_mask):
    return _step(returns, lambda i, k: int(anchors[i, k]), turn_mask)


def step_by_turn_index(returns, anchors, groups, turn_mask):
    return _step(returns, lambda i, k: (int(groups[i]), k), turn_mask)


def step_with_untaken(returns, anchors, groups, turn_mask):
    return _step(returns, lambda i, k: (int(groups[i]), int(anchors[i, k])),
                 torch.ones_like(turn_mask))


SOLUTIONS = {
    "15.1": {"correct": logp_correct, "wrong": [logp_with_tool_tokens, logp_no_env, logp_multiplied]},
    "15.2": {"correct": weights_correct,
             "wrong": [weights_total, weights_past, weights_on_tool_tokens, weights_no_discount]},
    "15.3": {"correct": step_correct,
             "wrong": [step_across_tasks, step_by_turn_index, step_with_untaken]},
}
