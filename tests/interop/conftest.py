"""A real `keyward serve` for the interop tests, and a Key Protect SDK client pointed at it."""

import json
import os
import subprocess
import tempfile
import time

import pytest
import requests
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
from keyprotect import IbmKeyProtectApiV2

KEYWARD_BIN = os.environ.get("KEYWARD_BIN", os.path.join(os.path.dirname(__file__), "../../target/debug/keyward"))


class Server:
    def __init__(self, data_dir, proc, log_path):
        self.data_dir = data_dir
        self.proc = proc
        self.log_path = log_path
        boot = json.load(open(os.path.join(data_dir, "bootstrap.json")))
        self.url = boot["url"]
        self.api_key = boot["api_key"]
        self.instance = boot["instance_id"]

    def log(self):
        return open(self.log_path).read()


@pytest.fixture(scope="session")
def server():
    work = tempfile.mkdtemp(prefix="keyward-interop-")
    data = os.path.join(work, "data")
    conf = os.path.join(work, "keyward.toml")
    with open(conf, "w") as f:
        f.write("[lifecycle]\nmin_rotation_interval_secs = 0\nenable_after_disable_secs = 0\n")
    log_path = os.path.join(work, "server.log")
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [KEYWARD_BIN, "serve", "--data-dir", data, "--listen", "127.0.0.1:0", "--config", conf],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    deadline = time.time() + 60
    while True:
        line = proc.stdout.readline()
        if line.startswith("keyward: listening on "):
            break
        if not line and proc.poll() is not None or time.time() > deadline:
            raise RuntimeError("keyward did not start: " + open(log_path).read())
    srv = Server(data, proc, log_path)
    assert requests.get(srv.url + "/healthz", timeout=5).status_code == 200
    yield srv
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def kp(server):
    """The public SDK, authenticating through Keyward's IAM-compatible token endpoint."""
    service = IbmKeyProtectApiV2(authenticator=IAMAuthenticator(server.api_key, url=server.url))
    service.set_service_url(server.url)
    return service
