"""Interop: the public `keyprotect` SDK (PyPI, 3.0.1) drives a real `keyward serve`.

A session fixture starts the binary on 127.0.0.1 with a fresh data directory; the SDK authenticates
through Keyward's IAM-compatible `/identity/token` with `IAMAuthenticator`. Every test asserts
what IBM Key Protect documents for the same request: status codes, reason codes, body shapes, and
the SDK's own models parsing the responses.

Run through `scripts/interop.sh` (or `python -m pytest -q tests/interop` with KEYWARD_BIN set).
"""

import base64
import io
import json
import os
import time
import uuid
from datetime import datetime

import jwt
import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from keyprotect import ibm_key_protect_api_v2 as models

from conftest import (
    KEY_MEDIA, as_file, assert_kp_error, b64, body, create_key, expect_api_error, get_key, parse_with,
    rewrap, rotate, unwrap, wrap,
)

API_KEY_GRANT = "urn:ibm:params:oauth:grant-type:apikey"

# The DEK of the scenario: 32 bytes, base64, as a client would send it.
DEK = base64.b64encode(os.urandom(32)).decode()
AAD = ["tenant-a", "db-7"]


def flip_byte(ciphertext: str, index: int) -> str:
    raw = bytearray(base64.b64decode(ciphertext))
    raw[index % len(raw)] ^= 0x01
    return b64(bytes(raw))


# --------------------------------------------------------------------------------------------
# The scenario
# --------------------------------------------------------------------------------------------


def test_root_key_wraps_unwraps_rotates_rewraps_disables_enables_and_deletes(sdk, keyward):
    inst = keyward.instance

    # Create a root key.
    key = create_key(sdk, keyward, "scenario-root-key")
    key_id = key["id"]
    assert str(uuid.UUID(key_id)) == key_id
    assert key["type"] == KEY_MEDIA and key["name"] == "scenario-root-key"
    assert key["state"] == 1 and key["extractable"] is False and key["imported"] is False
    assert key["deleted"] is False and "payload" not in key
    v1 = key["keyVersion"]["id"]
    assert "payload" not in get_key(sdk, keyward, key_id), "a root key's material never leaves"

    # Wrap the DEK with AAD, unwrap it back.
    wrapped = wrap(sdk, keyward, key_id, DEK, AAD)
    assert "plaintext" not in wrapped, "a DEK sent by the client is not echoed back"
    assert wrapped["keyVersion"]["id"] == v1
    assert base64.b64decode(wrapped["ciphertext"]) and DEK not in wrapped["ciphertext"]
    unwrapped = unwrap(sdk, keyward, key_id, wrapped["ciphertext"], AAD)
    assert unwrapped["plaintext"] == DEK
    assert unwrapped["keyVersion"]["id"] == wrapped["keyVersion"]["id"]
    assert "ciphertext" not in unwrapped and "rewrappedKeyVersion" not in unwrapped

    # Rotate: a new current version.
    rotate(sdk, keyward, key_id)
    rotated = get_key(sdk, keyward, key_id)
    v2 = rotated["keyVersion"]["id"]
    assert v2 != v1
    assert rotated["lastRotateDate"]

    # The old ciphertext still unwraps, and comes with the DEK rewrapped under the new version.
    old = unwrap(sdk, keyward, key_id, wrapped["ciphertext"], AAD)
    assert old["plaintext"] == DEK
    assert old["keyVersion"]["id"] == v1
    assert old["rewrappedKeyVersion"]["id"] == v2
    assert old["ciphertext"] and old["ciphertext"] != wrapped["ciphertext"]
    fresh = unwrap(sdk, keyward, key_id, old["ciphertext"], AAD)
    assert fresh["plaintext"] == DEK and fresh["keyVersion"]["id"] == v2
    assert "ciphertext" not in fresh, "a ciphertext of the latest version needs no rewrap"

    # Rewrap the old ciphertext: a new ciphertext under the new version, same DEK.
    rewrapped = rewrap(sdk, keyward, key_id, wrapped["ciphertext"], AAD)
    assert rewrapped["ciphertext"] and rewrapped["ciphertext"] != wrapped["ciphertext"]
    assert rewrapped["rewrappedKeyVersion"]["id"] == v2
    again = unwrap(sdk, keyward, key_id, rewrapped["ciphertext"], AAD)
    assert again["plaintext"] == DEK
    assert again["keyVersion"]["id"] == v2, "the rewrapped ciphertext is under the new version"

    # Disable: wrap and unwrap are refused with 409; enable: wrap works again.
    assert sdk.disable_key(id=key_id, bluemix_instance=inst).get_status_code() == 204
    assert get_key(sdk, keyward, key_id)["state"] == 2
    reason = expect_api_error(409, lambda: wrap(sdk, keyward, key_id, DEK, AAD))
    assert reason["code"] == "KEY_ACTION_INVALID_STATE_ERR"
    reason = expect_api_error(409, lambda: unwrap(sdk, keyward, key_id, wrapped["ciphertext"], AAD))
    assert reason["code"] == "KEY_ACTION_INVALID_STATE_ERR"
    assert sdk.enable_key(id=key_id, bluemix_instance=inst).get_status_code() == 204
    assert get_key(sdk, keyward, key_id)["state"] == 1
    after_enable = wrap(sdk, keyward, key_id, DEK, AAD)
    assert after_enable["keyVersion"]["id"] == v2
    assert unwrap(sdk, keyward, key_id, after_enable["ciphertext"], AAD)["plaintext"] == DEK

    # Delete (200 with the key for Prefer: return=representation): state 5.
    deleted = sdk.delete_key(id=key_id, bluemix_instance=inst, prefer="return=representation")
    assert deleted.get_status_code() == 200
    gone = body(deleted)["resources"][0]
    assert gone["id"] == key_id and gone["state"] == 5 and gone["deleted"] is True
    # A deleted key unwraps nothing. Key Protect answers 410 Gone with KEY_DELETED_ERR ("Key has
    # already been deleted: Please delete references to this key"), not 409: its error reference
    # lists KEY_DELETED_ERR as the one 410, and IKS's runbook shows it on unwrap.
    reason = expect_api_error(410, lambda: unwrap(sdk, keyward, key_id, after_enable["ciphertext"], AAD))
    assert reason["code"] == "KEY_DELETED_ERR"
    reason = expect_api_error(410, lambda: wrap(sdk, keyward, key_id, DEK, AAD))
    assert reason["code"] == "KEY_DELETED_ERR"


