"""Interop: the rest of Key Protect's v2 surface, through the public `keyprotect` SDK (3.0.1).

Key and instance policies, keys_with_policy_overrides, the deletion lifecycle (delete, restore,
purge), dual authorization, key rings, aliases and the scheduler, each with its happy and unhappy
paths, and the SDK's own response models parsing every body.

This module runs its own `keyward serve` (module scope) with short lifecycle windows, so that
tests can watch purges, scheduled rotations and expirations happen. Instance policies are
instance-wide: every test that sets one disables it again before it ends.
"""

import http.client
import json
import os
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from urllib.parse import urlparse

import pytest
from ibm_cloud_sdk_core import ApiException
from keyprotect import ibm_key_protect_api_v2 as models

from conftest import (
    ERROR_MEDIA, KEY_MEDIA, as_file, assert_kp_error, assert_model_keeps, b64, body, create_key, expect_api_error, get_key, make_sdk,
    parse_with, serve_keyward, unwrap, wrap,
)

SURFACE_CONFIG = """\
[lifecycle]
min_rotation_interval_secs = 0
enable_after_disable_secs = 0
restore_window_secs = 30
purge_wait_secs = 2
auto_purge_after_secs = 3600
dual_auth_window_secs = 600
rotation_month_secs = 3
[scheduler]
tick_secs = 1
"""
PURGE_WAIT_SECS = 2
SCHEDULER_DEADLINE_SECS = 12

POLICY_MEDIA = "application/vnd.ibm.kms.policy+json"
DEK = b64(os.urandom(32))


@pytest.fixture(scope="module")
def keyward(tmp_path_factory):
    """Overrides the suite's `keyward`: a server of this module's own, with short windows."""
    with serve_keyward(tmp_path_factory.mktemp("keyward-surface"), SURFACE_CONFIG) as server:
        yield server


@pytest.fixture(scope="module")
def sdk(keyward):
    return make_sdk(keyward)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def send(sdk, keyward, method, path, *, data=None, params=None, headers=None):
    """A request through the SDK's own path, for what its methods cannot express."""
    request = sdk.prepare_request(
        method=method, url=path,
        headers={"Bluemix-Instance": keyward.instance, "Accept": "application/json", **(headers or {})},
        params=params, data=None if data is None else json.dumps(data),
    )
    return sdk.send(request)


def collection(media, resources, total=None):
    return {"metadata": {"collectionType": media, "collectionTotal": len(resources) if total is None else total},
            "resources": resources}


def rotation_policy(enabled=True, interval_month=3):
    return {"type": POLICY_MEDIA, "rotation": {"enabled": enabled, "interval_month": interval_month}}


def dual_auth_policy(enabled=True):
    return {"type": POLICY_MEDIA, "dualAuthDelete": {"enabled": enabled}}


def put_key_policy(sdk, keyward, key_id, *resources, policy=None, total=None, **kwargs):
    r = sdk.put_policy(id=key_id, bluemix_instance=keyward.instance, policy=policy,
                       key_policy_put_body=collection(POLICY_MEDIA, list(resources), total), **kwargs)
    assert r.get_status_code() == 200
    return body(r)


def get_key_policy(sdk, keyward, key_id, policy=None):
    r = sdk.get_policy(id=key_id, bluemix_instance=keyward.instance, policy=policy)
    assert r.get_status_code() == 200
    return body(r)


def parse_key_policies(doc):
    """Parses a policy collection with the SDK's GetMultipleKeyPolicies. Its resource model has no
    `type` field (the single-policy models require it, and Key Protect's own examples send it in
    every policy resource); the SDK ignores it, so it is the one field left out of the check."""
    parsed = models.GetKeyPoliciesOneOfGetMultipleKeyPolicies.from_dict(doc)
    for resource in doc["resources"]:
        assert resource.get("type", POLICY_MEDIA) == POLICY_MEDIA
    without_type = [{k: v for k, v in resource.items() if k != "type"} for resource in doc["resources"]]
    assert_model_keeps(without_type, parsed.to_dict()["resources"], "$.resources")
    return parsed


def create_with_overrides(sdk, keyward, name, *, extractable=False, **fields):
    r = sdk.create_key_with_policies_overrides(
        bluemix_instance=keyward.instance,
        key_with_policy_overrides_create_body=as_file(collection(KEY_MEDIA, [
            {"type": KEY_MEDIA, "name": name, "extractable": extractable, **fields}])),
        prefer="return=representation",
    )
    assert r.get_status_code() == 201
    doc = body(r)
    parse_with(models.Key, doc)
    return doc["resources"][0]


def put_instance_policy(sdk, keyward, policy_type, enabled, attributes=None, *, policy="same"):
    data = {"enabled": enabled}
    if attributes is not None:
        data["attributes"] = attributes
    r = sdk.put_instance_policy(
        bluemix_instance=keyward.instance,
        policy=policy_type if policy == "same" else policy,
        instance_policy_put_body=collection(POLICY_MEDIA, [{"policy_type": policy_type, "policy_data": data}]),
    )
    assert r.get_status_code() == 204
    assert not r.get_result(), "204 has no body"


@contextmanager
def instance_policy(sdk, keyward, policy_type, attributes=None):
    """Enables an instance policy for the duration of the block, then disables it again."""
    put_instance_policy(sdk, keyward, policy_type, True, attributes)
    try:
        yield
    finally:
        put_instance_policy(sdk, keyward, policy_type, False)


def get_instance_policies(sdk, keyward, policy=None):
    r = sdk.get_instance_policy(bluemix_instance=keyward.instance, policy=policy)
    assert r.get_status_code() == 200
    return body(r)


def delete_key(sdk, keyward, key_id, **kwargs):
    r = sdk.delete_key(id=key_id, bluemix_instance=keyward.instance, prefer="return=representation", **kwargs)
    assert r.get_status_code() == 200
    doc = body(r)
    parse_with(models.DeleteKey, doc)
    return doc["resources"][0]


def restore(sdk, keyward, key_id, payload=None):
    if payload is None:
        r = sdk.restore_key(id=key_id, bluemix_instance=keyward.instance)
    else:
        r = send(sdk, keyward, "POST", f"/api/v2/keys/{key_id}/restore",
                 headers={"content-type": "application/vnd.ibm.kms.key_action+json"},
                 data=collection(KEY_MEDIA, [{"payload": payload}]))
    assert r.get_status_code() == 201
    doc = body(r)
    parse_with(models.Key, doc)
    return doc["resources"][0]


