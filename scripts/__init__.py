"""Development tools: the local stack (``scripts.devstack``), ``make demo`` and ``make serve``. Not part of the
installed service; run them from the repository root as modules (``python -m scripts.demo``)."""
