"""Benchmark: group advantages and their broadcast to tokens, pgbook against verl's estimators.

    python benchmarks/bench_advantages.py                       # N = 256 … 65536, G = 8, T = 128
    python benchmarks/bench_advantages.py --baseline f3182df    # also pgbook as it was then
    python benchmarks/bench_advantages.py --sizes 64,256 --reps 3  # quick
    python benchmarks/bench_advantages.py --device cuda

From 0/1 outcome rewards of N responses in contiguous groups of G (a reward on the last
response token, as verl stores it) every row computes the token-level advantages (N, T):

* ``pgbook <est>``: ``broadcast_to_tokens(<est>_advantage(token_rewards.sum(-1), G), mask)``
  (:mod:`pgbook.reward.advantages`);
* ``verl <est>``: a transcription of verl's estimator (``verl/trainer/ppo/core_algos.py``,
  and ``verl/utils/groupwise.py`` for ``group_mean_std``/``as_torch_index``): the vectorised
  ``compute_grpo_vectorized_outcome_advantage`` (with ``norm_adv_by_std_in_grpo`` True for
  grpo, False for Dr. GRPO's ``grpo_mean``) and ``compute_rloo_vectorized_outcome_advantage``,
  and the looped ``compute_grpo_outcome_advantage`` (up to N = 4096: it loops in Python over
  responses). verl's group ids are given as an int64 numpy array (its fast path; verl's
  trainer passes uuid strings, which are slower to factorise).

``check_mask`` remembers a mask it has proven 0/1 (until the mask is written to), so the
rows above, which pass the same mask at every call as a trainer passes one response mask to
several functions, check its values once. The rows "mask checked at this call" pass an
inference-tensor copy of the mask instead, which cannot remember: every call reads it.

A second table times the same without the token dimension: the (N,) advantages from the (N,)
rewards (pgbook's estimator; verl's function bodies minus the sum over tokens and the
broadcast), and a third ``broadcast_to_tokens`` against the bare ``adv[:, None] * mask``, with
the share of the time spent validating inputs (the same call with the module's ``check_*``
helpers replaced by no-ops). Times are medians over ``--reps`` rounds of CPU time
(``time.process_time``; on CUDA wall time between synchronisations), per call, with the
functions interleaved within each round. The workers' allocator keeps freed memory
(``ALLOC_ENV``), so that mapping and faulting in fresh pages for each large output, which
costs every row the same but lands unevenly, does not drown the differences. Values are
checked to agree (1e-4) before anything is timed.

This is a benchmark, not a test: numbers depend on the machine (and on other load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C

ESTIMATORS = ["grpo", "grpo_mean", "rloo"]
#: the workers' allocator keeps freed memory for reuse (as torch's CUDA caching allocator
#: does): otherwise glibc maps each large output afresh and the page faults of writing it,
#: the same for every row but landing unevenly, dominate the times of the (N, T) rows
ALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 28), "MALLOC_TRIM_THRESHOLD_": str(1 << 29)}
LOOPED_MAX = 4096


# -- verl's estimators, transcribed (verl/trainer/ppo/core_algos.py, verl/utils/groupwise.py) --

def _verl_as_torch_index(index, device):
    """groupwise.as_torch_index: the integer fast path (an int64 numpy array)."""
    import numpy as np
    import torch

    arr = np.asarray(index)
    if np.issubdtype(arr.dtype, np.integer):
        return torch.from_numpy(arr.astype(np.int64, copy=False)).to(device=device)
    _, inv = np.unique(arr, return_inverse=True)
    return torch.from_numpy(inv.astype(np.int64, copy=False)).to(device=device)


def _verl_group_mean_std(scores, gidx, eps=1e-6):
    """groupwise.group_mean_std (Bessel-corrected var, clamped at eps; singletons mean 0, std 1)."""
    import torch

    scores = scores.reshape(-1).to(dtype=torch.float32)
    gidx = gidx.reshape(-1).to(dtype=torch.long)
    G = int(torch.max(gidx).item()) + 1
    ones = torch.ones_like(scores, dtype=torch.float32)
    count = torch.zeros(G, device=scores.device, dtype=torch.float32).index_add_(0, gidx, ones)
    s1 = torch.zeros(G, device=scores.device, dtype=torch.float32).index_add_(0, gidx, scores)
    s2 = torch.zeros(G, device=scores.device, dtype=torch.float32).index_add_(0, gidx,
                                                                               scores * scores)
    mean = s1 / count.clamp_min(1.0)
    var_num = s2 - (s1 * s1) / count.clamp_min(1.0)
    denom = (count - 1.0).clamp_min(1.0)
    var = var_num / denom
    std = torch.sqrt(torch.clamp(var, min=eps))
    single = count <= 1.0
    if torch.any(single):
        mean = mean.clone()
        std = std.clone()
        mean[single] = 0.0
        std[single] = 1.0
    return mean, std, count


def verl_grpo_vectorized_scalars(scores, index, epsilon=1e-6, norm_adv_by_std_in_grpo=True):
    """core_algos.compute_grpo_vectorized_outcome_advantage, without the token dimension."""
    g = _verl_as_torch_index(index, scores.device)
    mean_g, std_g, _ = _verl_group_mean_std(scores, g, eps=epsilon)
    if norm_adv_by_std_in_grpo:
        return (scores - mean_g[g]) / (std_g[g] + epsilon)
    return scores - mean_g[g]


def verl_grpo_vectorized(token_level_rewards, response_mask, index, epsilon=1e-6,
                         norm_adv_by_std_in_grpo=True):
    """core_algos.compute_grpo_vectorized_outcome_advantage."""
    import torch

    with torch.no_grad():
        scores = token_level_rewards.sum(dim=-1)
        scalars = verl_grpo_vectorized_scalars(scores, index, epsilon, norm_adv_by_std_in_grpo)
        return scalars.unsqueeze(-1) * response_mask


def verl_rloo_vectorized_scalars(scores, index):
    """core_algos.compute_rloo_vectorized_outcome_advantage, without the token dimension."""
    import numpy as np
    import torch

    inv = torch.from_numpy(np.unique(index, return_inverse=True)[1]).to(scores.device)
    c = torch.bincount(inv)[inv].to(scores.dtype)
    return ((c * scores - torch.bincount(inv, weights=scores)[inv]) / (c - 1).clamp_min(1)) * (c > 1)


def verl_rloo_vectorized(token_level_rewards, response_mask, index):
    """core_algos.compute_rloo_vectorized_outcome_advantage."""
    import torch

    scores = token_level_rewards.sum(dim=-1)
    with torch.no_grad():
        return verl_rloo_vectorized_scalars(scores, index).unsqueeze(-1) * response_mask


def verl_grpo_looped(token_level_rewards, response_mask, index, epsilon=1e-6,
                     norm_adv_by_std_in_grpo=True):
    """core_algos.compute_grpo_outcome_advantage (a Python loop over responses and groups)."""
    from collections import defaultdict

    import torch

    scores = token_level_rewards.sum(dim=-1)
    id2score, id2mean, id2std = defaultdict(list), {}, {}
    with torch.no_grad():
        bsz = scores.shape[0]
        for i in range(bsz):
            id2score[index[i]].append(scores[i])
        for idx in id2score:
            if len(id2score[idx]) == 1:
                id2mean[idx] = torch.tensor(0.0)
                id2std[idx] = torch.tensor(1.0)
            else:
                scores_tensor = torch.stack(id2score[idx])
                id2mean[idx] = torch.mean(scores_tensor)
                id2std[idx] = torch.std(scores_tensor)
        for i in range(bsz):
            if norm_adv_by_std_in_grpo:
                scores[i] = (scores[i] - id2mean[index[i]]) / (id2std[index[i]] + epsilon)
            else:
                scores[i] = scores[i] - id2mean[index[i]]
        return scores.unsqueeze(-1) * response_mask


# -- the worker -----------------------------------------------------------------------------

def _inputs(N, G, T, device):
    import numpy as np
    import torch

    gen = torch.Generator(device=device).manual_seed(N)
    R = torch.randint(0, 2, (N,), generator=gen, device=device).float()
    lengths = torch.randint(1, T + 1, (N,), generator=gen, device=device)
    mask = (torch.arange(T, device=device)[None, :] < lengths[:, None]).float()
    token_rewards = torch.zeros(N, T, device=device)
    token_rewards[torch.arange(N, device=device), lengths - 1] = R
    index = np.repeat(np.arange(N // G, dtype=np.int64), G)
    return R, mask, token_rewards, index


BUDGET = [0.05]   # seconds per function and round (--budget)


def _time(fns, reps, sync, budget=None):
    """Per-call times of each function in ``fns``, interleaved: each round runs each function
    in turn (in reverse order every other round), repeated enough to last about ``budget``
    seconds, so that a burst of load on a shared machine hits all of them alike. Returns
    (median time of each, median per-round ratio of each to the last one)."""
    budget = BUDGET[0] if budget is None else budget
    counts = []
    for fn in fns:
        fn()
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        one = max(time.perf_counter() - t0, 1e-6)
        counts.append(max(1, min(1000, int(budget / one))))
    clock = time.perf_counter if sync is not _nosync else time.process_time
    per = [[] for _ in fns]
    for r in range(reps):   # the order alternates, so that neither runs on the other's caches
        order = list(enumerate(zip(fns, counts)))
        for k, (fn, n) in (order if r % 2 == 0 else order[::-1]):
            sync()
            t = clock()
            for _ in range(n):
                fn()
            sync()
            per[k].append((clock() - t) / n)
    ratios = [statistics.median(a / b for a, b in zip(p, per[-1])) for p in per]
    return [statistics.median(p) for p in per], ratios


def _nosync():
    pass


def _one_size(A, est, names, N, G, T, reps, device, sync, with_verl):
    """Every row's times at batch size N."""
    import torch

    R, mask, tr, index = _inputs(N, G, T, device)
    with torch.inference_mode():   # an inference tensor cannot remember that it was checked
        fresh = mask.clone()
    adv = A.grpo_advantage(R, G)
    row = {}
    ref = {e: A.broadcast_to_tokens(est[e](R, G), mask) for e in ESTIMATORS}
    verl = {"grpo": lambda: verl_grpo_vectorized(tr, mask, index),
            "grpo_mean": lambda: verl_grpo_vectorized(tr, mask, index,
                                                      norm_adv_by_std_in_grpo=False),
            "rloo": lambda: verl_rloo_vectorized(tr, mask, index)}
    verl_s = {"grpo": lambda: verl_grpo_vectorized_scalars(R, index),
              "grpo_mean": lambda: verl_grpo_vectorized_scalars(
                  R, index, norm_adv_by_std_in_grpo=False),
              "rloo": lambda: verl_rloo_vectorized_scalars(R, index)}
    for e in ESTIMATORS:
        f = est[e]
        tok = (lambda f=f: A.broadcast_to_tokens(f(tr.sum(-1), G), mask))
        cold = (lambda f=f: A.broadcast_to_tokens(f(tr.sum(-1), G), fresh))
        sca = (lambda f=f: f(R, G))
        if with_verl:
            err = float((verl[e]() - ref[e]).abs().max())
            assert err < 1e-4, f"verl's {e} disagrees with pgbook's by {err}"
            (t, tv), (ratio, _) = _time([tok, verl[e]], reps, sync)
            row[f"verl {e} tokens"], row[f"ratio {e} tokens"] = tv, ratio
            (tc, _), (ratio, _) = _time([cold, verl[e]], reps, sync)
            row[f"pgbook {e} tokens cold"], row[f"ratio {e} tokens cold"] = tc, ratio
            (s_, sv), (ratio, _) = _time([sca, verl_s[e]], reps, sync)
            row[f"verl {e}"], row[f"ratio {e}"] = sv, ratio
        else:
            (t,), _ = _time([tok], reps, sync)
            (s_,), _ = _time([sca], reps, sync)
        row[f"pgbook {e} tokens"], row[f"pgbook {e}"] = t, s_
    (tb, tf, tm), _ = _time([lambda: A.broadcast_to_tokens(adv, mask),
                             lambda: A.broadcast_to_tokens(adv, fresh),
                             lambda: adv[:, None] * mask], reps, sync)
    row["broadcast_to_tokens"], row["adv[:, None] * mask"] = tb, tm
    row["broadcast_to_tokens cold"] = tf
    # the same calls with the module's validation helpers switched off
    saved = {n: getattr(A, n) for n in names}

    def unchecked(fn):
        def run():
            for n in names:
                setattr(A, n, lambda *a, **k: a[0] if a else None)
            try:
                return fn()
            finally:
                for n, f in saved.items():
                    setattr(A, n, f)
        return run

    for name, fn in (("broadcast_to_tokens", lambda: A.broadcast_to_tokens(adv, mask)),
                     ("pgbook grpo", lambda: A.grpo_advantage(R, G))):
        # swapping the helpers in and out costs a few µs: timed alone and subtracted
        (tc, tu, swap), _ = _time([fn, unchecked(fn), unchecked(lambda: None)], reps, sync)
        row[f"{name} validation share"] = 1 - (tu - swap) / tc
    if with_verl and N <= LOOPED_MAX:
        err = float((verl_grpo_looped(tr.cpu(), mask.cpu(), index) - ref["grpo"].cpu())
                    .abs().max())
        assert err < 1e-4, f"verl's looped grpo disagrees with pgbook's by {err}"
        (tl,), _ = _time([lambda: verl_grpo_looped(tr, mask, index)], max(1, reps // 2),
                         sync, budget=0.0)
        row["verl grpo looped tokens"] = tl
    return row


def worker(sizes, G, T, reps, device, threads, expect, with_verl):
    import torch

    C.set_threads(threads)
    C.check_pgbook_origin(expect)
    from pgbook.reward import advantages as A

    sync = torch.cuda.synchronize if device.startswith("cuda") else _nosync
    est = {"grpo": A.grpo_advantage, "grpo_mean": A.grpo_mean_advantage,
           "rloo": A.rloo_advantage}
    names = [n for n in A.__dict__ if n.startswith("check_")]
    return {str(N): _one_size(A, est, names, N, G, T, reps, device, sync, with_verl)
            for N in sizes}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="256,1024,4096,16384,65536")
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--budget", type=float, default=0.05,
                    help="seconds each function runs per round (repeated calls)")
    C.add_common_args(ap, "pgbook")
    ap.add_argument("--worker", nargs=2, metavar=("EXPECT", "VERL"), help=argparse.SUPPRESS)
    return ap