# Key Protect documents keyVersion = the version of the supplied ciphertext and
# rewrappedKeyVersion = the latest ("Rewrapping keys"; the SDK's RewrapKeyResponseBody docstring).
def test_rewrap_reports_the_supplied_ciphertexts_version_as_keyVersion(sdk, keyward):
    key_id = create_key(sdk, keyward, "rewrap-versions")["id"]
    wrapped = wrap(sdk, keyward, key_id, DEK)
    old_version = wrapped["keyVersion"]["id"]
    rotate(sdk, keyward, key_id)
    new_version = get_key(sdk, keyward, key_id)["keyVersion"]["id"]
    assert new_version != old_version

    rewrapped = rewrap(sdk, keyward, key_id, wrapped["ciphertext"])
    assert rewrapped["rewrappedKeyVersion"]["id"] == new_version
    assert rewrapped["keyVersion"]["id"] == old_version


def test_wrap_without_plaintext_generates_a_32_byte_dek_that_unwraps(sdk, keyward):
    key_id = create_key(sdk, keyward, "dek-generator")["id"]

    generated = wrap(sdk, keyward, key_id)  # body {}
    dek = base64.b64decode(generated["plaintext"], validate=True)
    assert len(dek) == 32
    assert generated["ciphertext"] and generated["keyVersion"]["id"]
    assert unwrap(sdk, keyward, key_id, generated["ciphertext"])["plaintext"] == generated["plaintext"]

    # "You can also pass in an empty body on a wrap request" (Key Protect docs): the SDK's
    # wrap body is optional.
    r = sdk.wrap_key(id=key_id, bluemix_instance=keyward.instance)
    assert r.get_status_code() == 200
    no_body = body(r)
    assert len(base64.b64decode(no_body["plaintext"], validate=True)) == 32
    assert unwrap(sdk, keyward, key_id, no_body["ciphertext"])["plaintext"] == no_body["plaintext"]

    # With AAD too, and every generated DEK is fresh.
    with_aad = wrap(sdk, keyward, key_id, aad=AAD)
    assert unwrap(sdk, keyward, key_id, with_aad["ciphertext"], AAD)["plaintext"] == with_aad["plaintext"]
    assert len({generated["plaintext"], no_body["plaintext"], with_aad["plaintext"]}) == 3


# --------------------------------------------------------------------------------------------
# The SDK's models
# --------------------------------------------------------------------------------------------


