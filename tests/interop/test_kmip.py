"""Interop: KMIP adapters, their client certificates and KMIP objects, through every KMIP method of
the public `keyprotect` SDK (3.0.1), with happy and unhappy paths, and the SDK's own response
models (`ListKMIPAdapters`, `ListKMIPAdaptersWithTotalCount`, `ListKMIPClientCertificates`,
`ListKMIPPartialClientCertificatesWithTotalCount`, `ListKMIPObjectsWithTotalCount`) parsing every
body.

This module runs its own `keyward serve` (module scope), so that adapter counts are its own.
KMIP objects are created over the KMIP protocol, never over REST: the tests insert them into the
server's SQLite database, as the KMIP listener would.
"""

import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from keyprotect import ibm_key_protect_api_v2 as models

from conftest import (
    DEFAULT_CONFIG, body, create_key, db_execute, expect_api_error, make_sdk, parse_with,
    serve_keyward,
)

ADAPTER_MEDIA = "application/vnd.ibm.kms.kmip_adapter+json"
CERT_MEDIA = "application/vnd.ibm.kms.kmip_client_certificate+json"
OBJECT_MEDIA = "application/vnd.ibm.kms.kmip_object+json"
PROFILE = "native_1.0"


@pytest.fixture(scope="module")
def keyward(tmp_path_factory):
    """Overrides the suite's `keyward`: a server of this module's own."""
    with serve_keyward(tmp_path_factory.mktemp("keyward-kmip"), DEFAULT_CONFIG) as server:
        yield server


@pytest.fixture(scope="module")
def sdk(keyward):
    return make_sdk(keyward)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def client_cert_pem(cn=None, *, not_before=None, not_after=None) -> str:
    """A fresh self-signed client certificate (EC P-256), PEM."""
    now = datetime.now(timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn or unique("kmip-client"))])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def root_key(sdk, keyward, **fields):
    return create_key(sdk, keyward, unique("kmip-crk"), **fields)["id"]


def one_meta(media):
    return models.CollectionMetadata(collection_type=media, collection_total=1)


def adapter_object(crk, *, name=None, description=None, profile=PROFILE):
    return models.CreateKMIPAdapterObject(
        profile=profile, name=name, description=description,
        profile_data=models.KMIPProfileDataBodyKMIPProfileDataNative(crk_id=crk),
    )


def create_adapter(sdk, keyward, crk, *, name=None, description=None, allow_expiring_key=None):
    """Creates an adapter through the SDK's models; returns the adapter resource."""
    r = sdk.create_kmip_adapter(
        bluemix_instance=keyward.instance, metadata=one_meta(ADAPTER_MEDIA),
        resources=[adapter_object(crk, name=name, description=description)],
        allow_expiring_key=allow_expiring_key,
    )
    assert r.get_status_code() == 201
    doc = body(r)
    parse_with(models.ListKMIPAdapters, doc)
    assert doc["metadata"] == {"collectionType": ADAPTER_MEDIA, "collectionTotal": 1}
    assert len(doc["resources"]) == 1
    return doc["resources"][0]


def add_cert(sdk, keyward, adapter, pem, name=None):
    r = sdk.add_kmip_client_certificate(
        adapter_id=adapter, bluemix_instance=keyward.instance, metadata=one_meta(CERT_MEDIA),
        resources=[models.CreateKMIPClientCertificateObject(certificate=pem, name=name)],
    )
    assert r.get_status_code() == 201
    doc = body(r)
    parse_with(models.ListKMIPClientCertificates, doc)
    assert doc["metadata"] == {"collectionType": CERT_MEDIA, "collectionTotal": 1}
    return doc["resources"][0]


def add_cert_fails(sdk, keyward, adapter, pem, status, name=None):
    return expect_api_error(status, lambda: sdk.add_kmip_client_certificate(
        adapter_id=adapter, bluemix_instance=keyward.instance, metadata=one_meta(CERT_MEDIA),
        resources=[models.CreateKMIPClientCertificateObject(certificate=pem, name=name)],
    ))


def insert_object(keyward, adapter_id, state):
    """A KMIP object (Symmetric Key) in `state`, as the KMIP listener would create it."""
    object_id = str(uuid.uuid4())
    db_execute(
        keyward,
        "INSERT INTO kmip_objects (id, instance_id, adapter_id, object_type, state,"
        " created_at, created_by_cert_id, created_by) VALUES (?, ?, ?, 2, ?, ?, ?, ?)",
        (object_id, keyward.instance, adapter_id, state, time.time_ns(), str(uuid.uuid4()),
         "kmip-client"),
    )
    return object_id


