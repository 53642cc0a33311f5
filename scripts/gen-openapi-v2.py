#!/usr/bin/env python3
"""Writes crates/keyward-server/openapi/kp-v2.json, the OpenAPI 3.1 description of Keyward's Key
Protect API v2 surface, served at /api/v2/openapi.json. The operations below are the source: add
one here (and to routes::openapi::ROUTES) when a route is added; crates/keyward-server/tests/
openapi.rs checks that the document, ROUTES and the router agree. Run from the repository root:
    python3 scripts/gen-openapi-v2.py
"""
import copy
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IAM = json.load(open(os.path.join(ROOT, "crates/keyward-server/openapi/iam-v1.json")))

KEY = "application/vnd.ibm.kms.key+json"

# (method, path, tag, operationId, summary, description, success status, request schema or
#  None, response schema or None, query parameters)
OPS = [
    ("get", "/api/v2/openapi.json", "meta", "getOpenApiV2", "This OpenAPI document",
     "The description of the Key Protect API v2 surface. Public: no token or instance needed.",
     "200", None, None, []),
    ("get", "/api/v2/keys", "keys", "listKeys", "List keys",
     "The instance's keys (with X-Kms-Key-Ring: that ring's), newest first unless `sort` says "
     "otherwise. `state` (comma-separated numbers, default 0,1,2,3), `extractable`, `search` "
     "(`[not:][exact:][name:|alias:]query`), `sort`, `filter`, `limit` (default 200, at most "
     "5000), `offset`, `totalCount`.", "200", None, "KeyCollection",
     ["limit", "offset", "state", "extractable", "search", "sort", "filter", "totalCount"]),
    ("head", "/api/v2/keys", "keys", "headKeys", "Count keys",
     "The number of keys matching the same filters as the listing, in the Key-Total header; no "
     "body.", "204", None, None, ["state", "extractable"]),
    ("post", "/api/v2/keys", "keys", "createKey", "Create or import a key",
     "A root or standard key, generated or imported (`payload`, or sealed for the import token "
     "with `encryptedNonce`, `iv`, `encryptionAlgorithm`); `Prefer: return=representation` "
     "answers with the key.", "201", "KeyCreateCollection", "KeyCollection", []),
    ("post", "/api/v2/keys_with_policy_overrides", "keys", "createKeyWithPolicyOverrides",
     "Create a key with its own policies",
     "As createKey, with `rotation` and `dualAuthDelete` policies for this key instead of the "
     "instance's.", "201", "KeyCreateCollection", "KeyCollection", []),
    ("get", "/api/v2/keys/{id}", "keys", "getKey", "Get a key",
     "A key by id, alias or CRN; a standard key's `payload` for ReaderPlus and above.", "200",
     None, "KeyCollection", []),
    ("delete", "/api/v2/keys/{id}", "keys", "deleteKey", "Delete a key",
     "Destroys the key (state 5): its material can no longer be used. `force=true` deletes a "
     "key with registrations (not one with preventKeyDeletion, unless "
     "`preventKeyDeletionOverride=true` by KeyPurge or an Administrator). Dual authorization: a "
     "second identity after setKeyForDeletion.", "200", None, "KeyCollection",
     ["force", "preventKeyDeletionOverride"]),
    ("post", "/api/v2/keys/{id}", "actions", "keyActionByQuery", "Key action (?action=)",
     "The key actions as Key Protect's older form: `?action=wrap|unwrap|rewrap|rotate|disable|"
     "enable|setKeyForDeletion|unsetKeyForDeletion|restore`, with the body of the action.",
     "200", "KeyActionBody", "KeyActionResult", ["action"]),
    ("patch", "/api/v2/keys/{id}", "keys", "patchKey", "Move a key to another key ring",
     "`{\"keyRingID\": \"R\"}`, with X-Kms-Key-Ring naming the ring it is in now.", "200",
     "KeyPatch", "KeyCollection", []),
    ("post", "/api/v2/keys/{id}/restore", "keys", "restoreKey", "Restore a deleted key",
     "Within the restore window (30 days) and 30 s after the delete; an imported key with its "
     "material again.", "201", "KeyCreateCollection", "KeyCollection", []),
    ("delete", "/api/v2/keys/{id}/purge", "keys", "purgeKey", "Purge a deleted key",
     "Erases a deleted key for good, from 4 hours after the delete (KeyPurge role).", "200",
     None, "KeyCollection", []),
    ("post", "/api/v2/keys/{id}/aliases/{alias}", "aliases", "createAlias", "Add an alias",
     "An alias works wherever a key id does (at most 5 per key).", "201", None, "Collection",
     []),
    ("delete", "/api/v2/keys/{id}/aliases/{alias}", "aliases", "deleteAlias", "Remove an alias",
     "Removes the alias from the key.", "204", None, None, []),
    ("get", "/api/v2/keys/{id}/policies", "policies", "getKeyPolicies", "Get a key's policies",
     "Rotation and dualAuthDelete policies of the key (`policy=rotation|dualAuthDelete`).",
     "200", None, "Collection", ["policy"]),
    ("put", "/api/v2/keys/{id}/policies", "policies", "putKeyPolicies", "Set a key's policies",
     "Rotation (`intervalMonth` 1 to 12, `enabled`) and dualAuthDelete (cannot be turned off).",
     "200", "Collection", "Collection", ["policy"]),
    ("get", "/api/v2/instance/policies", "policies", "getInstancePolicies",
     "Get the instance's policies",
     "dualAuthDelete, rotation, allowedNetwork, allowedIP, keyCreateImportAccess, metrics.",
     "200", None, "Collection", ["policy"]),
    ("put", "/api/v2/instance/policies", "policies", "putInstancePolicies",
     "Set the instance's policies", "One or several policies in one request.", "204",
     "Collection", None, ["policy"]),
    ("get", "/api/v2/instance/allowed_ip_port", "policies", "getAllowedIpPort",
     "The private endpoint port",
     "The port of the private endpoint while an allowedIP policy is in force.", "200", None,
     "Collection", []),
    ("get", "/api/v2/import_token", "import", "getImportToken", "Retrieve the import token",
     "Its RSA-4096 public key (base64 PEM) and nonce; each call uses up one retrieval.", "200",
     None, "ImportToken", []),
    ("post", "/api/v2/import_token", "import", "createImportToken", "Create the import token",
     "`expiration` 300 to 86400 s (default 600), `maxAllowedRetrievals` 1 to 500 (default 1); "
     "one live token per instance.", "201", "ImportTokenRequest", "ImportToken", []),
    ("get", "/api/v2/key_rings", "key rings", "listKeyRings", "List key rings",
     "The instance's key rings (`default` included).", "200", None, "Collection",
     ["limit", "offset", "totalCount"]),
    ("post", "/api/v2/key_rings/{id}", "key rings", "createKeyRing", "Create a key ring",
     "A ring id: 2 to 100 of `a-zA-Z0-9-`.", "201", None, None, []),
    ("delete", "/api/v2/key_rings/{id}", "key rings", "deleteKeyRing", "Delete a key ring",
     "Only an empty ring; `force=true` also one holding only deleted keys (they move to "
     "`default`).", "204", None, None, ["force"]),
    ("get", "/api/v2/keys/{id}/metadata", "keys", "getKeyMetadata", "Get a key's metadata",
     "The key without any payload.", "200", None, "KeyCollection", []),
    ("get", "/api/v2/keys/{id}/versions", "keys", "listKeyVersions", "List a key's versions",
     "Newest first.", "200", None, "Collection", ["limit", "offset", "totalCount"]),
    ("post", "/api/v2/keys/{id}/actions/{action}", "actions", "keyAction", "Key action",
     "`wrap` (generates a DEK without `plaintext`), `unwrap`, `rewrap`, `rotate`, `disable`, "
     "`enable` (30 s after a disable), `setKeyForDeletion`, `unsetKeyForDeletion`, `sync`.",
     "200", "KeyActionBody", "KeyActionResult", []),
    ("get", "/api/v2/keys/registrations", "registrations", "listRegistrations",
     "List the instance's registrations",
     "`urlEncodedResourceCRNQuery` (with `*`), `preventKeyDeletion`, `limit`, `offset`, "
     "`totalCount`; with X-Kms-Key-Ring, that ring's keys only.", "200", None, "Collection",
     ["urlEncodedResourceCRNQuery", "preventKeyDeletion", "limit", "offset", "totalCount"]),
    ("get", "/api/v2/keys/{id}/registrations", "registrations", "listKeyRegistrations",
     "List a key's registrations", "As listRegistrations, for one key.", "200", None,
     "Collection", ["urlEncodedResourceCRNQuery", "preventKeyDeletion", "limit", "offset",
                    "totalCount"]),
    ("post", "/api/v2/keys/{id}/registrations/{crn}", "registrations", "createRegistration",
     "Register a resource", "Service identities only (403 SERVICE_ONLY_ERR for users); at most "
     "100 per key.", "201", "Collection", "Collection", []),
    ("put", "/api/v2/keys/{id}/registrations/{crn}", "registrations", "replaceRegistration",
     "Replace a registration", "Its owner only; absent fields take their defaults.", "200",
     "Collection", "Collection", []),
    ("patch", "/api/v2/keys/{id}/registrations/{crn}", "registrations", "updateRegistration",
     "Update a registration", "Its owner only; absent fields are kept.", "200", "Collection",
     "Collection", []),
    ("delete", "/api/v2/keys/{id}/registrations/{crn}", "registrations", "deleteRegistration",
     "Remove a registration", "Its owner only.", "204", None, None, []),
    ("get", "/api/v2/event_stream", "events", "eventStream", "Follow lifecycle events",
     "Server-sent events: every event not yet acknowledged, then new ones; `Last-Event-ID` "
     "resumes after a seq.", "200", None, None, []),
    ("get", "/api/v2/event_subscription", "events", "getEventSubscription",
     "Get the webhook subscription", "The caller's push subscription (its URL).", "200", None,
     "Collection", []),
    ("put", "/api/v2/event_subscription", "events", "putEventSubscription",
     "Subscribe a webhook", "`{\"url\"}`; answers the signing secret once.", "200",
     "Collection", "Collection", []),
    ("delete", "/api/v2/event_subscription", "events", "deleteEventSubscription",
     "Remove the webhook subscription", "Stops pushes to the caller's URL.", "204", None, None,
     []),
    ("post", "/api/v2/event_ack", "events", "ackEvents", "Acknowledge events",
     "Key Protect's event_acknowledge body; only the event's recipient.", "204", "Collection",
     None, []),
    ("get", "/api/v2/audit_events", "audit", "listAuditEvents", "List audit events",
     "A Keyward extension (Manager): `from`, `to` (RFC 3339), `action`, `keyId`, `initiator`, "
     "`outcome`, `limit` (default 200, at most 5000), `offset`; oldest first.", "200", None,
     "Collection", ["from", "to", "action", "keyId", "initiator", "outcome", "limit", "offset"]),
    ("get", "/api/v2/audit_events/verification", "audit", "verifyAuditChain",
     "Verify the audit chain",
     "A Keyward extension (Manager): the newest signed checkpoint (its signature and stored hash) "
     "and every event after it up to the head, at most 100 000 per request; `ok`, `headSeq`, "
     "`headHash`, `checkpoint`, `verifiedFrom`, `eventsChecked`, `complete`, `firstBreak`.",
     "200", None, None, []),
    ("get", "/api/v2/kmip_adapters", "kmip", "listKmipAdapters", "List KMIP adapters",
     "`crk_id` filters by root key.", "200", None, "Collection",
     ["crk_id", "limit", "offset", "totalCount"]),
    ("post", "/api/v2/kmip_adapters", "kmip", "createKmipAdapter", "Create a KMIP adapter",
     "Profile `native_1.0` on an active root key of the instance.", "201", "Collection",
     "Collection", []),
    ("get", "/api/v2/kmip_adapters/{id}", "kmip", "getKmipAdapter", "Get a KMIP adapter",
     "By id or name.", "200", None, "Collection", []),
    ("delete", "/api/v2/kmip_adapters/{id}", "kmip", "deleteKmipAdapter",
     "Delete a KMIP adapter",
     "With its certificates; refused while it holds Active objects.", "204", None, None, []),
    ("get", "/api/v2/kmip_adapters/{id}/certificates", "kmip", "listKmipCertificates",
     "List an adapter's client certificates", "Without their PEM.", "200", None, "Collection",
     ["limit", "offset", "totalCount"]),
    ("post", "/api/v2/kmip_adapters/{id}/certificates", "kmip", "createKmipCertificate",
     "Add a client certificate", "One X.509 certificate, PEM.", "201", "Collection",
     "Collection", []),
    ("get", "/api/v2/kmip_adapters/{id}/certificates/{item}", "kmip", "getKmipCertificate",
     "Get a client certificate", "By id or name, with its PEM.", "200", None, "Collection", []),
    ("delete", "/api/v2/kmip_adapters/{id}/certificates/{item}", "kmip",
     "deleteKmipCertificate", "Delete a client certificate", "By id or name.", "204", None,
     None, []),
    ("get", "/api/v2/kmip_adapters/{id}/kmip_objects", "kmip", "listKmipObjects",
     "List KMIP objects", "`state` (comma-separated KMIP states, default 1 to 4).", "200",
     None, "Collection", ["state", "limit", "offset", "totalCount"]),
    ("get", "/api/v2/kmip_adapters/{id}/kmip_objects/{item}", "kmip", "getKmipObject",
     "Get a KMIP object", "Its attributes, never its material.", "200", None, "Collection", []),
    ("delete", "/api/v2/kmip_adapters/{id}/kmip_objects/{item}", "kmip", "deleteKmipObject",
     "Destroy a KMIP object", "`force=true` also an Active one.", "204", None, None, ["force"]),
]

