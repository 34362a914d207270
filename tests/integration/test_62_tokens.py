"""Layer 62: API tokens for the certificate API.

`certgate token create|list|revoke` against the real gateway: the token format, a store
that keeps no secret, Authorization: Api-Token and the api-token query parameter, the
scope ActiveGateCertManagement, environments, revocation and creation while running,
malformed headers, Dynatrace's error envelope, and authentication before anything
reveals whether a certificate file exists."""
import json
import os
import re
import shlex
import socket
import urllib.parse

from harness import (ENV, SCOPE, SLOW, TOKEN_RE, GatewayTest, certgate, client_context,
                     main, read_http_response)


class TokenTest(GatewayTest):
    def setUp(self):
        super().setUp()
        key, self.crt = self.pki.self_signed("t", "tok-host", kind="ec")
        self.p12 = self.pki.p12("t.p12", key, self.crt, "pw")

    def gateway(self, name="gw", **kw):
        """Gateways without the throttling of failed authentications: these tests make
        many refused requests on purpose and must see each refusal (test_65 tests the
        throttling)."""
        g = super().gateway(name, **kw)
        g.write_sections(certgate="auth-failures-per-minute = 0\n")
        return g

    def assertEnvelope(self, resp, code):
        status, headers, body = resp
        self.assertEqual(status, code, body)
        self.assertTrue(headers.get("content-type", "").startswith("application/json"),
                        headers.get("content-type"))
        j = json.loads(body)
        self.assertEqual(set(j), {"error"}, j)
        self.assertEqual(j["error"]["code"], code)
        self.assertIsInstance(j["error"]["message"], str)
        self.assertTrue(j["error"]["message"].strip())
        return j["error"]["message"]

    def every_endpoint(self):
        """(method, rest, body, headers) of each API call."""
        with open(self.p12, "rb") as f:
            p12 = f.read()
        pw = {"X-Password": "pw"}
        return [("GET", "list", None, {}), ("PUT", "t.p12", p12, pw),
                ("DELETE", "t.p12", None, {}), ("POST", "t.p12/activate", None, pw),
                ("GET", "t.p12/list", None, pw), ("POST", "t.p12/list", None, pw)]

    def test_token_format_and_store_keeps_no_secret(self):
        g = self.gateway()
        tok = g.token(name="ci pipeline")
        self.assertRegex(tok, TOKEN_RE)
        tid, secret = tok.rsplit(".", 1)
        store = os.path.join(g.data_dir, "config", "tokens.json")
        self.assertEqual(os.stat(store).st_mode & 0o777, 0o600)
        with open(store) as f:
            text = f.read()
        self.assertIn(tid, text)
        # neither the secret part nor any long piece of it is anywhere under the data dir
        for root, _, files in os.walk(g.data_dir):
            for n in files:
                with open(os.path.join(root, n), "rb") as f:
                    data = f.read()
                for i in range(0, len(secret) - 16 + 1, 8):
                    self.assertNotIn(secret[i:i + 16].encode(), data, "secret in %s" % n)
        listing = certgate("token", "list", "--data-dir", g.data_dir).stdout
        self.assertIn(tid, listing)
        self.assertIn("ci pipeline", listing)
        self.assertIn(SCOPE, listing)
        self.assertIn(ENV, listing)
        self.assertNotIn(secret[:16], listing)
        # two tokens differ
        self.assertNotEqual(g.token(), tok)

    def test_header_and_query_parameter(self):
        g = self.gateway()
        tok = g.token()
        g.start()
        self.assertEqual(g.call("GET", "list", tok)[0], 200)
        q = "list?api-token=" + urllib.parse.quote(tok)
        status, _, body = g.call("GET", q)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), [])
        # the query parameter works for a write, too
        with open(self.p12, "rb") as f:
            st, _, body = g.call("PUT", "t.p12?api-token=" + tok, body=f.read(),
                                 headers={"X-Password": "pw"})
        self.assertEqual(st, 200, body)
        self.assertServes(g, self.crt)

    def test_query_token_not_logged(self):
        """The api-token query parameter is a secret: neither the access log nor the log
        keeps it (nor its secret part)."""
        g = self.gateway()
        tok = g.token()
        g.start()
        for rest in ("list?api-token=" + tok, "list?x=1&api-token=" + tok + "&y=2",
                     "t.p12/list?api-token=" + tok):
            g.call("GET", rest, headers={"X-Password": "pw"})
        g.call("GET", "list", tok)
        self.assertEqual(g.stop(), 0)  # flushes the access log
        secret = tok.rsplit(".", 1)[1]
        for path in (g.access_path, g.log_path):
            with open(path) as f:
                text = f.read()
            self.assertNotIn(secret[:16], text, "the token is in %s" % path)
        with open(g.access_path) as f:
            self.assertGreaterEqual(f.read().count("/list"), 4, "requests not in the access log")

    def test_missing_token_401_on_every_endpoint(self):
        g = self.gateway()
        g.token()
        g.start()
        before = self.state(g)
        for method, rest, body, h in self.every_endpoint():
            with self.subTest(method=method, rest=rest):
                self.assertEnvelope(g.call(method, rest, None, body=body, headers=h), 401)
                self.assertEnvelope(g.call(method, rest + "?api-token=", None, body=body,
                                           headers=h), 401)
        self.assertEqual(self.state(g), before)

    def test_unknown_token_401(self):
        g = self.gateway()
        tok = g.token()
        g.start()
        tid, secret = tok.rsplit(".", 1)
        forged = tid + "." + ("A" * 64)
        other_store = self.gateway("elsewhere")
        foreign = other_store.token()  # valid format, made for another gateway
        for what, t in (("forged secret", forged), ("ID only", tid), ("truncated", tok[:-1]),
                        ("longer", tok + "A"), ("lower case", tok.lower()),
                        ("another store's", foreign), ("garbage", "123abc")):
            with self.subTest(what):
                for method, rest, body, h in self.every_endpoint():
                    self.assertEnvelope(g.call(method, rest, t, body=body, headers=h), 401)
                self.assertEnvelope(g.call("GET", "list?api-token=" + urllib.parse.quote(t)),
                                    401)

    def test_token_of_other_environment_401(self):
        g = self.gateway()
        mine = g.token(env=ENV)
        theirs = g.token(env="otherenv")
        g.start()
        before = self.state(g)
        for method, rest, body, h in self.every_endpoint():
            with self.subTest(method=method, rest=rest):
                self.assertEnvelope(g.call(method, rest, theirs, body=body, headers=h), 401)
                self.assertEnvelope(g.call(method, rest, mine, body=body, headers=h,
                                           env="otherenv"), 401)
        self.assertEqual(self.state(g), before)
        self.assertEqual(g.call("GET", "list", theirs, env="otherenv")[0], 200)
        self.assertEqual(g.call("GET", "list", mine)[0], 200)
        # an environment ID that only starts like the token's
        self.assertEnvelope(g.call("GET", "list", mine, env=ENV + "x"), 401)
        self.assertEnvelope(g.call("GET", "list", mine, env=ENV[:-1]), 401)

    def test_token_without_scope_403(self):
        g = self.gateway()
        other = g.token(scopes=("DataExport",))
        both = g.token(scopes=("DataExport", SCOPE))
        lower = g.token(scopes=(SCOPE.lower(),))
        g.start()
        before = self.state(g)
        for t in (other, lower):
            for method, rest, body, h in self.every_endpoint():
                with self.subTest(token=t[:20], method=method, rest=rest):
                    self.assertEnvelope(g.call(method, rest, t, body=body, headers=h), 403)
        self.assertEqual(self.state(g), before)
        status, _, body = g.upload("t.p12", self.p12, "pw", both)
        self.assertEqual(status, 200, body)
        self.assertServes(g, self.crt)

    def test_malformed_authorization_401(self):
        g = self.gateway()
        tok = g.token()
        g.start()
        variants = ["Bearer " + tok, "Api-Token", "Api-Token ", tok, "Api-Token " + tok + " x",
                    "Api-Token:" + tok, "Api-Token=" + tok, "Basic " + tok, "Api-Token" + tok,
                    "Api-Token ,", "Api-Token-" + tok, ""]
        for v in variants:
            with self.subTest(header=v[:30]):
                self.assertEnvelope(g.call("GET", "list", headers={"Authorization": v}), 401)
                # a malformed header is not rescued by a valid query parameter
                self.assertEnvelope(g.call("GET", "list?api-token=" + tok,
                                           headers={"Authorization": v}), 401)

    def test_revoke_while_running_next_request_401(self):
        g = self.gateway()
        tok = g.token(name="doomed")
        keep = g.token(name="kept")
        g.start()
        conn = g.connect()
        self.assertEqual(g.call("GET", "list", tok, conn=conn)[0], 200)
        tid = tok.rsplit(".", 1)[0]
        listing = certgate("token", "list", "--data-dir", g.data_dir).stdout
        self.assertIn(tid, listing)
        certgate("token", "revoke", "--data-dir", g.data_dir, tid)
        self.assertNotIn(tid, certgate("token", "list", "--data-dir", g.data_dir).stdout)
        # the very next request, on the same keep-alive connection, and on a new one
        self.assertEnvelope(g.call("GET", "list", tok, conn=conn), 401)
        self.assertEnvelope(g.call("GET", "list", tok), 401)
        self.assertEnvelope(g.upload("t.p12", self.p12, "pw", tok), 401)
        self.assertEqual(g.call("GET", "list", keep, conn=conn)[0], 200)
        conn.close()
        # revoking again, or an unknown ID, fails and says so
        p = certgate("token", "revoke", "--data-dir", g.data_dir, tid, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertTrue(p.stderr.strip())
        p = certgate("token", "revoke", "--data-dir", g.data_dir, "dt0c01." + "B" * 24,
                     check=False)
        self.assertNotEqual(p.returncode, 0)

    def test_no_token_log_shows_working_create_command(self):
        g = self.gateway()
        g.start()
        self.assertEnvelope(g.call("GET", "list"), 401)
        m = re.search(r"(certgate token create [^\n]*)", g.logs())
        self.assertTrue(m, "no `certgate token create` command in the log:\n" + g.logs())
        cmd = m.group(1).strip().rstrip(".")
        self.assertIn("--data-dir " + g.data_dir, cmd)
        self.assertIn("--scope " + SCOPE, cmd)
        # run it as an operator would: the environment placeholder filled in
        argv = shlex.split(re.sub(r"<[^>]*>", ENV, cmd))
        self.assertEqual(argv[:3], ["certgate", "token", "create"])
        tok = certgate(*argv[1:]).stdout.strip()
        self.assertRegex(tok, TOKEN_RE)
        # it works at once, without a restart
        self.assertEqual(g.call("GET", "list", tok)[0], 200)
        st, _, body = g.upload("t.p12", self.p12, "pw", tok)
        self.assertEqual(st, 200, body)
        # with a token, the next start does not ask for one
        g.stop()
        g.start()
        self.assertNotIn("certgate token create", g.logs())

    def test_authentication_before_existence_is_revealed(self):
        g = self.gateway()
        tok = g.token()
        noscope = g.token(scopes=("DataExport",))
        otherenv = g.token(env="otherenv")
        g.start()
        st, _, body = g.upload("exists.p12", self.p12, "pw", tok)
        self.assertEqual(st, 200, body)
        st, _, body = g.upload("inactive.p12", self.p12, "pw", tok)
        self.assertEqual(st, 200, body)
        before = self.state(g)
        for who, t in (("no token", None), ("no scope", noscope), ("other env", otherenv),
                       ("unknown", "dt0c01." + "C" * 24 + "." + "D" * 64)):
            for method, sub, h in (("DELETE", "", {}), ("POST", "/activate", {"X-Password": "pw"}),
                                   ("GET", "/list", {"X-Password": "pw"}),
                                   ("POST", "/list", {"X-Password": "pw"})):
                with self.subTest(who=who, method=method, sub=sub):
                    answers = [g.call(method, n + sub, t, headers=h)
                               for n in ("exists.p12", "inactive.p12", "missing.p12")]
                    self.assertIn(answers[0][0], (401, 403))
                    for a in answers:
                        self.assertEqual((a[0], a[2]), (answers[0][0], answers[0][2]),
                                         "the answer differs between files that exist and not")
        self.assertEqual(self.state(g), before)

    def test_unauthenticated_large_upload_401_without_body(self):
        """Expect: 100-continue with a body over the limit and no token: 401 (not 413, not
        100 Continue), and the body is never asked for."""
        g = self.gateway()
        g.token()
        g.start()
        for auth in ("", "Authorization: Api-Token dt0c01.%s.%s\r\n" % ("E" * 24, "F" * 64)):
            with self.subTest(auth=bool(auth)):
                req = ("PUT %s HTTP/1.1\r\nHost: x\r\n%sX-Password: pw\r\nContent-Length: %d\r\n"
                       "Expect: 100-continue\r\n\r\n" % (g.api_path("big.p12"), auth, 8 << 20))
                with socket.create_connection(("127.0.0.1", g.port), timeout=5 * SLOW) as s:
                    with client_context().wrap_socket(s) as t:
                        t.sendall(req.encode())
                        status, headers, body = read_http_response(t.makefile("rb"))
                self.assertEqual(status, 401, body)
                self.assertEqual(json.loads(body)["error"]["code"], 401)

    def test_token_cli_refusals(self):
        d = os.path.join(self.tmp, "cli")
        for args in (["--environment", ENV], ["--scope", SCOPE],
                     ["--environment", "bad env", "--scope", SCOPE],
                     ["--environment", "x" * 65, "--scope", SCOPE]):
            with self.subTest(args=args):
                p = certgate("token", "create", "--data-dir", d, *args, check=False)
                self.assertNotEqual(p.returncode, 0)
                self.assertEqual(p.stdout.strip(), "", "a token was printed on a refusal")
                self.assertTrue(p.stderr.strip())
        p = certgate("token", "list", "--data-dir", d, check=False)
        self.assertNotRegex(p.stdout, r"dt0c01\.")


if __name__ == "__main__":
    main()
