"""Tooling around imagejobs that never ships to Lambda: the provider simulator,
the local stack and the command-line interface."""
