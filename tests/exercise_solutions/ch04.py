import torch


def _scores(theta, s, a):
    probs = torch.softmax(theta, -1)
    onehot = torch.nn.functional.one_hot(a, theta.shape[1]).to(theta.dtype)
    return probs, onehot - probs[s]


def step_correct(theta, s, a, r, b, lr):
    _, sc = _scores(theta, s, a)
    g = torch.zeros_like(theta).index_add_(0, s, (r - b[s])[:, None] * sc) / len(s)
    return theta + lr * g


def step_no_baseline(theta, s, a, r, b, lr):
    return step_correct(theta, s, a, r, torch.zeros_like(b), lr)


def step_descent(theta, s, a, r, b, lr):
    return step_correct(theta, s, a, r, b, -lr)


def step_sum(theta, s, a, r, b, lr):
    return step_correct(theta, s, a, r, b, lr * len(s))


def rm_correct(b, n, s, r, decay):
    S = b.shape[0]
    sums = torch.zeros(S, dtype=b.dtype).index_add_(0, s, r)
    cnt = torch.zeros(S, dtype=b.dtype).index_add_(0, s, torch.ones_like(r))
    mean = sums / cnt.clamp_min(1)
    new = torch.where(n == 0, mean, (1 - decay) * b + decay * mean)
    return torch.where(cnt > 0, new, b), n + cnt


def rm_no_first_visit(b, n, s, r, decay):
    S = b.shape[0]
    sums = torch.zeros(S, dtype=b.dtype).index_add_(0, s, r)
    cnt = torch.zeros(S, dtype=b.dtype).index_add_(0, s, torch.ones_like(r))
    mean = sums / cnt.clamp_min(1)
    return torch.where(cnt > 0, (1 - decay) * b + decay * mean, b), n + cnt


def rm_updates_everything(b, n, s, r, decay):
    S = b.shape[0]
    sums = torch.zeros(S, dtype=b.dtype).index_add_(0, s, r)
    cnt = torch.zeros(S, dtype=b.dtype).index_add_(0, s, torch.ones_like(r))
    mean = sums / cnt.clamp_min(1)
    return torch.where(n == 0, mean, (1 - decay) * b + decay * mean), n + cnt


def rm_last_reward(b, n, s, r, decay):
    b, n = b.clone(), n.clone()
    for si, ri in zip(s.tolist(), r.tolist()):
        b[si] = ri if n[si] == 0 else (1 - decay) * b[si] + decay * ri
        n[si] += 1
    return b, n


def rft_correct(rewards):
    keep = (rewards >= 1).to(rewards.dtype)
    k = keep.sum()
    return keep * len(rewards) / k if k > 0 else keep


def rft_indicator(rewards):
    return (rewards >= 1).to(rewards.dtype)


def rft_over_k(rewards):
    keep = (rewards >= 1).to(rewards.dtype)
    return keep / keep.sum()


SOLUTIONS = {
    "04.1": {"correct": step_correct, "wrong": [step_no_baseline, step_descent, step_sum]},
    "04.2": {"correct": rm_correct, "wrong": [rm_no_first_visit, rm_updates_everything, rm_last_reward]},
    "04.3": {"correct": rft_correct, "wrong": [rft_indicator, rft_over_k]},
}
