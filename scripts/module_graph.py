#!/usr/bin/env python3
"""The crate's module graph: which top-level modules use which (`crate::x` paths and `super::`
inside src/service), as a Mermaid flowchart, then any cycles. docs/design.md shows its output;
`--check` exits 1 when there is a cycle (`.ci/run` runs it both ways).

    python3 scripts/module_graph.py [--services] [--check]
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "src"


def module_of(path, services):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts = parts[:-1]
    if services:
        return parts[1] if len(parts) >= 2 and parts[0] == "service" else None
    return parts[0] if parts and parts[0] not in ("lib", "main") else None


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
            names += [n for group in re.findall(r"\buse super::\{([^}]*)\}", text)
                      for n in re.findall(r"\b(\w+)\b", group)]
            targets = {n for n in names if (ROOT / "service" / f"{n}.rs").exists()}
        else:
            targets = set(re.findall(r"\bcrate::(\w+)", text))
            targets = {t for t in targets if (ROOT / f"{t}.rs").exists() or (ROOT / t).is_dir()}
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
    return 1 if found and "--check" in sys.argv else 0


if __name__ == "__main__":
    sys.exit(main())