def list_keys_with_total_count(sdk, keyward, **params):
    """`GET /api/v2/keys?totalCount=true` through the SDK's own request path (its `get_keys` has
    no parameter for totalCount)."""
    request = sdk.prepare_request(
        method="GET", url="/api/v2/keys",
        headers={"Bluemix-Instance": keyward.instance, "Accept": "application/json"},
        params={"totalCount": True, **params},
    )
    r = sdk.send(request)
    assert r.get_status_code() == 200
    return body(r)


def test_sdk_models_parse_every_key_response(sdk, keyward):
    inst = keyward.instance

    created = create_key(sdk, keyward, "modelled-key", description="parsed by the SDK's models")
    created_doc = {"metadata": {"collectionType": KEY_MEDIA, "collectionTotal": 1}, "resources": [created]}
    key = parse_with(models.Key, created_doc).resources[0]
    assert isinstance(key, models.KeyWithPayload)
    assert key.name == "modelled-key" and key.description == "parsed by the SDK's models"
    assert key.state == 1 and key.extractable is False and key.algorithm_type == "AES"
    assert isinstance(key.creation_date, datetime) and isinstance(key.last_update_date, datetime)
    assert key.key_version.id and isinstance(key.key_version.creation_date, datetime)
    assert key.dual_auth_delete.enabled is False
    key_id = key.id

    got = parse_with(models.GetKey, body(sdk.get_key(id=key_id, bluemix_instance=inst)))
    assert got.metadata.collection_type == KEY_MEDIA and got.metadata.collection_total == 1
    assert got.resources[0].id == key_id

    meta = parse_with(models.GetKeyMetadata, body(sdk.get_key_metadata(id=key_id, bluemix_instance=inst)))
    assert isinstance(meta.resources[0], models.KeyFullRepresentation)
    assert meta.resources[0].id == key_id and meta.resources[0].crn.endswith(f":key:{key_id}")

    listed = parse_with(models.ListKeys, body(sdk.get_keys(bluemix_instance=inst, limit=5000)))
    assert key_id in [k.id for k in listed.resources]
    assert listed.metadata.collection_total == len(listed.resources)

    counted = list_keys_with_total_count(sdk, keyward, limit=1)
    parse_with(models.ListKeys, counted)
    assert counted["metadata"]["collectionTotal"] == 1 == len(counted["resources"])
    assert counted["metadata"]["totalCount"] == len(listed.resources)

    wrapped = parse_with(models.WrapKeyResponseBody, wrap(sdk, keyward, key_id, DEK, AAD))
    assert wrapped.plaintext is None and wrapped.ciphertext and wrapped.key_version.id == key.key_version.id
    unwrapped = parse_with(models.UnwrapKeyResponseBody, unwrap(sdk, keyward, key_id, wrapped.ciphertext, AAD))
    assert unwrapped.plaintext == DEK and unwrapped.key_version.id == wrapped.key_version.id
    assert unwrapped.ciphertext is None and unwrapped.rewrapped_key_version is None

    rotate(sdk, keyward, key_id)
    stale = parse_with(models.UnwrapKeyResponseBody, unwrap(sdk, keyward, key_id, wrapped.ciphertext, AAD))
    assert stale.ciphertext and stale.rewrapped_key_version.id != wrapped.key_version.id
    rewrapped = parse_with(models.RewrapKeyResponseBody, rewrap(sdk, keyward, key_id, wrapped.ciphertext, AAD))
    assert rewrapped.ciphertext and rewrapped.rewrapped_key_version.id == stale.rewrapped_key_version.id

    versions_doc = body(sdk.get_key_versions(id=key_id, bluemix_instance=inst, total_count=True))
    versions = parse_with(models.ListKeyVersions, versions_doc)
    assert [v.id for v in versions.resources] == [stale.rewrapped_key_version.id, wrapped.key_version.id], \
        "newest first"
    assert all(isinstance(v.creation_date, datetime) for v in versions.resources)
    assert versions.metadata["totalCount"] == 2 and versions.metadata["collectionTotal"] == 2

    deleted = sdk.delete_key(id=key_id, bluemix_instance=inst, prefer="return=representation")
    assert deleted.get_status_code() == 200
    gone = parse_with(models.DeleteKey, body(deleted)).resources[0]
    assert gone.id == key_id and gone.state == 5 and gone.deleted is True
    assert isinstance(gone.deletion_date, datetime) and gone.deleted_by