def versions(sdk, keyward, key_id):
    doc = body(sdk.get_key_versions(id=key_id, bluemix_instance=keyward.instance))
    parse_with(models.ListKeyVersions, doc)
    return [v["id"] for v in doc["resources"]]


def parse_date(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def rfc3339(moment):
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def code_of(status, call):
    return expect_api_error(status, call)["code"]


def poll(check, deadline_secs=SCHEDULER_DEADLINE_SECS, every=0.5):
    """Calls `check` until it returns something truthy; returns that, or the last value at the deadline."""
    deadline = time.monotonic() + deadline_secs
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


# --------------------------------------------------------------------------------------------
# Key policies
# --------------------------------------------------------------------------------------------


def test_key_rotation_policy_put_and_get_parse_with_the_sdk_models(sdk, keyward):
    key_id = create_key(sdk, keyward, unique("policy-rotation"))["id"]

    put = put_key_policy(sdk, keyward, key_id, rotation_policy(True, 3), policy="rotation")
    parsed = parse_with(models.GetKeyPoliciesOneOfGetKeyPolicyRotation, put)
    assert put["metadata"] == {"collectionType": POLICY_MEDIA, "collectionTotal": 1}
    resource = put["resources"][0]
    for field in ("id", "crn", "creationDate", "createdBy", "lastUpdateDate", "updatedBy"):
        assert resource[field], field
    assert resource["type"] == POLICY_MEDIA
    assert resource["rotation"] == {"enabled": True, "interval_month": 3}
    assert ":policy:" in resource["crn"]
    assert parsed.resources[0].rotation.interval_month == 3
    assert isinstance(parsed.resources[0].creation_date, datetime)

    got = get_key_policy(sdk, keyward, key_id, policy="rotation")
    parse_with(models.GetKeyPoliciesOneOfGetKeyPolicyRotation, got)
    assert got["resources"][0]["rotation"] == {"enabled": True, "interval_month": 3}
    assert got["resources"][0]["id"] == resource["id"]

    everything = get_key_policy(sdk, keyward, key_id)
    parse_key_policies(everything)
    assert [p["rotation"] for p in everything["resources"] if "rotation" in p] == [
        {"enabled": True, "interval_month": 3}]

    # Change it: the same policy, updated.
    changed = put_key_policy(sdk, keyward, key_id, rotation_policy(True, 12), policy="rotation")
    assert changed["resources"][0]["rotation"] == {"enabled": True, "interval_month": 12}
    assert get_key(sdk, keyward, key_id)["rotation"] == {"enabled": True, "interval_month": 12}

    # Disabled: still listed, with both fields (the SDK model requires them).
    disabled = put_key_policy(sdk, keyward, key_id, rotation_policy(False, 12), policy="rotation")
    parse_with(models.GetKeyPoliciesOneOfGetKeyPolicyRotation, disabled)
    assert disabled["resources"][0]["rotation"]["enabled"] is False
    assert "interval_month" in disabled["resources"][0]["rotation"]
    parse_key_policies(get_key_policy(sdk, keyward, key_id))


def test_key_policy_ids_are_v4_uuids(sdk, keyward):
    key_id = create_key(sdk, keyward, unique("policy-ids"))["id"]
    put = put_key_policy(sdk, keyward, key_id, rotation_policy(True, 3), dual_auth_policy(True))
    for resource in put["resources"] + get_key_policy(sdk, keyward, key_id)["resources"]:
        assert str(uuid.UUID(resource["id"])) == resource["id"] and uuid.UUID(resource["id"]).version == 4
        assert resource["crn"].endswith(f":policy:{resource['id']}")


def test_key_dual_auth_delete_policy_put_get_and_cannot_be_disabled(sdk, keyward):
    key_id = create_key(sdk, keyward, unique("policy-dual-auth"))["id"]
    assert get_key(sdk, keyward, key_id)["dualAuthDelete"]["enabled"] is False

    put = put_key_policy(sdk, keyward, key_id, dual_auth_policy(True), policy="dualAuthDelete")
    parse_with(models.GetKeyPoliciesOneOfGetKeyPolicyDualAuthDelete, put)
    assert put["resources"][0]["dualAuthDelete"] == {"enabled": True}
    assert put["resources"][0]["type"] == POLICY_MEDIA

    got = get_key_policy(sdk, keyward, key_id, policy="dualAuthDelete")
    parse_with(models.GetKeyPoliciesOneOfGetKeyPolicyDualAuthDelete, got)
    assert got["resources"][0]["dualAuthDelete"] == {"enabled": True}
    assert get_key(sdk, keyward, key_id)["dualAuthDelete"]["enabled"] is True

    code = code_of(400, lambda: put_key_policy(sdk, keyward, key_id, dual_auth_policy(False), policy="dualAuthDelete"))
    assert code == "INVALID_FIELD_ERR"
    assert get_key(sdk, keyward, key_id)["dualAuthDelete"]["enabled"] is True


def test_several_key_policies_in_one_put(sdk, keyward):
    key_id = create_key(sdk, keyward, unique("policy-multiple"))["id"]
    put = put_key_policy(sdk, keyward, key_id, rotation_policy(True, 2), dual_auth_policy(True))
    parse_key_policies(put)
    rotation = [p["rotation"] for p in put["resources"] if "rotation" in p]
    dual = [p["dualAuthDelete"] for p in put["resources"] if "dualAuthDelete" in p]
    assert rotation == [{"enabled": True, "interval_month": 2}] and dual == [{"enabled": True}]
    assert put["metadata"]["collectionTotal"] == len(put["resources"])

    everything = get_key_policy(sdk, keyward, key_id)
    parse_key_policies(everything)
    assert len(everything["resources"]) == 2
    key = get_key(sdk, keyward, key_id)
    assert key["rotation"] == {"enabled": True, "interval_month": 2} and key["dualAuthDelete"]["enabled"] is True


def test_policies_of_a_key_without_any_are_an_empty_collection(sdk, keyward):
    key_id = create_key(sdk, keyward, unique("policy-none"))["id"]
    for policy in (None, "rotation", "dualAuthDelete"):
        doc = get_key_policy(sdk, keyward, key_id, policy=policy)
        assert doc["metadata"] == {"collectionType": POLICY_MEDIA, "collectionTotal": 0}, policy
        assert doc["resources"] == []
        parse_key_policies(doc)


def test_key_policy_requests_that_are_refused(sdk, keyward):
    root = create_key(sdk, keyward, unique("policy-refused-root"))["id"]
    standard = create_key(sdk, keyward, unique("policy-refused-std"), extractable=True)["id"]

    assert code_of(400, lambda: put_key_policy(
        sdk, keyward, standard, rotation_policy(True, 3), policy="rotation")) == "KEY_ROOT_REQ_ERR"
    for month in (0, 13, -1):
        assert code_of(400, lambda: put_key_policy(
            sdk, keyward, root, rotation_policy(True, month), policy="rotation")) == "INVALID_FIELD_ERR", month
    assert code_of(400, lambda: put_key_policy(
        sdk, keyward, root, dual_auth_policy(True), policy="rotation")) == "BODY_QUERY_PARAM_MISMATCH_ERR"
    assert code_of(400, lambda: put_key_policy(
        sdk, keyward, root, rotation_policy(True, 3), policy="rotation", total=2)) == "COLLECTION_TOTAL_MISMATCH_ERR"
    assert code_of(404, lambda: put_key_policy(
        sdk, keyward, str(uuid.uuid4()), rotation_policy(True, 3), policy="rotation")) == "KEY_NOT_FOUND_ERR"
    assert code_of(404, lambda: get_key_policy(sdk, keyward, str(uuid.uuid4()))) == "KEY_NOT_FOUND_ERR"
    # Nothing was stored by the refused requests.
    assert get_key_policy(sdk, keyward, root)["resources"] == []


# --------------------------------------------------------------------------------------------
# keys_with_policy_overrides
# --------------------------------------------------------------------------------------------


def test_key_with_policy_overrides_shows_its_rotation_and_dual_auth_delete(sdk, keyward):
    key = create_with_overrides(sdk, keyward, unique("overrides"),
                                rotation={"enabled": True, "interval_month": 6}, dualAuthDelete={"enabled": True})
    assert key["state"] == 1 and key["extractable"] is False
    assert key["rotation"] == {"enabled": True, "interval_month": 6}
    assert key["dualAuthDelete"]["enabled"] is True
    got = get_key(sdk, keyward, key["id"])
    assert got["rotation"] == {"enabled": True, "interval_month": 6} and got["dualAuthDelete"]["enabled"] is True
    policies = get_key_policy(sdk, keyward, key["id"])
    parse_key_policies(policies)
    assert {"enabled": True, "interval_month": 6} in [p.get("rotation") for p in policies["resources"]]


def test_policy_fields_on_a_plain_key_create_are_400(sdk, keyward):
    for field in ({"rotation": {"enabled": True, "interval_month": 3}}, {"dualAuthDelete": {"enabled": True}}):
        expect_api_error(400, lambda: create_key(sdk, keyward, unique("plain-with-policy"), **field))


def test_key_with_policy_overrides_refuses_a_bad_interval(sdk, keyward):
    expect_api_error(400, lambda: create_with_overrides(
        sdk, keyward, unique("overrides-bad"), rotation={"enabled": True, "interval_month": 13}))


# --------------------------------------------------------------------------------------------
# Instance policies
# --------------------------------------------------------------------------------------------

INSTANCE_POLICIES = [
    ("dualAuthDelete", None, models.GetInstancePoliciesOneOfGetInstancePolicyDualAuthDelete),
    ("rotation", {"interval_month": 4}, models.GetInstancePoliciesOneOfGetInstancePolicyRotation),
    ("allowedNetwork", {"allowed_network": "public-and-private"},
     models.GetInstancePoliciesOneOfGetInstancePolicyAllowedNetwork),
    ("keyCreateImportAccess", {"create_root_key": True, "create_standard_key": True, "import_root_key": True,
                               "import_standard_key": True, "enforce_token": False},
     models.GetInstancePoliciesOneOfGetInstancePolicyKeyCreateImportAccess),
    ("metrics", None, models.GetInstancePoliciesOneOfGetInstancePolicyMetrics),
]


@pytest.mark.parametrize("policy_type,attributes,model", INSTANCE_POLICIES, ids=[p[0] for p in INSTANCE_POLICIES])
def test_instance_policy_put_is_204_and_get_parses(sdk, keyward, policy_type, attributes, model):
    with instance_policy(sdk, keyward, policy_type, attributes):
        doc = get_instance_policies(sdk, keyward, policy_type)
        parse_with(model, doc)
        assert doc["metadata"] == {"collectionType": POLICY_MEDIA, "collectionTotal": 1}
        resource = doc["resources"][0]
        assert resource["policy_type"] == policy_type
        for field in ("creationDate", "createdBy", "lastUpdated", "updatedBy"):
            assert resource[field], field
        assert resource["policy_data"]["enabled"] is True
        if attributes is not None:
            assert resource["policy_data"]["attributes"] == attributes

        everything = get_instance_policies(sdk, keyward)
        parse_with(models.GetInstancePoliciesOneOfGetMultipleInstancePolicies, everything)
        mine = [p for p in everything["resources"] if p["policy_type"] == policy_type]
        assert len(mine) == 1 and mine[0]["policy_data"]["enabled"] is True
    after = get_instance_policies(sdk, keyward, policy_type)
    parse_with(model, after)
    assert all(p["policy_data"]["enabled"] is False for p in after["resources"])


def test_instance_policy_requests_that_are_refused(sdk, keyward):
    def put(policy, resources, total=None):
        return sdk.put_instance_policy(bluemix_instance=keyward.instance, policy=policy,
                                       instance_policy_put_body=collection(POLICY_MEDIA, resources, total))

    dual = {"policy_type": "dualAuthDelete", "policy_data": {"enabled": True}}
    assert code_of(400, lambda: put("rotation", [dual])) == "BODY_QUERY_PARAM_MISMATCH_ERR"
    assert code_of(400, lambda: put("dualAuthDelete", [dual], total=2)) == "COLLECTION_TOTAL_MISMATCH_ERR"
    assert code_of(400, lambda: put(None, [dual, dual])) == "NUM_COLLECTION_RESOURCE_ERR"
    expect_api_error(400, lambda: put("rotation", [
        {"policy_type": "rotation", "policy_data": {"enabled": True, "attributes": {"interval_month": 13}}}]))
    expect_api_error(400, lambda: put("rotation", [{"policy_type": "rotation", "policy_data": {"enabled": True}}]))
    expect_api_error(400, lambda: put("allowedIP", [
        {"policy_type": "allowedIP", "policy_data": {"enabled": True, "attributes": {"allowed_ip": []}}}]))
    expect_api_error(400, lambda: put(None, [{"policy_type": "noSuchPolicy", "policy_data": {"enabled": True}}]))
    expect_api_error(400, lambda: put("allowedIP", [
        {"policy_type": "allowedIP", "policy_data": {"enabled": True, "attributes": {"allowed_ip": ["not-a-cidr"]}}}]))
    # Nothing was stored.
    assert all(p["policy_data"]["enabled"] is False for p in get_instance_policies(sdk, keyward)["resources"]
               if p["policy_type"] in ("dualAuthDelete", "rotation", "allowedIP"))


def test_instance_rotation_policy_applies_to_new_root_keys_only(sdk, keyward):
    before = create_key(sdk, keyward, unique("inst-rot-before"))["id"]
    with instance_policy(sdk, keyward, "rotation", {"interval_month": 5}):
        root = create_key(sdk, keyward, unique("inst-rot-root"))
        assert root["rotation"] == {"enabled": True, "interval_month": 5}
        policies = get_key_policy(sdk, keyward, root["id"], policy="rotation")
        parse_with(models.GetKeyPoliciesOneOfGetKeyPolicyRotation, policies)
        assert policies["resources"][0]["rotation"] == {"enabled": True, "interval_month": 5}
        standard = create_key(sdk, keyward, unique("inst-rot-std"), extractable=True)
        assert standard.get("rotation", {}).get("enabled") is not True
        overridden = create_with_overrides(sdk, keyward, unique("inst-rot-override"),
                                           rotation={"enabled": True, "interval_month": 9})
        assert overridden["rotation"] == {"enabled": True, "interval_month": 9}
    assert get_key(sdk, keyward, before).get("rotation", {}).get("enabled") is not True
    after = create_key(sdk, keyward, unique("inst-rot-after"))
    assert after.get("rotation", {}).get("enabled") is not True


def test_instance_dual_auth_delete_policy_applies_to_new_keys(sdk, keyward):
    with instance_policy(sdk, keyward, "dualAuthDelete"):
        key = create_key(sdk, keyward, unique("inst-dual"))
        assert key["dualAuthDelete"]["enabled"] is True
        assert get_key(sdk, keyward, key["id"])["dualAuthDelete"]["enabled"] is True
        assert code_of(409, lambda: sdk.delete_key(
            id=key["id"], bluemix_instance=keyward.instance)) == "AUTHORIZATIONS_NOT_MET"
        overridden = create_with_overrides(sdk, keyward, unique("inst-dual-override"), dualAuthDelete={"enabled": False})
        assert overridden["dualAuthDelete"]["enabled"] is False
    assert create_key(sdk, keyward, unique("inst-dual-after"))["dualAuthDelete"]["enabled"] is False


def test_key_create_import_access_policy_refuses_forbidden_kinds_with_409(sdk, keyward):
    attributes = {"create_root_key": True, "create_standard_key": False, "import_root_key": True,
                  "import_standard_key": False, "enforce_token": False}
    with instance_policy(sdk, keyward, "keyCreateImportAccess", attributes):
        assert code_of(409, lambda: create_key(
            sdk, keyward, unique("kcia-std"), extractable=True)) == "KEY_CREATE_IMPORT_ACCESS_ERR"
        assert code_of(409, lambda: create_key(
            sdk, keyward, unique("kcia-imp-std"), extractable=True, payload=b64(os.urandom(32)))) == \
            "KEY_CREATE_IMPORT_ACCESS_ERR"
        assert code_of(409, lambda: create_with_overrides(
            sdk, keyward, unique("kcia-override-std"), extractable=True)) == "KEY_CREATE_IMPORT_ACCESS_ERR"
        assert create_key(sdk, keyward, unique("kcia-root"))["state"] == 1
        assert create_key(sdk, keyward, unique("kcia-imp-root"), payload=b64(os.urandom(32)))["imported"] is True
    assert create_key(sdk, keyward, unique("kcia-std-after"), extractable=True)["state"] == 1


def test_key_create_import_access_enforce_token_refuses_a_root_import_without_a_token(sdk, keyward):
    with instance_policy(sdk, keyward, "keyCreateImportAccess", {"enforce_token": True}):
        assert code_of(409, lambda: create_key(
            sdk, keyward, unique("kcia-token"), payload=b64(os.urandom(32)))) == "KEY_CREATE_IMPORT_ACCESS_ERR"
        assert create_key(sdk, keyward, unique("kcia-token-generated"))["imported"] is False
    assert create_key(sdk, keyward, unique("kcia-token-after"), payload=b64(os.urandom(32)))["imported"] is True


def request_from(keyward, source_ip, token, path):
    """A GET sent from `source_ip` (a loopback address other than 127.0.0.1 works on Linux)."""
    url = urlparse(keyward.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10, source_address=(source_ip, 0))
    try:
        conn.request("GET", path, headers={"authorization": f"Bearer {token}", "bluemix-instance": keyward.instance,
                                           "accept": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_allowed_ip_policy_refuses_other_addresses_with_401_and_reports_the_port(sdk, keyward):
    def port_doc():
        r = sdk.get_allowed_ip_port(bluemix_instance=keyward.instance)
        assert r.get_status_code() == 200
        doc = body(r)
        parse_with(models.AllowedIPPort, doc)
        return doc

    idle = port_doc()
    assert idle["resources"] == [] and idle["metadata"]["collectionTotal"] == 0

    token = sdk.authenticator.token_manager.get_token()
    status, _ = request_from(keyward, "127.0.0.2", token, "/api/v2/keys")
    assert status == 200, "no policy: any source address"

    attributes = {"allowed_ip": ["127.0.0.1/32"]}
    with instance_policy(sdk, keyward, "allowedIP", attributes):
        doc = get_instance_policies(sdk, keyward, "allowedIP")
        parse_with(models.GetInstancePoliciesOneOfGetInstancePolicyAllowedIP, doc)
        assert doc["resources"][0]["policy_data"] == {"enabled": True, "attributes": attributes}

        status, raw = request_from(keyward, "127.0.0.2", token, "/api/v2/keys")
        assert status == 401, raw
        refused = json.loads(raw)
        assert refused["metadata"]["collectionType"] == ERROR_MEDIA
        assert refused["resources"][0]["errorMsg"]
        assert "reasons" not in refused["resources"][0], "Key Protect's allowedIP refusal has no reasons"

        status, _ = request_from(keyward, "127.0.0.1", token, "/api/v2/keys")
        assert status == 200
        assert body(sdk.get_keys(bluemix_instance=keyward.instance))["metadata"]["collectionTotal"] >= 0

        ports = port_doc()
        assert ports["metadata"]["collectionTotal"] == 1
        assert ports["resources"][0]["private_endpoint_port"] == int(keyward.url.rsplit(":", 1)[1])
    status, _ = request_from(keyward, "127.0.0.2", token, "/api/v2/keys")
    assert status == 200, "the disabled policy lets every address in again"
    assert port_doc()["resources"] == []


# --------------------------------------------------------------------------------------------
# Deletion: delete, restore, purge
# --------------------------------------------------------------------------------------------


def test_delete_shows_the_deletion_fields_and_restore_brings_the_key_back(sdk, keyward):
    key = create_key(sdk, keyward, unique("restorable"))
    key_id = key["id"]
    wrapped = wrap(sdk, keyward, key_id, DEK)

    assert code_of(409, lambda: sdk.restore_key(id=key_id, bluemix_instance=keyward.instance)) == \
        "KEY_ACTION_INVALID_STATE_ERR"

    gone = delete_key(sdk, keyward, key_id)
    assert gone["state"] == 5 and gone["deleted"] is True and gone["deletedBy"]
    deleted_at = parse_date(gone["deletionDate"])
    assert gone["restoreAllowed"] is True and gone["purgeAllowed"] is False
    assert parse_date(gone["purgeAllowedFrom"]) - deleted_at == timedelta(seconds=PURGE_WAIT_SECS)
    assert parse_date(gone["restoreExpirationDate"]) - deleted_at == timedelta(seconds=30)
    assert parse_date(gone["purgeScheduledOn"]) - deleted_at == timedelta(seconds=3600)

    back = restore(sdk, keyward, key_id)
    assert back["id"] == key_id and back["state"] == 1 and back["deleted"] is False
    for field in ("deletionDate", "restoreAllowed", "purgeAllowedFrom", "purgeScheduledOn"):
        assert field not in back, field
    assert get_key(sdk, keyward, key_id)["state"] == 1
    assert unwrap(sdk, keyward, key_id, wrapped["ciphertext"])["plaintext"] == DEK
    assert code_of(409, lambda: sdk.restore_key(id=key_id, bluemix_instance=keyward.instance)) == \
        "KEY_ACTION_INVALID_STATE_ERR"


def test_restore_of_an_imported_key_needs_the_same_material(sdk, keyward):
    material = b64(os.urandom(32))
    key_id = create_key(sdk, keyward, unique("imported-restore"), payload=material)["id"]
    wrapped = wrap(sdk, keyward, key_id, DEK)
    delete_key(sdk, keyward, key_id)

    assert code_of(400, lambda: sdk.restore_key(id=key_id, bluemix_instance=keyward.instance)) == \
        "KEY_PAYLOAD_REQ_ERR"
    assert code_of(400, lambda: restore(sdk, keyward, key_id, b64(os.urandom(32)))) == "INVALID_FIELD_ERR"
    back = restore(sdk, keyward, key_id, material)
    assert back["state"] == 1 and back["imported"] is True
    assert unwrap(sdk, keyward, key_id, wrapped["ciphertext"])["plaintext"] == DEK


def test_purge_waits_then_erases_the_key(sdk, keyward):
    key_id = create_key(sdk, keyward, unique("purged"))["id"]
    wrapped = wrap(sdk, keyward, key_id, DEK)
    purge = lambda: sdk.purge_key(id=key_id, bluemix_instance=keyward.instance)  # noqa: E731

    assert code_of(409, purge) == "KEY_ACTION_INVALID_STATE_ERR"
    gone = delete_key(sdk, keyward, key_id)
    assert code_of(409, purge) == "REQ_TOO_EARLY_ERR"

    time.sleep(max(0.0, (parse_date(gone["purgeAllowedFrom"]) - datetime.now(timezone.utc)).total_seconds()) + 0.3)
    r = purge()
    assert r.get_status_code() == 200
    doc = body(r)
    purged = parse_with(models.PurgeKey, doc).resources[0]
    assert purged.id == key_id and purged.state == 5 and purged.deleted is True
    assert doc["resources"][0]["purgeAllowed"] is True

    assert code_of(404, lambda: sdk.get_key(id=key_id, bluemix_instance=keyward.instance)) == "KEY_NOT_FOUND_ERR"
    expect_api_error(404, lambda: unwrap(sdk, keyward, key_id, wrapped["ciphertext"]))
    expect_api_error(404, lambda: sdk.restore_key(id=key_id, bluemix_instance=keyward.instance))
    expect_api_error(404, purge)


def test_delete_without_prefer_is_204_and_twice_is_410(sdk, keyward):
    key_id = create_key(sdk, keyward, unique("deleted-twice"))["id"]
    r = sdk.delete_key(id=key_id, bluemix_instance=keyward.instance)
    assert r.get_status_code() == 204 and r.get_result() is None
    assert code_of(410, lambda: sdk.delete_key(id=key_id, bluemix_instance=keyward.instance)) == "KEY_DELETED_ERR"


def deleted_key(sdk, keyward):
    key_id = create_key(sdk, keyward, unique("deleted"))["id"]
    assert sdk.delete_key(id=key_id, bluemix_instance=keyward.instance).get_status_code() == 204
    return key_id


def test_a_deleted_key_is_still_shown_and_refuses_changes_with_410(sdk, keyward):
    inst = keyward.instance
    key_id = deleted_key(sdk, keyward)
    got = parse_with(models.GetKey, body(sdk.get_key(id=key_id, bluemix_instance=inst))).resources[0]
    assert got.state == 5 and got.deleted is True and got.restore_allowed is True
    calls = {
        "alias": lambda: sdk.create_key_alias(id=key_id, alias=unique("late"), bluemix_instance=inst),
        "policy": lambda: put_key_policy(sdk, keyward, key_id, rotation_policy(), policy="rotation"),
        "setKeyForDeletion": lambda: sdk.set_key_for_deletion(id=key_id, bluemix_instance=inst),
    }
    for name, call in calls.items():
        assert code_of(410, call) == "KEY_DELETED_ERR", name


def test_the_410_message_names_the_refused_action(sdk, keyward):
    inst = keyward.instance
    key_id = deleted_key(sdk, keyward)
    alias = expect_api_error(410, lambda: sdk.create_key_alias(id=key_id, alias=unique("late"), bluemix_instance=inst))
    policy = expect_api_error(410, lambda: put_key_policy(sdk, keyward, key_id, rotation_policy(), policy="rotation"))
    assert "rotate" not in alias["message"] and "be changed" in alias["message"], alias["message"]
    assert "cannot delete" not in policy["message"] and "be changed" in policy["message"], policy["message"]


# --------------------------------------------------------------------------------------------
# Dual authorization
# --------------------------------------------------------------------------------------------


def test_set_and_unset_key_for_deletion_on_a_dual_auth_key(sdk, keyward):
    key_id = create_with_overrides(sdk, keyward, unique("dual-auth"), dualAuthDelete={"enabled": True})["id"]
    inst = keyward.instance

    assert code_of(409, lambda: sdk.delete_key(id=key_id, bluemix_instance=inst)) == "AUTHORIZATIONS_NOT_MET"

    r = sdk.set_key_for_deletion(id=key_id, bluemix_instance=inst)
    assert r.get_status_code() == 204
    dual = get_key(sdk, keyward, key_id)["dualAuthDelete"]
    assert dual["enabled"] is True and dual["keySetForDeletion"] is True
    assert parse_date(dual["authExpiration"]) > datetime.now(timezone.utc)
    parse_with(models.GetKey, body(sdk.get_key(id=key_id, bluemix_instance=inst)))

    # The identity that set the key for deletion is not the second authorization it needs.
    assert code_of(409, lambda: sdk.delete_key(id=key_id, bluemix_instance=inst)) == "AUTHORIZATIONS_NOT_MET"
    assert get_key(sdk, keyward, key_id)["state"] == 1

    assert sdk.unset_key_for_deletion(id=key_id, bluemix_instance=inst).get_status_code() == 204
    dual = get_key(sdk, keyward, key_id)["dualAuthDelete"]
    assert dual["enabled"] is True and not dual.get("keySetForDeletion") and "authExpiration" not in dual
    assert code_of(409, lambda: sdk.delete_key(id=key_id, bluemix_instance=inst)) == "AUTHORIZATIONS_NOT_MET"


def test_set_key_for_deletion_on_a_key_without_dual_auth_is_409(sdk, keyward):
    key_id = create_key(sdk, keyward, unique("not-dual-auth"))["id"]
    inst = keyward.instance
    assert code_of(409, lambda: sdk.set_key_for_deletion(id=key_id, bluemix_instance=inst)) == "NOT_DUAL_AUTH_ERR"
    assert code_of(409, lambda: sdk.unset_key_for_deletion(id=key_id, bluemix_instance=inst)) == "NOT_DUAL_AUTH_ERR"
    assert code_of(404, lambda: sdk.set_key_for_deletion(
        id=str(uuid.uuid4()), bluemix_instance=inst)) == "KEY_NOT_FOUND_ERR"


# --------------------------------------------------------------------------------------------
# Key rings
# --------------------------------------------------------------------------------------------


def create_ring(sdk, keyward, ring_id):
    r = sdk.create_key_ring(key_ring_id=ring_id, bluemix_instance=keyward.instance)
    assert r.get_status_code() == 201
    assert not r.get_result() or not r.get_result().content, "201 with an empty body"


def list_rings(sdk, keyward, **params):
    r = sdk.list_key_rings(bluemix_instance=keyward.instance, **params)
    assert r.get_status_code() == 200
    doc = body(r)
    parse_with(models.ListKeyRingsWithTotalCount, doc)
    return doc


def test_key_rings_create_list_and_delete(sdk, keyward):
    inst = keyward.instance
    ring = unique("ring")
    create_ring(sdk, keyward, ring)

    doc = list_rings(sdk, keyward, total_count=True)
    ids = [r["id"] for r in doc["resources"]]
    assert ids[0] == "default" and ring in ids
    assert doc["metadata"]["collectionTotal"] == len(ids) and doc["metadata"]["totalCount"] >= len(ids)
    mine = next(r for r in doc["resources"] if r["id"] == ring)
    assert mine["createdBy"] and isinstance(parse_date(mine["creationDate"]), datetime)
    assert len(list_rings(sdk, keyward, limit=1)["resources"]) == 1

    assert code_of(409, lambda: sdk.create_key_ring(key_ring_id=ring, bluemix_instance=inst)) == \
        "KEY_RING_ALREADY_EXISTS_ERR"
    for bad in ("a", "has_underscore", "x" * 101):
        expect_api_error(400, lambda: sdk.create_key_ring(key_ring_id=bad, bluemix_instance=inst))

    assert sdk.delete_key_ring(key_ring_id=ring, bluemix_instance=inst).get_status_code() == 204
    assert ring not in [r["id"] for r in list_rings(sdk, keyward)["resources"]]
    assert code_of(404, lambda: sdk.delete_key_ring(key_ring_id=ring, bluemix_instance=inst)) == \
        "KEY_RING_NOT_FOUND_ERR"
    expect_api_error(400, lambda: sdk.delete_key_ring(key_ring_id="default", bluemix_instance=inst))


def test_creating_the_default_ring_is_refused(sdk, keyward):
    with pytest.raises(ApiException) as raised:
        sdk.create_key_ring(key_ring_id="default", bluemix_instance=keyward.instance)
    assert raised.value.status_code in (400, 409)


def test_keys_in_a_ring_and_deleting_a_ring_that_holds_keys(sdk, keyward):
    inst = keyward.instance
    ring, other = unique("ring-keys"), unique("ring-other")
    create_ring(sdk, keyward, ring)
    create_ring(sdk, keyward, other)
    name = unique("ringed")
    r = sdk.create_key(bluemix_instance=inst, x_kms_key_ring=ring, prefer="return=representation",
                       key_create_body=as_file(collection(KEY_MEDIA, [
                           {"type": KEY_MEDIA, "name": name, "extractable": False}])))
    assert r.get_status_code() == 201
    key = body(r)["resources"][0]
    assert key["keyRingID"] == ring
    key_id = key["id"]

    listed = body(sdk.get_keys(bluemix_instance=inst, x_kms_key_ring=ring))
    parse_with(models.ListKeys, listed)
    assert [k["id"] for k in listed["resources"]] == [key_id]
    assert key_id not in [k["id"] for k in body(sdk.get_keys(bluemix_instance=inst, x_kms_key_ring=other))["resources"]]

    # Operations naming the key's ring work; naming another ring, they do not find it.
    assert body(sdk.get_key(id=key_id, bluemix_instance=inst, x_kms_key_ring=ring))["resources"][0]["id"] == key_id
    expect_api_error(404, lambda: sdk.get_key(id=key_id, bluemix_instance=inst, x_kms_key_ring=other))
    expect_api_error(404, lambda: sdk.wrap_key(id=key_id, bluemix_instance=inst, x_kms_key_ring=other,
                                               key_action_wrap_body=as_file({"plaintext": DEK})))

    assert code_of(409, lambda: sdk.delete_key_ring(key_ring_id=ring, bluemix_instance=inst)) == \
        "KEY_RING_KEYS_NOT_DELETED_ERR"
    delete_key(sdk, keyward, key_id)
    assert code_of(409, lambda: sdk.delete_key_ring(key_ring_id=ring, bluemix_instance=inst)) == \
        "KEY_RING_NOT_EMPTY_ERR"
    assert sdk.delete_key_ring(key_ring_id=ring, bluemix_instance=inst, force=True).get_status_code() == 204
    assert get_key(sdk, keyward, key_id)["keyRingID"] == "default"
    assert sdk.delete_key_ring(key_ring_id=other, bluemix_instance=inst).get_status_code() == 204


def test_create_in_an_unknown_ring_is_404(sdk, keyward):
    def create():
        return sdk.create_key(bluemix_instance=keyward.instance, x_kms_key_ring=unique("no-such-ring"),
                              key_create_body=as_file(collection(KEY_MEDIA, [
                                  {"type": KEY_MEDIA, "name": unique("orphan"), "extractable": False}])))
    assert code_of(404, create) == "KEY_RING_NOT_FOUND_ERR"
    # Listing with an unknown ring: Key Protect's answer is not documented (404 or an empty list).
    try:
        listed = body(sdk.get_keys(bluemix_instance=keyward.instance, x_kms_key_ring=unique("nope")))
        assert listed["resources"] == [] and listed["metadata"]["collectionTotal"] == 0
    except ApiException as refused:
        assert assert_kp_error(refused.http_response, 404)["code"] == "KEY_RING_NOT_FOUND_ERR"


def test_patch_moves_a_key_to_another_ring(sdk, keyward):
    inst = keyward.instance
    target = unique("ring-target")
    create_ring(sdk, keyward, target)
    key_id = create_key(sdk, keyward, unique("moved"))["id"]
    assert get_key(sdk, keyward, key_id)["keyRingID"] == "default"

    r = sdk.patch_key(id=key_id, bluemix_instance=inst, key_patch_body=as_file({"keyRingID": target}))
    assert r.get_status_code() == 200
    doc = body(r)
    patched = parse_with(models.PatchKeyResponseBody, doc).resources[0]
    assert patched.id == key_id and patched.key_ring_id == target
    assert get_key(sdk, keyward, key_id)["keyRingID"] == target
    assert key_id in [k["id"] for k in body(sdk.get_keys(bluemix_instance=inst, x_kms_key_ring=target))["resources"]]

    assert code_of(404, lambda: sdk.patch_key(id=key_id, bluemix_instance=inst, key_patch_body=as_file(
        {"keyRingID": unique("no-such-ring")}))) == "KEY_RING_NOT_FOUND_ERR"
    assert code_of(400, lambda: sdk.patch_key(id=key_id, bluemix_instance=inst, key_patch_body=as_file(
        {"keyRingID": "default", "name": "renamed"}))) == "BAD_BODY_ERR"
    # X-Kms-Key-Ring must name the key's current ring.
    expect_api_error(404, lambda: sdk.patch_key(id=key_id, bluemix_instance=inst, x_kms_key_ring="default",
                                                key_patch_body=as_file({"keyRingID": "default"})))
    # The Go client sends `KeyRingID`.
    r = sdk.patch_key(id=key_id, bluemix_instance=inst, x_kms_key_ring=target,
                      key_patch_body=as_file({"KeyRingID": "default"}))
    assert body(r)["resources"][0]["keyRingID"] == "default"
    r = sdk.patch_key(id=key_id, bluemix_instance=inst, key_patch_body=as_file({"keyRingID": target}))
    assert get_key(sdk, keyward, key_id)["keyRingID"] == target


# --------------------------------------------------------------------------------------------
# Aliases
# --------------------------------------------------------------------------------------------


def create_alias(sdk, keyward, key_id, alias):
    r = sdk.create_key_alias(id=key_id, alias=alias, bluemix_instance=keyward.instance)
    assert r.get_status_code() == 201
    doc = body(r)
    parse_with(models.KeyAlias, doc)
    return doc


def test_an_alias_works_wherever_a_key_id_does(sdk, keyward):
    inst = keyward.instance
    key = create_key(sdk, keyward, unique("aliased"))
    key_id = key["id"]
    alias = unique("alias")

    doc = create_alias(sdk, keyward, key_id, alias)
    assert doc["metadata"]["collectionTotal"] == 1
    resource = doc["resources"][0]
    assert resource["keyId"] == key_id and resource["alias"] == alias
    assert resource["createdBy"] and isinstance(parse_date(resource["creationDate"]), datetime)

    assert get_key(sdk, keyward, alias)["id"] == key_id
    assert get_key(sdk, keyward, key_id)["aliases"] == [alias]
    wrapped = wrap(sdk, keyward, alias, DEK)
    assert unwrap(sdk, keyward, alias, wrapped["ciphertext"])["plaintext"] == DEK
    assert unwrap(sdk, keyward, key_id, wrapped["ciphertext"])["plaintext"] == DEK
    assert put_key_policy(sdk, keyward, alias, rotation_policy(True, 7), policy="rotation")["resources"][0][
        "rotation"]["interval_month"] == 7
    assert get_key_policy(sdk, keyward, alias, policy="rotation")["resources"][0]["rotation"]["interval_month"] == 7
    assert body(sdk.get_key_metadata(id=alias, bluemix_instance=inst))["resources"][0]["id"] == key_id

    # The key's CRN also names it.
    crn = key["crn"]
    assert crn.endswith(f":key:{key_id}")
    assert get_key(sdk, keyward, crn)["id"] == key_id
    assert unwrap(sdk, keyward, crn, wrap(sdk, keyward, crn, DEK)["ciphertext"])["plaintext"] == DEK

    assert code_of(404, lambda: sdk.create_key_alias(
        id=str(uuid.uuid4()), alias=unique("alias"), bluemix_instance=inst)) == "KEY_NOT_FOUND_ERR"

    r = sdk.delete_key_alias(id=key_id, alias=alias, bluemix_instance=inst)
    assert r.get_status_code() == 204
    assert not get_key(sdk, keyward, key_id).get("aliases")
    assert code_of(404, lambda: sdk.get_key(id=alias, bluemix_instance=inst)) == "KEY_NOT_FOUND_ERR"
    expect_api_error(404, lambda: sdk.delete_key_alias(id=key_id, alias=alias, bluemix_instance=inst))


def test_alias_quota_and_uniqueness(sdk, keyward):
    inst = keyward.instance
    key_id = create_key(sdk, keyward, unique("alias-quota"))["id"]
    other = create_key(sdk, keyward, unique("alias-other"))["id"]
    aliases = [unique(f"q{i}") for i in range(5)]
    for alias in aliases:
        create_alias(sdk, keyward, key_id, alias)
    assert sorted(get_key(sdk, keyward, key_id)["aliases"]) == sorted(aliases)

    assert code_of(400, lambda: sdk.create_key_alias(id=key_id, alias=unique("sixth"), bluemix_instance=inst)) == \
        "KEY_ALIAS_QUOTA_ERR"
    assert code_of(409, lambda: sdk.create_key_alias(id=other, alias=aliases[0], bluemix_instance=inst)) == \
        "KEY_ALIAS_NOT_UNIQUE_ERR"
    # Not on this key: 404, and the alias stays with its key.
    expect_api_error(404, lambda: sdk.delete_key_alias(id=other, alias=aliases[0], bluemix_instance=inst))
    assert get_key(sdk, keyward, aliases[0])["id"] == key_id

    # A freed alias can be taken by another key.
    assert sdk.delete_key_alias(id=key_id, alias=aliases[0], bluemix_instance=inst).get_status_code() == 204
    create_alias(sdk, keyward, other, aliases[0])
    assert get_key(sdk, keyward, aliases[0])["id"] == other


def test_aliases_given_at_creation(sdk, keyward):
    aliases = [unique("born"), unique("born")]
    key = create_key(sdk, keyward, unique("born-aliased"), aliases=aliases)
    assert sorted(key["aliases"]) == sorted(aliases)
    assert get_key(sdk, keyward, aliases[1])["id"] == key["id"]
    assert code_of(409, lambda: create_key(sdk, keyward, unique("alias-taken"), aliases=[aliases[0]])) == \
        "KEY_ALIAS_NOT_UNIQUE_ERR"
    expect_api_error(400, lambda: create_key(sdk, keyward, unique("alias-many"),
                                             aliases=[unique("m") for _ in range(6)]))


@pytest.mark.parametrize("alias", ["a", "has space", "str(uuid)", "versions", "x" * 91, "dot.ted"])
def test_a_malformed_or_reserved_alias_is_400(sdk, keyward, alias):
    if alias == "str(uuid)":
        alias = str(uuid.uuid4())
    key_id = create_key(sdk, keyward, unique("alias-bad"))["id"]
    expect_api_error(400, lambda: sdk.create_key_alias(id=key_id, alias=alias, bluemix_instance=keyward.instance))
    assert not get_key(sdk, keyward, key_id).get("aliases")


# --------------------------------------------------------------------------------------------
# The scheduler
# --------------------------------------------------------------------------------------------


def test_scheduler_rotates_a_key_whose_rotation_policy_is_due(sdk, keyward):
    key = create_with_overrides(sdk, keyward, unique("auto-rotated"), rotation={"enabled": True, "interval_month": 1})
    key_id, first = key["id"], key["keyVersion"]["id"]
    wrapped = wrap(sdk, keyward, key_id, DEK)
    assert versions(sdk, keyward, key_id) == [first]

    rotated = poll(lambda: len(versions(sdk, keyward, key_id)) >= 2)
    assert rotated, f"no new version within {SCHEDULER_DEADLINE_SECS} s"
    now = get_key(sdk, keyward, key_id)
    assert now["keyVersion"]["id"] != first and now["lastRotateDate"]
    assert versions(sdk, keyward, key_id)[-1] == first
    old = unwrap(sdk, keyward, key_id, wrapped["ciphertext"])
    assert old["plaintext"] == DEK and old["keyVersion"]["id"] == first


def test_scheduler_deactivates_an_expired_key(sdk, keyward):
    expires = datetime.now(timezone.utc) + timedelta(seconds=4)
    key = create_key(sdk, keyward, unique("expiring"), expirationDate=rfc3339(expires))
    assert key["state"] == 1 and parse_date(key["expirationDate"]) == expires.replace(microsecond=0)

    state = poll(lambda: get_key(sdk, keyward, key["id"])["state"] == 3)
    assert state, f"still {get_key(sdk, keyward, key['id'])['state']} {SCHEDULER_DEADLINE_SECS} s later"
    parse_with(models.GetKey, body(sdk.get_key(id=key["id"], bluemix_instance=keyward.instance)))
    with pytest.raises(ApiException) as raised:
        wrap(sdk, keyward, key["id"], DEK)
    assert 400 <= raised.value.status_code < 500
