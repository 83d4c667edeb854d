from funboost.cli import main

raise SystemExit(main())
