"""Both notebooks run top to bottom (nbclient, a real kernel) against small artifacts made here."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.eval_fixtures import make_eval_folder, make_snapshot

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _execute(name: str, cwd: Path):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    return notebook


def _outputs(notebook, mime: str) -> list[str]:
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("name") == "stdout" and mime == "text/plain":
                found.append(output["text"])
            elif mime in output.get("data", {}):
                found.append(output["data"][mime])
    return found


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS.glob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), path.name


@pytest.mark.slow
def test_explore_preferences_runs(tmp_path, monkeypatch):
    snapshot = make_snapshot(tmp_path)
    monkeypatch.setenv("RLHF_SNAPSHOT_DIR", str(snapshot))
    notebook = _execute("explore_preferences.ipynb", tmp_path)
    printed = "".join(_outputs(notebook, "text/plain"))
    assert "pairs over" in printed and "pairs agreeing with the gold rubric" in printed
    assert len(_outputs(notebook, "image/svg+xml")) >= 2
    assert any("honeypot_accuracy" in html for html in _outputs(notebook, "text/html"))


@pytest.mark.slow
def test_compare_checkpoints_runs(tmp_path, monkeypatch):
    make_eval_folder(tmp_path / "runs", payload="<script>window.__x = 1</script> hello", n_prompts=18)
    monkeypatch.setenv("RLHF_EVAL_DIR", str(tmp_path / "runs" / "eval"))  # the newest run is picked
    notebook = _execute("compare_checkpoints.ipynb", tmp_path)
    printed = "".join(_outputs(notebook, "text/plain"))
    assert "baseline sft; checkpoints ['dpo']" in printed and "won on rm/demo but lost on gold" in printed
    assert len(_outputs(notebook, "image/svg+xml")) >= 3
    html = "".join(_outputs(notebook, "text/html"))
    assert "<script>window.__x" not in html  # pandas escapes model output
