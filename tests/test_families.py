"""Model families stay in their packages: the engine names none of a family's classes, functions or constants,
uses none of its distinctive numbers or key names, and finds every family through the registry. (The
import rule itself — the engine never imports a family package — is tests/test_package.py.)"""

import ast
import os

import pytest

from hystream.families import registry
from test_package import ROOT, pack_files

FAMILY_DIRS = sorted(d for d in os.listdir(os.path.join(ROOT, "families"))
                     if os.path.isdir(os.path.join(ROOT, "families", d)) and not d.startswith("__"))
# Key fragments and file names only a family's files have (the engine must not read files by them)
FAMILY_LITERALS = ("double_blocks", "single_blocks", "txt_in", "img_in", "vector_in", "guidance_in", "final_layer",
                   "individual_token_refiner", "llava", "clip_l", "hunyuan_video_", "byt5", "qwen_2.5", "vision_in",
                   "cond_type_embedding")
# The catalogue of what a wrong file is (foreign families included), for "you gave me the wrong file" errors
DESCRIBES_FILES = {os.path.join("loaders", "model_kind.py")}


def family_files(name):
    return [p for p in pack_files() if p.startswith(os.path.join("families", name) + os.sep)]


def engine_files():
    return [p for p in pack_files() if not p.startswith(os.path.join("families", ""))
            or p in (os.path.join("families", "base.py"), os.path.join("families", "__init__.py"))]


def tree(path):
    return ast.parse(open(os.path.join(ROOT, path)).read())


def defined(path) -> dict[str, object]:
    """Top-level classes, functions and constants of a module, with a constant's value."""
    names = {}
    for node in tree(path).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names[node.name] = None
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name) and t.id.isupper():
                    names[t.id] = node.value
    return names


def methods(path) -> set[str]:
    """Methods of a module's classes: an interface the engine defines (families/base.py) may share a name with
    a family's function."""
    return {f.name for c in tree(path).body if isinstance(c, ast.ClassDef) for f in c.body
            if isinstance(f, ast.FunctionDef)}


def used_names(path) -> set[str]:
    out = set()
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Name):
            out.add(node.id)
        elif isinstance(node, ast.Attribute):
            out.add(node.attr)
        elif isinstance(node, ast.ImportFrom):
            out.update(a.name for a in node.names)
    return out


def constants(path):
    """Every literal of a module's code (docstrings excluded)."""
    t = tree(path)
    docstrings = {id(n.body[0].value) for n in ast.walk(t) if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(t) if isinstance(n, ast.Constant) and id(n) not in docstrings]


def test_there_is_a_family_and_the_registry_lists_each_package():
    assert FAMILY_DIRS and {f.name for f in registry.FAMILIES} == set(FAMILY_DIRS)


@pytest.mark.parametrize("family", FAMILY_DIRS)
def test_the_engine_names_nothing_a_family_defines(family):
    engine_defines = {n for p in engine_files() for n in defined(p)} | {n for p in engine_files() for n in methods(p)}
    theirs = {n for p in family_files(family) for n in defined(p)} - engine_defines
    hits = [(p, sorted(used_names(p) & theirs)) for p in engine_files()]
    assert not [h for h in hits if h[1]], [h for h in hits if h[1]]


@pytest.mark.parametrize("family", FAMILY_DIRS)
def test_the_engine_uses_none_of_a_familys_numbers(family):
    """Distinctive numbers (a VAE's scaling factor, a polynomial's coefficients, a RoPE theta) live with their
    family: a non-round float constant of a family module must not appear in the engine."""
    numbers = set()
    for p in family_files(family):
        for value in defined(p).values():
            for n in ast.walk(value) if value is not None else ():
                if isinstance(n, ast.Constant) and isinstance(n.value, float) and n.value != round(n.value, 1) \
                        and abs(n.value) >= 1e-3:  # epsilons (1e-6 norms) are everyone's
                    numbers.add(n.value)
    assert numbers, "the family defines no distinctive numbers? (the check would be empty)"
    hits = [(p, v) for p in engine_files() for v in constants(p) if isinstance(v, float) and v in numbers]
    assert not hits, hits


def test_the_engine_reads_no_files_by_a_familys_key_names():
    hits = [(p, v) for p in engine_files() if p not in DESCRIBES_FILES for v in constants(p)
            if isinstance(v, str) and any(k in v.lower() for k in FAMILY_LITERALS)]
    assert not hits, hits


def test_the_checks_can_fail():
    """The scans see a family's names and literals where they are used: inside the family package."""
    ours = family_files(FAMILY_DIRS[0])
    assert any("DoubleStreamBlock" in used_names(p) or "infer_dit_config" in used_names(p) for p in ours)
    assert any(isinstance(v, str) and "double_blocks" in v for p in ours for v in constants(p))
