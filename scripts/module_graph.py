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


def body_of(text, start):
    """The text from the `{` at or after `start` to its matching `}`."""
    open_at = text.index("{", start)
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at : i + 1]
    return text[open_at:]


def whole_state_for_few_parts():
    """`(file, function, parts)` for each service function that takes `state: &AppState`,
    reads at most FEW_PARTS of its fields and uses `state` in no other way (no call it is
    passed to, no clone or weak reference)."""
    found = []
    for path in sorted((ROOT / "service").rglob("*.rs")):
        text = path.read_text()
        for m in re.finditer(r"\bfn (\w+)(?:<[^>]*>)?\(([^)]*)\)", text):
            if not re.search(r"\bstate: &AppState\b", m.group(2)):
                continue
            body = body_of(text, m.end())
            parts = set(re.findall(r"\bstate\s*\.\s*([a-z_]+)\b(?!\s*\()", body))
            rest = re.sub(r"\bstate\s*\.\s*[a-z_]+\b(?!\s*\()", "", body)
            if len(parts) <= FEW_PARTS and not re.search(r"\bstate\b", rest):
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
            print(
                f"{path}: {name} takes the whole AppState for {', '.join(parts) or 'nothing'}: "
                "take those parts"
            )
        if not few:
            print("Every service function that takes the whole state uses more than two of its parts or hands it on.")
        bad = bad or bool(few)
    return 1 if bad and "--check" in sys.argv else 0


if __name__ == "__main__":
    sys.exit(main())