PATH_PARAMS = {
    "id": "A key id, alias or CRN (a key ring id under /key_rings; an adapter id or name under "
          "/kmip_adapters).",
    "alias": "The alias.",
    "action": "The action.",
    "crn": "The resource CRN, URL-encoded.",
    "item": "A certificate's or object's id (or a certificate's name).",
}

STATUS_TEXT = {"200": "OK.", "201": "Created.", "204": "No content."}


def collection(item):
    return {
        "type": "object",
        "required": ["metadata", "resources"],
        "properties": {
            "metadata": {"$ref": "#/components/schemas/CollectionMetadata"},
            "resources": {"type": "array", "items": item},
        },
    }


def schemas():
    s = {"Error": copy.deepcopy(IAM["components"]["schemas"]["Error"])}
    s["Error"]["description"] = ("Key Protect's error body (application/vnd.ibm.kms.error+json), "
                                 "used by every error of /api/v2.")
    s["CollectionMetadata"] = {
        "type": "object",
        "required": ["collectionType", "collectionTotal"],
        "properties": {
            "collectionType": {"type": "string", "examples": [KEY]},
            "collectionTotal": {"type": "integer"},
            "totalCount": {"type": "integer", "description": "With totalCount=true."},
        },
    }
    s["Collection"] = collection({"type": "object"})
    s["Key"] = {
        "type": "object",
        "properties": {
            "id": {"type": "string"}, "name": {"type": "string"},
            "description": {"type": "string"}, "type": {"const": KEY},
            "state": {"type": "integer", "enum": [0, 1, 2, 3, 5]},
            "extractable": {"type": "boolean", "description": "true: a standard key."},
            "imported": {"type": "boolean"}, "crn": {"type": "string"},
            "keyRingID": {"type": "string"}, "aliases": {"type": "array",
                                                        "items": {"type": "string"}},
            "algorithmType": {"type": "string"}, "creationDate": {"type": "string"},
            "createdBy": {"type": "string"}, "expirationDate": {"type": "string"},
            "keyVersion": {"type": "object", "properties": {"id": {"type": "string"}}},
            "payload": {"type": "string", "description": "Standard keys only, base64."},
        },
    }
    s["KeyCollection"] = collection({"$ref": "#/components/schemas/Key"})
    s["KeyCreate"] = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "type": {"const": KEY}, "name": {"type": "string"},
            "description": {"type": "string"}, "extractable": {"type": "boolean"},
            "payload": {"type": "string", "description": "Imported material, base64."},
            "expirationDate": {"type": "string"}, "keyRingID": {"type": "string"},
            "aliases": {"type": "array", "items": {"type": "string"}},
            "encryptedNonce": {"type": "string"}, "iv": {"type": "string"},
            "encryptionAlgorithm": {"type": "string",
                                    "enum": ["RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1"]},
        },
    }
    s["KeyCreateCollection"] = collection({"$ref": "#/components/schemas/KeyCreate"})
    s["KeyPatch"] = {"type": "object", "required": ["keyRingID"],
                     "properties": {"keyRingID": {"type": "string"}}}
    s["KeyActionBody"] = {
        "type": "object",
        "description": "The action's body: wrap {plaintext?, aad?}, unwrap and rewrap "
                       "{ciphertext, aad?}, rotate {payload?}; none for the others.",
        "properties": {
            "plaintext": {"type": "string"}, "ciphertext": {"type": "string"},
            "aad": {"type": "array", "items": {"type": "string"}},
            "payload": {"type": "string"},
        },
    }
    s["KeyActionResult"] = {
        "type": "object",
        "description": "wrap: {ciphertext, plaintext? (generated), keyVersion}; unwrap: "
                       "{plaintext, keyVersion, rewrappedKeyVersion?}; rewrap: {ciphertext, "
                       "keyVersion, rewrappedKeyVersion}. Other actions answer 204.",
        "properties": {
            "plaintext": {"type": "string"}, "ciphertext": {"type": "string"},
            "keyVersion": {"type": "object"}, "rewrappedKeyVersion": {"type": "object"},
        },
    }
    s["ImportTokenRequest"] = {
        "type": "object",
        "properties": {"expiration": {"type": "integer", "minimum": 300, "maximum": 86400},
                       "maxAllowedRetrievals": {"type": "integer", "minimum": 1,
                                                "maximum": 500}},
    }
    s["ImportToken"] = {
        "type": "object",
        "properties": {
            "expiration": {"type": "integer"}, "maxAllowedRetrievals": {"type": "integer"},
            "remainingRetrievals": {"type": "integer"}, "creationDate": {"type": "string"},
            "expirationDate": {"type": "string"},
            "payload": {"type": "string", "description": "GET only: base64 PEM public key."},
            "nonce": {"type": "string", "description": "GET only, base64."},
        },
    }
    return s


