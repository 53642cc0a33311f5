"""The public `keyprotect` SDK (PyPI) against a real `keyward serve`: the issue's scenario, the
SDK's response models parsing every response, and the unhappy paths, each answered with a clear
4xx in Key Protect's error format."""

import base64
import hashlib
import hmac
import io
import json
import os
import uuid

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from ibm_cloud_sdk_core import ApiException
from keyprotect import ibm_key_protect_api_v2 as m

DEK = base64.b64encode(os.urandom(32)).decode()
AAD = ["tenant-a", "db-7"]


def body(detailed):
    """The JSON of an SDK response: the SDK core parses `application/json` itself and hands back
    the raw response for Key Protect's `application/vnd.ibm.kms.*+json` types."""
    result = detailed.get_result()
    return result if isinstance(result, dict) else result.json()


def payload(d):
    return io.BytesIO(json.dumps(d).encode())


def create_key(kp, server, name, **fields):
    resource = {"type": "application/vnd.ibm.kms.key+json", "name": name, "extractable": False, **fields}
    r = kp.create_key(
        bluemix_instance=server.instance,
        key_create_body=payload({
            "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
            "resources": [resource],
        }),
        prefer="return=representation",
    )
    assert r.get_status_code() == 201
    return body(r)


def wrap(kp, server, key_id, plaintext=None, aad=None):
    req = {}
    if plaintext is not None:
        req["plaintext"] = plaintext
    if aad is not None:
        req["aad"] = aad
    r = kp.wrap_key(id=key_id, bluemix_instance=server.instance, key_action_wrap_body=payload(req))
    assert r.get_status_code() == 200
    return body(r)


def unwrap(kp, server, key_id, ciphertext, aad=None):
    req = {"ciphertext": ciphertext}
    if aad is not None:
        req["aad"] = aad
    r = kp.unwrap_key(id=key_id, bluemix_instance=server.instance, key_action_unwrap_body=payload(req))
    assert r.get_status_code() == 200
    return body(r)


def expect_error(status, call):
    """Runs `call`, expects an ApiException with `status` and Key Protect's error body."""
    with pytest.raises(ApiException) as err:
        call()
    assert err.value.status_code == status, err.value
    doc = err.value.http_response.json()
    assert doc["metadata"]["collectionType"] == "application/vnd.ibm.kms.error+json"
    reason = doc["resources"][0]["reasons"][0]
    assert reason["status"] == status and reason["code"] and reason["message"]
    return reason


def test_issue_scenario_create_wrap_rotate_rewrap_disable_enable_delete(kp, server):
    key = create_key(kp, server, "scenario-root")["resources"][0]
    key_id = key["id"]
    assert key["state"] == 1 and key["extractable"] is False and "payload" not in key

    w = wrap(kp, server, key_id, DEK, AAD)
    assert "plaintext" not in w
    u = unwrap(kp, server, key_id, w["ciphertext"], AAD)
    assert u["plaintext"] == DEK and u["keyVersion"]["id"] == w["keyVersion"]["id"]

    r = kp.rotate_key(id=key_id, bluemix_instance=server.instance, key_action_rotate_body=payload({}),
                      prefer="return=representation")
    assert r.get_status_code() == 204
    new_version = body(kp.get_key(id=key_id, bluemix_instance=server.instance))["resources"][0]["keyVersion"]["id"]
    assert new_version != w["keyVersion"]["id"]

    old = unwrap(kp, server, key_id, w["ciphertext"], AAD)
    assert old["plaintext"] == DEK
    assert old["keyVersion"]["id"] == w["keyVersion"]["id"]
    assert old["rewrappedKeyVersion"]["id"] == new_version
    assert unwrap(kp, server, key_id, old["ciphertext"], AAD)["plaintext"] == DEK

    rw = kp.rewrap_key(id=key_id, bluemix_instance=server.instance,
                       key_action_rewrap_body=payload({"ciphertext": w["ciphertext"], "aad": AAD}))
    assert rw.get_status_code() == 200
    rw = body(rw)
    assert rw["keyVersion"]["id"] == new_version
    assert unwrap(kp, server, key_id, rw["ciphertext"], AAD)["plaintext"] == DEK

    assert kp.disable_key(id=key_id, bluemix_instance=server.instance).get_status_code() == 204
    reason = expect_error(409, lambda: wrap(kp, server, key_id, DEK, AAD))
    assert reason["code"] == "KEY_ACTION_INVALID_STATE_ERR"
    expect_error(409, lambda: unwrap(kp, server, key_id, w["ciphertext"], AAD))
    assert kp.enable_key(id=key_id, bluemix_instance=server.instance).get_status_code() == 204
    again = wrap(kp, server, key_id, DEK, AAD)
    assert unwrap(kp, server, key_id, again["ciphertext"], AAD)["plaintext"] == DEK

    d = kp.delete_key(id=key_id, bluemix_instance=server.instance, prefer="return=representation")
    assert d.get_status_code() == 200
    deleted = m.DeleteKey.from_dict(body(d))
    assert deleted.resources[0].state == 5 and deleted.resources[0].deleted is True
    assert expect_error(410, lambda: unwrap(kp, server, key_id, again["ciphertext"], AAD))["code"] == "KEY_DELETED_ERR"
    assert expect_error(410, lambda: wrap(kp, server, key_id, DEK, AAD))["code"] == "KEY_DELETED_ERR"


