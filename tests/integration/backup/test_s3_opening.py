"""The primary's upload is opened beside the dump: bytes written before the bucket answered are
held and reach the object in order; a bucket slower than the hold makes the run local only and
the late upload is aborted (real SeaweedFS; the slowness is the opener waiting for the test)."""

from __future__ import annotations

import hashlib
import os
import threading

from opstower_core.backup.run import _Opening
from opstower_core.storage.s3 import StreamingUpload, store_for


def _opener(store, key: str, go: threading.Event, opened: list[StreamingUpload]):
    def open_upload(stopped) -> StreamingUpload:
        go.wait(10)  # the bucket "answers" when the test says so
        upload = store.start_stream(key, {})
        opened.append(upload)
        return upload
    return open_upload


def test_bytes_written_before_the_upload_exists_reach_it_in_order(make_settings, s3) -> None:
    settings = make_settings(s3=s3)
    store = store_for(settings.s3)
    key = f"{settings.s3.prefix}opening/held.bin"
    go, opened = threading.Event(), []
    opening = _Opening(_opener(store, key, go, opened), lambda u: u.abort())
    pieces = [os.urandom(3 << 20) for _ in range(4)]
    for piece in pieces[:2]:
        opening.write(piece)  # held: the upload does not exist yet
    go.set()
    for piece in pieces[2:]:
        opening.write(piece)
    upload = opening.wait()
    assert upload is opened[0]
    upload.complete()
    body = store.client.get_object(Bucket=store.bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(b"".join(pieces)).digest()


def test_a_bucket_slower_than_the_hold_makes_it_local_and_its_upload_is_aborted(make_settings, s3,
                                                                                 monkeypatch) -> None:
    monkeypatch.setattr(_Opening, "HOLD", 1 << 20)
    settings = make_settings(s3=s3)
    store = store_for(settings.s3)
    key = f"{settings.s3.prefix}opening/late.bin"
    go, opened, dropped = threading.Event(), [], []
    opening = _Opening(_opener(store, key, go, opened), lambda u: (u.abort(), dropped.append(u)))
    opening.write(os.urandom(2 << 20))  # more than the hold before the bucket answered
    assert opening.gave_up and "did not answer" in opening.gave_up
    go.set()
    assert opening.wait() is None
    assert dropped == opened and len(opened) == 1
    open_ids = {u["UploadId"] for u in store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])}
    assert opened[0].upload_id not in open_ids
