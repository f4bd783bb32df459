"""Doctests of modules whose framework is not installed are not collected."""

import importlib.util

#: The drop-in modules of bce_core and the framework each imports.
DROP_INS = {
    "torch": "torch",
    "keras": "keras",
    "optax": "optax",
    "sklearn": "sklearn",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
}

collect_ignore_glob = [
    f"backends/bce_{framework}/*"
    for framework in ("torch", "tensorflow", "jax")
    if importlib.util.find_spec(framework) is None
] + [
    f"bce_core/{module}.py"
    for module, framework in DROP_INS.items()
    if importlib.util.find_spec(framework) is None
]
