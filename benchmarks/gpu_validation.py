"""Validation of the GPU path: learners, rollout engines, weight sync, and short PPO and DPO runs.

Sections (``--sections``, comma-separated, in this order):

* ``learner``: the policy learner (:class:`rlhf.roles.learner.PolicyLearner`, DeepSpeed, torch AdamW) at
  ZeRO-2 and ZeRO-3 on ``--batch`` sequences of ``--seq-len`` tokens: steps/s, tokens/s, peak GPU memory
  and MFU (model FLOPs ``6N + 12LHS`` per token over the device's dense bf16 peak, :mod:`rlhf.utils.flops`).
* ``rollout``: generated tokens/s of the transformers engine and of the vLLM engine at each ``--rollout-batches``
  size (``--max-new-tokens`` per reply, temperature 1).
* ``sync``: learner -> engine weight load time per GB, and the largest per-token log-prob difference
  between learner and engine on a probe batch before the load (after one training step: must be large)
  and after it (must be within ``--tolerance``), for each engine.
* ``ppo`` / ``dpo``: ``rlhf train sft`` on ``configs/gpu/sft.yaml``, then ``rlhf train ppo`` on
  ``configs/gpu/ppo-vllm.yaml`` (GRPO, gold-rubric reward, the vLLM engine sharing the learner's GPU) when
  vLLM is installed, else on ``configs/gpu/ppo.yaml`` (the same with the transformers engine), and ``rlhf train dpo configs/gpu/dpo.yaml`` from that SFT policy: first and last
  rollout reward, and the held-out gold win rate against the SFT policy.

Models are built from a config (``--size``) with the locally trained tokenizer, so nothing is downloaded.
Every section prints its rows as it finishes and writes them to ``<out>/gpu_validation.json``; a table
of all rows comes last. A section that cannot run here (vLLM without CUDA or the package) prints why.

Examples::

    python benchmarks/gpu_validation.py --out /tmp/gpu                 # everything, on CUDA
    python benchmarks/gpu_validation.py --device cpu --size tiny --sections learner,rollout,sync --steps 1
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZES = {  # TinyModelConfig fields: (hidden, layers, heads, intermediate)
    "tiny": (192, 4, 4, 512),
    "small": (512, 8, 8, 1408),
    "medium": (1024, 24, 16, 2816),
}
SECTIONS = ("learner", "rollout", "sync", "ppo", "dpo")


def _model_path(size: str) -> str:
    from rlhf.models.config import TinyModelConfig
    from rlhf.models.loader import resolve_model_path

    hidden, layers, heads, inter = SIZES[size]
    return resolve_model_path("tiny", TinyModelConfig(hidden_size=hidden, num_layers=layers, num_heads=heads,
                                                      intermediate_size=inter, max_position_embeddings=2048))


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def _reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _peak_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def _free(device: str) -> None:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _learner(path: str, args: argparse.Namespace, zero_stage: int, micro: int, accum: int, lr: float = 1e-6):
    from rlhf.roles.learner import PolicyLearner
    from rlhf.trainers.deepspeed_engine import LearnerSpec
    from rlhf.trainers.hf import DeepSpeedSettings
    from rlhf.utils.distributed import free_port

    spec = LearnerSpec(model_path=path, dtype=args.dtype, device=args.device, lr=lr,
                       deepspeed=DeepSpeedSettings(zero_stage=zero_stage),
                       micro_batch_size=micro, grad_accum_steps=accum, gradient_checkpointing=args.checkpointing,
                       threads=os.cpu_count() or 1)
    learner = PolicyLearner(spec, rank=0, world_size=1, backend="nccl" if args.device == "cuda" else "gloo")
    learner.setup("127.0.0.1", free_port())
    return learner


def _random_batch(learner, batch: int, prompt: int, response: int, seed: int):
    import torch

    from rlhf.rollout.containers import Batch, TokenBatch

    gen = torch.Generator().manual_seed(seed)
    vocab = learner.tokenizer.vocab_size
    ids = torch.randint(10, vocab, (batch, prompt + response), generator=gen)
    tokens = TokenBatch(ids, torch.ones_like(ids), prompt)
    mask = torch.ones(batch, response)
    old = learner.logprobs(tokens, 1.0)
    advantages = torch.randn(batch, 1, generator=gen).sign() * mask
    return Batch(tokens, mask, old, advantages)


def section_learner(path: str, args: argparse.Namespace) -> list[dict]:
    from rlhf.rl import PolicyLossSettings
    from rlhf.trainers.modeling import unwrap
    from rlhf.utils.flops import decoder_flops_per_token, mfu, non_embedding_parameters, peak_tflops

    rows = []
    prompt = args.seq_len // 4
    for zero in (2, 3):
        learner = _learner(path, args, zero, args.micro_batch, args.batch // args.micro_batch)
        batch = _random_batch(learner, args.batch, prompt, args.seq_len - prompt, seed=zero)
        model = unwrap(learner.engine)
        cfg = model.config
        if zero == 3:
            from rlhf.trainers.modeling import exported_weights

            params = sum(t.numel() for _, t in exported_weights(learner.engine, 3))
            embed = cfg.vocab_size * cfg.hidden_size
            n_params = params - embed * (0 if cfg.tie_word_embeddings else 1)
        else:
            n_params = non_embedding_parameters(model)
        step = functools.partial(learner.train_minibatch, batch, PolicyLossSettings(), 0.0, batch.token_count,
                                 batch.sequence_count)
        step()  # warm-up
        _reset_peak(args.device)
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        _sync(args.device)
        seconds = (time.perf_counter() - start) / args.steps
        tokens_per_s = args.batch * args.seq_len / seconds
        flops = decoder_flops_per_token(n_params, cfg.num_hidden_layers, cfg.hidden_size, args.seq_len)
        peak = args.peak_tflops or peak_tflops(_device_name(args.device))
        _emit(rows, {"section": "learner", "zero_stage": zero, "dtype": args.dtype, "params_m": n_params / 1e6,
                     "gradient_checkpointing": args.checkpointing, "batch": args.batch, "seq_len": args.seq_len,
                     "steps_per_s": 1 / seconds, "tokens_per_s": tokens_per_s,
                     "peak_mem_gib": _peak_gib(args.device),
                     "mfu": mfu(tokens_per_s, flops, peak) if peak else None})
        del learner, batch, model
        _free(args.device)
    return rows


def _engine(kind: str, path: str, args: argparse.Namespace, batch_size: int = 64):
    from rlhf.rollout import open_engine
    from rlhf.rollout.vllm_settings import VLLMSettings

    if kind == "vllm":
        return open_engine("vllm", path, args.dtype, args.device,
                           vllm=VLLMSettings(gpu_memory_utilization=args.vllm_memory, enforce_eager=False))
    return open_engine("transformers", path, args.dtype, args.device, batch_size)


def _unavailable(kind: str) -> str | None:
    """Why engine ``kind`` cannot run here (None: it can)."""
    if kind != "vllm":
        return None
    from rlhf.core.errors import UserError
    from rlhf.rollout.vllm_engine import require_vllm

    try:
        require_vllm()
    except UserError as err:
        return str(err)
    return None


def _emit(rows: list[dict], row: dict) -> None:
    rows.append(row)
    print(json.dumps(row), flush=True)


def _engines_here(section: str, rows: list[dict]):
    """The engines that can run here; a row saying why for each that cannot."""
    for kind in ("transformers", "vllm"):
        why = _unavailable(kind)
        if why:
            _emit(rows, {"section": section, "engine": kind, "skipped": why})
        else:
            yield kind


def _prompts(count: int) -> list[str]:
    from rlhf.world.demo import generate_prompts

    return [p.text for p in generate_prompts(count, seed=123)]


def section_rollout(path: str, args: argparse.Namespace) -> list[dict]:
    from rlhf.rollout import SamplingParams

    rows = []
    params = SamplingParams(n=1, temperature=1.0, max_new_tokens=args.max_new_tokens)
    for kind in _engines_here("rollout", rows):
        engine = _engine(kind, path, args, batch_size=max(args.rollout_batches))
        engine.generate(_prompts(2), params, seed=0)  # warm-up (CUDA graphs, allocator)
        for size in args.rollout_batches:
            prompts = _prompts(size)
            _sync(args.device)
            start = time.perf_counter()
            samples = engine.generate(prompts, params, seed=1)
            _sync(args.device)
            seconds = time.perf_counter() - start
            generated = sum(len(s.response_ids) for s in samples)
            _emit(rows, {"section": "rollout", "engine": kind, "batch": size, "max_new_tokens": args.max_new_tokens,
                         "generated_tokens": generated, "seconds": seconds, "tokens_per_s": generated / seconds})
        del engine
        _free(args.device)
    return rows


def section_sync(path: str, args: argparse.Namespace) -> list[dict]:
    from rlhf.rl import PolicyLossSettings
    from rlhf.roles.weight_sync import probe_difference
    from rlhf.rollout import SamplingParams

    rows = []
    learner = _learner(path, args, 2, args.micro_batch, 1, lr=1e-3)  # a step large enough to see before the sync
    batch = _random_batch(learner, args.micro_batch, 32, 32, seed=7)
    learner.train_minibatch(batch, PolicyLossSettings(), 0.0, batch.token_count, batch.sequence_count)
    size_gb = sum(t.numel() * t.element_size() for _, t in learner._weights()) / 1e9
    for kind in _engines_here("sync", rows):
        engine = _engine(kind, path, args)
        samples = engine.generate(_prompts(4), SamplingParams(max_new_tokens=32), seed=3)
        probe = [list(s.prompt_ids) for s in samples], [list(s.response_ids) for s in samples]
        before = probe_difference(engine.logprobs(*probe, 1.0), learner.probe_logprobs(*probe, 1.0))
        _sync(args.device)
        start = time.perf_counter()
        # In one process the transformers engine copies device tensors; vLLM's workers take CPU tensors
        # through collective_rpc, the path of the object-store sync.
        loaded = engine.load_weights(learner._weights() if kind == "transformers" else learner.weights())
        _sync(args.device)
        seconds = time.perf_counter() - start
        after = probe_difference(engine.logprobs(*probe, 1.0), learner.probe_logprobs(*probe, 1.0))
        _emit(rows, {"section": "sync", "engine": kind, "tensors": loaded, "gb": size_gb, "seconds": seconds,
                     "seconds_per_gb": seconds / size_gb, "probe_diff_before": before, "probe_diff_after": after,
                     "equal_after_sync": after <= args.tolerance})
        del engine
        _free(args.device)
    return rows


def _rlhf(*argv: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "rlhf.cli", *argv], check=True, cwd=REPO, env=env)


def _stage_dir(root: Path, stage: str) -> Path:
    done = sorted((root / stage).glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    if not done:
        raise RuntimeError(f"no completed {stage} run under {root / stage}")
    return done[-1].parent


def section_ppo_dpo(which: str, args: argparse.Namespace) -> list[dict]:
    root = Path(args.out).resolve() / "runs"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    common = [f"run.root={root}", f"model.device={args.device}"]
    sft = root / "sft"
    if not list(sft.glob("*/manifest.json")):
        _rlhf("train", "sft", "configs/gpu/sft.yaml", *common, env=env)
    policy = _stage_dir(root, "sft")
    if which == "ppo":
        engine = "transformers" if _unavailable("vllm") else "vllm"
        config = "configs/gpu/ppo-vllm.yaml" if engine == "vllm" else "configs/gpu/ppo.yaml"
        start = time.perf_counter()
        _rlhf("train", "ppo", config, *common, f"model.name_or_path={policy}", env=env)
        run = _stage_dir(root, "ppo")
        steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        scores = [s["rollout/score_mean"] for s in steps if "rollout/score_mean" in s]
        final = json.loads((run / "metrics.json").read_text())
        row = {"section": "ppo", "engine": engine, "steps": len(scores), "wall_s": time.perf_counter() - start,
               "reward_first3": sum(scores[:3]) / 3, "reward_last3": sum(scores[-3:]) / 3,
               "win_rate_vs_sft": final.get("eval/win_rate"),
               "tokens_per_s": final.get("timing/tokens_per_s"), "sync_s": final.get("timing/sync")}
    else:
        start = time.perf_counter()
        _rlhf("train", "dpo", "configs/gpu/dpo.yaml", *common, f"model.name_or_path={policy}", env=env)
        run = _stage_dir(root, "dpo")
        final = json.loads((run / "manifest.json").read_text()).get("metrics", {})
        row = {"section": "dpo", "wall_s": time.perf_counter() - start,
               **{k: v for k, v in final.items() if "win_rate" in k or "reward" in k or "loss" in k}}
    print(json.dumps(row), flush=True)
    return [row]


def _table(rows: list[dict]) -> str:
    lines = []
    for row in rows:
        cells = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default=None,
                        help="weights and compute dtype (default: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--size", choices=tuple(SIZES), default="medium", help="model built from config")
    parser.add_argument("--batch", type=int, default=16, help="learner sequences per optimizer step")
    parser.add_argument("--micro-batch", type=int, default=8, help="learner sequences per forward/backward")
    parser.add_argument("--seq-len", type=int, default=512, help="learner tokens per sequence")
    parser.add_argument("--steps", type=int, default=5, help="measured learner steps (after one warm-up)")
    parser.add_argument("--checkpointing", action="store_true", help="learner gradient checkpointing")
    parser.add_argument("--rollout-batches", type=lambda s: [int(x) for x in s.split(",")], default=[16, 64])
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--vllm-memory", type=float, default=0.5, help="vLLM gpu_memory_utilization")
    parser.add_argument("--tolerance", type=float, default=2e-2,
                        help="largest log-prob difference after sync (bf16 kernels of two engines differ)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: by name)")
    parser.add_argument("--out", default=str(REPO / ".cache" / "gpu-validation"))
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    if args.batch % args.micro_batch:
        parser.error(f"--batch ({args.batch}) must be a multiple of --micro-batch ({args.micro_batch})")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but this machine has no CUDA GPU; run with --device cpu for a smoke test")
    if args.device == "cpu" and {"ppo", "dpo"} & set(sections):
        parser.error("the ppo and dpo sections run the configs/gpu/ stages, which need CUDA; leave them out on CPU")
    from rlhf.core.artifacts import atomic_write_json

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = _model_path(args.size) if {"learner", "rollout", "sync"} & set(sections) else ""
    header = {"section": "machine", "device": _device_name(args.device), "torch": torch.__version__,
              "size": args.size, "model": path, "date": time.strftime("%Y-%m-%d")}
    rows = [header]
    print(json.dumps(header), flush=True)
    runners = {"learner": lambda: section_learner(path, args), "rollout": lambda: section_rollout(path, args),
               "sync": lambda: section_sync(path, args), "ppo": lambda: section_ppo_dpo("ppo", args),
               "dpo": lambda: section_ppo_dpo("dpo", args)}
    for name in SECTIONS:
        if name in sections:
            rows.extend(runners[name]())
            atomic_write_json(Path(args.out) / "gpu_validation.json", rows)
    print("\n" + _table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
