"""``rlhf generate``: K candidate replies per prompt from one or more policies, for annotation.

Each policy samples through the shared :class:`~rlhf.rollout.types.RolloutEngine` protocol (the
transformers engine, or ``engine: vllm`` on CUDA nodes with the ``vllm`` extra) with the configured sampling parameters and seed. Every
candidate carries its metadata: the policy that wrote it, the sampling parameters, its summed
log-probability, token count and whether it ended with EOS. Candidates are keyed by content
(``sha256(prompt_id, text)``), so identical replies to one prompt collapse into one.

Output: ``candidates.jsonl``, one object per prompt ``{prompt_id, prompt, metadata, candidates: [...]}``,
and ``report.json``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tqdm import tqdm

from rlhf.configs.generate import GenerateConfig, PromptSource
from rlhf.core.artifacts import atomic_write_json, atomic_write_text
from rlhf.core.errors import UserError
from rlhf.core.runs import open_stage
from rlhf.data.candidates import candidate_id

__all__ = ["GenerateConfig", "run_generate"]


def _load_prompts(source: PromptSource, seed: int) -> list[dict]:
    if source.path is None:
        from rlhf.world.demo import generate_prompts

        return [{"id": p.id, "prompt": p.text, "metadata": {"intent": p.intent}}
                for p in generate_prompts(source.offset + source.limit, seed=seed)[source.offset:]]
    rows = []
    from rlhf.data.prompts import iter_jsonl

    seen = 0
    for number, row in iter_jsonl(Path(source.path)):
        if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise UserError(f"{source.path}: line {number}: 'prompt' must be a non-empty string")
        seen += 1
        if seen <= source.offset:
            continue
        pid = row.get("id") or hashlib.sha256(row["prompt"].encode()).hexdigest()[:16]
        rows.append({"id": str(pid), "prompt": row["prompt"], "metadata": row.get("metadata", {})})
        if len(rows) >= source.limit:
            break
    if not rows and source.offset:
        raise UserError(f"{source.path} holds {seen} prompts, all before prompts.offset={source.offset}; lower the "
                        "offset (in a pipeline: fewer rounds or a smaller generate.prompts.limit), or add prompts")
    if not rows:
        raise UserError(f"{source.path} holds no prompts")
    return rows


def run_generate(cfg: GenerateConfig) -> Path:
    """Run (or skip, when already complete) candidate generation; returns the stage folder."""
    from rlhf.models.loader import resolve_model_path
    from rlhf.rollout import open_engine

    resolved = {p.name: resolve_model_path(p.path) for p in cfg.policies}
    inputs: dict[str, str | Path] = {f"policy:{name}": path for name, path in resolved.items()
                                     if Path(path).exists()}
    if cfg.prompts.path:
        inputs["prompts"] = cfg.prompts.path
    run = open_stage(cfg, inputs=inputs)
    if run.complete:
        print(f"generate: up to date, skipping ({run.dir})")
        return run.dir
    prompts = _load_prompts(cfg.prompts, cfg.run.seed)
    params = cfg.sampling.params(n=cfg.sampling.n)
    by_prompt: dict[str, dict[str, dict]] = {p["id"]: {} for p in prompts}
    duplicates = 0
    with run.lock():
        for index, policy in enumerate(cfg.policies):
            engine = open_engine(policy.engine, resolved[policy.name], policy.dtype, policy.device, cfg.batch_size,
                                 cfg.vllm if policy.engine == "vllm" else None)
            bar = tqdm(range(0, len(prompts), cfg.batch_size), desc=f"generate {policy.name}", unit="batch")
            for start in bar:
                chunk = prompts[start:start + cfg.batch_size]
                samples = engine.generate([p["prompt"] for p in chunk], params, seed=cfg.run.seed + 7919 * index + start)
                for i, sample in enumerate(samples):
                    prompt = chunk[i // params.n]
                    cid = candidate_id(prompt["id"], sample.text)
                    if cid in by_prompt[prompt["id"]]:
                        duplicates += 1
                        continue
                    by_prompt[prompt["id"]][cid] = {
                        "id": cid, "text": sample.text, "policy": policy.name,
                        "sampling": cfg.sampling.model_dump(), "seed": cfg.run.seed,
                        "logprob": float(sum(sample.logprobs)), "tokens": len(sample.response_ids),
                        "finished": sample.finished,
                    }
            del engine
        if cfg.prompts.human_replies:
            for prompt in prompts:
                for text in prompt["metadata"].get("human_replies") or []:
                    cid = candidate_id(prompt["id"], text)
                    if isinstance(text, str) and text.strip() and cid not in by_prompt[prompt["id"]]:
                        by_prompt[prompt["id"]][cid] = {"id": cid, "text": text.strip(), "policy": "human",
                                                        "sampling": None, "seed": None, "logprob": None,
                                                        "tokens": None, "finished": True}
        rows = [{"prompt_id": p["id"], "prompt": p["prompt"], "metadata": p["metadata"],
                 "candidates": list(by_prompt[p["id"]].values())} for p in prompts]
        atomic_write_text(run.path("candidates.jsonl"), "".join(json.dumps(r) + "\n" for r in rows))
        report = {"prompts": len(rows), "candidates": sum(len(r["candidates"]) for r in rows),
                  "duplicates_collapsed": duplicates,
                  "prompts_with_fewer_than_2": sum(len(r["candidates"]) < 2 for r in rows)}
        atomic_write_json(run.path("report.json"), report)
        run.finish(["candidates.jsonl", "report.json"], metrics={f"generate/{k}": v for k, v in report.items()})
    print(f"generate: {report} -> {run.dir}")
    return run.dir
