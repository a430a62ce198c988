"""``rlhf eval-human push|pull``: a blind A/B comparison of two evaluated checkpoints in Argilla.

``push`` takes the paired replies of ``policy_a`` and ``policy_b`` from a completed ``rlhf eval`` folder,
builds blind items (:mod:`rlhf.eval.human`: identical pairs are automatic ties, slots shuffled half each
way), writes the slot map to ``<run.root>/eval_human/<dataset>/items.json`` (it never goes to Argilla) and
logs the shown items into an Argilla dataset made from ``rlhf/eval/templates/pairwise-ab-v1.yaml``
(prompt and the two replies as plain text, one label question). Re-running push logs only items the
dataset does not hold yet (records are keyed by item id).

``pull`` reads every submitted answer through the raw API, maps slots back to policies, merges the votes
into A's win rate with intervals and writes ``votes.jsonl`` and ``human_eval.json`` beside the slot map.
``rlhf report human=[.../human_eval.json]`` puts the result next to the automatic win rates.

Argilla is the labeling service's (``rlhf label serve start``) unless ``argilla.api_url`` or
``ARGILLA_API_URL`` names another one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhf.configs.eval_human import HumanEvalConfig
from rlhf.core.artifacts import atomic_write_json, atomic_write_text, read_manifest
from rlhf.core.errors import UserError

if TYPE_CHECKING:  # the statistics (numpy, scipy) load only when a command runs
    from rlhf.eval.human import BlindItem, HumanEvalResult, HumanVote

__all__ = ["HumanEvalConfig", "build_items", "pull_votes", "push_items", "run_pull", "run_push"]

TEMPLATE = Path(__file__).resolve().parents[1] / "eval" / "templates" / "pairwise-ab-v1.yaml"
QUESTION = "preference"
_CHOICE = {"response_1": "1", "response_2": "2", "tie": "tie"}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:40]


def _resolve(cfg: HumanEvalConfig) -> tuple[Path, str, str, str]:
    if not cfg.eval_dir or not cfg.policy_a:
        raise UserError("rlhf eval-human needs eval_dir=<eval stage folder> and policy_a=<checkpoint name>")
    eval_dir = Path(cfg.eval_dir)
    if not (eval_dir / "manifest.json").is_file() or not (eval_dir / "results.json").is_file():
        raise UserError(f"{eval_dir} is not a completed eval folder (no manifest.json/results.json); run rlhf eval")
    results = json.loads((eval_dir / "results.json").read_text(encoding="utf-8"))
    policy_b = cfg.policy_b or results["baseline"]
    for name in (cfg.policy_a, policy_b):
        if name not in results["policies"]:
            raise UserError(f"policy '{name}' was not evaluated in {eval_dir}; choose from {results['policies']}")
    if cfg.policy_a == policy_b:
        raise UserError("policy_a and policy_b are the same checkpoint; choose two different ones")
    fingerprint = read_manifest(eval_dir)["fingerprint"][:8]
    dataset = cfg.dataset or f"ab-{_slug(cfg.policy_a)}-vs-{_slug(policy_b)}-{fingerprint}"
    return eval_dir, cfg.policy_a, policy_b, dataset


def build_items(eval_dir: Path, policy_a: str, policy_b: str, seed: int, max_items: int = 0) -> list[BlindItem]:
    """Blind items from the paired samples of an eval folder (the first ``max_items`` pairs when set)."""
    import pandas as pd

    from rlhf.eval.analysis import paired_frame
    from rlhf.eval.human import build_blind_items

    joined = paired_frame(pd.read_parquet(eval_dir / "samples.parquet"), policy_a, policy_b)
    if max_items:
        joined = joined.head(max_items)
    return build_blind_items(joined["prompt"].tolist(), joined["reply"].tolist(), joined["reply_b"].tolist(),
                             policy_a, policy_b, seed, prompt_indices=joined["prompt_index"].tolist(),
                             samples=joined["sample"].tolist(), categories=joined["category"].astype(str).tolist())


def push_items(http, items: list[BlindItem], dataset: str, workspace: str, min_submitted: int) -> tuple[str, int]:
    """Create the dataset when missing and log the shown items it lacks; returns (dataset id, newly logged)."""
    from rlhf.labeling import create_dataset, find_dataset, iter_records, load_template, log_records

    dataset_id = find_dataset(http, dataset, workspace)
    if dataset_id is None:
        dataset_id = create_dataset(http, load_template(TEMPLATE), dataset, workspace, min_submitted=min_submitted)
    present = {str(r.get("external_id")) for r in iter_records(http, dataset_id, include="responses")}
    new = [item for item in items if not item.auto_tie and item.item_id not in present]
    records = [{"external_id": item.item_id,
                "fields": {"prompt": item.prompt, "response_1": item.slots[0], "response_2": item.slots[1]},
                "metadata": {"item_id": item.item_id}} for item in new]
    if records:
        log_records(http, dataset_id, records)
    return dataset_id, len(records)


def pull_votes(http, dataset: str, workspace: str) -> list[HumanVote]:
    """Every submitted answer of the dataset as a vote (slot numbers, not policies)."""
    from rlhf.eval.human import HumanVote
    from rlhf.labeling import find_dataset, iter_records

    dataset_id = find_dataset(http, dataset, workspace)
    if dataset_id is None:
        raise UserError(f"no dataset '{dataset}' in workspace '{workspace}'; run 'rlhf eval-human push' first")
    votes = []
    for record in iter_records(http, dataset_id, include="responses"):
        for response in record.get("responses") or []:
            if response.get("status") != "submitted":
                continue
            value = ((response.get("values") or {}).get(QUESTION) or {}).get("value")
            if value not in _CHOICE:
                raise UserError(f"record {record.get('external_id')}: unexpected answer {value!r} to '{QUESTION}'; "
                                f"was the dataset made from {TEMPLATE.name}?")
            votes.append(HumanVote(str(record["external_id"]), str(response["user_id"]), _CHOICE[value]))
    return votes


def _folder(cfg: HumanEvalConfig, dataset: str) -> Path:
    return Path(cfg.run.root) / "eval_human" / dataset


def _connect(cfg: HumanEvalConfig):
    from rlhf.labeling import http_client, resolve_connection

    return http_client(resolve_connection(cfg.argilla, cfg.service))


def run_push(cfg: HumanEvalConfig, http=None) -> Path:
    """Write the slot map and push the blind items; returns the items file."""
    eval_dir, policy_a, policy_b, dataset = _resolve(cfg)
    items = build_items(eval_dir, policy_a, policy_b, cfg.run.seed, cfg.max_items)
    path = _folder(cfg, dataset) / "items.json"
    payload = {"eval_dir": str(eval_dir.resolve()), "policy_a": policy_a, "policy_b": policy_b, "dataset": dataset,
               "workspace": cfg.workspace, "seed": cfg.run.seed, "items": [item.to_dict() for item in items]}
    if path.is_file() and json.loads(path.read_text(encoding="utf-8"))["items"] != payload["items"]:
        raise UserError(f"{path} already holds a different slot map for dataset '{dataset}'; "
                        "keep the same settings or choose another dataset name")
    atomic_write_json(path, payload)
    client = http if http is not None else _connect(cfg)
    try:
        _, logged = push_items(client, items, dataset, cfg.workspace, cfg.min_submitted)
    finally:
        if http is None:
            client.close()
    auto = sum(item.auto_tie for item in items)
    print(f"eval-human: {logged} new items in '{dataset}' ({len(items)} pairs, {auto} identical: automatic ties); "
          f"slot map in {path}")
    return path


def run_pull(cfg: HumanEvalConfig, http=None) -> tuple[Path, HumanEvalResult]:
    """Pull the votes, merge them into a win rate and write ``human_eval.json``; returns its path and the result."""
    _, _, _, dataset = _resolve(cfg)
    folder = _folder(cfg, dataset)
    if not (folder / "items.json").is_file():
        raise UserError(f"{folder / 'items.json'} is missing; run 'rlhf eval-human push' with the same settings")
    from rlhf.eval.human import BlindItem, merge_votes

    saved = json.loads((folder / "items.json").read_text(encoding="utf-8"))
    items = [BlindItem(**row) for row in saved["items"]]
    client = http if http is not None else _connect(cfg)
    try:
        votes = pull_votes(client, dataset, saved["workspace"])
    finally:
        if http is None:
            client.close()
    result = merge_votes(items, votes, saved["policy_a"], saved["policy_b"], n_boot=cfg.stats.n_bootstrap,
                         confidence=cfg.stats.confidence, seed=cfg.run.seed)
    atomic_write_text(folder / "votes.jsonl", "".join(json.dumps(v.__dict__) + "\n" for v in votes))
    out: dict[str, Any] = {"dataset": dataset, "eval_dir": saved["eval_dir"], **result.to_dict()}
    atomic_write_json(folder / "human_eval.json", out)
    print(f"eval-human: {saved['policy_a']} vs {saved['policy_b']}: win rate {result.win_rate:.1%} "
          f"[{result.ci_low:.1%}, {result.ci_high:.1%}] from {result.votes} votes by {result.annotators} annotators")
    return folder / "human_eval.json", result
