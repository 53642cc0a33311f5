"""Interop: registrations through the public `keyprotect` SDK (3.0.1).

The SDK lists registrations (`get_registrations`, `get_registrations_all_keys`, with its
filters), syncs (`sync_associated_resources`) and deletes with `force`; it has no call to create
a registration or acknowledge an event (services do that), so those go through `requests` with
the SDK's own token. The bootstrap administrator is a service ID, so it may register.
"""

import uuid
from urllib.parse import quote

import requests
from keyprotect import ibm_key_protect_api_v2 as models

from conftest import body, create_key, expect_api_error, parse_with

REG_INPUT = "application/vnd.ibm.kms.registration_input+json"
ACK_MEDIA = "application/vnd.ibm.kms.event_acknowledge+json"
# Keyward's extensions, and registrationMetadata: shown only to the registering service, and not
# in the SDK's customer-facing model.
NOT_IN_SDK_MODEL = ("pendingEvents", "adopterKeyState", "registrationMetadata")


def crn(name):
    return f"crn:v1:bluemix:public:messagehub:us-south:a/acct:{name}::"


def service_call(sdk, keyward, method, path, json_body=None):
    token = sdk.authenticator.token_manager.get_token()
    return requests.request(
        method, f"{keyward.url}{path}", json=json_body, timeout=10,
        headers={"authorization": f"Bearer {token}", "bluemix-instance": keyward.instance},
    )


def register(sdk, keyward, key_id, resource_crn, **fields):
    r = service_call(sdk, keyward, "POST",
                     f"/api/v2/keys/{key_id}/registrations/{quote(resource_crn, safe='')}",
                     {"metadata": {"collectionType": REG_INPUT, "collectionTotal": 1},
                      "resources": [fields]})
    assert r.status_code == 201, r.text
    return r.json()["resources"][0]


def without_extensions(doc):
    """A registration collection without the fields the SDK's model does not carry."""
    return {**doc, "resources": [{k: v for k, v in r.items() if k not in NOT_IN_SDK_MODEL}
                                 for r in doc["resources"]]}


def test_the_sdk_lists_registrations_with_its_filters_and_models(sdk, keyward):
    key = create_key(sdk, keyward, f"reg-{uuid.uuid4().hex[:8]}")["id"]
    name = uuid.uuid4().hex[:8]
    register(sdk, keyward, key, crn(f"{name}-a"), description="topic store",
             registrationMetadata="internal", preventKeyDeletion=False)
    register(sdk, keyward, key, crn(f"{name}-b"), preventKeyDeletion=True)

    doc = body(sdk.get_registrations(id=key, bluemix_instance=keyward.instance, total_count=True))
    assert doc["metadata"]["totalCount"] == 2
    assert all(r["pendingEvents"] == [] for r in doc["resources"])
    parsed = parse_with(models.RegistrationWithTotalCount, without_extensions(doc))
    assert {r.resource_crn for r in parsed.resources} == {crn(f"{name}-a"), crn(f"{name}-b")}

    worm = body(sdk.get_registrations_all_keys(
        bluemix_instance=keyward.instance, prevent_key_deletion=True,
        url_encoded_resource_crn_query=f"crn:v1:bluemix:public:messagehub:us-south:a/acct:{name}-*"))
    assert [r["resourceCrn"] for r in worm["resources"]] == [crn(f"{name}-b")]
    parse_with(models.RegistrationWithTotalCount, without_extensions(worm))


def test_a_registered_key_needs_force_and_preventKeyDeletion_blocks_even_that(sdk, keyward):
    key = create_key(sdk, keyward, f"reg-del-{uuid.uuid4().hex[:8]}")["id"]
    register(sdk, keyward, key, crn(uuid.uuid4().hex[:8]))
    reason = expect_api_error(409, lambda: sdk.delete_key(id=key, bluemix_instance=keyward.instance))
    assert reason["code"] == "PROTECTED_RESOURCE_ERR"
    r = sdk.delete_key(id=key, bluemix_instance=keyward.instance, force=True)
    assert r.get_status_code() in (200, 204)

    worm = create_key(sdk, keyward, f"reg-worm-{uuid.uuid4().hex[:8]}")["id"]
    register(sdk, keyward, worm, crn(uuid.uuid4().hex[:8]), preventKeyDeletion=True)
    reason = expect_api_error(
        409, lambda: sdk.delete_key(id=worm, bluemix_instance=keyward.instance, force=True))
    assert reason["code"] == "PREV_KEY_DEL_ERR"


def test_sync_creates_an_event_the_service_acknowledges(sdk, keyward):
    key = create_key(sdk, keyward, f"reg-sync-{uuid.uuid4().hex[:8]}")["id"]
    register(sdk, keyward, key, crn(uuid.uuid4().hex[:8]))
    r = sdk.sync_associated_resources(id=key, bluemix_instance=keyward.instance)
    assert r.get_status_code() == 204
    pending = body(sdk.get_registrations(id=key, bluemix_instance=keyward.instance))
    events = pending["resources"][0]["pendingEvents"]
    assert [e["eventType"] for e in events] == ["sync"]
    ack = service_call(sdk, keyward, "POST", "/api/v2/event_ack", {
        "metadata": {"collectionType": ACK_MEDIA, "collectionTotal": 1},
        "resources": [{"eventId": events[0]["eventId"], "adopterKeyState": "DEK_ENABLED",
                       "timestamp": "2026-11-23T12:00:00Z"}],
    })
    assert ack.status_code == 204, ack.text
    after = body(sdk.get_registrations(id=key, bluemix_instance=keyward.instance))
    assert after["resources"][0]["pendingEvents"] == []
    assert after["resources"][0]["adopterKeyState"] == "DEK_ENABLED"