def errors():
    text = {
        "BadRequest": "The request is malformed or a field is invalid (BAD_BODY_ERR, "
                      "INVALID_FIELD_ERR, ...).",
        "Unauthorized": "No token, or a token that is invalid, expired or revoked "
                        "(UNAUTHORIZED_ERR).",
        "Forbidden": "The caller can see the resource but lacks the role (UNAUTHORIZED_ERR), "
                     "or an instance policy refuses it.",
        "NotFound": "No such key, ring, registration, adapter or event, or one the caller "
                    "cannot see (KEY_NOT_FOUND_ERR and the like).",
        "Conflict": "A Key Protect rule refused the request: the key's state, the 30 s rule, "
                    "registrations (reason code in the body).",
        "TooLarge": "The body is larger than the server accepts.",
        "TooManyRequests": "A rate limit (TOO_MANY_REQUESTS_ERR), with Retry-After.",
        "Unavailable": "The store or the custody backend is unavailable now "
                       "(SERVICE_UNAVAILABLE_ERR), with Retry-After.",
        "Internal": "An internal error: the body has a request id, the log has the detail.",
    }
    return {name: {"description": d,
                   "content": {"application/json": {"schema":
                                                    {"$ref": "#/components/schemas/Error"}}}}
            for name, d in text.items()}


