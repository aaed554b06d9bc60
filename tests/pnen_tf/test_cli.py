"""`pnen-tf`: every registered subcommand is reachable and documents itself."""

import pytest

from pnen_tf import cli


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_subcommand_prints_its_help(command, capsys):
    assert cli.main([command, "--help"]) == 0
    assert "usage:" in capsys.readouterr().out


def test_unknown_command_is_refused(capsys):
    assert cli.main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err
