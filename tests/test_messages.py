"""The README's promise for every option: a bad value is one line on stderr naming the problem and the fix, exit
2, no traceback (table-driven); --help shows plain placeholders, never Python types; Ctrl-C during shutdown is
one line too."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from aubench_cli.cli import COMMANDS, app

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent

# (arguments, what the line must say); a path that does not exist is never reached: the value is refused first
BAD_VALUES = [
    (["train", "--lr", "-1"], "train.lr must be greater than 0, got -1 - e.g. --lr 0.005"),
    (["train", "--lr", "0"], "train.lr must be greater than 0, got 0"),
    (["train", "--set", "train.lr=nan"], "train.lr must be greater than 0, got nan"),
    (["train", "--epochs", "0"], "train.epochs must be at least 1, got 0 - e.g. --epochs 10"),
    (["train", "--batches-per-epoch", "-3"], "e.g. --batches-per-epoch 300"),
    (["train", "--subjects-frac", "0"], "data.subjects_frac must be in (0, 1], got 0 - e.g. --subjects-frac"),
    (["train", "--frames-frac", "1.5"], "e.g. --frames-frac 0.2"),
    (["train", "--val-subjects-frac", "1"], "data.val_subjects_frac must be in (0, 1)"),
    (["train", "--seed", "-1"], "train.seed must be at least 0"),
    (["train", "--set", "augment.flip_p=2"], "augment.flip_p must be between 0 and 1, got 2 - e.g. --set augment.flip_p=0.5"),
    (["train", "--folds", "3", "--fold", "3"], "data.fold must be below data.folds (3), got 3"),
    (["train", "--folds", "1"], "'--folds'"),
    (["train", "--epochs", "many"], "'--epochs'"),
    (["train", "--aug", "E"], "'E' is not a valid --aug - choose one of A, B, C, D"),
    (["train", "--norm", "zz"], "'zz' is not a valid --norm - choose one of raw, sample-center, sample-norm, "
                                "feature-center, feature-norm"),
    (["train", "--balance", "over"], "choose one of oversample, undersample, random, cost"),
    (["train", "--overwrite", "true"], "a flag takes no value"),
    (["train", "--no-such-option"], "--no-such-option"),
    (["trian"], "'trian'"),
    (["profile", "baseline", "--batch", "0"], "profile.batch must be at least 1, got 0 - e.g. --batch 16"),
    (["profile", "baseline", "--input", "-5"], "profile.input_size must be at least 1"),
    (["predict", "no-such-run", "x.mp4", "--batch", "0"], "--batch must be at least 1"),
    (["predict", "no-such-run", "x.mp4", "--workers", "-2"], "--workers must be 0 or more"),
    (["predict", "no-such-run", "x.mp4", "--checkpoint", "middle"], "choose one of best, last"),
    (["preprocess", "no-such-folder", "--workers", "-1"], "--workers must be 0 or more"),
    (["study", "table2-balancing", "--dry-run", "--set", "train.lr=-1"], "train.lr must be greater than 0"),
    (["study", "table2-balancing", "--dry-run", "--seeds", "0"], "'--seeds'"),
    (["report", "no-such-dir", "--format", "pdf"], "choose one of md, csv, html, tex"),
]


@pytest.mark.parametrize("args, says", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_a_bad_value_is_one_line_naming_the_fix_and_exit_2(args, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    err = result.stderr
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err  # one line
    assert says in err, err
    assert "Traceback" not in result.output and "╭" not in result.output  # no traceback, no boxed panel
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_synth_refuses_a_negative_seed_before_writing(tmp_path):
    result = runner.invoke(app, ["synth", str(tmp_path / "d"), "--seed", "-1"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "--seed must be 0 or more, got -1" in result.stderr and not (tmp_path / "d").exists()


def test_the_console_script_gives_the_same_line():
    out = subprocess.run([sys.executable, "-m", "aubench_cli", "train", "--aug", "E"], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "COLUMNS": "80"})
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == "error: 'E' is not a valid --aug - choose one of A, B, C, D - see aubench train --help\n"


def _help(command: str) -> str:
    return runner.invoke(app, [command, "--help"], env={"COLUMNS": "80"}).stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_placeholders_not_python_types(command):
    text = _help(command)
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and not re.search(r"\b[a-z_]+\b(?:\.\.\.)?\s*$", usage.split("[OPTIONS]")[-1].strip() or "X")
    for python_type in ("<bool>", "<str>", "<int", "<float", "<list", "<path>", "<Path", "range>"):
        assert python_type not in text, (command, python_type)


def test_choice_lists_wrap_between_words_at_80_columns():
    from aubench_cli.commands import choices

    for command, enum in (("train", choices.Balance), ("train", choices.Norm), ("eval", choices.Split),
                          ("preprocess", choices.InputFormat), ("predict", choices.Checkpoint)):
        tokens = set(re.split(r"[\s│|]+", _help(command)))
        for e in enum:
            assert e.value in tokens, (command, e.value)  # whole, not 'undersampl' + 'e'


def test_flags_and_repeatable_options_read_as_such():
    text = " ".join(_help("train").split())
    assert "--overwrite Replace" in text  # a flag: no placeholder between the option and its help
    assert "--set KEY=VALUE" in text and "--epochs INTEGER" in text and "--lr NUMBER" in text
    assert "best | last" in " ".join(_help("predict").split())
    assert "auto | binary | intensity" in " ".join(_help("preprocess").split())


def test_ctrl_c_during_shutdown_is_one_line(tmp_path):
    """A Ctrl-C that lands while the interpreter waits for threads at exit (Rich's refresh, a writer, a pool's
    feeder) once printed "Exception ignored in: <module 'threading'>" and a traceback."""
    script = tmp_path / "late.py"
    script.write_text(textwrap.dedent("""
        import os, signal, threading, time
        from aubench_cli.cli import _exit_quietly_on_interrupt
        _exit_quietly_on_interrupt()
        threading.Thread(target=time.sleep, args=(3,)).start()  # the interpreter waits for it at exit
        threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()  # Ctrl-C meanwhile
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert out.returncode == 130 and out.stderr == "interrupted\n", out.stderr


