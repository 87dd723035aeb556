"""Shared pytest configuration."""

pytest_plugins = ["sinagot.testing.pytest_plugin"]
