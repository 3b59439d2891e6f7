#!/usr/bin/env python3
"""Fails when the source files of a crate import each other in a cycle.

    e2e/scripts/check-module-cycles.py CRATE_SRC_DIR...

Each file is a module (`a/b.rs` and `a/b/mod.rs` are `crate::a::b`). A file
depends on another when its code (not its comments, not its `#[cfg(test)] mod
tests { ... }` block) names a path into it: `crate::a::b::Item`, `super::x`,
or, in a `mod.rs`, `pub use child::...`. A path to an item re-exported by a
`mod.rs` counts as a dependency on that `mod.rs`. Prints every cycle found
(strongly connected component of two or more files) and exits 1 if any.
"""
import os
import re
import sys


def module_of(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def code_lines(text):
    """The file's code outside comments and outside an inline test module."""
    out = []
    depth = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if depth is None and stripped == "#[cfg(test)]" and i + 1 < len(lines) \
                and re.match(r"\s*(pub(\(\w+\))?\s+)?mod \w+ \{", lines[i + 1]):
            depth = 0
            i += 1
            continue
        if depth is not None:
            depth += line.count("{") - line.count("}")
            if depth <= 0 and "}" in line:
                depth = None
            i += 1
            continue
        if not stripped.startswith("//"):
            out.append(line.split("//")[0] if "://" not in line else line)
        i += 1
    return out


def main(dirs):
    found = False
    for src in dirs:
        files = {}
        for root, _, names in os.walk(src):
            for n in names:
                if n.endswith(".rs"):
                    p = os.path.join(root, n)
                    files[module_of(src, p)] = p
        graph = {m: set() for m in files}

        def resolve(parts):
            # Longest prefix that is a module file.
            for k in range(len(parts), -1, -1):
                if tuple(parts[:k]) in files:
                    return tuple(parts[:k])
            return None

        for mod, path in files.items():
            with open(path) as f:
                text = "\n".join(code_lines(f.read()))
            is_dir_mod = os.path.basename(path) in ("mod.rs", "lib.rs", "main.rs")
            here = mod if is_dir_mod else mod[:-1]
            for m in re.finditer(r"\b(crate|super|self)((?:::\w+)+)", text):
                head, rest = m.group(1), [p for p in m.group(2).split("::") if p]
                if head == "crate":
                    parts = rest
                elif head == "super":
                    parts = list(here[:-1] if is_dir_mod else here)
                    while rest and rest[0] == "super":
                        parts, rest = parts[:-1], rest[1:]
                    parts += rest
                else:
                    parts = list(mod) + rest
                target = resolve(parts)
                if target is not None and target != mod and not mod[:len(target)] == target:
                    graph[mod].add(target)
                elif target is not None and target != mod and len(parts) > len(target):
                    # An item of an ancestor's mod.rs (a re-export or its own item).
                    graph[mod].add(target)
            if is_dir_mod:
                for m in re.finditer(r"pub use (\w+)::", text):
                    target = resolve(list(mod) + [m.group(1)])
                    if target is not None and target != mod:
                        graph[mod].add(target)

        # Tarjan's strongly connected components.
        index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
        sys.setrecursionlimit(10000)

        def visit(v):
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in graph[v]:
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    sccs.append(comp)

        for v in sorted(graph):
            if v not in index:
                visit(v)
        for comp in sccs:
            found = True
            names = sorted(os.path.relpath(files[m], src) for m in comp)
            print(f"{src}: import cycle between {', '.join(names)}")
            for m in sorted(comp):
                for w in sorted(graph[m] & set(comp)):
                    print(f"    {os.path.relpath(files[m], src)} -> {os.path.relpath(files[w], src)}")
    if not found:
        print(f"no import cycles in {', '.join(dirs)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["node-agent/src"]))
