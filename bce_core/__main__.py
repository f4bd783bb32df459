"""``python -m bce_core`` is the ``bce`` command."""

from .cli import main

raise SystemExit(main())