def test_head_keys_reports_the_key_total_in_x_kms_key_total(sdk, keyward):
    inst = keyward.instance
    create_key(sdk, keyward, "counted-key")
    doomed = create_key(sdk, keyward, "counted-deleted-key")["id"]
    assert sdk.delete_key(id=doomed, bluemix_instance=inst).get_status_code() == 204

    head = sdk.get_key_collection_metadata(bluemix_instance=inst)
    assert head.get_status_code() == 200
    total = int(head.get_headers()["X-Kms-Key-Total"])
    live = body(sdk.get_keys(bluemix_instance=inst, limit=5000))["resources"]
    assert total == len(live) >= 1
    assert doomed not in [k["id"] for k in live], "deleted keys are not listed by default"
    assert list_keys_with_total_count(sdk, keyward)["metadata"]["totalCount"] == total

    head_deleted = sdk.get_key_collection_metadata(bluemix_instance=inst, state=[5])
    deleted = body(sdk.get_keys(bluemix_instance=inst, limit=5000, state=[5]))["resources"]
    assert int(head_deleted.get_headers()["X-Kms-Key-Total"]) == len(deleted) >= 1
    assert doomed in [k["id"] for k in deleted]


# --------------------------------------------------------------------------------------------
# Standard and imported keys
# --------------------------------------------------------------------------------------------


def test_standard_key_returns_its_imported_payload_and_refuses_to_wrap(sdk, keyward):
    secret = b64(os.urandom(48))
    key = create_key(sdk, keyward, "standard-key", extractable=True, payload=secret)
    assert key["extractable"] is True and key["imported"] is True and key["state"] == 1

    got = get_key(sdk, keyward, key["id"])
    assert got["payload"] == secret
    modelled = parse_with(models.GetKey, body(sdk.get_key(id=key["id"], bluemix_instance=keyward.instance)))
    assert modelled.resources[0].payload == base64.b64decode(secret), "the SDK decodes the payload"

    reason = expect_api_error(400, lambda: wrap(sdk, keyward, key["id"], DEK))
    assert reason["code"] == "KEY_ROOT_REQ_ERR"

    # Delete without Prefer: 204 and no body.
    r = sdk.delete_key(id=key["id"], bluemix_instance=keyward.instance)
    assert r.get_status_code() == 204 and r.get_result() is None


@pytest.mark.parametrize("size", [16, 24, 32])
def test_imported_root_key_of_16_24_or_32_bytes_is_accepted(sdk, keyward, size):
    key = create_key(sdk, keyward, f"imported-root-{size}", payload=b64(os.urandom(size)))
    assert key["imported"] is True and key["extractable"] is False and key["state"] == 1
    assert key["algorithmBitSize"] == size * 8
    assert "payload" not in key and "payload" not in get_key(sdk, keyward, key["id"])
    wrapped = wrap(sdk, keyward, key["id"], DEK, AAD)
    assert unwrap(sdk, keyward, key["id"], wrapped["ciphertext"], AAD)["plaintext"] == DEK


@pytest.mark.parametrize("size", [15, 17, 64])
def test_imported_root_key_of_another_size_is_refused_with_400(sdk, keyward, size):
    expect_api_error(400, lambda: create_key(sdk, keyward, f"bad-import-{size}", payload=b64(os.urandom(size))))


# --------------------------------------------------------------------------------------------
# Unhappy paths: a clear 4xx in Key Protect's error format
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wrapped_dek(sdk, keyward):
    """A root key, the DEK wrapped by it with AAD, and the same DEK wrapped by another key."""
    key_id = create_key(sdk, keyward, "unhappy-target")["id"]
    other_id = create_key(sdk, keyward, "unhappy-other")["id"]
    return {
        "key": key_id,
        "ciphertext": wrap(sdk, keyward, key_id, DEK, AAD)["ciphertext"],
        "other_ciphertext": wrap(sdk, keyward, other_id, DEK, AAD)["ciphertext"],
    }


def test_wrap_with_plaintext_that_is_not_base64_is_400(sdk, keyward, wrapped_dek):
    reason = expect_api_error(400, lambda: wrap(sdk, keyward, wrapped_dek["key"], "%%% not base64 %%%"))
    assert reason["code"] == "BAD_BODY_ERR"


