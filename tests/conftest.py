"""Shared pytest configuration."""

# The emulator's fixtures first: the daemon fixtures import the emulator package.
pytest_plugins = [
    "sinagot.testing.pytest_plugin",
    "xnat_daemon_fixtures",
    # tiny_fs: a small tmpfs that fills up (disk-full tests)
    "cache_disk_fixtures",
    # the browser (chromium) and the screenshots folder of the status page tests
    "browser_support",
]
