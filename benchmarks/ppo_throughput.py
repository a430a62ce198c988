"""Throughput of our PPO and GRPO (``rlhf train ppo`` under Ray) against TRL, side by side, repeated.

Four trainers run the same policy, prompts, batch, lengths and sampling, each in its own process:

* ours, PPO (GAE, critic from the reward model) and GRPO (gold-rubric reward function);
* trl==1.12.0's ``trl.experimental.ppo.PPOTrainer`` (PPO left TRL in 1.13), in its own venv that this
  script creates under ``.cache/benchmarks/`` (git-ignored): a venv that sees the project's packages
  and installs only ``trl==1.12.0`` on top, so torch and transformers are the same builds;
* TRL's ``GRPOTrainer`` (the installed trl, same venv as ours) with the same reward function.

All four draw their batches, each in its own seeded shuffled order, from one pool of ``batch x (steps + 2)``
demo-world prompts (``generate_prompts(..., seed=1)``; ours reads it as ``data.path`` from
``.cache/benchmarks/prompts-*.jsonl``), in the policy's chat template. Both PPO runs score with the same
reward model (the policy's backbone with a fresh seeded one-output head, built here once per policy under
``.cache/benchmarks/rm-*``), both GRPO runs with ``rlhf.world.demo:gold_rubric``.

What a step is, on each side
----------------------------
A step is one rollout batch of ``--batch`` samples (PPO: ``--batch`` prompts x 1 reply; GRPO:
``--batch / --n`` prompts x ``--n`` replies) of at most ``--max-new-tokens`` tokens, sampled at temperature
1.0 with top-k and top-p off on all four trainers (TRL 1.12's PPOConfig defaults to 0.7, which shortens its
replies: set to 1.0 here), then one epoch over it in ``--batch / --mini-batch`` optimizer steps of
``--mini-batch`` samples (no gradient accumulation); the learning rate is 1e-5 everywhere.

* ours PPO: the rollout actor samples (its sampled log-probs are the behaviour log-probs: the fp32
  transformers engine, synchronous, ``algorithm.behaviour_logprobs: auto``); the reward actor scores with the
  reward model while the reference actor and the critic compute their passes concurrently; the controller
  computes KL-in-reward (k1, beta 0.05) GAE advantages; the policy and the critic learners each take
  ``batch / mini_batch`` optimizer steps; the policy's weights go to the rollout actor and a probe batch
  checks the sync (after the first, every tenth and the last step).
* TRL PPOTrainer (1.12): one process; generation (its logits are the behaviour log-probs: no separate policy
  pass), reference, value and reward forwards, KL-in-reward (beta 0.05) GAE, then ``num_mini_batches =
  batch / mini_batch`` optimizer steps (``per_device_train_batch_size = batch``, so one micro-batch per
  mini-batch) of one optimizer over the joint policy + value model. No weight sync (one model).
* ours GRPO: as ours PPO without critic, with the reward function, group-normalised advantages and the k3
  KL in the loss (beta 0.04): the reference passes go mini-batch by mini-batch, each beside the forward
  pass of its update.
* ours PPO async and ours GRPO async (with ``--asynchronous``): the same with ``rollout.asynchronous=true``
  and ``algorithm.rollout_correction=tis``: the rollout actor samples step t+1 while step t is scored and
  trained, with the weights synced after step t-1 (one step stale; ``rollout/staleness`` 1); the policy
  learner recomputes the behaviour log-probs, which TIS weighs against the engine's.
* TRL GRPOTrainer: ``per_device_train_batch_size = mini_batch`` and ``steps_per_generation = batch /
  mini_batch``, so ``generation_batch_size = batch`` (GRPOConfig derives it as per-device batch x processes x
  steps_per_generation, and checks that ``num_generations = --n`` divides it): one generation of the batch,
  reward function, policy pass for the old log-probs (the batch spans several optimizer steps) and
  reference pass (beta 0.04, k3 in the loss), then ``steps_per_generation`` optimizer steps, one slice
  each. ``max_steps = (steps + 1) x steps_per_generation`` optimizer steps.

Reply lengths follow each policy as it trains, and TRL 1.12's PPOTrainer clips no gradients (ours and
GRPOTrainer clip the norm at 1.0), so its replies can drift from step to step: the ``tokens/sample`` column
shows it, and tokens/s is the fairer figure when the lengths differ.

Measurement
-----------
Each trainer runs one warm-up step then ``--steps`` measured steps (default 12). The warm-up is ours' step 1,
TRL PPO's first rollout and TRL GRPO's first generation batch (its first ``steps_per_generation`` optimizer
steps). samples/s = ``batch`` x measured steps / their wall time; tokens/s = generated tokens (up to and
including EOS) of the measured steps / the same wall time; ours' step time is the stage's ``timing/step``,
TRL's the time between the trainer callbacks' ends of consecutive steps (TRL GRPO: of consecutive generation
batches). Process start, model loading and the warm-up step are outside.

``--repeats`` (default 3) rounds run the four trainers interleaved (ours PPO, TRL PPO, ours GRPO, TRL GRPO,
then again; with ``--asynchronous`` ours' asynchronous runs follow each of ours' synchronous ones), so drift in the machine spreads over all of them. Per trainer the table shows the median
samples/s and tokens/s over the repeats with their spread (min-max), generated tokens per sample and
seconds per step; the ratios ours / TRL are computed from the medians. Every trainer runs at the same torch
thread count (``--threads``, also the CPUs of each Ray role); ours runs its roles as separate Ray actors, so
on a small machine its concurrent passes compete for the same cores.

Cores. At one thread per process, ours' roles that run at once (the reference, behaviour and reward passes;
the policy and critic updates) use more than one core, while TRL's single process uses one. ``--trl-threads``
gives TRL's process its own thread count (for example the machine's cores) to compare at equal cores.
``--algorithms ppo|grpo`` runs one comparison only; ``--rollout-workers`` and ``--learner-workers`` set ours'
rollout actors and data-parallel learner ranks (default 1 each, as the PPO stage), and ``--ours-set
KEY=VALUE`` adds any ``rlhf train ppo`` override to ours' runs.

Load
----
The machine's load average (1, 5, 15 min) is printed before the first run and after the last, with the
CPU count; the figure after includes the benchmark's own load. The benchmark refuses to start (exit 2)
when the 1-minute load average is above ``--max-load`` (default 1.0): a busy machine makes the figures
meaningless. ``--allow-busy`` runs anyway, with a ``WARNING: machine busy (load ...)`` line at the top
and the bottom of the output (on stderr with ``--json``) and ``"busy": true`` in the JSON.

Breakdown of ours
-----------------
The stage logs each step's phases to ``metrics.jsonl``: ``timing/step`` and the controller's wall time of
each phase (``timing/generation``, ``timing/scoring``, ``timing/advantages``, ``timing/training``,
``timing/sync``, ``timing/eval`` when evaluating), and ``timing/compute/<work>``: seconds the actors
themselves spent computing in the step (for example ``rollout``, ``reward``, ``reference``,
``policy_logprobs``, ``critic_values``, ``policy_train``, ``critic_train``, ``sync_send``, ``sync_receive``,
``probe``; see ``docs/metrics.md``). For each of ours' trainers the breakdown prints every ``timing/*`` key
present (but ``timing/samples_per_s`` and ``timing/tokens_per_s``), each the median over the repeats of
its mean per measured step (a key logged on some steps only counts 0 on the others), in seconds and as a
share of the step, plus ``other (controller + logging)`` = step - (generation + scoring + advantages +
training + sync + eval). Reading it: a phase's wall time minus the compute it waited for is Ray and
controller overhead; compute lines of one phase run concurrently (the scoring phase's reward, reference,
policy_logprobs and critic_values), so their sum may exceed the phase, and with ``rollout.asynchronous``
``compute/rollout`` is sampled during the other phases. ``rollout/staleness`` (mean) is shown when logged.

Models, LoRA and devices
------------------------
``--policy`` is ``tiny`` (the built-in tiny model), ``smollm2`` (SmolLM2-135M-Instruct, the Hugging Face
folder that ``scripts/fetch-smollm2.sh`` prepares) or any model folder (an SFT stage folder or a model
folder). Weights are float32 on both sides.

``--lora`` trains LoRA adapters of rank ``--lora-r`` (default 16), alpha 2 x rank, dropout 0, on every
linear layer but the output head:

* ours: ``model.lora.enabled=true`` (target modules ``all-linear``, found by architecture) on the policy and
  on the critic (whose value head trains in full); the reference actor holds its own frozen copy; with the
  transformers rollout engine only the adapters' factors are synced;
* TRL GRPO: ``peft_config=LoraConfig(target_modules="all-linear", task_type="CAUSAL_LM")``; its reference
  pass is the policy with the adapters disabled;
* TRL PPO: the same ``peft_config``, which PPOTrainer applies to the policy only: its value model trains in
  full (TRL's design; ours' critic has LoRA, so TRL PPO does more optimizer work here), and the reference
  pass is the policy with the adapters disabled (``ref_model=None``).

``--device auto|cpu|cuda`` (auto: cuda when ``torch.cuda.is_available()``). On cuda ours sets
``model.device=cuda`` and, as ``configs/gpu/ppo.yaml`` does on one GPU, gives every model-holding role a
fraction of it (0.2 GPU each: rollout, policy, reference, plus critic and reward model for PPO; a reward
function stays on CPU) and colocates them (``resources.colocate``), so the weight sync between the policy
and the rollout on one GPU goes through the object store; TRL gets ``use_cpu=False``. On cpu TRL gets
``use_cpu=True`` and ours ``model.device=cpu``.

Outputs
-------
A table per trainer, the ratios, the breakdown, the load before and after; ``--json`` prints one JSON
object instead: ``settings``, ``machine`` (CPUs, load before and after), ``busy``, ``runs`` (every run's
figures, ours' with its breakdown), ``summary`` (per trainer: medians and spread), ``ratios`` and
``breakdown``. Our run folders under ``.cache/benchmarks/runs/`` (with full model saves) are deleted once read
unless ``--keep-runs``.

Examples::

    python benchmarks/ppo_throughput.py --policy runs/sft/demo-<fp>
    python benchmarks/ppo_throughput.py --policy smollm2 --lora --json
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".cache" / "benchmarks"
TRL_PPO_VERSION = "1.12.0"
RUBRIC = "rlhf.world.demo:gold_rubric"
TEMPERATURE = 1.0
GPU_SHARE = 0.2  # of the one GPU, per model-holding role of ours (at most five: 1.0 in all)
TRAINERS = ("ours-ppo", "ours-ppo-async", "trl-ppo", "ours-grpo", "ours-grpo-async", "trl-grpo")  # a repeat's order
PHASES = ("generation", "scoring", "advantages", "training", "sync", "eval")
NOT_TIMES = {"timing/samples_per_s", "timing/tokens_per_s"}
OTHER = "other (controller + logging)"


def _prompts(args: argparse.Namespace) -> list[str]:
    """The prompt pool every trainer draws its batches from: demo-world prompts, enough for every step."""
    sys.path.insert(0, str(REPO))
    from rlhf.world.demo import generate_prompts

    return [p.text for p in generate_prompts(args.batch * (args.steps + 2), seed=1)]


def _prompt_file(args: argparse.Namespace) -> Path:
    """The prompt pool as a prompt file for ours (``data.path``)."""
    path = WORK / f"prompts-{args.batch * (args.steps + 2)}.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in _prompts(args)))
    return path


def _policy_path(name: str) -> str:
    """A local model folder for ``--policy``: 'smollm2' through scripts/fetch-smollm2.sh, else as the stages do."""
    if name == "smollm2":
        done = subprocess.run(["bash", str(REPO / "scripts" / "fetch-smollm2.sh")], capture_output=True, text=True,
                              check=False)
        folders = [line.split(":", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("folder:")]
        if done.returncode != 0 or not folders:
            raise RuntimeError(f"scripts/fetch-smollm2.sh failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return folders[-1]
    from rlhf.models.loader import resolve_model_path

    return resolve_model_path(name)


def _reward_model(policy: str) -> Path:
    """A reward model laid out like an RM stage folder: the policy's backbone, a fresh seeded head."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from rlhf.models.loader import load_tokenizer

    path = Path(policy).resolve()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    folder = WORK / f"rm-{path.parent.name if path.name == 'model' else path.name}-{digest}"
    if (folder / "model" / "reward_stats.json").is_file():
        return folder
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(policy, num_labels=1)
    tokenizer = load_tokenizer(policy)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    (folder / "model" / "reward_stats.json").write_text(json.dumps({"mean": 0.0, "std": 1.0}))
    return folder


