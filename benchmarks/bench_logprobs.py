"""Benchmark: token log-probs + policy loss, pgbook vs the textbook log_softmax + gather.

    python benchmarks/bench_logprobs.py                      # B=8, T=1024, V=32000
    python benchmarks/bench_logprobs.py --batch 4 --tokens 256 --vocab 8000 --reps 3
    python benchmarks/bench_logprobs.py --device cuda

Each variant computes, from logits (B, T, V) that require grad,

    logp  = <variant>(logits, tokens)                          # (B, T)
    loss  = pgbook.rl.policy_loss(logp, old_logp, Â, mask)     # PPO clip, seq-mean-token-mean
    loss.backward()                                            # gradient (B, T, V)

with variants ``naive`` (``log_softmax(logits.float()).gather(tokens)``, what most code
does), ``pgbook`` (:func:`pgbook.tokens.token_logprobs`) and ``pgbook chunk=1``
(``chunk_size=1``: one sequence of the batch at a time). The loss part is the same code in
every variant, so the differences come from the log-prob computation.

What is measured
----------------
* time: median wall time of forward (logits → loss) and backward over ``--reps`` runs,
  and the median CPU time (``time.process_time``, all threads of the process) of the same
  runs: on a shared machine the wall time also counts waiting for other processes, the
  CPU time much less so (it still includes page-fault handling in the kernel).
* peak memory *above what was allocated before the step* (the logits, tokens, masks):
  - forward: the peak while computing the loss; what stays alive for backward is included;
  - fwd+bwd: the peak over forward and backward together. The (B, T, V) gradient of the
    logits is part of it in every variant (it is the result, not overhead).

How peak memory is measured, and why it is honest
--------------------------------------------------
* CUDA: ``torch.cuda.reset_peak_memory_stats()``, then ``torch.cuda.max_memory_allocated()``
  minus the memory allocated before the step: the caching allocator's exact byte count.
* CPU: torch has no peak counter for host memory, and the profiler's memory events do
  not see the temporaries allocated and freed *inside* an operator (e.g. the (B, T, V)
  buffer inside ``logsumexp``), which are exactly what this benchmark is about. So each
  (variant, dtype) runs in a **fresh subprocess** that first allocates its inputs (no
  transient larger than the inputs themselves), reads its resident set size (RSS, from
  /proc/self/statm), runs forward (then reads ``getrusage(RUSAGE_SELF).ru_maxrss``, the
  process's peak RSS), runs backward (reads it again). Peak − RSS-before is the extra memory
  the step needed at its worst moment. Tensors this large (≥ 32 MiB) are allocated with
  mmap by glibc (``MALLOC_MMAP_THRESHOLD_`` is pinned to 64 KiB in the worker so small
  ones are too) and are returned to the OS when freed, so RSS tracks live tensor bytes
  to within the page granularity; the figures agree with the byte counts one derives by
  hand (e.g. naive forward ≈ one extra float32 (B, T, V) copy). Timed repetitions run
  after the memory measurement, in the same subprocess.

This is a benchmark, not a test: numbers depend on the machine (and on other load).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = ["naive", "pgbook", "pgbook chunk=1"]
DTYPES = ["float32", "bfloat16"]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def worker(variant: str, dtype_name: str, B: int, T: int, V: int, reps: int, device: str) -> dict:
    import torch

    from pgbook import advantages, rl, tokens

    torch.manual_seed(0)
    dt = getattr(torch, dtype_name)
    dev = torch.device(device)
    cuda = dev.type == "cuda"

    def logprobs(z, y):
        if variant == "naive":
            return torch.log_softmax(z.float(), dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
        return tokens.token_logprobs(z, y, chunk_size=1 if "chunk" in variant else None)

    # inputs: no transient larger than the inputs themselves
    gen = torch.Generator(device=dev).manual_seed(0)
    logits = torch.randn(B, T, V, generator=gen, dtype=dt, device=dev).requires_grad_()
    toks = torch.randint(0, V, (B, T), generator=gen, device=dev)
    lengths = torch.randint(T // 4, T + 1, (B,), generator=gen, device=dev)
    mask = (torch.arange(T, device=dev)[None, :] < lengths[:, None]).float()
    rewards = torch.randint(0, 2, (B,), generator=gen, device=dev).float()
    group = 4 if B % 4 == 0 else 1
    adv = advantages.broadcast_to_tokens(advantages.grpo_advantage(rewards, group), mask)
    with torch.no_grad():  # 64 positions at a time: no transient near the size of the step's
        old = torch.cat([tokens.token_logprobs(logits.detach()[:, t:t + 64], toks[:, t:t + 64],
                                               chunk_size=1) for t in range(0, T, 64)], 1)
        old = old + 0.01 * torch.randn(B, T, generator=gen, device=dev)

    def step():
        lp = logprobs(logits, toks)
        loss, _ = rl.policy_loss(lp, old, adv, mask)
        return loss

    # warm up on a small slice (kernel selection, lazy imports), not the full size
    small = logits.detach()[:1, :8].clone().requires_grad_()
    lp = logprobs(small, toks[:1, :8])
    rl.policy_loss(lp, old[:1, :8], adv[:1, :8], torch.ones(1, 8, device=dev))[0].backward()
    del small, lp
    logits.grad = None

    # memory: one measured step
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        loss = step()
        torch.cuda.synchronize()
        peak_fwd = torch.cuda.max_memory_allocated() - base
        loss.backward()
        torch.cuda.synchronize()
        peak_all = torch.cuda.max_memory_allocated() - base
    else:
        base = _rss_bytes()
        if _peak_rss_bytes() > base + (16 << 20):
            print(f"warning: setup peak exceeded the baseline by "
                  f"{(_peak_rss_bytes() - base) / 2**20:.0f} MiB", file=sys.stderr)
        loss = step()
        peak_fwd = _peak_rss_bytes() - base
        loss.backward()
        peak_all = _peak_rss_bytes() - base
    grad_ok = bool(torch.isfinite(logits.grad).all())
    lp_check = float(logprobs(logits.detach()[:1, :4], toks[:1, :4]).double().sum())
    del loss
    logits.grad = None

    def sync():
        if cuda:
            torch.cuda.synchronize()

    t_fwd, t_bwd, c_fwd, c_bwd = [], [], [], []
    for _ in range(reps):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step()
        sync()
        t1, c1 = time.perf_counter(), time.process_time()
        loss.backward()
        sync()
        t2, c2 = time.perf_counter(), time.process_time()
        t_fwd.append(t1 - t0)
        t_bwd.append(t2 - t1)
        c_fwd.append(c1 - c0)
        c_bwd.append(c2 - c1)
        del loss
        logits.grad = None
    return {"variant": variant, "dtype": dtype_name, "fwd_s": statistics.median(t_fwd),
            "bwd_s": statistics.median(t_bwd), "cpu_fwd_s": statistics.median(c_fwd),
            "cpu_bwd_s": statistics.median(c_bwd), "peak_fwd_bytes": peak_fwd,
            "peak_all_bytes": peak_all, "grad_finite": grad_ok, "lp_check": lp_check}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--reps", type=int, default=2, help="timed repetitions (median)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--worker", nargs=2, metavar=("VARIANT", "DTYPE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker[0], a.worker[1], a.batch, a.tokens, a.vocab, a.reps,
                                a.device)))
        return

    import torch

    B, T, V = a.batch, a.tokens, a.vocab
    mib = 2 ** 20
    one = B * T * V
    print(f"B={B} T={T} V={V} device={a.device} torch={torch.__version__} "
          f"threads={torch.get_num_threads()} reps={a.reps}")
    print(f"one (B, T, V) tensor: {one * 4 / mib:.0f} MiB in float32, {one * 2 / mib:.0f} MiB in "
          f"bfloat16 (the logits' gradient, counted in fwd+bwd, is one of them)\n")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    rows = []
    for dt in a.dtypes.split(","):
        for v in a.variants.split(","):
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", v, dt, "--batch", str(B),
                   "--tokens", str(T), "--vocab", str(V), "--reps", str(a.reps),
                   "--device", a.device]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                raise SystemExit(f"worker {v} {dt} failed:\n{out.stderr}")
            if out.stderr.strip():
                print(out.stderr.strip(), file=sys.stderr)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  done: {dt:8s} {v}", file=sys.stderr)
    print("| dtype | variant | forward wall (s) | backward wall (s) | forward CPU (s) "
          "| backward CPU (s) | peak extra, forward (MiB) | peak extra, fwd+bwd (MiB) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['dtype']} | {r['variant']} | {r['fwd_s']:.3f} | {r['bwd_s']:.3f} "
              f"| {r['cpu_fwd_s']:.3f} | {r['cpu_bwd_s']:.3f} "
              f"| {r['peak_fwd_bytes'] / mib:.0f} | {r['peak_all_bytes'] / mib:.0f} |")
    for dt in a.dtypes.split(","):
        checks = {r["variant"]: r["lp_check"] for r in rows if r["dtype"] == dt}
        spread = max(checks.values()) - min(checks.values())
        assert spread < 1e-3, f"variants disagree on the log-probs ({dt}): {checks}"
        assert all(r["grad_finite"] for r in rows), "a gradient was not finite"


if __name__ == "__main__":
    main()
