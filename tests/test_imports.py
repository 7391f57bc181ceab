"""The package's import rules (docs/architecture.md): no import cycle among ebv_ms modules, and no
module imports one from a layer above it. Read from the source (every import, function-level
ones included), so it costs no framework import and fails on the line that breaks a rule."""
import ast
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "ebv_ms"

# Lowest first. A module may import its own layer and the ones below. ``ebv_ms`` itself (the
# package's __init__) holds only __version__ and imports nothing (test below), so it is layer 0.
LAYERS = [
    ("", "errors", "atomic", "progress", "device", "ckpt_file"),  # __version__; errors; atomic writes;
    # progress; set_device; reading a .ckpt safely
    ("ebv",),                        # the EBV set: identity, metrics, files (numpy only)
    ("config",),                     # YAML -> one validated config (reads ebv's Welch bound)
    ("generation",),                 # making sets
    ("data",),                       # datasets -> batches
    ("models",),                     # backbones, heads, classifier
    ("loss", "optim", "scheduler"),
    ("engine",),                     # building a run, the loop, checkpoints, distributed set-up
    ("deploy",),                     # checkpoint -> network for inference, export, predict
    ("tools",),                      # the python -m entry points
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}

# Violations allowed for now, each named: (importer, imported) -> why. None are left (issue 21
# fixed the last three); the last test warns when an entry's import has gone.
ALLOWED = {}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in PKG.rglob("*.py")}


def _type_checking_only(node, parents):
    return any(isinstance(p, ast.If) and "TYPE_CHECKING" in ast.unparse(p.test) for p in parents)


def _imports(name: str, path: Path):
    """(imported module, line) for every ebv_ms import in the file, at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        chain, p = [], node
        while p in parents:
            p = parents[p]
            chain.append(p)
        if _type_checking_only(node, chain):
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for t in targets:
            while t not in MODULES and "." in t:
                t = t.rpartition(".")[0]
            if t in MODULES and t != name:
                yield t, node.lineno


GRAPH = {m: sorted(set(_imports(m, p))) for m, p in MODULES.items()}


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    assert top in LAYER, f"{module}: add its folder to LAYERS in tests/test_imports.py"
    return LAYER[top]


def test_the_package_root_imports_nothing_of_its_own():
    """``import ebv_ms`` stays light (it once pulled in models/, mindcv and MindSpore), which is
    what lets every layer read ``ebv_ms.__version__``."""
    assert GRAPH["ebv_ms"] == []


def test_every_module_has_a_layer():
    for m in MODULES:
        _layer(m)


def test_no_module_imports_from_a_layer_above_it():
    bad = []
    for m, deps in GRAPH.items():
        for d, line in deps:
            if _layer(d) > _layer(m) and (m, d) not in ALLOWED:
                bad.append(f"{MODULES[m].relative_to(ROOT)}:{line} imports {d} "
                           f"(layer {LAYERS[_layer(d)]} above {LAYERS[_layer(m)]})")
    assert not bad, "imports that point up:\n" + "\n".join(bad)


def test_no_import_cycle():
    edges = {m: {d for d, _ in deps if (m, d) not in ALLOWED} for m, deps in GRAPH.items()}
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = "open"
        stack.append(m)
        for d in sorted(edges[m]):
            if state.get(d) == "open":
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_allow_list_names_only_imports_that_exist():
    present = {(m, d) for m, deps in GRAPH.items() for d, _ in deps}
    gone = sorted(set(ALLOWED) - present)
    if gone:  # a warning, not a failure: the fix is good news; the list just needs trimming
        warnings.warn(f"tests/test_imports.py: fixed, remove from ALLOWED: {gone}")
    assert len(MODULES) > 50 and sum(map(len, GRAPH.values())) > 100  # the scan saw the package
