"""The console's S3 listing runs in a child process (issue 16: botocore's parsing held the UI thread's
interpreter lock); it must list exactly what the in-process listing lists, and fail in one line."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from opstower_core.config import S3Settings
from opstower_core.errors import OpsError
from opstower_core.storage.listing import pages_in_child
from opstower_core.storage.s3 import store_for


def test_the_child_lists_what_the_store_lists_page_by_page(s3):
    settings = S3Settings(bucket=s3.bucket, prefix=f"lc{uuid.uuid4().hex[:8]}/", endpoint_url=s3.endpoint_url,
                          region="us-east-1")
    store = store_for(settings)
    for i in range(1005):  # more than one ListObjectsV2 page (1,000 keys)
        store.put_bytes(f"{settings.prefix}database/app/app_20261130_{i:06d}Z.dump.zst", b"x" * (i % 7))
    pages = list(pages_in_child(settings))
    assert [len(p) for p in pages] == [1000, 5]
    got = [o for page in pages for o in page]
    want = list(store.iter_objects())
    assert [(o.key, o.size, o.storage_class) for o in got] == [(o.key, o.size, o.storage_class) for o in want]
    assert all(abs(a.last_modified - b.last_modified) < 1e-3 for a, b in zip(got, want, strict=True))


def test_an_unreachable_store_is_one_line_and_no_child_is_left(s3):
    settings = S3Settings(bucket=s3.bucket, prefix="x/", endpoint_url="http://127.0.0.1:9", region="us-east-1")
    it = pages_in_child(dataclasses.replace(settings))
    with pytest.raises(OpsError) as err:
        next(it)
    assert err.value.what.startswith("S3 listing failed (") and "\n" not in err.value.what
