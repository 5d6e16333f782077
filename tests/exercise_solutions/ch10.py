import torch


# -- 10.1 TD residuals ----------------------------------------------------------------------
def td_correct(rewards, values, mask):
    v_next = torch.cat([values[:, 1:] * mask[:, 1:], torch.zeros_like(values[:, :1])], 1)
    return (rewards + v_next - values) * mask


def td_no_mask(rewards, values, mask):
    v_next = torch.cat([values[:, 1:] * mask[:, 1:], torch.zeros_like(values[:, :1])], 1)
    return rewards + v_next - values


def td_padding_value(rewards, values, mask):
    # reads V(h_{t+1}) from the padding after the end instead of 0
    v_next = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], 1)
    return (rewards + v_next - values) * mask


def td_flipped(rewards, values, mask):
    return -td_correct(rewards, values, mask)


# -- 10.2 GAE -------------------------------------------------------------------------------
def gae_correct(deltas, mask, lam):
    out = torch.zeros_like(deltas)
    acc = torch.zeros(deltas.shape[0], dtype=deltas.dtype)
    for t in reversed(range(deltas.shape[1])):
        acc = deltas[:, t] + lam * acc * mask[:, t]
        out[:, t] = acc
    return out * mask


def gae_forward(deltas, mask, lam):
    out = torch.zeros_like(deltas)
    acc = torch.zeros(deltas.shape[0], dtype=deltas.dtype)
    for t in range(deltas.shape[1]):
        acc = deltas[:, t] + lam * acc
        out[:, t] = acc
    return out * mask


def gae_no_lambda(deltas, mask, lam):
    return torch.flip(torch.cumsum(torch.flip(deltas, [1]), 1), [1]) * mask


def gae_just_deltas(deltas, mask, lam):
    return deltas


# -- 10.3 the clipped value loss --------------------------------------------------------------
def vl_correct(values, old_values, returns, mask, eps):
    vc = torch.clamp(values, old_values - eps, old_values + eps)
    per = torch.maximum((values - returns) ** 2, (vc - returns) ** 2)
    return 0.5 * (per * mask).sum() / mask.sum()


def vl_min(values, old_values, returns, mask, eps):
    vc = torch.clamp(values, old_values - eps, old_values + eps)
    per = torch.minimum((values - returns) ** 2, (vc - returns) ** 2)
    return 0.5 * (per * mask).sum() / mask.sum()


def vl_unclipped(values, old_values, returns, mask, eps):
    return 0.5 * (((values - returns) ** 2) * mask).sum() / mask.sum()


def vl_clip_around_returns(values, old_values, returns, mask, eps):
    vc = torch.clamp(values, returns - eps, returns + eps)
    per = torch.maximum((values - returns) ** 2, (vc - returns) ** 2)
    return 0.5 * (per * mask).sum() / mask.sum()


def vl_no_half(values, old_values, returns, mask, eps):
    return 2 * vl_correct(values, old_values, returns, mask, eps)


SOLUTIONS = {
    "10.1": {"correct": td_correct, "wrong": [td_no_mask, td_padding_value, td_flipped]},
    "10.2": {"correct": gae_correct, "wrong": [gae_forward, gae_no_lambda, gae_just_deltas]},
    "10.3": {"correct": vl_correct,
             "wrong": [vl_min, vl_unclipped, vl_clip_around_returns, vl_no_half]},
}
