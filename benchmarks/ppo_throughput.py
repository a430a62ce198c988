"""Throughput of our PPO and GRPO (``rlhf train ppo`` under Ray) against TRL, side by side in one run.

Four trainers run the same policy, prompts, batch and lengths for ``--steps`` measured steps after one
warm-up step, each in its own process:

* ours, PPO (GAE, critic from the reward model) and GRPO (gold-rubric reward function);
* TRL's ``GRPOTrainer`` (the installed trl, same venv) with the same reward function;
* trl==1.12.0's ``trl.experimental.ppo.PPOTrainer`` (PPO left TRL in 1.13), in its own venv that this
  script creates under ``.cache/benchmarks/`` (git-ignored): a venv that sees the project's packages
  and installs only ``trl==1.12.0`` on top, so torch and transformers are the same builds.

Both PPO runs score with the same reward model (the policy's backbone with a fresh one-output head, built
here), both GRPO runs with ``rlhf.world.demo:gold_rubric``. A step is one rollout batch of ``--batch``
samples (GRPO: ``--batch / --n`` prompts x ``--n`` replies) of at most ``--max-new-tokens`` tokens, then
one PPO epoch in ``--batch / --mini-batch`` optimizer steps; samples/s and tokens/s (generated tokens up
to and including EOS) are over the measured steps' wall time. Every trainer runs at the same thread
count (``--threads``). Ours runs its roles as separate Ray actors: on a 2-core machine that concurrency
competes for the same cores.

Example (prints a table and the ratios ours / TRL)::

    python benchmarks/ppo_throughput.py --policy runs/sft/demo-<fp> --steps 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".cache" / "benchmarks"
TRL_PPO_VERSION = "1.12.0"
RUBRIC = "rlhf.world.demo:gold_rubric"


def _prompts(count: int, seed: int) -> list[str]:
    sys.path.insert(0, str(REPO))
    from rlhf.world.demo import generate_prompts

    return [p.text for p in generate_prompts(count, seed=seed)]


def _reward_model(policy: str) -> Path:
    """A reward model laid out like an RM stage folder: the policy's backbone, a fresh seeded head."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from rlhf.models.loader import load_tokenizer

    folder = WORK / f"rm-{Path(policy).name}"
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

    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (venv / "lib" / version / "site-packages" / "project.pth").write_text(site.getsitepackages()[0] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", f"trl=={TRL_PPO_VERSION}"], check=True)
    return python


# ---------------------------------------------------------------- ours


def run_ours(algorithm: str, args: argparse.Namespace, policy: str, reward_model: Path) -> dict:
    """``rlhf train ppo`` for warm-up + measured steps; figures from its metrics.jsonl."""
    root = WORK / "runs"
    n = 1 if algorithm == "ppo" else args.n
    common = [
        f"run.root={root}", f"run.name=bench-{algorithm}-{int(time.time())}", f"model.name_or_path={policy}",
        f"rollout.prompts_per_step={args.batch // n}", f"rollout.n={n}", f"rollout.max_new_tokens={args.max_new_tokens}",
        f"algorithm.mini_batch_size={args.mini_batch}", f"learner.micro_batch_size={args.mini_batch}",
        f"train.steps={args.steps + 1}", "train.save_steps=1000", "eval.prompts=0", "train.progress=false",
        f"resources.rollout.num_cpus={args.threads}", f"resources.policy.num_cpus={args.threads}",
        f"resources.critic.num_cpus={args.threads}", f"resources.reference.num_cpus={args.threads}",
        f"resources.reward.num_cpus={args.threads}", "learner.lr=1e-5",
    ]
    if algorithm == "ppo":
        common += [f"reward.model={reward_model}", "algorithm.advantage=gae"]
    else:
        common += [f"reward.function={RUBRIC}", "algorithm.advantage=grpo", "algorithm.kl.placement=loss",
                   "algorithm.kl.estimator=k3", "algorithm.kl.coef=0.04"]
    done = subprocess.run([sys.executable, "-m", "rlhf.cli", "train", "ppo", *common], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ours ({algorithm}) failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    folder = max((root / "ppo").glob(f"bench-{algorithm}-*"), key=lambda p: p.stat().st_mtime)
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "timing/step" in r and r["step"] > 1]
    seconds = sum(r["timing/step"] for r in steps)
    tokens = sum(r["timing/tokens_per_s"] * r["timing/step"] for r in steps)
    return {"trainer": f"ours {algorithm.upper()}", "steps": len(steps), "seconds": seconds,
            "samples_per_s": args.batch * len(steps) / seconds, "tokens_per_s": tokens / seconds}


# ---------------------------------------------------------------- TRL workers (run in subprocesses)


class _StepClock:
    """Wall time between consecutive optimizer steps, and generated tokens per step when logged."""

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

    def measured(self) -> list[float]:
        return [b - a for a, b in zip(self.ends[1:], self.ends[2:])]  # drop the warm-up step


def _common_trl(args: argparse.Namespace) -> dict:
    return {"output_dir": str(WORK / "trl-out"), "report_to": [], "save_strategy": "no", "logging_steps": 1,
            "use_cpu": True, "bf16": False, "learning_rate": 1e-5, "seed": 0, "disable_tqdm": True}


def worker_trl_grpo(args: argparse.Namespace) -> dict:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from rlhf.models.loader import load_model, load_tokenizer
    from rlhf.utils.callables import load_callable

    rubric = load_callable(RUBRIC)

    def reward(prompts, completions, **kwargs):
        return [rubric(p[-1]["content"], c[-1]["content"]) for p, c in zip(prompts, completions)]

    prompts = _prompts(args.batch * (args.steps + 2), seed=1)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts])
    config = GRPOConfig(**_common_trl(args), per_device_train_batch_size=args.batch, num_generations=args.n,
                        max_completion_length=args.max_new_tokens, max_steps=args.steps + 1, beta=0.04,
                        num_iterations=1, gradient_accumulation_steps=1, steps_per_generation=1,
                        gradient_checkpointing=False)
    clock = _StepClock()
    trainer = GRPOTrainer(model=load_model(args.policy, "policy", device="cpu"), reward_funcs=[reward], args=config,
                          train_dataset=dataset, processing_class=load_tokenizer(args.policy),
                          callbacks=[clock.callback()])
    trainer.train()
    durations = clock.measured()
    tokens = sum(clock.lengths[1:]) * args.batch
    return {"trainer": "TRL GRPOTrainer", "steps": len(durations), "seconds": sum(durations),
            "samples_per_s": args.batch * len(durations) / sum(durations), "tokens_per_s": tokens / sum(durations)}


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
    prompts = _prompts(args.batch * (args.steps + 2), seed=1)
    dataset = Dataset.from_list([{"input_ids": ids} for ids in chat_prompt_ids(tokenizer, prompts)])
    rm = str(Path(args.reward_model) / "model")
    config = PPOConfig(**_common_trl(args), per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
                       num_mini_batches=args.batch // args.mini_batch, num_ppo_epochs=1,
                       total_episodes=args.batch * (args.steps + 1), response_length=args.max_new_tokens,
                       local_rollout_forward_batch_size=args.batch, stop_token="eos", num_sample_generations=0,
                       kl_coef=0.05)
    clock = _StepClock()
    trainer = PPOTrainer(args=config, processing_class=tokenizer,
                         model=AutoModelForCausalLM.from_pretrained(args.policy),
                         ref_model=AutoModelForCausalLM.from_pretrained(args.policy),
                         reward_model=AutoModelForSequenceClassification.from_pretrained(rm, num_labels=1),
                         value_model=AutoModelForSequenceClassification.from_pretrained(rm, num_labels=1),
                         train_dataset=dataset, callbacks=[clock.callback()])
    trainer.train()
    durations = clock.measured()
    tokens = sum(counted[1:1 + len(durations)])
    return {"trainer": f"TRL {TRL_PPO_VERSION} PPOTrainer", "steps": len(durations), "seconds": sum(durations),
            "samples_per_s": args.batch * len(durations) / sum(durations), "tokens_per_s": tokens / sum(durations)}


