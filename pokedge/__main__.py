from pokedge.cli import main

raise SystemExit(main())
