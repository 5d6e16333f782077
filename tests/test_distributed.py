"""pgbook.train.distributed: the global normaliser, the per-rank-mean pitfall, the DDP trainer
on 2 processes against 1, and the options of TRL, verl and OpenRLHF."""

import copy
import math
import os
import subprocess
import sys

import pytest
import torch

import pgbook as pg
from pgbook.aggregation import aggregate
from pgbook.methods import policy_loss
from pgbook.train import distributed as D
from pgbook.worlds.gpt import GPT
from pgbook.worlds.tasks import Reverse, pretrained_policy

AGGS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _batch(B=12, T=7, seed=0, dtype=torch.float64, empty_rows=(3,)):
    g = pg.make_generator(seed)
    loss = torch.randn(B, T, generator=g, dtype=dtype)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T) < lengths[:, None]).to(dtype)
    for i in empty_rows:
        mask[i] = 0
    loss = torch.where(mask > 0, loss, torch.full_like(loss, float("nan")))  # padding never leaks
    return loss, mask


# -- row terms, shard losses, the single-process view ----------------------------------------
@pytest.mark.parametrize("agg", AGGS)
def test_row_terms_are_the_aggregation(agg):
    loss, mask = _batch()
    num, cnt = D.row_terms(loss, mask, agg, max_tokens=9)
    want = aggregate(loss, mask, agg, max_tokens=9)
    assert abs(float(num.sum() / cnt.sum() - want)) < 1e-15
    assert bool(torch.isfinite(num).all())


def test_row_terms_alias_dtypes_and_meta():
    loss, mask = _batch()
    a = D.row_terms(loss, mask, "sample_mean")
    b = D.row_terms(loss, mask, "seq_mean_token_sum")
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    for dtype, work in ((torch.float32, torch.float32), (torch.bfloat16, torch.float32)):
        num, cnt = D.row_terms(loss.to(dtype), mask, "token_mean")
        assert num.dtype == work and cnt.dtype == work
        assert D.shard_loss(loss.to(dtype), mask, "token_mean", cnt.sum()).dtype == dtype
    num, cnt = D.row_terms(loss.to("meta"), mask.to("meta"), "seq_mean_token_mean")
    assert num.shape == (12,) and num.device.type == "meta"
    shards = D.group_layout(6, 2, 2, 3)
    out = D.data_parallel_loss(loss.to("meta"), mask.to("meta"), "token_mean", shards.to("meta"),
                               world_size=2, micro_batches=3)
    assert out.shape == () and out.device.type == "meta"
    assert D.shard_loss(loss.to("meta"), mask.to("meta"), "constant", 3.0).device.type == "meta"
    assert D.global_normaliser(mask.to("meta"), "token_mean").device.type == "meta"
    lp = -torch.ones(4, 5, dtype=torch.float64)
    per = D.token_losses(lp.to("meta"), None, lp.to("meta"), torch.ones(4, 5, device="meta"),
                         kl="k3_loss", ref_logp=lp.to("meta"), beta=0.1)
    assert per.shape == (4, 5) and per.device.type == "meta"
    with pytest.raises(ValueError, match="device"):
        D.row_terms(loss, mask.to("meta"), "token_mean")


def test_bfloat16_inputs():
    _, mask = _batch()
    g = pg.make_generator(2)
    lp = (-torch.rand(12, 7, generator=g) - 0.1).to(torch.bfloat16).requires_grad_()
    per = D.token_losses(lp, None, torch.ones(12, 7, dtype=torch.bfloat16) * mask, mask)
    assert per.dtype == torch.bfloat16
    shards = D.group_layout(6, 2, 2)
    out = D.data_parallel_loss(per, mask, "token_mean", shards, world_size=2)
    assert out.dtype == torch.bfloat16 and bool(torch.isfinite(out))
    want = aggregate(per.float(), mask, "token_mean")
    assert abs(float((out.float() - want).detach())) < 1e-2
    out.backward()
    assert lp.grad is not None and lp.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("W,M", [(1, 1), (2, 1), (2, 3), (3, 2), (6, 1)])
