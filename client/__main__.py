"""``python -m client``: the ``stepanim`` command line."""

from client.cli import main

raise SystemExit(main())
