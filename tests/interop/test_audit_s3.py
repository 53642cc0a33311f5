"""Audit archive segments in an S3-compatible bucket (issue 20, point 1: "to a directory or an
S3-compatible store given in the config").

No S3-compatible server can be installed here (MinIO and Garage are not packaged for Debian; Ceph's
radosgw needs a Ceph cluster), so the bucket is moto's S3 server: the boundary stand-in. Keyward
talks to it over HTTP with SigV4 through Apache Arrow's `object_store`, as it would to MinIO or AWS;
the test reads and tampers with the bucket through boto3.

A server under wrap load archives segments to the bucket and prunes what is archived; `keyward audit
verify` then walks the bucket's segments and the database as one chain, and names a segment
deleted from the bucket or altered in it. On PostgreSQL the two nodes of the cluster share the
bucket (one writes at a time, by lease)."""

import json
import os
import subprocess
import time

import boto3
import pytest
from moto.server import ThreadedMotoServer

from conftest import KEYWARD_BIN, ON_POSTGRES, create_key, make_sdk, serve_keyward, wrap

BUCKET = "keyward-audit"
PREFIX = "cluster-a"
SECRET_ENV = "KEYWARD_TEST_S3_SECRET"


@pytest.fixture()
def s3(monkeypatch):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv(SECRET_ENV, "test-secret")
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test-key",
                          aws_secret_access_key="test-secret", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield endpoint, client
    finally:
        server.stop()


def segment_keys(client):
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX + "/")
    return sorted(o["Key"] for o in listed.get("Contents", []))


def verify(work):
    """`keyward audit verify --json` over the server's data, its config naming the bucket."""
    node = work / "b" if ON_POSTGRES else work
    out = subprocess.run(
        [KEYWARD_BIN, "audit", "verify", "--data-dir", str(node / "data"),
         "--config", str(node / "keyward.toml"), "--json"],
        capture_output=True, text=True, timeout=120, env=os.environ,
    )
    assert out.stdout, out.stderr
    return json.loads(out.stdout)


def test_segments_go_to_the_bucket_and_verify_with_the_database(tmp_path, s3):
    endpoint, client = s3
    config = (
        "[lifecycle]\nmin_rotation_interval_secs = 0\nenable_after_disable_secs = 0\n"
        "[audit]\nsegment_events = 50\nretain_events = 100\nprune_batch = 50\n"
        "archive_poll_ms = 100\nexport_poll_ms = 100\n"
        f'[audit.s3]\nbucket = "{BUCKET}"\nprefix = "{PREFIX}/"\nendpoint = "{endpoint}"\n'
        f'allow_http = true\naccess_key_id = "test-key"\nsecret_access_key_env = "{SECRET_ENV}"\n'
    )
    with serve_keyward(tmp_path, config) as server:
        sdk = make_sdk(server)
        key = create_key(sdk, server, "archived-to-s3")["id"]
        for _ in range(400):
            wrap(sdk, server, key)
        deadline = time.monotonic() + 60
        while True:
            keys = segment_keys(client)
            archived = _archived_through(server)
            if len(keys) >= 6 and archived and archived >= 300:
                break
            assert time.monotonic() < deadline, f"segments {keys}, archived through {archived}"
            time.sleep(0.2)
    # Every segment is a whole, named object; no staged file is left behind by a PUT.
    assert all(k.startswith(f"{PREFIX}/audit-") and k.endswith(".jsonl.gz") for k in keys), keys
    node = tmp_path / "b" if ON_POSTGRES else tmp_path
    staged = list((node / "data" / "audit-staging").glob("*"))
    assert staged == [], staged

    report = verify(tmp_path)
    assert report["ok"], report
    assert report["archive"]["dir"] == f"s3://{BUCKET}/{PREFIX}"
    assert report["archive"]["segments"] == len(segment_keys(client))
    assert report["databaseFirstSeq"] > 1, "rows were pruned once archived"

    # A segment deleted from the middle of the bucket: the range it held is missing.
    keys = segment_keys(client)
    gone = client.get_object(Bucket=BUCKET, Key=keys[1])["Body"].read()
    client.delete_object(Bucket=BUCKET, Key=keys[1])
    brk = verify(tmp_path)["firstBreak"]
    assert brk and brk["kind"] == "removed", brk
    assert brk["seq"] == int(keys[1].split("-")[-2]), brk

    # The same object put back with one byte changed: altered.
    client.put_object(Bucket=BUCKET, Key=keys[1], Body=gone[:-9] + bytes([gone[-9] ^ 1]) + gone[-8:])
    brk = verify(tmp_path)["firstBreak"]
    assert brk and brk["kind"] == "altered", brk

    # Put back as it was: intact again.
    client.put_object(Bucket=BUCKET, Key=keys[1], Body=gone)
    assert verify(tmp_path)["ok"]


def _archived_through(server):
    import requests
    token = requests.post(f"{server.url}/identity/token", data={
        "grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": server.api_key,
    }, timeout=10).json()["access_token"]
    resp = requests.get(f"{server.url}/api/v2/audit_events?limit=1", timeout=10, headers={
        "authorization": f"Bearer {token}", "bluemix-instance": server.instance,
    })
    assert resp.status_code == 200, resp.text
    return resp.json()["metadata"].get("archivedThrough")
