"""Interop: import tokens and secure import through the public `keyprotect` SDK (3.0.1):
`post_import_token` and `get_import_token` with the SDK's `ImportToken` and `GetImportToken` models
parsing the bodies, and `create_key` and `rotate_key` carrying material RSA-OAEP-encrypted to the
token's public key, with the token's nonce AES-GCM-sealed under the material, the client side done
with `cryptography` as Key Protect's own guides do it.

This module runs its own `keyward serve` (module scope): an instance has one import token, and the
tests here create, use up and replace it.
"""

import base64
import json
import os
import uuid
from datetime import datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from keyprotect import ibm_key_protect_api_v2 as models

from conftest import (
    DEFAULT_CONFIG, KEY_MEDIA, as_file, b64, body, expect_api_error, get_key, make_sdk, parse_with,
    serve_keyward, unwrap, wrap,
)

SHA256 = "RSAES_OAEP_SHA_256"
SHA1 = "RSAES_OAEP_SHA_1"
HASHES = {SHA256: hashes.SHA256, SHA1: hashes.SHA1}


@pytest.fixture(scope="module")
def keyward(tmp_path_factory):
    """Overrides the suite's `keyward`: a server of this module's own."""
    with serve_keyward(tmp_path_factory.mktemp("keyward-import-token"), DEFAULT_CONFIG) as server:
        yield server


@pytest.fixture(scope="module")
def sdk(keyward):
    return make_sdk(keyward)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def post_token(sdk, keyward, **terms):
    """POST /import_token through the SDK; the body parsed with its `ImportToken` model."""
    r = sdk.post_import_token(bluemix_instance=keyward.instance, **terms)
    assert r.get_status_code() == 200
    doc = body(r)
    assert "payload" not in doc and "nonce" not in doc, "POST does not hand out the key"
    return doc, parse_with(models.ImportToken, doc)


def get_token(sdk, keyward):
    """GET /import_token through the SDK; the body parsed with its `GetImportToken` model."""
    r = sdk.get_import_token(bluemix_instance=keyward.instance)
    assert r.get_status_code() == 200
    doc = body(r)
    return doc, parse_with(models.GetImportToken, doc)


def fresh_token(sdk, keyward, retrievals=1):
    """A new token, retrieved once: the SDK's `GetImportToken` with its key and nonce."""
    post_token(sdk, keyward, expiration=900, max_allowed_retrievals=retrievals)
    return get_token(sdk, keyward)[1]


def seal(token, material: bytes, algorithm=SHA256, *, iv=None, nonce=None, nonce_key=None):
    """The secure-import fields for `material`: RSA-OAEP to the token's key, the nonce sealed
    with AES-GCM under the material (or `nonce_key`), tag appended."""
    public = serialization.load_pem_public_key(token.payload)
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 4096
    h = HASHES[algorithm]
    ct = public.encrypt(material, padding.OAEP(mgf=padding.MGF1(algorithm=h()), algorithm=h(),
                                               label=None))
    iv = os.urandom(12) if iv is None else iv
    sealed = AESGCM(nonce_key or material).encrypt(iv, token.nonce if nonce is None else nonce, None)
    return {"payload": b64(ct), "encryptedNonce": b64(sealed), "iv": b64(iv),
            "encryptionAlgorithm": algorithm}


def key_body(name, fields):
    return as_file({
        "metadata": {"collectionType": KEY_MEDIA, "collectionTotal": 1},
        "resources": [{"type": KEY_MEDIA, "name": name, "extractable": False, **fields}],
    })


def create_secure(sdk, keyward, fields, name=None):
    r = sdk.create_key(bluemix_instance=keyward.instance,
                       key_create_body=key_body(name or unique("secure"), fields),
                       prefer="return=representation")
    assert r.get_status_code() == 201
    key = body(r)["resources"][0]
    assert key["imported"] is True and key["extractable"] is False, key
    return key


def create_refused(sdk, keyward, fields, status, code):
    reason = expect_api_error(status, lambda: sdk.create_key(
        bluemix_instance=keyward.instance, key_create_body=key_body(unique("refused"), fields)))
    assert reason["code"] == code, reason
    return reason


def rotate_secure(sdk, keyward, key_id, fields):
    r = sdk.rotate_key(id=key_id, bluemix_instance=keyward.instance,
                       key_action_rotate_body=as_file(fields))
    assert r.get_status_code() == 204


def restores_with(sdk, keyward, key_id, material):
    """The key holds exactly `material`: deleting it and restoring it with that material works."""
    r = sdk.delete_key(id=key_id, bluemix_instance=keyward.instance)
    assert r.get_status_code() in (200, 204)
    # The SDK's restore_key takes no body; an imported key's restore needs its material, so the
    # request goes through the SDK's own prepare_request/send.
    request = sdk.prepare_request(
        method="POST", url=f"/api/v2/keys/{key_id}/restore",
        headers={"Bluemix-Instance": keyward.instance, "Accept": "application/json",
                 "content-type": "application/vnd.ibm.kms.key_action+json"},
        data=json.dumps({"metadata": {"collectionType": KEY_MEDIA, "collectionTotal": 1},
                         "resources": [{"payload": b64(material)}]}),
    )
    r = sdk.send(request)
    assert r.get_status_code() == 201
    assert body(r)["resources"][0]["imported"] is True
    assert get_key(sdk, keyward, key_id)["state"] == 1


