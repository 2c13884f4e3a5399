"""The package's shape: imports run one way through the layers the README describes, with no cycle and no
function-local import of a panda module (such imports only ever existed to dodge a cycle)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "panda"

#: Bottom to top; a module may import modules of its own layer or of a lower one (never a higher one).
LAYERS = [
    ("foundations", {"errors", "version", "registry", "fileio", "maps", "metrics", "progress"}),
    ("generators", {"generators", "stylegan2", "stylegan3", "biggan", "genforce", "checkpoints", "latents"}),
    ("features", {"features"}),
    ("factorisation", {"factorisation"}),
    ("model", {"model"}),
    ("applications", {"editing", "refinement", "removal", "localisation", "landmarks", "baselines", "naming", "methods",
                      "evaluation", "setup_cost", "fitting", "projection", "regions", "transfer",
                      "selection", "retrieval", "comparison"}),
    ("reports", {"drawing", "figures", "tables", "pages"}),
    ("front ends", {"cli", "serve", "demo"}),
]
LAYER_OF = {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}


def _modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def _panda_imports(node: ast.AST) -> list[tuple[str, ast.AST]]:
    """(imported panda module, the import node) for every relative or absolute panda import under ``node``."""
    out = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.ImportFrom):
            if sub.level == 1 or (sub.module or "").split(".")[0] == "panda":
                base = sub.module.split(".")[-1] if sub.module and sub.module != "panda" else None
                if base is not None:
                    out.append((base, sub))
                else:  # from . import a, b
                    out += [(alias.name, sub) for alias in sub.names]
        elif isinstance(sub, ast.Import):
            out += [(alias.name.split(".")[1], sub) for alias in sub.names if alias.name.startswith("panda.")]
    return out


def test_every_module_has_a_layer():
    missing = set(_modules()) - set(LAYER_OF)
    assert not missing, f"place {sorted(missing)} in a layer (tests/test_architecture.py and the README)"


def test_imports_never_go_up_a_layer():
    upward = []
    for name, tree in _modules().items():
        for target, _ in _panda_imports(tree):
            assert target in LAYER_OF, f"{name} imports '{target}', which is not a panda module (or the package itself)"
            if LAYER_OF[target] > LAYER_OF[name]:
                upward.append(f"{name} ({LAYERS[LAYER_OF[name]][0]}) -> {target} ({LAYERS[LAYER_OF[target]][0]})")
    assert not upward, "upward imports: " + "; ".join(upward)


def test_no_import_cycle():
    graph = {name: {t for t, _ in _panda_imports(tree)} for name, tree in _modules().items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]) if nxt in path else nxt)
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_function_local_panda_import():
    local = []
    for name, tree in _modules().items():
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                local += [f"{name}.{fn.name} imports {target}" for target, _ in _panda_imports(fn)]
    assert not local, "; ".join(sorted(set(local)))


def test_the_checks_see_a_violation(tmp_path):
    """The helpers find imports of every form (so the tests above cannot pass by seeing nothing)."""
    tree = ast.parse("from . import a, b\nfrom .c import d\nimport panda.e\ndef f():\n    from .g import h\n")
    assert sorted(t for t, _ in _panda_imports(tree)) == ["a", "b", "c", "e", "g"]


def test_the_estimator_is_importable_from_the_package_without_loading_it_on_import():
    """``from panda import PandA, FeatureSource`` works; ``import panda`` alone (a plugin, the registries) does not
    load the model and features layers."""
    import subprocess
    import sys
    code = ("import sys, panda\nassert 'panda.model' not in sys.modules and 'panda.features' not in sys.modules\n"
            "from panda import FeatureSource, PandA\nimport panda.features, panda.model\n"
            "assert PandA is panda.model.PandA and FeatureSource is panda.features.FeatureSource\n"
            "assert {'PandA', 'FeatureSource'} <= set(dir(panda)) and set(panda.__all__) <= set(dir(panda))\n"
            "try:\n    panda.Pandas\nexcept AttributeError as e:\n    assert 'Pandas' in str(e)\nelse:\n    raise SystemExit(1)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
