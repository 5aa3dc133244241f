"""The contract floor: what every reader of the integer training graph agrees on.

ops (the op rows), numerics (the exact arithmetic), models (specs and shapes), graph (the frozen
training graph), executor (the backend-independent step), reference (the numpy kernel table, the
definition of every op), init, errors, values and strict_yaml (reading user input), shipped (where
the packaged configs live). Modules here import only each other, numpy and PyYAML; gpu_backend and
hwmodels import only this floor of nitisim, and the application (the rest of nitisim) sits above all
three. tests/test_layering.py holds that line.
"""