def test_global_normalisation_is_one_process(agg, W, M):
    """Any split into W ranks × M micro-batches, empty shards included, gives the single-process
    loss and gradient (float64, to 1e-15)."""
    loss, mask = _batch(empty_rows=(0, 1, 3))              # shard 0 of the (6, 1) layout is empty
    shards = D.group_layout(6, 2, W, M)
    x = loss.clone().requires_grad_()
    y = loss.clone().requires_grad_()
    got = D.data_parallel_loss(x, mask, agg, shards, world_size=W, micro_batches=M,
                               max_tokens=9)
    want = aggregate(y, mask, agg, max_tokens=9)
    assert abs(float((got - want).detach())) < 1e-15
    (gx,), (gy,) = torch.autograd.grad(got, x), torch.autograd.grad(want, y)
    assert float((gx - gy).abs().max()) < 1e-15
    # the same by shard_loss, one shard at a time, averaged over the ranks as DDP does
    C = sum(float(D.row_terms(loss, mask, agg, 9)[1].sum()) for _ in [0])
    parts = [D.shard_loss(loss[shards == k], mask[shards == k], agg, torch.tensor(C,
             dtype=torch.float64), world_size=W, max_tokens=9) for k in range(W * M)]
    assert abs(float((sum(parts) / W - want).detach())) < 1e-14


def test_global_normaliser_single_process():
    _, mask = _batch()
    assert float(D.global_normaliser(mask, "token_mean")) == float(mask.sum())
    assert float(D.global_normaliser(mask, "seq_mean_token_mean")) == 11.0   # one empty row
    assert float(D.global_normaliser(mask, "constant", max_tokens=9)) == 12 * 9
    with pytest.raises(ValueError, match="no response"):
        D.global_normaliser(torch.zeros(3, 4), "token_mean")


def test_per_rank_means_reweight_tokens_by_the_predicted_factor():
    """The pitfall: shard k's tokens get C/(W·M·C_k) times their weight; for the token mean
    the relative error of the token weights is √(AM/HM − 1) of the shard token counts."""
    loss, mask = _batch(B=16, seed=3, empty_rows=())
    shards = D.group_layout(8, 2, 2, 2)
    x = loss.clone().requires_grad_()
    (c_loc,) = torch.autograd.grad(D.data_parallel_loss(x, mask, "token_mean", shards,
                                                        world_size=2, micro_batches=2,
                                                        normalisation="local"), x)
    c_glob = mask / mask.sum()
    n_k = torch.zeros(4, dtype=torch.float64).index_add(0, shards, mask.sum(1))
    factor = c_loc / c_glob
    want = (mask.sum() / (4 * n_k))[shards]
    assert float((factor[mask > 0] - want[:, None].expand(-1, 7)[mask > 0]).abs().max()) < 1e-12
    err = float((c_loc - c_glob).norm() / c_glob.norm())
    am, hm = float(n_k.mean()), float(1 / (1 / n_k).mean())
    assert abs(err - math.sqrt(am / hm - 1)) < 1e-12 and err > 0.05


def test_sequence_mean_survives_equal_counts_only():
    loss, mask = _batch(B=16, seed=4, empty_rows=())
    shards = D.group_layout(8, 2, 2, 2)
    ok = D.data_parallel_loss(loss, mask, "seq_mean_token_mean", shards, world_size=2,
                              micro_batches=2, normalisation="local")
    assert abs(float(ok - aggregate(loss, mask, "seq_mean_token_mean"))) < 1e-15
    const = D.data_parallel_loss(loss, mask, "constant", shards, world_size=2, micro_batches=2,
                                 normalisation="local")
    assert abs(float(const - aggregate(loss, mask, "constant"))) < 1e-15
    mask[5] = 0                                       # one response leaves the loss (e.g. overlong)
    bad = D.data_parallel_loss(loss, mask, "seq_mean_token_mean", shards, world_size=2,
                               micro_batches=2, normalisation="local")
    assert abs(float(bad - aggregate(loss, mask, "seq_mean_token_mean"))) > 1e-3