def operation(op):
    method, path, tag, op_id, summary, desc, status, req, resp, query = op
    o = {"operationId": op_id, "tags": [tag], "summary": summary, "description": desc}
    params = []
    for seg in path.split("/"):
        if seg.startswith("{"):
            name = seg.strip("{}")
            params.append({"name": name, "in": "path", "required": True,
                           "description": PATH_PARAMS[name], "schema": {"type": "string"}})
    if path == "/api/v2/openapi.json":
        o["security"] = []
    else:
        params.append({"$ref": "#/components/parameters/Instance"})
        params.append({"$ref": "#/components/parameters/KeyRing"})
        params.append({"$ref": "#/components/parameters/CorrelationId"})
    for q in query:
        params.append({"name": q, "in": "query", "required": q == "action",
                       "schema": {"type": "string"}})
    o["parameters"] = params
    if req:
        o["requestBody"] = {"required": method != "post" or "action" not in path,
                            "content": {"application/json": {"schema":
                                                             {"$ref": f"#/components/schemas/{req}"}}}}
    ok = {"description": STATUS_TEXT[status]}
    if path == "/api/v2/openapi.json":
        ok["content"] = {"application/json": {"schema": {"type": "object"}}}
    elif path == "/api/v2/event_stream":
        ok["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
    elif resp and status != "204":
        ok["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{resp}"}}}
    o["responses"] = {status: ok}
    if path != "/api/v2/openapi.json":
        for code, name in [("400", "BadRequest"), ("401", "Unauthorized"), ("403", "Forbidden"),
                           ("404", "NotFound"), ("409", "Conflict"),
                           ("429", "TooManyRequests"), ("503", "Unavailable"),
                           ("500", "Internal")]:
            o["responses"][code] = {"$ref": f"#/components/responses/{name}"}
    return o


