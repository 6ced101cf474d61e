"""The package's layout rules (ARCHITECTURE.md), checked on its source: imports run
one way through the layers, without cycles, without another module's underscore
names and without lazy imports of tritonep modules; no module over 500 lines."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# layer of each module: a module may import only from its own layer or those below
LAYERS = [
    ("shared maths", ("options", "topology", "reference", "rules", "version", "kernels")),
    ("engines", ("engine",)),
    ("nn modules", ("layers", "module", "net", "conv", "sequential")),
    ("training, analysis, reproduction", ("baselines", "data", "presets", "build", "checkpoint", "runinfo", "train",
                                          "collapse", "distributed", "paper", "reproduce", "analysis",
                                          "compile_check")),
    ("package", ("",)),  # tritonep/__init__.py: the public names
    ("command line", ("cli", "__main__")),
]


def modules() -> dict[str, Path]:
    """'tritonep.x.y' -> file, for tritonep/ and kernels/ (installed as tritonep.kernels)."""
    found = {}
    for folder, package in ((REPO / "tritonep", "tritonep"), (REPO / "kernels", "tritonep.kernels")):
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package] + parts)] = path
    return found


MODULES = modules()


def layer(name: str) -> int:
    first = name.split(".")[1] if name.count(".") else ""
    return next(i for i, (_, members) in enumerate(LAYERS) if first in members)


def imports(name: str):
    """(imported tritonep module, names taken, at module top level) for each import in ``name``."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        top = node in tree.body
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:
                    yield sub, [], top
                elif target in MODULES:
                    yield target, [alias.name], top
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield alias.name, [], top


def edges(name: str) -> set[str]:
    # a package importing its own submodules (re-exports) is not a dependency between layers
    return {t for t, _, _ in imports(name) if t != name and not t.startswith(name + ".")}


def test_every_module_has_a_layer():
    for name in MODULES:
        layer(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_run_one_way(name):
    for target, names, top in imports(name):
        if target == name or target.startswith(name + "."):
            continue
        assert layer(target) <= layer(name), (
            f"{name} ({LAYERS[layer(name)][0]}) imports {target} ({LAYERS[layer(target)][0]}): upward")
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{name} takes {private} from {target}"
        assert top, f"{name} imports {target} lazily (only optional dependencies may be imported lazily)"


def test_no_import_cycles():
    graph = {name: edges(name) for name in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name, path):
        state[name] = 1
        for nxt in sorted(graph[name]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_modules_are_small():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert max(sizes.values()) <= 500, {n: s for n, s in sizes.items() if s > 500}
