"""`nitisim calibrate`: probe this host and write an accelerator YAML that models it.

probes.py measures (GEMM rate per shape class, vector rate, call cost, memory bandwidth, caches);
document.py turns the measurements into a config hwmodels reads like any other; cli.py is the command.
"""
