"""The evaluation report as one self-contained HTML document (inline CSS and SVG; no script, no network).

Security: every text that comes from data (model replies, prompts, names, paths) goes through
:func:`html.escape` on its way into the page; only markup built here is marked trusted (:class:`Html`).
Replies sit in ``<pre>`` blocks, so a reply containing ``<script>`` or ``<img onerror=...>`` shows as that
text. The page also carries a Content-Security-Policy that forbids scripts and any network fetch, as a
second line of defence.

Sections: summary, scorer agreement (disagreement flags, reply drift, the best-policy rule: see
:mod:`rlhf.eval.selection`), rounds side by side (when earlier rounds are given), win rates (chart and table, human A/B included), reward-vs-KL plane (with best-of-n
curves), reward histograms, lengths, per-category table, best-of-n, side-by-side samples (largest wins,
largest losses, random), data cards of the annotation snapshots behind each checkpoint, lineage.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence
from html import escape
from typing import Any

import numpy as np
import pandas as pd

from rlhf.eval.analysis import JUDGE, paired_frame, score_column
from rlhf.eval.selection import (
    FLUENCY_DROP,
    GOLD,
    LENGTH_DRIFT,
    best_policy,
    comparison,
    reply_drift,
    scorer_disagreements,
    scorer_label,
    trusted_scorer,
)
from rlhf.eval.svg import histogram_chart, interval_chart, scatter_chart

__all__ = ["Html", "pick_examples", "render_report"]

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:24px}h2{font-size:19px;border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
h3{font-size:15px;margin-bottom:6px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.meta{color:#555;font-size:13px}.na{color:#999;font-style:italic}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:10px;margin-bottom:18px}
.pair pre,.prompt pre{white-space:pre-wrap;word-break:break-word;background:#fafafa;border:1px solid #ddd;
padding:8px;margin:4px 0;font-size:12.5px}
.flag{background:#fdecea;border-left:5px solid #c0392b;padding:6px 10px;margin:6px 0;font-size:14px}
.ok{background:#eaf7ee;border-left:5px solid #2e8b57;padding:6px 10px;margin:6px 0;font-size:14px}
.rule{background:#eef3fb;border-left:5px solid #3465a4;padding:6px 10px;margin:6px 0;font-size:14px}
tr.flagged td{background:#fff1e0}
.prompt{margin-top:14px}.charts svg{margin:6px 12px 6px 0;border:1px solid #eee}
@media print{.charts svg{page-break-inside:avoid}.pair{page-break-inside:avoid}}
"""


class Html(str):
    """Markup built by this module (trusted); every other string is escaped."""