def test_group_layout():
    s = D.group_layout(4, 3, 2, 2)
    assert s.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert D.group_layout(6, 1, 3).tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="world_size"):
        D.group_layout(5, 2, 2)
    with pytest.raises(ValueError, match="micro_batches"):
        D.group_layout(4, 2, 2, 3)


def test_bad_inputs_name_the_argument():
    loss, mask = _batch()
    shards = D.group_layout(6, 2, 2)
    with pytest.raises(ValueError, match="aggregation"):
        D.row_terms(loss, mask, "self_normalised")
    with pytest.raises(ValueError, match="aggregation"):
        D.row_terms(loss, mask, ["token_mean"])
    with pytest.raises(ValueError, match="mask"):
        D.row_terms(loss, mask[:, :3], "token_mean")
    with pytest.raises(ValueError, match="0/1"):
        D.row_terms(loss, mask * 2, "token_mean")
    with pytest.raises(ValueError, match="mask"):
        D.row_terms(loss, mask * float("nan"), "token_mean")
    with pytest.raises(ValueError, match="max_tokens"):
        D.row_terms(loss, mask, "constant", max_tokens=2)
    with pytest.raises(ValueError, match="per_token_loss"):
        D.row_terms(loss[0], mask[0], "token_mean")
    with pytest.raises(ValueError, match="normaliser"):
        D.shard_loss(loss, mask, "token_mean", 0.0)
    with pytest.raises(ValueError, match="normaliser"):
        D.shard_loss(loss, mask, "token_mean", torch.ones(2))
    with pytest.raises(ValueError, match="world_size"):
        D.shard_loss(loss, mask, "token_mean", 3.0, world_size=0)
    with pytest.raises(ValueError, match="shards"):
        D.data_parallel_loss(loss, mask, "token_mean", shards[:5], world_size=2)
    with pytest.raises(ValueError, match="shards"):
        D.data_parallel_loss(loss, mask, "token_mean", shards + 5, world_size=2)
    with pytest.raises(ValueError, match="normalisation"):
        D.data_parallel_loss(loss, mask, "token_mean", shards, world_size=2, normalisation="rank")
    with pytest.raises(ValueError, match="normalisation"):
        D.data_parallel_loss(loss, mask, "token_mean", shards, world_size=2, normalisaton="local")


# -- token terms: what policy_loss aggregates ---------------------------------------------------
@pytest.mark.parametrize("loss_name,options,kl", [
    ("ppo_clip", {}, "k3_loss"), ("ppo_clip", {"dual_clip": 3.0}, "k2_loss"),
    ("ppo_dual_clip", {}, "none"), ("score_function", {}, "k1_loss"),
    ("importance_weighted", {}, "none")])
@pytest.mark.parametrize("agg", AGGS)
def test_token_losses_aggregate_to_policy_loss(loss_name, options, kl, agg):
    g = pg.make_generator(5)
    B, T = 6, 5
    mask = (torch.arange(T) < torch.tensor([5, 2, 3, 1, 4, 5])[:, None]).double()
    lp = -torch.rand(B, T, generator=g, dtype=torch.float64) - 0.1
    old = lp + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    ref = lp + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, 1, generator=g, dtype=torch.float64) * mask
    pad = torch.full_like(lp, -torch.inf)
    lp, old, ref = (torch.where(mask > 0, z, pad) for z in (lp, old, ref))
    beta = 0.0 if kl == "none" else 0.1
    x, y = lp.clone().requires_grad_(), lp.clone().requires_grad_()
    per = D.token_losses(x, old, adv, mask, loss=loss_name, ref_logp=ref, kl=kl, beta=beta,
                         loss_options=options)
    got = aggregate(per, mask, agg)
    want, _ = policy_loss(y, old, adv, mask, loss=loss_name, aggregation=agg,
                          ref_logp=ref if kl != "none" else None, kl=kl, beta=beta, **options)
    assert bool(torch.isfinite(per).all()) and abs(float((got - want).detach())) < 1e-14
    (gx,), (gy,) = torch.autograd.grad(got, x), torch.autograd.grad(want, y)
    assert float((gx - gy).abs().max()) < 1e-14


