from repomount.cli import main

raise SystemExit(main())
