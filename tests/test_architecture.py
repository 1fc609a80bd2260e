"""The state layer stays in small pieces: one store per domain, each module and class small enough to read."""

import ast
from pathlib import Path

import pipeline.state

STATE = Path(pipeline.state.__file__).parent


def _methods(cls: ast.ClassDef) -> list[str]:
    return [node.name for node in cls.body if isinstance(node, ast.FunctionDef)]


def test_every_module_of_the_pipeline_is_at_most_about_500_lines():
    package = STATE.parent
    sizes = {str(path.relative_to(package)): len(path.read_text().splitlines()) for path in package.rglob("*.py")}
    assert len(sizes) > 50  # the whole package was walked
    assert {name: size for name, size in sizes.items() if size > 510} == {}


def test_every_class_of_the_pipeline_defines_at_most_25_methods():
    counts = {}
    for path in STATE.parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                counts[f"{path.relative_to(STATE.parent)}:{node.name}"] = len(_methods(node))
    assert {name: n for name, n in counts.items() if n > 25} == {}
    assert counts["state/ledger.py:LedgerStore"] >= 10  # the split classes are found, not an empty walk


def test_storage_is_the_facade_of_the_domain_stores():
    from pipeline.state.bounce_store import BounceStore
    from pipeline.state.edition_store import EditionStore
    from pipeline.state.ledger import LedgerStore
    from pipeline.state.signup_store import SignupStore
    from pipeline.state.source_store import SourceStore
    from pipeline.state.storage import Storage
    from pipeline.state.subscriber_store import SubscriberStore

    stores = (SubscriberStore, SignupStore, EditionStore, LedgerStore, BounceStore, SourceStore)
    assert all(issubclass(Storage, store) for store in stores)
    assert Storage.claim is LedgerStore.claim and Storage.record_bounce_event is BounceStore.record_bounce_event


def _module_imports() -> dict[str, set[str]]:
    """Each pipeline module and the pipeline modules it imports at module level (not under TYPE_CHECKING)."""
    package = STATE.parent
    graph: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        parts = ["pipeline", *path.relative_to(package).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        here = name if is_package else name.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
                continue
            if not isinstance(node, ast.Import | ast.ImportFrom | ast.Try | ast.If):
                continue
            for found in ast.walk(node):
                if isinstance(found, ast.Import):
                    deps |= {alias.name for alias in found.names if alias.name.startswith("pipeline")}
                elif isinstance(found, ast.ImportFrom):
                    base = ".".join(here.split(".")[: len(here.split(".")) - found.level + 1]) if found.level else ""
                    full = ".".join(filter(None, [base, found.module or ""]))
                    for alias in found.names:
                        candidate = f"{full}.{alias.name}"
                        exists = (package.parent / candidate.replace(".", "/")).with_suffix(".py").exists()
                        deps.add(candidate if exists else full)
        graph[name] = {dep for dep in deps if dep != name and dep.startswith("pipeline")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for dep in graph[module] & graph.keys():
            if dep not in index:
                visit(dep)
                low[module] = min(low[module], low[dep])
            elif dep in stack:
                low[module] = min(low[module], index[dep])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def test_the_module_level_imports_of_the_pipeline_have_no_circle():
    graph = _module_imports()
    assert "pipeline.state.schema" in graph["pipeline.state.storage"]  # the walk sees relative imports
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# -- the use-case layer ---------------------------------------------------------------------------------

PACKAGE = STATE.parent


def _imported_modules(path: Path) -> set[str]:
    """Every pipeline module a file imports (relative imports resolved), at any depth of the file."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_the_command_line_never_touches_a_store():
    """The commands parse, call one use case, print (sqlite-utils' commands over its library)."""
    files = sorted((PACKAGE / "cli").glob("*.py"))
    imported = set().union(*(_imported_modules(path) for path in files))
    assert not {name for name in imported if name.startswith("pipeline.state")}
    assert not [path.name for path in files if "open_storage" in path.read_text() or "Storage" in path.read_text()]
    assert "pipeline.usecases" in imported and len(files) > 1  # the walk saw the package's imports at all


def test_every_use_case_is_exported_by_the_package_and_loads_from_its_module():
    import pipeline.usecases as usecases

    defined = {}
    for path in (PACKAGE / "usecases").glob("*.py"):
        if path.name == "__init__.py":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                defined[node.name] = path.stem
    assert {name: module for name, module in defined.items() if usecases._WHERE.get(name) != module} == {}
    assert usecases.run.__module__ == "pipeline.usecases.runs" and usecases.status.__module__.endswith("reporting")


# -- layers: every module-level import points down ------------------------------------------------------

# From the bottom: the leaf modules at the package root (config, items, text, errors, clock, ...), the
# state (the only SQL; its rows are what the stages pass around), the stages in the order data flows,
# the use cases, the long-running parts and other front doors, and the command line on top.
LAYERS = [{"core"}, {"state"}, {"sources"}, {"publish"}, {"mail"}, {"delivery"}, {"bounces"}, {"usecases"},
          {"service", "desk", "snippet", "newproject"}, {"cli", "__main__", "docgen"}]


def _layer(module: str) -> int:
    parts = module.split(".")
    folder = parts[1] if len(parts) > 1 else "core"
    top = {name for layer in LAYERS for name in layer}
    name = folder if folder in top else "core"
    return next(n for n, layer in enumerate(LAYERS) if name in layer)


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{module} -> {dep}" for module, deps in graph.items() for dep in deps
                  if module != "pipeline" and _layer(dep) > _layer(module))


def test_every_module_level_import_points_down_the_layers():
    assert _upward(_module_imports()) == []
    assert _layer("pipeline.usecases.runs") > _layer("pipeline.delivery.engine") > _layer("pipeline.state.ledger")


def test_imports_inside_functions_point_down_the_layers_too():
    """Deferred imports (start-up time, optional extras) hide nothing: they obey the same order."""
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = "pipeline." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        upward += [f"{module} -> {dep}" for dep in _imported_modules(path)
                   if dep.startswith("pipeline") and _layer(dep) > _layer(module)]
    assert sorted(upward) == []


def test_an_import_up_the_layers_is_found():
    graph = {"pipeline.branding": {"pipeline.mail.lint", "pipeline.errors"}, "pipeline.mail.lint": {"pipeline.branding"}}
    assert _upward(graph) == ["pipeline.branding -> pipeline.mail.lint"]


def test_every_import_inside_a_function_says_why():
    """Deferred imports are for start-up time or an optional extra, and say which: on their line,
    or once in the module's docstring ("Imports inside functions: ...")."""
    silent = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        if "Imports inside functions:" in (ast.get_docstring(ast.parse(source)) or ""):
            continue
        lines = source.splitlines()
        for function in ast.walk(ast.parse(source)):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                silent += [f"{path.relative_to(PACKAGE)}:{node.lineno}" for node in ast.walk(function)
                           if isinstance(node, (ast.Import, ast.ImportFrom))
                           and "#" not in " ".join(lines[node.lineno - 1:node.end_lineno])]
    assert silent == []