# --------------------------------------------------------------------------------------------
# Happy paths
# --------------------------------------------------------------------------------------------


def test_import_token_terms_and_retrieval_counting(sdk, keyward):
    doc, token = post_token(sdk, keyward, expiration=1200, max_allowed_retrievals=3)
    assert doc["expiration"] == 1200 and doc["maxAllowedRetrievals"] == 3
    assert doc["remainingRetrievals"] == 3
    assert token.expiration_date - token.creation_date == timedelta(seconds=1200)
    for left in (2, 1, 0):
        got, parsed = get_token(sdk, keyward)
        assert got["remainingRetrievals"] == left
        assert got["expiration"] == 1200 and got["maxAllowedRetrievals"] == 3
        assert parsed.creation_date == token.creation_date
        assert parsed.payload.startswith(b"-----BEGIN PUBLIC KEY-----")
        public = serialization.load_pem_public_key(parsed.payload)
        assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 4096
        assert len(parsed.nonce) >= 8
    reason = expect_api_error(409, lambda: sdk.get_import_token(bluemix_instance=keyward.instance))
    assert reason["code"] == "IMPORT_TOKEN_EXPIRED_ERR"

    # Defaults: 600 seconds, one retrieval.
    doc, token = post_token(sdk, keyward)
    assert doc["expiration"] == 600 and doc["maxAllowedRetrievals"] == 1
    assert doc["remainingRetrievals"] == 1
    assert isinstance(token.creation_date, datetime)
    assert token.expiration_date - token.creation_date == timedelta(seconds=600)


@pytest.mark.parametrize("algorithm", [SHA256, SHA1])
@pytest.mark.parametrize("size", [16, 24, 32])
def test_import_token_secure_create(sdk, keyward, algorithm, size):
    token = fresh_token(sdk, keyward)
    material = os.urandom(size)
    key = create_secure(sdk, keyward, seal(token, material, algorithm))
    w = wrap(sdk, keyward, key["id"])
    assert unwrap(sdk, keyward, key["id"], w["ciphertext"])["plaintext"] == w["plaintext"]
    restores_with(sdk, keyward, key["id"], material)


def test_import_token_default_algorithm_is_oaep_sha256(sdk, keyward):
    token = fresh_token(sdk, keyward)
    fields = seal(token, os.urandom(32), SHA256)
    del fields["encryptionAlgorithm"]
    create_secure(sdk, keyward, fields)


def test_import_token_one_token_serves_several_imports(sdk, keyward):
    """The token is used for as long as it lives; retrievals only limit GETs."""
    token = fresh_token(sdk, keyward)
    for algorithm in (SHA256, SHA1, SHA256):
        create_secure(sdk, keyward, seal(token, os.urandom(32), algorithm))


def test_import_token_secure_rotate(sdk, keyward):
    token = fresh_token(sdk, keyward, retrievals=2)
    key = create_secure(sdk, keyward, seal(token, os.urandom(32)))
    w = wrap(sdk, keyward, key["id"])
    newer = os.urandom(32)
    rotate_secure(sdk, keyward, key["id"], seal(token, newer, SHA1))
    after = get_key(sdk, keyward, key["id"])
    assert after["keyVersion"]["id"] != w["keyVersion"]["id"]
    u = unwrap(sdk, keyward, key["id"], w["ciphertext"])
    assert u["plaintext"] == w["plaintext"]
    w2 = wrap(sdk, keyward, key["id"])
    assert w2["keyVersion"]["id"] == after["keyVersion"]["id"]
    # A second token (the second retrieval of this one, after a fresh GET) still seals rotations.
    _, again = get_token(sdk, keyward)
    assert again.nonce == token.nonce and again.payload == token.payload
    rotate_secure(sdk, keyward, key["id"], seal(again, os.urandom(16)))
    assert unwrap(sdk, keyward, key["id"], w2["ciphertext"])["plaintext"] == w2["plaintext"]


# --------------------------------------------------------------------------------------------
# Unhappy paths
# --------------------------------------------------------------------------------------------


