"""The `phenaki` subcommands, one module each; `phenaki_pytorch.cli` parses and dispatches to them.

Each module has `register(subparsers)`, which adds its parser(s) with `set_defaults(func=...)`, and the
command functions `cmd_*(args) -> exit status`. The dependency runs one way: `cli` imports these modules,
they import `common` and the library, and nothing here imports `cli`. Heavy imports (torch, the models)
happen inside the command functions, so `phenaki --help` is fast.
"""
