"""The package's shape: pure modules stay pure, dependencies point one way, no import circle, and
the library runs without its command line's dependencies."""

from __future__ import annotations

import ast
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "clusterinval"
STDLIB = set(sys.stdlib_module_names)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path) -> set[str]:
    """Modules ``path`` imports when it is imported (not in functions, not for type checking)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(node.orelse)
                if isinstance(node, ast.Try):
                    for handler in node.handlers:
                        visit(handler.body)
                    visit(node.finalbody)

    visit(tree.body)
    return found


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _internal(imports: set[str]) -> set[str]:
    return {m for m in imports if m in MODULES}


# Public modules every layer may use: each imports nothing else of the package when it runs.
LEAVES = ("clusterinval.errors", "clusterinval.options", "clusterinval.result",
          "clusterinval.tracing")


def _allowed(name: str, prefixes: tuple[str, ...]) -> bool:
    return name == "clusterinval" or name.startswith(prefixes + LEAVES)


class TestPureCore:
    @pytest.mark.parametrize("module", sorted(m for m in MODULES
                                              if m.startswith("clusterinval._core")))
    def test_imports_only_the_standard_library_and_core(self, module: str) -> None:
        for name in _runtime_imports(MODULES[module]):
            top = name.split(".")[0]
            assert top in STDLIB or _allowed(name, ("clusterinval._core",)), (
                f"{module} imports {name}")

    @pytest.mark.parametrize("leaf", LEAVES)
    def test_leaves_import_nothing_of_the_package(self, leaf: str) -> None:
        deps = _internal(_runtime_imports(MODULES[leaf])) - {"clusterinval"}
        assert deps <= {"clusterinval.errors"}, f"{leaf} imports {deps}"


class TestDirection:
    """``_core`` <- ``_io`` <- ``_engine`` <- the public modules <- cli, contrib, testing."""

    LAYERS = ("clusterinval._core", "clusterinval._io", "clusterinval._engine")

    @pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith(
        ("clusterinval._core", "clusterinval._io", "clusterinval._engine"))))
    def test_lower_layers_never_import_higher_ones(self, module: str) -> None:
        rank = next(i for i, layer in enumerate(self.LAYERS) if module.startswith(layer))
        for name in _internal(_runtime_imports(MODULES[module])):
            higher = [layer for layer in self.LAYERS[rank + 1:] if name.startswith(layer)]
            assert not higher, f"{module} imports {name}"
            assert _allowed(name, self.LAYERS), f"{module} imports the public module {name}"

    def test_no_import_circle(self) -> None:
        graph = {m: _internal(_runtime_imports(p)) - {m} for m, p in MODULES.items()}
        # A package's __init__ imported by its own submodules is how Python works, not a circle.
        for m, deps in graph.items():
            graph[m] = {d for d in deps if not m.startswith(d + ".")}
        state: dict[str, int] = {}
        path: list[str] = []

        def visit(m: str) -> None:
            state[m] = 1
            path.append(m)
            for d in sorted(graph[m]):
                if state.get(d) == 1:
                    cycle = [*path[path.index(d):], d]
                    raise AssertionError("import circle: " + " -> ".join(cycle))
                if d not in state:
                    visit(d)
            path.pop()
            state[m] = 2

        for m in sorted(graph):
            if m not in state:
                visit(m)


def _run_without(packages: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter in which ``packages`` cannot be imported."""
    block = "".join(f"sys.modules[{p!r}] = None\n" for p in packages)
    return subprocess.run(
        [sys.executable, "-c", f"import sys\n{block}{code}"],
        capture_output=True, text=True, timeout=60, check=False,
        cwd=sysconfig.get_path("purelib"),
    )


class TestLeanRuntime:
    def test_the_library_needs_no_cli_dependency(self) -> None:
        done = _run_without(["typer", "rich", "click"], (
            "import clusterinval\n"
            "inv = clusterinval.ClusterInvalidator.from_url('redis://127.0.0.1:1')\n"
            "clusterinval.SyncClusterInvalidator\n"
            "import clusterinval.compat, clusterinval.events, clusterinval.metrics\n"
            "print('ok')\n"))
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "ok"

    def test_the_command_line_says_how_to_get_it(self) -> None:
        done = _run_without(["typer"], "from clusterinval.cli import main\nmain()\n")
        assert done.returncode == 2
        assert "pip install 'clusterinval[cli]'" in done.stderr
        assert "Traceback" not in done.stderr
