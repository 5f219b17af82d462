"""benchmarks/gpu_check.py --device cpu --quick: its CPU parts run and report what the GPU run reports (issue 21)."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def gpu_check_main(argv):
    """``python benchmarks/gpu_check.py ARGV`` in this process: its main(argv) and exit status. With --quick every
    part already runs in the script's own process, so this saves only an interpreter and the torch / transformers /
    TRL imports (~7 s of CPU); the script's own ``__main__`` is just ``sys.exit(main())``."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main(argv)


def test_gpu_check_cpu_quick_table(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "rows.json"
    rc = gpu_check_main(["--device", "cpu", "--quick", "--model", tiny_model_dir, "--json", str(out)])
    stdout, stderr = capsys.readouterr()
    assert rc == 0, (stdout + stderr)[-3000:]
    assert "| part | check | figure | status |" in stdout  # the table is printed
    rows = json.loads(out.read_text())["rows"]
    by = lambda part: [x for x in rows if x["part"] == part]  # noqa: E731

    # precision: every objective x dtype ran, and its errors against float64 are small (fp32 < 1e-5, bf16 < 2e-2).
    prec = [x for x in by("precision") if "fused head vs float64" in x["check"]]
    assert len(prec) == 6 and all(x["status"].startswith("ok") for x in prec), prec
    for x in prec:
        errs = [float(t.split()[-1]) for t in x["figure"].split(", ")]
        assert len(errs) == 3 and max(errs) < (1e-5 if "fp32" in x["check"] else 2e-2), x
    assert {x["check"].split()[0] for x in prec} == {"sft", "sft-go", "target-sft"}

    # memory needs the CUDA allocator: a row says so, with no figure.
    mem = by("memory")
    assert len(mem) == 1 and mem[0]["status"].startswith("not run") and "CUDA" in mem[0]["status"]
    assert mem[0]["figure"] == "–"

    # throughput: sftgo's contenders trained (untimed in --quick: no made-up figure); TRL ran or says why not;
    # TRL + Liger cannot run on CPU.
    tp = {x["check"].split(":")[0]: x for x in by("throughput")}
    assert tp["sftgo train --objective sft"]["status"] == "ran"
    assert tp["sftgo train --objective sft-go (--group_stats exact)"]["status"] == "ran"
    trl = next(v for k, v in tp.items() if k.startswith("TRL SFTTrainer (") or k == "TRL SFTTrainer")
    import importlib.util

    assert trl["status"] == "ran" if importlib.util.find_spec("trl") else "trl not installed" in trl["status"]
    assert tp["TRL SFTTrainer + use_liger_kernel"]["status"].startswith("not run")
    assert not any("tok/s" in x["figure"] for x in by("throughput"))

    # packing: packed and padding-free equal padded (sdpa, fp32); flash-attention says it needs CUDA.
    pack = by("packing")
    eq = [x for x in pack if "vs padded" in x["check"] and x["check"].startswith("sdpa")]
    assert len(eq) == 2 and all(x["status"].startswith("ok") for x in eq), pack
    assert any("flash" in x["check"] and "needs CUDA" in x["status"] for x in pack)

    # accumulation: exact, lagged and DRO give the same losses as micro 4 when split as micro 2 x accumulation 2.
    acc = by("accumulation")
    assert [x["check"].split(":")[0] for x in acc] == ["sft-go exact", "sft-go lagged", "sft-go-dro"]
    assert all(x["status"].startswith("ok") for x in acc), acc
    # generate: sftgo's greedy answers equal model.generate's on the same prompts.
    gen = by("generate")
    assert gen[0]["status"] == "ok" and gen[0]["figure"] == "8 of 8", gen
    assert not any(x["status"].startswith("FAIL") for x in rows)
