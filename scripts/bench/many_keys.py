"""Helpers of scripts/bench/many_keys.sh, over plain HTTP/1.1 keep-alive connections.

ids URL TOKEN INSTANCE OUT              every key id of the instance, one "id -" line each
sample URL TOKEN INSTANCE IDS N OUT     wraps one DEK under N keys picked at random: "id ciphertext"
latency URL TOKEN INSTANCE N REPS       median ms of list, last page, HEAD, search and sort (JSON)
listings URL TOKEN INSTANCE N REPS      the same and every sort, filter, short and alias search,
                                        registration and audit listing (JSON; listings.sh)
"""
import base64, http.client, json, os, random, statistics, sys, threading, time
from urllib.parse import urlparse


def conn(url):
    u = urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=120)


def call(c, method, path, token, instance, body=None):
    h = {"Authorization": f"Bearer {token}", "bluemix-instance": instance}
    if body is not None:
        h["Content-Type"] = "application/vnd.ibm.kms.key_action+json"
        body = json.dumps(body)
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: {r.status} {data[:200]!r}")
    return r, data


def ids(url, token, instance, out):
    c, offset, n = conn(url), 0, 0
    with open(out, "w") as f:
        while True:
            _, data = call(c, "GET", f"/api/v2/keys?limit=5000&offset={offset}", token, instance)
            keys = json.loads(data).get("resources", [])
            for k in keys:
                f.write(f"{k['id']} -\n")
            n += len(keys)
            offset += len(keys)
            if len(keys) < 5000:
                break
    print(n)


def sample(url, token, instance, ids_file, n, out):
    all_ids = [l.split()[0] for l in open(ids_file)]
    chosen = random.sample(all_ids, min(int(n), len(all_ids)))
    dek = base64.b64encode(os.urandom(32)).decode()
    lines, lock = [], threading.Lock()

    def work(part):
        c = conn(url)
        got = []
        for kid in part:
            _, data = call(c, "POST", f"/api/v2/keys/{kid}/actions/wrap", token, instance,
                           {"plaintext": dek, "aad": ["tenant-a"]})
            got.append(f"{kid} {json.loads(data)['ciphertext']}\n")
        with lock:
            lines.extend(got)

    threads = [threading.Thread(target=work, args=(chosen[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    open(out, "w").writelines(lines)


def latency(url, token, instance, n, reps):
    n, reps = int(n), int(reps)
    c = conn(url)
    last = max(n - 200, 0)
    probe = f"key-0-{max(n // 4, 1)}"
    cases = {
        "list 200": ("GET", "/api/v2/keys?limit=200"),
        "list last page": ("GET", f"/api/v2/keys?limit=200&offset={last}"),
        "HEAD total": ("HEAD", "/api/v2/keys"),
        "search exact name": ("GET", f"/api/v2/keys?search=exact:name:{probe}"),
        "search name contains": ("GET", f"/api/v2/keys?search=name:{probe[4:]}"),
        "sort -lastUpdateDate": ("GET", "/api/v2/keys?limit=200&sort=-lastUpdateDate"),
    }
    res = {}
    for name, (method, path) in cases.items():
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            call(c, method, path, token, instance)
            times.append((time.perf_counter() - t) * 1000)
        res[name] = statistics.median(times)
    print(json.dumps(res))


def listings(url, token, instance, n, reps):
    """Every listing issue 19 asks to be flat, each the median of REPS requests (ms)."""
    n, reps = int(n), int(reps)
    c = conn(url)
    last = max(n - 200, 0)
    probe = f"key-0-{max(n // 4, 1)}"
    _, data = call(c, "GET", f"/api/v2/keys?search=exact:name:{probe}", token, instance)
    probe_id = json.loads(data)["resources"][0]["id"]
    cases = {
        "list 200": "/api/v2/keys?limit=200",
        "last page": f"/api/v2/keys?limit=200&offset={last}",
        "middle page": f"/api/v2/keys?limit=200&offset={n // 2}",
        "HEAD total": ("HEAD", "/api/v2/keys"),
        "state filter": "/api/v2/keys?limit=200&state=1",
        "state filter last page": f"/api/v2/keys?limit=200&state=1&offset={last}",
        "extractable filter": "/api/v2/keys?limit=200&filter=extractable=false",
        "search exact name": f"/api/v2/keys?search=exact:name:{probe}",
        "search contains": f"/api/v2/keys?search={probe[4:]}",
        "search name contains": f"/api/v2/keys?search=name:{probe[4:]}",
        "search alias contains": f"/api/v2/keys?search=alias:{probe[4:]}",
        "search 2 chars": "/api/v2/keys?search=zz",
        "search contains, not": f"/api/v2/keys?limit=200&search=not:{probe[4:]}",
    }
    for field in ["id", "state", "extractable", "imported", "creationDate", "lastUpdateDate",
                  "lastRotateDate", "deletionDate", "expirationDate"]:
        cases[f"sort {field}"] = f"/api/v2/keys?limit=200&sort={field}"
        cases[f"sort -{field}"] = f"/api/v2/keys?limit=200&sort=-{field}"
    cases["sort -lastUpdateDate last page"] = f"/api/v2/keys?limit=200&sort=-lastUpdateDate&offset={last}"
    cases.update({
        "registrations of a key": f"/api/v2/keys/{probe_id}/registrations",
        "registrations": "/api/v2/keys/registrations?limit=200",
        "audit events": "/api/v2/audit_events?limit=200",
        "audit events of a key": f"/api/v2/audit_events?keyId={probe_id}",
        "audit events by action": "/api/v2/audit_events?action=kms.secrets.create&limit=200",
        "audit events last page": f"/api/v2/audit_events?limit=200&offset={last}",
    })
    res = {}
    for name, case in cases.items():
        method, path = case if isinstance(case, tuple) else ("GET", case)
        call(c, method, path, token, instance)  # warm-up: statement caches, pages
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            call(c, method, path, token, instance)
            times.append((time.perf_counter() - t) * 1000)
        res[name] = round(statistics.median(times), 2)
    print(json.dumps(res))


if __name__ == "__main__":
    {"ids": ids, "sample": sample, "latency": latency, "listings": listings}[sys.argv[1]](*sys.argv[2:])
