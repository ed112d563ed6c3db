#!/usr/bin/env python3
"""The crate's module graph: which top-level modules use which (`crate::x` paths, and `super::`
inside src/service), as a Mermaid flowchart, then any cycles and any arrow that runs back up
the declared layers. `lib.rs` (the crate root) and `main.rs` (the binary, through
`feature_store::x`) are nodes too: a `crate::Item` that is not a module is an arrow to `lib`.
docs/design.md shows its output; `--check` exits 1 on a cycle, and (top-level graph) on an arrow
that does not point to a lower layer or a module no layer names (`.ci/run` runs it both ways).
With `--services` it also fails on a service function that takes the whole `&AppState` but uses
at most two of its parts and hands the state to nothing: it should take those parts.

    python3 scripts/module_graph.py [--services] [--check]
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "src"

# Top to bottom: a module may use only modules in layers below its own.
LAYERS = [
    ["main"],
    ["lib"],
    ["app"],
    ["api", "telemetry"],
    ["service"],
    ["cache", "clock", "config"],
    ["store", "spark", "auth"],
    ["worker"],
    ["offline", "alloc"],
    ["engine", "failpoint"],
    ["metrics", "served"],
    ["model"],
    ["times", "keys"],
]


def module_of(path, services):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts = parts[:-1]
    if services:
        return parts[1] if len(parts) >= 2 and parts[0] == "service" else None
    return parts[0] if parts else None


def is_module(name):
    return (ROOT / f"{name}.rs").exists() or (ROOT / name).is_dir()


def crate_targets(text, prefix):
    """Top-level modules (or `lib`, for an item of the crate root) that `prefix::` paths name,
    also inside `prefix::{a, b::c}` groups."""
    names = re.findall(rf"\b{prefix}::(\w+)", text)
    for group in re.findall(rf"\b{prefix}::\{{([^}}]*)\}}", text):
        names += [item.strip().split("::")[0] for item in group.split(",") if item.strip()]
    return {n if is_module(n) else "lib" for n in names if n and n != "self"}


def edges(services):
    found = set()
    for path in ROOT.rglob("*.rs"):
        source = module_of(path, services)
        if source is None:
            continue
        text = re.sub(r"//[^\n]*", "", path.read_text())
        # Unit tests may reach anywhere.
        text = text.split("#[cfg(test)]")[0]
        if services:
            names = re.findall(r"\bsuper::(\w+)", text)
            names += re.findall(r"\bcrate::service::(\w+)", text)
            for group in re.findall(r"\b(?:super|crate::service)::\{([^}]*)\}", text):
                names += [item.strip().split("::")[0] for item in group.split(",")]
            service = ROOT / "service"
            targets = {n for n in names if (service / f"{n}.rs").exists() or (service / n).is_dir()}
        elif source == "lib":
            # The crate root's own `use` lines (its `mod` lines declare, they do not use).
            targets = {n for n in re.findall(r"^\s*(?:pub )?use (\w+)::", text, re.M) if is_module(n)}
        elif source == "main":
            targets = crate_targets(text, "feature_store")
        else:
            targets = crate_targets(text, "crate")
        for target in targets - {source}:
            found.add((source, target))
    return sorted(found)


def cycles(graph):
    nodes = sorted({a for a, _ in graph} | {b for _, b in graph})
    succ = {n: sorted(b for a, b in graph if a == n) for n in nodes}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in succ[v]:
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

    for n in nodes:
        if n not in index:
            visit(n)
    return out


def upward(graph):
    """Arrows that do not point to a lower layer, and modules no layer names."""
    rank = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    nodes = sorted({a for a, _ in graph} | {b for _, b in graph})
    unplaced = [n for n in nodes if n not in rank]
    wrong = [(a, b) for a, b in graph if a in rank and b in rank and rank[b] <= rank[a]]
    return unplaced, wrong


# A service function that takes the whole state and uses this many of its parts or fewer,
# handing the state to nothing else, should take the parts instead.
FEW_PARTS = 2


def blanked(text):
    """`text` with comments and the insides of string and char literals turned to spaces
    (newlines kept), so braces, parentheses and words in them count for nothing and offsets
    stay the same."""
    out = list(text)
    n = len(text)
    i = 0

    def blank(a, b):
        for k in range(a, min(b, n)):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            blank(i, end)
            i = end
        elif text.startswith("/*", i):
            depth, k = 1, i + 2
            while k < n and depth:
                if text.startswith("/*", k):
                    depth, k = depth + 1, k + 2
                elif text.startswith("*/", k):
                    depth, k = depth - 1, k + 2
                else:
                    k += 1
            blank(i, k)
            i = k
        elif (m := re.match(r'b?r(#*)"', text[i : i + 260])) and not re.match(r"\w", text[i - 1 : i] or " "):
            close = '"' + m.group(1)
            end = text.find(close, i + m.end())
            end = n if end < 0 else end + len(close)
            blank(i + m.end(), end - len(close))
            i = end
        elif c == '"' or (c == "b" and text.startswith('b"', i) and not re.match(r"\w", text[i - 1 : i] or " ")):
            k = i + (2 if c == "b" else 1)
            start = k
            while k < n and text[k] != '"':
                k += 2 if text[k] == "\\" else 1
            blank(start, k)
            i = k + 1
        elif c == "'":
            # A char literal ('x', '\n', '\u{..}'); otherwise a lifetime or label.
            if text.startswith("\\", i + 1):
                end = text.find("'", i + 3)
                if end > 0:
                    blank(i + 1, end)
                    i = end + 1
                    continue
            elif i + 2 < n and text[i + 2] == "'":
                blank(i + 1, i + 2)
                i += 3
                continue
            i += 1
        else:
            i += 1
    return "".join(out)


def matching(text, open_at, opening, closing):
    """The index just past the bracket that closes the one at `open_at`."""
    depth = 0
    for k in range(open_at, len(text)):
        if text[k] == opening:
            depth += 1
        elif text[k] == closing and not (closing == ">" and text[k - 1] == "-"):
            depth -= 1
            if depth == 0:
                return k + 1
    return len(text)


STATE_PARAM = re.compile(r"(?<![\w])(\w+)\s*:\s*&\s*(?:'\w+\s+)?(?:\w+::)*AppState\b")


def whole_state_for_few_parts():
    """`(file, function, parts)` for each service function that takes a `&AppState`
    parameter, reads at most FEW_PARTS of its fields and uses it in no other way (no call it
    is passed to, no clone or weak reference). Syntactic: comments and literals are left
    out, and a state held by `self` (`jobs::Tracked`, `compute::publish::Publication`) is not
    seen."""
    found = []
    for path in sorted((ROOT / "service").rglob("*.rs")):
        text = blanked(path.read_text())
        for m in re.finditer(r"\bfn\s+(\w+)\s*", text):
            k = m.end()
            if text.startswith("<", k):
                k = matching(text, k, "<", ">")
            k = text.find("(", k)
            if k < 0:
                continue
            close = matching(text, k, "(", ")")
            param = STATE_PARAM.search(text[k:close])
            if not param:
                continue
            brace = text.find("{", close)
            semi = text.find(";", close)
            if brace < 0 or 0 <= semi < brace:
                continue
            body = text[brace : matching(text, brace, "{", "}")]
            name = re.escape(param.group(1))
            field = rf"(?<![.\w]){name}\s*\.\s*([a-z_]+)\b(?!\s*[(:])"
            parts = set(re.findall(field, body))
            rest = re.sub(field, "", body)
            if len(parts) <= FEW_PARTS and not re.search(rf"(?<![.\w]){name}\b", rest):
                found.append((path.relative_to(ROOT), m.group(1), sorted(parts)))
    return found


def main():
    services = "--services" in sys.argv
    graph = edges(services)
    print("```mermaid")
    print("flowchart TD")
    for a, b in graph:
        print(f"  {a} --> {b}")
    print("```")
    found = cycles(graph)
    if found:
        print()
        print("Cycles (strongly connected groups):")
        for group in found:
            print("- " + ", ".join(group))
    else:
        print()
        print("No cycles.")
    bad = bool(found)
    if not services:
        unplaced, wrong = upward(graph)
        for n in unplaced:
            print(f"Module in no layer (add it to LAYERS in {pathlib.Path(__file__).name}): {n}")
        for a, b in wrong:
            print(f"Arrow back up the layers: {a} --> {b}")
        if not unplaced and not wrong:
            print("Every arrow points down the layers.")
        bad = bad or bool(unplaced or wrong)
    else:
        few = whole_state_for_few_parts()
        for path, name, parts in few:
            # On stderr too: `.ci/run` sends the graph on stdout away.
            print(
                f"{path}: {name} takes the whole AppState for {', '.join(parts) or 'nothing'}: "
                "take those parts",
                file=sys.stderr,
            )
        if not few:
            print(
                "Every service function that takes the whole state uses more than "
                f"{FEW_PARTS} of its parts or hands it on."
            )
        bad = bad or bool(few)
    return 1 if bad and "--check" in sys.argv else 0


if __name__ == "__main__":
    sys.exit(main())