def test_token_losses_bad_options():
    lp = -torch.ones(2, 3, dtype=torch.float64)
    m = torch.ones(2, 3)
    with pytest.raises(ValueError, match="dual"):
        D.token_losses(lp, None, lp, m, loss="score_function", loss_options={"dual_clip": 2.0})
    with pytest.raises(ValueError, match="kl"):
        D.token_losses(lp, None, lp, m, kl="k1_in_reward", ref_logp=lp, beta=0.1)
    with pytest.raises(ValueError, match="beta"):
        D.token_losses(lp, None, lp, m, beta=0.1)
    with pytest.raises(ValueError, match="ref_logp"):
        D.token_losses(lp, None, lp, m, kl="k3_loss", beta=0.1)
    with pytest.raises(ValueError, match="mask"):
        D.token_losses(lp, None, lp, m[:, :2])


# -- the trainer in one process ------------------------------------------------------------------
@pytest.fixture(scope="module")
def start():
    task = Reverse()
    model, _ = pretrained_policy(task, steps=30, progress=False)
    return task, model.double()


def test_micro_batches_change_nothing_with_the_global_normaliser(start):
    task, model = start
    kw = dict(steps=1, prompts_per_step=4, group_size=4, seed=1, method="DAPO (token-level loss)",
              beta=0.04, partial_reward=True, lr=3e-3)
    one = D.ddp_grpo_train(copy.deepcopy(model), task, **kw)
    four = D.ddp_grpo_train(copy.deepcopy(model), task, micro_batches=4, record_local=True, **kw)
    rel = float((four.grad_first - one.grad_first).norm() / one.grad_first.norm())
    assert rel < 1e-13 and float((four.params_first - one.params_first).abs().max()) < 1e-10
    # the per-micro-batch mean differs (unequal token counts), by more than 1 %
    local = float((four.grad_first_local - one.grad_first).norm() / one.grad_first.norm())
    assert local > 0.01
    assert four.reward.shape == (1,) and four.tokens.shape == (1, 1) and four.world_size == 1
    # GRPO's per-sequence mean with equal micro-batches: the pitfall does not bite
    g1 = D.ddp_grpo_train(copy.deepcopy(model), task, micro_batches=4, record_local=True,
                          **dict(kw, method="GRPO"))
    assert float((g1.grad_first_local - g1.grad_first).norm() / g1.grad_first.norm()) < 1e-14


def test_trainer_bad_inputs(start):
    task, model = start
    kw = dict(steps=1, prompts_per_step=4, group_size=4, seed=1)
    for bad, match in ((dict(micro_batches=3), "micro_batches"),
                       (dict(normalisation="rank"), "normalisation"),
                       (dict(method="PPO-KL"), "advantage|kl"),
                       (dict(method="GPG", beta=0.1), "beta"),
                       (dict(group_size=1), "group_size"),
                       (dict(seed=1.5), "seed"),
                       (dict(method="Off-policy PG (SNIS)"), "advantage|aggregation")):
        with pytest.raises(ValueError, match=match):
            D.ddp_grpo_train(model, task, **{**kw, **bad})
    with pytest.raises(ValueError, match="ref_model"):
        D.ddp_grpo_train(model, task, ref_model=model, **kw)
    with pytest.raises(ValueError, match="model"):
        D.ddp_grpo_train(copy.deepcopy(model).to("meta"), task, **kw)
    with pytest.raises(ValueError, match="stesp"):
        D.ddp_grpo_train(model, task, stesp=1, prompts_per_step=4, group_size=4, seed=1)
    with pytest.raises(ValueError, match="runs"):
        D.launch(model, task, [], nproc=2)
    with pytest.raises(ValueError, match="runs"):
        D.launch(model, task, [dict(kw, lr_typo=1.0)], nproc=2)
    with pytest.raises(ValueError, match="nproc"):
        D.launch(model, task, [kw], nproc=0)
    with pytest.raises(ValueError, match="device"):
        D.launch(model, task, [kw], nproc=2, device="gpu")
    with pytest.raises(ValueError, match="device"):
        D.launch(model, task, [kw], nproc=2, device="meta")
    with pytest.raises(ValueError, match="start_method"):
        D.launch(model, task, [kw], nproc=2, start_method="thread")


