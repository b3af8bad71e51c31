"""Module boundaries: no private names imported across modules, no import circle in the package, no
import of the GAN by the metrics."""
import ast
import functools
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "retina_fast"


def _modules():
    """{dotted module name: path} of every .py file in the package."""
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


@functools.cache
def _imports(name):
    """(base module, imported name or None, line) of every import in module `name`, at module level
    and inside functions alike."""
    return tuple(_walk_imports(name))


def _walk_imports(name):
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                yield base, alias.name, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno


def test_no_private_names_imported_across_modules():
    bad = []
    for name in sorted(MODULES):
        for base, imported, line in _imports(name):
            if not base.startswith("retina_fast") or imported is None:
                continue
            private = imported.startswith("_") and not imported.startswith("__")
            # a private submodule (the native extension's loader, `_C`) is a module, not a shared name
            if private and f"{base}.{imported}" not in MODULES and imported != "_C":
                bad.append(f"{MODULES[name].relative_to(PACKAGE.parent)}:{line}: from {base} import {imported}")
        bad += _private_attributes(name)
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def _private_attributes(name):
    """`module._name` uses in module `name`, where `module` is another module of the package."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if isinstance(node, ast.Import):
                    target = alias.name
                else:
                    base = next(b for b, i, _ in _imports(name) if i == alias.name)
                    target = f"{base}.{alias.name}"
                if target in MODULES and target != name:
                    bound[alias.asname or alias.name.split(".")[0]] = target
    return [f"{MODULES[name].relative_to(PACKAGE.parent)}:{node.lineno}: {node.value.id}.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
            and node.attr.startswith("_") and not node.attr.startswith("__")]


def _targets(name):
    """Modules of the package that module `name` imports (at module level or inside functions):
    ``from pkg import sub`` counts as an import of ``pkg.sub``, and the compiled extension ``_C``
    (no Python source, it imports nothing back) is left out."""
    out = set()
    for base, imported, _ in _imports(name):
        if imported == "_C" and f"{base}._C" not in MODULES:
            continue
        target = f"{base}.{imported}" if imported and f"{base}.{imported}" in MODULES else base
        if target in MODULES and target != name:
            out.add(target)
    return out


def _edges(prefix):
    edges = {m: set() for m in MODULES if m == prefix.rstrip(".") or m.startswith(prefix)}
    for m in edges:
        edges[m] = {t for t in _targets(m) if t in edges}
    return edges


def _assert_no_circle(edges):
    # depth-first search for a back edge; imports inside functions count too
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == "open":
                raise AssertionError("import circle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("package", ["retina_fast.vessels.", "retina_fast.classify.", "retina_fast.data."])
def test_no_import_circle(package):
    _assert_no_circle(_edges(package))


def test_no_import_circle_in_the_package():
    # the whole package at once: a circle through several subpackages counts as well
    _assert_no_circle(_edges("retina_fast."))


def test_metrics_do_not_import_the_gan():
    # the metrics measure images from any source; a generator is loaded by its callers
    bad = sorted(f"{m}: {t}" for m in MODULES if m == "retina_fast.metrics" or m.startswith("retina_fast.metrics.")
                 for t in _targets(m) if t == "retina_fast.gan" or t.startswith("retina_fast.gan."))
    assert not bad, "metrics modules importing the GAN:\n" + "\n".join(bad)


def test_data_layer_does_not_import_classify():
    bad = [f"{m}: {base}" for m in MODULES if m.startswith("retina_fast.data")
           for base, _, _ in _imports(m) if base.startswith("retina_fast.classify")]
    assert not bad


def test_no_function_over_120_lines():
    """Long functions are split into named steps that read top to bottom (docstring included)."""
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 120:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def test_one_home_for_atomic_writes_and_device_resolution():
    """Files are replaced atomically only by `retina_fast.fileio`, and devices resolved only by
    `retina_fast.device`: no hand-written copies elsewhere."""
    replaces, resolvers = [], []
    for path in PACKAGE.rglob("*.py"):
        rel = str(path.relative_to(PACKAGE.parent))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("replace", "rename") \
                    and isinstance(node.value, ast.Name) and node.value.id in ("os", "_os"):
                replaces.append(f"{rel}:{node.lineno}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "is_available" and "cuda" in ast.unparse(node.func.value):
                resolvers.append(rel)
    assert all(r.startswith("retina_fast/fileio.py") for r in replaces), replaces
    # 'auto' is decided in device.py; the other two only save/restore CUDA RNG state or pick cupy
    assert set(resolvers) <= {"retina_fast/device.py", "retina_fast/gan/snapshot.py",
                              "retina_fast/vessels/segment.py"}, sorted(set(resolvers))