def _trl_ppo_python() -> Path:
    """The venv with trl==1.12.0 over the project's packages (created on first use)."""
    venv = WORK / f"venv-trl-{TRL_PPO_VERSION}"
    python = venv / "bin" / "python"
    if python.exists():
        return python
    import site

    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, stdout=sys.stdout)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (venv / "lib" / version / "site-packages" / "project.pth").write_text(site.getsitepackages()[0] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", f"trl=={TRL_PPO_VERSION}"], check=True,
                   stdout=sys.stdout)
    return python


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------- ours


def ours_overrides(algorithm: str, args: argparse.Namespace, reward_model: Path, name: str,
                   asynchronous: bool = False) -> list[str]:
    """The ``rlhf train ppo`` overrides of one of ours' runs (``asynchronous``: ``rollout.asynchronous`` with
    the TIS correction it needs)."""
    n = 1 if algorithm == "ppo" else args.n
    out = [
        f"run.root={WORK / 'runs'}", f"run.name={name}", f"model.name_or_path={args.policy}",
        f"data.path={args.prompt_file}",
        f"rollout.prompts_per_step={args.batch // n}", f"rollout.n={n}", f"rollout.max_new_tokens={args.max_new_tokens}",
        f"rollout.temperature={TEMPERATURE}", "rollout.top_p=1.0", "rollout.top_k=0",
        f"algorithm.mini_batch_size={args.mini_batch}",
        f"learner.micro_batch_size={args.mini_batch // args.learner_workers}",
        "algorithm.epochs=1", f"train.steps={args.steps + 1}", "train.save_steps=1000", "eval.prompts=0",
        "train.progress=false", "learner.lr=1e-5", "model.dtype=float32",
        *[f"resources.{role}.num_cpus={args.threads}" for role in ("rollout", "policy", "critic", "reference",
                                                                     "reward")],
        f"resources.rollout_workers={args.rollout_workers}", f"resources.learner_workers={args.learner_workers}",
    ]
    if algorithm == "ppo":
        out += [f"reward.model={reward_model}", "algorithm.advantage=gae", "algorithm.kl.placement=reward",
                "algorithm.kl.estimator=k1", "algorithm.kl.coef=0.05"]
    else:
        out += [f"reward.function={RUBRIC}", "algorithm.advantage=grpo", "algorithm.kl.placement=loss",
                "algorithm.kl.estimator=k3", "algorithm.kl.coef=0.04"]
    if asynchronous:
        out += ["rollout.asynchronous=true", "algorithm.rollout_correction=tis"]
    if args.lora:
        out += ["model.lora.enabled=true", f"model.lora.r={args.lora_r}", f"model.lora.alpha={2 * args.lora_r}",
                "model.lora.dropout=0.0", "model.lora.target_modules=all-linear"]
    if args.device == "cuda":  # every model-holding role on the one GPU, as configs/gpu/ppo.yaml
        gpu_roles = ["rollout", "policy", "reference", *(["critic", "reward"] if algorithm == "ppo" else [])]
        out += ["model.device=cuda", *[f"resources.{role}.num_gpus={GPU_SHARE}" for role in gpu_roles],
                f"resources.colocate=[[{', '.join(gpu_roles)}]]"]
    else:
        out.append("model.device=cpu")
    return out + args.ours_set


