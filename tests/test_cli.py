"""Tests of the command line (tffd_viz.cli, python -m tffd_viz, the tffd-viz console script)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tffd_viz.cli import COMMANDS, build_parser, config_overrides, main
from tffd_viz.train import RECIPES, resume_path

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def test_python_m_train_help_lists_the_options() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tffd_viz", "train", "--help"],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    for option in (
        "--recipe",
        "--arch",
        "--method",
        "--lambda-intra",
        "--lambda-inter",
        "--stages",
        "--pairs",
        "--warmup",
        "--schedule",
        "--milestones",
        "--precision",
        "--resume",
        "--out",
        "--probe-size",
        "--sync-saliency",
        "--threads",
        "--device",
    ):
        assert option in proc.stdout, option
    assert "--limit-train" not in proc.stdout  # hidden test option


def test_sweep_help_and_top_level_help() -> None:
    parser = build_parser()
    assert set(COMMANDS) >= {"train", "sweep"}
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["sweep", "--help"])
    assert exc.value.code == 0
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([])
    assert exc.value.code == 2


@pytest.mark.skipif(
    shutil.which("tffd-viz", path=str(Path(sys.executable).parent)) is None,
    reason="console script not installed in this environment",
)
def test_console_script_help() -> None:
    exe = shutil.which("tffd-viz", path=str(Path(sys.executable).parent))
    proc = subprocess.run([exe, "train", "--help"], capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.returncode == 0 and "--recipe" in proc.stdout


def test_only_explicit_options_override_the_recipe() -> None:
    args = build_parser().parse_args(
        [
            "train",
            "--recipe",
            "digits",
            "--lr",
            "0.05",
            "--stages",
            "layer3",
            "--pairs",
            "0-2,1-2",
            "--no-flip",
            "--milestones",
            "3,6",
        ]
    )
    over = config_overrides(args)
    assert over == {
        "lr": 0.05,
        "stages": ["layer3"],
        "pairs": [(0, 2), (1, 2)],
        "flip": False,
        "milestones": [3, 6],
    }
    assert config_overrides(build_parser().parse_args(["train"])) == {}


def test_train_command_writes_checkpoint_card_and_resume_state(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.safetensors"
    code = main(
        [
            "train",
            "--recipe",
            "digits",
            "--epochs",
            "1",
            "--limit-train",
            "64",
            "--probe-size",
            "16",
            "--threads",
            "1",
            "--lr",
            "0.05",
            "--stages",
            "layer3",
            "--pairs",
            "0-2",
            "--method",
            "tffd",
            "--seed",
            "3",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["hparams"]["lr"] == 0.05 and card["hparams"]["epochs"] == 1
    assert card["hparams"]["batch_size"] == RECIPES["digits"]["batch_size"]
    assert card["seed"] == 3 and card["recipe"] == "digits" and card["pairs"] == [["layer1", "layer3"]]
    assert list(card["history"][0]["intra"]) == ["layer3"]
    assert out.is_file() and resume_path(out).is_file()
    assert f"out={out}" in capsys.readouterr().out


def test_bad_input_exits_2_with_a_message(capsys) -> None:
    assert main(["train", "--recipe", "digits", "--arch", "resnet7", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unknown architecture 'resnet7'" in err and err.startswith("tffd-viz train: error:")


def test_registry_dispatches_added_commands(capsys) -> None:
    calls = []

    def add(p):
        p.add_argument("--n", type=int, default=1)

    def run(args):
        calls.append(args.n)
        return 5

    COMMANDS["echo-test"] = (add, run)
    try:
        assert main(["echo-test", "--n", "4"]) == 5
    finally:
        del COMMANDS["echo-test"]
    assert calls == [4]


def test_checkpoints_command_prints_markdown_table(tmp_path, capsys):
    """`tffd-viz checkpoints FOLDER` lists every checkpoint's card as one markdown row."""
    from tffd_viz.checkpoints import empty_card, save_checkpoint
    from tffd_viz.cli import main
    from tffd_viz.models import create_model

    for seed, acc in ((0, 91.5), (1, 92.25)):
        card = empty_card()
        card.update(
            arch="resnet8",
            num_classes=10,
            in_chans=1,
            dataset="digits",
            method="tffd",
            seed=seed,
            final_acc=acc,
            lambda_intra=0.1,
            lambda_inter=0.1,
        )
        save_checkpoint(create_model("resnet8", 10, 1), card, tmp_path / f"m_s{seed}.safetensors")
    assert main(["checkpoints", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| file | arch | dataset | method |")
    assert len(lines) == 4
    assert (
        lines[2].startswith("| m_s0.safetensors | resnet8 | digits | tffd | 0.1 | 0.1 |")
        and "| 91.5 |" in lines[2]
    )
    assert "| 92.25 |" in lines[3]


# the three commands of issue 21, word for word: each ends at once with exit 2, a message and no file
ISSUE_21 = {
    "negative lambda": (
        "train --recipe digits --method tffd --lambda-intra -1 --epochs 1 --out runs/x",
        "tffd-viz train: error: option lambda_intra = -1.0 is not allowed: a finite number >= 0",
    ),
    "nan lambda": (
        "train --recipe digits --method tffd --lambda-intra nan --epochs 1 --out runs/y",
        "tffd-viz train: error: option lambda_intra = nan is not allowed: a finite number >= 0",
    ),
    "sweep grid": (
        "sweep --recipe digits --epochs 1 --lambda-intra 0,-5 --out runs/sw",
        "tffd-viz sweep: error: sweep row 3 of 4 (seed=0, layers=all, lambda_intra=-5.0, lambda_inter=0.0): "
        "option lambda_intra = -5.0 is not allowed: a finite number >= 0",
    ),
}


@pytest.mark.parametrize("case", list(ISSUE_21))
def test_bad_hyper_parameters_exit_2_before_any_work(case, tmp_path, monkeypatch, capsys) -> None:
    command, message = ISSUE_21[case]
    monkeypatch.chdir(tmp_path)
    assert main(command.split()) == 2
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert list(tmp_path.iterdir()) == []  # nothing written: no runs/, no checkpoint, no table


def test_a_diverging_train_command_exits_2_naming_epoch_step_and_term(tmp_path, capsys) -> None:
    out = tmp_path / "div"
    code = main(
        [
            "train",
            "--recipe",
            "digits",
            "--lambda-intra",
            "1e6",
            "--epochs",
            "3",
            "--limit-train",
            "256",
            "--probe-size",
            "16",
            "--threads",
            "1",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("tffd-viz train: error: training diverged at epoch 2 step "), err
    assert (
        "Usual remedy: lower lambda_intra" in err
        and f"{str(resume_path(out))!r} (after epoch 1) is kept" in err
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["div.resume.pt"]  # no checkpoint, no card
