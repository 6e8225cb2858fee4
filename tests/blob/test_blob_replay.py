"""`metering replay URL`: Event Hubs Capture read straight from Blob Storage (Azurite here) stores
exactly what the replay of the same files on disk stores; a damaged blob stops only itself; a time
window lists only its folders; an interrupted replay run again stores nothing twice (issue 32)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from capture_files import capture_path, capture_records, write_capture
from azurite import azurite, container  # noqa: F401  (fixtures)
from cli_runner import run
from replay_store import COMPARED, prepared, stored
from db.engine import make_engine
from db.schema import usage_records
from events import encode, v1_event

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from corpus import CorpusBuilder  # noqa: E402  (the benchmark's realistic mix: streams, embeddings, bad events)

DAY = datetime(2026, 10, 1, 23, 55, tzinfo=timezone.utc)


def capture_tree(root: Path, partitions: int = 3, windows: int = 4, per_window: int = 40,
                 start: datetime = DAY, step: timedelta = timedelta(minutes=5)) -> list[Path]:
    """Capture's folders for ``partitions`` × ``windows`` files of the benchmark's mix, with a
    redelivery, an empty window (header only) and a 0-byte blob, as Capture leaves them."""
    corpus = CorpusBuilder(seed=32, max_stream_chunks=40)
    files = []
    index = 0
    for partition in range(partitions):
        sequence = 0
        for window in range(windows):
            bodies = list(corpus.events(per_window, start=index))
            index += per_window
            if partition == 0 and window == 1:
                bodies.append(bodies[2])  # Event Hubs delivered one event twice
            if partition == 1 and window == 2:
                bodies = []  # a window with no events: Capture writes the header only
            moment = start + step * window + timedelta(seconds=partition)
            files.append(write_capture(capture_path(root, str(partition), moment),
                                       capture_records(bodies, first_sequence=sequence, enqueued=moment)))
            sequence += len(bodies)
    zero = capture_path(root, "2", start + step * windows)
    zero.parent.mkdir(parents=True, exist_ok=True)
    zero.write_bytes(b"")
    files.append(zero)
    return files


def upload(azurite, container: str, root: Path, files: list[Path]) -> None:
    client = azurite.service().get_container_client(container)
    for path in files:
        client.upload_blob(path.relative_to(root).as_posix(), path.read_bytes(), overwrite=True)


def summary(out: str) -> str:
    return out.strip().splitlines()[-1]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_replay_from_blob_storage_stores_what_the_replay_of_the_same_files_on_disk_stores(
        capsys, tmp_path, azurite, container, workers):
    root = tmp_path / "capture"
    files = capture_tree(root)
    upload(azurite, container, root, files)
    on_disk = prepared(capsys, f"sqlite:///{tmp_path / 'disk.db'}")
    from_blob = prepared(capsys, f"sqlite:///{tmp_path / 'blob.db'}")

    code, disk_out, disk_err = run(capsys, "--db", on_disk, "replay", "--workers", "1", str(root))
    assert code == 0, disk_err
    url = azurite.container_url(container, "evhns-contoso-metering/aoai-usage")
    code, blob_out, blob_err = run(capsys, "--db", from_blob, "replay", "--workers", workers, url)

    assert code == 0 and blob_err == ""
    assert summary(blob_out) == summary(disk_out)
    assert summary(blob_out).startswith(f"replayed {len(files)} file(s): events read 441 | rows inserted ")
    assert "duplicates skipped 1" in summary(blob_out)
    rows, bad = stored(from_blob)
    disk_rows, disk_bad = stored(on_disk)
    assert rows == disk_rows
    if workers == "1":
        assert bad == disk_bad
    else:  # the corpus's not-UTF-8 bytes are in two partitions: whichever worker stores them first names its own
        assert [b[:2] for b in bad] == [b[:2] for b in disk_bad]
    partitions = {row[COMPARED.index(usage_records.c.source_partition)] for row in rows}
    assert partitions == {"0", "1", "2"} and len(rows) > 400

    # Run again: nothing is stored twice.
    code, again, _ = run(capsys, "--db", from_blob, "replay", "--workers", workers, url)
    assert code == 0 and "rows inserted 0 | duplicates skipped" in summary(again)
    assert stored(from_blob) == (rows, bad)


def test_an_adls_url_and_a_whole_container_url_read_the_same_blobs(tmp_path, azurite, container):
    from metering.sources.blob import list_capture, parse_blob_url

    root = tmp_path / "capture"
    files = capture_tree(root, partitions=2, windows=2, per_window=3)
    upload(azurite, container, root, files)
    sibling = write_capture(capture_path(root, "0", hub="aoai-usage-test"), capture_records([encode(v1_event("test-hub"))]))
    upload(azurite, container, root, [sibling])
    whole, prefix = parse_blob_url(azurite.container_url(container))
    assert prefix == ""
    names = sorted(blob.name for blob in list_capture(whole, prefix).blobs)
    assert names == sorted(p.relative_to(root).as_posix() for p in [*files, sibling])
    hub, prefix = parse_blob_url(azurite.container_url(container, "evhns-contoso-metering/aoai-usage"))
    assert [blob.name for blob in list_capture(hub, prefix).blobs] == sorted(p.relative_to(root).as_posix() for p in files)
    adls, path = parse_blob_url("abfss://capture@stcontoso.dfs.core.windows.net/evhns-contoso-metering/aoai-usage/0")
    assert (adls.account_url, adls.container, path) == ("https://stcontoso.blob.core.windows.net", "capture",
                                                        "evhns-contoso-metering/aoai-usage/0")


def test_a_damaged_blob_among_good_ones_stops_only_itself_in_one_line_without_the_sas(
        capsys, tmp_path, azurite, container):
    root = tmp_path / "capture"
    good = [write_capture(capture_path(root, "0", DAY), capture_records([encode(v1_event(f"g0-{i}")) for i in range(20)])),
            write_capture(capture_path(root, "1", DAY), capture_records([encode(v1_event(f"g1-{i}")) for i in range(15)]))]
    damaged = write_capture(capture_path(root, "0", DAY + timedelta(minutes=5)),
                            capture_records([encode(v1_event(f"d-{i}")) for i in range(60)], first_sequence=20),
                            codec="null", sync_interval=256)
    damaged.write_bytes(damaged.read_bytes()[:-100])  # cut inside its last block
    later = write_capture(capture_path(root, "0", DAY + timedelta(minutes=10)),
                          capture_records([encode(v1_event(f"l-{i}")) for i in range(10)], first_sequence=80))
    upload(azurite, container, root, [*good, damaged, later])
    db = prepared(capsys, f"sqlite:///{tmp_path / 'm.db'}")
    url = azurite.container_url(container)

    code, out, err = run(capsys, "--db", db, "replay", "--workers", "2", url)

    assert code == 2
    (line,) = err.splitlines()
    blob_url = f"{azurite.account_url}/{container}/{damaged.relative_to(root).as_posix()}"
    assert line.startswith(f"metering: {blob_url}: not a readable Event Hubs Capture Avro file")
    assert "sig=" not in err and "Traceback" not in err
    ids = {row[COMPARED.index(usage_records.c.request_id)] for row in stored(db)[0]}
    assert {f"g0-{i}" for i in range(20)} | {f"g1-{i}" for i in range(15)} | {f"l-{i}" for i in range(10)} <= ids
    cut = {i for i in ids if i.startswith("d-")}
    assert 0 < len(cut) < 60 and f"events read {45 + len(cut)} | rows inserted {45 + len(cut)}" in out


def test_a_refused_sas_is_one_line_naming_the_container_and_nothing_is_stored(capsys, tmp_path, azurite, container):
    db = prepared(capsys, f"sqlite:///{tmp_path / 'm.db'}")
    url = azurite.container_url(container)
    forged = url.replace("sig=", "sig=AAAA")
    code, out, err = run(capsys, "--db", db, "replay", forged)
    assert code == 2 and out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"metering: {azurite.account_url}/{container}: could not be listed (")
    assert "sig=" not in err and "AAAA" not in err
    assert stored(db) == ([], [])


def window_tree(root: Path) -> list[Path]:
    """Two partitions, a file every six hours from 30 September to 3 October."""
    files = []
    for partition in ("0", "1"):
        for hours in range(0, 4 * 24, 6):
            moment = datetime(2026, 9, 30, tzinfo=timezone.utc) + timedelta(hours=hours, minutes=int(partition))
            request = f"w{partition}-{moment:%m%d%H}"
            files.append(write_capture(capture_path(root, partition, moment),
                                       capture_records([encode(v1_event(request))], first_sequence=hours, enqueued=moment)))
    return files


def test_since_until_replay_only_the_window_and_list_none_of_the_folders_outside_it(
        capsys, tmp_path, azurite, container):
    from metering.sources.blob import BlobStorage, list_capture, parse_blob_url

    root = tmp_path / "capture"
    upload(azurite, container, root, window_tree(root))
    url = azurite.container_url(container, "evhns-contoso-metering/aoai-usage")
    db = prepared(capsys, f"sqlite:///{tmp_path / 'blob.db'}")
    code, out, err = run(capsys, "--db", db, "replay", url, "--since", "2026-10-01", "--until", "2026-10-02")
    assert code == 0, err
    ids = sorted(row[COMPARED.index(usage_records.c.request_id)] for row in stored(db)[0])
    assert ids == sorted(f"w{p}-{day}{hour:02d}" for p in "01" for day in ("1001", "1002") for hour in (0, 6, 12, 18))
    # The same window over the files on disk selects the same files.
    local = prepared(capsys, f"sqlite:///{tmp_path / 'disk.db'}")
    assert run(capsys, "--db", local, "replay", str(root), "--since", "2026-10-01", "--until", "2026-10-02")[0] == 0
    assert stored(local) == stored(db)

    # What was listed: the folders down to the months, then only the days of the window.
    container_ref, prefix = parse_blob_url(url)
    storage = BlobStorage(container_ref)
    since, until = datetime(2026, 10, 1, tzinfo=timezone.utc), datetime(2026, 10, 3, tzinfo=timezone.utc)
    listing = list_capture(container_ref, prefix, since, until, storage=storage)
    assert len(listing.blobs) == 16
    prefixes = [parse_qs(urlsplit(request).query).get("prefix", [""])[0] for request in storage.listed]
    days = sorted(p for p in prefixes if p.count("/") == 6)
    assert days == [f"evhns-contoso-metering/aoai-usage/{p}/2026/10/{d}/" for p in "01" for d in ("01", "02")]
    assert not [p for p in prefixes if "/2026/09/" in p or "/2026/10/03/" in p], prefixes


def test_a_window_refuses_a_local_file_outside_captures_layout(capsys, tmp_path):
    db = prepared(capsys, f"sqlite:///{tmp_path / 'm.db'}")
    loose = write_capture(tmp_path / "renamed.avro", capture_records([encode(v1_event("x"))]))
    code, out, err = run(capsys, "--db", db, "replay", str(loose), "--since", "2026-10-01")
    assert code == 2 and "renamed.avro: --since/--until select Event Hubs Capture files by their time folders" in err
    assert stored(db) == ([], [])


def test_an_interrupted_replay_run_again_stores_nothing_twice(capsys, tmp_path, azurite, container):
    root = tmp_path / "capture"
    files = capture_tree(root, partitions=2, windows=6, per_window=150)
    upload(azurite, container, root, files)
    reference = prepared(capsys, f"sqlite:///{tmp_path / 'disk.db'}")
    assert run(capsys, "--db", reference, "replay", "--workers", "1", str(root))[0] == 0
    db = prepared(capsys, f"sqlite:///{tmp_path / 'blob.db'}")
    url = azurite.container_url(container)

    replay = subprocess.Popen([sys.executable, "-m", "metering.cli", "--db", db, "replay", "--workers", "1",
                               "--batch-size", "20", "--progress", "off", url],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    engine = make_engine(db)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and replay.poll() is None:
            with engine.connect() as conn:
                if conn.execute(sa.select(sa.func.count()).select_from(usage_records)).scalar() >= 100:
                    break
            time.sleep(0.05)
        assert replay.poll() is None, "the replay ended before it could be interrupted"
        replay.send_signal(signal.SIGKILL)  # a crash: no clean-up of any kind
        replay.wait(timeout=30)
        with engine.connect() as conn:
            kept = conn.execute(sa.select(sa.func.count()).select_from(usage_records)).scalar()
    finally:
        engine.dispose()
        if replay.poll() is None:
            replay.kill()
            replay.wait()
    total = len(stored(reference)[0])
    assert 100 <= kept < total

    code, out, err = run(capsys, "--db", db, "replay", "--workers", "2", url)
    assert code == 0, err
    assert f"rows inserted {total - kept:,} | duplicates skipped {kept + 1:,}" in summary(out)  # + the redelivery
    assert stored(db) == stored(reference)


def test_blob_urls_name_an_account_and_a_container_and_never_show_their_sas():
    from metering.sources.blob import parse_blob_url

    container, prefix = parse_blob_url("https://stcontoso.blob.core.windows.net/capture/ns/hub/3?sv=2024&sig=SECRET")
    assert (container.account_url, container.container, prefix) == ("https://stcontoso.blob.core.windows.net", "capture", "ns/hub/3")
    assert container.sas == "sv=2024&sig=SECRET" and "SECRET" not in repr(container)
    dfs, _ = parse_blob_url("https://stcontoso.dfs.core.windows.net/capture")
    assert dfs.account_url == "https://stcontoso.blob.core.windows.net"
    for bad, reason in (("http://stcontoso.blob.core.windows.net/capture?sig=SECRET", "use https://"),
                        ("https://stcontoso.blob.core.windows.net/?sig=SECRET", "names no container"),
                        ("https://example.com/capture", "not a Blob Storage URL"),
                        ("abfss://stcontoso.dfs.core.windows.net/x", "abfss://CONTAINER@ACCOUNT")):
        with pytest.raises(ValueError, match=reason) as caught:
            parse_blob_url(bad)
        assert "SECRET" not in str(caught.value)


class CuttingProxy:
    """A loopback TCP proxy to Azurite that cuts the first connection serving a blob after ``cut_after``
    bytes of its response: a connection lost in the middle of a download."""

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        import socket
        import threading

        self.upstream_port, self.cut_after = upstream_port, cut_after
        self.cuts = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            state = {"blob": False, "sent": 0}
            threading.Thread(target=self._pump, args=(client, upstream, state, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, state, True), daemon=True).start()

    def _pump(self, source, target, state, downstream: bool) -> None:
        import socket

        try:
            while data := source.recv(65536):
                if not downstream and b".avro" in data and b"x-ms-range" not in data.lower():
                    state["blob"] = True  # a whole-blob GET: the one to cut
                if downstream and state["blob"] and self.cuts == 0:
                    room = self.cut_after - state["sent"]
                    if len(data) >= room:
                        target.sendall(data[:room])
                        self.cuts += 1
                        raise ConnectionResetError
                    state["sent"] += len(data)
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):  # shutdown first: it wakes the other direction's blocked recv
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                end.close()

    def close(self) -> None:
        self.listener.close()


def test_a_connection_lost_in_the_middle_of_a_blob_resumes_where_it_stopped(capsys, tmp_path, azurite, container):
    root = tmp_path / "capture"
    path = write_capture(capture_path(root, "0", DAY),
                         capture_records([encode(v1_event(f"long-{i}")) for i in range(400)]), codec="null")
    upload(azurite, container, root, [path])
    assert path.stat().st_size > 200_000
    proxy = CuttingProxy(azurite.port, cut_after=100_000)
    try:
        db = prepared(capsys, f"sqlite:///{tmp_path / 'm.db'}")
        url = azurite.container_url(container).replace(f":{azurite.port}/", f":{proxy.port}/")
        code, out, err = run(capsys, "--db", db, "replay", "--workers", "1", url)
    finally:
        proxy.close()
    assert proxy.cuts == 1
    assert code == 0 and err == ""
    assert "events read 400 | rows inserted 400" in out


def test_a_url_without_a_sas_asks_the_credential_and_a_refusal_is_one_line(tmp_path, azurite, container):
    from metering.sources.blob import BlobSourceError, BlobStorage, list_capture, parse_blob_url

    class RefusingCredential:
        def get_token(self, *scopes):
            assert scopes == ("https://storage.azure.com/.default",)
            raise RuntimeError("DefaultAzureCredential failed to retrieve a token from the included credentials.\n"
                               "Attempted credentials:\n\tEnvironmentCredential: not configured")

    container_ref, prefix = parse_blob_url(azurite.container_url(container, sas=False))
    with pytest.raises(BlobSourceError) as refused:
        list_capture(container_ref, prefix, storage=BlobStorage(container_ref, credential=RefusingCredential()))
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{azurite.account_url}/{container}: no token for Blob Storage")


def test_a_replay_from_blob_storage_with_a_sas_loads_no_azure_sdk(capsys, tmp_path, azurite, container):
    """The replay bound (150 MiB) leaves no room for the SDK's 17 MiB: two REST calls, standard library."""
    root = tmp_path / "capture"
    upload(azurite, container, root, capture_tree(root, partitions=1, windows=1, per_window=5))
    db = prepared(capsys, f"sqlite:///{tmp_path / 'm.db'}")
    probe = ("import contextlib, io, sys\nfrom metering.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             f"    assert main(['--db', {db!r}, 'replay', '--progress', 'off', {azurite.container_url(container)!r}]) == 0\n"
             "print('\\n'.join(sorted(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    modules = set(done.stdout.split())
    assert "metering.sources.blob" in modules
    assert not {m for m in modules if m == "azure" or m.startswith("azure.")}


def test_a_blob_rewritten_after_it_was_listed_is_refused_not_mixed(tmp_path, azurite, container):
    from metering.sources.blob import list_capture, parse_blob_url, read_blob
    from metering.sources.files import SourceError

    root = tmp_path / "capture"
    path = write_capture(capture_path(root, "0", DAY), capture_records([encode(v1_event(f"r-{i}")) for i in range(5)]))
    upload(azurite, container, root, [path])
    container_ref, prefix = parse_blob_url(azurite.container_url(container))
    (blob,) = list_capture(container_ref, prefix).blobs
    upload(azurite, container, root, [path])  # written again (same bytes, a new ETag)
    with pytest.raises(SourceError, match="could not be read \\(412 ConditionNotMet"):
        list(read_blob(blob))
