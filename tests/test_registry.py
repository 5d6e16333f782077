import pytest

import pgbook as pg
from pgbook import registry


def test_methods_have_parents_and_sides():
    ms = registry.methods()
    names = [m.name for m in ms]
    assert names[0] == "J(θ)"
    for m in ms[1:]:
        assert m.parent in names[: names.index(m.name)]
        assert m.axis in ("reward", "trajectory", "both"), m
    assert pg.method("REINFORCE").axis == "trajectory"
    assert pg.method("REINFORCE + baseline").axis == "reward"


def test_components_lookup_and_errors():
    assert registry.get("advantage", "value").side == "reward"
    assert registry.get("policy_loss", "ppo_clip").side == "trajectory"
    with pytest.raises(ValueError, match="expected one of"):
        registry.get("advantage", "nope")
    with pytest.raises(ValueError, match="kind"):
        registry.get("nokind", "x")
    with pytest.raises(ValueError, match="side"):
        registry.register("advantage", "x", side="left")
    with pytest.raises(ValueError, match="not registered"):
        registry.register_method("bad", "no-such-parent")
    with pytest.raises(ValueError, match="not registered"):
        registry.register_method("bad", None, advantage="no-such-component")
    with pytest.raises(ValueError, match="label"):
        registry.get("kl", "none")()
