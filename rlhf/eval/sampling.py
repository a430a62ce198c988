"""The model-running half of ``rlhf eval``: sample every policy, score the samples, ask the judge.

Reward models score (prompt, reply) exactly as the reward stage does when it evaluates
(:func:`rlhf.stages.rm.reward_scores`: the chat template, the logit at the last token), and are
reported normalised with the ``reward_stats.json`` saved beside them, ``(r - mean) / std``, the scale PPO
optimises; the raw score is kept as ``raw/rm/<name>``.

Models are loaded one at a time (the reference stays loaded while policies sample) and released before
the next, so peak memory is two models. Every policy samples with the same seed, so replies are paired by
(prompt, sample index) under common random numbers. Rows are plain dicts that become the samples table
described in :mod:`rlhf.eval.analysis`.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rlhf.core.errors import UserError
from rlhf.eval.analysis import score_column

if TYPE_CHECKING:
    from rlhf.rollout.types import SamplingParams

__all__ = ["best_of_n_results", "judge_against_baseline", "read_reward_stats", "sample_policies", "score_samples"]


def _release(*models: Any) -> None:
    del models
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def sample_policies(
    prompts: list[dict[str, Any]],
    model_paths: dict[str, str],
    reference: str | None,
    dtype: str,
    device: str,
    params: SamplingParams,
    batch_size: int,
    seed: int,
    best_of_n: int = 0,
    best_of_n_prompts: int = 0,
    best_of_n_policies: list[str] | None = None,
    scoring_batch_size: int = 16,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Sample replies from each policy (in ``model_paths`` order); returns (sample rows, best-of-n rows).

    ``params.n`` replies per prompt and policy, paired by index across policies.

    Sampling goes through the shared rollout engine (:class:`rlhf.rollout.TransformersRolloutEngine`). With
    ``reference`` set, each reply's log-probability (temperature 1) is recomputed by a full forward pass
    under the policy and under the reference (``kl`` = their difference). Best-of-n rows hold ``best_of_n`` extra samples for the
    first ``best_of_n_prompts`` prompts of each policy in ``best_of_n_policies``.
    """
    from rlhf.models.loader import load_model, load_tokenizer
    from rlhf.rollout import TransformersRolloutEngine

    samples_per_prompt = params.n
    reference_engine = None
    if reference:
        reference_engine = TransformersRolloutEngine(load_model(reference, "reference", dtype=dtype, device=device),
                                                     load_tokenizer(reference), scoring_batch_size)
    rows: list[dict[str, Any]] = []
    bon_rows: list[dict[str, Any]] = []
    texts = [p["prompt"] for p in prompts]
    for name, path in model_paths.items():
        print(f"eval: sampling {len(texts) * samples_per_prompt} replies from {name}")
        tokenizer = load_tokenizer(path)
        if reference_engine is not None and tokenizer.get_vocab() != reference_engine.tokenizer.get_vocab():
            raise UserError(f"policy '{name}' and the reference use different tokenizers, so their KL is "
                            "undefined; set reference to a model sharing the tokenizer or kl.enabled=false")
        engine = TransformersRolloutEngine(load_model(path, "policy", dtype=dtype, device=device), tokenizer,
                                           batch_size)
        # prompt-major: prompt i, samples 0..n-1
        replies = engine.generate(texts, params, seed, progress=f"eval: {name}")
        logp_policy = logp_ref = np.full(len(replies), math.nan)
        if reference_engine is not None:
            prompt_ids = [list(r.prompt_ids) for r in replies]
            reply_ids = [list(r.response_ids) for r in replies]
            logp_policy = np.array([sum(lp) for lp in engine.logprobs(prompt_ids, reply_ids)])
            logp_ref = np.array([sum(lp) for lp in reference_engine.logprobs(prompt_ids, reply_ids)])
        for i, reply in enumerate(replies):
            prompt = prompts[i // samples_per_prompt]
            rows.append({
                "policy": name, "prompt_index": prompt["index"], "prompt_id": prompt["id"],
                "prompt": prompt["prompt"], "category": prompt["category"], "sample": i % samples_per_prompt,
                "reply": reply.text, "tokens": len(reply.response_ids), "chars": len(reply.text),
                "finished": bool(reply.finished), "logprob_policy": float(logp_policy[i]),
                "logprob_reference": float(logp_ref[i]), "kl": float(logp_policy[i] - logp_ref[i]),
            })
        if best_of_n > 0 and name in (best_of_n_policies or []):
            chosen = prompts[:best_of_n_prompts]
            print(f"eval: best-of-{best_of_n}: sampling {len(chosen) * best_of_n} replies from {name}")
            bon_params = dataclasses.replace(params, n=best_of_n)
            extra = engine.generate([p["prompt"] for p in chosen], bon_params, seed + 1,
                                    progress=f"eval: best-of-{best_of_n} {name}")
            for i, reply in enumerate(extra):
                prompt = chosen[i // best_of_n]
                bon_rows.append({"policy": name, "prompt_index": prompt["index"], "prompt": prompt["prompt"],
                                 "sample": i % best_of_n, "reply": reply.text, "tokens": len(reply.response_ids)})
        _release(engine)
    _release(reference_engine)
    return rows, bon_rows


def read_reward_stats(model_dir: str | Path) -> dict[str, float] | None:
    """The ``reward_stats.json`` (mean, std) saved beside a reward model, or None when there is none."""
    path = Path(model_dir) / "reward_stats.json"
    if not path.is_file():
        return None
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
        mean, std = float(stats["mean"]), float(stats["std"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise UserError(f"{path} must be JSON with numeric 'mean' and 'std'; re-run the reward stage") from None
    if not math.isfinite(mean) or not math.isfinite(std) or std <= 0:
        raise UserError(f"{path} has mean={mean}, std={std}; std must be positive and both finite")
    return {"mean": mean, "std": std}


def score_samples(
    frames: list[pd.DataFrame],
    rubric: str | None,
    rm_paths: dict[str, str],
    dtype: str,
    device: str,
    batch_size: int,
) -> dict[str, dict[str, float] | None]:
    """Add ``score/gold`` and ``score/rm/<name>`` (plus ``raw/rm/<name>``) columns to each frame in place.

    Reward scores are normalised with the model's ``reward_stats.json`` when it has one; the returned
    mapping gives, per reward model, the statistics used (None: raw scores).
    """
    from rlhf.models.loader import load_model, load_tokenizer
    from rlhf.models.reward import reward_scores
    from rlhf.utils.callables import load_callable

    frames = [f for f in frames if not f.empty]
    if rubric:
        score = load_callable(rubric)
        for frame in frames:
            frame[score_column("gold")] = [float(score(p, r)) for p, r in zip(frame["prompt"], frame["reply"])]
    used: dict[str, dict[str, float] | None] = {}
    for name, path in rm_paths.items():
        print(f"eval: scoring with reward model {name}")
        tokenizer = load_tokenizer(path)
        model = load_model(path, "reward", dtype=dtype, device=device)
        stats = read_reward_stats(path)
        # Each distinct (prompt, reply) is scored once: identical replies get identical scores whatever
        # batch (and padding) they would have fallen in, so they tie exactly.
        unique = sorted({(p, r) for frame in frames for p, r in zip(frame["prompt"], frame["reply"])},
                        key=lambda pr: (len(pr[0]) + len(pr[1]), pr))
        raw_scores = reward_scores(model, tokenizer, [[{"role": "user", "content": p}] for p, _ in unique],
                                   [r for _, r in unique], batch_size, progress=f"eval: scoring with {name}")
        lookup = dict(zip(unique, raw_scores))
        for frame in frames:
            raw = np.array([lookup[(p, r)] for p, r in zip(frame["prompt"], frame["reply"])], dtype=float)
            frame[f"raw/rm/{name}"] = raw
            frame[score_column(f"rm/{name}")] = (raw - stats["mean"]) / stats["std"] if stats else raw
        used[name] = stats
        _release(model)
    return used


def judge_against_baseline(
    frame: pd.DataFrame,
    baseline: str,
    checkpoints: list[str],
    judge_model: str | None,
    judge_callable: str | None,
    dtype: str,
    device: str,
) -> None:
    """Fill ``judge_prob`` / ``judge_consistent`` of each checkpoint's rows (judged against the baseline)."""
    from rlhf.eval.analysis import paired_frame
    from rlhf.eval.judge import LMJudge, judge_both_orders

    model = None
    if judge_model:
        from rlhf.models.loader import load_model, load_tokenizer, resolve_model_path

        path = resolve_model_path(judge_model)
        model = load_model(path, "reference", dtype=dtype, device=device)
        judge = LMJudge(model, load_tokenizer(path))
    else:
        from rlhf.utils.callables import load_callable

        judge = load_callable(judge_callable or "")
    for name in checkpoints:
        print(f"eval: judging {name} against {baseline} (both orders)")
        joined = paired_frame(frame, name, baseline)
        verdict = judge_both_orders(judge, joined["prompt"].tolist(), joined["reply"].tolist(),
                                    joined["reply_b"].tolist())
        index = frame.index[frame["policy"] == name]
        keyed = frame.loc[index, ["prompt_index", "sample"]].apply(tuple, axis=1)
        lookup = {(int(p), int(s)): i for i, (p, s) in enumerate(zip(joined["prompt_index"], joined["sample"]))}
        pos = [lookup[(int(p), int(s))] for p, s in keyed]
        frame.loc[index, "judge_prob"] = verdict.prob_a[pos]
        frame.loc[index, "judge_consistent"] = verdict.consistent[pos].astype(float)
    _release(model)


def best_of_n_results(bon_frame: pd.DataFrame, proxy: str, n: int, suite) -> dict[str, Any]:
    """Best-of-n curve per policy from the best-of-n samples (proxy: a reward model's normalised score)."""
    out: dict[str, Any] = {}
    column = score_column(f"rm/{proxy}")
    for policy, part in bon_frame.groupby("policy", sort=False):
        part = part.sort_values(["prompt_index", "sample"])
        proxy_mat = part[column].to_numpy(float).reshape(-1, n)
        has_gold = score_column("gold") in part
        gold_mat = part[score_column("gold")].to_numpy(float).reshape(-1, n) if has_gold else proxy_mat
        curve = suite.best_of_n.compute(predictions=proxy_mat.tolist(), references=gold_mat.tolist())
        out[str(policy)] = {"proxy_scorer": f"rm/{proxy}", "prompts": int(proxy_mat.shape[0]), "n": curve["n"],
                            "proxy": curve["proxy"], "gold": curve["gold"] if has_gold else None,
                            "kl_bound": curve["kl_bound"]}
    return out
