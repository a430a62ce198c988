"""The HTML report: self-contained, rendered in headless Chromium with visible plots, model output shown as
escaped text that runs nothing, the data card and lineage of each checkpoint, human A/B results, PDF."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from rlhf.eval.datacard import checkpoint_provenance, read_data_card
from rlhf.eval.human import HumanVote, build_blind_items, merge_votes
from rlhf.eval.svg import histogram_chart, interval_chart, nice_ticks
from rlhf.stages.report import CHROMIUM_FLAGS, ReportConfig, run_report
from tests.eval_fixtures import make_eval_folder

PAYLOAD = ('<script>window.__pwned = 1</script> Refund approved. '
           '<img src="x" onerror="window.__pwned_img = 1"> Thanks!')
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    eval_dir = make_eval_folder(root, payload=PAYLOAD)
    human = _human_result(root, eval_dir)
    cfg = ReportConfig(run={"root": str(root)}, eval_dir=str(eval_dir), human=[str(human)], title="Demo <eval>")
    out = run_report(cfg)
    return out / "report.html", eval_dir


def _human_result(root: Path, eval_dir: Path) -> Path:
    import pandas as pd

    frame = pd.read_parquet(eval_dir / "samples.parquet")
    a, b = frame[frame.policy == "dpo"], frame[frame.policy == "sft"]
    items = build_blind_items(a.prompt.tolist(), a.reply.tolist(), b.reply.tolist(), "dpo", "sft", seed=0)
    votes = [HumanVote(it.item_id, f"ann-{k}", str(it.a_slot)) for it in items for k in range(2) if not it.auto_tie]
    result = merge_votes(items, votes, "dpo", "sft", n_boot=300)
    path = root / "human_eval.json"
    path.write_text(json.dumps(result.to_dict()))
    return path


def test_report_is_self_contained_and_escapes_model_output(report):
    html_path, _ = report
    html = html_path.read_text(encoding="utf-8")
    assert "<script" not in html.lower()  # the payload's tag is escaped, and the page has no script of its own
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html
    assert "&lt;img src=&quot;x&quot; onerror=&quot;window.__pwned_img = 1&quot;&gt;" in html
    assert "<img" not in html.lower()
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    for marker in ("http://", "https://"):  # nothing to fetch: no external stylesheet, font, image or script
        assert marker not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert html.count("<svg") >= 6
    assert "Demo &lt;eval&gt;" in html


def test_report_has_every_section_with_numbers(report):
    html = report[0].read_text(encoding="utf-8")
    for heading in ("Summary", "Scorer agreement", "Win rates", "Reward vs KL", "Reward distributions", "Lengths", "Per category",
                    "Best-of-n", "Side-by-side samples", "Data cards of the annotation snapshots",
                    "Lineage of each checkpoint", "Human blind A/B evaluation"):
        assert f">{heading}<" in html, heading
    for kind in ("largest wins", "largest losses", "random"):
        assert f"dpo vs sft: {kind}" in html
    assert "returns" in html and "order_status" in html  # per-category rows
    quality = json.loads(next(report[0].parents[2].glob("snapshots/*/quality_report.json")).read_text())
    for key in ("pairwise_agreement", "tie_rate", "slot_a_rate", "honeypot_accuracy"):
        assert f"{quality[key]:.1%}" in html, key
    assert "quality_report.json" in html
    assert "not available: no annotation snapshot" in html  # the baseline was trained on no snapshot
    assert ">dpo<" in html and ">sft<" in html
    # Every human vote went to dpo: beyond both scorers' intervals, and human results decide the best policy
    # (tests/test_report_flags.py crafts a reward model that gold contradicts).
    assert "human raters say 100 % [100, 100]: the reward model underrates this policy" in html
    assert "highest human raters win rate against sft" in html and "Chosen: <b>dpo</b> (human raters 100 %" in html
    assert "Rounds side by side" not in html


def test_report_in_chromium_runs_nothing_and_shows_plots(report, repo_root):
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI for the report test (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    html_path, _ = report
    artifacts = repo_root / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    # A copy without the Content-Security-Policy proves that escaping alone keeps the payload inert.
    no_csp = html_path.parent.parent / "report-no-csp.html"
    page_text = html_path.read_text(encoding="utf-8")
    start = page_text.index('<meta http-equiv="Content-Security-Policy"')
    no_csp.write_text(page_text[:start] + page_text[page_text.index(">", start) + 1:], encoding="utf-8")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
        try:
            for path in (html_path, no_csp):
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                requests: list[str] = []
                page.on("request", lambda req, seen=requests: seen.append(req.url))
                page.goto(path.resolve().as_uri())
                page.wait_for_load_state("load")
                assert page.evaluate("typeof window.__pwned") == "undefined"
                assert page.evaluate("typeof window.__pwned_img") == "undefined"
                assert page.locator("img").count() == 0 and page.locator("script").count() == 0
                assert requests == [path.resolve().as_uri()], requests
                visible = page.get_by_text("<script>window.__pwned = 1</script>", exact=False).first
                assert visible.is_visible()
                svgs = page.locator("svg")
                assert svgs.count() >= 6
                for i in range(svgs.count()):
                    box = svgs.nth(i).bounding_box()
                    assert box is not None and box["width"] > 300 and box["height"] > 100
                assert page.locator("svg circle").count() >= 4  # win-rate and reward-vs-KL points
                assert page.locator("svg polyline").count() >= 4  # histograms and the best-of-n curve
                if path == html_path:
                    page.screenshot(path=str(artifacts / "report.png"), full_page=True)
                    page.locator("section", has=page.locator("h2", has_text="Reward vs KL")).screenshot(
                        path=str(artifacts / "report-reward-vs-kl.png"))
                page.close()
        finally:
            browser.close()
    assert (artifacts / "report.png").stat().st_size > 50_000


@pytest.mark.slow
def test_pdf_export(report, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    _, eval_dir = report
    out = run_report(ReportConfig(run={"root": str(tmp_path)}, eval_dir=str(eval_dir), pdf=True, chromium=CHROMIUM))
    pdf = (out / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(pdf) > 20_000


def test_rerun_is_skipped_and_bad_inputs_are_named(report, tmp_path, capsys):
    html_path, eval_dir = report
    root = html_path.parent.parent.parent
    run_report(ReportConfig(run={"root": str(root)}, eval_dir=str(eval_dir),
                            human=[str(root / "human_eval.json")], title="Demo <eval>"))
    assert "up to date, skipping" in capsys.readouterr().out
    from rlhf.core.errors import UserError

    with pytest.raises(UserError, match="not a completed eval folder"):
        run_report(ReportConfig(run={"root": str(tmp_path)}, eval_dir=str(tmp_path)))
    with pytest.raises(UserError, match="eval_dir"):
        run_report(ReportConfig(run={"root": str(tmp_path)}))


def test_data_card_and_provenance_walk_the_lineage(report):
    _, eval_dir = report
    manifest = json.loads((eval_dir / "manifest.json").read_text())
    info = checkpoint_provenance(manifest["inputs"]["policy/dpo"]["stage_dir"])
    assert [e["stage"] for e in info["lineage"]] == ["dpo", "sft"]
    (card,) = info["snapshots"]
    quality = json.loads(Path(card["quality_report"]).read_text())
    assert card["annotators"] == 3 and card["overlap"] == quality["overlap"] == 3
    assert card["agreement"] == quality["pairwise_agreement"] and card["alpha"] == quality["krippendorff_alpha"]
    assert card["slot_a_rate"] == quality["slot_a_rate"] and card["honeypot_accuracy"] == quality["honeypot_accuracy"]
    assert card["kendalls_w"] == quality["kendalls_w"] and card["tie_rate"] == quality["tie_rate"]
    pairs = Path(card["folder"], "pairs.jsonl").read_text().splitlines()
    assert card["pairs"] == len(pairs) > 0  # the report has no pair count: pairs.jsonl is counted
    assert checkpoint_provenance("/nonexistent/model") == {"lineage": [], "snapshots": []}


def test_data_card_without_report_is_not_available(tmp_path):
    (tmp_path / "pairs.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    card = read_data_card(tmp_path)
    assert card["pairs"] == 2 and card["agreement"] is None and card["quality_report"] is None
    (tmp_path / "quality_report.json").write_text(json.dumps({"agreement": {"overall": 0.7}, "bots": {"tie_rate": 0.1}}))
    card = read_data_card(tmp_path)
    assert card["agreement"] == 0.7 and card["tie_rate"] == 0.1 and card["honeypot_accuracy"] is None


def test_svg_charts_escape_labels_and_cover_their_data():
    svg = interval_chart([("<b>x</b>", 0.6, 0.5, 0.7)], "t & <t>", "win rate")
    assert "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg and "t &amp; &lt;t&gt;" in svg
    hist = histogram_chart([("a", [0.0, 1.0, 1.0]), ("<i>", [2.0])], "h", "x")
    assert "<i>" not in hist and hist.count("<polyline") == 2
    for lo, hi in ((0, 50.3), (-0.35, -0.1), (0, 0.33), (5, 24)):
        ticks = nice_ticks(lo, hi)
        assert ticks[0] <= lo and ticks[-1] >= hi and len(ticks) <= 8
