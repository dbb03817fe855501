"""Model families: one package each (families/<name>/), the types the engine talks to them through
(base.py) and the registry the engine finds them in (registry.py). Empty on purpose: importing the types
must not import every family."""
