"""The worker and the table shared by bench_logprobs.py and bench_entropy.py.

Each (variant, dtype) runs in a fresh subprocess that builds logits (B, T, V) requiring
grad, computes a loss from them (``what`` = "logprobs": token log-probs, then GRPO's clipped
policy loss; "entropy": per-position entropies, then an entropy bonus averaged over the
response tokens), and measures

* time: the median CPU time (``time.process_time``) and wall time of the forward (logits →
  loss) and of the backward over ``--reps`` runs (on CUDA: wall time between
  synchronisations, and the CPU column is the host's time);
* peak memory *above what was allocated before the step* (logits, tokens, masks): on CUDA
  ``torch.cuda.max_memory_allocated()``; on the CPU the process's peak resident set size
  (``getrusage``) minus its RSS before the step. Torch has no peak counter for host memory
  and the profiler misses the temporaries allocated and freed *inside* an operator (the
  (B, T, V) buffer inside ``torch.logsumexp``), which are what this measures. The worker
  allocates its inputs first without any transient larger than themselves, and
  ``MALLOC_MMAP_THRESHOLD_`` is pinned to 64 KiB so that freed tensors go back to the
  system: RSS then tracks live tensor bytes to within a page. That setting makes every
  allocation a system call and a round of page faults, which would bill block-wise code
  for the measurement itself, so the times come from a second fresh subprocess with the
  allocator's defaults. The (B, T, V) gradient of the
  logits is part of the fwd+bwd peak in every variant (it is the result, not overhead);
* the floor: the time of one pass that only reads the logits (``amax`` over the
  vocabulary), the least any exact method must spend.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C

DTYPES = ["float32", "bfloat16"]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def worker(what: str, variant: str, dtype_name: str, B: int, T: int, V: int, reps: int,
           device: str, threads: int, expect: str | None, measure: str) -> dict:
    """One (variant, dtype): ``measure`` = "memory" (one step, peak memory) or "time"."""
    import torch

    C.set_threads(threads)
    C.check_pgbook_origin(expect)
    from pgbook import methods
    from pgbook.reward import advantages
    from pgbook.trajectory import tokens

    dt = getattr(torch, dtype_name)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    chunk = 1 if "chunk" in variant else None

    def compute(z, y):
        if what == "logprobs":
            if variant == "naive":
                return torch.log_softmax(z.float(), dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
            return tokens.token_logprobs(z, y, chunk_size=chunk)
        if variant == "naive":
            logp = torch.log_softmax(z.float(), dim=-1)
            return -(logp.exp() * logp).sum(-1)
        if variant == "floor":
            return torch.amax(z, dim=-1).float()
        return tokens.entropy_from_logits(z, chunk_size=chunk)

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
        if variant == "floor":   # read the logits once (the least an exact method can do)
            return torch.amax(logits.detach(), dim=-1).sum()
        out = compute(logits, toks)
        if what == "logprobs":
            return methods.policy_loss(out, old, adv, mask)[0]
        return -(out * mask).sum() / mask.sum()          # an entropy bonus (token mean)

    def backward(loss):
        if variant != "floor":
            loss.backward()

    # warm up on a small slice (kernel selection, lazy imports), not the full size
    if variant != "floor":
        small = logits.detach()[:1, :8].clone().requires_grad_()
        out = compute(small, toks[:1, :8])
        out.float().sum().backward()
        del small, out
    logits.grad = None

    def sync():
        if cuda:
            torch.cuda.synchronize()

    peak_fwd = peak_all = 0
    if measure == "time":
        pass
    elif cuda:
        sync()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        loss = step()
        sync()
        peak_fwd = torch.cuda.max_memory_allocated() - base
        backward(loss)
        sync()
        peak_all = torch.cuda.max_memory_allocated() - base
    else:
        base = _rss_bytes()
        if _peak_rss_bytes() > base + (16 << 20):
            print(f"warning: setup peak exceeded the baseline by "
                  f"{(_peak_rss_bytes() - base) / 2**20:.0f} MiB", file=sys.stderr)
        loss = step()
        peak_fwd = _peak_rss_bytes() - base
        backward(loss)
        peak_all = _peak_rss_bytes() - base
    if measure == "memory":
        grad_ok = variant == "floor" or bool(torch.isfinite(logits.grad).all())
        check = 0.0 if variant == "floor" else \
            float(compute(logits.detach()[:1, :4], toks[:1, :4]).double().sum())
        return {"peak_fwd_bytes": peak_fwd, "peak_all_bytes": peak_all, "grad_finite": grad_ok,
                "check": check, "logits_bytes": logits.numel() * logits.element_size()}

    t_fwd, t_bwd, c_fwd, c_bwd = [], [], [], []
    for _ in range(reps):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step()
        sync()
        t1, c1 = time.perf_counter(), time.process_time()
        backward(loss)
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
            "cpu_bwd_s": statistics.median(c_bwd)}


def main(what: str, doc: str, variants: list[str]) -> str:
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions (median)")
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument("--variants", default=",".join(variants))
    C.add_common_args(ap, "pgbook", inline_help="run every row in this process (a smoke run: "
                      "the memory figures are then not per row, and there is no 'before' row)")
    ap.add_argument("--worker", nargs=4, metavar=("VARIANT", "DTYPE", "EXPECT", "MEASURE"),
                    help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        import json

        expect = None if a.worker[2] == "-" else a.worker[2]
        print(json.dumps(worker(what, a.worker[0], a.worker[1], a.batch, a.tokens, a.vocab,
                                a.reps, a.device, a.threads, expect, a.worker[3])))
        return ""

    import torch

    B, T, V = a.batch, a.tokens, a.vocab
    mib = 2 ** 20
    one = B * T * V
    variants = a.variants.split(",")
    before = None if a.inline else C.baseline_path(a.baseline)
    if before is not None:
        variants = [*variants, "pgbook before"]
    lines = [C.header(a.device, a.threads),
             f"B={B} T={T} V={V}, median of {a.reps}; one (B, T, V) tensor: {one * 4 / mib:.0f} MiB "
             f"in float32, {one * 2 / mib:.0f} MiB in bfloat16"]
    env = {"MALLOC_MMAP_THRESHOLD_": "65536"}
    rows = []
    for dt in a.dtypes.split(","):
        for v in ["floor", *variants]:
            path = before if v == "pgbook before" else None
            args = ["--batch", str(B), "--tokens", str(T), "--vocab", str(V), "--reps",
                    str(a.reps), "--device", a.device, "--threads", str(a.threads)]
            name = v.replace("pgbook before", "pgbook")
            if a.inline:
                r = worker(what, name, dt, B, T, V, a.reps, a.device, a.threads, None, "memory")
                r.update(worker(what, name, dt, B, T, V, a.reps, a.device, a.threads, None,
                                "time"))
            else:
                r = C.run_worker(f"bench_{what}.py", [name, dt, path or "-", "memory", *args],
                                 pythonpath=path, env=env)
                r.update(C.run_worker(f"bench_{what}.py", [name, dt, path or "-", "time", *args],
                                      pythonpath=path))
            r["variant"] = v
            rows.append(r)
            print(f"  done: {dt:8s} {v}", file=sys.stderr)
    table = []
    for dt in a.dtypes.split(","):
        by = {r["variant"]: r for r in rows if r["dtype"] == dt}
        naive = by["naive"]
        naive_t = naive["cpu_fwd_s"] + naive["cpu_bwd_s"]
        floor_t = by["floor"]["cpu_fwd_s"] if a.device == "cpu" else by["floor"]["fwd_s"]
        for v in ["floor", *variants]:
            r = by[v]
            lb = r["logits_bytes"]
            tot = r["cpu_fwd_s"] + r["cpu_bwd_s"]
            wall = r["fwd_s"] + r["bwd_s"]
            name = "read the logits once (floor)" if v == "floor" else v
            table.append([dt, name, f"{r['cpu_fwd_s']:.3g}", f"{r['cpu_bwd_s']:.3g}",
                          f"{tot:.3g}", f"{wall:.3g}",
                          "—" if v == "floor" else f"{tot / naive_t:.2f}",
                          f"{(r['cpu_fwd_s'] if a.device == 'cpu' else r['fwd_s']) / floor_t:.1f}",
                          f"{r['peak_fwd_bytes'] / mib:.0f} ({r['peak_fwd_bytes'] / lb:.2f}×)",
                          f"{r['peak_all_bytes'] / mib:.0f} ({r['peak_all_bytes'] / lb:.2f}×)"])
        checks = {v: by[v]["check"] for v in variants}
        spread = max(checks.values()) - min(checks.values())
        assert spread < 1e-3, f"variants disagree on the values ({dt}): {checks}"
        assert all(by[v]["grad_finite"] for v in variants), "a gradient was not finite"
    lines.append(C.markdown(
        ["dtype", "variant", "fwd CPU (s)", "bwd CPU (s)", "fwd+bwd CPU (s)", "fwd+bwd wall (s)",
         "fwd+bwd CPU / naive", "fwd / floor", "peak extra fwd, MiB (× logits)",
         "peak extra fwd+bwd, MiB (× logits)"], table, align="ll" + "r" * 8))
    lines.append(f"load average after: {C.load_now()}; torch {torch.__version__}")
    out = "\n".join(lines)
    print(out)
    return out
