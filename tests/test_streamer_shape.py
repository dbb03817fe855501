"""The streamer stays one small machine: nothing outside offload/ writes its attributes (a run's values are
arguments, settings are given at construction), and no file of offload/ grows past 250 lines."""

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFLOAD = os.path.join(REPO, "offload")
SKIP = {".venv", ".git", "__pycache__", "hystream.egg-info", "hystream_demo", "node_modules"}
MAKERS = {"BlockStreamer", "streamed"}  # calls that return a streamer (tests/chain_model.py's `streamed`)
MAX_LINES = 250


def pack_files():
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP]
        if os.path.abspath(folder).startswith(OFFLOAD):
            continue
        yield from (os.path.join(folder, f) for f in files if f.endswith(".py"))


def _call_name(node) -> str | None:
    if isinstance(node, ast.Call):
        f = node.func
        return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
    return None


def streamer_writes(source: str, filename: str = "<string>") -> list[str]:
    """`x.streamer.attr = …`, `streamer.attr = …` (plain, augmented, annotated, setattr) and writes to a name
    bound to `BlockStreamer(…)` / `streamed(…)` in the same file."""
    tree = ast.parse(source, filename)
    made = {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) and _call_name(n.value) in MAKERS
            for t in n.targets if isinstance(t, ast.Name)}

    def is_streamer(node) -> bool:
        return ((isinstance(node, ast.Name) and (node.id == "streamer" or node.id in made))
                or (isinstance(node, ast.Attribute) and node.attr == "streamer"))

    def targets(node):
        if isinstance(node, ast.Assign):
            return node.targets
        if isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            return [node.target]
        if _call_name(node) == "setattr" and node.args:
            return [ast.Attribute(value=node.args[0], attr="<setattr>", lineno=node.lineno)]
        return []

    found = []
    for node in ast.walk(tree):
        pending = list(targets(node))
        while pending:
            t = pending.pop()
            if isinstance(t, (ast.Tuple, ast.List)):
                pending.extend(t.elts)
            elif isinstance(t, ast.Attribute) and is_streamer(t.value):
                found.append(f"{filename}:{node.lineno}: {ast.unparse(t.value)}.{t.attr} =")
    return found


def test_the_scan_sees_a_write():
    code = ("dit.streamer.budget_bytes = 3\nstreamer.interrupt = f\na.b.streamer.what += 'x'\n"
            "s = streamed(m)\ns.on_block, y = g, 1\nsetattr(te.streamer, 'make_room', h)\nother.x = 1\n")
    assert len(streamer_writes(code)) == 5, streamer_writes(code)


def test_no_streamer_attribute_is_written_outside_offload():
    found = []
    for path in pack_files():
        with open(path, encoding="utf-8") as f:
            found += streamer_writes(f.read(), os.path.relpath(path, REPO))
    assert not found, "\n".join(found)


def test_no_file_of_offload_exceeds_250_lines():
    long = {}
    for name in sorted(os.listdir(OFFLOAD)):
        if name.endswith(".py"):
            with open(os.path.join(OFFLOAD, name), encoding="utf-8") as f:
                n = len(f.read().splitlines())
            if n > MAX_LINES:
                long[name] = n
    assert not long, long
