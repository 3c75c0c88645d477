"""``prefopt`` subcommands: one module per command group, each exposing ``register(subparsers)``.

``register`` adds its parser(s) and sets ``func`` (``args -> exit status``) as the parser default.
The command list lives in :data:`prefopt.cli.COMMANDS`.
"""
