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


class _Flaky:
    """Raises ``error`` the first ``times`` calls, then calls through."""

    def __init__(self, fn, error: Exception, times: int):
        self.fn, self.error, self.times, self.calls = fn, error, times, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.times:
            raise self.error
        return self.fn(*args, **kwargs)


def test_transient_storage_errors_are_retried_then_named(tmp_path, monkeypatch):
    from botocore.exceptions import EndpointConnectionError

    from ltx_batch.io import storage as storage_mod
    from ltx_batch.io.storage import StorageError

    sleeps = []
    monkeypatch.setattr(storage_mod.time, "sleep", sleeps.append)
    st = Storage(str(tmp_path / "out"))
    outage = EndpointConnectionError(endpoint_url="http://127.0.0.1:1/bucket/k")
    flaky = _Flaky(st.fs.pipe_file, outage, times=3)
    monkeypatch.setattr(st.fs, "pipe_file", flaky)
    st.write_bytes("videos/a.mp4", b"x")  # three failures, then the write goes through
    assert st.read_bytes("videos/a.mp4") == b"x" and flaky.calls == 4 and sleeps == [1.0, 2.0, 4.0]

    # an outage that outlasts the budget: a StorageError naming the URL and the cause
    monkeypatch.setattr(storage_mod, "RETRY_SECONDS", 0.5)
    monkeypatch.setattr(st.fs, "pipe_file", _Flaky(st.fs.pipe_file, outage, times=99))
    with pytest.raises(StorageError, match=r"cannot write .*/out/videos/b.mp4: EndpointConnectionError"):
        st.write_bytes("videos/b.mp4", b"x")

    # definite answers are not retried: a denied write fails at once, naming the URL
    denied = _Flaky(st.fs.pipe_file, PermissionError("Forbidden"), times=99)
    monkeypatch.setattr(st.fs, "pipe_file", denied)
    with pytest.raises(StorageError, match=r"cannot write .*/out/videos/c.mp4: PermissionError: Forbidden"):
        st.write_bytes("videos/c.mp4", b"x")
    assert denied.calls == 1
    # a read of a missing object stays a FileNotFoundError (callers use it); a listing of nothing is empty
    with pytest.raises(FileNotFoundError):
        st.read_bytes("videos/none.mp4")
    assert st.listdir("nothing-here") == []


def test_transient_classification():
    from botocore.exceptions import ClientError, EndpointConnectionError

    from ltx_batch.io.storage import is_transient

    slow = ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}}, "PutObject")
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "PutObject")
    wrapped = OSError("request failed")
    wrapped.__cause__ = EndpointConnectionError(endpoint_url="http://x")
    assert is_transient(slow) and is_transient(wrapped) and is_transient(ConnectionResetError())
    assert not is_transient(denied) and not is_transient(FileNotFoundError("no such bucket"))
    assert not is_transient(PermissionError("503 in a message does not make a denial transient"))
    # an OSError's text holds paths: a read-only file system stays final whatever the file is called
    assert not is_transient(OSError(30, "Read-only file system", "/out/videos/.shot-503.mp4.ab12.partial"))


def test_storage_options_only_reach_urls_on_the_jobs_storage():
    from types import SimpleNamespace

    from ltx_batch.io.storage import options_for

    job = SimpleNamespace(storage_options={"client_kwargs": {"endpoint_url": "http://minio:9000"}},
                          input="s3://b/m.parquet", output="s3://b/out")  # fmt: skip
    assert options_for("s3://b/media/a.png", job) == job.storage_options
    assert options_for("http://cdn.example/a.png", job) == {} and options_for("/data/a.png", job) == {}
    mixed = SimpleNamespace(storage_options={"auto_mkdir": True}, input="/data/m.parquet", output="s3a://b/o")
    assert options_for("/data/a.png", mixed) == mixed.storage_options  # s3a and s3 are one storage too
    assert options_for("s3://b/a.png", mixed) == mixed.storage_options
    # a local job's options are for the remote storage its conditions live on (MinIO, say), not for http
    local = SimpleNamespace(storage_options=job.storage_options, input="/data/m.parquet", output="/data/out")
    assert options_for("s3://b/a.png", local) == job.storage_options
    assert options_for("https://cdn.example/a.png", local) == {}
    assert options_for("s3://b/a.png", SimpleNamespace(storage_options={}, input=None, output="s3://b")) == {}


def test_read_many_gives_up_once_for_an_outage_not_once_per_key(tmp_path, monkeypatch):
    from ltx_batch.io import storage as storage_mod
    from ltx_batch.io.storage import StorageError

    st = Storage(str(tmp_path / "out"))
    for i in range(40):
        st.write_bytes(f"metadata/{i}.json", b"{}")
    calls = []

    def down(path):
        calls.append(path)
        raise ConnectionRefusedError("storage is down")

    monkeypatch.setattr(storage_mod, "RETRY_SECONDS", 0.2)
    monkeypatch.setattr(storage_mod.time, "sleep", lambda s: None)  # retries come back at once
    monkeypatch.setattr(st.fs, "cat_file", down)
    with pytest.raises(StorageError, match="cannot read .*metadata/.*: ConnectionRefusedError"):
        st.read_many([f"metadata/{i}.json" for i in range(40)], workers=2)
    # the shared budget ran out and the queued reads were cancelled: no 40 separate outages
    assert len({c for c in calls}) < 40
