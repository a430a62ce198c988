"""Sampling speed of the transformers rollout engine against ``model.generate``, on the same prompts.

Both sides sample ``--n`` replies to each of ``--prompts`` demo-world prompts in the policy's chat template,
``--batch`` prompts (``--batch x --n`` rows) at a time, at ``--temperature`` with up to ``--max-new-tokens``
tokens, one log-prob per token, in one process with ``--threads`` torch threads:

* ``generate``: ``model.generate(..., do_sample=True, output_logits=True)`` on the left-padded batch, log-probs
  from its per-step logits (how the engine sampled before :mod:`rlhf.rollout.decoding`);
* ``engine``: ``TransformersRolloutEngine.generate``, which drops rows from the batch as they finish, runs
  a repeated prompt through the prompt pass once, and (Llama, Qwen2) decodes with
  :mod:`rlhf.rollout.decode_step` instead of the model's forward.

Each side runs ``--repeats`` times, interleaved, after one warm-up batch; the table gives the median and the
range of samples/s and tokens/s (tokens: generated, up to and including EOS) and the ratio of the medians.
The 1-minute load average is printed before and after; above ``--max-load`` the script refuses to start
unless ``--allow-busy``.

    python benchmarks/generation_speed.py --policy runs/quickstart/sft/<run>/model --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _generate_side(model, tokenizer, ids: list[list[int]], args: argparse.Namespace) -> int:
    """``model.generate`` over ``ids`` in batches; returns the generated tokens (through EOS)."""
    import torch

    eos, pad, rows, tokens = tokenizer.eos_token_id, tokenizer.pad_token_id, args.batch * args.n, 0
    for start in range(0, len(ids), rows):
        chunk = ids[start:start + rows]
        width = max(map(len, chunk))
        input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in chunk])
        mask = torch.arange(width)[None] >= torch.tensor([width - len(s) for s in chunk])[:, None]
        out = model.generate(input_ids=input_ids, attention_mask=mask.long(), max_new_tokens=args.max_new_tokens,
                             do_sample=True, temperature=args.temperature, top_k=None, top_p=None, eos_token_id=eos,
                             pad_token_id=pad, return_dict_in_generate=True, output_logits=True)
        new = out.sequences[:, width:]
        # the per-token log-probs the engine returns, computed as the engine did before its own loop
        torch.log_softmax(torch.stack(out.logits, 1).float() / args.temperature, -1).gather(-1, new[..., None])
        for row in new.tolist():
            tokens += row.index(eos) + 1 if eos in row else len(row)
    return tokens


def measure(args: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    """samples/s and tokens/s of each side, per repeat."""
    import torch
    from ppo_throughput import _policy_path

    from rlhf.rollout import SamplingParams, TransformersRolloutEngine
    from rlhf.rollout.transformers_engine import bare_generation_config
    from rlhf.world.demo import generate_prompts

    torch.set_num_threads(args.threads)
    engine = TransformersRolloutEngine.from_pretrained(_policy_path(args.policy), device="cpu", batch_size=args.batch)
    prompts = [p.text for p in generate_prompts(args.prompts + args.batch, seed=1)]
    warm, prompts = prompts[:args.batch], prompts[args.batch:]
    params = SamplingParams(n=args.n, temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    ids = [seq for seq in engine.prompt_ids(prompts) for _ in range(args.n)]

    def ours() -> int:
        return sum(len(s.response_ids) for s in engine.generate(prompts, params, seed=0))

    def theirs() -> int:
        with bare_generation_config(engine.model, engine.tokenizer):
            return _generate_side(engine.model, engine.tokenizer, ids, args)

    engine.generate(warm, params, seed=1)
    results: dict[str, list[tuple[float, float]]] = {"generate": [], "engine": []}
    for _ in range(args.repeats):
        for name, side in (("generate", theirs), ("engine", ours)):
            torch.manual_seed(0)
            start = time.perf_counter()
            tokens = side()
            seconds = time.perf_counter() - start
            results[name].append((len(ids) / seconds, tokens / seconds))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="tiny", help="'tiny', 'smollm2' or a model folder (e.g. an SFT run folder)")
    parser.add_argument("--prompts", type=int, default=64, help="prompts sampled per repeat")
    parser.add_argument("--n", type=int, default=8, help="replies per prompt")
    parser.add_argument("--batch", type=int, default=32, help="prompts per batch")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="longest reply")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (> 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side, interleaved")
    parser.add_argument("--max-load", type=float, default=1.0, help="refuse to start above this 1-minute load average")
    parser.add_argument("--allow-busy", action="store_true", help="run above --max-load, with a warning")
    args = parser.parse_args(argv)
    if args.temperature <= 0 or min(args.prompts, args.n, args.batch, args.repeats, args.threads) < 1:
        parser.error("--temperature must be > 0 and --prompts, --n, --batch, --repeats, --threads at least 1")
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    from ppo_throughput import _load

    before = _load()
    if before[0] > args.max_load and not args.allow_busy:
        print(f"refusing to start: 1-minute load average {before[0]:.2f} > --max-load {args.max_load:g}; wait, raise "
              "--max-load or pass --allow-busy", file=sys.stderr)
        return 2
    results = measure(args)
    after = _load()
    print(f"policy {args.policy}; {args.prompts} prompts x {args.n} replies, {args.batch} prompts a batch, max "
          f"{args.max_new_tokens} new tokens, temperature {args.temperature:g}, {args.threads} thread(s); "
          f"{args.repeats} repeat(s)")
    print(f"{os.cpu_count()} CPUs; load average (1, 5, 15 min) before {before}, after {after}")
    print(f"{'side':<10} {'samples/s (min-max)':>24} {'tokens/s (min-max)':>24}")
    medians = {}
    for name, runs in results.items():
        samples, tokens = [r[0] for r in runs], [r[1] for r in runs]
        medians[name] = (statistics.median(samples), statistics.median(tokens))
        print(f"{name:<10} {medians[name][0]:>9.1f} ({min(samples):.1f}-{max(samples):.1f}) "
              f"{medians[name][1]:>12.1f} ({min(tokens):.1f}-{max(tokens):.1f})")
    print(f"engine / generate: {medians['engine'][0] / medians['generate'][0]:.2f}x samples/s, "
          f"{medians['engine'][1] / medians['generate'][1]:.2f}x tokens/s")
    if before[0] > args.max_load:
        print(f"WARNING: machine busy (load {before[0]:.2f} > --max-load {args.max_load:g}): figures not trustworthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
