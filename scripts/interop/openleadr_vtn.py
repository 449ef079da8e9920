#!/usr/bin/env python3
"""An upstream OpenADR 3.1 VTN we did not write, for gridmesh's VEN tests: OpenLEADR's
`openleadr-vtn` (crates.io, built by ./scripts/setup-peers) on Debian's PostgreSQL 15.

    openleadr_vtn.py --vtn BIN --workdir DIR

1. Starts a PostgreSQL cluster of its own in DIR/pg (as the `postgres` user when run as root,
   as PostgreSQL refuses root), on a free loopback port, with a database `openadr`.
2. Starts the VTN on a free port with its internal OAuth provider; it migrates the database.
3. Makes a business-logic (BL) user the way the VTN's own fixtures do, in SQL: scopes and a
   credential hashed with argon2id (argon2-cffi). Then the VEN's user and credential through the
   VTN's user API, as a DSO would for a community.
4. Prints one JSON line: {"url", "bl": {"client_id", "client_secret"}, "ven": {...}}.
5. Waits until its stdin closes (the test ended), then stops the VTN and PostgreSQL.

Everything goes to stderr but that line; a failure exits non-zero with what failed.
"""

import argparse
import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from argon2 import PasswordHasher

PG_BIN = "/usr/lib/postgresql/15/bin"
VEN_SCOPES = ["read_targets", "read_ven_objects", "write_reports", "write_subscriptions",
              "write_vens_ven"]
BL_SCOPES = ["read_all", "write_vens_bl", "write_programs", "write_events", "write_users"]


def log(*a):
    print("openleadr_vtn:", *a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(cmd):
    """The command, run as `postgres` when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def http(method, url, token=None, body=None, form=None):
    headers = {}
    data = None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{method} {url}: {e.code} {e.read().decode(errors='replace')}")


def token(url, client_id, client_secret):
    return http("POST", f"{url}/auth/token", form={
        "grant_type": "client_credentials", "client_id": client_id,
        "client_secret": client_secret})["access_token"]


def start_postgres(workdir):
    pg = os.path.join(workdir, "pg")
    data = os.path.join(pg, "data")
    os.makedirs(pg, exist_ok=True)
    if os.geteuid() == 0:
        # `postgres` must reach its directory through the test's private one.
        os.chmod(workdir, 0o711)
        shutil.chown(pg, "postgres", "postgres")
    run(as_postgres([f"{PG_BIN}/initdb", "-D", data, "--auth=trust", "-U", "postgres",
                     "--encoding=UTF8", "--no-sync"]))
    port = free_port()
    logfile = os.path.join(pg, "log")
    run(as_postgres([f"{PG_BIN}/pg_ctl", "-D", data, "-l", logfile, "-w", "-t", "60",
                     "-o", f"-p {port} -k {pg} -h 127.0.0.1 -c fsync=off", "start"]))
    run([f"{PG_BIN}/psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-q",
         "-c", "CREATE DATABASE openadr"])
    return data, port


def stop_postgres(data):
    subprocess.run(as_postgres([f"{PG_BIN}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"]),
                   capture_output=True)


def psql(port, sql):
    return run([f"{PG_BIN}/psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-q",
                "-v", "ON_ERROR_STOP=1", "-d", "openadr", "-c", sql])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vtn", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    if not os.access(a.vtn, os.X_OK):
        raise SystemExit(f"no openleadr-vtn at {a.vtn}: run ./scripts/setup-peers")
    data, pg_port = start_postgres(a.workdir)
    vtn = None
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = dict(os.environ,
                   DATABASE_URL=f"postgres://postgres@127.0.0.1:{pg_port}/openadr",
                   PORT=str(port), OAUTH_TYPE="INTERNAL",
                   OAUTH_BASE64_SECRET=base64.b64encode(secrets.token_bytes(32)).decode(),
                   OAUTH_TOKEN_URL=f"{url}/auth/token",
                   RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        vtn_log = open(os.path.join(a.workdir, "vtn.log"), "w")
        vtn = subprocess.Popen([a.vtn], env=env, stdout=vtn_log, stderr=vtn_log,
                               stdin=subprocess.DEVNULL)
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                if vtn.poll() is not None or time.time() > deadline:
                    vtn_log.flush()
                    raise SystemExit("the VTN did not start: " + open(vtn_log.name).read()[-2000:])
                time.sleep(0.2)
        # The migrations ran at start: the BL user, as the VTN's fixtures make theirs.
        bl_secret = secrets.token_hex(16)
        hashed = PasswordHasher().hash(bl_secret)
        scopes = "{" + ",".join(BL_SCOPES) + "}"
        psql(pg_port,
             "INSERT INTO \"user\" (id, reference, description, scopes, created, modified) "
             f"VALUES ('dso-bl', 'dso-bl', 'the DSO', '{scopes}', now(), now()); "
             "INSERT INTO user_credentials (user_id, client_id, client_secret) "
             f"VALUES ('dso-bl', 'dso-bl', '{hashed}')")
        bl = token(url, "dso-bl", bl_secret)
        user = http("POST", f"{url}/users", bl, {
            "reference": "community", "description": "a gridmesh community",
            "scope": VEN_SCOPES})
        ven = {"client_id": "community-" + secrets.token_hex(4),
               "client_secret": secrets.token_hex(16)}
        http("POST", f"{url}/users/{user['id']}", bl, ven)
        token(url, ven["client_id"], ven["client_secret"])
        print(json.dumps({"url": url,
                          "bl": {"client_id": "dso-bl", "client_secret": bl_secret},
                          "ven": ven}), flush=True)
        sys.stdin.read()
    finally:
        if vtn is not None:
            vtn.terminate()
            try:
                vtn.wait(10)
            except subprocess.TimeoutExpired:
                vtn.kill()
        stop_postgres(data)


if __name__ == "__main__":
    main()
