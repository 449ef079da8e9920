#!/usr/bin/env python3
"""Checks a running node's answers against its own OpenAPI document, with `jsonschema`.

  openapi_check.py BASE_URL APP_JS [PATH ...]

1. Every API path the dashboard script APP_JS uses (`/v1/...` in its source) must be a path of the
   document (templates such as `/v1/market/slots/{slot}` match concrete paths).
2. Each PATH (default: those of the script, with `${...}` parts filled in from the node's own
   answers) is fetched with GET; the response's status must be documented for the operation and
   its body must validate against the documented schema (JSON bodies by JSON Schema 2020-12, the
   dialect of OpenAPI 3.1; SVG bodies must be SVG documents).

Prints one line per check and exits 1 on the first class of failure (all failures are listed).
"""
import json
import re
import sys
import urllib.error
import urllib.request

from jsonschema import Draft202012Validator


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers.get("content-type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read()


def template_of(doc, path):
    """The document's path template matching a concrete path (without its query)."""
    bare = path.split("?")[0]
    for t in doc["paths"]:
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", re.escape(t).replace(r"\{", "{").replace(r"\}", "}")) + "$"
        if re.match(pattern, bare):
            return t
    return None


def script_paths(app_js):
    source = open(app_js, encoding="utf-8").read()
    found = set()
    for m in re.finditer(r"(/v1/[A-Za-z0-9_./?=&${}-]*)", source):
        found.add(m.group(1).rstrip(".,"))
    return sorted(found)


def main():
    base, app_js, *paths = sys.argv[1:]
    doc = json.loads(get(base + "/v1/openapi.json")[2])
    failures = []

    used = script_paths(app_js)
    for p in used:
        concrete = re.sub(r"\$\{[^}]*\}", "1", p)
        if template_of(doc, concrete) is None:
            failures.append(f"the page uses {p}, which the document does not list")
        else:
            print(f"documented: {p}")

    if not paths:
        market = json.loads(get(base + "/v1/market")[2])
        rows = json.loads(get(base + "/v1/market/history?slots=96")[2])["rows"]
        cleared = str(rows[-1]["slot"]) if rows else str(market["current_slot"])
        fill = {"m.next_open_slot": str(market["next_open_slot"]), "slot": cleared}
        for p in used:
            if p == "/v1/events":
                continue  # a WebSocket: checked by the Rust tests
            paths.append(re.sub(r"\$\{([^}]*)\}", lambda m: fill.get(m.group(1), "1"), p))
        paths.append("/v1/market/history?slots=0")  # an error answer is documented too

    for p in paths:
        t = template_of(doc, p)
        if t is None:
            failures.append(f"{p}: not in the document")
            continue
        status, ctype, body = get(base + p)
        op = doc["paths"][t].get("get")
        responses = (op or {}).get("responses", {})
        spec = responses.get(str(status))
        if spec is None:
            failures.append(f"{p}: status {status} is not documented for GET {t}")
            continue
        content = spec.get("content", {})
        if ctype.startswith("image/svg+xml"):
            if "image/svg+xml" not in content or not body.lstrip().startswith(b"<svg"):
                failures.append(f"{p}: an SVG answer the document does not describe")
            else:
                print(f"ok {status} svg: {p}")
            continue
        schema = content.get("application/json", {}).get("schema")
        if schema is None:
            failures.append(f"{p}: no JSON schema for status {status} ({ctype})")
            continue
        root = dict(schema)
        root["components"] = doc.get("components", {})
        errors = sorted(Draft202012Validator(root).iter_errors(json.loads(body)), key=str)
        for e in errors[:5]:
            failures.append(f"{p}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
        if not errors:
            print(f"ok {status} json: {p}")

    for f in failures:
        print("FAIL", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
