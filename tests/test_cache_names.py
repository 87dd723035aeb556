"""Names from a server are validated before the cache touches the disk; the root is resolved as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from sinagot.cache import Cache, EntryKey, RemoteFile, resolve_cache_dir
from sinagot.errors import ServerError, UnsafeNameError

MD5 = "d41d8cd98f00b204e9800998ecf8427e"
BAD_NAMES = ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/", "./a", "a\\b", "a\x00b", ".."]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_unsafe_file_names_are_rejected(name: str) -> None:
    with pytest.raises(UnsafeNameError):
        RemoteFile(name, 0, MD5)


@pytest.mark.parametrize("field", ["project", "session", "entry"])
@pytest.mark.parametrize("name", [*BAD_NAMES])
def test_unsafe_key_parts_are_rejected(field: str, name: str) -> None:
    parts = {"server": "http://h:1", "project": "P", "session": "S", "entry": "scans/1"}
    parts[field] = name
    with pytest.raises(UnsafeNameError):
        EntryKey(**parts)


@pytest.mark.parametrize("field", ["project", "session"])
def test_project_and_session_are_single_names(field: str) -> None:
    parts = {"server": "http://h:1", "project": "P", "session": "S", "entry": "e"}
    parts[field] = "a/b"
    with pytest.raises(UnsafeNameError):
        EntryKey(**parts)


@pytest.mark.parametrize("server", ["ftp://h", "http://", "not a url", "http://h:99999"])
def test_bad_server_urls_are_rejected(server: str) -> None:
    with pytest.raises(UnsafeNameError):
        EntryKey(server, "P", "S", "e")


TOO_LONG = {
    "300 characters": "a" * 296 + ".csv",
    "256 bytes in 128 characters": "\u00e9" * 128,
    "a folder over 255 bytes": "d" * 256 + "/x.csv",
    "over 3072 bytes in all": "/".join(["d" * 250] * 13),
}


@pytest.mark.parametrize("name", TOO_LONG.values(), ids=TOO_LONG.keys())
def test_file_names_too_long_for_the_file_system_are_rejected(name: str) -> None:
    with pytest.raises(UnsafeNameError, match=r"over the (255|3072)-byte limit") as info:
        RemoteFile(name, 0, MD5)
    assert name not in str(info.value)  # shortened: a message stays readable
    assert len(str(info.value)) < 250


def test_file_names_at_the_limits_are_accepted() -> None:
    RemoteFile("a" * 255, 0, MD5)
    RemoteFile("\u00e9" * 127 + "a", 0, MD5)
    RemoteFile("/".join(["d" * 255] * 12), 0, MD5)


@pytest.mark.parametrize("field", ["project", "session", "entry"])
def test_key_parts_too_long_for_a_folder_name_are_rejected(field: str) -> None:
    parts = {"server": "http://h:1", "project": "P", "session": "S", "entry": "scans/1"}
    # 200 bytes in UTF-8, but the cache folder name percent-encodes them to 600.
    parts[field] = "\u00e9" * 100
    with pytest.raises(UnsafeNameError, match="255-byte limit"):
        EntryKey(**parts)


def test_bad_digest_and_size_are_server_errors() -> None:
    with pytest.raises(ServerError):
        RemoteFile("a", 1, "xyz")
    with pytest.raises(ServerError):
        RemoteFile("a", -1, MD5)
    assert RemoteFile("a", 0, MD5.upper()).digest == MD5


def test_host_and_port_are_part_of_the_key(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    dirs = {
        cache.entry_dir(EntryKey(server, "P", "S", "scans/1/resources/EEG"))
        for server in ("http://h:8080", "http://h:8081", "http://g:8080", "https://h:8080")
    }
    assert len(dirs) == 4
    assert cache.entry_dir(EntryKey("http://H", "P", "S", "e")) == cache.entry_dir(
        EntryKey("http://h:80/xnat", "P", "S", "e")
    )


def test_nested_entries_never_share_a_folder(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    outer = cache.entry_dir(EntryKey("http://h", "P", "S", "scans/1"))
    inner = cache.entry_dir(EntryKey("http://h", "P", "S", "scans/1/resources/EEG"))
    assert outer.parent == inner.parent
    assert not inner.is_relative_to(outer)


@pytest.mark.parametrize(
    "names",
    [["a", "a"], ["a", "a/b"], ["x/y", "x/y/z"]],
    ids=["duplicate", "file-vs-folder", "deep"],
)
async def test_colliding_file_lists_are_rejected_before_touching_disk(
    tmp_path: Path, names: list[str]
) -> None:
    root = tmp_path / "cache"
    cache = Cache(root)
    files = [RemoteFile(n, 0, MD5) for n in names]

    class NeverRead:
        supports_range = False

        def stream(self, file: RemoteFile, offset: int) -> object:
            raise AssertionError("must not be read")

    with pytest.raises(UnsafeNameError):
        await cache.fetch(EntryKey("http://h", "P", "S", "e"), files, NeverRead())  # type: ignore[arg-type]
    assert not root.exists()


def test_resolve_cache_dir_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_DIRECTORY", f"{tmp_path / 'systemd'}:{tmp_path / 'other'}")
    assert resolve_cache_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_cache_dir(None) == tmp_path / "systemd"
    monkeypatch.delenv("CACHE_DIRECTORY")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir(None) == tmp_path / "xdg" / "sinagot"