def breakdown(rows: list[dict]) -> dict[str, float]:
    """Mean seconds per measured step (step > 1) of every ``timing/*`` key, plus ``other``; ``rollout/staleness``."""
    steps: dict[int, dict] = {}
    for row in rows:
        steps.setdefault(row["step"], {}).update(row)
    measured = [m for s, m in sorted(steps.items()) if s > 1 and "timing/step" in m]
    keys = sorted({k for m in measured for k in m if k.startswith("timing/") and k not in NOT_TIMES})
    out = {k.removeprefix("timing/"): sum(m.get(k, 0.0) for m in measured) / len(measured) for k in keys}
    out[OTHER] = out["step"] - sum(out.get(phase, 0.0) for phase in PHASES)
    if any("rollout/staleness" in m for m in measured):
        out["rollout/staleness"] = sum(m.get("rollout/staleness", 0.0) for m in measured) / len(measured)
    return out


def run_ours(trainer: str, args: argparse.Namespace, reward_model: Path, repeat: int) -> dict:
    """``rlhf train ppo`` for warm-up + measured steps; figures and breakdown from its metrics.jsonl."""
    algorithm, asynchronous = trainer.split("-")[1], trainer.endswith("-async")
    name = f"bench-{algorithm}-r{repeat}-{time.time_ns()}"
    overrides = ours_overrides(algorithm, args, reward_model, name, asynchronous)
    command = [sys.executable, "-m", "rlhf.cli", "train", "ppo", *overrides]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"ours ({algorithm}) failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    (folder,) = (WORK / "runs" / "ppo").glob(f"{name}-*")
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    if not args.keep_runs:
        shutil.rmtree(folder)
    steps = [r for r in rows if "timing/step" in r and r["step"] > 1]
    if len(steps) != args.steps:
        raise RuntimeError(f"ours ({algorithm}) logged {len(steps)} measured steps, expected {args.steps}")
    seconds = sum(r["timing/step"] for r in steps)
    tokens = sum(r["timing/tokens_per_s"] * r["timing/step"] for r in steps)
    return {"trainer": trainer, "label": f"ours {algorithm.upper()}{' async' if asynchronous else ''}", "steps": len(steps),
            "seconds": seconds, "samples_per_s": args.batch * len(steps) / seconds, "tokens_per_s": tokens / seconds,
            "tokens_per_sample": tokens / (args.batch * len(steps)), "breakdown": breakdown(rows)}


