"""Places in src/sftgo that compare a string literal equal to an objective, scorer, token weighting or executor name
(==, !=, in, not in), for the issue-27 counts; tests/unit/test_scorer_declarations.py and test_sweep_parts.py keep
scorers and executors at zero. Usage: python dev/count_name_compares.py src/sftgo"""
import ast, sys
from pathlib import Path
src = Path(sys.argv[1])
OBJ = {"sft", "sft-go", "rho1", "dft", "infosft", "target-sft", "sft-go-dro", "eaft", "asft"}
SCO = {"tfidf", "frequency", "random", "llmlingua2", "reference"}
EXE = {"local", "slurm"}
TW = {"none", "dft", "infosft", "eaft"}
hits = []
for f in sorted(src.rglob("*.py")):
    tree = ast.parse(f.read_text())
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        parts = [node.left, *node.comparators]
        lits = set()
        for p in parts:
            if isinstance(p, ast.Constant) and isinstance(p.value, str):
                lits.add(p.value)
            elif isinstance(p, (ast.Tuple, ast.List, ast.Set)):
                lits |= {e.value for e in p.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        text = ast.unparse(node)
        kind = None
        if (lits & (SCO - {"reference"}) and "token_weight" not in text and "sampling" not in text) or (lits & SCO and ("scorer" in text or "name" in text)): kind = "scorer"
        elif lits & EXE and "executor" in text: kind = "executor"
        elif lits & OBJ and "objective" in text: kind = "objective"
        elif lits & TW and "token_weight" in text: kind = "token_weight"
        if kind:
            hits.append((kind, f.relative_to(src), node.lineno, text[:100]))
for h in hits:
    print(*h, sep="  ")
from collections import Counter
print(Counter(h[0] for h in hits))
