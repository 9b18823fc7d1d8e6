"""Layers go one way: contracts import no service, runtime no service above it, the engine (yt-dlp machinery the
downloader and the scheduler share) neither the downloader nor the scheduler nor any other service."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {p.name for p in (ROOT / "services").iterdir() if p.is_dir() and (p / "__init__.py").exists()}

# What each package may import from the project (besides itself).
ALLOWED = {
    "contracts": set(),
    "services.runtime": {"contracts"},
    "services.engine": {"contracts", "services.runtime"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def project_package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "contracts":
        return "contracts"
    if parts[0] == "services" and len(parts) > 1 and parts[1] in SERVICES:
        return f"services.{parts[1]}"
    return None


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_go_one_way(package: str) -> None:
    folder = ROOT.joinpath(*package.split("."))
    wrong = []
    for path in sorted(folder.rglob("*.py")):
        for module in imported_modules(path):
            target = project_package(module)
            if target and target != package and target not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_no_service_imports_the_downloaders_engine_parts_from_the_downloader() -> None:
    """The scheduler uses the engine, never the downloader service itself."""
    for path in sorted((ROOT / "services" / "scheduler").rglob("*.py")):
        assert not any(m.startswith("services.downloader") for m in imported_modules(path)), path
