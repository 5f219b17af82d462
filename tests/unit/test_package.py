import sftgo


def test_public_api_resolves():
    for name in sftgo.__all__:
        assert getattr(sftgo, name) is not None, name


def test_cli_help_lists_commands(capsys):
    from sftgo.cli import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("train", "score", "report"):
        assert cmd in out
    assert main(["frobnicate"]) == 2
