"""The command line through Typer's CliRunner: listing, profiling, JSON, and the one error boundary."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import typer
from typer.testing import CliRunner

from aubench_cli import __version__
from aubench_cli.cli import app
from aubench_cli.errors import UsageError
from aubench_cli.models import create_model, list_models

runner = CliRunner()


def test_models_json_lists_every_network():
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["arch"] for r in rows] == list_models()
    by_name = {r["arch"]: r for r in rows}
    assert by_name["baseline"]["params"] == 658_156  # 12 outputs
    assert by_name["baseline"]["optimizer"] == "adagrad" and by_name["vgg16"]["optimizer"] == "adam"


def test_models_table():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    for name in list_models():
        assert name in result.stdout


def test_models_checks_a_weights_file(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(create_model("emonets", 3).state_dict(), path)
    result = runner.invoke(app, ["models", "emonets", "--weights", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["loaded"] == 6 and report["replaced"] == ["classifier.bias", "classifier.weight"]


def test_profile_json_with_paper_figures():
    result = runner.invoke(app, ["profile", "--all", "--paper", "--no-speed", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["arch"] for r in rows] == list_models()
    for r in rows:
        for key in ("arch", "params", "macs", "flops", "memory_mb", "images_per_s", "paper_flops", "paper_params",
                    "paper_memory_mb"):
            assert key in r
        assert isinstance(r["flops"], int) and isinstance(r["paper_params"], int)
        assert abs(r["flops"] / r["paper_flops"] - 1) < 0.01
    assert {r["arch"]: r["layout"] for r in rows}["resnet50"] == "v1"  # Table I is profiled in the paper's layout


def test_profile_set_layout_shows_that_layouts_figures():
    result = runner.invoke(app, ["profile", "resnet50", "--paper", "--no-speed", "--json", "--set", "model.layout=v1.5"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["layout"] == "v1.5" and 0.04 < row["flops_diff"] < 0.08  # torchvision's layout costs ~6 % more
    table = runner.invoke(app, ["profile", "resnet50", "--no-speed", "--set", "model.layout=v1.5"])
    assert "resnet50 (v1.5)" in table.stdout


def test_profile_measures_speed_and_honours_set():
    result = runner.invoke(app, ["profile", "baseline", "--json", "--set", "profile.batch=3"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["batch"] == 3 and row["images_per_s"] > 0 and row["outputs"] == 12


def test_profile_table_shows_paper_columns():
    result = runner.invoke(app, ["profile", "emonets", "--paper", "--no-speed"])
    assert result.exit_code == 0
    assert "paper FLOPs" in result.stdout and "739.4M" in result.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["profile", "vgg"], "did you mean 'vgg16'"),
        (["profile"], "--all"),
        (["profile", "baseline", "--all"], "not both"),
        (["profile", "baseline", "--set", "profile.batchsize=4"], "profile.batch"),
        (["profile", "baseline", "--set", "profile.batch=many"], "integer"),
        (["profile", "baseline", "--paper", "--input", "64"], "96"),
        (["profile", "baseline", "--device", "cuda:0"], "no CUDA GPU") if not torch.cuda.is_available()
        else (["profile", "baseline", "--device", "tpu"], "unknown device"),
        (["models", "--weights", "x.pt"], "architecture"),
        (["models", "baseline", "--weights", "missing.pt"], "not found"),
    ],
)
def test_bad_usage_is_one_red_line_and_exit_2(args, needle):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ")
    assert needle in result.stderr
    assert "Traceback" not in result.output


def test_debug_variable_lets_the_traceback_through():
    result = runner.invoke(app, ["profile", "vgg"], env={"AUBENCH_DEBUG": "1"})
    assert isinstance(result.exception, UsageError)


def test_module_entry_point_and_version():
    out = subprocess.run([sys.executable, "-m", "aubench_cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"aubench {__version__}"
    bad = subprocess.run([sys.executable, "-m", "aubench_cli", "models", "nosuchnet", "--pretrained"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown architecture" in bad.stderr


def _params():
    command = typer.main.get_command(app)
    for name, sub in command.commands.items():
        for param in sub.params:
            yield name, param


def test_help_texts_survive_rich_markup():
    """A help text is printed through Rich markup: a literal '[default: ...]' in it is eaten as a tag (it once
    printed 'Run directories .'). Defaults go in show_default, so every help reads as written."""
    from rich.text import Text

    checked = 0
    for name, param in _params():
        text = getattr(param, "help", None) or ""
        assert Text.from_markup(text).plain == text, (name, param.name, text)
        assert "[default" not in text and not text.rstrip().endswith(" ."), (name, param.name, text)
        checked += 1
    assert checked > 50
    help_text = runner.invoke(app, ["eval", "--help"]).stdout
    assert "Run directories." in help_text and "the latest under runs/" in help_text and " ." not in help_text


def test_fixed_value_options_are_choices_equal_to_the_registries():
    from aubench_cli.commands import choices
    from aubench_cli.data.labels import LAYOUTS
    from aubench_cli.device import PRECISIONS
    from aubench_cli.evaluation.evaluate import CI_UNITS
    from aubench_cli.studies.report import FORMATS, LAYOUTS as REPORT_LAYOUTS
    from aubench_cli.evaluation.evaluate import SPLITS
    from aubench_cli.training.sampling import BALANCING
    from aubench_cli.training.graphs import CHOICES as CUDA_GRAPHS
    from aubench_cli.training.trainer import OPTIMIZERS
    from aubench_cli.training.transforms import AUGMENTATIONS, NORMALIZATIONS

    registries = {choices.Balance: BALANCING, choices.Norm: NORMALIZATIONS, choices.Aug: AUGMENTATIONS,
                  choices.Optimizer: OPTIMIZERS, choices.ReportFormat: FORMATS, choices.Layout: LAYOUTS,
                  choices.InputFormat: ("auto", *LAYOUTS), choices.CiUnit: CI_UNITS,
                  choices.Split: SPLITS, choices.Checkpoint: ("best", "last"),
                  choices.ReportLayout: REPORT_LAYOUTS, choices.Precision: PRECISIONS, choices.CudaGraphs: CUDA_GRAPHS}
    for enum, registry in registries.items():
        assert sorted(e.value for e in enum) == sorted(registry), enum
    # each fixed-value option: its values listed in --help, a wrong value refused by the parser (exit 2)
    fixed = [("eval", "--split", choices.Split), ("eval", "--checkpoint", choices.Checkpoint),
             ("eval", "--ci-unit", choices.CiUnit), ("eval", "--precision", choices.Precision), ("train", "--balance", choices.Balance),
             ("train", "--norm", choices.Norm), ("train", "--aug", choices.Aug), ("train", "--optimizer", choices.Optimizer),
             ("report", "--format", choices.ReportFormat), ("report", "--layout", choices.ReportLayout), ("synth", "--layout", choices.Layout),
             ("preprocess", "--format", choices.InputFormat), ("train", "--cuda-graphs", choices.CudaGraphs)]
    for command, option, enum in fixed:
        shown = " ".join(runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"}).stdout.split()).replace(" | ", "|")
        listed = "|".join(e.value for e in enum)
        assert listed in shown, (command, option, listed)
        positional = [] if command == "train" else ["x"]
        refused = runner.invoke(app, [command, *positional, option, "no-such-value"])
        assert refused.exit_code == 2, (command, option, refused.output)
        assert refused.stderr == (f"error: 'no-such-value' is not a valid {option} - choose one of "
                                  f"{', '.join(e.value for e in enum)} - see aubench {command} --help\n")
    assert runner.invoke(app, ["train", "--aug", "d", "--help"]).exit_code == 0  # case-insensitive, as before
    assert choices.complete_device("cu")[:2] == ["cuda", "cuda:0"] and choices.complete_device("") [0] == "auto"


def test_completion_is_on():
    result = runner.invoke(app, ["--help"])
    assert "--install-completion" in result.stdout
