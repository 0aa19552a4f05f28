import pytest

from imagejobs_tools.cli import build_parser


def test_every_command_group_registers_and_help_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit) as excinfo:
        parser.parse_args(["--help"])
    assert excinfo.value.code == 0
    assert "sim" in capsys.readouterr().out
