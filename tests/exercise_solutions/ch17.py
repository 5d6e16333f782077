import torch


def _delta(cw, rw, cr, rr):
    return (cw - cr) - (rw - rr)


def weight_correct(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp, beta):
    return beta * torch.sigmoid(-beta * _delta(chosen_logp, rejected_logp, ref_chosen_logp,
                                               ref_rejected_logp))


def weight_sign(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp, beta):
    return beta * torch.sigmoid(beta * _delta(chosen_logp, rejected_logp, ref_chosen_logp,
                                              ref_rejected_logp))


def weight_no_reference(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp, beta):
    return beta * torch.sigmoid(-beta * (chosen_logp - rejected_logp))


def weight_no_beta(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp, beta):
    return torch.sigmoid(-beta * _delta(chosen_logp, rejected_logp, ref_chosen_logp,
                                        ref_rejected_logp))


def _win(probs, rewards):
    return (probs[None, :] * torch.sigmoid(rewards[:, None] - rewards[None, :])).sum(1)


def ref_correct(probs, rewards, beta):
    return beta * (2 * _win(probs, rewards) - 1)


def ref_plus_constant(probs, rewards, beta):      # also right: a constant does not move a PG
    return beta * 2 * _win(probs, rewards) + 3.0


def ref_reward(probs, rewards, beta):
    return beta * rewards


def ref_half(probs, rewards, beta):
    return beta * (_win(probs, rewards) - 0.5)


def ref_no_beta(probs, rewards, beta):
    return 2 * _win(probs, rewards) - 1


SOLUTIONS = {
    "17.1": {"correct": weight_correct,
             "wrong": [weight_sign, weight_no_reference, weight_no_beta]},
    "17.2": {"correct": ref_correct,
             "wrong": [ref_reward, ref_half, ref_no_beta]},
}
