from sparsify.cli import main

raise SystemExit(main())
