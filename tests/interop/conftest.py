"""Shared fixtures and helpers of the interop suite: a real `keyward serve` driven by the public
`keyprotect` SDK (PyPI, 3.0.1).

`keyward` (session) starts the binary with DEFAULT_CONFIG; a module that needs other settings
overrides `keyward` (and `sdk`) with its own fixture built on `serve_keyward`. The helpers are
imported by the test modules (`from conftest import ...`).
"""

import base64
import io
import json
import os
import re
import sqlite3
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import requests
from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
from keyprotect import IbmKeyProtectApiV2

REPO = Path(__file__).resolve().parents[2]
KEYWARD_BIN = os.environ.get("KEYWARD_BIN", str(REPO / "target" / "debug" / "keyward"))
START_TIMEOUT_SECS = 30

KEY_MEDIA = "application/vnd.ibm.kms.key+json"
ERROR_MEDIA = "application/vnd.ibm.kms.error+json"

DEFAULT_CONFIG = "[lifecycle]\nmin_rotation_interval_secs = 0\nenable_after_disable_secs = 0\n"

# KEYWARD_INTEROP_STORE=postgres: every server of the suite is the second node of a two-node
# cluster on a throwaway PostgreSQL (the first node bootstraps; the SDK talks to the second).
ON_POSTGRES = os.environ.get("KEYWARD_INTEROP_STORE") == "postgres"


class _Postgres:
    """A throwaway PostgreSQL cluster on a Unix socket in a temporary directory, for this session
    (as root it runs as the `postgres` user); stopped and removed at exit."""

    def __init__(self):
        import atexit
        import glob
        import tempfile
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
        assert bins, "PostgreSQL is not installed (scripts/postgres.sh installs it)"
        self.bin = Path(bins[-1])
        self.dir = Path(tempfile.mkdtemp(prefix="keyward-interop-pg."))
        self.root = os.geteuid() == 0
        if self.root:
            subprocess.run(["chown", "postgres:postgres", str(self.dir)], check=True)
        self._as_pg([str(self.bin / "initdb"), "-D", str(self.dir / "data"), "-U", "postgres",
                     "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"])
        self._as_pg([str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-l",
                     str(self.dir / "log"), "-w", "-o",
                     f"-c listen_addresses='' -k {self.dir} -c fsync=off", "start"])
        atexit.register(self.stop)
        self.count = 0

    def _as_pg(self, argv):
        if self.root:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self):
        import shutil
        subprocess.run((["runuser", "-u", "postgres", "--"] if self.root else [])
                       + [str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m",
                          "immediate", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)

    def psql(self, database, sql):
        out = subprocess.run([str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                              "-h", str(self.dir), "-U", "postgres", "-d", database, "-c", sql],
                             check=True, capture_output=True)
        return out.stdout

    def fresh_database(self):
        self.count += 1
        name = f"interop_{os.getpid()}_{self.count}"
        self.psql("postgres", f"CREATE DATABASE {name}")
        return name

    def url(self, database):
        return f"host={self.dir} port=5432 user=postgres dbname={database}"


_POSTGRES = None


def postgres() -> _Postgres:
    global _POSTGRES
    if _POSTGRES is None:
        _POSTGRES = _Postgres()
    return _POSTGRES


def sql_literal(v):
    if isinstance(v, (int, float)):
        return str(v)
    return "'" + str(v).replace("'", "''") + "'"


def db_execute(keyward, statement, params=()):
    """Runs one statement (`?` placeholders) on the server's database, as someone with access to
    the database would: the SQLite file, or the cluster's PostgreSQL database."""
    if keyward.database:
        parts = statement.split("?")
        assert len(parts) == len(params) + 1
        text = parts[0] + "".join(sql_literal(p) + rest for p, rest in zip(params, parts[1:]))
        postgres().psql(keyward.database, text)
        return
    db = sqlite3.connect(keyward.work_dir / "data" / "keyward.db", timeout=10)
    try:
        with db:
            db.execute(statement, params)
    finally:
        db.close()


# --------------------------------------------------------------------------------------------
# The server and the SDK client
# --------------------------------------------------------------------------------------------


@dataclass
class Keyward:
    url: str
    api_key: str
    instance: str
    work_dir: Path
    stderr_path: Path
    # On PostgreSQL: the database's name (else the store is `work_dir/data/keyward.db`).
    database: str | None = None

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def keyward(tmp_path_factory):
    """A real `keyward serve` on 127.0.0.1:<free port>, with a fresh data directory."""
    with serve_keyward(tmp_path_factory.mktemp("keyward-interop"), DEFAULT_CONFIG) as server:
        yield server


# Secrets the helpers below handled (payloads, DEKs), checked against every log line, exported
# audit line and audit row when each server stops.
SECRETS: set[bytes] = set()
# Whatever looks like an access token (a JWT) or a Keyward API key must not be logged either.
SECRET_SHAPES = [re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}"),
                 re.compile(rb"kw[0-9a-z]{6,}\.[A-Za-z0-9_-]{20,}")]


