"""The machine a run was measured on: CPU model, cores, load, Python and framework versions.

Versions are read from the installed distributions' metadata, so describing
the machine imports no framework.

>>> info = machine_info()
>>> info["cores"] >= 1 and "numpy" in info["versions"]
True
>>> "Python" in describe(info)
True
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

#: Distributions whose versions matter to the timings.
PACKAGES = (
    "bce-core",
    "numpy",
    "ml_dtypes",
    "torch",
    "tensorflow",
    "keras",
    "jax",
    "jaxlib",
    "optax",
)


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform module knows."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def versions() -> dict[str, str]:
    """Installed versions of the packages that matter, by distribution name."""
    found = {}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def machine_info() -> dict[str, Any]:
    """Everything the header and the JSON say about the machine."""
    try:
        load = [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        load = []
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "logical_cpus": os.cpu_count(),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "versions": versions(),
        "load_average": load,
    }


def describe(info: dict[str, Any]) -> str:
    """One sentence naming the machine, for the header and the README."""
    packages = ", ".join(f"{name} {version}" for name, version in info["versions"].items())
    load = info["load_average"]
    at_start = f"; load average {load[0]:g} at the start" if load else ""
    return (
        f"{info['cpu']}, {info['cores']} cores available ({info['logical_cpus']} logical "
        f"CPUs), {info['platform']}, {info['python']}; {packages}{at_start}"
    )
