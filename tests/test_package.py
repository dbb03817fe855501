"""The pack's shape: imports outside ComfyUI, relative imports only, the floors of DESIGN.md, and the
host import boundary (nodes/host.py)."""

import ast
import os
from pathlib import Path

import hystream

ROOT = os.path.dirname(hystream.__file__)
HOST_MODULES = {"comfy", "folder_paths", "latent_preview", "server", "comfy_execution", "node_helpers", "comfy_api"}
# Each floor may import only what stands below it (docs/DESIGN.md, "Layout"). Model families sit above the engine's
# building blocks and below the stages that use them through the registry.
FAMILY_PACKAGES = {f"families.{d}" for d in os.listdir(os.path.join(ROOT, "families"))
                   if os.path.isdir(os.path.join(ROOT, "families", d)) and not d.startswith("__")}
FLOORS = [
    {"errors", "sizes", "memory_probe", "comfy_server", "quant", "families"},  # leaves
    {"numerics", "families.base"},
    {"offload", "models", "vae", "sampling", "video_writer"},
    {"loaders", "parallel"},
    FAMILY_PACKAGES,  # each family: the engine's building blocks, its own maths and files
    {"families.registry"},  # the one place that imports the families
    {"loading", "video_stages", "video_io"},
    {"pipeline"},
    {"planner", "long_video"},
    {"rank_workers"},  # a stage spread over worker processes (sampling, long video, decode)
    {"nodes", "cli"},
    {"__init__", "__main__"},  # entry points: ComfyUI's and `python -m hystream`'s
]


def pack_files():
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = os.path.relpath(dirpath, ROOT)
        top = rel_dir.split(os.sep)[0]
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in ("tests", "bench", "build", "scripts")]
        elif top in ("tests", "bench", "scripts", "example_workflows", ".git", ".venv", "build") or top.startswith("."):
            dirnames[:] = []
            continue
        for f in filenames:
            if f.endswith(".py"):
                yield os.path.normpath(os.path.join(rel_dir, f))


def imports(path):
    tree = ast.parse(Path(ROOT, path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.module:
                yield node.level, node.module
            else:  # `from .. import pipeline`: the names are the modules
                for alias in node.names:
                    yield node.level, alias.name


def unit(path):
    parts = path.split(os.sep)
    if parts[0] == "families" and len(parts) > 1:  # families/base.py, families/registry.py, families/<name>/…
        return "families" if parts[1] == "__init__.py" else "families." + parts[1].removesuffix(".py")
    return parts[0][:-3] if len(parts) == 1 else parts[0]


def floor_of(name):
    return next(i for i, f in enumerate(FLOORS) if name in f)


def target_unit(path, level, module):
    """The unit a relative import lands in (a family package, the registry or the types count on their own)."""
    parts = path.split(os.sep)[:-1]
    base = parts[: len(parts) - (level - 1)] if level > 1 else parts
    full = base + (module.split(".") if module else [])
    if full[:1] == ["families"] and len(full) > 1:
        return "families." + full[1]
    return full[0] if full else "__init__"


def test_imports_without_the_host():
    assert hystream.NODE_CLASS_MAPPINGS == {} or isinstance(hystream.NODE_CLASS_MAPPINGS, dict)
    from hystream.nodes import host

    assert host.HOST_AVAILABLE is False


def test_walks_the_whole_pack():
    files = set(pack_files())
    assert {"__init__.py", "errors.py", os.path.join("loaders", "dit_loader.py"), os.path.join("nodes", "host.py")} <= files


def test_host_imports_only_in_nodes_host():
    offenders = [(p, m) for p in pack_files() for lvl, m in imports(p)
                 if lvl == 0 and m.split(".")[0] in HOST_MODULES and p != os.path.join("nodes", "host.py")]
    assert not offenders, offenders


def test_never_imports_diffusers_or_itself_by_name():
    bad = [(p, m) for p in pack_files() for lvl, m in imports(p) if lvl == 0 and m.split(".")[0] in ("diffusers", "hystream")]
    assert not bad, bad


def test_floors():
    bad = []
    for p in pack_files():
        src = unit(p)
        for level, module in imports(p):
            if level == 0:
                continue
            dst = target_unit(p, level, module)
            if dst != src and floor_of(dst) >= floor_of(src):
                bad.append(f"{p} imports {'.' * level}{module} ({dst} is not below {src})")
    assert not bad, bad


def test_pyproject_never_pins_torch():
    text = Path(ROOT, "pyproject.toml").read_text() + Path(ROOT, "requirements.txt").read_text()
    for line in text.splitlines():
        if line.strip().strip('",').startswith("torch"):
            assert line.strip().strip('",') == "torch", line


def test_pyproject_lists_every_package_of_the_pack():
    """A regular (not editable) install ships only the packages pyproject names: a new folder must be listed."""
    import re

    text = Path(ROOT, "pyproject.toml").read_text()
    listed = set(re.findall(r'"(hystream(?:\.[\w.]+)?)"', text.split("packages =", 1)[1].split("]", 1)[0]))
    found = {"hystream"} | {"hystream." + os.path.dirname(p).replace(os.sep, ".") for p in pack_files()
                            if os.path.basename(p) == "__init__.py" and os.path.dirname(p)}
    assert found == listed, (sorted(found - listed), sorted(listed - found))


def test_the_engine_never_imports_a_family():
    """Families are found through the registry (families/registry.py), never imported by the engine: adding a
    family is one package and one registry line."""
    bad = []
    for p in pack_files():
        src = unit(p)
        for level, module in imports(p):
            dst = target_unit(p, level, module) if level else module.removeprefix("hystream.")
            if dst in FAMILY_PACKAGES and src not in (dst, "families.registry"):
                bad.append(f"{p} imports {'.' * level}{module}")
    assert not bad, bad
