"""Model files picked in a node: the check at queue time (VALIDATE_INPUTS) and at run time, with our message
naming the input, the folder searched and what to do."""

from __future__ import annotations

from ..errors import NotFoundError
from . import host


def missing_file(folder: str, name, input_name: str) -> bool | str:
    """VALIDATE_INPUTS answer: True, or our message naming the input. A None name is an input linked
    from another node (a switch, a primitive): its value exists only at run time, checked by model_file."""
    if name is None or (isinstance(name, str) and name and host.model_path(folder, name)):
        return True
    return file_message(folder, name, input_name)


def file_message(folder: str, name, input_name: str) -> str:
    return (f"{input_name}: File not found: expected {name!r} in {host.folder_description(folder)}; found "
            f"{len(host.model_files(folder))} other files there. What to do: put the file in "
            f"{host.models_dir(folder)} (or an extra_model_paths folder), refresh the page and pick it in {input_name}.")


def model_file(folder: str, name, input_name: str) -> str:
    """The full path of a model file, or our error (run time; linked inputs skip VALIDATE_INPUTS)."""
    path = host.model_path(folder, name) if isinstance(name, str) and name else None
    if path is None:
        raise NotFoundError(f"a file from models/{folder} in {input_name}", f"{name!r}",
                            file_message(folder, name, input_name).split("What to do: ", 1)[1])
    return path