def remember_secret(value):
    """Records a base64 secret (or raw bytes) the server must never log or audit."""
    if isinstance(value, str):
        try:
            value = base64.b64decode(value, validate=True)
        except ValueError:
            value = value.encode()
    if len(value) >= 8:
        SECRETS.add(value)


def _assert_no_secrets(work: Path, data: Path, api_key: str | None, database: str | None = None,
                       logs=("stderr.log",)):
    """Scans the server's JSON logs, its JSON Lines audit export and every audit row."""
    haystacks = {"log": b"".join((work / log).read_bytes() for log in logs)}
    for line in haystacks["log"].splitlines():
        json.loads(line)  # every log line is JSON (--log-format json)
    if database:
        haystacks["audit rows"] = postgres().psql(
            # Two statements rather than a UNION: the tables' columns differ and change.
            database, "SELECT * FROM audit_events; SELECT * FROM audit_pending")
    haystacks["export"] = b"".join(p.read_bytes() for p in sorted(work.glob("audit.jsonl*")))
    db = data / "keyward.db"
    if db.exists():
        con = sqlite3.connect(db)
        rows = con.execute("SELECT * FROM audit_events").fetchall()
        con.close()
        haystacks["audit rows"] = b"\n".join(
            (v if isinstance(v, bytes) else str(v).encode()) for row in rows for v in row)
    needles = set(SECRETS) | ({api_key.encode()} if api_key else set())
    for where, hay in haystacks.items():
        for shape in SECRET_SHAPES:
            m = shape.search(hay)
            assert m is None, f"a token or API key shape in the {where}: {m.group(0)[:12]!r}..."
        for raw in needles:
            for form in (raw, base64.b64encode(raw), base64.b64encode(raw).rstrip(b"="),
                         raw.hex().encode(), raw.hex().upper().encode()):
                assert form not in hay, f"a secret the tests used is in the {where}"


