from nightear.cli import main

raise SystemExit(main())
