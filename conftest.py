"""Doctests of modules whose framework is not installed are not collected."""

import importlib.util

collect_ignore_glob = [
    f"backends/bce_{framework}/*"
    for framework in ("torch", "tensorflow", "jax")
    if importlib.util.find_spec(framework) is None
] + [
    f"bce_core/{framework}.py"
    for framework in ("xgboost", "lightgbm")
    if importlib.util.find_spec(framework) is None
]
