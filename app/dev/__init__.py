"""Tools for development, tests and demos; nothing that serves production imports them.

- :mod:`app.dev.devstack`: real Postgres and Redis servers started from local binaries or wheels.
- :mod:`app.dev.local`: the configured servers, or local ones under the data folder.
- :mod:`app.dev.sandbox_psp`: the sandbox payment service provider (docs/sandbox-psp.md).
"""
