"""The packages' boundaries: components import `shared` and never each other, and nothing a VM
runs imports moto (the embedded endpoint's own package alone does)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ("job_agent", "resource_manager", "jobmgmt")


def _imports(package: str) -> set[tuple[str, str]]:
    """(module file, top-level package imported) for every import in a package."""
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            found |= {(str(path.relative_to(ROOT)), name.split(".")[0]) for name in names}
    return found


def test_no_module_a_vm_runs_imports_moto() -> None:
    for package in ("shared", *COMPONENTS):
        assert [f for f, top in _imports(package) if top == "moto"] == [], package


def test_components_import_shared_never_each_other() -> None:
    for package in COMPONENTS:
        others = set(COMPONENTS) - {package}
        assert [(f, top) for f, top in _imports(package) if top in others] == [], package
    assert [f for f, top in _imports("shared") if top in (*COMPONENTS, "embedded")] == []


def test_only_the_queue_module_calls_sqs() -> None:
    """SQS has one home (shared/queues.py): anything else reaching `.sqs` bypasses its
    batching, its retries and the hint rules of docs/design.md."""
    callers = []
    for package in ("shared", *COMPONENTS, "clobi"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr == "sqs":
                    callers.append(str(path.relative_to(ROOT)))
    assert set(callers) <= {"shared/queues.py", "shared/aws.py"}, callers
