#!/usr/bin/env python3
"""A bearer-token front for a registry, for tests: /v2/* needs
"Authorization: Bearer <token>", answered otherwise with a 401 and a
WWW-Authenticate challenge pointing at /token, which hands out the token
(optionally only with HTTP basic credentials). Authorised requests are proxied
to the real registry. Every request is logged to stderr.

usage: token-proxy.py LISTEN_PORT UPSTREAM_HOST:PORT [user:password]"""
import base64
import http.client
import http.server
import json
import sys
import urllib.parse

port, upstream = int(sys.argv[1]), sys.argv[2]
creds = sys.argv[3] if len(sys.argv) > 3 else None
TOKEN = "t0k3n-for-tests"


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("proxy: " + (fmt % args) + "\n")

    def reply(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        if u.path == "/token":
            q = urllib.parse.parse_qs(u.query)
            if q.get("service") != ["test-registry"]:
                return self.reply(400, b"bad service")
            if creds:
                want = "Basic " + base64.b64encode(creds.encode()).decode()
                if self.headers.get("Authorization") != want:
                    return self.reply(401, b"bad credentials")
            return self.reply(200, json.dumps({"token": TOKEN}).encode(),
                              [("Content-Type", "application/json")])
        if not u.path.startswith("/v2/"):
            return self.reply(404)
        if self.headers.get("Authorization") != "Bearer " + TOKEN:
            repo = u.path[4:].split("/manifests/")[0].split("/blobs/")[0]
            chal = (f'Bearer realm="http://127.0.0.1:{port}/token",'
                    f'service="test-registry",scope="repository:{repo}:pull"')
            return self.reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                              [("WWW-Authenticate", chal)])
        c = http.client.HTTPConnection(upstream)
        hdrs = {k: v for k, v in self.headers.items() if k.lower() in ("accept",)}
        c.request("GET", self.path, headers=hdrs)
        r = c.getresponse()
        body = r.read()
        keep = [(k, v) for k, v in r.getheaders()
                if k.lower() in ("content-type", "docker-content-digest", "location")]
        self.reply(r.status, body, keep)


http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
