"""Layer 61: certificate names as an attack surface.

A {name} is [A-Za-z0-9._-], 1-128 characters, not starting with '.', and not 'list'.
Anything else (percent-encoded '/', '..', NUL, control characters, non-ASCII, overlong)
is answered 400 with a reason in Dynatrace's JSON error envelope, whatever the operation, and nothing is written
anywhere: the ssl and config directories, the gateway's TMPDIR and every folder above
the ssl directory stay as they were. Requests go over raw TLS sockets so that no client
normalizes the target ("..", "%2F") before the gateway sees it."""
import json
import os
import socket
import time
import uuid

from harness import (SLOW, GatewayTest, client_context, der_fingerprint, main,
                     read_http_response, tree_snapshot)

MARK = "pwned-" + uuid.uuid4().hex[:8]


def invalid_names():
    """Single path segments (as sent, percent-encoding included) that are not names."""
    return [
        "..", ".", "...", ".hidden", ".default-certificate.pem", ".." + MARK,
        "..%2F" + MARK, "..%2f..%2f" + MARK, "%2E%2E%2F" + MARK, "%2e%2e", "%2F" + MARK,
        "%2Ftmp%2F" + MARK, "..%5C" + MARK, MARK + "%5C..", MARK + "%00.p12", "%00",
        MARK + "%0a.p12", MARK + "%0D%0A", MARK + "%20x", MARK + "%09", "caf%C3%A9.p12",
        MARK + "%2F", MARK + "\\x", MARK + ";x", MARK + "+x", MARK + "*", MARK + "~",
        MARK + ":x", MARK + "%25", MARK + "@x", MARK + "=", MARK + ",x", MARK + "$", MARK + "!",
        "list", "p" * 129, "p" * 1000, "q" * 4000,
    ]


def raw_target_names():
    """Targets a parser may refuse before any routing: raw control bytes, non-ASCII."""
    return [MARK.encode() + b"\x00.p12", MARK.encode() + b"\x01", MARK.encode() + b"\x7f",
            "café".encode(), MARK.encode() + b"\xff\xfe"]


def structural_paths():
    """Rests under .../certificate/ whose first segment is a valid or invalid name and
    whose further segments are not an endpoint: 4xx, nothing written."""
    return ["../../" + MARK, "../" + MARK, "./" + MARK, "//" + MARK, "victim.p12/",
            "victim.p12/..", "other.p12/../" + MARK, MARK + "/..", "x/../../../" + MARK,
            "other.p12/activate/x", "other.p12/list/..", "..%2F../" + MARK]


class NameAttackTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.tmpdir = os.path.join(self.tmp, "tmpdir")
        os.makedirs(self.tmpdir)
        key, self.crt = self.pki.self_signed("v", "victim", kind="ec")
        self.p12 = self.pki.p12("victim.p12", key, self.crt, "pw")
        okey, ocrt = self.pki.self_signed("o", "other", kind="ec")
        self.other = self.pki.p12("other.p12", okey, ocrt, "pw")
        with open(self.p12, "rb") as f:
            self.body = f.read()
        self.g, self.tok = self.api_gateway(env={"TMPDIR": self.tmpdir})
        self.assertEqual(self.g.upload("other.p12", self.other, "pw", self.tok)[0], 200)
        self.assertEqual(self.g.upload("victim.p12", self.p12, "pw", self.tok)[0], 200)
        # logs, and the audit trail (which records the refusals) change; nothing else may
        self.skip_logs = (r"\.log$", r"^audit\.jsonl")
        self.before = tree_snapshot(self.tmp, skip=self.skip_logs)
        self.served = der_fingerprint(self.g.served_cert())

    def send(self, method, target, body=b"", extra=b""):
        """One raw request; returns (status, the whole answer)."""
        if isinstance(target, str):
            target = target.encode()
        head = (method.encode() + b" " + target + b" HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Api-Token " + self.tok.encode() + b"\r\nX-Password: pw\r\n"
                b"Content-Type: application/octet-stream\r\nConnection: close\r\n" + extra +
                b"Content-Length: %d\r\n\r\n" % len(body))
        resp = self.g.raw(head + body, timeout=10)
        self.assertTrue(resp.startswith(b"HTTP/1.1 "), "no HTTP answer to %r: %r"
                        % (target[:80], resp[:200]))
        return int(resp.split(b" ", 2)[1]), resp

    def ops(self, name):
        """(method, target, body) of every operation on a name."""
        base = self.g.api_path("").encode()
        name = name if isinstance(name, bytes) else name.encode()
        return [("PUT", base + name, self.body), ("DELETE", base + name, b""),
                ("POST", base + name + b"/activate", b""), ("GET", base + name + b"/list", b""),
                ("POST", base + name + b"/list", b"")]

    def assertNothingWritten(self):
        self.assertEqual(tree_snapshot(self.tmp, skip=self.skip_logs), self.before,
                         "something changed in the test folder (data dir, TMPDIR, ...)")
        self.assertEqual(os.listdir(self.tmpdir), [], "the gateway wrote into TMPDIR")
        # every folder from the ssl directory up to /
        d = os.path.realpath(self.g.ssl_dir)
        while True:
            for n in os.listdir(d):
                self.assertNotIn(MARK, n, "%s/%s appeared" % (d, n))
            if d == "/":
                break
            d = os.path.dirname(d)
        self.assertEqual(der_fingerprint(self.g.served_cert()), self.served)

    def test_invalid_names_400_nothing_written(self):
        for name in invalid_names():
            for method, target, body in self.ops(name):
                if name == "list" and method in ("PUT", "DELETE"):
                    continue  # .../certificate/list is the list endpoint: see the next test
                with self.subTest(name=name[:40], method=method):
                    status, resp = self.send(method, target, body)
                    self.assertEqual(status, 400, resp[:300])
                    self.assertIn(b"content-type: application/json", resp.lower())
                    err = json.loads(resp.split(b"\r\n\r\n", 1)[1])["error"]
                    self.assertEqual(err["code"], 400, resp[:300])
                    self.assertIn("name", err["message"].lower(),
                                  "the 400 does not say the name is the problem")
        self.assertNothingWritten()

    def test_list_is_not_a_name(self):
        # PUT/DELETE on .../certificate/list hit the list endpoint: a wrong method (405)
        # or an invalid name (400) are both refusals; nothing may be written or deleted
        for method in ("PUT", "DELETE"):
            with self.subTest(method):
                status, resp = self.send(method, self.g.api_path("list"),
                                         self.body if method == "PUT" else b"")
                self.assertIn(status, (400, 405), resp[:300])
        self.assertFalse(os.path.exists(os.path.join(self.g.ssl_dir, "list")))
        self.assertNothingWritten()

    def test_raw_bytes_in_target_refused(self):
        for name in raw_target_names():
            for method, target, body in self.ops(name):
                with self.subTest(name=name, method=method):
                    status, resp = self.send(method, target, body)
                    self.assertEqual(status, 400, resp[:300])
        self.assertNothingWritten()

    def test_structural_paths_refused(self):
        base = self.g.api_path("")
        for rest in structural_paths():
            for method in ("PUT", "DELETE", "POST", "GET"):
                with self.subTest(rest=rest, method=method):
                    status, resp = self.send(method, base + rest,
                                             self.body if method == "PUT" else b"")
                    self.assertTrue(400 <= status < 500, resp[:300])
        # absolute-form targets and a traversal in the environment part
        for target in ("https://evil.example" + base + "..%2F" + MARK,
                       "/e/..%2F..%2F" + MARK + "/api/v1/certificate/" + MARK,
                       "/e/myenv/../api/v1/certificate/" + MARK,
                       "/e/myenv/api/v1/certificate/../certificate/" + MARK + "/../.."):
            for method in ("PUT", "DELETE"):
                with self.subTest(target=target, method=method):
                    status, resp = self.send(method, target, self.body if method == "PUT" else b"")
                    self.assertTrue(400 <= status < 500, resp[:300])
        self.assertTrue(os.path.exists(os.path.join(self.g.ssl_dir, "other.p12")))
        self.assertTrue(os.path.exists(os.path.join(self.g.ssl_dir, "victim.p12")))
        self.assertNothingWritten()

    def test_valid_names_accepted_exactly(self):
        """The edges of the rule are names, stored under exactly that name."""
        names = ["A", "p" * 128, "x-y_z.9", "UPPER.P12", "a..b", "-dash", "_u", "9", "list.p12",
                 "alist", "LIST", "cert.p12.bak", "x.", "a-" * 64]
        for name in names:
            with self.subTest(name=name[:40]):
                before = set(os.listdir(self.g.ssl_dir))
                status, resp = self.send("PUT", self.g.api_path(name), self.body)
                self.assertEqual(status, 200, resp[:300])
                self.assertEqual(set(os.listdir(self.g.ssl_dir)) - before, {name})
                self.assertEqual(os.stat(os.path.join(self.g.ssl_dir, name)).st_mode & 0o777,
                                 0o600)
                # describe and activate reach it too
                status, resp = self.send("GET", self.g.api_path(name + "/list"))
                self.assertEqual(status, 200, resp[:300])
        self.assertEqual(os.listdir(self.tmpdir), [])
        self.assertNotIn(MARK, " ".join(os.listdir(os.path.dirname(self.g.ssl_dir))))
        # each one is listed (the active one with its description)
        st, _, body = self.g.call("GET", "list", self.tok)
        self.assertEqual(st, 200)
        listed = {e["name"] for e in json.loads(body)}
        self.assertTrue(set(names) <= listed, set(names) - listed)
        # and each one but the active one can be deleted
        for name in names[:-1]:
            with self.subTest(delete=name[:40]):
                status, resp = self.send("DELETE", self.g.api_path(name))
                self.assertEqual(status, 200, resp[:300])
                self.assertFalse(os.path.exists(os.path.join(self.g.ssl_dir, name)))

    def test_invalid_name_answered_before_the_body(self):
        """An invalid name answers at once: the body of a refused PUT is not waited for."""
        head = ("PUT %s HTTP/1.1\r\nHost: x\r\nAuthorization: Api-Token %s\r\n"
                "Content-Length: 5000\r\n\r\n" % (self.g.api_path("..%2F" + MARK), self.tok))
        t0 = time.time()
        with socket.create_connection(("127.0.0.1", self.g.port), timeout=5 * SLOW) as s:
            with client_context().wrap_socket(s) as t:
                t.sendall(head.encode())
                status, _, _ = read_http_response(t.makefile("rb"))
        self.assertEqual(status, 400)
        self.assertLess(time.time() - t0, 4 * SLOW)
        self.assertNothingWritten()


if __name__ == "__main__":
    main()
