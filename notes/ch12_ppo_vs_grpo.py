# ruff: noqa: F821  (a fragment of chapter 12: its names are defined by the chapter)
# Cells for chapter 12 (GRPO for LLMs): PPO with a value head against GRPO at the same budget.
# For the lead: paste after §5 (the GRPO training run), which defines `task`, `ref_model` (the
# frozen copy of the pretrained policy of §1), `success_rate`, `copy`, `np`, `plt`, `pg`. Add
#     from pgbook.train.ppo_llm import compare_ppo_grpo
# to the chapter's imports, move the asserts of the last cell into the Checks section and the
# NBVAL_CHECK_OUTPUT prints into the key-numbers cell. Compute: ~2.5 s of CPU (20 + 20 steps).

# %% [markdown]
# ## PPO with a value head, against GRPO at the same budget
#
# Before GRPO, language models were trained with PPO and a critic (Ouyang et al., 2022, arXiv:2203.02155), and
# TRL's `PPOTrainer` and verl (`adv_estimator=gae`) still run it that way. The critic is a second network
# $V_\phi(h_t)$ that predicts, at every prefix, the reward still to come. Its GAE advantages (chapter 10) replace
# GRPO's group z-score, and it is trained alongside the policy with PPO's clipped value loss,
# $\frac12\max\big((V_\phi-\hat R)^2,(\operatorname{clip}(V_\phi,V_{\rm old}\pm\varepsilon_v)-\hat R)^2\big)$.
#
# Both methods train the same pretrained GPT on the same task, with the same number of sampled responses per step,
# 128: GRPO draws 16 prompts × 8 responses, PPO draws 128 prompts × 1 response (`compare_ppo_grpo`). PPO's critic
# is built the way verl builds it: a copy of the policy's network, with the language-model head replaced by a linear
# value head (zero at the start). The outcome reward sits on the last token, GAE uses γ = λ = 1 (verl's defaults),
# the advantages are whitened over the batch, and the value clip is ε_v = 0.2. Neither method has a KL term. Both
# take one AdamW step per batch (learning rate 3·10⁻³, clip ε = 0.2), for 20 steps.

# %%
start = copy.deepcopy(ref_model).requires_grad_(True)    # the pretrained policy of §1 (ref_model is its frozen copy)
duel = compare_ppo_grpo(task, start, steps=20, responses_per_step=128, group_size=8, seed=5, lr=3e-3)
duel_success = {k: success_rate(v["model"], task, 1024, pg.make_generator(2)) for k, v in duel.items()}
ev = duel["PPO"]["history"].explained_variance
for k, v in duel.items():
    print(f"{k:5s} trained parameters {v['n_params']['trained']:6d} (critic {v['n_params']['critic']:5d}), "
          f"training state {v['state_bytes'] / 1e6:.2f} MB, activations of one update "
          f"{v['activation_bytes'] / 1e6:.2f} MB, wall time {v['seconds']:.1f} s, "
          f"success after 20 steps {duel_success[k]:.3f}")
print(f"critic's explained variance of the returns, mean over the last 10 steps: {ev[-10:].mean():.3f}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 2.9))
steps_duel = np.arange(1, 21)
for k, (name, v) in enumerate(duel.items()):
    axes[0].plot(steps_duel, v["reward"].numpy(), "o-", ms=3, color=f"C{k}", label=name)
axes[0].set(xlabel="step", ylabel="batch reward", title="reward over steps (128 responses each)")
axes[0].legend(fontsize=8)
axes[1].plot(steps_duel, ev.numpy(), "o-", ms=3, color="C0")
axes[1].axhline(0, color="k", lw=0.8)
axes[1].set(xlabel="step", ylim=(-0.5, 1), title="PPO's critic: explained variance of R̂")
costs = ["trained parameters", "training state", "activations", "wall time"]
ratio = [duel["PPO"]["n_params"]["trained"] / duel["GRPO"]["n_params"]["trained"],
         duel["PPO"]["state_bytes"] / duel["GRPO"]["state_bytes"],
         duel["PPO"]["activation_bytes"] / duel["GRPO"]["activation_bytes"],
         duel["PPO"]["seconds"] / duel["GRPO"]["seconds"]]
axes[2].barh(costs, ratio, color="C0")
axes[2].axvline(1, color="k", lw=0.8)
axes[2].set(xlabel="PPO / GRPO", title="cost of the critic")
fig.tight_layout()
plt.show()

# %% [markdown]
# The critic doubles what has to be trained and stored: twice the parameters, twice the parameters' gradients and
# AdamW moments, twice the activations of an update (the critic runs its own forward and backward pass on every
# response), and more wall time (its numbers above come from this machine and vary with the load). For that price it
# buys nothing on this task. In 20 steps the critic learns to explain none of the variance of the returns: its
# explained variance stays near 0, sometimes below it. With λ = 1 every token's advantage is $R-V_\phi(h_t)$, and a
# critic that has learned nothing beyond the average reward turns that into the whitened reward, a batch-mean
# baseline. PPO then trains like a critic-free method and ends level with GRPO: on this toy PPO does not beat GRPO,
# and the critic is pure cost.
#
# A critic of the policy's size, starting from the policy's weights, is not slow to learn here by accident. It has to
# learn a different function, whether a given prefix of the answer is still right, from a single bit per response.
# (The unit tests show the same critic reaching an explained variance of about 0.6 within 40 steps on a two-letter
# version of the task.) This is the "error at the start" of chapter 10, at the scale of a real, if tiny, model.

# %%
# NBVAL_CHECK_OUTPUT
print(f"PPO vs GRPO, 20 steps of 128 responses: success {duel_success['PPO']:.3f} vs {duel_success['GRPO']:.3f}; "
      f"trained parameters {duel['PPO']['n_params']['trained']} vs {duel['GRPO']['n_params']['trained']}; "
      f"activation bytes ratio {duel['PPO']['activation_bytes'] / duel['GRPO']['activation_bytes']:.3f}")
print(f"PPO's critic: explained variance over the last 10 steps {ev[-10:].mean():.3f}")

# %%
# (Checks) the critic doubles the trained parameters, the training state and the activations of an update
assert ratio[0] > 2 and ratio[1] > 2 and ratio[2] > 1.8
# it explains less than 20 % of the variance of the returns over the last 10 steps
assert ev[-10:].mean() < 0.2
# PPO matches GRPO (within 4 standard errors of the difference of two success rates on 1024 prompts) and does not
# beat it; both improved on the pretrained policy by more than 0.3
p_ppo, p_grpo = duel_success["PPO"], duel_success["GRPO"]
se_diff = np.sqrt((p_ppo * (1 - p_ppo) + p_grpo * (1 - p_grpo)) / 1024)
assert abs(p_ppo - p_grpo) < 4 * se_diff
start_rate = success_rate(ref_model, task, 1024, pg.make_generator(2))
assert min(p_ppo, p_grpo) > start_rate + 0.3