# -- two processes against one -----------------------------------------------------------------
DIST = torch.distributed.is_available() and torch.distributed.is_gloo_available()


@pytest.mark.skipif(not DIST, reason="torch.distributed with the gloo backend is not available "
                                     "in this build of torch")
def test_two_processes_equal_one(tmp_path):
    """``python -m pgbook.train.distributed --nproc 2``: DDP on 2 gloo processes × 2
    micro-batches gives one process's loss and gradient (float64) and, after one AdamW step,
    its parameters, for the token mean, the per-sequence mean and the constant normaliser."""
    out = tmp_path / "run.pt"
    methods = ["DAPO (token-level loss)", "GRPO", "Dr. GRPO"]
    cmd = [sys.executable, "-m", "pgbook.train.distributed", "--nproc", "2", "--steps", "2",
           "--prompts", "4", "--group-size", "4", "--micro-batches", "2", "--dtype", "float64",
           "--beta", "0.04", "--partial-reward", "--pretrain-steps", "30", "--out", str(out),
           "--method", *methods]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    saved = torch.load(out, weights_only=False)
    task = Reverse()
    for run, h in zip(saved["runs"], saved["histories"]):
        assert h.world_size == 2 and h.config["micro_batches"] == 2
        model = GPT(saved["config"]).double()
        model.load_state_dict(saved["initial_state"])
        ref = D.ddp_grpo_train(model, task, **dict(run, micro_batches=1))
        assert float((h.loss_first - ref.loss_first).abs()) < D.CHECK_TOLERANCES["loss"]
        rel = float((h.grad_first - ref.grad_first).norm() / ref.grad_first.norm())
        assert rel < D.CHECK_TOLERANCES["grad"], (run["method"], rel)
        assert float((h.params_first - ref.params_first).abs().max()) < \
            D.CHECK_TOLERANCES["params"]
        assert torch.equal(h.reward, ref.reward)                 # the same responses were drawn
        assert h.tokens.shape == (2, 2) and torch.equal(h.tokens.sum(1), ref.tokens[:, 0])


# -- the trainers' options ---------------------------------------------------------------------
def test_grpo_options():
    o = D.trainer_options("GRPO", beta=0.04)
    assert o["TRL"]["entry"] == "GRPOConfig" and o["TRL"]["exact"]
    assert o["TRL"]["options"] == {"scale_rewards": "group", "epsilon": 0.2, "epsilon_high": 0.2,
                                   "loss_type": "grpo", "beta": 0.04}
    v = o["verl"]["options"]
    assert v["algorithm.adv_estimator"] == "grpo" and v["algorithm.norm_adv_by_std_in_grpo"]
    assert v["actor_rollout_ref.actor.loss_agg_mode"] == "seq-mean-token-mean"
    assert v["actor_rollout_ref.actor.kl_loss_type"] == "low_var_kl"
    assert v["actor_rollout_ref.actor.kl_loss_coef"] == 0.04 and not o["verl"]["missing"]
    # OpenRLHF's PPO loss has only the token mean
    assert o["OpenRLHF"]["missing"] == ["aggregation 'seq_mean_token_mean'"]
    assert o["OpenRLHF"]["options"]["--algo.advantage.estimator"] == "group_norm"