def test_wrap_without_plaintext_generates_a_256_bit_dek(kp, server):
    key_id = create_key(kp, server, "generator")["resources"][0]["id"]
    w = wrap(kp, server, key_id)
    dek = base64.b64decode(w["plaintext"])
    assert len(dek) == 32
    assert unwrap(kp, server, key_id, w["ciphertext"])["plaintext"] == w["plaintext"]


def test_sdk_models_parse_every_response(kp, server):
    created = create_key(kp, server, "modelled", description="parsed by the SDK")
    m.Key.from_dict(created)
    k = m.KeyWithPayload.from_dict(created["resources"][0])
    assert k.name == "modelled" and k.algorithm_type == "AES" and k.state == 1
    key_id = k.id

    m.GetKey.from_dict(body(kp.get_key(id=key_id, bluemix_instance=server.instance)))
    meta = m.GetKeyMetadata.from_dict(body(kp.get_key_metadata(id=key_id, bluemix_instance=server.instance)))
    assert meta.resources[0].id == key_id
    listed = m.ListKeys.from_dict(body(kp.get_keys(bluemix_instance=server.instance, limit=200, state=[0, 1, 2, 3])))
    assert key_id in [r.id for r in listed.resources]
    assert listed.metadata.collection_total == len(listed.resources)
    w = m.WrapKeyResponseBody.from_dict(wrap(kp, server, key_id, DEK))
    assert w.key_version.id
    u = m.UnwrapKeyResponseBody.from_dict(unwrap(kp, server, key_id, w.ciphertext))
    assert u.plaintext == DEK
    kp.rotate_key(id=key_id, bluemix_instance=server.instance, key_action_rotate_body=payload({}))
    rw = kp.rewrap_key(id=key_id, bluemix_instance=server.instance,
                       key_action_rewrap_body=payload({"ciphertext": w.ciphertext}))
    assert m.RewrapKeyResponseBody.from_dict(body(rw)).ciphertext
    versions = m.ListKeyVersions.from_dict(body(kp.get_key_versions(
        id=key_id, bluemix_instance=server.instance, total_count=True)))
    assert len(versions.resources) == 2

    head = kp.get_key_collection_metadata(bluemix_instance=server.instance)
    assert head.get_status_code() == 200
    total = int(head.get_headers()["X-Kms-Key-Total"])
    everything = body(kp.get_keys(bluemix_instance=server.instance, limit=5000))
    assert total == len(everything["resources"]) >= 1


def test_standard_keys_hold_an_imported_payload_and_cannot_wrap(kp, server):
    secret = base64.b64encode(b"database password 7").decode()
    key = create_key(kp, server, "standard", extractable=True, payload=secret)["resources"][0]
    assert key["extractable"] is True and key["imported"] is True
    got = body(kp.get_key(id=key["id"], bluemix_instance=server.instance))["resources"][0]
    assert got["payload"] == secret
    reason = expect_error(400, lambda: wrap(kp, server, key["id"], DEK))
    assert reason["code"] == "KEY_ROOT_REQ_ERR"


@pytest.mark.parametrize("size", [16, 24, 32])
def test_imported_root_keys_of_128_192_256_bits_are_accepted(kp, server, size):
    key = create_key(kp, server, f"import-{size}", payload=base64.b64encode(os.urandom(size)).decode())
    resource = key["resources"][0]
    assert resource["imported"] is True and resource["algorithmBitSize"] == size * 8
    w = wrap(kp, server, resource["id"], DEK)
    assert unwrap(kp, server, resource["id"], w["ciphertext"])["plaintext"] == DEK


@pytest.mark.parametrize("size", [15, 17, 31, 33, 64])
def test_imported_root_keys_of_other_sizes_are_refused(kp, server, size):
    expect_error(400, lambda: create_key(kp, server, "bad-size", payload=base64.b64encode(os.urandom(size)).decode()))


@pytest.fixture(scope="module")
def target(kp, server):
    key_id = create_key(kp, server, "target")["resources"][0]["id"]
    other = create_key(kp, server, "other")["resources"][0]["id"]
    return {
        "id": key_id,
        "other": other,
        "ct": wrap(kp, server, key_id, DEK, ["x"])["ciphertext"],
        "other_ct": wrap(kp, server, other, DEK, ["x"])["ciphertext"],
    }


