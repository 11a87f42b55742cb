#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a circle.

Every folder of Rust sources is a set of sibling modules; a module depends on a
sibling it names as `crate::sibling` (or in `crate::{...}`) outside comments and its
tests. A cycle among siblings (a strongly connected component of two or more) means
neither can be read, tested or changed without the other: issue 19 broke them all
(the proxy session in layers, the dashboard's state apart from its migrator, ...),
and this keeps them broken. Stdlib only.

    python3 scripts/import-cycles.py            # every crate's src/ folders
    python3 scripts/import-cycles.py proxy/src  # one folder
"""

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRATES = ["common", "proxy", "dashboard", "ha", "benches"]


def modules(folder: Path) -> dict[str, set[str]]:
    """Sibling modules of `folder` and the siblings each names."""
    files = {p.stem: p for p in folder.glob("*.rs") if p.stem not in ("lib", "main")}
    # A `name/mod.rs` folder is a module too, with all its files.
    for d in folder.iterdir():
        if d.is_dir() and (d / "mod.rs").exists():
            files[d.name] = d
    deps: dict[str, set[str]] = {}
    for name, path in files.items():
        sources = [path] if path.is_file() else sorted(path.rglob("*.rs"))
        text = ""
        for src in sources:
            body = src.read_text(encoding="utf-8")
            cut = body.find("#[cfg(test)]")
            if cut >= 0:
                body = body[:cut]
            text += "\n".join(
                line for line in body.splitlines() if not line.strip().startswith("//")
            )
        named = set(re.findall(r"crate::([a-z_][a-z0-9_]*)", text))
        for group in re.findall(r"crate::\{([^}]*)\}", text):
            named.update(re.findall(r"\b([a-z_][a-z0-9_]*)\b", group))
        deps[name] = (named & set(files)) - {name}
    return deps


def cycles(deps: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(deps[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(deps):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    if len(sys.argv) > 1:
        folders = [Path(a) for a in sys.argv[1:]]
    else:
        folders = []
        for crate in CRATES:
            src = ROOT / crate / "src"
            if src.is_dir():
                folders += [Path(d) for d, _, fs in os.walk(src) if any(f.endswith(".rs") for f in fs)]
    failed = False
    for folder in sorted(folders):
        deps = modules(folder)
        for component in cycles(deps):
            failed = True
            print(f"import cycle in {folder.relative_to(ROOT) if folder.is_absolute() else folder}:")
            for m in component:
                print(f"  {m} -> {', '.join(sorted(deps[m] & set(component)))}")
    if failed:
        print("break it: move what both sides need into a module below them both")
        return 1
    print(f"no import cycles in {len(folders)} folders")
    return 0


if __name__ == "__main__":
    sys.exit(main())
