"""The registry of model families. The engine finds families here, never by importing their packages.

Adding a family: one package under families/ and one line in FAMILIES."""
