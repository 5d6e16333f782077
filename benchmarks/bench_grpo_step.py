"""Benchmark: the cost of a GRPO step at the book's settings (chapter 12), before and after.

    python benchmarks/bench_grpo_step.py --baseline f3182df      # before/after, 5 runs each
    python benchmarks/bench_grpo_step.py --steps 3 --pretrain-steps 5 --repeats 1   # quick
    python benchmarks/bench_grpo_step.py --device cuda

Chapter 12's run: the ``Reverse`` task, the pretrained policy of chapter 11
(``pretrained_policy(task)``: one block, 2 heads, 32 channels, 200 supervised steps), then
``grpo_train(model, task, steps=20, prompts_per_step=16, group_size=8,
generator=make_generator(4), method="GRPO", beta=0.04, ref_model=<frozen
copy>, epochs_per_batch=2, eps_low=0.2, lr=3e-3)``: 128 responses of up to 7 tokens after
8-token prompts per step, two AdamW updates per step, one thread (as the chapter sets).

Each run is a fresh subprocess that loads the same pretrained weights (trained once and
saved), warms up with a 2-step run on a copy (lazy imports, first-call costs), then times
the 20-step run: CPU time (``time.process_time``) and wall time per step. "Before" and
"after" runs alternate, ``--repeats`` times each, and the table gives the medians. It also
reports each run's learning curve: the step at which the 5-step mean reward first reaches
0.9 (the chapter's target), the rewards, and the largest difference between the two
versions' per-step rewards and KL. A second table breaks the step into phases (wrappers
around the functions the trainer calls, from a separate run, so the wrappers' own cost
does not enter the first table).

This is a benchmark, not a test: numbers depend on the machine (and on other load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C

TARGET, WINDOW = 0.9, 5


def _settings(steps: int, method: str = "GRPO") -> dict:
    return dict(steps=steps, prompts_per_step=16, group_size=8, method=method,
                beta=0.04, epochs_per_batch=2, eps_low=0.2, lr=3e-3, progress=False)


def _phases(G_):
    """Wrap what grpo_train calls with CPU timers; returns the dict they fill."""
    import torch

    acc: dict = {}

    def timed(name, fn):
        def run(*a, **k):
            c = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                acc[name] = acc.get(name, 0.0) + time.process_time() - c
        return run

    G_.sample = timed("sample(): the rollout", G_.sample)
    G_.logprobs = timed("logprobs(): before, reference + each update's forward; after, "
                        "reference", G_.logprobs)
    G_._trainer_logprobs = timed("_trainer_logprobs(): before, the old log-probs; after, each "
                                 "update's forward (the first gives the old log-probs)",
                                 G_._trainer_logprobs)
    G_._methods.policy_loss = timed("policy loss", G_._methods.policy_loss)
    G_._adv.compute_advantages = timed("advantages", G_._adv.compute_advantages)
    torch.Tensor.backward = timed("backward", torch.Tensor.backward)
    torch.nn.utils.clip_grad_norm_ = timed("grad clip", torch.nn.utils.clip_grad_norm_)
    torch.optim.AdamW.step = timed("AdamW step", torch.optim.AdamW.step)
    return acc


def floor_step(model, ref_model, opt, task, generator, G: int = 8, n_prompts: int = 16,
               beta: float = 0.04, mu: int = 2) -> None:
    """The model's passes of one GRPO step and nothing else (the floor row).

    A KV-cached decode of G responses to each of ``n_prompts`` prompts (each prompt run
    once; all N = ``task.max_new_tokens`` positions, where the trainer stops once every
    response has ended, which at chapter 12's settings is rarely earlier), the reference log-probs under ``inference_mode``, and μ updates: a forward pass
    (each group's prompt once), log_softmax + gather, the loss −mean(Â·log π) + β·mean(log π
    − log π_ref), backward, the clip and AdamW. No input checks (``values_checked``), no
    response mask, reward, advantage estimator, metrics or history.
    """
    import torch

    from pgbook.worlds.gpt import next_token_logits

    def token_lp(z, tokens):
        return torch.log_softmax(z, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

    prompts = task.sample(n_prompts, generator).prompts
    P, N = prompts.shape[1], task.max_new_tokens
    with torch.inference_mode():
        kv = model.new_cache(P + N)
        z = model(prompts, kv)[:, -1].repeat_interleave(G, 0)
        kv.select(torch.arange(n_prompts, device=prompts.device).repeat_interleave(G))
        columns = [prompts.repeat_interleave(G, 0)]
        for t in range(N):   # all N tokens: the trainer's passes run over P + N columns
            nxt = torch.multinomial(torch.log_softmax(z, -1).exp(), 1, generator=generator)
            columns.append(nxt)
            if t < N - 1:
                z = model(nxt, kv)[:, -1]
        tokens = torch.cat(columns, 1)
    tokens = tokens.clone()
    adv = torch.randn(tokens.shape[0], 1, generator=generator, device=tokens.device)
    with torch.inference_mode():
        ref = token_lp(next_token_logits(ref_model, tokens, P), tokens[:, 1:])
    ref = ref.clone()
    for _ in range(mu):
        lp = token_lp(next_token_logits(model, tokens, P), tokens[:, 1:])
        loss = -(lp * adv).mean() + beta * (lp - ref).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()


def worker(init: str, steps: int, pretrain_steps: int, device: str, threads: int,
           expect: str | None, phases: bool, floor: bool = False) -> dict:
    import copy

    import torch

    C.set_threads(threads)
    C.check_pgbook_origin(expect)
    import pgbook as pg
    from pgbook.train import grpo as G_
    from pgbook.worlds.gpt import GPT
    from pgbook.worlds.tasks import Reverse, policy_config, pretrained_policy

    task = Reverse()
    model = GPT(policy_config(task))
    if os.path.exists(init):
        model.load_state_dict(torch.load(init))
    else:
        model, _ = pretrained_policy(task, steps=pretrain_steps, progress=False)
        torch.save(model.state_dict(), init)
    dev = torch.device(device)
    model = model.to(dev)

    # chapter 12's recipe (k3 KL in the loss, per-sequence token means) is "GRPO" today and
    # was "GRPO (DeepSeekMath)" before the methods were renamed (04d1f09)
    try:
        method = "GRPO (DeepSeekMath)"
        pg.methods.method_config(method)
    except ValueError:
        method = "GRPO"
    if pg.methods.method_config(method).get("kl") != "k3_loss":
        raise SystemExit(f"{method!r} is not chapter 12's recipe: {pg.methods.method_config(method)}")

    if floor:
        return _floor_worker(model, task, steps, dev)

    def run(n):
        m = copy.deepcopy(model)
        return G_.grpo_train(m, task, generator=pg.make_generator(4, dev),
                             ref_model=copy.deepcopy(model), **_settings(n, method))

    run(2)                                              # warm-up on a copy
    acc = _phases(G_) if phases else None
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    c0, w0 = time.process_time(), time.perf_counter()
    h = run(steps)
    sync()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"cpu_step": cpu / h.steps, "wall_step": wall / h.steps, "steps": h.steps,
            "first_step": h.first_step(TARGET, WINDOW), "reward": h.reward.tolist(),
            "kl_ref": h.kl_ref.tolist(), "entropy": h.entropy.tolist(),
            "phases": {k: v / h.steps for k, v in acc.items()} if acc else None}


def _floor_worker(model, task, steps: int, dev) -> dict:
    """Times ``steps`` calls of :func:`floor_step` (after 2 to warm up), like :func:`worker`."""
    import copy

    import torch

    import pgbook as pg
    from pgbook._validate import values_checked

    s = _settings(steps)
    ref_model = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], betas=(0.9, 0.99), weight_decay=0.0,
                            foreach=True)
    generator = pg.make_generator(4, dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    args = (model, ref_model, opt, task, generator, s["group_size"], s["prompts_per_step"],
            s["beta"], s["epochs_per_batch"])
    with values_checked():
        for _ in range(2):
            floor_step(*args)
        sync()
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(steps):
            floor_step(*args)
        sync()
    return {"cpu_step": (time.process_time() - c0) / steps,
            "wall_step": (time.perf_counter() - w0) / steps, "steps": steps}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--pretrain-steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    C.add_common_args(ap, "grpo_train")
    ap.add_argument("--no-floor", action="store_true",
                    help="leave out the floor row (the model's passes alone)")
    ap.add_argument("--worker", nargs=3, metavar=("INIT", "EXPECT", "MODE"),
                    help=argparse.SUPPRESS)
    return ap


def _work(a) -> dict:
    expect = None if a.worker[1] == "-" else a.worker[1]
    return worker(a.worker[0], a.steps, a.pretrain_steps, a.device, a.threads, expect,
                  a.worker[2] == "1", floor=a.worker[2] == "floor")


def main() -> None:
    a = _parser().parse_args()
    if a.worker:
        print(json.dumps(_work(a)))
        return
    C.INLINE[0] = a.inline
    head = C.header(a.device, a.threads)
    before_dir = C.baseline_path(a.baseline)
    versions = {"after": None}
    if before_dir:
        versions = {"before": before_dir, "after": None}
    args = ["--steps", str(a.steps), "--pretrain-steps", str(a.pretrain_steps), "--device",
            a.device, "--threads", str(a.threads)]
    with tempfile.TemporaryDirectory() as tmp:
        init = os.path.join(tmp, "pretrained.pt")
        if before_dir:  # pretrain once with the current code; every run loads those weights
            C.run_worker("bench_grpo_step.py", [init, "-", "0", "--steps", "1", *args[2:]])
        runs = {v: [] for v in versions}
        floors = []
        for _ in range(a.repeats):
            for v, path in versions.items():
                runs[v].append(C.run_worker("bench_grpo_step.py", [init, path or "-", "0", *args],
                                            pythonpath=path))
            if not a.no_floor:
                floors.append(C.run_worker("bench_grpo_step.py", [init, "-", "floor", *args]))
        timed = {v: C.run_worker("bench_grpo_step.py", [init, path or "-", "1", *args],
                                 pythonpath=path) for v, path in versions.items()}
    phases = {v: r["phases"] for v, r in timed.items()}
    med = {v: {k: statistics.median(r[k] for r in rs) for k in ("cpu_step", "wall_step")}
           for v, rs in runs.items()}
    rows = []
    for v, rs in runs.items():
        r0 = rs[0]
        rows.append([v, f"{med[v]['cpu_step'] * 1e3:.1f}",
                     ", ".join(f"{r['cpu_step'] * 1e3:.1f}" for r in rs),
                     f"{med[v]['wall_step'] * 1e3:.1f}", r0["steps"],
                     "never" if r0["first_step"] is None else r0["first_step"],
                     f"{r0['reward'][0]:.3f} → {r0['reward'][-1]:.3f}"])
    if floors:
        med["floor"] = {k: statistics.median(r[k] for r in floors) for k in ("cpu_step", "wall_step")}
        rows.append(["floor: the model's passes alone", f"{med['floor']['cpu_step'] * 1e3:.1f}",
                     ", ".join(f"{r['cpu_step'] * 1e3:.1f}" for r in floors),
                     f"{med['floor']['wall_step'] * 1e3:.1f}", floors[0]["steps"], "", ""])
    out = [head, f"chapter 12's GRPO run: {a.steps} steps of 16 prompts × G = 8, μ = 2; "
                 f"{a.repeats} run(s) per version, alternating", ""]
    out.append(C.markdown(["version", "CPU ms/step (median)", "CPU ms/step (each run)",
                           "wall ms/step (median)", "steps", f"step reaching {TARGET} "
                           f"({WINDOW}-step mean)", "reward first → last"], rows,
                          align="l" + "r" * 6))
    if before_dir:
        b, n = runs["before"][0], runs["after"][0]
        same = b["reward"] == n["reward"]
        dkl = max(abs(x - y) for x, y in zip(b["kl_ref"], n["kl_ref"]))
        dent = max(abs(x - y) for x, y in zip(b["entropy"], n["entropy"]))
        pairs = sorted(b_["cpu_step"] / a_["cpu_step"]
                       for b_, a_ in zip(runs["before"], runs["after"]))
        out.append(f"\nspeed-up (CPU per step, medians): "
                   f"{med['before']['cpu_step'] / med['after']['cpu_step']:.2f}× (run by run, "
                   f"each before/after pair run back to back: "
                   f"{', '.join(f'{x:.2f}' for x in pairs)}×); same steps to "
                   f"target: {'yes' if b['first_step'] == n['first_step'] else 'NO'}; per-step "
                   f"rewards identical: {'yes' if same else 'NO'}; largest difference in the "
                   f"per-step KL to the reference {dkl:.1e}, in the entropy {dent:.1e}")
    if floors:
        base = "before" if before_dir else "after"
        out.append(f"floor: the model's own passes (bare decode, reference, two updates with the "
                   f"plainest loss, clip, AdamW; no checks or metrics) take "
                   f"{med['floor']['cpu_step'] / med[base]['cpu_step']:.0%} of {base}'s step: "
                   f"no code around this model could make the step more than "
                   f"{med[base]['cpu_step'] / med['floor']['cpu_step']:.2f}× cheaper than "
                   f"{base} on this machine")
    out.append("\nWhere a step's CPU time goes (ms per step, one run with timers):")
    names = list(dict.fromkeys(k for p in phases.values() for k in p))
    prow = [[k] + [f"{phases[v].get(k, 0.0) * 1e3:.2f}" for v in versions] for k in names]
    prow.append(["everything else (task, rewards, KL, metrics, Python)"] +
                [f"{(timed[v]['cpu_step'] - sum(phases[v].values())) * 1e3:.2f}" for v in versions])
    prow.append(["total (this run, with timers)"] +
                [f"{timed[v]['cpu_step'] * 1e3:.2f}" for v in versions])
    out.append(C.markdown(["phase", *versions], prow))
    out.append(f"load average after: {C.load_now()}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