def _work(a) -> dict:
    sizes = [int(s) for s in a.sizes.split(",")]
    BUDGET[0] = a.budget
    expect = None if a.worker[0] == "-" else a.worker[0]
    return worker(sizes, a.group, a.tokens, a.reps, a.device, a.threads, expect,
                  a.worker[1] == "1")


def main() -> None:
    a = _parser().parse_args()
    if a.worker:
        print(json.dumps(_work(a)))
        return
    C.INLINE[0] = a.inline
    sizes = [int(s) for s in a.sizes.split(",")]
    G, T = a.group, a.tokens
    args = ["--sizes", a.sizes, "--group", str(G), "--tokens", str(T), "--reps", str(a.reps),
            "--budget", str(a.budget), "--device", a.device, "--threads", str(a.threads)]
    before_dir = C.baseline_path(a.baseline)
    head = C.header(a.device, a.threads)
    now = C.run_worker("bench_advantages.py", ["-", "1", *args], env=ALLOC_ENV)
    before = C.run_worker("bench_advantages.py", [before_dir, "0", *args],
                          pythonpath=before_dir, env=ALLOC_ENV) if before_dir else None
    us = 1e6

    def cell(x):
        return "—" if x is None else (f"{x * us:.0f}" if x * us >= 100 else f"{x * us:.3g}")

    out = [head, f"G={G}, T={T}; per-call times in µs (median of {a.reps} rounds, "
                 f"{'wall' if a.device != 'cpu' else 'CPU'} time)", "",
           "Token-level advantages (N, T) from token rewards (N, T):"]
    cols = [f"N={n}" for n in sizes]
    rows = []
    for e in ESTIMATORS:
        rows.append([f"pgbook {e}"] + [cell(now[str(n)][f"pgbook {e} tokens"]) for n in sizes])
        if before:
            rows.append([f"pgbook {e}, before"] +
                        [cell(before[str(n)][f"pgbook {e} tokens"]) for n in sizes])
        rows.append([f"verl {e} (vectorised)"] +
                    [cell(now[str(n)][f"verl {e} tokens"]) for n in sizes])
        rows.append([f"pgbook / verl, {e}"] +
                    [f"{now[str(n)][f'ratio {e} tokens']:.2f}" for n in sizes])
        rows.append([f"pgbook {e}, mask checked at this call"] +
                    [cell(now[str(n)][f"pgbook {e} tokens cold"]) for n in sizes])
        rows.append([f"pgbook / verl, {e}, mask checked at this call"] +
                    [f"{now[str(n)][f'ratio {e} tokens cold']:.2f}" for n in sizes])
    rows.append(["verl grpo (looped)"] +
                [cell(now[str(n)].get("verl grpo looped tokens")) for n in sizes])
    out.append(C.markdown(["estimator", *cols], rows))
    out += ["", "Advantages (N,) from rewards (N,):"]
    rows = []
    for e in ESTIMATORS:
        rows.append([f"pgbook {e}"] + [cell(now[str(n)][f"pgbook {e}"]) for n in sizes])
        if before:
            rows.append([f"pgbook {e}, before"] +
                        [cell(before[str(n)][f"pgbook {e}"]) for n in sizes])
        rows.append([f"verl {e} (vectorised)"] + [cell(now[str(n)][f"verl {e}"]) for n in sizes])
        rows.append([f"pgbook / verl, {e}"] +
                    [f"{now[str(n)][f'ratio {e}']:.2f}" for n in sizes])
    rows.append(["pgbook grpo: validation share"] +
                [f"{now[str(n)]['pgbook grpo validation share']:.0%}" for n in sizes])
    out.append(C.markdown(["estimator", *cols], rows))
    out += ["", f"broadcast_to_tokens (N, T = {T}) against a bare multiply:"]
    rows = [["broadcast_to_tokens"] + [cell(now[str(n)]["broadcast_to_tokens"]) for n in sizes]]
    if before:
        rows.append(["broadcast_to_tokens, before"] +
                    [cell(before[str(n)]["broadcast_to_tokens"]) for n in sizes])
    rows.append(["broadcast_to_tokens, mask checked at this call"] +
                [cell(now[str(n)]["broadcast_to_tokens cold"]) for n in sizes])
    rows.append(["adv[:, None] * mask"] + [cell(now[str(n)]["adv[:, None] * mask"]) for n in sizes])
    rows.append(["validation share"] +
                [f"{now[str(n)]['broadcast_to_tokens validation share']:.0%}" for n in sizes])
    out.append(C.markdown(["", *cols], rows))
    out.append(f"load average after: {C.load_now()}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