def adapters(sdk, keyward, **params):
    r = sdk.get_kmip_adapters(bluemix_instance=keyward.instance, **params)
    assert r.get_status_code() == 200
    doc = body(r)
    parse_with(models.ListKMIPAdaptersWithTotalCount, doc)
    assert doc["metadata"]["collectionType"] == ADAPTER_MEDIA
    assert doc["metadata"]["collectionTotal"] == len(doc["resources"])
    return doc


def objects(sdk, keyward, adapter, **params):
    r = sdk.get_kmip_objects(adapter_id=adapter, bluemix_instance=keyward.instance, **params)
    assert r.get_status_code() == 200
    doc = body(r)
    parse_with(models.ListKMIPObjectsWithTotalCount, doc)
    assert doc["metadata"]["collectionType"] == OBJECT_MEDIA
    assert doc["metadata"]["collectionTotal"] == len(doc["resources"])
    return doc


# --------------------------------------------------------------------------------------------
# Adapters
# --------------------------------------------------------------------------------------------


def test_adapter_create_get_delete(sdk, keyward):
    crk = root_key(sdk, keyward)
    alias = unique("kmip-alias")
    assert sdk.create_key_alias(id=crk, alias=alias,
                                bluemix_instance=keyward.instance).get_status_code() == 201
    name = unique("adapter")
    a = create_adapter(sdk, keyward, alias, name=name, description="through the SDK")
    assert a["name"] == name
    assert a["description"] == "through the SDK"
    assert a["profile"] == PROFILE
    assert a["profile_data"] == {"crk_id": crk}  # the alias resolved to the key id
    assert a["created_by"] and a["updated_by"]
    assert a["created_at"].endswith("Z") and a["updated_at"].endswith("Z")
    uuid.UUID(a["id"])

    for ref in (a["id"], name):
        r = sdk.get_kmip_adapter(id=ref, bluemix_instance=keyward.instance)
        assert r.get_status_code() == 200
        doc = body(r)
        parsed = parse_with(models.ListKMIPAdapters, doc)
        assert parsed.resources[0].id == a["id"]
        assert parsed.resources[0].profile_data == {"crk_id": crk}  # the SDK keeps it a dict
        assert doc["metadata"] == {"collectionType": ADAPTER_MEDIA, "collectionTotal": 1}
        assert doc["resources"] == [a]

    # No name: one is generated.
    generated = create_adapter(sdk, keyward, crk)
    assert generated["name"].startswith("kmip_adapter")

    r = sdk.delete_kmip_adapter(id=name, bluemix_instance=keyward.instance)
    assert r.get_status_code() == 204
    assert not r.get_result() or not r.get_result().content
    reason = expect_api_error(404, lambda: sdk.get_kmip_adapter(
        id=a["id"], bluemix_instance=keyward.instance))
    assert reason["code"] == "KMIP_ADAPTER_NOT_FOUND_ERR"
    reason = expect_api_error(404, lambda: sdk.delete_kmip_adapter(
        id=a["id"], bluemix_instance=keyward.instance))
    assert reason["code"] == "KMIP_ADAPTER_NOT_FOUND_ERR"
    assert sdk.delete_kmip_adapter(id=generated["id"],
                                   bluemix_instance=keyward.instance).get_status_code() == 204


