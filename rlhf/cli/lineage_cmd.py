"""``rlhf lineage <artifact>``: the chain of stages, configs and inputs behind any artifact."""

from __future__ import annotations

import argparse
import json

from rlhf.core.artifacts import lineage

__all__ = ["add_parser", "format_lineage"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("lineage", help="print the stages, configs and inputs behind an artifact")
    parser.add_argument("artifact", help="any file or folder inside a completed stage output")
    parser.add_argument("--json", action="store_true", help="print the full manifests as JSON")
    parser.add_argument("--config", action="store_true", help="include each stage's resolved config")
    parser.set_defaults(func=_run)


def format_lineage(chain: list[dict], with_config: bool = False) -> str:
    """Human-readable lineage: one block per stage, indented by depth."""
    lines: list[str] = []
    for entry in chain:
        pad = "  " * entry["depth"]
        git = entry.get("git") or {}
        rev = (git.get("commit") or "unknown")[:12] + (" (dirty)" if git.get("dirty") else "")
        lines.append(f"{pad}stage {entry['stage']}  {entry['dir']}")
        lines.append(f"{pad}  fingerprint {entry['fingerprint'][:16]}  seed {entry.get('seed')}  git {rev}")
        lines.append(f"{pad}  finished {entry.get('finished_at')}")
        for name, meta in sorted(entry.get("inputs", {}).items()):
            origin = f" <- {meta['stage_dir']}" if meta.get("stage_dir") else ""
            lines.append(f"{pad}  input {name}: {meta['path']} sha256:{meta['hash'][:16]}{origin}")
        for rel, digest in sorted(entry.get("outputs", {}).items()):
            lines.append(f"{pad}  output {rel} sha256:{digest[:16]}")
        if with_config:
            cfg = json.dumps(entry.get("config", {}), sort_keys=True)
            lines.append(f"{pad}  config {cfg}")
        else:
            lines.append(f"{pad}  config sha256:{_config_hash(entry.get('config', {}))[:16]} (--config to print)")
    return "\n".join(lines)


def _config_hash(cfg: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()


def _run(args: argparse.Namespace) -> int:
    chain = lineage(args.artifact)
    if args.json:
        print(json.dumps(chain, indent=2, sort_keys=True))
    else:
        print(format_lineage(chain, with_config=args.config))
    return 0
