import torch


def obj_correct(ratio, adv, eps):
    return torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)


def obj_max(ratio, adv, eps):
    return torch.maximum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)


def obj_clip_only(ratio, adv, eps):
    return ratio.clamp(1 - eps, 1 + eps) * adv


def obj_loss(ratio, adv, eps):
    return -obj_correct(ratio, adv, eps)


def beta_correct(beta, kl, kl_target):
    if kl > 1.5 * kl_target:
        return beta * 2
    if kl < kl_target / 1.5:
        return beta / 2
    return beta


def beta_reversed(beta, kl, kl_target):
    if kl > 1.5 * kl_target:
        return beta / 2
    if kl < kl_target / 1.5:
        return beta * 2
    return beta


def beta_factor(beta, kl, kl_target):
    if kl > 1.5 * kl_target:
        return beta * 1.5
    if kl < kl_target / 1.5:
        return beta / 1.5
    return beta


def mask_correct(ratio, adv, eps):
    return ((adv > 0) & (ratio > 1 + eps)) | ((adv < 0) & (ratio < 1 - eps))


def mask_outside(ratio, adv, eps):
    return (ratio - 1).abs() > eps


def mask_swapped(ratio, adv, eps):
    return ((adv > 0) & (ratio < 1 - eps)) | ((adv < 0) & (ratio > 1 + eps))


SOLUTIONS = {
    "07.1": {"correct": obj_correct, "wrong": [obj_max, obj_clip_only, obj_loss]},
    "07.2": {"correct": beta_correct, "wrong": [beta_reversed, beta_factor]},
    "07.3": {"correct": mask_correct, "wrong": [mask_outside, mask_swapped]},
}