def test_builtin_methods_map():
    dapo = D.trainer_options("DAPO (token-level loss)", eps_high=0.28)
    assert dapo["TRL"]["options"]["loss_type"] == "dapo"
    assert dapo["TRL"]["options"]["epsilon_high"] == 0.28
    assert dapo["verl"]["options"]["actor_rollout_ref.actor.clip_ratio_high"] == 0.28
    assert dapo["OpenRLHF"]["options"]["--actor.eps_clip_low_high"] == "0.2 0.28"
    assert not any(dapo[t]["missing"] for t in D.TRAINERS)
    dr = D.trainer_options("Dr. GRPO", max_tokens=64)
    assert dr["TRL"]["options"]["loss_type"] == "dr_grpo"
    assert dr["TRL"]["options"]["max_completion_length"] == 64
    assert dr["TRL"]["options"]["scale_rewards"] == "none"
    assert dr["verl"]["options"]["algorithm.norm_adv_by_std_in_grpo"] is False
    assert dr["OpenRLHF"]["options"]["--algo.advantage.estimator"] == "dr_grpo"
    rloo = D.trainer_options("RLOO")
    assert rloo["TRL"]["entry"] == "RLOOConfig" and rloo["TRL"]["exact"]
    assert rloo["verl"]["options"]["algorithm.use_kl_in_reward"] is True
    gpg = D.trainer_options("GPG")
    assert gpg["verl"]["options"]["actor_rollout_ref.actor.policy_loss.loss_mode"] == "gpg"
    assert gpg["verl"]["exact"] and "advantage 'gpg'" in gpg["TRL"]["missing"]
    pkpo = D.trainer_options("PKPO")
    assert all("advantage 'pkpo'" in pkpo[t]["missing"] for t in D.TRAINERS)
    fork = D.trainer_options("Forking tokens (80/20)")
    assert fork["TRL"]["options"]["top_entropy_quantile"] == 0.2
    ppo = D.trainer_options("PPO (value head, GAE)")
    assert ppo["verl"]["options"]["algorithm.adv_estimator"] == "gae"
    rows = D.trainer_table()
    assert {"GRPO", "RLOO", "Dr. GRPO", "PPO (value head, GAE)"} <= {r["method"] for r in rows}
    assert "REINFORCE + baseline" not in {r["method"] for r in rows}     # a bandit method


def test_options_of_a_users_method_and_bad_names():
    from pgbook import registry

    @registry.register("advantage", "test_rank_adv", side="reward", form="group")
    def rank_adv(rewards, group_size, *, std_eps=1e-6):
        return rewards

    registry.register_method("Test rank GRPO", "GRPO", advantage="test_rank_adv")
    try:
        o = D.trainer_options("Test rank GRPO")
        assert all("advantage 'test_rank_adv'" in o[t]["missing"] for t in D.TRAINERS)
        assert o["TRL"]["options"]["loss_type"] == "grpo"          # the rest still maps
        md = D.trainer_table(["GRPO", "Test rank GRPO"], markdown=True)
        assert md.startswith("| method | TRL | verl | OpenRLHF |") and "✗ advantage" in md
        assert "\n1. " in md                                      # the notes, numbered
    finally:
        registry.unregister_method("Test rank GRPO")
        registry.unregister("advantage", "test_rank_adv")
    with pytest.raises(ValueError, match="method"):
        D.trainer_options("REINFORCE + baseline")
    with pytest.raises(ValueError, match="method"):
        D.trainer_options("no such method")
    with pytest.raises(ValueError, match="beta"):
        D.trainer_options("GRPO", beta=-1.0)
    with pytest.raises(ValueError, match="names"):
        D.trainer_table("GRPO")


