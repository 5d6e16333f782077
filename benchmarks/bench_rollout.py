"""Benchmark: rollout throughput of the tiny GPT, with and without the KV cache.

    python benchmarks/bench_rollout.py                          # lengths 16, 64, 256
    python benchmarks/bench_rollout.py --baseline f3182df       # also the sampler as it was then
    python benchmarks/bench_rollout.py --lengths 4,8 --batch 4 --configs book   # quick
    python benchmarks/bench_rollout.py --device cuda

:func:`pgbook.worlds.gpt.sample` draws B responses of N new tokens after a prompt of P
tokens, either with the KV cache (``cache=True``, the default: the prompt is run once, then
each step runs the one new token against the cached keys and values) or without it
(``cache=False``: every step re-runs the whole prefix, which is what the sampler did before
the cache). The EOS is an extra id V whose logit is set to −1e4 (the final LayerNorm's
feature 0 made the constant 1, and the head's weight on it −1e4 for id V), so the model never
produces it and every row runs all N steps. Models (random weights, ``GPTConfig(vocab_size=V
+ 1, block_size=P + max N, ...)``):

* ``book``: the book's policy, 1 block, 2 heads, 32 channels (about 14k parameters at V=16);
* ``4x128``: 4 blocks, 4 heads, 128 channels (about 0.8M parameters).

Reported: generated tokens per second (B·N over the CPU time of the call, and over its wall
time), the speed-up of the cache, and whether both paths drew the same tokens (they use the
same random draws in the same order; float32 round-off could in principle flip a draw
that lands within ~1e-7 of a boundary). Each time is the median over ``--reps`` calls
(one call for the slowest uncached cases).

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

CONFIGS = {"book": dict(n_layer=1, n_head=2, n_embd=32),
           "4x128": dict(n_layer=4, n_head=4, n_embd=128)}


def worker(configs, lengths, B, P, V, reps, device, threads, expect, modes, budget):
    import torch

    C.set_threads(threads)
    C.check_pgbook_origin(expect)
    from pgbook import make_generator
    from pgbook.worlds import gpt

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    out = {}
    for name in configs:
        cfg = gpt.GPTConfig(V + 1, block_size=P + max(lengths), **CONFIGS[name])
        model = gpt.GPT(cfg, make_generator(0))
        with torch.no_grad():  # id V is the EOS, and its logit is −1e4: it is never drawn
            model.ln_f.weight[0], model.ln_f.bias[0] = 0.0, 1.0   # feature 0 is the constant 1
            model.head.weight[V, 0] = -1e4
        model = model.to(dev)
        g = make_generator(1)
        prompts = torch.randint(3, V, (B, P), generator=g).to(dev)
        prompts[:, 0] = gpt.BOS
        for N in lengths:
            res = {}
            tokens = {}
            for mode in modes:
                kw = {} if mode == "before" else {"cache": mode == "cached"}

                def run(kw=kw, N=N, model=model, prompts=prompts):
                    gen = make_generator(2, dev)
                    return gpt.sample(model, prompts, N, gen, eos_id=V, **kw)

                sync()
                c0, w0 = time.process_time(), time.perf_counter()
                s = run()
                sync()
                cpu, wall = [time.process_time() - c0], [time.perf_counter() - w0]
                tokens[mode] = s.tokens.cpu()
                n = max(0, min(reps - 1, int(budget / max(wall[0], 1e-6))))
                for _ in range(n):
                    sync()
                    c0, w0 = time.process_time(), time.perf_counter()
                    run()
                    sync()
                    cpu.append(time.process_time() - c0)
                    wall.append(time.perf_counter() - w0)
                res[mode] = {"cpu": statistics.median(cpu), "wall": statistics.median(wall),
                             "calls": len(cpu)}
            if "cached" in tokens and "uncached" in tokens:
                res["same_tokens"] = bool(torch.equal(tokens["cached"], tokens["uncached"]))
            out[f"{name} {N}"] = res
        out[f"{name} params"] = model.num_parameters()
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--lengths", default="16,64,256")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--budget", type=float, default=4.0,
                    help="seconds of repetitions per case at most (after the first call)")
    C.add_common_args(ap, "the sampler")
    ap.add_argument("--worker", nargs=2, metavar=("EXPECT", "MODES"), help=argparse.SUPPRESS)
    return ap


def _work(a) -> dict:
    configs, lengths = a.configs.split(","), [int(x) for x in a.lengths.split(",")]
    expect = None if a.worker[0] == "-" else a.worker[0]
    return worker(configs, lengths, a.batch, a.prompt, a.vocab, a.reps, a.device, a.threads,
                  expect, a.worker[1].split(","), a.budget)


def main() -> None:
    a = _parser().parse_args()
    if a.worker:
        print(json.dumps(_work(a)))
        return
    C.INLINE[0] = a.inline
    configs, lengths = a.configs.split(","), [int(x) for x in a.lengths.split(",")]
    args = ["--configs", a.configs, "--lengths", a.lengths, "--batch", str(a.batch), "--prompt",
            str(a.prompt), "--vocab", str(a.vocab), "--reps", str(a.reps), "--budget",
            str(a.budget), "--device", a.device, "--threads", str(a.threads)]
    head = C.header(a.device, a.threads)
    now = C.run_worker("bench_rollout.py", ["-", "uncached,cached", *args])
    before_dir = C.baseline_path(a.baseline)
    before = C.run_worker("bench_rollout.py", [before_dir, "before", *args],
                          pythonpath=before_dir) if before_dir else None
    rows = []
    for name in configs:
        for N in lengths:
            r = now[f"{name} {N}"]
            toks = a.batch * N
            cells = [f"{name} ({now[f'{name} params'] / 1000:.0f}k)", N]
            if before:
                b = before[f"{name} {N}"]["before"]
                cells += [f"{toks / b['cpu']:.0f}"]
            cells += [f"{toks / r['uncached']['cpu']:.0f}", f"{toks / r['cached']['cpu']:.0f}",
                      f"{toks / r['uncached']['wall']:.0f}", f"{toks / r['cached']['wall']:.0f}",
                      f"{r['uncached']['cpu'] / r['cached']['cpu']:.1f}×",
                      "yes" if r["same_tokens"] else "no"]
            rows.append(cells)
    heads = ["model (parameters)", "N"]
    if before:
        heads += ["before: tokens/s (CPU)"]
    heads += ["uncached: tokens/s (CPU)", "cached: tokens/s (CPU)", "uncached: tokens/s (wall)",
              "cached: tokens/s (wall)", "cache speed-up (CPU)", "same tokens"]
    print("\n".join([head, f"B={a.batch} rows, prompt P={a.prompt}, V={a.vocab}, N new tokens "
                           f"per row; median of up to {a.reps} calls",
                     C.markdown(heads, rows), f"load average after: {C.load_now()}"]))


if __name__ == "__main__":
    main()
