"""Output storage on a local folder: keys cannot escape the root; writes are atomic and replace whole."""

from __future__ import annotations

import os

import pytest

from ltx_batch.io.storage import Storage


@pytest.fixture()
def root(tmp_path):
    out = tmp_path / "out"
    return out


def _all_files(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


@pytest.mark.parametrize(
    "key",
    ["../x", "/abs", "/etc/passwd", "a/../../b", "..", ".", "", "videos/../../x.mp4", "a\\..\\b", "\\abs", "a/\x00",
     "a/../b", "./a", "a//b"],
)  # fmt: skip
def test_escaping_or_odd_keys_raise(tmp_path, root, key):
    storage = Storage(str(root))
    for op in (lambda: storage.write_bytes(key, b"x"), lambda: storage.read_bytes(key), lambda: storage.exists(key),
               lambda: storage.path(key), lambda: storage.url(key)):  # fmt: skip
        with pytest.raises(ValueError):
            op()
    assert _all_files(tmp_path) == []  # nothing written anywhere under tmp_path, inside or outside the root


def test_row_id_keys_stay_inside(root):
    storage = Storage(str(root))
    for row_id in ("...", ".hidden", "a.b-c_d"):  # valid row ids that look like path tricks
        storage.write_bytes(f"metadata/{row_id}.json", b"{}")
    assert _all_files(root) == ["metadata/....json", "metadata/.hidden.json", "metadata/a.b-c_d.json"]


def test_write_read_exists_listdir(root):
    storage = Storage(str(root) + "/")  # a trailing slash on the root is fine
    assert not storage.exists("videos/a.mp4")
    assert storage.listdir("videos") == []
    storage.write_bytes("videos/a.mp4", b"aaa")
    storage.write_bytes("videos/b.mp4", b"bbbb")
    storage.write_bytes("metadata/a.json", b"{}")
    assert storage.exists("videos/a.mp4") and storage.exists("videos")
    assert storage.read_bytes("videos/b.mp4") == b"bbbb"
    assert storage.listdir("videos") == ["a.mp4", "b.mp4"]
    assert storage.listdir("metadata") == ["a.json"]
    assert storage.url("videos/a.mp4") == f"{root}/videos/a.mp4"
    assert (root / "videos" / "a.mp4").read_bytes() == b"aaa"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("videos/missing.mp4")


def test_listdir_sees_new_files_from_another_instance(root):
    a, b = Storage(str(root)), Storage(str(root))
    a.write_bytes("results/r1.parquet", b"1")
    assert b.listdir("results") == ["r1.parquet"]
    b.write_bytes("results/r2.parquet", b"2")
    assert a.listdir("results") == ["r1.parquet", "r2.parquet"]


def test_write_replaces_the_target_whole_and_leaves_no_partials(root):
    storage = Storage(str(root))
    storage.write_bytes("frames/x.npy", b"0123456789" * 1000)
    inode = os.stat(root / "frames" / "x.npy").st_ino
    storage.write_bytes("frames/x.npy", b"short")
    assert storage.read_bytes("frames/x.npy") == b"short"  # not the old bytes with a new head
    # replaced by rename (a new file), not rewritten in place: a reader never sees a half-written object
    assert os.stat(root / "frames" / "x.npy").st_ino != inode
    assert _all_files(root) == ["frames/x.npy"]
    assert not [f for f in _all_files(root) if "partial" in f]


def test_failed_write_leaves_neither_target_nor_partial(root):
    storage = Storage(str(root))
    storage.write_bytes("metadata/a.json", b"old")
    with pytest.raises(TypeError):
        storage.write_bytes("metadata/a.json", object())  # fails while writing the temporary file
    with pytest.raises(TypeError):
        storage.write_bytes("metadata/b.json", object())
    assert _all_files(root) == ["metadata/a.json"]
    assert storage.read_bytes("metadata/a.json") == b"old"  # the previous object is untouched


def test_relative_root_is_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = Storage("outputs/demo")
    storage.write_bytes("videos/a.mp4", b"x")
    assert (tmp_path / "outputs" / "demo" / "videos" / "a.mp4").read_bytes() == b"x"


def test_object_store_keys_are_checked_too():
    storage = Storage("memory://ltx-batch-test-bucket/prefix")
    assert storage.is_object_store
    storage.write_bytes("videos/a.mp4", b"x")
    assert storage.read_bytes("videos/a.mp4") == b"x" and storage.listdir("videos") == ["a.mp4"]
    for key in ("../x", "/abs", "a/../../b"):
        with pytest.raises(ValueError):
            storage.write_bytes(key, b"x")
    storage.fs.rm("/ltx-batch-test-bucket", recursive=True)