def test_adapter_list_paging_total_count_and_crk_filter(sdk, keyward):
    crk_a, crk_b = root_key(sdk, keyward), root_key(sdk, keyward)
    on_a = [create_adapter(sdk, keyward, crk_a, name=unique("on-a"))["id"] for _ in range(3)]
    on_b = create_adapter(sdk, keyward, crk_b, name=unique("on-b"))["id"]
    try:
        doc = adapters(sdk, keyward, crk_id=crk_a, total_count=True)
        assert doc["metadata"]["totalCount"] == 3
        assert sorted(r["id"] for r in doc["resources"]) == sorted(on_a)
        assert all(r["profile_data"]["crk_id"] == crk_a for r in doc["resources"])

        page = adapters(sdk, keyward, crk_id=crk_a, limit=2, offset=1, total_count=True)
        assert page["metadata"]["totalCount"] == 3
        assert len(page["resources"]) == 2
        first = adapters(sdk, keyward, crk_id=crk_a, limit=1, offset=0)
        assert "totalCount" not in first["metadata"]
        assert len(first["resources"]) == 1
        seen = [first["resources"][0]["id"]] + [r["id"] for r in page["resources"]]
        assert sorted(seen) == sorted(on_a)  # the pages neither overlap nor skip
        assert adapters(sdk, keyward, crk_id=crk_a, offset=3)["resources"] == []

        doc = adapters(sdk, keyward, crk_id=crk_b, total_count=True)
        assert [r["id"] for r in doc["resources"]] == [on_b]
        assert doc["metadata"]["totalCount"] == 1
        everything = adapters(sdk, keyward, total_count=True)
        assert everything["metadata"]["totalCount"] >= 4
        assert {*on_a, on_b} <= {r["id"] for r in everything["resources"]}
        assert adapters(sdk, keyward, crk_id=str(uuid.uuid4()),
                        total_count=True)["metadata"]["totalCount"] == 0

        for bad in ({"limit": 201}, {"limit": -1}, {"offset": -1}):
            reason = expect_api_error(400, lambda: sdk.get_kmip_adapters(
                bluemix_instance=keyward.instance, **bad))
            assert reason["code"] == "INVALID_QUERY_PARAM_ERR", bad
    finally:
        for a in (*on_a, on_b):
            sdk.delete_kmip_adapter(id=a, bluemix_instance=keyward.instance)


