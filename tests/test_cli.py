"""The ``prefopt`` command: ``python -m prefopt``, ``train --dry-run``, exit statuses and error messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prefopt.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]


def test_python_m_prefopt_help():
    result = subprocess.run(
        [sys.executable, "-m", "prefopt", "--help"],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: prefopt")
    for name in COMMANDS:
        assert f"    {name.rsplit('.', 1)[1]} " in result.stdout


def test_train_help_names_the_recipe_docs(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--dry-run" in out and "docs/recipes.md" in out and "key=value" in out


def test_dry_run_prints_the_resolved_recipe(capsys):
    assert (
        main(
            ["train", str(REPO / "recipes/cpu/dpo.yaml"), "--dry-run", "train.max_steps=3", "model.lora=null"]
        )
        == 0
    )
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["train"]["max_steps"] == 3 and resolved["model"]["lora"] is None
    assert resolved["loss"]["reference"] == "precomputed" and resolved["loss"]["beta"] == 0.1
    assert resolved["optim"]["optimizer"] == "adamw_torch"  # defaults filled in


def test_bad_recipe_exits_2_with_one_paragraph(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model": {"name_or_path": "m"},
                "data": {"train": "p.jsonl"},
                "loss": {"name": "simpo", "reference": "live"},
                "train": {"output_dir": "o", "max_stpes": 3},
            }
        )
    )
    assert main(["train", str(recipe)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert err.startswith(f"prefopt train: error: {recipe}: invalid recipe:")
    assert "Traceback" not in err and "\n\n" not in err
    assert "loss 'simpo' is reference-free, so loss.reference does nothing" in err
    assert "train.max_stpes: unknown key; valid keys here: epochs, max_steps, batch_size" in err


def test_bad_override_and_missing_file_exit_2(tmp_path, capsys):
    assert main(["train", str(REPO / "recipes/cpu/dpo.yaml"), "train.max_steps"]) == 2
    assert "override 'train.max_steps' is not of the form section.key=value" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"prefopt train: error: {tmp_path / 'nope.yaml'}: no such recipe file"
    )


def test_debug_shows_the_traceback(tmp_path):
    from prefopt.config import RecipeError

    with pytest.raises(RecipeError):
        main(["--debug", "train", str(tmp_path / "nope.yaml")])


def test_missing_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2 and "COMMAND" in capsys.readouterr().err


def test_unknown_option_after_overrides_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", str(REPO / "recipes/cpu/dpo.yaml"), "--dry-run", "train.max_steps=3", "--bogus"])
    assert info.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
