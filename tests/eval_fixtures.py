"""Small evaluation artifacts built without models, for the report and notebook tests.

:func:`make_eval_folder` writes a completed ``eval`` stage folder whose samples come from the demo world:
a baseline policy and a better one write replies with :func:`rlhf.world.demo.generate_response` (the
better one with more good quality axes), scored by the gold rubric and a noisy "reward model"; the
log-probabilities give the better policy a positive KL. Behind the better policy sits a ``dpo`` stage
folder trained on an annotation snapshot (``pairs.jsonl`` + ``quality_report.json`` computed by
:func:`rlhf.preferences.quality.quality_report` from simulated votes), so the report's data card and
lineage have something to show. The statistics come from the real analysis code.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from rlhf.core.artifacts import atomic_write_json, atomic_write_text, begin_stage
from rlhf.data.pairs import demo_pairs, write_pairs
from rlhf.eval.analysis import AnalysisSettings, MetricSuite, analyse
from rlhf.eval.divergence import best_of_n_curve
from rlhf.preferences.quality import quality_report
from rlhf.preferences.votes import RankingVote
from rlhf.world.demo import ResponseQuality, generate_prompts, generate_response, gold_rubric


def _stage(root: Path, stage: str, files: dict[str, str], inputs: dict[str, Path], config: dict) -> Path:
    run = begin_stage(stage, config, inputs, root)
    for rel, text in files.items():
        atomic_write_text(run.path(rel), text)
    run.finish(list(files))
    return run.dir


def simulated_votes(n_prompts: int, k: int = 3, annotators: int = 3, seed: int = 0) -> list[RankingVote]:
    """Rankings of ``k`` demo candidates per prompt by noisy honest annotators (one prefers slot A on
    near-ties), with shuffled slots and two honeypot records."""
    rng = random.Random(seed)
    votes = []
    for prompt in generate_prompts(n_prompts, seed=seed):
        replies = _replies([prompt] * k, 0.5, seed=rng.randrange(10**6))
        gold = {f"c{j}": gold_rubric(prompt.text, r) for j, r in enumerate(replies)}
        for a in range(annotators):
            slots = list(gold)
            rng.shuffle(slots)
            seen = {c: gold[c] + rng.gauss(0, 0.1) + (0.2 if a == 0 and c == slots[0] else 0.0) for c in gold}
            order = sorted(seen, key=lambda c: -seen[c])
            votes.append(RankingVote(record_id=prompt.id, prompt_id=prompt.id, annotator=f"ann-{a + 1}",
                                     ranks={c: order.index(c) + 1 for c in gold}, slots=tuple(slots),
                                     honeypot=False))
    return votes


def make_snapshot(root: Path, n_prompts: int = 12) -> Path:
    """A preference snapshot folder: ``pairs.jsonl`` from honest simulated annotators, plus the quality
    report of simulated ranking votes, in :class:`rlhf.preferences.quality.QualityReport` form."""
    folder = root / "snapshots" / "round-1"
    write_pairs(folder, demo_pairs(n_prompts, k=3, seed=3, annotators=3, noise=0.05))
    votes = simulated_votes(n_prompts)
    honeypots = {votes[0].record_id: votes[1].ranks}  # one record with a known answer
    atomic_write_json(folder / "quality_report.json", asdict(quality_report(votes, honeypot_answers=honeypots)))
    return folder


def _replies(prompts, good_fraction: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [generate_response(p, ResponseQuality.draw(rng, good_fraction), rng) for p in prompts]


def make_samples(n_prompts: int, payload: str | None, seed: int = 0) -> pd.DataFrame:
    """The samples table of two policies, ``sft`` (baseline) and ``dpo`` (better, positive KL)."""
    prompts = generate_prompts(n_prompts, seed=90_000 + seed)
    rng = np.random.default_rng(seed)
    rows = []
    for policy, good, kl_mean in (("sft", 0.4, 0.0), ("dpo", 0.75, 3.0)):
        for i, (prompt, reply) in enumerate(zip(prompts, _replies(prompts, good, seed + len(policy)))):
            if payload is not None and policy == "dpo" and i == 0:
                reply = payload
            gold = gold_rubric(prompt.text, reply)
            tokens = len(reply.split()) + 1
            ref = -2.0 * tokens
            kl = 0.0 if kl_mean == 0 else float(rng.normal(kl_mean, 1.0))
            rows.append({
                "policy": policy, "prompt_index": i, "prompt_id": prompt.id, "prompt": prompt.text,
                "category": prompt.intent, "sample": 0, "reply": reply, "tokens": tokens, "chars": len(reply),
                "finished": True, "logprob_policy": ref + kl, "logprob_reference": ref, "kl": kl,
                "score/gold": gold, "score/rm/demo": gold * 4 + float(rng.normal(0, 0.5)),
                "raw/rm/demo": gold * 4, "judge_prob": np.nan, "judge_consistent": np.nan,
            })
    return pd.DataFrame(rows)


def best_of_n_for_baseline(n_prompts: int, n: int) -> dict:
    """Best-of-n of the baseline: ``n`` demo replies per prompt, proxy = noisy gold (like the samples)."""
    prompts = generate_prompts(n_prompts, seed=90_000)
    rng = np.random.default_rng(1)
    gold = np.array([[gold_rubric(p.text, r) for r in _replies([p] * n, 0.4, seed=k)] for k, p in enumerate(prompts)])
    proxy = gold * 4 + rng.normal(0, 0.5, size=gold.shape)
    curve = best_of_n_curve(proxy, gold)
    return {"proxy_scorer": "rm/demo", "prompts": n_prompts, **curve.to_dict()}


def make_eval_folder(root: Path, payload: str | None = None, n_prompts: int = 36) -> Path:
    """A completed eval stage folder under ``root`` (see the module docstring)."""
    root = Path(root)
    snapshot = make_snapshot(root)
    sft_dir = _stage(root, "sft", {"model/config.json": "{}"}, {}, {"stage": "sft"})
    dpo_dir = _stage(root, "dpo", {"model/config.json": "{}"},
                     {"pairs": snapshot / "pairs.jsonl", "policy": sft_dir / "model"}, {"stage": "dpo"})
    frame = make_samples(n_prompts, payload)
    settings = AnalysisSettings(n_boot=300, lc_boot=200)
    results = analyse(frame, ["dpo"], "sft", ["rm/demo", "gold"], "rm/demo", MetricSuite(), settings)
    results["best_of_n"] = {"sft": best_of_n_for_baseline(n_prompts=8, n=8)}
    results["generation"] = {"temperature": 1.0, "top_p": 1.0, "samples_per_prompt": 1, "max_new_tokens": 64}
    results["prompt_set"] = {"path": "demo", "prompts": n_prompts, "categories": sorted(frame["category"].unique())}
    run = begin_stage("eval", {"stage": "eval", "payload": payload is not None},
                      {"policy/sft": sft_dir / "model", "policy/dpo": dpo_dir / "model"}, root)
    run.dir.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(run.path("samples.parquet"), index=False)
    atomic_write_text(run.path("results.json"), json.dumps(results, default=str))
    run.finish(["results.json", "samples.parquet"])
    return run.dir
