from kaito_core.cli import main

raise SystemExit(main())
