"""``python -m kaito_core.testing [names...]``: build the control-plane binaries (cached)."""

from kaito_core.testing.build import main

raise SystemExit(main())
