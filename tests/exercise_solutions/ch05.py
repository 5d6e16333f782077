def w_correct(logp, behaviour_logp):
    return (logp - behaviour_logp).exp()


def w_naive(logp, behaviour_logp):
    return logp.exp() / behaviour_logp.exp()


def w_flipped(logp, behaviour_logp):
    return (behaviour_logp - logp).exp()


def w_log(logp, behaviour_logp):
    return logp - behaviour_logp


def ess_correct(weights):
    return weights.sum(-1) ** 2 / (weights ** 2).sum(-1)


def ess_fraction(weights):
    return ess_correct(weights) / weights.shape[-1]


def ess_inverted(weights):
    return (weights ** 2).sum(-1) / weights.sum(-1) ** 2


def snis_correct(values, weights):
    return (weights * values).sum(-1) / weights.sum(-1)


def snis_ordinary(values, weights):
    return (weights * values).mean(-1)


def snis_global(values, weights):
    return (weights * values).sum(-1) / weights.sum()


SOLUTIONS = {
    "05.1": {"correct": w_correct, "wrong": [w_naive, w_flipped, w_log]},
    "05.2": {"correct": ess_correct, "wrong": [ess_fraction, ess_inverted]},
    "05.3": {"correct": snis_correct, "wrong": [snis_ordinary, snis_global]},
}