def flip(ct, index):
    raw = bytearray(base64.b64decode(ct))
    raw[index % len(raw)] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    "case, status, code",
    [
        ("bad base64 plaintext", 400, "BAD_BODY_ERR"),
        ("malformed JSON", 400, "BAD_BODY_ERR"),
        ("oversized aad item", 400, "BAD_BODY_ERR"),
        ("wrong aad", 422, "UNPROCESSABLE_CIPHERTEXT_ERR"),
        ("missing aad", 422, "UNPROCESSABLE_CIPHERTEXT_ERR"),
        ("tampered ciphertext", 422, "UNPROCESSABLE_CIPHERTEXT_ERR"),
        ("truncated ciphertext", 422, "UNPROCESSABLE_CIPHERTEXT_ERR"),
        ("ciphertext of another key", 422, "UNPROCESSABLE_CIPHERTEXT_ERR"),
        ("unknown key", 404, "KEY_NOT_FOUND_ERR"),
        ("wrong instance", 401, "UNAUTHORIZED_ERR"),
    ],
)
def test_unhappy_paths_get_clear_4xx_in_key_protect_format(kp, server, target, case, status, code):
    inst, key_id, ct = server.instance, target["id"], target["ct"]
    calls = {
        "bad base64 plaintext": lambda: kp.wrap_key(id=key_id, bluemix_instance=inst,
                                                    key_action_wrap_body=payload({"plaintext": "%%not base64%%"})),
        "malformed JSON": lambda: kp.wrap_key(id=key_id, bluemix_instance=inst,
                                              key_action_wrap_body=io.BytesIO(b'{"plaintext": ')),
        "oversized aad item": lambda: wrap(kp, server, key_id, DEK, ["a" * 256]),
        "wrong aad": lambda: unwrap(kp, server, key_id, ct, ["y"]),
        "missing aad": lambda: unwrap(kp, server, key_id, ct),
        "tampered ciphertext": lambda: unwrap(kp, server, key_id, flip(ct, 40), ["x"]),
        "truncated ciphertext": lambda: unwrap(kp, server, key_id,
                                               base64.b64encode(base64.b64decode(ct)[:-1]).decode(), ["x"]),
        "ciphertext of another key": lambda: unwrap(kp, server, key_id, target["other_ct"], ["x"]),
        "unknown key": lambda: wrap(kp, server, str(uuid.uuid4()), DEK),
        "wrong instance": lambda: kp.wrap_key(id=key_id, bluemix_instance=str(uuid.uuid4()),
                                              key_action_wrap_body=payload({"plaintext": DEK})),
    }
    reason = expect_error(status, calls[case])
    assert reason["code"] == code


def test_every_byte_of_a_ciphertext_is_authenticated(kp, server, target):
    raw = base64.b64decode(target["ct"])
    for i in range(len(raw)):
        expect_error(422, lambda: unwrap(kp, server, target["id"], flip(target["ct"], i), ["x"]))


def test_requests_without_a_valid_token_are_refused(server, target):
    url = f"{server.url}/api/v2/keys/{target['id']}"
    for headers in [{}, {"Authorization": "Bearer garbage"}, {"Authorization": "Basic abc"}]:
        r = requests.get(url, headers={"bluemix-instance": server.instance, **headers}, timeout=10)
        assert r.status_code == 401
        assert r.json()["resources"][0]["reasons"][0]["code"] == "UNAUTHORIZED_ERR"


def token_response(server, apikey):
    return requests.post(f"{server.url}/identity/token", timeout=10, data={
        "grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": apikey})


def test_token_endpoint_issues_rs256_jwts_that_verify_against_the_jwks(server):
    bad = token_response(server, "kwAAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    assert bad.status_code == 400 and bad.json()["errorCode"].startswith("BXNIM")

    r = token_response(server, server.api_key)
    assert r.status_code == 200
    t = r.json()
    assert t["token_type"] == "Bearer" and t["expires_in"] > 0 and t["expiration"] > 0
    token = t["access_token"]
    assert jwt.get_unverified_header(token)["alg"] == "RS256"

    jwks = requests.get(f"{server.url}/identity/keys", timeout=10).json()
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    public = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk))
    claims = jwt.decode(token, public, algorithms=["RS256"], options={"verify_aud": False})
    for claim in ("exp", "iat", "sub", "account"):
        assert claim in claims
    assert claims["exp"] - claims["iat"] == t["expires_in"]

    # The classic algorithm confusion: HS256 "signed" with the RSA public key (PyJWT refuses to
    # build such a token, so it is built by hand). The KMS API must refuse it.
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode()) + "." + b64(
        json.dumps(claims).encode())
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    forged = signing_input + "." + b64(mac)
    r = requests.get(f"{server.url}/api/v2/keys", timeout=10,
                     headers={"Authorization": f"Bearer {forged}", "bluemix-instance": server.instance})
    assert r.status_code == 401
    # The genuine token works.
    r = requests.get(f"{server.url}/api/v2/keys", timeout=10,
                     headers={"Authorization": f"Bearer {token}", "bluemix-instance": server.instance})
    assert r.status_code == 200


def test_the_server_log_holds_no_secret(server, kp):
    # Runs last in this module: by now every test above has used keys, DEKs, tokens and the API key.
    log = server.log()
    assert server.api_key not in log
    assert DEK not in log
    assert kp.authenticator.token_manager.access_token not in log
