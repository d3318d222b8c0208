#!/usr/bin/env python3
"""Fails when the modules of a crate depend on each other in a circle.

Usage: hack/module-cycles.py CRATE_SRC_DIR...   (`make lint` runs it on operator/src,
booking-app/src and contract/src).

A module is one source file (`a.rs` or `a/mod.rs` is `a`, `a/b.rs` is `a::b`). A file depends on
another when it names it: `use crate::x::y`, `super::x`, `self::x`, or a `crate::x::y` path in
code, resolved to the longest module prefix that exists. A child naming its own ancestor is not
counted (Rust's `use super::Thing` is how a submodule reads its parent's types; the parent
declaring and using the child is the dependency). Test code is left out: `#[cfg(test)]` modules,
`tests.rs`, `*_tests.rs` and `fixtures.rs`. Every strongly connected set of more than one module
is printed with the edges that close it, and the exit status is 1.
"""

import re
import sys
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
TEST_FILES = re.compile(r"(^|/)(tests|fixtures|[a-z0-9_]+_tests)\.rs$")


def module_of(src: Path, path: Path) -> tuple:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip_tests_and_comments(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    # Everything from a `#[cfg(test)]` module on is test code (they sit at the end by convention).
    m = re.search(r"#\[cfg\(test\)\]\s*(#\[[^\]]*\]\s*)*(pub(\([^)]*\))?\s+)?mod\s", text)
    return text[: m.start()] if m else text


def expand_use(tree: str) -> list:
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    tree = tree.strip()
    depth, brace = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                brace = i
            depth += 1
        elif ch == "}":
            depth -= 1
    if brace is None:
        return [re.split(r"\s+as\s+", tree)[0].strip()]
    prefix, inner = tree[:brace], tree[brace + 1 : tree.rindex("}")]
    items, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
    items.append(inner[start:])
    out = []
    for item in items:
        if item.strip():
            out.extend(prefix + sub for sub in expand_use(item))
    return out


def referenced_paths(text: str) -> list:
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        paths.extend(expand_use(m.group(1)))
    # Paths written in code: crate::a::b, super::a, self::a (a `use` is matched again: harmless).
    paths.extend(re.findall(rf"\b(?:crate|super|self)(?:::{IDENT})+", text))
    return paths


def resolve(path: str, here: tuple, is_dir_module: bool, modules: set):
    parts = [p for p in path.replace(" ", "").split("::") if p]
    if not parts:
        return None
    if parts[0] == "crate":
        base, rest = (), parts[1:]
    elif parts[0] in ("super", "self"):
        # In a.rs (or a/mod.rs), `self` is `a` and `super` its parent.
        base = here
        while parts and parts[0] in ("super", "self"):
            if parts[0] == "super":
                base = base[:-1]
            parts = parts[1:]
        rest = parts
    else:
        return None  # an external crate
    target = None
    for n in range(len(rest) + 1):
        candidate = base + tuple(rest[:n])
        if candidate in modules:
            target = candidate
    return target


def cycles(src: Path) -> list:
    files = {}
    for path in sorted(src.rglob("*.rs")):
        rel = path.relative_to(src).as_posix()
        if TEST_FILES.search(rel):
            continue
        files[module_of(src, path)] = path
    modules = set(files)
    edges = {m: {} for m in modules}
    for module, path in files.items():
        text = strip_tests_and_comments(path.read_text())
        is_dir = path.name == "mod.rs"
        for ref in referenced_paths(text):
            target = resolve(ref, module, is_dir, modules)
            if target is None or target == module:
                continue
            if module[: len(target)] == target:
                continue  # a child naming an ancestor
            edges[module].setdefault(target, ref)
    # Tarjan's strongly connected components.
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
                found.append(component)

    sys.setrecursionlimit(10_000)
    for v in sorted(modules):
        if v not in index:
            visit(v)
    return [(c, edges) for c in found]


def name(module: tuple) -> str:
    return "crate::" + "::".join(module) if module else "crate"


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    failed = False
    for arg in sys.argv[1:]:
        src = Path(arg)
        found = cycles(src)
        if not found:
            print(f"{src}: no module cycle")
            continue
        failed = True
        for component, edges in found:
            members = set(component)
            print(f"{src}: cycle among {', '.join(sorted(name(m) for m in members))}")
            for m in sorted(members):
                for target, via in sorted(edges[m].items()):
                    if target in members:
                        print(f"  {name(m)} -> {name(target)}  ({via})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
