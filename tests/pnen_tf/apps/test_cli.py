"""`pnen-tf`: every registered subcommand is reachable and documents itself."""

import configparser
import importlib
import os
import subprocess
import sys

import pytest

from pnen_tf.apps import cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_subcommand_prints_its_help(command, capsys):
    assert cli.main([command, "--help"]) == 0
    assert "usage:" in capsys.readouterr().out


def test_unknown_command_is_refused(capsys):
    assert cli.main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


def test_the_console_script_is_this_main():
    setup = configparser.ConfigParser()
    setup.read(os.path.join(REPO, "setup.cfg"))
    name, target = setup["options.entry_points"]["console_scripts"].strip().split(" = ")
    module, function = target.split(":")
    assert name == "pnen-tf"
    assert getattr(importlib.import_module(module), function) is cli.main


def test_python_m_restore_runs_the_restore_command():
    result = subprocess.run([sys.executable, "-m", "pnen_tf.apps.restore", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "usage: pnen-tf restore" in result.stdout