def main():
    paths = {}
    for op in OPS:
        paths.setdefault(op[1], {})[op[0]] = operation(op)
    doc = {
        "openapi": "3.1.0",
        "info": {
            "title": "Keyward Key Protect API v2",
            "version": "2",
            "description": (
                "IBM Key Protect's API v2 as Keyward serves it, with Keyward's extensions "
                "(audit events, event streams). Clients written for Key Protect work unchanged."
                "\n\n**Authentication.** Exchange an API key at POST /identity/token (see "
                "/iam/v1/openapi.json) and send `Authorization: Bearer <token>` with "
                "`bluemix-instance: <instance id>`; `X-Kms-Key-Ring` scopes a request to a key "
                "ring. Key endpoints answer with Key Protect's media types "
                "(application/vnd.ibm.kms.*+json)."
                "\n\n**Errors** use Key Protect's error body (schema Error) with its reason "
                "codes; a caller that cannot see a key gets 404 KEY_NOT_FOUND_ERR."),
        },
        "tags": [{"name": t, "description": t.capitalize() + "."} for t in
                 ["keys", "actions", "aliases", "policies", "import", "key rings",
                  "registrations", "events", "audit", "kmip", "meta"]],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": copy.deepcopy(IAM["components"]["securitySchemes"]),
            "parameters": {
                "Instance": {"name": "bluemix-instance", "in": "header", "required": True,
                             "description": "The KMS instance id.",
                             "schema": {"type": "string"}},
                "KeyRing": {"name": "X-Kms-Key-Ring", "in": "header", "required": False,
                            "description": "Act within this key ring.",
                            "schema": {"type": "string"}},
                "CorrelationId": {"name": "correlation-id", "in": "header", "required": False,
                                  "description": "Echoed for tracing (also X-Request-Id).",
                                  "schema": {"type": "string"}},
            },
            "schemas": schemas(),
            "responses": errors(),
        },
    }
    out = os.path.join(ROOT, "crates/keyward-server/openapi/kp-v2.json")
    with open(out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(f"wrote {out}: {len(OPS)} operations")


main()
