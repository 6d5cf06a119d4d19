"""One module per command; each has ``register(subparsers)`` and handlers returning an exit code."""