# -- the trainers' own normalisers, transcribed ----------------------------------------------------
def _verl_agg_loss(loss_mat, loss_mask, mode, dp_size=1, batch_num_tokens=None,
                   global_batch_size=None):
    """verl/trainer/ppo/core_algos.py, agg_loss (token-mean, seq-mean-token-mean,
    seq-mean-token-sum), with verl_F.masked_sum = (x * mask).sum()."""
    if mode == "token-mean":
        if batch_num_tokens is None:
            batch_num_tokens = loss_mask.sum()
        return (loss_mat * loss_mask).sum() / batch_num_tokens * dp_size
    seq_mask = torch.sum(loss_mask, dim=-1)
    if mode == "seq-mean-token-sum":
        seq_losses = torch.sum(loss_mat * loss_mask, dim=-1)
    else:
        seq_losses = torch.sum(loss_mat * loss_mask, dim=-1) / (seq_mask + 1e-8)
    seq_mask = (seq_mask > 0).float()
    if global_batch_size is None:
        global_batch_size = seq_mask.sum()
    return (seq_losses * seq_mask).sum() / global_batch_size * dp_size


def _openrlhf_aggregate_loss(loss, loss_mask, token_level_loss=True, dp_size=1,
                             batch_num_tokens=None):
    """openrlhf/models/loss.py, aggregate_loss (token_level_loss=True, global counts given)."""
    return (loss * loss_mask).sum() / batch_num_tokens * dp_size


def _trl_dapo(per_token_loss, mask, num_items_in_batch, num_processes):
    """trl/trainer/grpo_trainer.py, GRPOTrainer._compute_loss, loss_type in (dapo, cispo)."""
    normalizer = num_items_in_batch.clamp(min=1.0) / num_processes
    return (per_token_loss * mask).sum() / normalizer


def _trl_bnpo(per_token_loss, mask, gradient_accumulation_steps):
    """trl/trainer/grpo_trainer.py, GRPOTrainer._compute_loss, loss_type == "bnpo"."""
    return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0) / gradient_accumulation_steps


@pytest.mark.parametrize("W,M", [(2, 1), (2, 2), (4, 1)])
def test_shard_loss_is_what_verl_openrlhf_and_trl_compute_per_rank(W, M):
    loss, mask = _batch(B=16, seed=6, empty_rows=(2,))
    loss = torch.nan_to_num(loss)                  # the transcriptions multiply by the mask
    shards = D.group_layout(8, 2, W, M)
    N = mask.sum()
    n_seq = (mask.sum(1) > 0).sum().double()
    for k in range(W * M):
        x, m = loss[shards == k], mask[shards == k]
        mine = D.shard_loss(x, m, "token_mean", N, world_size=W)
        # the rank's part of an optimiser step, before DDP's average: verl's engine workers and
        # OpenRLHF get the all-reduced count; both multiply by the data-parallel size
        assert abs(float(mine - _verl_agg_loss(x, m, "token-mean", W, N))) < 1e-14
        assert abs(float(mine - _openrlhf_aggregate_loss(x, m, True, W, N))) < 1e-14
        assert abs(float(mine - _trl_dapo(x, m, N, W))) < 1e-14
        for agg, mode in (("seq_mean_token_mean", "seq-mean-token-mean"),
                          ("seq_mean_token_sum", "seq-mean-token-sum")):
            mine = D.shard_loss(x, m, agg, n_seq, world_size=W)
            ref = _verl_agg_loss(x, m, mode, W, global_batch_size=n_seq)
            assert abs(float(mine - ref)) <= 1e-7 * max(1.0, abs(float(ref))), agg  # verl's 1e-8
    # TRL's bnpo (per micro-batch token mean over the accumulation steps), averaged over the
    # ranks, is the pitfall: the "local" normalisation
    bnpo = sum(_trl_bnpo(loss[shards == k], mask[shards == k], M) for k in range(W * M)) / W
    local = D.data_parallel_loss(loss, mask, "token_mean", shards, world_size=W, micro_batches=M,
                                 normalisation="local")
    assert abs(float(bnpo - local)) < 1e-14
