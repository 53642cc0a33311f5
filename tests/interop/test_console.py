"""The web console (`/ui`) in a real browser: Debian's headless Chromium driven by Playwright
(PyPI `playwright`, no browser download) against the suite's real `keyward serve`.

One walk through the console as an operator would: sign in with the bootstrap API key; create,
rotate, disable, enable, delete and restore a key, each checked through the REST API too; see an
audit event for each; create an identity with Reader on the instance and an API key for it (the
secret shown once), sign in as that identity and see a change refused in words. Every view is
screenshotted (`KEYWARD_CONSOLE_SCREENSHOTS`, default `target/console-screenshots`); the browser
logs no console error, and every response under `/ui` carries the Content-Security-Policy.

Without Chromium the test is skipped with a loud message, unless KEYWARD_REQUIRE_BROWSER is set
(CI sets it), where it fails.
"""

import base64
import os
import re
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from conftest import DEFAULT_CONFIG, ON_POSTGRES, REPO, remember_secret, serve_keyward

CHROMIUM = os.environ.get("KEYWARD_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("KEYWARD_CONSOLE_SCREENSHOTS", REPO / "target" / "console-screenshots"))
TIMEOUT_MS = 15_000

pytestmark = pytest.mark.skipif(ON_POSTGRES, reason="the console is exercised on the SQLite run")


@pytest.fixture(scope="module")
def keyward(tmp_path_factory):
    """A server of its own: the identities and keys made here stay out of the other modules'
    listings."""
    # Checkpoints every few events, so the audit view has a signed one to show.
    config = DEFAULT_CONFIG + "[audit]\ncheckpoint_every_events = 5\n"
    with serve_keyward(tmp_path_factory.mktemp("keyward-console"), config) as server:
        yield server


def _chromium_or_skip():
    if os.access(CHROMIUM, os.X_OK):
        return
    message = (f"!!! BROWSER TEST NOT RUN: no Chromium at {CHROMIUM} "
               "(scripts/chromium.sh installs Debian's chromium) !!!")
    if os.environ.get("KEYWARD_REQUIRE_BROWSER"):
        pytest.fail(message, pytrace=False)
    print(f"\n{message}\n")
    pytest.skip(message)


def _token(keyward, api_key=None):
    r = requests.post(f"{keyward.url}/identity/token", timeout=10, data={
        "grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": api_key or keyward.api_key})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def _rest(keyward, token, method, path, **kw):
    return requests.request(method, f"{keyward.url}{path}", timeout=10, headers={
        "Authorization": f"Bearer {token}", "bluemix-instance": keyward.instance}, **kw)


def _rest_key(keyward, token, key_id):
    r = _rest(keyward, token, "GET", f"/api/v2/keys/{key_id}/metadata")
    assert r.status_code == 200, r.text
    return r.json()["resources"][0]


def _rest_state(keyward, token, key_id, want):
    """Waits (briefly) for the REST API to report `want` as the key's state."""
    deadline = time.monotonic() + 10
    while True:
        state = _rest_key(keyward, token, key_id)["state"]
        if state == want or time.monotonic() > deadline:
            assert state == want, f"the API reports state {state}, not {want}"
            return
        time.sleep(0.1)


def test_console_walkthrough(keyward):
    _chromium_or_skip()
    from playwright.sync_api import expect, sync_playwright

    started = time.monotonic()
    SHOTS.mkdir(parents=True, exist_ok=True)
    problems = []          # console errors and page errors
    console_responses = []  # (url, status, csp, frame options) of every /ui response
    refused = []           # (status, method, path) of every answer >= 400
    token = _token(keyward)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

        def on_response(resp):
            path = resp.url[len(keyward.url):] if resp.url.startswith(keyward.url) else resp.url
            if resp.status >= 400:
                refused.append((resp.status, resp.request.method, path.split("?")[0]))
            if path == "/" or path.startswith("/ui"):
                h = resp.headers
                console_responses.append((path, resp.status, h.get("content-security-policy"),
                                          h.get("x-frame-options")))
        page.on("response", on_response)

        def shot(name, full_page=True):
            page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)

        def confirm():
            dialog = page.locator("#confirm")
            expect(dialog).to_be_visible()
            dialog.get_by_role("button", name="Confirm").click()
            expect(dialog).to_be_hidden()

        def sign_in(api_key, instance=""):
            page.get_by_label("API key").fill(api_key)
            page.get_by_label("Instance").fill(instance)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", name="Keys", exact=True)).to_be_visible()

        # The root redirects to the console; sign in with the bootstrap administrator's key.
        page.goto(keyward.url + "/")
        assert page.url == keyward.url + "/ui/"
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        shot("signin")
        # A wrong API key is refused in words.
        sign_in_button = page.get_by_role("button", name="Sign in")
        page.get_by_label("API key").fill("kwnotakey.notasecretnotasecretnotasecret")
        sign_in_button.click()
        expect(page.get_by_role("alert")).to_contain_text("(HTTP 400")
        # By keyboard alone: the API key field has the focus, Enter submits.
        page.get_by_label("API key").fill("")
        page.get_by_label("API key").focus()
        page.keyboard.type(keyward.api_key)
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Keys", exact=True)).to_be_visible()
        assert keyward.api_key not in page.url

        # Create a root key with an alias.
        name = f"console-{os.getpid()}-{int(time.time())}"
        page.get_by_role("button", name="New key").click()
        page.get_by_label("Name", exact=True).fill(name)
        page.get_by_label("Aliases (comma-separated, at most 5)").fill(f"{name}-alias")
        page.get_by_role("button", name="Create", exact=True).click()
        expect(page.get_by_role("heading", name=f"Key {name}")).to_be_visible()
        key_id = re.search(r"#/key/([0-9a-f-]{36})", page.url).group(1)
        assert _rest_key(keyward, token, key_id)["name"] == name
        expect(page.get_by_role("status")).to_have_text(f"Key {name} created.")

        # A service registers a resource on it (the bootstrap administrator is a service ID):
        # the key's page lists it, and each confirmation names it.
        resource = f"crn:v1:bluemix:public:messagehub:us-south:a/acct:console-{os.getpid()}::"
        r = _rest(keyward, token, "POST", f"/api/v2/keys/{key_id}/registrations/{quote(resource, safe='')}",
                  json={"metadata": {"collectionType": "application/vnd.ibm.kms.registration_input+json",
                                     "collectionTotal": 1},
                        "resources": [{"description": "console test topic"}]})
        assert r.status_code == 201, r.text
        page.get_by_role("link", name="Keys", exact=True).click()
        page.get_by_role("link", name=name, exact=True).click()
        expect(page.get_by_role("cell", name=resource, exact=True)).to_be_visible()

        def key_action(button, done, state, force=False):
            if force:
                page.get_by_label("Force (delete despite registrations)").check()
            page.get_by_role("group", name="Key actions").get_by_role("button", name=button,
                                                                      exact=True).click()
            expect(page.locator("#confirm-body")).to_contain_text(resource)
            confirm()
            expect(page.get_by_role("status")).to_have_text(done)
            _rest_state(keyward, token, key_id, state)

        key_action("Rotate", "Key rotated.", 1)
        versions = requests.get(f"{keyward.url}/api/v2/keys/{key_id}/versions", timeout=10, headers={
            "Authorization": f"Bearer {token}", "bluemix-instance": keyward.instance}).json()
        assert len(versions["resources"]) == 2
        key_action("Disable", "Key disabled.", 2)
        key_action("Enable", "Key enabled.", 1)
        shot("key", full_page=False)  # the README's: metadata, actions, registrations
        shot("key-full")

        # The keys view lists it (search by name).
        page.get_by_role("link", name="Keys", exact=True).click()
        page.get_by_label("Search name or alias").fill(name)
        page.get_by_role("button", name="Apply").click()
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
        page.get_by_role("link", name=name, exact=True).click()
        expect(page.get_by_role("heading", name=f"Key {name}")).to_be_visible()

        # Without force, the registration refuses the delete, in words.
        page.get_by_role("group", name="Key actions").get_by_role("button", name="Delete",
                                                                  exact=True).click()
        confirm()
        expect(page.get_by_role("alert")).to_contain_text("HTTP 409, PROTECTED_RESOURCE_ERR")
        _rest_state(keyward, token, key_id, 1)
        key_action("Delete", "Key deleted.", 5, force=True)
        key_action("Restore", "Key restored.", 1)

        # The key's own audit events: one for each of those actions.
        audit = page.locator("table").last
        for action in ("kms.secrets.create", "kms.secrets.rotate", "kms.secrets.disable",
                       "kms.secrets.enable", "kms.secrets.delete", "kms.secrets.restore"):
            expect(audit.get_by_role("cell", name=action, exact=True).first).to_be_visible()

        # The audit view, filtered on the key.
        page.get_by_role("link", name="Audit").click()
        page.get_by_label("Key id").fill(key_id)
        page.get_by_role("button", name="Filter").click()
        expect(page.get_by_role("cell", name="kms.secrets.restore", exact=True).first).to_be_visible()
        # The chain from its newest signed checkpoint to its head, verified by the server.
        expect(page.locator("#chain-result")).to_have_text("intact")
        expect(page.get_by_text("signature valid")).to_be_visible()
        shot("audit")

        # A key with rotation and dual-authorization policies, and a securely imported one: the
        # material RSA-OAEP-SHA256-encrypted in the browser (WebCrypto) to a fresh import token.
        page.get_by_role("link", name="Keys", exact=True).click()
        page.get_by_role("button", name="New key").click()
        page.get_by_label("Name", exact=True).fill(f"{name}-policies")
        page.get_by_label("Rotate every (months, empty: no policy)").fill("3")
        page.get_by_label("Dual authorization to delete").check()
        page.get_by_role("button", name="Create", exact=True).click()
        expect(page.get_by_role("heading", name=f"Key {name}-policies")).to_be_visible()
        expect(page.get_by_role("cell", name="enabled, every 3 month(s)")).to_be_visible()
        expect(page.get_by_role("button", name="Authorize deletion")).to_be_visible()
        policies_id = re.search(r"#/key/([0-9a-f-]{36})", page.url).group(1)
        assert _rest_key(keyward, token, policies_id)["dualAuthDelete"]["enabled"] is True
        page.get_by_label("Rotate every (months)", exact=True).fill("6")
        page.get_by_role("button", name="Set rotation policy").click()
        expect(page.get_by_role("status")).to_have_text("Rotation policy saved.")
        expect(page.get_by_role("cell", name="enabled, every 6 month(s)")).to_be_visible()
        r = _rest(keyward, token, "GET", f"/api/v2/keys/{policies_id}/policies",
                  params={"policy": "rotation"})
        assert r.status_code == 200 and r.json()["resources"][0]["rotation"]["interval_month"] == 6, r.text

        material = base64.b64encode(os.urandom(32)).decode()
        remember_secret(material)
        page.get_by_role("link", name="Keys", exact=True).click()
        page.get_by_role("button", name="New key").click()
        page.get_by_label("Name", exact=True).fill(f"{name}-imported")
        page.get_by_label(re.compile("^Import material")).fill(material)
        page.get_by_label(re.compile("^Secure import")).check()
        page.get_by_role("button", name="Create", exact=True).click()
        expect(page.get_by_role("heading", name=f"Key {name}-imported")).to_be_visible()
        expect(page.get_by_text("Root (imported)")).to_be_visible()
        imported_id = re.search(r"#/key/([0-9a-f-]{36})", page.url).group(1)
        assert _rest_key(keyward, token, imported_id)["imported"] is True
        # The material the browser sealed is the key's: a DEK wrapped under it unwraps.
        dek = base64.b64encode(os.urandom(32)).decode()
        remember_secret(dek)
        r = _rest(keyward, token, "POST", f"/api/v2/keys/{imported_id}/actions/wrap",
                  json={"plaintext": dek})
        assert r.status_code == 200, r.text
        r = _rest(keyward, token, "POST", f"/api/v2/keys/{imported_id}/actions/unwrap",
                  json={"ciphertext": r.json()["ciphertext"]})
        assert r.status_code == 200 and r.json()["plaintext"] == dek, r.text
        page.get_by_role("link", name="Keys", exact=True).click()
        expect(page.get_by_role("link", name=f"{name}-imported", exact=True)).to_be_visible()
        shot("keys")

        # A KMIP adapter on the first key.
        page.get_by_role("link", name="KMIP", exact=True).click()
        page.get_by_label("Root key id or alias").fill(key_id)
        page.get_by_label("Name (optional)").fill("console-adapter")
        page.get_by_role("button", name="Create adapter").click()
        expect(page.get_by_role("status")).to_have_text("KMIP adapter created.")
        page.get_by_role("button", name="Show console-adapter").click()
        expect(page.get_by_role("heading", name="Adapter console-adapter: KMIP objects")).to_be_visible()
        shot("kmip")

        # The other views render.
        for link, heading, shot_name in (("Key rings", "Key rings", "rings"),
                                         ("Health", "Health", "health")):
            page.get_by_role("link", name=link, exact=True).click()
            expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
            shot(shot_name)
        expect(page.get_by_text("up (signs records)")).to_be_visible()

        # Instance policies: dual authorization for new keys, then the form shows it in force.
        page.get_by_role("link", name="Instance policies", exact=True).click()
        page.get_by_label("Dual authorization for new keys").check()
        page.get_by_role("button", name="Save policies").click()
        expect(page.get_by_role("status")).to_have_text("Instance policies saved.")
        expect(page.get_by_label("Dual authorization for new keys")).to_be_checked()
        r = _rest(keyward, token, "GET", "/api/v2/instance/policies", params={"policy": "dualAuthDelete"})
        assert r.status_code == 200 and r.json()["resources"][0]["policy_data"]["enabled"] is True, r.text
        shot("policies")

        # An identity with Reader on the instance, and an API key for it (shown once).
        reader = f"console-reader-{os.getpid()}"
        page.get_by_role("link", name="Access").click()
        expect(page.get_by_role("heading", name="Access", exact=True)).to_be_visible()
        page.locator("#new-identity-name").fill(reader)
        page.get_by_role("button", name="Create identity").click()
        expect(page.get_by_role("status")).to_have_text(f"Identity {reader} created.")
        reader_id = page.locator("tr", has_text=reader).locator("code").first.inner_text()
        policy_form = page.get_by_role("form", name="New access policy")
        policy_form.get_by_label("Subject").select_option(reader_id)
        policy_form.get_by_label("Role").select_option("Reader")
        policy_form.get_by_role("button", name="Create access policy").click()
        expect(page.get_by_role("status")).to_have_text("Access policy created.")
        page.get_by_label("Identity", exact=True).select_option(reader_id)
        page.locator("#new-apikey-name").fill("console")
        page.get_by_role("button", name="Create API key").click()
        secret = page.locator("#apikey-secret")
        expect(secret).to_be_visible()
        reader_key = secret.inner_text().strip()
        assert reader_key.startswith("kw")
        shot("access")

        # Signed in as the Reader: keys are visible, a change is refused in words.
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        sign_in(reader_key, keyward.instance)
        page.get_by_label("Search name or alias").fill(name)
        page.get_by_role("button", name="Apply").click()
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
        page.get_by_role("button", name="New key").click()
        page.get_by_label("Name", exact=True).fill(f"{name}-by-reader")
        page.get_by_role("button", name="Create", exact=True).click()
        expect(page.get_by_role("alert")).to_contain_text("Not allowed with your access (HTTP 403")
        shot("reader-refused")
        page.get_by_role("link", name=name, exact=True).click()
        page.get_by_role("group", name="Key actions").get_by_role("button", name="Disable").click()
        confirm()
        expect(page.get_by_role("alert")).to_contain_text("HTTP 403")
        _rest_state(keyward, token, key_id, 1)

        browser.close()

    # The refusals are audited too.
    r = requests.get(f"{keyward.url}/api/v2/audit_events", timeout=10, params={
        "keyId": key_id, "action": "kms.secrets.disable", "outcome": "failure"}, headers={
        "Authorization": f"Bearer {token}", "bluemix-instance": keyward.instance})
    assert r.status_code == 200 and r.json()["resources"], r.text

    # The refusals provoked above are the only answers >= 400 the browser got: the wrong API key,
    # the delete a registration protects, the Reader's changes and what its role may not read on
    # the key's page (the key's policies and the audit trail, shown there as refused). Chromium
    # logs each failed fetch as a console error ("Failed to load resource"); those are the only
    # console errors allowed, one per refusal, and no other error may appear.
    provoked = {(400, "POST", "/identity/token"), (409, "DELETE", f"/api/v2/keys/{key_id}"),
                (403, "POST", "/api/v2/keys"), (403, "GET", "/api/v2/audit_events"),
                (403, "GET", f"/api/v2/keys/{key_id}/policies"),
                (403, "POST", f"/api/v2/keys/{key_id}/actions/disable")}
    assert set(refused) == provoked, refused
    failed_loads = [m for m in problems if m.startswith(
        "console error: Failed to load resource: the server responded with a status of ")]
    assert len(failed_loads) == len(refused), (failed_loads, refused)
    unexpected = [m for m in problems if m not in failed_loads]
    assert not unexpected, "\n".join(unexpected)
    assert console_responses, "no console response was seen"
    for path, status, csp, xfo in console_responses:
        assert csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, \
            f"{path} ({status}) has no strict CSP: {csp!r}"
        assert xfo == "DENY", f"{path} ({status}): X-Frame-Options {xfo!r}"
    print(f"\nconsole walkthrough: {time.monotonic() - started:.1f} s, screenshots in {SHOTS}")
