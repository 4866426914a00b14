#!/usr/bin/env python3
"""Counts the public declarations that `import VirtioUser` hands an app.

Dumps the package's symbol graphs (swift package dump-symbol-graph, public symbols only,
synthesized members skipped), then counts VirtioUser's own symbols plus what its sources
re-export: every symbol of a module re-exported whole (`@_exported import Module`), or of a
named declaration and its members (`@_exported import struct Module.Name`).

    Scripts/public-api.py            # the total and where it comes from
    Scripts/public-api.py --list     # every symbol, one per line
"""
import glob
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP_MODULE = "VirtioUser"


def dump():
    run = subprocess.run(["swift", "package", "dump-symbol-graph", "--skip-synthesized-members"],
                         cwd=ROOT, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"public-api: error: swift package dump-symbol-graph failed:\n{run.stdout}{run.stderr}")
    graphs = glob.glob(os.path.join(ROOT, ".build", "*", "symbolgraph", "*.symbols.json"))
    if not graphs:
        sys.exit("public-api: error: no symbol graphs under .build/*/symbolgraph")
    return graphs


def symbols(graphs, module):
    """(path, kind) of every symbol a module declares, its extensions of other modules included."""
    found = []
    for path in graphs:
        name = os.path.basename(path)[: -len(".symbols.json")]
        if name != module and not name.startswith(module + "@"):
            continue
        with open(path) as f:
            graph = json.load(f)
        for symbol in graph["symbols"]:
            found.append((".".join(symbol["pathComponents"]), symbol["kind"]["identifier"]))
    return found


def reexports():
    """Modules re-exported whole, and named declarations re-exported, by the app module."""
    whole, named = set(), set()
    pattern = re.compile(r"^\s*@_exported\s+import\s+(?:(?:struct|class|enum|protocol|typealias|func|var|let)\s+)?([\w.]+)")
    for path in glob.glob(os.path.join(ROOT, "Sources", APP_MODULE, "**", "*.swift"), recursive=True):
        with open(path) as f:
            for line in f:
                match = pattern.match(line)
                if not match:
                    continue
                target = match.group(1)
                if "." in target:
                    module, name = target.split(".", 1)
                    named.add((module, name))
                else:
                    whole.add(target)
    return whole, named


def main():
    graphs = dump()
    whole, named = reexports()
    counted = [(APP_MODULE, s) for s in symbols(graphs, APP_MODULE)]
    for module in sorted(whole):
        counted += [(module, s) for s in symbols(graphs, module)]
    for module, name in sorted(named):
        counted += [(module, s) for s in symbols(graphs, module)
                    if s[0] == name or s[0].startswith(name + ".")]
    if "--list" in sys.argv:
        for module, (path, kind) in sorted(counted):
            print(f"{module}\t{kind}\t{path}")
    by_module = {}
    for module, _ in counted:
        by_module[module] = by_module.get(module, 0) + 1
    detail = ", ".join(f"{m} {n}" for m, n in sorted(by_module.items()))
    print(f"public declarations reaching `import {APP_MODULE}`: {len(counted)} ({detail})")
    if whole:
        print(f"modules re-exported whole: {', '.join(sorted(whole))}")
    if named:
        print(f"declarations re-exported by name: {len(named)}")


if __name__ == "__main__":
    main()
