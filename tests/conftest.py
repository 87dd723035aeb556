"""Shared pytest configuration."""

# The emulator's fixtures first: the daemon fixtures import the emulator package.
pytest_plugins = ["sinagot.testing.pytest_plugin", "xnat_daemon_fixtures"]