@contextmanager
def serve_keyward(work: Path, config_text: str):
    """Starts `keyward serve` in `work` with `config_text` as its TOML configuration; stops it on
    exit. It logs at debug level as JSON and exports its audit trail to JSON Lines; on exit every
    log line, exported line and audit row is scanned for the secrets the suite used. With
    KEYWARD_INTEROP_STORE=postgres: the second node of a two-node cluster."""
    if ON_POSTGRES:
        with serve_cluster(work, config_text) as server:
            yield server
        return
    data = work / "data"
    config = work / "keyward.toml"
    config.write_text(config_text + f'\n[[audit.jsonl]]\nname = "interop"\n'
                                     f'path = "{work / "audit.jsonl"}"\n')
    stdout_path, stderr_path = work / "stdout.log", work / "stderr.log"
    with open(stdout_path, "w") as out, open(stderr_path, "w") as err:
        proc = subprocess.Popen(
            [KEYWARD_BIN, "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0",
             "--config", str(config), "--log-format", "json"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            env={**os.environ, "KEYWARD_LOG": "debug"},
        )
    server = None
    try:
        server = _wait_until_serving(proc, data / "bootstrap.json", stdout_path, stderr_path, work)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    _assert_no_secrets(work, data, server.api_key if server else None)


def _start_node(work: Path, name: str, config_text: str):
    """Starts one node of a cluster in `work/name`; returns (process, data dir, log paths)."""
    node = work / name
    node.mkdir(exist_ok=True)
    config = node / "keyward.toml"
    config.write_text(config_text)
    stdout_path, stderr_path = node / "stdout.log", node / "stderr.log"
    with open(stdout_path, "w") as out, open(stderr_path, "w") as err:
        proc = subprocess.Popen(
            [KEYWARD_BIN, "serve", "--data-dir", str(node / "data"), "--listen", "127.0.0.1:0",
             "--config", str(config), "--log-format", "json"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            env={**os.environ, "KEYWARD_LOG": "debug"},
        )
    deadline = time.monotonic() + START_TIMEOUT_SECS
    while True:
        if proc.poll() is not None:
            pytest.fail(f"node {name} exited: {stderr_path.read_text(errors='replace')}",
                        pytrace=False)
        assert time.monotonic() < deadline, f"node {name} was not serving"
        m = re.search(r"keyward: listening on (\S+)", stdout_path.read_text())
        if m:
            return proc, node / "data", m.group(1), stderr_path
        time.sleep(0.1)


@contextmanager
def serve_cluster(work: Path, config_text: str):
    """Two nodes on one fresh PostgreSQL database: node `a` bootstraps, node `b` joins with `a`'s
    keystore; the server handed out is `b` (with `a`'s administrator API key)."""
    import shutil
    pg = postgres()
    database = pg.fresh_database()
    text = (config_text + f'\n[[audit.jsonl]]\nname = "interop"\npath = "{work / "audit.jsonl"}"\n'
            + f'[store]\nbackend = "postgres"\nurl = "{pg.url(database)}"\npool_size = 8\n')
    procs = []
    server = None
    try:
        a, data_a, _, _ = _start_node(work, "a", text)
        procs.append(a)
        (work / "b" / "data").mkdir(parents=True)
        shutil.copy(data_a / "keystore.json", work / "b" / "data" / "keystore.json")
        b, data_b, url_b, stderr_b = _start_node(work, "b", text)
        procs.append(b)
        assert not (data_b / "bootstrap.json").exists(), "a joining node bootstraps again"
        boot = json.loads((data_a / "bootstrap.json").read_text())
        server = Keyward(url_b, boot["api_key"], boot["instance_id"], work, stderr_b, database)
        yield server
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
    _assert_no_secrets(work, work / "b" / "data", server.api_key if server else None, database,
                       logs=("a/stderr.log", "b/stderr.log"))


def _wait_until_serving(proc, bootstrap, stdout_path, stderr_path, work) -> Keyward:
    def fail(why):
        pytest.fail(f"keyward serve {why}\n--- stdout\n{stdout_path.read_text()}"
                    f"\n--- stderr\n{stderr_path.read_text(errors='replace')}", pytrace=False)

    deadline = time.monotonic() + START_TIMEOUT_SECS
    while True:
        if proc.poll() is not None:
            fail(f"exited with status {proc.returncode} before serving ({KEYWARD_BIN})")
        if time.monotonic() > deadline:
            fail(f"was not serving after {START_TIMEOUT_SECS} s")
        time.sleep(0.1)
        try:
            boot = json.loads(bootstrap.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            continue  # not written yet, or half written
        if f"keyward: listening on {boot['url']}" not in stdout_path.read_text():
            continue
        try:
            if requests.get(f"{boot['url']}/healthz", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            continue
    assert boot["url"].startswith("http://127.0.0.1:")
    return Keyward(boot["url"], boot["api_key"], boot["instance_id"], work, stderr_path)


@pytest.fixture(scope="session")
def sdk(keyward):
    """The public SDK, authenticating through Keyward's `/identity/token`."""
    return make_sdk(keyward)


def make_sdk(keyward) -> IbmKeyProtectApiV2:
    service = IbmKeyProtectApiV2(authenticator=IAMAuthenticator(keyward.api_key, url=keyward.url))
    service.set_service_url(keyward.url)
    return service


@pytest.fixture(autouse=True)
def _server_log_on_failure(request, keyward):
    """Prints what the server logged during a test that failed."""
    start = keyward.stderr_path.stat().st_size
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:
        with open(keyward.stderr_path, errors="replace") as f:
            f.seek(start)
            text = f.read()
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"\n--- keyward stderr during {request.node.nodeid}\n{text or '(nothing)'}")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def body(detailed_response):
    """The JSON body of an SDK response. The SDK core parses only `application/json`; for Key
    Protect's `application/vnd.ibm.kms.*+json` it hands back the raw `requests.Response`."""
    result = detailed_response.get_result()
    if isinstance(result, dict):
        return result
    assert isinstance(result, requests.Response), f"no body: {result!r}"
    return result.json()


def as_file(obj) -> io.BytesIO:
    """The SDK takes request bodies as binary streams."""
    return io.BytesIO(json.dumps(obj).encode())


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def create_key(sdk, keyward, name, *, extractable=False, **fields):
    """Creates a key with Prefer: return=representation; returns the key resource."""
    resource = {"type": KEY_MEDIA, "name": name, "extractable": extractable, **fields}
    if "payload" in fields:
        remember_secret(fields["payload"])
    r = sdk.create_key(
        bluemix_instance=keyward.instance,
        key_create_body=as_file({
            "metadata": {"collectionType": KEY_MEDIA, "collectionTotal": 1},
            "resources": [resource],
        }),
        prefer="return=representation",
    )
    assert r.get_status_code() == 201
    doc = body(r)
    assert doc["metadata"] == {"collectionType": KEY_MEDIA, "collectionTotal": 1}
    assert len(doc["resources"]) == 1
    return doc["resources"][0]


def get_key(sdk, keyward, key_id):
    r = sdk.get_key(id=key_id, bluemix_instance=keyward.instance)
    assert r.get_status_code() == 200
    return body(r)["resources"][0]


def wrap(sdk, keyward, key_id, plaintext=None, aad=None):
    req = {}
    if plaintext is not None:
        remember_secret(plaintext)
        req["plaintext"] = plaintext
    if aad is not None:
        req["aad"] = aad
    r = sdk.wrap_key(id=key_id, bluemix_instance=keyward.instance, key_action_wrap_body=as_file(req))
    assert r.get_status_code() == 200
    doc = body(r)
    if "plaintext" in doc:
        remember_secret(doc["plaintext"])
    return doc


def unwrap(sdk, keyward, key_id, ciphertext, aad=None):
    req = {"ciphertext": ciphertext}
    if aad is not None:
        req["aad"] = aad
    r = sdk.unwrap_key(id=key_id, bluemix_instance=keyward.instance, key_action_unwrap_body=as_file(req))
    assert r.get_status_code() == 200
    return body(r)


def rewrap(sdk, keyward, key_id, ciphertext, aad=None):
    req = {"ciphertext": ciphertext}
    if aad is not None:
        req["aad"] = aad
    r = sdk.rewrap_key(id=key_id, bluemix_instance=keyward.instance, key_action_rewrap_body=as_file(req))
    assert r.get_status_code() == 200
    return body(r)


def rotate(sdk, keyward, key_id):
    r = sdk.rotate_key(id=key_id, bluemix_instance=keyward.instance, key_action_rotate_body=as_file({}))
    assert r.get_status_code() == 204


def assert_kp_error(response, status):
    """`response` carries Key Protect's error collection for `status`; returns the first reason."""
    assert response.status_code == status, response.text
    doc = response.json()
    assert doc["metadata"]["collectionType"] == ERROR_MEDIA
    assert doc["metadata"]["collectionTotal"] == 1
    resource = doc["resources"][0]
    assert resource["errorMsg"]
    reason = resource["reasons"][0]
    assert reason["code"], doc
    assert reason["status"] == status
    assert reason["message"] and reason["moreInfo"]
    return reason


def expect_api_error(status, call):
    """Runs an SDK call that must fail with `status` and Key Protect's error body."""
    with pytest.raises(ApiException) as raised:
        call()
    assert raised.value.status_code == status, raised.value
    return assert_kp_error(raised.value.http_response, status)



def same_value(a, b) -> bool:
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str):
        try:  # dates: the model re-serializes them in its own format
            return datetime.fromisoformat(a.replace("Z", "+00:00")) == datetime.fromisoformat(
                b.replace("Z", "+00:00"))
        except ValueError:
            return False
    return False


def assert_model_keeps(original, modelled, path="$"):
    """Every field of the server's JSON survives the SDK model's from_dict/to_dict unchanged: the
    SDK knows each field's name and reads each value as the server meant it."""
    if isinstance(original, dict):
        assert isinstance(modelled, dict), f"{path}: the SDK model dropped an object"
        for name, value in original.items():
            assert name in modelled, f"{path}.{name}: a field the SDK model does not know"
            assert_model_keeps(value, modelled[name], f"{path}.{name}")
    elif isinstance(original, list):
        assert isinstance(modelled, list) and len(modelled) == len(original), path
        for i, (a, b) in enumerate(zip(original, modelled)):
            assert_model_keeps(a, b, f"{path}[{i}]")
    else:
        assert same_value(original, modelled), f"{path}: {original!r} came back as {modelled!r}"


def parse_with(model, doc):
    """Parses `doc` with an SDK model class and checks that its resources survive the model."""
    parsed = model.from_dict(doc)
    if "resources" in doc:
        assert_model_keeps(doc["resources"], parsed.to_dict()["resources"], "$.resources")
    else:
        assert_model_keeps(doc, parsed.to_dict())
    return parsed
