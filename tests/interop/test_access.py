"""Interop: access control seen through the public `keyprotect` SDK. Identities, API keys, policies
and service authorizations are made with Keyward's own `/iam/v1` management API (plain HTTP);
each identity then uses the unmodified SDK with its own API key: what its role allows works, what
it does not is refused with Key Protect's error body (403 for a visible key, 404 for an invisible
one), and a removed authorization stops a service within one second.
"""

import time
import uuid

import requests

from conftest import Keyward, create_key, expect_api_error, make_sdk, unwrap, wrap


def admin_token(keyward) -> str:
    r = requests.post(f"{keyward.url}/identity/token",
                      data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": keyward.api_key})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def iam(keyward, method, path, body=None):
    r = requests.request(method, f"{keyward.url}/iam/v1{path}", json=body,
                         headers={"Authorization": f"Bearer {admin_token(keyward)}"})
    assert r.status_code in (200, 201, 204), (method, path, r.status_code, r.text)
    return r.json() if r.content else None


def identity(keyward, **fields) -> tuple[str, Keyward]:
    """Creates an identity and an API key; returns its iam_id and a Keyward handle using that key."""
    created = iam(keyward, "POST", "/identities", {"name": f"id-{uuid.uuid4().hex[:6]}", **fields})
    key = iam(keyward, "POST", "/apikeys", {"iam_id": created["iam_id"], "name": "sdk"})
    return created["iam_id"], Keyward(keyward.url, key["apikey"], keyward.instance,
                                      keyward.work_dir, keyward.stderr_path)


def test_a_reader_wraps_and_unwraps_but_cannot_manage(sdk, keyward):
    key_id = create_key(sdk, keyward, "access-reader")["id"]
    iam_id, reader = identity(keyward, kind="user")
    iam(keyward, "POST", "/policies", {"subject": iam_id, "roles": ["Reader"],
                                       "resource": {"instance_id": keyward.instance}})
    reader_sdk = make_sdk(reader)
    wrapped = wrap(reader_sdk, reader, key_id)
    assert unwrap(reader_sdk, reader, key_id, wrapped["ciphertext"])["plaintext"] == wrapped["plaintext"]
    inst = keyward.instance
    for call in (
        lambda: reader_sdk.delete_key(id=key_id, bluemix_instance=inst),
        lambda: reader_sdk.disable_key(id=key_id, bluemix_instance=inst),
        lambda: reader_sdk.rotate_key(id=key_id, bluemix_instance=inst),
        lambda: reader_sdk.get_policy(id=key_id, bluemix_instance=inst),
        lambda: reader_sdk.get_instance_policy(bluemix_instance=inst),
    ):
        assert expect_api_error(403, call)["code"] == "UNAUTHORIZED_ERR"
    # Listing works for a Reader.
    assert reader_sdk.get_keys(bluemix_instance=inst).get_status_code() == 200


def test_a_key_scoped_manager_sees_one_key_only(sdk, keyward):
    mine = create_key(sdk, keyward, "access-mine")["id"]
    other = create_key(sdk, keyward, "access-other")["id"]
    iam_id, manager = identity(keyward, kind="service_id")
    iam(keyward, "POST", "/policies", {"subject": iam_id, "roles": ["Manager"],
                                       "resource": {"instance_id": keyward.instance, "key_id": mine}})
    m = make_sdk(manager)
    inst = keyward.instance
    assert m.get_key_metadata(id=mine, bluemix_instance=inst).get_status_code() == 200
    # Another key of the instance answers exactly like a key that does not exist.
    a = expect_api_error(404, lambda: m.get_key_metadata(id=other, bluemix_instance=inst))
    b = expect_api_error(404, lambda: m.get_key_metadata(id=str(uuid.uuid4()), bluemix_instance=inst))
    assert a["code"] == b["code"] == "KEY_NOT_FOUND_ERR"
    assert m.disable_key(id=mine, bluemix_instance=inst).get_status_code() == 204


def test_a_service_is_cut_off_when_its_authorization_is_removed(sdk, keyward):
    key_id = create_key(sdk, keyward, "access-byok")["id"]
    svc_instance = f"es-{uuid.uuid4().hex[:6]}"
    _, service = identity(keyward, kind="service", service_name="messagehub",
                          service_instance=svc_instance)
    auth = iam(keyward, "POST", "/authorizations", {
        "source": {"service_name": "messagehub", "service_instance": svc_instance},
        "target": {"instance_id": keyward.instance, "key_id": key_id}, "roles": ["Reader"]})
    s = make_sdk(service)
    wrapped = wrap(s, service, key_id)
    iam(keyward, "DELETE", f"/authorizations/{auth['id']}")
    removed = time.monotonic()
    while True:
        try:
            unwrap(s, service, key_id, wrapped["ciphertext"])
        except Exception:  # noqa: BLE001 - any refusal; checked precisely below
            break
        assert time.monotonic() - removed < 1.0, "still allowed 1 s after the removal"
        time.sleep(0.05)
    reason = expect_api_error(404, lambda: unwrap(s, service, key_id, wrapped["ciphertext"]))
    assert reason["code"] == "KEY_NOT_FOUND_ERR"
