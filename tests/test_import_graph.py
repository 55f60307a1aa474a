"""The import graph of ../shared/ARCHITECTURE.md holds: no circle among the project's modules, imports point down
(curation knows no Ray and no model; model uses curation only through the dataset contract; inside model/,
cli -> training -> sampling | directors -> networks; sampling never imports training), and model/'s imports of its own
modules sit at the top of the files. Every import counts, including the ones written inside functions."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("curation", "pipelines", "model", "evaluation", "dashboards", "runtime")
DATASET_CONTRACT = ("curation.schema", "curation.dataset", "curation.errors")  # what model/ may read of curation


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(module: str, is_package: bool, node: ast.ImportFrom, modules: set[str]) -> list[str]:
    """The project modules a `from ... import` names: a submodule named counts as that module, any other name as the
    module it comes from."""
    if node.level:
        base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    submodules = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in modules]
    return submodules + ([target] if len(submodules) < len(node.names) else [])


def project_imports() -> dict[str, list[tuple[str, int, bool]]]:
    """module -> [(imported project module, line, at module level)]."""
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {module_name(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        top |= {id(n) for node in tree.body if isinstance(node, ast.If) for n in node.body}  # TYPE_CHECKING-style
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = resolve(name, path.name == "__init__.py", node, set(modules))
            else:
                continue
            for target in targets:
                if target in modules and target != name:
                    found.append((target, node.lineno, id(node) in top))
        graph[name] = found
    return graph


GRAPH = project_imports()


def circles(graph: dict[str, list[tuple[str, int, bool]]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w, _, _ in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def under(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def is_cli(module: str) -> bool:
    """A CLI module: `x.cli`, or a part of a package's CLI split off into `x.cli_<part>`."""
    leaf = module.rpartition(".")[2]
    return leaf == "cli" or leaf.startswith("cli_")


def forbidden(importer: str, imported: str) -> str | None:
    """Why `importer` may not import `imported` (None: allowed)."""
    if under(importer, "runtime") and not under(imported, "runtime"):
        return "runtime imports nothing of ours"
    if under(importer, "curation") and not under(imported, "curation"):
        return "curation knows no Ray, no model and none of its users"
    if under(importer, "evaluation") and under(imported, "model", "pipelines", "dashboards"):
        return "evaluation depends on curation only"
    if under(importer, "dashboards") and under(imported, "model", "pipelines") and not is_cli(importer):
        return "dashboards call evaluation and curation"
    if is_cli(importer) or importer == "pipelines.cli":
        return None  # the CLI wires everything
    if under(importer, "model"):
        if under(imported, "pipelines", "evaluation", "dashboards"):
            return "model knows nothing of its judges or the pipelines"
        if under(imported, "curation") and not under(imported, *DATASET_CONTRACT) and imported != "curation":
            return "model reads curation only through the dataset contract (pass detectors in as arguments)"
        if under(imported, "model.cli") or is_cli(imported):
            return "nothing imports the CLI"
        if under(importer, "model.sampling") and under(imported, "model.training", "model.directors"):
            return "sampling is inference only"
        if under(importer, "model.networks") and under(imported, "model.sampling", "model.training",
                                                        "model.directors"):
            return "networks are the bottom layer"
        if under(importer, "model.directors") and under(imported, "model.sampling", "model.training"):
            return "directors write storylines; they do not sample or train"
        if under(importer, "model.training") and under(imported, "model.directors"):
            return "training does not use the directors"
    return None


def test_no_import_circle():
    assert circles(GRAPH) == []


def test_imports_point_down():
    broken = [f"{a}:{line} imports {b} ({why})" for a, edges in GRAPH.items() for b, line, _ in edges
              if (why := forbidden(a, b))]
    assert broken == []


def test_model_imports_its_modules_at_the_top():
    inside = [f"{a}:{line} imports {b} inside a function" for a, edges in GRAPH.items() for b, line, top in edges
              if under(a, "model") and not is_cli(a) and not top]
    assert inside == []


def test_the_rules_catch_what_they_are_for():
    """The checks above can fail: a made-up circle and made-up upward imports are found."""
    assert circles({"a": [("b", 1, True)], "b": [("a", 1, True)], "c": []}) == [["a", "b"]]
    assert forbidden("model.sampling.cascade", "model.training.engine")
    assert forbidden("model.sampling.clip", "curation.detect")
    assert forbidden("curation.track", "runtime.ray")
    assert forbidden("model.training.prepare", "curation.dataset") is None
    assert forbidden("model.cli", "curation.detect") is None


def test_no_file_in_model_is_over_450_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "model").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 450}
    assert long == {}
