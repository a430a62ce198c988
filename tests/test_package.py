"""The project as a real package: its wheel, installed (not editable) into a fresh venv, runs ``rlhf``,
validates the shipped configs and carries its package data (the ``evaluate`` metric scripts and the
annotation dataset templates), with no file of the source checkout on the path.

The fresh venv gets the wheel with ``--no-deps``; its dependencies come from this test's own environment
through a ``.pth`` line naming that environment's site-packages. A path line in a ``.pth`` file does not run
the ``.pth`` files of the folder it adds, so the checkout's editable install stays out: ``rlhf`` resolves to
the wheel's copy (asserted).
"""

from __future__ import annotations

import json
import os
import shutil
import site
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _run(*argv: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False, cwd=cwd, env=env,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {proc.returncode}: {proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding the wheel of this checkout (not editable); returns the venv folder."""
    tmp = tmp_path_factory.mktemp("package")
    source = tmp / "source"  # a clean copy: no stale build/ folder of the checkout can slip into the wheel
    shutil.copytree(ROOT / "rlhf", source / "rlhf", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "wheels",
         source, cwd=tmp)
    (wheel,) = (tmp / "wheels").glob("rlhf_pipeline-*.whl")
    venv = tmp / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp)
    python = venv / "bin" / "python"
    purelib = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                        cwd=tmp).stdout.strip())
    (purelib / "_rlhf_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run(python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel, cwd=tmp)
    return venv


def test_the_installed_package_is_the_wheel_not_the_checkout(installed, tmp_path):
    out = _run(installed / "bin" / "python", "-c", "import rlhf; print(rlhf.__file__)", cwd=tmp_path).stdout
    assert Path(out.strip()).is_relative_to(installed)


def test_rlhf_runs_from_the_wheel(installed, tmp_path):
    rlhf = installed / "bin" / "rlhf"
    assert "usage: rlhf" in _run(rlhf, "--help", cwd=tmp_path).stdout
    assert "config keys (stage 'label_push')" in _run(rlhf, "label", "push", "--help", cwd=tmp_path).stdout
    validated = _run(rlhf, "config", "validate", ROOT / "configs", cwd=tmp_path).stdout.splitlines()
    assert validated and all(line.startswith("ok ") for line in validated)


def test_the_wheel_carries_the_metric_scripts_and_the_templates(installed, tmp_path):
    code = """
import json
from rlhf.eval.analysis import METRIC_NAMES, MetricSuite, default_metrics_dir
from rlhf.labeling.templates import load_template, templates_dir
template = load_template("ranking-v2")
suite = MetricSuite()
win = suite.win_rate.compute(predictions=[1.0, 2.0, 0.0], references=[0.0, 1.0, 1.0], n_boot=200)
print(json.dumps({"metrics": str(default_metrics_dir()), "names": list(METRIC_NAMES),
                  "templates": str(templates_dir()), "guidelines": template.guidelines_text()[:1],
                  "win_rate": win["win_rate"]}))
"""
    found = json.loads(_run(installed / "bin" / "python", "-c", code, cwd=tmp_path).stdout.strip().splitlines()[-1])
    metrics, templates = Path(found["metrics"]), Path(found["templates"])
    assert metrics.is_relative_to(installed) and templates.is_relative_to(installed)
    assert all((metrics / name / f"{name}.py").is_file() for name in found["names"])
    assert (templates / "ranking-v2.yaml").is_file() and (templates / "ranking-v2.md").is_file()
    assert found["guidelines"] == "#" and found["win_rate"] == pytest.approx(2 / 3)


def test_serving_from_the_wheel_names_the_checkout_in_one_line(installed, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = _run(installed / "bin" / "rlhf", "label", "serve", "start", f"service.home={tmp_path / 'home'}",
                f"service.port={port}", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "argilla_server_plugin/ folder" in proc.stderr and "pip install -e ." in proc.stderr
