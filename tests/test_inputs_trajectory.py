"""Bad inputs on the trajectory side, the KL terms, the tokens, the GPT and its tokenizer:
each is refused with a ValueError that says what was expected (the audit's reproducing
calls), and a valid call of each fixed function still works."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgbook import _validate as V
from pgbook import boundary as BD
from pgbook import kl as KL
from pgbook import make_generator
from pgbook import methods as ME
from pgbook.reward import teacher as RTE
from pgbook.train import agentic as TAG
from pgbook.train import distributed as DI
from pgbook.trajectory import agentic as TA
from pgbook.trajectory import corrections as TC
from pgbook.trajectory import losses as TL
from pgbook.trajectory import tokens as TT
from pgbook.worlds import envs as WE
from pgbook.worlds import gpt as WG

F64 = torch.float64
LP = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.5, -2.5]], dtype=F64)
OLD = LP - 0.1
ADV = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]], dtype=F64)
MASK = torch.ones(2, 3, dtype=F64)
REWARDS = torch.tensor([1.0, 0.0], dtype=F64)

# the non-floating stand-ins for a log-prob, advantage or reward tensor
BAD_DTYPES = {
    "bool": lambda x: x > -1,
    "int": lambda x: x.long(),
    "complex": lambda x: x.to(torch.complex128) + 1j,
}

# (name, function, its valid keyword arguments, the paired tensor argument made bad)
PAIRED = [
    ("score_function_loss", TL.score_function_loss, dict(logp=LP, advantages=ADV), "advantages"),
    ("log_ratio", TL.log_ratio, dict(logp=LP, old_logp=OLD), "old_logp"),
    ("ratio", TL.ratio, dict(logp=LP, old_logp=OLD), "old_logp"),
    ("importance_weighted", TL.importance_weighted_loss,
     dict(logp=LP, advantages=ADV, old_logp=OLD), "advantages"),
    ("ppo_clip/adv", TL.ppo_clip_loss, dict(logp=LP, advantages=ADV, old_logp=OLD), "advantages"),
    ("ppo_clip/old", TL.ppo_clip_loss, dict(logp=LP, advantages=ADV, old_logp=OLD), "old_logp"),
    ("ppo_dual_clip", TL.ppo_dual_clip_loss, dict(logp=LP, advantages=ADV, old_logp=OLD),
     "old_logp"),
    ("clip_fraction", TL.clip_fraction, dict(logp=LP, old_logp=OLD, advantages=ADV),
     "advantages"),
    ("token_pg_loss", TL.token_pg_loss, dict(token_logp=LP, weights=ADV, mask=MASK), "weights"),
    ("sequence_log_ratio", TL.sequence_log_ratio, dict(logp=LP, old_logp=OLD, mask=MASK),
     "old_logp"),
    ("gspo", TL.gspo_loss, dict(logp=LP, advantages=ADV, old_logp=OLD, mask=MASK), "old_logp"),
    ("gspo_token", TL.gspo_token_loss, dict(logp=LP, advantages=ADV, old_logp=OLD, mask=MASK),
     "advantages"),
    ("gmpo", TL.gmpo_loss, dict(logp=LP, advantages=ADV, old_logp=OLD, mask=MASK), "old_logp"),
    ("cispo", TL.cispo_loss, dict(logp=LP, advantages=ADV, old_logp=OLD), "advantages"),
    ("sapo", TL.sapo_loss, dict(logp=LP, advantages=ADV, old_logp=OLD), "old_logp"),
    ("kl_cov", TL.kl_cov_loss, dict(logp=LP, advantages=ADV, old_logp=OLD, mask=MASK),
     "old_logp"),
    ("clip_higher", TL.clip_higher_loss, dict(logp=LP, advantages=ADV, old_logp=OLD),
     "advantages"),
    ("mismatch_log_ratio", TC.mismatch_log_ratio, dict(old_logp=OLD, sampler_logp=LP, mask=MASK),
     "sampler_logp"),
    ("token_truncate", TC.token_truncate, dict(old_logp=OLD, sampler_logp=LP, mask=MASK),
     "sampler_logp"),
    ("correction_weights", TC.correction_weights,
     dict(old_logp=OLD, sampler_logp=LP, mask=MASK, correction="token_truncate"),
     "sampler_logp"),
    ("correction_stats", TC.correction_stats,
     dict(weights=torch.ones(2, 3, dtype=F64), old_logp=OLD, sampler_logp=LP, mask=MASK),
     "sampler_logp"),
    ("trajectory_log_ratio", TA.trajectory_log_ratio, dict(logp=LP, old_logp=OLD,
                                                           policy_mask=MASK), "old_logp"),
    ("kl_estimate", KL.kl_estimate, dict(logp=LP, ref_logp=OLD, kind="k1"), "ref_logp"),
    ("k1_loss", KL.k1_loss, dict(logp=LP, ref_logp=OLD), "ref_logp"),
    ("k2_loss", KL.k2_loss, dict(logp=LP, ref_logp=OLD), "ref_logp"),
    ("k3_loss", KL.k3_loss, dict(logp=LP, ref_logp=OLD), "ref_logp"),
    ("k1_in_reward", KL.k1_in_reward, dict(logp=LP, ref_logp=OLD), "ref_logp"),
    ("kl_in_reward", KL.kl_in_reward,
     dict(rewards=REWARDS, logp=LP, ref_logp=OLD, mask=MASK, beta=0.1), "ref_logp"),
    ("shaped_rewards", ME.shaped_rewards,
     dict(kl="k1_in_reward", rewards=REWARDS, logp=LP, ref_logp=OLD, mask=MASK, beta=0.1),
     "ref_logp"),
    ("policy_loss/old", ME.policy_loss,
     dict(logp=LP, old_logp=OLD, advantages_tok=ADV, mask=MASK), "old_logp"),
    ("policy_loss/adv", ME.policy_loss,
     dict(logp=LP, old_logp=OLD, advantages_tok=ADV, mask=MASK), "advantages_tok"),
    ("policy_loss/ref", ME.policy_loss,
     dict(logp=LP, old_logp=OLD, advantages_tok=ADV, mask=MASK, ref_logp=OLD, kl="k3_loss",
          beta=0.1), "ref_logp"),
    ("policy_loss/sampler", ME.policy_loss,
     dict(logp=LP, old_logp=OLD, advantages_tok=ADV, mask=MASK, sampler_logp=LP),
     "sampler_logp"),
    ("method_loss", ME.method_loss,
     dict(name="GRPO", logp=LP, old_logp=OLD, rewards=REWARDS, mask=MASK, group_size=2),
     "old_logp"),
    ("token_losses/old", DI.token_losses,
     dict(logp=LP, old_logp=OLD, advantages_tok=ADV, mask=MASK), "old_logp"),
    ("token_losses/adv", DI.token_losses,
     dict(logp=LP, old_logp=OLD, advantages_tok=ADV, mask=MASK), "advantages_tok"),
    ("teacher_token_rewards", RTE.teacher_token_rewards,
     dict(logp=LP, teacher_logp=OLD, mask=MASK), "teacher_logp"),
    ("mix_teacher", RTE.mix_teacher,
     dict(advantages_tok=ADV, teacher_adv=ADV, mask=MASK, coef=1.0), "teacher_adv"),
    ("implied_reward", BD.implied_reward, dict(logp=LP[0], ref_logp=OLD[0], beta=0.1),
     "ref_logp"),
    ("dpo_loss", BD.dpo_loss,
     dict(chosen_logp=LP[0], rejected_logp=LP[1], ref_chosen_logp=OLD[0],
          ref_rejected_logp=OLD[1]), "ref_rejected_logp"),
]


@pytest.mark.parametrize("bad", sorted(BAD_DTYPES))
@pytest.mark.parametrize("name,fn,kw,arg", PAIRED, ids=[p[0] for p in PAIRED])
def test_paired_tensor_must_be_floating(name, fn, kw, arg, bad):
    kw_bad = dict(kw, **{arg: BAD_DTYPES[bad](kw[arg])})
    with pytest.raises(ValueError, match=f"{arg}: expected a floating-point tensor, got dtype"):
        fn(**kw_bad)


@pytest.mark.parametrize("name,fn,kw,arg", PAIRED, ids=[p[0] for p in PAIRED])
def test_paired_tensor_valid_call(name, fn, kw, arg):
    out = fn(**kw)
    vals = out if isinstance(out, tuple) else (out,)
    for v in vals:
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            assert torch.isfinite(v).all()


def test_check_pair_and_check_tensor_refuse_complex():
    with pytest.raises(ValueError, match=r"b: expected a floating-point tensor, got dtype "
                                         r"torch\.complex128"):
        V.check_pair(LP, LP.to(torch.complex128), "a", "b")
    with pytest.raises(ValueError, match=r"x: expected a floating-point tensor, got dtype "
                                         r"torch\.complex64"):
        V.check_tensor(torch.zeros(2, dtype=torch.complex64), "x", floating=True)
    V.check_pair(LP, OLD.float(), "a", "b")         # floating dtypes may differ


def test_masks_stay_bool_or_integer():
    """The masks beside the paired tensors are not log-probs: bool and integer stay fine."""
    for m in (MASK.bool(), MASK.long()):
        ME.policy_loss(LP, OLD, ADV, m)
        DI.token_losses(LP, OLD, ADV, m)
        TL.gspo_loss(LP, ADV, OLD, mask=m)


# -- a zero-size vocabulary ----------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda z: TT.entropy_from_logits(z),
    lambda z: TT.entropy_from_logits(z, chunk_size=2),
    lambda z: TT.naive_entropy(z),
    lambda z: TT.token_logprobs(z, torch.zeros(z.shape[:-1], dtype=torch.long)),
    lambda z: TT.naive_token_logprobs(z, torch.zeros(z.shape[:-1], dtype=torch.long)),
], ids=["entropy", "entropy_chunked", "naive_entropy", "token_logprobs", "naive_token_logprobs"])
@pytest.mark.parametrize("shape", [(2, 3, 0), (0, 3, 0), (4, 0)])
def test_empty_vocabulary_refused(call, shape):
    with pytest.raises(ValueError, match=r"logits: expected a vocabulary dimension V ≥ 1"):
        call(torch.zeros(shape))


def test_tokens_valid_calls():
    z = torch.randn(2, 3, 5, generator=make_generator(0))
    t = torch.tensor([[0, 1, 4], [2, 3, 0]])
    assert torch.allclose(TT.entropy_from_logits(z), TT.naive_entropy(z))
    assert torch.allclose(TT.token_logprobs(z, t), TT.naive_token_logprobs(z, t))
    assert TT.entropy_from_logits(torch.zeros(0, 5)).shape == (0,)    # no positions: fine


# -- the tokenizer ---------------------------------------------------------------------------
TOK = WG.CharTokenizer("ab")


@pytest.mark.parametrize("ids,msg", [
    (torch.tensor([1.0, 2.0]), "ids: expected an integer tensor of token ids, got dtype "
                               "torch.float32"),
    (torch.tensor([3.0, 4.0]), "ids: expected an integer tensor"),
    (torch.tensor([True, False]), "ids: expected an integer tensor"),
    (torch.tensor([3 + 0j]), "ids: expected an integer tensor"),
    ([3.0, 4.0], r"ids: expected integer ids, got 3\.0 \(float\)"),
    ([3, True], r"ids: expected integer ids, got True \(bool\)"),
    (np.array([3.0, 4.0]), "ids: expected integer ids"),
    ("ab", "ids: expected a list of integer ids or a 1-D integer tensor, got str"),
    (3, "ids: expected a list of integer ids or a 1-D integer tensor, got int"),
])
def test_decode_refuses_non_integer_ids(ids, msg):
    with pytest.raises(ValueError, match=msg):
        TOK.decode(ids)


@pytest.mark.parametrize("tokens", [torch.tensor([[1.0, 2.0]]), torch.tensor([[True]])])
def test_decode_batch_refuses_non_integer_tokens(tokens):
    with pytest.raises(ValueError, match="tokens: expected an integer tensor of token ids"):
        TOK.decode_batch(tokens)


def test_decode_valid_calls():
    assert TOK.decode([1, 3, 4, 2, 3]) == "ab"
    assert TOK.decode(torch.tensor([3, 4], dtype=torch.int32)) == "ab"
    assert TOK.decode(np.array([4, 3])) == "ba"
    assert TOK.decode((3, 0, 2), specials=True) == "a·$"
    assert TOK.decode_batch(torch.tensor([[1, 3, 2], [1, 4, 4]])) == ["a", "bb"]


# -- the KV cache ----------------------------------------------------------------------------
KV = torch.zeros(1, 1, 2, 4)


@pytest.mark.parametrize("k,v,msg", [
    (KV.to(torch.complex64), KV, "k: expected a floating-point tensor, got dtype torch.complex64"),
    (KV, KV.bool(), "v: expected a floating-point tensor, got dtype torch.bool"),
    (KV.long(), KV, "k: expected a floating-point tensor, got dtype torch.int64"),
    (KV.numpy(), KV, "k: expected a torch.Tensor, got ndarray"),
    (KV, None, "v: expected a torch.Tensor, got NoneType"),
])
def test_kv_cache_update_refuses_bad_kv(k, v, msg):
    with pytest.raises(ValueError, match=msg):
        WG.KVCache(4).update(0, k, v)


def test_kv_cache_update_valid_call():
    cache = WG.KVCache(4)
    k, v = cache.update(0, KV + 1, KV + 2)
    assert k.shape == (1, 1, 2, 4) and bool((v == 2).all())


# -- sampling --------------------------------------------------------------------------------
MODEL = WG.GPT(WG.GPTConfig(7, block_size=8, n_layer=1, n_head=1, n_embd=8), make_generator(0))


@pytest.mark.parametrize("cache", [True, False])
def test_sample_refuses_empty_prompt(cache):
    with pytest.raises(ValueError, match=r"prompts: expected at least one column .* got shape "
                                         r"\(2, 0\)"):
        WG.sample(MODEL, torch.zeros(2, 0, dtype=torch.long), 3, make_generator(1), cache=cache)


def test_sample_valid_call():
    s = WG.sample(MODEL, torch.full((2, 1), WG.BOS), 3, make_generator(1))
    assert s.tokens.shape == (2, 4)


# -- the environment's parser ----------------------------------------------------------------
ENV = WE.LookupEnv(n_keys=2, digits=1, max_turns=2)


def test_parse_calls_refuses_zero_length_rows():
    with pytest.raises(ValueError, match=r"actions: expected at least one column .* got shape "
                                         r"\(2, 0\)"):
        ENV.parse_calls(torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, dtype=torch.long))


def test_parse_calls_valid_call():
    acts, lens = ENV.encode_turns(["[a]", "3$"])
    key, ok = ENV.parse_calls(acts, lens)
    assert ok.tolist() == [True, False] and key.tolist()[0] == 0


# -- the distributed share's normaliser ------------------------------------------------------
@pytest.mark.parametrize("normaliser", [torch.tensor(3 + 2j), torch.tensor(True)])
def test_shard_loss_refuses_non_real_normaliser(normaliser):
    with pytest.raises(ValueError, match="normaliser: expected a real count"):
        DI.shard_loss(torch.ones(2, 3, dtype=F64), MASK, "token_mean", normaliser, world_size=1)


@pytest.mark.parametrize("normaliser", [torch.tensor(3), torch.tensor(3.0, dtype=F64), 3, 3.0])
def test_shard_loss_valid_normalisers(normaliser):
    out = DI.shard_loss(torch.ones(2, 3, dtype=F64), MASK, "token_mean", normaliser,
                        world_size=1)
    assert float(out) == 2.0


def test_agent_model_still_samples():
    """An agent's GPT (the parser's vocabulary) samples from a one-token prompt."""
    model = WG.GPT(TAG.agent_config(ENV, n_embd=8, n_head=1), make_generator(2))
    s = WG.sample(model, torch.full((1, 1), WG.BOS), 2, make_generator(3))
    assert s.tokens.shape == (1, 3)