def test_malformed_json_body_is_400(sdk, keyward, wrapped_dek):
    raw = b'{"plaintext": "' + DEK.encode() + b'", '
    reason = expect_api_error(400, lambda: sdk.wrap_key(
        id=wrapped_dek["key"], bluemix_instance=keyward.instance, key_action_wrap_body=raw))
    assert reason["code"] == "BAD_BODY_ERR"
    assert DEK not in json.dumps(reason), "the error does not echo the body"
    reason = expect_api_error(400, lambda: sdk.unwrap_key(
        id=wrapped_dek["key"], bluemix_instance=keyward.instance, key_action_unwrap_body=io.BytesIO(b"[1, 2")))
    assert reason["code"] == "BAD_BODY_ERR"


def test_unwrap_with_wrong_aad_is_422(sdk, keyward, wrapped_dek):
    for aad in (["tenant-b", "db-7"], ["db-7", "tenant-a"], AAD + ["extra"], ["tenant-a"]):
        reason = expect_api_error(422, lambda: unwrap(sdk, keyward, wrapped_dek["key"], wrapped_dek["ciphertext"], aad))
        assert reason["code"] == "UNPROCESSABLE_CIPHERTEXT_ERR"


def test_unwrap_without_the_aad_given_to_wrap_is_422(sdk, keyward, wrapped_dek):
    reason = expect_api_error(422, lambda: unwrap(sdk, keyward, wrapped_dek["key"], wrapped_dek["ciphertext"]))
    assert reason["code"] == "UNPROCESSABLE_CIPHERTEXT_ERR"
    reason = expect_api_error(422, lambda: unwrap(sdk, keyward, wrapped_dek["key"], wrapped_dek["ciphertext"], []))
    assert reason["code"] == "UNPROCESSABLE_CIPHERTEXT_ERR"