def test_typer_still_builds_every_command():
    command = typer.main.get_command(app)
    assert sorted(command.commands) == sorted(COMMANDS)


def test_synth_refuses_a_non_empty_folder_before_drawing_a_bar(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["synth", str(tmp_path / "d")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr  # no bar, no blank line
    assert "is not empty" in result.stderr and "--overwrite" in result.stderr


def test_study_dry_run_says_which_runs_download_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["study", "table1-architectures", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    import json

    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["resnet50"]["downloads_weights"] and not rows["baseline"]["downloads_weights"]
    (tmp_path / "w.pt").write_bytes(b"")
    result = runner.invoke(app, ["study", "table1-architectures", "--dry-run", "--weights", "resnet50=w.pt"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    found = re.search(r"(\d+) runs \(([^)]*)\) download pretrained weights[^)]*--weights RUN=FILE", text)
    assert found and found.group(1) == "5" and "mobilenetv2" in found.group(2) and "resnet50" not in found.group(2)


def test_a_study_run_that_cannot_download_is_told_the_study_syntax(tmp_path, monkeypatch):
    from aubench_cli.errors import AubenchError
    from aubench_cli.studies import study as studymod

    def offline(*args, **kwargs):
        raise AubenchError("could not fetch pretrained weights for resnet50 from torchvision (URLError: no network)",
                           "offline? download IMAGENET1K_V1 on a connected machine, save its state_dict and pass it "
                           "with --weights FILE")

    monkeypatch.setattr(studymod, "_do_run", offline)
    monkeypatch.setattr(studymod, "adopt_unseeded", lambda *a, **k: None)
    study = studymod.load_study("table1-architectures")
    unit = next(u for u in studymod.expand_units(study.runs, None, None) if u.run.name == "resnet50")
    cfg = studymod.run_config(study, unit.run)
    outcome = studymod.run_unit(unit, cfg, tmp_path)
    assert outcome["state"] == "failed"
    assert "pass it with --weights resnet50=FILE" in outcome["error"] and "--weights FILE" not in outcome["error"]


def test_a_study_rewrites_train_weights_advice_but_not_another_commands():
    from aubench_cli.studies.study import study_hint

    hint = ("fix the file, or pass --allow-partial-weights; `aubench models vgg16 --weights FILE "
            "--allow-partial-weights --json` lists all; or pass --weights FILE")
    said = study_hint(hint, "vgg16-ft")
    assert "`aubench models vgg16 --weights FILE --allow-partial-weights --json`" in said  # that command's syntax
    assert said.endswith("or pass --weights vgg16-ft=FILE")
