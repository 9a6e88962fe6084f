"""``python -m kaito_presets.runtime.weights``: see :mod:`kaito_presets.runtime.weights.cli`."""

from .cli import main

raise SystemExit(main())