def test_unwrap_of_a_tampered_ciphertext_is_422(sdk, keyward, wrapped_dek):
    ciphertext = wrapped_dek["ciphertext"]
    size = len(base64.b64decode(ciphertext))
    for index in (0, size // 2, size - 1):  # header, body, tag
        reason = expect_api_error(422, lambda: unwrap(
            sdk, keyward, wrapped_dek["key"], flip_byte(ciphertext, index), AAD))
        assert reason["code"] == "UNPROCESSABLE_CIPHERTEXT_ERR"


def test_every_single_byte_flip_of_a_ciphertext_is_refused_with_422(sdk, keyward, wrapped_dek):
    ciphertext = wrapped_dek["ciphertext"]
    for index in range(len(base64.b64decode(ciphertext))):
        expect_api_error(422, lambda: unwrap(sdk, keyward, wrapped_dek["key"], flip_byte(ciphertext, index), AAD))


def test_unwrap_of_a_truncated_ciphertext_is_422(sdk, keyward, wrapped_dek):
    raw = base64.b64decode(wrapped_dek["ciphertext"])
    for cut in (raw[:-1], raw[: len(raw) // 2], raw[:1]):
        reason = expect_api_error(422, lambda: unwrap(sdk, keyward, wrapped_dek["key"], b64(cut), AAD))
        assert reason["code"] == "UNPROCESSABLE_CIPHERTEXT_ERR"


def test_unwrap_of_another_keys_ciphertext_is_422(sdk, keyward, wrapped_dek):
    reason = expect_api_error(422, lambda: unwrap(sdk, keyward, wrapped_dek["key"], wrapped_dek["other_ciphertext"], AAD))
    assert reason["code"] == "UNPROCESSABLE_CIPHERTEXT_ERR"


def test_unknown_key_id_is_404(sdk, keyward):
    unknown = str(uuid.uuid4())
    reason = expect_api_error(404, lambda: wrap(sdk, keyward, unknown, DEK))
    assert reason["code"] == "KEY_NOT_FOUND_ERR"
    reason = expect_api_error(404, lambda: sdk.get_key(id=unknown, bluemix_instance=keyward.instance))
    assert reason["code"] == "KEY_NOT_FOUND_ERR"


def test_wrong_bluemix_instance_is_401(sdk, keyward, wrapped_dek):
    stranger = str(uuid.uuid4())
    reason = expect_api_error(401, lambda: sdk.wrap_key(
        id=wrapped_dek["key"], bluemix_instance=stranger, key_action_wrap_body=as_file({"plaintext": DEK})))
    assert reason["code"] == "UNAUTHORIZED_ERR"
    reason = expect_api_error(401, lambda: sdk.get_keys(bluemix_instance=stranger))
    assert reason["code"] == "UNAUTHORIZED_ERR"


def test_missing_or_garbage_bearer_token_is_401(keyward, wrapped_dek):
    url = f"{keyward.url}/api/v2/keys/{wrapped_dek['key']}/actions/wrap"
    for auth in (None, "Bearer garbage", "Bearer ", "Bearer eyJhbGciOiJub25lIn0.e30.", "Basic Zm9vOmJhcg=="):
        headers = {"bluemix-instance": keyward.instance, "content-type": "application/vnd.ibm.kms.key_action+json"}
        if auth is not None:
            headers["authorization"] = auth
        r = requests.post(url, headers=headers, data=json.dumps({"plaintext": DEK}), timeout=10)
        reason = assert_kp_error(r, 401)
        assert reason["code"] == "UNAUTHORIZED_ERR"


def test_aad_item_of_256_characters_is_400(sdk, keyward, wrapped_dek):
    key_id = wrapped_dek["key"]
    # Key Protect: "Each string can hold up to 255 characters."
    at_limit = wrap(sdk, keyward, key_id, DEK, ["a" * 255])
    assert unwrap(sdk, keyward, key_id, at_limit["ciphertext"], ["a" * 255])["plaintext"] == DEK
    reason = expect_api_error(400, lambda: wrap(sdk, keyward, key_id, DEK, ["a" * 256]))
    assert reason["code"] == "BAD_BODY_ERR"


# --------------------------------------------------------------------------------------------
# The IAM-compatible token endpoint
# --------------------------------------------------------------------------------------------


def request_token(keyward, apikey):
    return requests.post(
        f"{keyward.url}/identity/token",
        data={"grant_type": API_KEY_GRANT, "apikey": apikey},
        headers={"Accept": "application/json"},
        timeout=10,
    )


def test_token_endpoint_refuses_a_wrong_api_key_with_an_iam_error(keyward):
    key_id, _, secret = keyward.api_key.partition(".")
    wrong_secret = f"{key_id}.{'A' * len(secret)}" if secret else keyward.api_key + "x"
    for apikey in (wrong_secret, "not-an-api-key", str(uuid.uuid4())):
        r = request_token(keyward, apikey)
        assert r.status_code == 400, r.text
        doc = r.json()
        assert doc["errorCode"].startswith("BXNIM") and doc["errorMessage"]
        assert "access_token" not in doc


def test_access_token_is_an_rs256_jwt_with_exp_iat_sub_and_account(keyward):
    r = request_token(keyward, keyward.api_key)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["token_type"] == "Bearer" and doc["expires_in"] > 0
    token = doc["access_token"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    claims = jwt.decode(token, options={"verify_signature": False})
    for claim in ("exp", "iat", "sub", "account"):
        assert claim in claims, claim
    assert claims["exp"] > claims["iat"] and claims["exp"] == doc["expiration"]
    assert abs(claims["iat"] - time.time()) < 300
    assert claims["sub"]


def test_jwks_verifies_the_access_token(keyward, sdk):
    token = request_token(keyward, keyward.api_key).json()["access_token"]
    jwks = requests.get(f"{keyward.url}/identity/keys", timeout=10)
    assert jwks.status_code == 200
    keys = jwks.json()["keys"]
    header = jwt.get_unverified_header(token)
    jwk = next(k for k in keys if k.get("kid") == header.get("kid")) if "kid" in header else keys[0]
    assert jwk["kty"] == "RSA"
    public_key = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk))

    # PyJWT verifies it...
    claims = jwt.decode(token, public_key, algorithms=["RS256"], options={"verify_aud": False})
    assert claims["sub"] and claims["account"]

    # ... and so does `cryptography` itself: RSASSA-PKCS1-v1_5 with SHA-256 over header.payload.
    signing_input, _, signature = token.rpartition(".")
    raw_signature = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    public_key.verify(raw_signature, signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        public_key.verify(raw_signature, signing_input.encode() + b"x", padding.PKCS1v15(), hashes.SHA256())

    # The token the SDK's IAMAuthenticator fetched verifies the same way.
    sdk_token = sdk.authenticator.token_manager.get_token()
    jwt.decode(sdk_token, public_key, algorithms=["RS256"], options={"verify_aud": False})


# --------------------------------------------------------------------------------------------
# Last: nothing secret reached the server's log
# --------------------------------------------------------------------------------------------


def test_server_log_holds_no_api_key_token_or_dek(keyward, sdk):
    log = keyward.log()
    assert keyward.api_key not in log
    assert keyward.api_key.partition(".")[2] not in log
    assert DEK not in log
    assert sdk.authenticator.token_manager.get_token() not in log
