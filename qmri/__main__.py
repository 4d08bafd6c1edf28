"""``python -m qmri``: the ``qmri`` command line (:func:`qmri.cli.main`)."""

from qmri.cli import main

raise SystemExit(main())
