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


def test_train_help_renders(capsys):
    import pytest

    from sftgo.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--objective" in out and "--per_device_train_batch_size" in out
