#!/usr/bin/python3
"""layer_check.py - the broker's file dependency graph, read from the build.

    tests/tools/layer_check.py [-v] BUILD_BROKER_DIR

For every object file under BUILD_BROKER_DIR (the build tree of broker/),
`nm` lists the global symbols it defines and the ones it uses; a file
depends on the file that defines a symbol it uses. Prints the strongly
connected components of that graph (each one a dependency cycle) and every
call from a layer into a layer above it, then exits 1 if either exists.
-v also prints every dependency with the symbols that make it.

Layers, lowest first, are the static libraries chorus_<layer> that
broker/CMakeLists.txt builds (see docs/architecture.md); an object's layer is
read from its target folder (CMakeFiles/chorus_<layer>.dir), and objects of
any other target (chorusd itself) form the composition root, above every
layer.
Symbols come from the objects, not from #includes, so a header included but
not used is no dependency, and a call through a registered handler is none
either: that is the point of handlers.
"""
import os
import subprocess
import sys

LAYERS = ["base", "channel", "cluster", "engine", "session", "http"]
ROOT_RANK = len(LAYERS)


def source_name(obj, top):
    """(broker-relative source path, target) of an object:
    .../CMakeFiles/T.dir/x/y.c.o -> (x/y.c, T)"""
    rel = os.path.relpath(obj, top).split(os.sep)
    i = next(k for k, p in enumerate(rel) if p == "CMakeFiles")
    return "/".join(rel[:i] + rel[i + 2:])[:-2], rel[i + 1][:-len(".dir")]


def symbols(objs):
    """{obj: (defined, used)} for every object, with two nm runs in all
    (one per object made the check take a minute on a loaded machine)."""
    res = {o: (set(), set()) for o in objs}
    for k, flags in ((0, ["--defined-only", "-g"]), (1, ["-u"])):
        out = subprocess.run(["nm", "-A"] + flags + list(objs), check=True,
                             capture_output=True, text=True).stdout
        for l in out.splitlines():
            path, _, rest = l.partition(":")
            if rest.strip() and path in res:
                res[path][k].add(rest.split()[-1])
    return res


TARGET = {}  # source file -> the target that built it


def layer_rank(f):
    t = TARGET.get(f, "")
    head = t[len("chorus_"):] if t.startswith("chorus_") else None
    return LAYERS.index(head) if head in LAYERS else ROOT_RANK


def layer_name(f):
    r = layer_rank(f)
    return LAYERS[r] if r < ROOT_RANK else "root"


def sccs(nodes, edges):
    """Tarjan's algorithm, iterative; returns components of more than one file."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter[0]; counter[0] += 1
        stack.append(start); on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]; counter[0] += 1
                    stack.append(w); on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop(); on.discard(w); comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def main():
    args = sys.argv[1:]
    verbose = "-v" in args
    args = [a for a in args if a != "-v"]
    if len(args) != 1:
        print("usage: " + __doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    top = args[0]
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "broker")
    objs = {}
    for d, _, files in os.walk(top):
        for f in files:
            if f.endswith(".c.o") and os.sep + "CMakeFiles" + os.sep in os.path.join(d, f):
                name, target = source_name(os.path.join(d, f), top)
                # A build tree reused across a move keeps the old objects.
                if not os.path.exists(os.path.join(src, name)):
                    continue
                if name not in objs or target != "chorusd":
                    objs[name] = os.path.join(d, f)
                    TARGET[name] = target
    if not objs:
        print(f"layer_check: no object files under {top}", file=sys.stderr)
        return 2
    defs, uses = {}, {}
    syms = symbols(objs.values())
    for name, obj in objs.items():
        d, u = syms[obj]
        uses[name] = u
        for s in d:
            defs.setdefault(s, name)
    edges = {}
    why = {}
    for name, u in uses.items():
        for s in u:
            t = defs.get(s)
            if t and t != name:
                edges.setdefault(name, set()).add(t)
                why.setdefault((name, t), []).append(s)
    nedges = sum(len(v) for v in edges.values())
    print(f"{len(objs)} broker files, {nedges} dependencies between them")
    if verbose:
        for a in sorted(edges):
            for b in sorted(edges[a]):
                print(f"  {a} -> {b}: {', '.join(sorted(why[(a, b)]))}")
    comps = sccs(set(objs), edges)
    for c in comps:
        print(f"cycle of {len(c)} files: {' '.join(c)}")
    if not comps:
        print("no cycles")
    bad = []
    for a in sorted(edges):
        for b in sorted(edges[a]):
            if layer_rank(b) > layer_rank(a):
                bad.append((a, b))
    for a, b in bad:
        syms = sorted(why[(a, b)])
        more = f" (+{len(syms) - 3})" if len(syms) > 3 else ""
        print(f"layer violation: {a} ({layer_name(a)}) -> {b} ({layer_name(b)}): "
              f"{', '.join(syms[:3])}{more}")
    if not bad:
        print("no layer violations")
    return 1 if comps or bad else 0


if __name__ == "__main__":
    sys.exit(main())
