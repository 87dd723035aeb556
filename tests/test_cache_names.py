"""Names from a server are validated before the cache touches the disk; the root is resolved as documented."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sinagot.cache import Cache, EntryKey, LocalFileSource, RemoteFile, resolve_cache_dir
from sinagot.connectors import validate_relative_path
from sinagot.errors import ServerError, UnsafeNameError

MD5 = "d41d8cd98f00b204e9800998ecf8427e"
BAD_NAMES = ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/", "./a", "a\\b", "a\x00b", ".."]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_unsafe_file_names_are_rejected(name: str) -> None:
    with pytest.raises(UnsafeNameError):
        RemoteFile(name, 0, MD5)


@pytest.mark.parametrize("name", [*BAD_NAMES, "0/.", "a/./b"])
def test_the_connectors_refuse_the_file_names_the_cache_refuses(name: str) -> None:
    # Found by tests/test_properties_config.py: "0/." passed as the file "0" by another name.
    with pytest.raises(UnsafeNameError):
        validate_relative_path(name, "file name")


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
        EntryKey("http://h:80/", "P", "S", "e")
    )


def test_the_path_of_the_server_is_part_of_the_key(tmp_path: Path) -> None:
    # Two XNATs behind one reverse proxy: https://h/xnatA and https://h/xnatB.
    cache = Cache(tmp_path)
    servers = (
        "https://h",
        "https://h/xnatA",
        "https://h/xnatB",
        "https://h/xnat/A",
        "https://h/xnat-A",
    )
    dirs = {cache.entry_dir(EntryKey(server, "P", "S", "e")) for server in servers}
    assert len(dirs) == len(servers)
    # The same server however its URL is spelled.
    same = {
        cache.entry_dir(EntryKey(server, "P", "S", "e"))
        for server in ("https://h/xnatA", "https://H:443/xnatA/", "https://h/xnat%41")
    }
    assert same == {cache.entry_dir(EntryKey("https://h/xnatA", "P", "S", "e"))}
    # Without a path the folder keeps its old name: those caches stay valid.
    assert EntryKey("https://h", "P", "S", "e").relative_dir()[0] == "https-h-443"


def test_a_server_path_cannot_alias_another_host_or_port(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    # "-" may be in a host name: the path must not make h:80/8080 look like host h-80, port 8080.
    assert cache.entry_dir(EntryKey("http://h:80/8080", "P", "S", "e")) != cache.entry_dir(
        EntryKey("http://h-80:8080", "P", "S", "e")
    )
    for path in ("..", "a/../..", "%2F..%2F"):
        folder = cache.entry_dir(EntryKey(f"http://h/{path}", "P", "S", "e"))
        assert folder.is_relative_to(tmp_path) and ".." not in folder.relative_to(tmp_path).parts


def test_a_server_path_too_long_for_a_folder_name_is_rejected() -> None:
    with pytest.raises(UnsafeNameError, match="255-byte limit"):
        EntryKey("https://h/" + "\u00e9" * 100, "P", "S", "e")


async def test_servers_on_one_host_keep_their_own_entries(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.bin").write_bytes(b"x" * 10)
    files = [RemoteFile("a.bin", 10, hashlib.md5(b"x" * 10).hexdigest())]
    for server in ("https://h/xnatA", "https://h/xnatB"):
        await cache.fetch(EntryKey(server, "P", "S", "e"), files, LocalFileSource(source))
    assert len(cache.entries()) == 2


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

        def stream(self, file: RemoteFile, offset: int, end: int | None = None) -> object:
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
