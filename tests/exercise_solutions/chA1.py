import torch


def _masked_sums(per_token_loss, mask):
    m = mask > 0
    return torch.where(m, per_token_loss, torch.zeros_like(per_token_loss)).sum(-1), m.sum(-1)


def token_share_correct(per_token_loss, mask, global_tokens, world_size):
    s, _ = _masked_sums(per_token_loss, mask)
    return world_size * s.sum() / global_tokens


def token_share_local_mean(per_token_loss, mask, global_tokens, world_size):
    s, L = _masked_sums(per_token_loss, mask)
    return s.sum() / L.sum()


def token_share_no_world(per_token_loss, mask, global_tokens, world_size):
    s, _ = _masked_sums(per_token_loss, mask)
    return s.sum() / global_tokens


def token_share_nan(per_token_loss, mask, global_tokens, world_size):
    return world_size * (per_token_loss * mask).sum() / global_tokens


def factor_correct(token_counts, world_size, micro_batches):
    return token_counts.sum() / (world_size * micro_batches * token_counts)


def factor_inverse(token_counts, world_size, micro_batches):
    return world_size * micro_batches * token_counts / token_counts.sum()


def factor_no_micro(token_counts, world_size, micro_batches):
    return token_counts.sum() / (world_size * token_counts)


def sequence_share_correct(per_token_loss, mask, global_sequences, world_size):
    s, L = _masked_sums(per_token_loss, mask)
    per_seq = torch.where(L > 0, s / L.clamp(min=1), torch.zeros_like(s))
    return world_size * per_seq.sum() / global_sequences


def sequence_share_token_sum(per_token_loss, mask, global_sequences, world_size):
    s, _ = _masked_sums(per_token_loss, mask)
    return world_size * s.sum() / global_sequences


def sequence_share_local(per_token_loss, mask, global_sequences, world_size):
    s, L = _masked_sums(per_token_loss, mask)
    per_seq = torch.where(L > 0, s / L.clamp(min=1), torch.zeros_like(s))
    return per_seq.sum() / (L > 0).sum().clamp(min=1)


def sequence_share_zero_div(per_token_loss, mask, global_sequences, world_size):
    s, L = _masked_sums(per_token_loss, mask)
    return world_size * (s / L).sum() / global_sequences


SOLUTIONS = {
    "A1.1": {"correct": token_share_correct,
             "wrong": [token_share_local_mean, token_share_no_world, token_share_nan]},
    "A1.2": {"correct": factor_correct, "wrong": [factor_inverse, factor_no_micro]},
    "A1.3": {"correct": sequence_share_correct,
             "wrong": [sequence_share_token_sum, sequence_share_local, sequence_share_zero_div]},
}
