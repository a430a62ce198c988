"""``rlhf report``: one self-contained HTML report (and optionally a PDF) from an ``rlhf eval`` folder.

Reads the eval folder's ``results.json``, ``samples.parquet`` and manifest; walks each checkpoint's lineage
from the manifest's inputs to find the annotation snapshots behind it (:mod:`rlhf.eval.datacard`); adds
human A/B results written by ``rlhf eval-human pull`` and the ``results.json`` of earlier rounds' eval folders
(``rounds``, oldest first); renders :func:`rlhf.eval.report_html.render_report`. The scorer-agreement section
(disagreement flags, reply drift, the best-policy rule) comes from :mod:`rlhf.eval.selection`.
The page has inline CSS and SVG only: it opens from disk with no network and runs no script.

With ``pdf: true`` the page is printed to ``report.pdf`` by headless Chromium (``chromium`` setting).

Outputs (``runs/report/<name>-<fingerprint>/``): ``report.html``, ``report.pdf`` (optional),
``manifest.json`` (inputs: the eval folder, the earlier rounds' eval folders and the human result files).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from rlhf.configs.report import ReportConfig
from rlhf.core.artifacts import StageRun, atomic_write_text, read_manifest
from rlhf.core.errors import UserError
from rlhf.core.runs import open_stage

__all__ = ["CHROMIUM_FLAGS", "ReportConfig", "run_report"]


# A quiet, sandbox-free Chromium that makes no network connection of its own (used with --headless).
CHROMIUM_FLAGS: tuple[str, ...] = (
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
)


def _print_pdf(chromium: str, html_path: Path, pdf_path: Path) -> None:
    exe = shutil.which(chromium)
    if exe is None:
        raise UserError(f"Chromium '{chromium}' not found for the PDF export; install it (apt-get install chromium), "
                        "set chromium=<path>, or set pdf=false")
    with tempfile.TemporaryDirectory(prefix="rlhf-chromium-") as profile:
        cmd = [exe, "--headless", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--no-pdf-header-footer",
               f"--print-to-pdf={pdf_path}", html_path.resolve().as_uri()]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=180)
    if proc.returncode != 0 or not pdf_path.is_file():
        raise UserError(f"Chromium could not print the PDF (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")


def _read_human(paths: list[str]) -> list[dict[str, Any]]:
    out = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise UserError(f"human result {path} does not exist; run 'rlhf eval-human pull' first")
        data = json.loads(path.read_text(encoding="utf-8"))
        if "win_rate" not in data or "policy_a" not in data:
            raise UserError(f"{path} is not a human_eval.json written by 'rlhf eval-human pull'")
        out.append(data)
    return out


def _read_rounds(paths: list[str]) -> list[dict[str, Any]]:
    out = []
    for raw in paths:
        path = Path(raw)
        if not (path / "manifest.json").is_file() or not (path / "results.json").is_file():
            raise UserError(f"rounds: {path} is not a completed eval folder (no manifest.json or results.json); "
                            "list the eval folders of earlier rounds, oldest first")
        out.append(json.loads((path / "results.json").read_text(encoding="utf-8")))
    return out


def run_report(cfg: ReportConfig) -> Path:
    """Render (or skip, when already complete) the report; returns the stage folder."""
    if not cfg.eval_dir:
        raise UserError("report needs eval_dir=<eval stage folder> (the output of 'rlhf eval')")
    eval_dir = Path(cfg.eval_dir)
    if not (eval_dir / "manifest.json").is_file():
        raise UserError(f"{eval_dir} is not a completed eval folder (no manifest.json); run 'rlhf eval' first")
    inputs: dict[str, str | Path] = {"eval": eval_dir}
    inputs.update({f"human/{i}": p for i, p in enumerate(cfg.human)})
    rounds = _read_rounds(cfg.rounds)
    inputs.update({f"round/{i}": p for i, p in enumerate(cfg.rounds)})
    run = open_stage(cfg, inputs)
    if run.complete:
        print(f"report: up to date, skipping ({run.dir})")
        return run.dir
    with run.lock():
        return _render(cfg, run, eval_dir, rounds)


def _render(cfg: ReportConfig, run: StageRun, eval_dir: Path, rounds: list[dict[str, Any]]) -> Path:
    import pandas as pd

    from rlhf.eval.datacard import checkpoint_provenance
    from rlhf.eval.report_html import render_report

    results = json.loads((eval_dir / "results.json").read_text(encoding="utf-8"))
    frame = pd.read_parquet(eval_dir / "samples.parquet")
    manifest = read_manifest(eval_dir)
    provenance = {}
    for name in results["policies"]:
        meta = manifest["inputs"].get(f"policy/{name}", {})
        provenance[name] = checkpoint_provenance(meta.get("stage_dir") or meta.get("path") or "")
    page = render_report(results, frame, provenance, human=_read_human(cfg.human), title=cfg.title,
                         examples=cfg.samples.per_kind, seed=cfg.samples.seed, source=str(eval_dir.resolve()),
                         rounds=rounds)
    atomic_write_text(run.path("report.html"), page)
    outputs = ["report.html"]
    if cfg.pdf:
        _print_pdf(cfg.chromium, run.path("report.html"), run.path("report.pdf"))
        outputs.append("report.pdf")
    run.finish(outputs, metrics={"report/policies": len(results["policies"]), "report/bytes": len(page)})
    print(f"report: done -> {run.path('report.html')}")
    return run.dir
