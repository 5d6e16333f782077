import torch


def lp_correct(z, y):
    return z.gather(-1, y[..., None]).squeeze(-1) - torch.logsumexp(z, -1)


def lp_raw_logit(z, y):
    return z.gather(-1, y[..., None]).squeeze(-1)


def lp_probability(z, y):
    return torch.softmax(z, -1).gather(-1, y[..., None]).squeeze(-1)


def lp_overflow(z, y):                         # right for small logits, inf/NaN for large ones
    return z.gather(-1, y[..., None]).squeeze(-1) - torch.log(torch.exp(z).sum(-1))


def lp_wrong_dim(z, y):
    return torch.log_softmax(z, 1).gather(-1, y[..., None]).squeeze(-1)


def success_correct(q, K, lengths):
    c = 1 - q + q / K
    return sum(c ** L for L in lengths) / len(lengths)


def success_no_lucky_letters(q, K, lengths):
    return sum((1 - q) ** L for L in lengths) / len(lengths)


def success_mean_length(q, K, lengths):
    return (1 - q + q / K) ** (sum(lengths) / len(lengths))


def temp_correct(z, y, tau):
    return torch.log_softmax(z / tau, -1).gather(-1, y[..., None]).squeeze(-1)


def temp_divides_logprobs(z, y, tau):
    return torch.log_softmax(z, -1).gather(-1, y[..., None]).squeeze(-1) / tau


def temp_multiplies(z, y, tau):
    return torch.log_softmax(z * tau, -1).gather(-1, y[..., None]).squeeze(-1)


SOLUTIONS = {
    "11.1": {"correct": lp_correct,
             "wrong": [lp_raw_logit, lp_probability, lp_overflow, lp_wrong_dim]},
    "11.2": {"correct": success_correct, "wrong": [success_no_lucky_letters, success_mean_length]},
    "11.3": {"correct": temp_correct, "wrong": [temp_divides_logprobs, temp_multiplies]},
}
