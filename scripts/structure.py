#!/usr/bin/env python3
"""Checks two structure rules of src/ that rustc and clippy do not.

  scripts/structure.py lengths [--over N]   functions outside tests, longest first (default: all over 60)
  scripts/structure.py cycles               module import cycles anywhere in src/ and testkit/src/, and any
                                            import of src/controllers from src/actions; exits 1 if there is one

A module's imports are every `crate::`/`super::`/`self::` path in its non-test code (`use` trees expanded),
resolved to the file that defines the item: a `pub use` re-export is followed to its source, so importing
`controllers::Context` counts as importing `controllers/context.rs`, not `controllers/mod.rs`. A parent's
`mod child;` is not an import, nor is a parent's use of its own descendants' items (they are its parts; a
child naming its parent's items is an import). Good enough for this code base's style (no macros that build paths, no
glob re-exports); not a Rust parser.
"""

import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SRC = os.path.join(ROOT, "src")
# The crates whose module graphs `cycles` checks.
CRATES = [os.path.join(ROOT, "src"), os.path.join(ROOT, "testkit", "src")]


def strip(text):
    """Blanks comments, strings and char literals (keeping newlines), so braces and paths can be counted."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif (m := re.match(r'b?r(#*)"', text[i:])) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append('""' + re.sub(r"[^\n]", " ", text[i + 2 : j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('"' + re.sub(r"[^\n]", " ", text[i + 1 : j]) + '"')
            i = j + 1
        elif c == "'" and (m := re.match(r"'(\\.[^']*|[^\\'])'", text[i:])):
            out.append(" " * m.end())
            i += m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def block_end(text, open_brace):
    depth = 0
    for j in range(open_brace, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(text) - 1


def files():
    """(path, module path, is_test_file) for every .rs file under src/."""
    test_files = set()
    found = []
    for root, _, names in os.walk(SRC):
        for name in names:
            if name.endswith(".rs"):
                found.append(os.path.join(root, name))
    for path in found:
        text = strip(open(path).read())
        for m in re.finditer(r'#\[cfg\(test\)\]\s*(?:#\[path\s*=\s*"\s*"\s*\]\s*)?mod\s+(\w+)\s*;', text):
            raw = open(path).read()
            p = re.search(r'#\[path\s*=\s*"([^"]+)"\]\s*mod\s+' + m.group(1) + r"\s*;", raw)
            base = os.path.dirname(path)
            stem = os.path.splitext(os.path.basename(path))[0]
            if p:
                test_files.add(os.path.normpath(os.path.join(base, p.group(1))))
            else:
                sub = base if stem in ("mod", "lib", "main") else os.path.join(base, stem)
                test_files.add(os.path.normpath(os.path.join(sub, m.group(1) + ".rs")))
                test_files.add(os.path.normpath(os.path.join(sub, m.group(1), "mod.rs")))
    result = []
    for path in sorted(found):
        rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
        if rel[-1] == "mod":
            rel = rel[:-1]
        if rel in (["lib"], ["main"]):
            rel = []
        result.append((os.path.normpath(path), tuple(rel), os.path.normpath(path) in test_files))
    return result


def test_spans(text):
    """Character spans of `#[cfg(test)]` items (modules and functions) in stripped text."""
    spans = []
    for m in re.finditer(r"#\[cfg\(test\)\]", text):
        brace = text.find("{", m.end())
        semi = text.find(";", m.end())
        if brace < 0 or (0 <= semi < brace):
            continue
        spans.append((m.start(), block_end(text, brace)))
    return spans


def lengths(over):
    rows = []
    fn = re.compile(r"^[ \t]*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?fn\s+(\w+)", re.M)
    for path, _, is_test in files():
        if is_test:
            continue
        text = strip(open(path).read())
        spans = test_spans(text)
        for m in fn.finditer(text):
            if any(a <= m.start() <= b for a, b in spans):
                continue
            brace = text.find("{", m.end())
            semi = text.find(";", m.end())
            if brace < 0 or (0 <= semi < brace):
                continue  # a trait method without a body
            start = text.count("\n", 0, m.start()) + 1
            end = text.count("\n", 0, block_end(text, brace)) + 1
            rows.append((end - start + 1, os.path.relpath(path, os.path.join(SRC, "..")), start, m.group(1)))
    rows.sort(reverse=True)
    for n, path, line, name in rows:
        if n > over:
            print(f"{n:4} {path}:{line} {name}")


def use_paths(text):
    """Every path a module names: `use` trees expanded, then other `crate::`/`super::`/`self::` paths."""
    paths = []

    def expand(prefix, tree):
        tree = tree.strip()
        if not tree:
            return
        m = re.match(r"^((?:\w+\s*::\s*)*)\{(.*)\}$", tree, re.S)
        if m:
            head = [s for s in re.split(r"\s*::\s*", m.group(1).strip()) if s]
            depth, part, parts = 0, "", []
            for ch in m.group(2):
                if ch == "," and depth == 0:
                    parts.append(part)
                    part = ""
                    continue
                depth += ch == "{"
                depth -= ch == "}"
                part += ch
            parts.append(part)
            for p in parts:
                expand(prefix + head, p)
            return
        tree = re.sub(r"\s+as\s+\w+$", "", tree)
        segs = [s for s in re.split(r"\s*::\s*", tree) if s]
        if segs and segs[-1] == "self":
            segs = segs[:-1]
        paths.append(prefix + segs)

    rest = text
    for m in re.finditer(r"\b(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", text):
        expand([], m.group(1))
        rest = rest[: m.start()] + " " * (m.end() - m.start()) + rest[m.end() :]
    for m in re.finditer(r"\b(?:crate|super|self)(?:\s*::\s*\w+)+", rest):
        paths.append(re.split(r"\s*::\s*", m.group(0)))
    return paths


def graph():
    mods = {}
    for path, mod, is_test in files():
        if is_test:
            continue
        text = strip(open(path).read())
        for a, b in reversed(test_spans(text)):
            text = text[:a] + re.sub(r"[^\n]", " ", text[a : b + 1]) + text[b + 1 :]
        mods[mod] = (path, text)
    # Re-exports: (module, name) -> the absolute path it stands for.
    reexports = {}
    for mod, (_, text) in mods.items():
        for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", text):
            for p in use_paths("use " + m.group(1) + ";"):
                absolute = absolutize(mod, p)
                if absolute:
                    reexports[(mod, absolute[-1])] = absolute
    edges = {}
    for mod, (_, text) in mods.items():
        paths = use_paths(text)
        # A module imported by name (`use super::asc_webhook;`) and then named in a path
        # (`asc_webhook::state::X`): the path counts from that module.
        aliases = {}
        for p in paths:
            absolute = absolutize(mod, p)
            if absolute and tuple(absolute) in mods:
                aliases[absolute[-1]] = absolute
        for m in re.finditer(r"(?<![\w:])(\w+)((?:\s*::\s*\w+)+)", text):
            if m.group(1) in aliases:
                rest = [x for x in re.split(r"\s*::\s*", m.group(2)) if x]
                paths.append(["crate"] + aliases[m.group(1)] + rest)
        for p in paths:
            absolute = absolutize(mod, p)
            if absolute is None:
                continue
            target = resolve(absolute, mods, reexports)
            if target is not None and target != mod and target[: len(mod)] != mod:
                edges.setdefault(mod, set()).add(target)
    return mods, edges


def absolutize(mod, segs):
    segs = list(segs)
    if not segs:
        return None
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    elif segs[0] in ("super", "self"):
        base = list(mod)
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
    else:
        base = list(mod)
        if not segs or tuple(base + segs[:1]) not in MODS:
            return None  # an external crate or a local item
    return base + segs


def resolve(absolute, mods, reexports, depth=0):
    """The module file that defines what `absolute` names."""
    for k in range(len(absolute), -1, -1):
        prefix = tuple(absolute[:k])
        if prefix in mods:
            if k < len(absolute) and depth < 10 and (prefix, absolute[k]) in reexports:
                return resolve(reexports[(prefix, absolute[k])] + absolute[k + 1 :], mods, reexports, depth + 1)
            return prefix
    return None


def cycles():
    """Checks every crate of [`CRATES`]; 1 if any has a cycle."""
    global SRC, MODS
    bad = 0
    for root in CRATES:
        SRC = root
        MODS = {m for _, m, _ in files()}
        bad |= crate_cycles(os.path.relpath(root, ROOT))
    SRC = CRATES[0]
    MODS = {m for _, m, _ in files()}
    return bad


def crate_cycles(name):
    mods, edges = graph()
    bad = 0
    # Strongly connected components (Tarjan) among the crate's modules.
    inside = list(mods)
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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
                comps.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(inside):
        if v not in index:
            visit(v)
    for comp in comps:
        bad += 1
        names = sorted("::".join(c) or "(crate root)" for c in comp)
        print(f"cycle in {name}:", " ".join(names))
        for a in sorted(comp):
            for b in sorted(edges.get(a, ())):
                if b in comp:
                    print(f"    {'::'.join(a) or '(crate root)'} -> {'::'.join(b) or '(crate root)'}")
    for mod in sorted(mods):
        if mod[:1] == ("actions",):
            for t in sorted(edges.get(mod, ())):
                if t[:1] == ("controllers",):
                    bad += 1
                    print(f"actions imports controllers: {'::'.join(mod)} -> {'::'.join(t)}")
    n_edges = sum(len(v) for v in edges.values())
    print(f"{name}: {len(inside)} modules, {n_edges} import edges, {len(comps)} cycles")
    return 1 if bad else 0


MODS = {m for _, m, _ in files()}

if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "lengths":
        over = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--over" else 60
        lengths(over)
    elif cmd == "cycles":
        sys.exit(cycles())
    elif cmd == "edges":
        _, edges = graph()
        for a in sorted(edges):
            for b in sorted(edges[a]):
                print("::".join(a), "->", "::".join(b))
    else:
        print(__doc__)
        sys.exit(2)
