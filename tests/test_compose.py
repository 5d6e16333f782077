"""Chapter 17's library pieces: compose (both sides at once), map_table, the map's highlight,
and the boundary case DPO (pgbook.boundary)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import pytest
import torch

import pgbook as pg
from pgbook import boundary, plots, registry
from pgbook.methods import compose, map_table


@pytest.fixture
def composed():
    names = []

    def make(name, **kw):
        names.append(name)
        return compose(name, **kw)

    yield make
    for n in reversed(names):
        registry.unregister_method(n)


def test_compose_takes_each_choice_only_on_its_side(composed):
    m = composed("test: Dr. GRPO × DAPO", reward="Dr. GRPO", trajectory="DAPO")
    parts = m.resolved_parts()
    # Dr. GRPO's reward-side changes of GRPO
    assert parts["advantage"] == "grpo_mean" and parts["aggregation"] == "constant"
    # DAPO's trajectory-side changes; its token mean and overlong shaping are reward-side
    assert parts["policy_loss"] == "clip_higher" and parts["data"] == "dynamic_sampling"
    assert parts.get("shaping", "none") == registry.method("GRPO").resolved_parts().get(
        "shaping", "none")
    assert m.parent == "GRPO" and m.axis == "both"
    assert "Dr. GRPO" in m.fixes and "DAPO" in m.fixes
    assert registry.method("test: Dr. GRPO × DAPO") is m or \
        registry.method("test: Dr. GRPO × DAPO").resolved_parts() == parts


def test_compose_with_dicts_and_one_side(composed):
    m = composed("test: rloo + gspo", reward={"advantage": "rloo"},
                 trajectory={"policy_loss": "gspo"})
    assert m.resolved_parts()["advantage"] == "rloo"
    assert m.resolved_parts()["policy_loss"] == "gspo"
    assert m.axis == "both"
    # composing the same method again returns it
    again = compose("test: rloo + gspo", reward={"advantage": "rloo"},
                    trajectory={"policy_loss": "gspo"})
    assert again.resolved_parts() == m.resolved_parts()


def test_compose_refuses_wrong_sides_and_clashes(composed):
    with pytest.raises(ValueError, match="reward"):
        compose("test: bad", reward="GSPO", trajectory="CISPO")       # GSPO: trajectory only
    with pytest.raises(ValueError, match="trajectory"):
        compose("test: bad", reward="RLOO", trajectory={"advantage": "rloo"})
    with pytest.raises(ValueError, match="trajectory"):
        compose("test: bad", reward="RLOO", trajectory={})
    assert "test: bad" not in {m.name for m in registry.methods()}


def test_composed_method_trains_on_the_enumerable_lm(composed):
    from pgbook.train.seqlm import grpo_seqlm
    from pgbook.worlds.seqlm import MLPPolicy, SeqSpace, contains

    composed("test: rloo + cispo", reward="RLOO", trajectory={"policy_loss": "cispo"})
    space = SeqSpace(tokens=("a", "b"), max_len=3)
    policy = MLPPolicy(space, hidden=4)
    th = policy.init(pg.make_generator(0), scale=0.5)
    h = grpo_seqlm(policy, th, contains(space, "ab"), steps=3, prompts_per_step=2,
                   group_size=4, generator=pg.make_generator(1), method="test: rloo + cispo")
    assert h.thetas.shape == (4, policy.n_params) and torch.isfinite(h.thetas).all()


def test_map_table_reads_the_registry():
    rows = map_table()
    assert len(rows) == len(registry.methods())
    by = {r["method"]: r for r in rows}
    assert by["Dr. GRPO"]["parent"] == "GRPO" and by["Dr. GRPO"]["side"] == "reward"
    assert "advantage: grpo → grpo_mean" in by["Dr. GRPO"]["changed"]
    assert by["J(θ)"]["parent"] == "—"
    md = map_table(["GRPO", "GSPO"], markdown=True)
    assert md.count("\n") == 3 and md.startswith("| method | parent |")


def test_method_map_highlight_draws_a_border():
    import matplotlib.pyplot as plt

    ax = plots.method_map(highlight=["GSPO"])
    boxes = {t.get_gid(): t for t in ax.texts if (t.get_gid() or "").startswith("method:")}
    assert boxes["method:GSPO"].get_bbox_patch().get_linewidth() > 1.0
    assert boxes["method:GMPO"].get_bbox_patch().get_edgecolor()[3] == 0.0
    plt.close(ax.figure)


# -- DPO ----------------------------------------------------------------------------------------
def _trl_sigmoid(cw, rw, cr, rr, beta):
    # TRL trl/trainer/dpo_trainer.py, DPOTrainer (loss_type == "sigmoid"):
    # delta_score = chosen_logratios - rejected_logratios;
    # per_sequence_loss = -F.logsigmoid(self.beta * delta_score)
    delta = (cw - cr) - (rw - rr)
    return -torch.nn.functional.logsigmoid(beta * delta)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dpo_loss_matches_trl(dtype):
    g = pg.make_generator(0)
    x = [-torch.rand(6, generator=g, dtype=torch.float64).to(dtype) * 5 for _ in range(4)]
    out = boundary.dpo_loss(*x, beta=0.3)
    torch.testing.assert_close(out, _trl_sigmoid(*x, 0.3))
    assert out.dtype == dtype


def test_dpo_gradient_is_the_weighted_score_difference():
    g = pg.make_generator(1)
    cw = (-torch.rand(5, generator=g, dtype=torch.float64)).requires_grad_(True)
    rw = (-torch.rand(5, generator=g, dtype=torch.float64)).requires_grad_(True)
    cr, rr = -torch.rand(5, generator=g, dtype=torch.float64), -torch.rand(5, generator=g,
                                                                              dtype=torch.float64)
    beta = 0.5
    boundary.dpo_loss(cw, rw, cr, rr, beta=beta).sum().backward()
    ir = boundary.implied_reward(cw.detach(), cr, beta) - boundary.implied_reward(
        rw.detach(), rr, beta)
    w = beta * torch.sigmoid(-ir)
    torch.testing.assert_close(-cw.grad, w, rtol=0, atol=1e-15)
    torch.testing.assert_close(-rw.grad, -w, rtol=0, atol=1e-15)


def test_dpo_bfloat16_and_meta():
    x = [torch.tensor([-1.0, -2.0, -0.5]) for _ in range(4)]
    out = boundary.dpo_loss(*[t.to(torch.bfloat16) for t in x])
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    meta = boundary.dpo_loss(*[t.to("meta") for t in x])
    assert meta.shape == (3,) and meta.device.type == "meta"


def test_dpo_bad_inputs():
    x = torch.tensor([-1.0, -2.0])
    with pytest.raises(ValueError, match="beta"):
        boundary.dpo_loss(x, x, x, x, beta=0.0)
    with pytest.raises(ValueError, match="rejected_logp"):
        boundary.dpo_loss(x, torch.tensor([-1.0, float("nan")]), x, x)
    with pytest.raises(ValueError, match="ref_rejected_logp"):
        boundary.dpo_loss(x, x, x, x[:1])
