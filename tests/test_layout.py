"""The package's shape: a light public face, names that moved still found, the documented Python example runs."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import aubench_cli
from aubench_cli.data import preprocess
from cachefixture import make_cache

ROOT = Path(__file__).resolve().parents[1]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('MODULES', *sorted(sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.rsplit("MODULES", 1)[1].split())


def test_help_and_import_load_no_torch():
    code = ("from aubench_cli.cli import app\n"
            "try:\n    app(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass")
    loaded = _modules_after(code)
    assert "aubench_cli.cli" in loaded and "typer" in loaded  # the help really ran through the app
    assert not {"torch", "torchvision", "timm", "mediapipe"} & loaded
    assert "torch" not in _modules_after("import aubench_cli")


def test_public_names_resolve_lazily():
    for name in aubench_cli.__all__:
        assert getattr(aubench_cli, name) is not None
    assert aubench_cli.create_model is importlib.import_module("aubench_cli.models").create_model
    assert aubench_cli.open_cache is importlib.import_module("aubench_cli.data.cache").open_cache
    assert "baseline" in aubench_cli.list_models()
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        aubench_cli.nope  # noqa: B018


def test_forkserver_preloads_modules_that_exist():
    # multiprocessing swallows an ImportError in the forkserver's preload: each worker would then re-import
    # mediapipe on its own, with nothing failing. Every name must be importable as written.
    assert preprocess.FORKSERVER_PRELOAD
    for name in preprocess.FORKSERVER_PRELOAD:
        importlib.import_module(name)
    assert "aubench_cli.data.preprocess" in preprocess.FORKSERVER_PRELOAD  # the module whose worker function runs


def test_mediapipe_is_imported_without_matplotlib_and_matplotlib_stays_real():
    """The forkserver imports mediapipe through data/mp_import.py: not matplotlib (0.3 s of its start-up), and an
    import of matplotlib afterwards, in the same process, is the real package (stand-ins removed)."""
    assert "aubench_cli.data.mp_import" in preprocess.FORKSERVER_PRELOAD
    loaded = _modules_after("from aubench_cli.data.mp_import import mediapipe\n"
                            "assert mediapipe.solutions.face_mesh.FaceMesh")
    assert "mediapipe" in loaded and not {m for m in loaded if m.split(".")[0] == "matplotlib"}
    code = ("from aubench_cli.data.mp_import import mediapipe\n"
            "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
            "plt.figure(); assert matplotlib.__version__ and plt.gcf()\nprint('REAL')")
    assert "REAL" in subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # matplotlib already imported (a report process): it stays, and mediapipe still imports
    _modules_after("import matplotlib\nfrom aubench_cli.data.mp_import import mediapipe\n"
                   "import matplotlib.pyplot as plt\nassert hasattr(plt, 'figure') and mediapipe.solutions")


@pytest.mark.slow
def test_python_api_example_runs_as_written(tmp_path, monkeypatch):
    text = (ROOT / "docs" / "python-api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1
    make_cache(tmp_path / "cache", subjects=5, videos_per_subject=1, frames=30)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "docs/python-api.md", "exec"), namespace)  # noqa: S102
    result = namespace["result"]
    assert [r["arch"] for r in result["runs"]] == ["baseline", "emonets"]
    assert len(result["comparisons"]) == 1
    assert (tmp_path / "runs" / "baseline" / "best.pt").is_file()
