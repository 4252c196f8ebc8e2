"""The ``berth`` command and the development tools behind it (the local stack, image push)."""