def test_adapter_create_refusals(sdk, keyward):
    crk = root_key(sdk, keyward)

    def refused(status, *, resources, allow_expiring_key=None):
        return expect_api_error(status, lambda: sdk.create_kmip_adapter(
            bluemix_instance=keyward.instance, metadata=one_meta(ADAPTER_MEDIA),
            resources=resources, allow_expiring_key=allow_expiring_key))

    # unknown root key (id and alias)
    refused(404, resources=[adapter_object(str(uuid.uuid4()))])
    refused(404, resources=[adapter_object("no-such-alias")])
    # a standard key is not a root key
    standard = create_key(sdk, keyward, unique("kmip-std"), extractable=True)["id"]
    assert refused(400, resources=[adapter_object(standard)])["code"] == "KEY_ROOT_REQ_ERR"
    # a disabled root key is not active
    disabled = root_key(sdk, keyward)
    assert sdk.disable_key(id=disabled,
                           bluemix_instance=keyward.instance).get_status_code() == 204
    assert refused(409, resources=[adapter_object(disabled)])["code"] == \
        "KEY_ACTION_INVALID_STATE_ERR"
    # duplicate name
    name = unique("dup")
    a = create_adapter(sdk, keyward, crk, name=name)
    assert refused(409, resources=[adapter_object(crk, name=name)])["code"] == \
        "KMIP_ADAPTER_NAME_NOT_UNIQUE_ERR"
    # names: not a UUID, letters/digits/-/_ only
    for bad in (str(uuid.uuid4()), "has space", "x"):
        assert refused(400, resources=[adapter_object(crk, name=bad)])["code"] == \
            "INVALID_FIELD_ERR", bad
    # profile
    assert refused(400, resources=[adapter_object(crk, profile="native_2.0")])["code"] == \
        "INVALID_FIELD_ERR"
    # exactly one resource
    assert refused(400, resources=[adapter_object(crk), adapter_object(crk)])["code"] == \
        "BAD_BODY_ERR"
    # an expiring root key only with allowExpiringKey=true
    until = (datetime.now(timezone.utc) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    expiring = root_key(sdk, keyward, expirationDate=until)
    assert refused(400, resources=[adapter_object(expiring)])["code"] == "INVALID_FIELD_ERR"
    assert refused(400, resources=[adapter_object(expiring)],
                   allow_expiring_key=False)["code"] == "INVALID_FIELD_ERR"
    b = create_adapter(sdk, keyward, expiring, allow_expiring_key=True)
    assert b["profile_data"]["crk_id"] == expiring

    for x in (a, b):
        sdk.delete_kmip_adapter(id=x["id"], bluemix_instance=keyward.instance)


def test_unknown_adapter_everywhere(sdk, keyward):
    inst = keyward.instance
    ghost = str(uuid.uuid4())
    calls = {
        "get_kmip_adapter": lambda: sdk.get_kmip_adapter(id=ghost, bluemix_instance=inst),
        "delete_kmip_adapter": lambda: sdk.delete_kmip_adapter(id=ghost, bluemix_instance=inst),
        "get_kmip_client_certificates": lambda: sdk.get_kmip_client_certificates(
            adapter_id=ghost, bluemix_instance=inst),
        "add_kmip_client_certificate": lambda: sdk.add_kmip_client_certificate(
            adapter_id="no-such-adapter", bluemix_instance=inst, metadata=one_meta(CERT_MEDIA),
            resources=[models.CreateKMIPClientCertificateObject(certificate=client_cert_pem())]),
        "get_kmip_client_certificate": lambda: sdk.get_kmip_client_certificate(
            adapter_id=ghost, id=str(uuid.uuid4()), bluemix_instance=inst),
        "delete_kmip_client_certificate": lambda: sdk.delete_kmip_client_certificate(
            adapter_id=ghost, id=str(uuid.uuid4()), bluemix_instance=inst),
        "get_kmip_objects": lambda: sdk.get_kmip_objects(adapter_id=ghost, bluemix_instance=inst),
        "get_kmip_object": lambda: sdk.get_kmip_object(
            adapter_id=ghost, id=str(uuid.uuid4()), bluemix_instance=inst),
        "delete_kmip_object": lambda: sdk.delete_kmip_object(
            adapter_id=ghost, id=str(uuid.uuid4()), bluemix_instance=inst, force=True),
    }
    for method, call in calls.items():
        reason = expect_api_error(404, call)
        assert reason["code"] == "KMIP_ADAPTER_NOT_FOUND_ERR", method


# --------------------------------------------------------------------------------------------
# Client certificates
# --------------------------------------------------------------------------------------------


def test_client_certificates(sdk, keyward):
    crk = root_key(sdk, keyward)
    adapter = create_adapter(sdk, keyward, crk, name=unique("certs"))
    aid, inst = adapter["id"], keyward.instance
    pems = [client_cert_pem() for _ in range(3)]
    names = [unique("cert") for _ in pems]
    added = [add_cert(sdk, keyward, aid if i % 2 else adapter["name"], pem, name)
             for i, (pem, name) in enumerate(zip(pems, names))]
    for cert, pem, name in zip(added, pems, names):
        assert cert["name"] == name
        assert cert["certificate"].strip() == pem.strip()
        assert cert["created_by"] and cert["created_at"].endswith("Z")
        uuid.UUID(cert["id"])
    unnamed = add_cert(sdk, keyward, aid, client_cert_pem())
    assert unnamed["name"].startswith("kmip_cert")

    r = sdk.get_kmip_client_certificates(adapter_id=aid, bluemix_instance=inst, total_count=True)
    assert r.get_status_code() == 200
    doc = body(r)
    parse_with(models.ListKMIPPartialClientCertificatesWithTotalCount, doc)
    assert doc["metadata"] == {"collectionType": CERT_MEDIA, "collectionTotal": 4, "totalCount": 4}
    assert all("certificate" not in c for c in doc["resources"])  # lists leave the PEM out
    assert {c["id"] for c in doc["resources"]} == {c["id"] for c in [*added, unnamed]}
    r = sdk.get_kmip_client_certificates(adapter_id=adapter["name"], bluemix_instance=inst,
                                         limit=2, offset=3, total_count=True)
    page = body(r)
    parse_with(models.ListKMIPPartialClientCertificatesWithTotalCount, page)
    assert page["metadata"]["totalCount"] == 4 and len(page["resources"]) == 1
    reason = expect_api_error(400, lambda: sdk.get_kmip_client_certificates(
        adapter_id=aid, bluemix_instance=inst, limit=201))
    assert reason["code"] == "INVALID_QUERY_PARAM_ERR"

    for ref in (added[0]["id"], names[0]):
        r = sdk.get_kmip_client_certificate(adapter_id=aid, id=ref, bluemix_instance=inst)
        assert r.get_status_code() == 200
        doc = body(r)
        parsed = parse_with(models.ListKMIPClientCertificates, doc)
        assert parsed.resources[0].certificate.strip() == pems[0].strip()
        assert doc["metadata"] == {"collectionType": CERT_MEDIA, "collectionTotal": 1}
        assert doc["resources"] == [added[0]]

    r = sdk.delete_kmip_client_certificate(adapter_id=aid, id=names[1], bluemix_instance=inst)
    assert r.get_status_code() == 204
    for call in (
        lambda: sdk.get_kmip_client_certificate(adapter_id=aid, id=added[1]["id"],
                                                bluemix_instance=inst),
        lambda: sdk.delete_kmip_client_certificate(adapter_id=aid, id=added[1]["id"],
                                                   bluemix_instance=inst),
        lambda: sdk.get_kmip_client_certificate(adapter_id=aid, id="no-such-cert",
                                                bluemix_instance=inst),
    ):
        assert expect_api_error(404, call)["code"] == "KMIP_CERT_NOT_FOUND_ERR"
    # A deleted certificate can be added again.
    again = add_cert(sdk, keyward, aid, pems[1], names[1])
    assert again["id"] != added[1]["id"]

    # A certificate of another adapter is not found through this one.
    other = create_adapter(sdk, keyward, crk)
    reason = expect_api_error(404, lambda: sdk.get_kmip_client_certificate(
        adapter_id=other["id"], id=added[0]["id"], bluemix_instance=inst))
    assert reason["code"] == "KMIP_CERT_NOT_FOUND_ERR"

    # Deleting an adapter deletes its certificates: the same PEM is welcome afterwards.
    assert sdk.delete_kmip_adapter(id=aid, bluemix_instance=inst).get_status_code() == 204
    add_cert(sdk, keyward, other["id"], pems[0], names[0])
    sdk.delete_kmip_adapter(id=other["id"], bluemix_instance=inst)


def test_client_certificate_refusals(sdk, keyward):
    crk = root_key(sdk, keyward)
    aid = create_adapter(sdk, keyward, crk)["id"]
    other = create_adapter(sdk, keyward, crk)["id"]
    pem = client_cert_pem()
    name = unique("cert")
    add_cert(sdk, keyward, aid, pem, name)

    now = datetime.now(timezone.utc)
    body_lines = "".join(pem.strip().splitlines(keepends=True)[1:-1])
    bad_pems = {
        "not PEM": "hello, not a certificate",
        "empty": "",
        "garbage in PEM markers": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "not base64": "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        "private key": "-----BEGIN PRIVATE KEY-----\n" + body_lines + "-----END PRIVATE KEY-----\n",
        "two certificates": client_cert_pem() + client_cert_pem(),
        "expired": client_cert_pem(not_before=now - timedelta(days=30),
                                   not_after=now - timedelta(days=1)),
        "not yet valid": client_cert_pem(not_before=now + timedelta(days=1),
                                         not_after=now + timedelta(days=30)),
    }
    for why, bad in bad_pems.items():
        reason = add_cert_fails(sdk, keyward, aid, bad, 400)
        assert reason["code"] == "INVALID_FIELD_ERR", why

    # the same certificate again: on this adapter or any other
    assert add_cert_fails(sdk, keyward, aid, pem, 409)["code"] == "KMIP_CERT_NOT_UNIQUE_ERR"
    assert add_cert_fails(sdk, keyward, other, pem, 409)["code"] == "KMIP_CERT_NOT_UNIQUE_ERR"
    # the same name on this adapter; another adapter may use it
    assert add_cert_fails(sdk, keyward, aid, client_cert_pem(), 409, name=name)["code"] == \
        "KMIP_CERT_NAME_NOT_UNIQUE_ERR"
    add_cert(sdk, keyward, other, client_cert_pem(), name)
    assert add_cert_fails(sdk, keyward, aid, client_cert_pem(), 400,
                          name=str(uuid.uuid4()))["code"] == "INVALID_FIELD_ERR"

    for a in (aid, other):
        sdk.delete_kmip_adapter(id=a, bluemix_instance=keyward.instance)


# --------------------------------------------------------------------------------------------
# KMIP objects
# --------------------------------------------------------------------------------------------


def test_kmip_objects(sdk, keyward):
    inst = keyward.instance
    crk = root_key(sdk, keyward)
    adapter = create_adapter(sdk, keyward, crk, name=unique("objects"))
    aid = adapter["id"]
    assert objects(sdk, keyward, aid, total_count=True)["metadata"]["totalCount"] == 0

    pre = insert_object(keyward, aid, 1)
    active = insert_object(keyward, aid, 2)
    deactivated = insert_object(keyward, aid, 3)
    destroyed = insert_object(keyward, aid, 5)

    doc = objects(sdk, keyward, aid, total_count=True)  # default: states 1 to 4
    assert doc["metadata"]["totalCount"] == 3
    assert {o["id"] for o in doc["resources"]} == {pre, active, deactivated}
    for o in doc["resources"]:
        assert o["kmip_object_type"] == 2
        assert o["created_by"] == "kmip-client"
        uuid.UUID(o["created_by_kmip_client_cert_id"])
    doc = objects(sdk, keyward, adapter["name"], state=[2], total_count=True)
    assert [o["id"] for o in doc["resources"]] == [active]
    assert doc["metadata"]["totalCount"] == 1
    doc = objects(sdk, keyward, aid, state=[1, 5], total_count=True)
    assert {o["id"] for o in doc["resources"]} == {pre, destroyed}
    page = objects(sdk, keyward, aid, limit=2, offset=1, total_count=True)
    assert page["metadata"]["totalCount"] == 3 and len(page["resources"]) == 2
    assert "totalCount" not in objects(sdk, keyward, aid, limit=1)["metadata"]
    for bad in ({"state": [7]}, {"state": [0]}, {"limit": 5001}):
        reason = expect_api_error(400, lambda: sdk.get_kmip_objects(
            adapter_id=aid, bluemix_instance=inst, **bad))
        assert reason["code"] == "INVALID_QUERY_PARAM_ERR", bad

    r = sdk.get_kmip_object(adapter_id=aid, id=active, bluemix_instance=inst)
    assert r.get_status_code() == 200
    doc = body(r)
    parsed = parse_with(models.ListKMIPObjectsWithTotalCount, doc)
    assert parsed.resources[0].state == 2
    assert doc["metadata"] == {"collectionType": OBJECT_MEDIA, "collectionTotal": 1}
    assert doc["resources"][0]["id"] == active
    for ghost in (str(uuid.uuid4()), "not-a-uuid"):
        reason = expect_api_error(404, lambda: sdk.get_kmip_object(
            adapter_id=aid, id=ghost, bluemix_instance=inst))
        assert reason["code"] == "KMIP_OBJECT_NOT_FOUND_ERR"
    # An object is found only through its own adapter.
    other = create_adapter(sdk, keyward, crk)["id"]
    reason = expect_api_error(404, lambda: sdk.get_kmip_object(
        adapter_id=other, id=active, bluemix_instance=inst))
    assert reason["code"] == "KMIP_OBJECT_NOT_FOUND_ERR"

    # An Active object blocks the adapter's deletion and its own, unless forced.
    reason = expect_api_error(409, lambda: sdk.delete_kmip_adapter(id=aid, bluemix_instance=inst))
    assert reason["code"] == "KMIP_ADAPTER_HAS_OBJECTS_ERR"
    for force in (None, False):
        reason = expect_api_error(409, lambda: sdk.delete_kmip_object(
            adapter_id=aid, id=active, bluemix_instance=inst, force=force))
        assert reason["code"] == "KMIP_OBJECT_ACTIVE_ERR"
    r = sdk.delete_kmip_object(adapter_id=aid, id=active, bluemix_instance=inst, force=True)
    assert r.get_status_code() == 204
    r = sdk.delete_kmip_object(adapter_id=aid, id=pre, bluemix_instance=inst)
    assert r.get_status_code() == 204
    gone = body(sdk.get_kmip_object(adapter_id=aid, id=active, bluemix_instance=inst))
    parse_with(models.ListKMIPObjectsWithTotalCount, gone)
    assert gone["resources"][0]["state"] == 5
    assert gone["resources"][0]["destroyed_at"].endswith("Z")
    assert gone["resources"][0]["destroyed_by"]
    doc = objects(sdk, keyward, aid, state=[5, 6], total_count=True)
    assert {o["id"] for o in doc["resources"]} == {pre, active, destroyed}
    reason = expect_api_error(404, lambda: sdk.delete_kmip_object(
        adapter_id=aid, id=str(uuid.uuid4()), bluemix_instance=inst))
    assert reason["code"] == "KMIP_OBJECT_NOT_FOUND_ERR"

    # Any object not yet destroyed (here a Deactivated one) still blocks the adapter's deletion.
    reason = expect_api_error(409, lambda: sdk.delete_kmip_adapter(id=aid, bluemix_instance=inst))
    assert reason["code"] == "KMIP_ADAPTER_HAS_OBJECTS_ERR"
    r = sdk.delete_kmip_object(adapter_id=aid, id=deactivated, bluemix_instance=inst)
    assert r.get_status_code() == 204
    assert objects(sdk, keyward, aid)["resources"] == []
    assert sdk.delete_kmip_adapter(id=aid, bluemix_instance=inst).get_status_code() == 204
    sdk.delete_kmip_adapter(id=other, bluemix_instance=inst)