def test_import_token_not_found_before_any_token(tmp_path_factory):
    """A fresh instance has no token: GET and a secure create are 404."""
    with serve_keyward(tmp_path_factory.mktemp("keyward-no-token"), DEFAULT_CONFIG) as server:
        fresh = make_sdk(server)
        reason = expect_api_error(404, lambda: fresh.get_import_token(bluemix_instance=server.instance))
        assert reason["code"] == "IMPORT_TOKEN_NOT_FOUND_ERR"
        fields = {"payload": b64(os.urandom(512)), "encryptedNonce": b64(os.urandom(24)),
                  "iv": b64(os.urandom(12)), "encryptionAlgorithm": SHA256}
        create_refused(fresh, server, fields, 404, "IMPORT_TOKEN_NOT_FOUND_ERR")


@pytest.mark.parametrize("terms", [
    {"expiration": 299}, {"expiration": 86401}, {"max_allowed_retrievals": 0},
    {"max_allowed_retrievals": 501},
])
def test_import_token_bad_terms(sdk, keyward, terms):
    expect_api_error(400, lambda: sdk.post_import_token(bluemix_instance=keyward.instance, **terms))


def test_import_token_retrievals_used_up(sdk, keyward):
    token = fresh_token(sdk, keyward, retrievals=1)
    reason = expect_api_error(409, lambda: sdk.get_import_token(bluemix_instance=keyward.instance))
    assert reason["code"] == "IMPORT_TOKEN_EXPIRED_ERR"
    # What was retrieved before still imports.
    create_secure(sdk, keyward, seal(token, os.urandom(32)))


def test_import_token_wrong_nonce(sdk, keyward):
    token = fresh_token(sdk, keyward)
    material = os.urandom(32)
    create_refused(sdk, keyward, seal(token, material, nonce=b"not the nonce at all"), 400,
                   "INCORRECT_NONCE_ERR")
    # The right nonce sealed under other material.
    create_refused(sdk, keyward, seal(token, material, nonce_key=os.urandom(32)), 400,
                   "INCORRECT_NONCE_ERR")
    # A tampered tag.
    fields = seal(token, material)
    sealed = bytearray(base64.b64decode(fields["encryptedNonce"]))
    sealed[-1] ^= 1
    fields["encryptedNonce"] = b64(bytes(sealed))
    create_refused(sdk, keyward, fields, 400, "INCORRECT_NONCE_ERR")


def test_import_token_bad_iv(sdk, keyward):
    token = fresh_token(sdk, keyward)
    material = os.urandom(32)
    fields = seal(token, material)
    fields["iv"] = b64(os.urandom(8))
    create_refused(sdk, keyward, fields, 400, "INCORRECT_NONCE_IV_ERR")
    # Another 12-byte IV than the one the nonce was sealed with.
    fields = seal(token, material, iv=b"\x01" * 12)
    fields["iv"] = b64(b"\x02" * 12)
    create_refused(sdk, keyward, fields, 400, "INCORRECT_NONCE_ERR")


@pytest.mark.parametrize("declared, used", [(SHA1, SHA256), (SHA256, SHA1), ("RSA_PKCS1", SHA256),
                                            ("rsaes_oaep_sha_256", SHA256)])
def test_import_token_wrong_algorithm(sdk, keyward, declared, used):
    token = fresh_token(sdk, keyward)
    fields = seal(token, os.urandom(32), used)
    fields["encryptionAlgorithm"] = declared
    create_refused(sdk, keyward, fields, 400, "BAD_BODY_ERR")


def test_import_token_refuses_standard_keys_and_odd_sizes(sdk, keyward):
    token = fresh_token(sdk, keyward)
    fields = seal(token, os.urandom(32))
    fields["extractable"] = True
    create_refused(sdk, keyward, fields, 400, "BAD_BODY_ERR")
    public = serialization.load_pem_public_key(token.payload)
    fields = seal(token, os.urandom(32))
    fields["payload"] = b64(public.encrypt(os.urandom(20), padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)))
    create_refused(sdk, keyward, fields, 400, "BAD_BODY_ERR")


def test_import_token_replaced_token_no_longer_imports(sdk, keyward):
    old = fresh_token(sdk, keyward)
    fields = seal(old, os.urandom(32))
    new = fresh_token(sdk, keyward)
    assert new.payload != old.payload or new.nonce != old.nonce
    create_refused(sdk, keyward, fields, 400, "BAD_BODY_ERR")


def test_import_token_secure_rotate_refused(sdk, keyward):
    token = fresh_token(sdk, keyward)
    key = create_secure(sdk, keyward, seal(token, os.urandom(32)))
    fields = seal(token, os.urandom(32), nonce=b"wrong nonce")
    reason = expect_api_error(400, lambda: sdk.rotate_key(
        id=key["id"], bluemix_instance=keyward.instance, key_action_rotate_body=as_file(fields)))
    assert reason["code"] == "INCORRECT_NONCE_ERR"
    fields = seal(token, os.urandom(32))
    fields["iv"] = b64(b"short")
    reason = expect_api_error(400, lambda: sdk.rotate_key(
        id=key["id"], bluemix_instance=keyward.instance, key_action_rotate_body=as_file(fields)))
    assert reason["code"] == "INCORRECT_NONCE_IV_ERR"