def _cell(value: Any, digits: int = 3) -> str:
    if isinstance(value, Html):
        return f"<td>{value}</td>"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '<td class="na">not available</td>'
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f'<td class="num">{int(value)}</td>'
    if isinstance(value, (float, np.floating)):
        return f'<td class="num">{float(value):.{digits}g}</td>'
    return f"<td>{escape(str(value))}</td>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], flagged: Sequence[bool] = ()) -> Html:
    """A table; rows whose ``flagged`` entry is true are marked (class ``flagged``)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    marks = [' class="flagged"' if f else "" for f in flagged] + [""] * (len(rows) - len(flagged))
    body = "".join(f"<tr{mark}>" + "".join(_cell(v) for v in row) + "</tr>" for mark, row in zip(marks, rows))
    return Html(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def _pct(value: float | None, low: float | None = None, high: float | None = None) -> Html | None:
    if value is None or not math.isfinite(value):
        return None
    text = f"{value:.1%}"
    if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
        text += f" [{low:.1%}, {high:.1%}]"
    return Html(escape(text))


def _section(title: str, *parts: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{''.join(parts)}</section>"


def _summary(results: dict[str, Any]) -> str:
    per_sample = [s for s in results["scorers"] if s != JUDGE]
    primary = results["primary"]
    vs_base = {(c["policy"], c["scorer"]): c for c in results["comparisons"] if c["baseline"] == results["baseline"]}
    headers = ["policy", "samples", *[f"mean {s}" for s in per_sample], f"win rate vs baseline ({primary})",
               f"LC win rate ({primary})", "KL to reference (nats)", "mean tokens", "finished"]
    rows = []
    for name in results["policies"]:
        s = results["summary"][name]
        c = vs_base.get((name, primary))
        kl = s.get("kl")
        rows.append([name, s["samples"], *[s[score_column(x)]["mean"] for x in per_sample],
                     _pct(c["win_rate"], c["ci_low"], c["ci_high"]) if c else Html("baseline"),
                     _pct(c["lc_win_rate"], c["lc_ci_low"], c["lc_ci_high"]) if c else Html("baseline"),
                     Html(escape(f"{kl['kl']:.3f} ± {kl['stderr']:.3f}")) if kl else None,
                     s["tokens"]["mean"], _pct(s["finished_rate"])])
    return _section("Summary", _table(headers, rows))


def _agreement(results: dict[str, Any], frame: pd.DataFrame, human: Sequence[dict[str, Any]]) -> str:
    """Disagreement flags, reply drift against the baseline, and the best-policy rule with its choice."""
    level = results["settings"]["confidence"]
    flags = scorer_disagreements(results, frame, human)
    note = ("<p class='meta'>Every pair of scorers among the reward models, the gold rubric and human A/B "
            "results is compared on each policy's win rate against the baseline. Scorers that rated the same "
            f"pairs (reward models, gold) are flagged when the paired bootstrap {level:.0%} interval of their "
            "win-rate difference excludes 0; pairs with human results, when the two intervals do not "
            "overlap.</p>")
    parts = ["<h3>Reward models against the trusted scorers</h3>", note]
    parts += [f"<div class='flag'><b>Disagreement.</b> {escape(f.message())}</div>" for f in flags]
    if not flags:
        parts.append("<div class='ok'>No disagreement: every pair of scorers agrees within its intervals.</div>")
    drift = reply_drift(frame, results["baseline"])
    unit = drift[0].length_unit if drift else "tokens"
    measure = drift[0].fluency_measure if drift else ""
    parts.append("<h3>Reply drift against the baseline</h3>")
    parts.append(f"<p class='meta'>Fluency: {escape(_fluency_note(measure))} A row is flagged when the mean "
                 f"length changes by more than {LENGTH_DRIFT:.0%} or the fluency falls by more than "
                 f"{FLUENCY_DROP:.2f}.</p>")
    rows = [[d.policy, d.length, d.baseline_length, _signed(d.length_change, "%"), d.fluency, d.baseline_fluency,
             _signed(d.fluency_change, ".3f"), "; ".join(d.flags) if d.flags else "-"] for d in drift]
    parts.append(_table(["policy", f"mean {unit}", f"baseline ({results['baseline']})", "length change",
                         "fluency", "baseline fluency", "fluency change", "flag"], rows, [bool(d.flags) for d in drift]))
    candidates = results["policies"][1:]
    name, rule = best_policy(results, candidates, human)
    parts.append("<h3>Best policy</h3>")
    parts.append(f"<div class='rule'>{escape(rule)} {_chosen(results, name, candidates, human)}</div>")
    return _section("Scorer agreement", *parts)


def _signed(value: float, spec: str) -> Html | None:
    """``+15.1%`` or ``-0.268`` (None, shown as not available, for NaN)."""
    if not math.isfinite(value):
        return None
    return Html(escape(f"{value:+.1%}" if spec == "%" else f"{value:+{spec}}"))


def _fluency_note(measure: str) -> str:
    if measure == "distinct-3":
        return ("distinct-3, the share of distinct word trigrams in each reply (1 = no repeated phrase), "
                "averaged over replies.")
    return f"the samples' '{measure}' column (the gold rubric's fluency)."


def _chosen(results: dict[str, Any], name: str | None, candidates: Sequence[str],
            human: Sequence[dict[str, Any]]) -> str:
    """``Chosen: <b>dpo</b> (gold 72 % [64, 80]).`` or the sentence that none was."""
    if name is None:
        return f"<b>Chosen: none</b>: no policy beats {escape(results['baseline'])} under this rule."
    scorer = trusted_scorer(results, candidates, human)
    rate = comparison(results, name, scorer, human)
    return f"Chosen: <b>{escape(name)}</b> ({escape(scorer_label(scorer))} {escape(rate.text() if rate else '')})."


def _rounds(rounds: Sequence[dict[str, Any]]) -> str:
    """One row per round (oldest first, this report's eval last): win rates and the best policy."""
    def rates(results: dict[str, Any], scorer: str) -> Html | None:
        lines = [f"{p}: {r.text()}" for p in results["policies"][1:]
                 if (r := comparison(results, p, scorer)) is not None]
        return Html("<br>".join(escape(x) for x in lines)) if lines else None

    rows = []
    for number, results in enumerate(rounds, 1):
        name, _ = best_policy(results, results["policies"][1:])
        scorer = trusted_scorer(results, results["policies"][1:])
        rows.append([f"{number}{' (this report)' if number == len(rounds) else ''}", results["baseline"],
                     rates(results, GOLD), scorer_label(results["primary"]), rates(results, results["primary"]),
                     f"{name} (by {scorer_label(scorer)})" if name else
                     f"none by {scorer_label(scorer)}: the next round keeps its starting policy"])
    note = ("<p class='meta'>Each round's checkpoints against its baseline, with bootstrap intervals; the best "
            "policy follows the rule of the Scorer agreement section (human A/B results of this report are "
            "not used here).</p>")
    return _section("Rounds side by side", note, _table(
        ["round", "baseline", "win rate vs baseline (gold)", "primary scorer", "win rate vs baseline (primary)",
         "best policy"], rows))


def _reward_models(results: dict[str, Any]) -> str:
    """Each reward model's held-out accuracy and calibration, as its training stage measured them."""
    cards = {name: c for name, c in results.get("reward_models", {}).items() if "accuracy" in c}
    if not cards:
        return ""
    headers = ["reward model", "held-out pairs", "accuracy", "length-only accuracy", "ECE",
               "ECE after temperature scaling", "temperature", "reward-length corr."]
    rows = [[name, c.get("pairs"), _pct(c["accuracy"]), _pct(c.get("length_baseline_accuracy")), c.get("ece"),
             c.get("ece_calibrated"), c.get("temperature"), c.get("reward_length_corr")] for name, c in cards.items()]
    note = ("<p class='meta'>Measured by <code>rlhf train rm</code> on pairs of prompts it did not train on. ECE of "
            "sigmoid(r_c - r_r) against the annotators' vote share, each pair in both orders; after temperature "
            "scaling, cross-fitted over prompts (the temperature is fitted on some prompts and scored on the "
            "others).</p>")
    return _section("Reward models", _table(headers, rows), note)


def _win_rates(results: dict[str, Any], human: Sequence[dict[str, Any]]) -> str:
    comps = results["comparisons"]
    level = results["settings"]["confidence"]
    chart_rows = [(f"{c['policy']} vs {c['baseline']} [{c['scorer']}]", c["win_rate"], c["ci_low"], c["ci_high"])
                  for c in comps]
    chart_rows += [(f"{h['policy_a']} vs {h['policy_b']} [human]", h["win_rate"], h["ci_low"], h["ci_high"])
                   for h in human]
    chart = interval_chart(chart_rows, f"Win rates with {level:.0%} paired bootstrap intervals (ties count half)",
                           "win rate")
    rows = [[c["policy"], c["baseline"], c["scorer"], c["n"], f"{c['wins']}/{c['ties']}/{c['losses']}",
             _pct(c["win_rate"], c["ci_low"], c["ci_high"]), _pct(c["wilson_low"]), _pct(c["wilson_high"]),
             _pct(c["cp_low"]), _pct(c["cp_high"]), c["p_value"],
             _pct(c["lc_win_rate"], c["lc_ci_low"], c["lc_ci_high"]), _pct(c["longer_rate"]),
             _pct(c.get("judge_consistency"))] for c in comps]
    table = _table(["policy", "against", "scorer", "pairs", "W/T/L", "win rate [bootstrap CI]", "Wilson low",
                    "Wilson high", "Clopper-Pearson low", "Clopper-Pearson high", "sign-test p",
                    "length-controlled [CI]", "policy reply longer", "judge order consistency"], rows)
    parts = [f'<div class="charts">{chart}</div>', table]
    if human:
        parts.append("<h3>Human blind A/B evaluation</h3>")
        parts.append(_table(
            ["A", "B", "items", "voted", "identical (auto ties)", "votes", "annotators", "win rate of A [CI]",
             "tie rate", "Response-1 rate (p)", "annotator agreement"],
            [[h["policy_a"], h["policy_b"], h["items"], h["items_voted"], h["auto_ties"], h["votes"],
              h["annotators"], _pct(h["win_rate"], h["ci_low"], h["ci_high"]), _pct(h["tie_rate"]),
              _slot1(h), _pct(h["agreement"])] for h in human]))
    note = ("<p class='meta'>Win rate: share of paired prompts where the policy's reply scores higher (ties count "
            "half). Length-controlled: logistic regression of the outcome on tanh(length difference / std), "
            "evaluated at equal length (AlpacaEval 2 style). Judge verdicts average both slot orders.</p>")
    return _section("Win rates", note, *parts)


def _slot1(human: dict[str, Any]) -> Html | None:
    rate = human.get("slot1_rate")
    if rate is None or not math.isfinite(rate):
        return None
    return Html(escape(f"{rate:.1%} (p={human['slot1_p_value']:.3g})"))


def _plane(results: dict[str, Any]) -> str:
    charts = []
    bon = results.get("best_of_n") or {}
    for scorer in [s for s in results["scorers"] if s != JUDGE]:
        points = []
        for name in results["policies"]:
            s = results["summary"][name]
            if not s.get("kl"):
                continue
            stats = s[score_column(scorer)]
            points.append({"label": name, "x": s["kl"]["kl"], "xerr": s["kl"]["stderr"], "y": stats["mean"],
                           "yerr": stats["std"] / math.sqrt(max(s["samples"], 1))})
        curves = []
        for policy, curve in bon.items():
            ys = curve["proxy"] if curve["proxy_scorer"] == scorer else (curve["gold"] if scorer == "gold" else None)
            if ys:
                curves.append({"label": f"best-of-n from {policy}", "x": curve["kl_bound"], "y": ys})
        if points:
            charts.append(scatter_chart(points, f"Reward vs KL: {scorer}", "KL(policy || reference), nats",
                                        f"mean {scorer}", curves=curves))
    if not charts:
        return _section("Reward vs KL", "<p class='na'>not available (KL was not estimated)</p>")
    note = ("<p class='meta'>Each point is a checkpoint (bars: ±1 standard error). Dashed curves: best-of-n "
            "sampling with the proxy reward model, at its KL bound log n − (n−1)/n.</p>")
    return _section("Reward vs KL", note, f'<div class="charts">{"".join(charts)}</div>')


def _histograms(results: dict[str, Any], frame: pd.DataFrame) -> str:
    charts = []
    for scorer in [s for s in results["scorers"] if s != JUDGE]:
        series = [(name, frame.loc[frame["policy"] == name, score_column(scorer)].tolist())
                  for name in results["policies"]]
        charts.append(histogram_chart(series, f"Distribution of {scorer}", scorer))
    return _section("Reward distributions", f'<div class="charts">{"".join(charts)}</div>')


def _lengths(results: dict[str, Any], frame: pd.DataFrame) -> str:
    series = [(name, frame.loc[frame["policy"] == name, "tokens"].tolist()) for name in results["policies"]]
    chart = histogram_chart(series, "Reply length", "tokens")
    rows = [[name, *[results["summary"][name]["tokens"][k] for k in ("mean", "median", "p90", "max")],
             results["summary"][name]["chars"]["mean"], _pct(results["summary"][name]["finished_rate"])]
            for name in results["policies"]]
    table = _table(["policy", "mean tokens", "median", "p90", "max", "mean characters", "ended with EOS"], rows)
    corr = _table(["scorer", "policy", "n", "Pearson r (score, length)", "Spearman rho"],
                  [[r["scorer"], r["policy"], r["n"], r["pearson"], r["spearman"]]
                   for r in results["length_correlation"]])
    return _section("Lengths", f'<div class="charts">{chart}</div>', table, "<h3>Score-length correlation</h3>", corr)


def _categories(results: dict[str, Any]) -> str:
    rows = [[r["category"], r["policy"], r["n"], r.get("mean"), r.get("gold_mean"),
             _pct(r.get("win_rate"), r.get("ci_low"), r.get("ci_high")) if "win_rate" in r else Html("baseline")]
            for r in results["categories"]]
    primary = results["primary"]
    return _section("Per category", _table(["category", "policy", "n", f"mean {primary}", "mean gold",
                                            f"win rate vs baseline ({primary})"], rows))


def _best_of_n(results: dict[str, Any]) -> str:
    bon = results.get("best_of_n") or {}
    if not bon:
        return _section("Best-of-n", "<p class='na'>not available (best_of_n.n was 0)</p>")
    rows = [[policy, n, proxy, (c["gold"] or [None] * len(c["n"]))[i], kl]
            for policy, c in bon.items() for i, (n, proxy, kl) in enumerate(zip(c["n"], c["proxy"], c["kl_bound"]))]
    first = next(iter(bon.values()))
    return _section("Best-of-n", _table(["policy", "n", f"expected {first['proxy_scorer']}", "expected gold",
                                         "KL bound (nats)"], rows))


def pick_examples(joined: pd.DataFrame, column: str, count: int, seed: int) -> dict[str, pd.DataFrame]:
    """Largest wins, largest losses (by ``column`` minus its ``_b`` twin) and a seeded random draw."""
    # A judge verdict is already relative (P(policy's reply is better)): its margin is the distance from 0.5.
    diff = joined[column] - 0.5 if column == "judge_prob" else joined[column] - joined[column + "_b"]
    ordered = joined.assign(_diff=diff).sort_values("_diff", kind="stable")
    wins = ordered[ordered["_diff"] > 0].tail(count).iloc[::-1]
    losses = ordered[ordered["_diff"] < 0].head(count)
    rng = np.random.default_rng(seed)
    random = joined.iloc[sorted(rng.choice(len(joined), size=min(count, len(joined)), replace=False))]
    return {"largest wins": wins, "largest losses": losses, "random": random.assign(_diff=diff)}


def _samples(results: dict[str, Any], frame: pd.DataFrame, count: int, seed: int) -> str:
    primary = results["primary"]
    column = "judge_prob" if primary == JUDGE else score_column(primary)
    scorers = [s for s in results["scorers"] if s != JUDGE]
    parts = []
    for policy in results["policies"][1:]:
        joined = paired_frame(frame, policy, results["baseline"])
        for kind, rows in pick_examples(joined, column, count, seed).items():
            parts.append(f"<h3>{escape(policy)} vs {escape(results['baseline'])}: {escape(kind)} ({escape(primary)})</h3>")
            if rows.empty:
                parts.append("<p class='na'>none</p>")
            for _, row in rows.iterrows():
                score_a = ", ".join(f"{s} {row[score_column(s)]:.3g}" for s in scorers)
                score_b = ", ".join(f"{s} {row[score_column(s) + '_b']:.3g}" for s in scorers)
                parts.append(
                    f'<div class="prompt"><b>Prompt</b> ({escape(str(row["category"]))}, #{int(row["prompt_index"])})'
                    f"<pre>{escape(str(row['prompt']))}</pre></div>"
                    f'<div class="pair"><div><b>{escape(policy)}</b> <span class="meta">{escape(score_a)}</span>'
                    f"<pre>{escape(str(row['reply']))}</pre></div>"
                    f'<div><b>{escape(results["baseline"])}</b> <span class="meta">{escape(score_b)}</span>'
                    f"<pre>{escape(str(row['reply_b']))}</pre></div></div>")
    return _section("Side-by-side samples", *parts)


def _provenance(provenance: dict[str, dict[str, Any]]) -> str:
    cards, chains = [], []
    counts = ("pairs", "annotators")
    rates = ("tie_rate", "slot_a_rate", "honeypot_accuracy")
    for name, info in provenance.items():
        cards.append(f"<h3>{escape(name)}</h3>")
        if not info["snapshots"]:
            cards.append("<p class='na'>not available: no annotation snapshot in this checkpoint's lineage</p>")
        else:
            rows = [[s["folder"], s["used_by_stage"], *[None if s.get(f) is None else int(s[f]) for f in counts],
                     s.get("overlap"), _pct(s.get("agreement")), s.get("alpha"), s.get("kendalls_w"),
                     *[_pct(s.get(f)) for f in rates], s.get("quality_report")] for s in info["snapshots"]]
            cards.append(_table(["snapshot", "used by stage", "pairs", "annotators", "annotators per record",
                                 "pairwise agreement", "Krippendorff alpha", "Kendall's W", "tie rate",
                                 "slot-A rate", "honeypot accuracy", "quality report"], rows))
        chains.append(f"<h3>{escape(name)}</h3>")
        if not info["lineage"]:
            chains.append("<p class='na'>not available: not a stage output (a hub model or the tiny model)</p>")
        else:
            chains.append(_table(["depth", "stage", "folder", "fingerprint", "git", "finished", "inputs"],
                                 [[e["depth"], e["stage"], e["dir"], e["fingerprint"], e["git"], e["finished_at"],
                                   "; ".join(f"{k}: {v}" for k, v in e["inputs"].items())] for e in info["lineage"]]))
    return (_section("Data cards of the annotation snapshots", *cards)
            + _section("Lineage of each checkpoint", *chains))


def render_report(results: dict[str, Any], frame: pd.DataFrame, provenance: dict[str, dict[str, Any]],
                  human: Sequence[dict[str, Any]] = (), title: str = "Checkpoint evaluation",
                  examples: int = 5, seed: int = 0, source: str = "",
                  rounds: Sequence[dict[str, Any]] = ()) -> str:
    """The whole report page; ``rounds``: the ``results.json`` of earlier rounds, oldest first."""
    gen = results.get("generation", {})
    prompt_set = results.get("prompt_set", {})
    meta = (f"<p class='meta'>Generated {escape(_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))}"
            f" from {escape(source)}. Baseline: <b>{escape(results['baseline'])}</b>; primary scorer: "
            f"<b>{escape(results['primary'])}</b>; {escape(str(prompt_set.get('prompts', '?')))} prompts; sampling "
            f"temperature {escape(str(gen.get('temperature')))}, top-p {escape(str(gen.get('top_p')))}, "
            f"{escape(str(gen.get('samples_per_prompt')))} sample(s) per prompt.</p>")
    body = "".join([
        f"<h1>{escape(title)}</h1>", meta, _summary(results), _agreement(results, frame, human),
        _rounds([*rounds, results]) if rounds else "", _reward_models(results), _win_rates(results, human), _plane(results),
        _histograms(results, frame), _lengths(results, frame), _categories(results), _best_of_n(results),
        _samples(results, frame, examples, seed), _provenance(provenance),
    ])
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>{body}</body></html>")