# ---------------------------------------------------------------- TRL workers (run in subprocesses)


class _StepClock:
    """Wall-clock marks at the start of training and at the end of every optimizer step, and the mean
    generated length of every generation batch when the trainer logs it."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.lengths: list[float] = []

    def callback(self):
        from transformers import TrainerCallback

        clock = self

        class Clock(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                clock.ends.append(time.perf_counter())

            def on_step_end(self, args, state, control, **kwargs):
                clock.ends.append(time.perf_counter())

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "completions/mean_length" in logs:
                    clock.lengths.append(float(logs["completions/mean_length"]))

        return Clock()

    def measured(self, per_step: int = 1) -> list[float]:
        """Wall time of every step of ``per_step`` optimizer steps, the first (warm-up) step left out."""
        marks = self.ends[::per_step]  # training start, then the end of each step
        return [b - a for a, b in itertools.pairwise(marks[1:])]


def _common_trl(args: argparse.Namespace) -> dict:
    return {"output_dir": str(WORK / "trl-out"), "report_to": [], "save_strategy": "no", "logging_steps": 1,
            "use_cpu": args.device == "cpu", "bf16": False, "learning_rate": 1e-5, "seed": 0, "disable_tqdm": True,
            "gradient_accumulation_steps": 1, "temperature": TEMPERATURE}


def _peft_config(args: argparse.Namespace):
    if not args.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")


def _figures(trainer: str, label: str, args: argparse.Namespace, durations: list[float], tokens: float) -> dict:
    if len(durations) != args.steps:
        raise RuntimeError(f"{label} timed {len(durations)} measured steps, expected {args.steps}")
    seconds = sum(durations)
    return {"trainer": trainer, "label": label, "steps": len(durations), "seconds": seconds,
            "samples_per_s": args.batch * len(durations) / seconds, "tokens_per_s": tokens / seconds,
            "tokens_per_sample": tokens / (args.batch * len(durations))}


def worker_trl_grpo(args: argparse.Namespace) -> dict:
    import trl
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from rlhf.models.loader import load_model, load_tokenizer
    from rlhf.utils.callables import load_callable

    rubric = load_callable(RUBRIC)

    def reward(prompts, completions, **kwargs):
        return [rubric(p[-1]["content"], c[-1]["content"]) for p, c in zip(prompts, completions)]

    per_generation = args.batch // args.mini_batch  # optimizer steps per generation batch
    prompts = _prompts(args)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts])
    config = GRPOConfig(**_common_trl(args), per_device_train_batch_size=args.mini_batch,
                        steps_per_generation=per_generation, num_generations=args.n,
                        max_completion_length=args.max_new_tokens, max_steps=(args.steps + 1) * per_generation,
                        beta=0.04, num_iterations=1, top_p=1.0, top_k=0, gradient_checkpointing=False)
    assert config.generation_batch_size == args.batch, (config.generation_batch_size, args.batch)
    clock = _StepClock()
    trainer = GRPOTrainer(model=load_model(args.policy, "policy", device="cpu"), reward_funcs=[reward], args=config,
                          train_dataset=dataset, processing_class=load_tokenizer(args.policy),
                          callbacks=[clock.callback()], peft_config=_peft_config(args))
    trainer.train()
    if len(clock.ends) != 1 + config.max_steps:
        raise RuntimeError(f"TRL GRPO marked {len(clock.ends) - 1} optimizer steps, expected {config.max_steps}")
    durations = clock.measured(per_generation)
    if len(clock.lengths) != args.steps + 1:
        raise RuntimeError(f"TRL GRPO logged {len(clock.lengths)} generation lengths, expected {args.steps + 1}")
    tokens = sum(clock.lengths[1:]) * args.batch
    return _figures("trl-grpo", f"TRL {trl.__version__} GRPOTrainer", args, durations, tokens)


def worker_trl_ppo(args: argparse.Namespace) -> dict:
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as module

    from rlhf.models.generation import chat_prompt_ids
    from rlhf.models.loader import load_tokenizer

    assert trl.__version__ == TRL_PPO_VERSION, trl.__version__
    tokenizer = load_tokenizer(args.policy)
    counted: list[int] = []
    original = module.batch_generation

    def counting_generation(model, queries, *rest, **kwargs):  # count generated tokens up to EOS
        query_responses, logits = original(model, queries, *rest, **kwargs)
        responses = query_responses[:, queries.shape[1]:]
        is_eos = responses == tokenizer.eos_token_id
        ended = is_eos.any(dim=1)
        first = torch.where(ended, is_eos.int().argmax(dim=1) + 1, torch.full_like(ended, responses.shape[1],
                                                                                     dtype=torch.long))
        counted.append(int(first.sum()))
        return query_responses, logits

    module.batch_generation = counting_generation
    prompts = _prompts(args)
    dataset = Dataset.from_list([{"input_ids": ids} for ids in chat_prompt_ids(tokenizer, prompts)])
    rm = str(Path(args.reward_model) / "model")
    # local batch = per_device_train_batch_size x gradient_accumulation_steps = batch; num_mini_batches
    # mini-batches of mini_batch samples, each one micro-batch, so one optimizer step each.
    config = PPOConfig(**_common_trl(args), per_device_train_batch_size=args.batch,
                       num_mini_batches=args.batch // args.mini_batch, num_ppo_epochs=1,
                       total_episodes=args.batch * (args.steps + 1), response_length=args.max_new_tokens,
                       local_rollout_forward_batch_size=args.batch, stop_token="eos", num_sample_generations=0,
                       kl_coef=0.05)
    clock = _StepClock()
    peft_config = _peft_config(args)
    trainer = PPOTrainer(args=config, processing_class=tokenizer,
                         model=AutoModelForCausalLM.from_pretrained(args.policy),
                         ref_model=None if peft_config else AutoModelForCausalLM.from_pretrained(args.policy),
                         reward_model=AutoModelForSequenceClassification.from_pretrained(rm, num_labels=1),
                         value_model=AutoModelForSequenceClassification.from_pretrained(rm, num_labels=1),
                         train_dataset=dataset, callbacks=[clock.callback()], peft_config=peft_config)
    trainer.train()
    durations = clock.measured()
    tokens = sum(counted[1:1 + len(durations)])
    return _figures("trl-ppo", f"TRL {TRL_PPO_VERSION} PPOTrainer", args, durations, tokens)


def run_worker(python: Path, name: str, args: argparse.Namespace, reward_model: Path) -> dict:
    threads = args.trl_threads or args.threads
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TRL_EXPERIMENTAL_SILENCE": "1",
           "PYTHONPATH": str(REPO)}
    command = [str(python), __file__, "--worker", name, "--policy", args.policy, "--reward-model", str(reward_model),
               "--steps", str(args.steps), "--batch", str(args.batch), "--n", str(args.n),
               "--mini-batch", str(args.mini_batch), "--max-new-tokens", str(args.max_new_tokens),
               "--threads", str(threads), "--device", args.device, "--lora-r", str(args.lora_r),
               *(["--lora"] if args.lora else [])]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False, cwd=REPO)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


# ---------------------------------------------------------------- driver


def summarise(runs: list[dict]) -> dict[str, dict]:
    """Per trainer: median and spread (min, max) over the repeats."""
    out: dict[str, dict] = {}
    for trainer in TRAINERS:
        mine = [r for r in runs if r["trainer"] == trainer]
        if not mine:
            continue
        entry: dict = {"label": mine[0]["label"], "runs": len(mine)}
        for key in ("samples_per_s", "tokens_per_s", "tokens_per_sample"):
            values = [r[key] for r in mine]
            entry[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        entry["seconds_per_step"] = statistics.median(r["seconds"] / r["steps"] for r in mine)
        out[trainer] = entry
    return out


def ratios(summary: dict[str, dict]) -> dict[str, float]:
    """ours / TRL from the medians, per algorithm, for ours synchronous and (when run) asynchronous."""
    out = {}
    for algorithm in ("ppo", "grpo"):
        trl = summary.get(f"trl-{algorithm}")
        if trl is None:
            continue
        for mode in ("", "-async"):
            ours = summary.get(f"ours-{algorithm}{mode}")
            if ours is None:
                continue
            for key, unit in (("samples_per_s", "samples/s"), ("tokens_per_s", "tokens/s")):
                label = f"{algorithm.upper()}{' async' if mode else ''} {unit} ours/TRL"
                out[label] = ours[key]["median"] / trl[key]["median"]
    return out


def breakdown_summary(runs: list[dict]) -> dict[str, dict[str, float]]:
    """Per ours trainer: the median over the repeats of every breakdown entry."""
    out: dict[str, dict[str, float]] = {}
    for trainer in (t for t in TRAINERS if t.startswith("ours-")):
        mine = [r["breakdown"] for r in runs if r["trainer"] == trainer]
        if not mine:
            continue
        keys = sorted({k for b in mine for k in b})
        out[trainer] = {k: statistics.median(b.get(k, 0.0) for b in mine) for k in keys}
    return out


def _order(keys: set[str]) -> list[str]:
    """step, the phases in step order, other non-compute keys (sorted), other, compute keys (sorted)."""
    phases = [p for p in PHASES if p in keys]
    rest = sorted(k for k in keys if k not in {"step", OTHER, *PHASES} and not k.startswith(("compute/", "rollout/")))
    return ["step", *phases, *rest, OTHER, *sorted(k for k in keys if k.startswith("compute/"))]


def _spread(value: dict, digits: int) -> str:
    return f"{value['median']:.{digits}f} ({value['min']:.{digits}f}-{value['max']:.{digits}f})"


def _report(summary: dict, ratio: dict, parts: dict) -> str:
    header = (f"{'trainer':<26} {'runs':>4} {'samples/s median (min-max)':>27} {'tokens/s median (min-max)':>27} "
              f"{'tokens/sample':>13} {'s/step':>7}")
    lines = [header]
    for entry in summary.values():
        lines.append(f"{entry['label']:<26} {entry['runs']:>4} {_spread(entry['samples_per_s'], 2):>27} "
                     f"{_spread(entry['tokens_per_s'], 1):>27} {entry['tokens_per_sample']['median']:>13.1f} "
                     f"{entry['seconds_per_step']:>7.2f}")
    lines.append("")
    lines += [f"{name:<26} {value:6.2f}" for name, value in ratio.items()]
    lines += ["", "ours per step (median over repeats of the mean over measured steps): seconds, share of step"]
    trainers = [t for t in TRAINERS if t in parts]
    lines.append(f"{'':<30}" + "".join(f"{summary[t]['label']:>22}" for t in trainers))
    for key in _order({k for t in trainers for k in parts[t]}):
        cells = []
        for t in trainers:
            value = parts[t].get(key)
            cells.append(f"{'-':>22}" if value is None else f"{value:>12.3f} s {100 * value / parts[t]['step']:>5.1f} %")
        name = f"  {key}" if key.startswith("compute/") else key
        lines.append(f"{name:<30}" + "".join(cells))
    if any("rollout/staleness" in parts[t] for t in trainers):
        lines.append(f"{'rollout/staleness (steps)':<30}" + "".join(
            f"{parts[t].get('rollout/staleness', 0.0):>22.2f}" for t in trainers))
    return "\n".join(lines)


def measure(args: argparse.Namespace) -> list[dict]:
    """Every run's figures: ``--repeats`` rounds of the four trainers, interleaved."""
    WORK.mkdir(parents=True, exist_ok=True)
    args.device = _device(args.device)
    args.policy = _policy_path(args.policy)
    reward_model = _reward_model(args.policy)
    args.prompt_file = _prompt_file(args)
    trl_ppo_python = _trl_ppo_python()
    runs: list[dict] = []
    for repeat in range(1, args.repeats + 1):
        for trainer in TRAINERS:
            if (trainer.endswith("-async") and not args.asynchronous) or trainer.split("-")[1] not in args.algorithms:
                continue
            if trainer.startswith("ours-"):
                result = run_ours(trainer, args, reward_model, repeat)
            else:
                python = trl_ppo_python if trainer == "trl-ppo" else Path(sys.executable)
                result = run_worker(python, trainer, args, reward_model)
            runs.append({**result, "repeat": repeat})
    return runs


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="tiny", help="'tiny', 'smollm2' or a model folder (e.g. an SFT run folder)")
    parser.add_argument("--steps", type=int, default=12, help="measured steps per run (after one warm-up step)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each trainer, interleaved")
    parser.add_argument("--batch", type=int, default=16, help="samples per step")
    parser.add_argument("--n", type=int, default=4, help="GRPO replies per prompt")
    parser.add_argument("--mini-batch", type=int, default=8, help="samples per optimizer step")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="longest reply")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process / CPUs per Ray role")
    parser.add_argument("--trl-threads", type=int, help="torch threads of TRL's process (default: --threads)")
    parser.add_argument("--ours-set", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra 'rlhf train ppo' override for ours (repeatable), after the benchmark's own")
    parser.add_argument("--rollout-workers", type=int, default=1, help="ours: rollout worker actors")
    parser.add_argument("--learner-workers", type=int, default=1, help="ours: data-parallel learner ranks")
    parser.add_argument("--algorithms", nargs="+", choices=["ppo", "grpo"], default=["ppo", "grpo"],
                        help="which comparisons to run")
    parser.add_argument("--asynchronous", action="store_true",
                        help="also run ours with rollout.asynchronous (sampling overlapped with training)")
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters (all linear layers) on every side")
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank (alpha: twice the rank)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: cuda when torch sees a GPU")
    parser.add_argument("--max-load", type=float, default=1.0, help="refuse to start above this 1-minute load average")
    parser.add_argument("--allow-busy", action="store_true", help="run above --max-load, with a warning")
    parser.add_argument("--keep-runs", action="store_true", help="keep our run folders under .cache/benchmarks/runs")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--worker", choices=["trl-grpo", "trl-ppo"], help=argparse.SUPPRESS)
    parser.add_argument("--reward-model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch % args.n or args.batch % args.mini_batch or args.mini_batch % args.learner_workers:
        parser.error("--batch must be a multiple of --n and of --mini-batch, --mini-batch of --learner-workers")
    if min(args.steps, args.repeats, args.rollout_workers, args.learner_workers) < 1 or args.n < 2:
        parser.error("--steps, --repeats, --rollout-workers and --learner-workers must be at least 1, --n at least 2")
    sys.path.insert(0, str(REPO))
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        result = worker_trl_grpo(args) if args.worker == "trl-grpo" else worker_trl_ppo(args)
        print(json.dumps(result))
        return 0

    cpus, before = os.cpu_count(), _load()
    if before[0] > args.max_load and not args.allow_busy:
        print(f"refusing to start: 1-minute load average {before[0]:.2f} > --max-load {args.max_load:g} on {cpus} "
              "CPUs (figures from a busy machine are meaningless); wait, raise --max-load or pass --allow-busy",
              file=sys.stderr)
        return 2
    busy = before[0] > args.max_load
    warning = f"WARNING: machine busy (load {before[0]:.2f} > --max-load {args.max_load:g} on {cpus} CPUs): " \
              "these figures are not trustworthy"
    out = sys.stderr if args.json else sys.stdout
    if busy:
        print(warning, file=out, flush=True)

    # with --json, stdout carries the JSON object alone (libraries log to stdout while models load)
    with contextlib.redirect_stdout(out):
        runs = measure(args)
    after = _load()
    summary, parts = summarise(runs), breakdown_summary(runs)
    ratio = ratios(summary)
    settings = {k: v for k, v in vars(args).items() if k not in ("worker", "reward_model", "prompt_file")}
    machine = {"cpus": cpus, "load_before": before, "load_after": after}
    if args.json:
        print(json.dumps({"settings": settings, "machine": machine, "busy": busy, "runs": runs, "summary": summary,
                          "ratios": ratio, "breakdown": parts}))
    else:
        print(f"policy {args.policy} on {args.device}{f', LoRA r={args.lora_r}' if args.lora else ''}; "
              f"batch {args.batch} (GRPO {args.batch // args.n} prompts x {args.n}), mini-batch {args.mini_batch}, "
              f"max {args.max_new_tokens} new tokens, temperature {TEMPERATURE:g}; {args.repeats} repeat(s) of "
              f"{args.steps} measured steps, {args.threads} thread(s) per process"
              + (f" ({args.trl_threads} in TRL's)" if args.trl_threads else ""))
        print(f"{cpus} CPUs; load average (1, 5, 15 min) before {before}, after {after} (after: with this benchmark's)")
        print(_report(summary, ratio, parts))
    if busy:
        print(warning, file=out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
