import math

import torch


def step_correct(theta, grad, M, eta):
    return theta + eta * torch.linalg.solve(M, grad)


def step_times_m(theta, grad, M, eta):
    return theta + eta * M @ grad


def step_plain(theta, grad, M, eta):
    return theta + eta * grad


def step_descent(theta, grad, M, eta):
    return theta - eta * torch.linalg.solve(M, grad)


def fisher_correct(rho_s, probs_s):
    return rho_s * (torch.diag(probs_s) - torch.outer(probs_s, probs_s))


def fisher_no_rho(rho_s, probs_s):
    return torch.diag(probs_s) - torch.outer(probs_s, probs_s)


def fisher_diag_only(rho_s, probs_s):
    return rho_s * torch.diag(probs_s)


def length_correct(direction, F, delta):
    return math.sqrt(2 * delta / float(direction @ F @ direction))


def length_no_two(direction, F, delta):
    return math.sqrt(delta / float(direction @ F @ direction))


def length_no_sqrt(direction, F, delta):
    return 2 * delta / float(direction @ F @ direction)


SOLUTIONS = {
    "06.1": {"correct": step_correct, "wrong": [step_times_m, step_plain, step_descent]},
    "06.2": {"correct": fisher_correct, "wrong": [fisher_no_rho, fisher_diag_only]},
    "06.3": {"correct": length_correct, "wrong": [length_no_two, length_no_sqrt]},
}