def run_worker(python: Path, name: str, args: argparse.Namespace, reward_model: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TRL_EXPERIMENTAL_SILENCE": "1",
           "PYTHONPATH": str(REPO)}
    command = [str(python), __file__, "--worker", name, "--policy", args.policy, "--reward-model", str(reward_model),
               "--steps", str(args.steps), "--batch", str(args.batch), "--n", str(args.n),
               "--mini-batch", str(args.mini_batch), "--max-new-tokens", str(args.max_new_tokens),
               "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


# ---------------------------------------------------------------- driver


def _table(results: list[dict]) -> str:
    lines = [f"{'trainer':<26} {'steps':>5} {'seconds':>8} {'samples/s':>10} {'tokens/s':>10}"]
    for r in results:
        lines.append(f"{r['trainer']:<26} {r['steps']:>5} {r['seconds']:>8.1f} {r['samples_per_s']:>10.2f} "
                     f"{r['tokens_per_s']:>10.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="tiny", help="policy folder (an SFT run folder) or 'tiny'")
    parser.add_argument("--steps", type=int, default=4, help="measured steps (after one warm-up step)")
    parser.add_argument("--batch", type=int, default=16, help="samples per step")
    parser.add_argument("--n", type=int, default=4, help="GRPO replies per prompt")
    parser.add_argument("--mini-batch", type=int, default=8, help="samples per optimizer step")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="longest reply")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process / CPUs per Ray role")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--worker", choices=["trl-grpo", "trl-ppo"], help=argparse.SUPPRESS)
    parser.add_argument("--reward-model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch % args.n or args.batch % args.mini_batch:
        parser.error("--batch must be a multiple of --n and of --mini-batch")
    sys.path.insert(0, str(REPO))
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        result = worker_trl_grpo(args) if args.worker == "trl-grpo" else worker_trl_ppo(args)
        print(json.dumps(result))
        return 0

    from rlhf.models.loader import resolve_model_path

    WORK.mkdir(parents=True, exist_ok=True)
    args.policy = resolve_model_path(args.policy)
    reward_model = _reward_model(args.policy)
    results = [run_ours("ppo", args, args.policy, reward_model),
               run_worker(_trl_ppo_python(), "trl-ppo", args, reward_model),
               run_ours("grpo", args, args.policy, reward_model),
               run_worker(Path(sys.executable), "trl-grpo", args, reward_model)]
    ratios = {
        "PPO samples/s ours/TRL": results[0]["samples_per_s"] / results[1]["samples_per_s"],
        "PPO tokens/s ours/TRL": results[0]["tokens_per_s"] / results[1]["tokens_per_s"],
        "GRPO samples/s ours/TRL": results[2]["samples_per_s"] / results[3]["samples_per_s"],
        "GRPO tokens/s ours/TRL": results[2]["tokens_per_s"] / results[3]["tokens_per_s"],
    }
    if args.json:
        print(json.dumps({"settings": {k: v for k, v in vars(args).items() if k not in ("worker", "reward_model")},
                          "results": results, "ratios": ratios}))
    else:
        print(f"policy {args.policy}; batch {args.batch} (GRPO {args.batch // args.n} prompts x {args.n}), "
              f"mini-batch {args.mini_batch}, max {args.max_new_tokens} new tokens, {args.steps} measured steps, "
              f"{args.threads} thread(s) per process")
        print(_table(results))
        for name, value in ratios.items():
            print(f"{name:<26} {value:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
