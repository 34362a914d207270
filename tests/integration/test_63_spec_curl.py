"""Layer 63: the spec's commands, verbatim, against the real gateway.

Every curl command of "Managing certificates via REST API" and the openssl commands of
"Create a certificate file for testing" run through bash exactly as the spec prints
them, with these substitutions and additions only:
  * host myActiveGate -> localhost, port 9999 -> the test port, token 123abc -> a real
    token; the environment ID stays myEnvironmentId (the token is made for it);
  * the {placeholders} of the generic upload command are filled in;
  * curl gets, right after `curl`: `--resolve localhost:PORT:127.0.0.1` (the gateway
    listens on IPv4 loopback), `-sS -D HEADERS -o BODY -w %{http_code}` (to observe the
    answer) and `--cacert BUNDLE` — never -k: BUNDLE holds the gateway's default
    self-signed certificate (its SAN has localhost) and the certificates made by the
    spec's openssl commands (CN=localhost), so every call verifies the server;
  * the openssl commands get -passout/-passin so that they need no terminal.
When the spec file is at hand (CERTGATE_SPEC, default /work/shared/spec/...), the test
also checks that each command below is in it, character for character modulo spaces."""
import json
import os
import re
import shutil
import subprocess

from harness import (SLOW, GatewayTest, cert_fingerprint, der_fingerprint, java_descriptions,
                     main)

TZ = "America/New_York"
ENV_ID = "myEnvironmentId"
SPEC = os.environ.get("CERTGATE_SPEC",
                      "/work/shared/spec/activegate-custom-ssl-certificate.md")

# ----- the spec's commands, as printed -----
UPLOAD_TEMPLATE = ('curl https://{address of ActiveGate}:{port}/e/{environment ID}/api/v1/'
                   'certificate/{certificate file name} -H"Authorization: Api-Token {token}" '
                   '-H"X-Password: {password}" -H"Content-Type: application/octet-stream" '
                   '-T {path to certificate file}')
UPLOAD_EXAMPLE = ('curl https://myActiveGate:9999/e/myEnvironmentId/api/v1/certificate/cert.p12 \\\n'
                  '-H "Authorization: Api-Token 123abc" \\\n'
                  '-H "X-Password: myPassword" \\\n'
                  '-H "Content-Type: application/octet-stream" \\\n'
                  '-T cert.p12')
DELETE = ('curl -XDELETE https://myActiveGate:9999/e/myEnvironmentId/api/v1/certificate/cert.p12 '
          '-H"Authorization: Api-Token 123abc"')
ACTIVATE_JSON = ('curl -XPOST https://myActiveGate:9999/e/myEnvironmentId/api/v1/certificate/'
                 'cert.p12/activate -H"Authorization: Api-Token 123abc" '
                 '-d"{\\"password\\":\\"pass\\"}"')
ACTIVATE_HEADER = ('curl -XPOST https://myActiveGate:9999/e/myEnvironmentId/api/v1/certificate/'
                   'cert.p12/activate -H"Authorization: Api-Token 123abc" -H"X-Password: pass"')
LIST = ('curl https://myActiveGate:9999/e/myEnvironmentId/api/v1/certificate/list '
        '-H"Authorization: Api-Token 123abc"')
DESCRIBE_GET = ('curl https://myActiveGate:9999/e/myEnvironmentId/api/v1/certificate/cert.p12/list '
                '-H"Authorization: Api-Token 123abc" -H"X-Password: pass"')
DESCRIBE_POST = ('curl -XPOST https://myActiveGate:9999/e/myEnvironmentId/api/v1/certificate/'
                 'cert.p12/list -H"Authorization: Api-Token 123abc" -H"X-Password: pass"')
DESCRIBE_POST_JSON = ('curl -XPOST https://myActiveGate:9999/e/myEnvironmentId/api/v1/certificate/'
                      'cert.p12/list -H"Authorization: Api-Token 123abc" '
                      '-d"{\\"password\\":\\"pass\\"}"')
DESCRIBES = (DESCRIBE_GET, DESCRIBE_POST, DESCRIBE_POST_JSON)
GEN = 'openssl req -x509 -newkey rsa:4096 -keyout key.pem -out cert.pem -days 365 -subj "/CN=localhost"'
EXPORT = 'openssl pkcs12 -export -inkey key.pem -in cert.pem -out cert_key.p12'
EXPORT_NAMED = ('openssl pkcs12 -export -inkey key.pem -in cert.pem -out cert_key.p12 '
                '-name friendly-name')
ALL = (UPLOAD_TEMPLATE, UPLOAD_EXAMPLE, DELETE, ACTIVATE_JSON, ACTIVATE_HEADER, LIST) + \
    DESCRIBES + (GEN, EXPORT, EXPORT_NAMED)


def squash(s):
    return re.sub(r"\s+", "", s.replace("\\\n", ""))


class SpecCurlTest(GatewayTest):
    def sh(self, cmd, cwd):
        p = subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True,
                           timeout=120 * SLOW)
        self.assertEqual(p.returncode, 0, "%s\n%s%s" % (cmd, p.stdout, p.stderr))
        return p

    def make_cert(self, folder, export, password):
        """The spec's two steps; returns (folder, cert.pem, cert_key.p12)."""
        os.makedirs(folder, exist_ok=True)
        self.sh(GEN + " -passout pass:keypass", folder)
        self.sh(export + " -passin pass:keypass -passout pass:" + password, folder)
        return folder, os.path.join(folder, "cert.pem"), os.path.join(folder, "cert_key.p12")

    def curl(self, spec_cmd, cwd=None, **fill):
        """Runs a spec command; returns (status, content type, body text)."""
        cmd = spec_cmd.replace("myActiveGate", "localhost").replace(":9999/", ":%d/" % self.g.port)
        cmd = cmd.replace("Api-Token 123abc", "Api-Token " + self.tok)
        for k, v in fill.items():
            cmd = cmd.replace("{%s}" % k, v)
        self.assertNotRegex(cmd, r"\{[a-z ]+\}", "a placeholder is left")
        hdr = os.path.join(self.tmp, "curl.headers")
        body = os.path.join(self.tmp, "curl.body")
        extra = ("--resolve localhost:%d:127.0.0.1 -sS -D %s -o %s -w %%{http_code} --cacert %s"
                 % (self.g.port, hdr, body, self.bundle))
        assert cmd.startswith("curl ")
        cmd = "curl " + extra + " " + cmd[5:]
        p = self.sh(cmd, cwd or self.tmp)
        with open(hdr) as f:
            ctype = "".join(re.findall(r"(?im)^content-type:\s*(.*?)\s*$", f.read()))
        with open(body) as f:
            text = f.read()
        return int(p.stdout.strip()), ctype, text

    def ok(self, r):
        status, ctype, text = r
        self.assertEqual(status, 200, text)
        if text:
            self.assertTrue(ctype.startswith("application/json"), ctype)
            return json.loads(text)
        return None

    def refused(self, r, status):
        code, ctype, text = r
        self.assertEqual(code, status, text)
        # the spec says "a plain text message"; certgate answers in Dynatrace's JSON
        # error envelope instead, as the rest of the Dynatrace API does
        self.assertTrue(ctype.startswith("application/json"),
                        "a %d is in the JSON error envelope, got %r" % (code, ctype))
        err = json.loads(text)["error"]
        self.assertEqual(err["code"], code, text)
        self.assertTrue(err["message"].strip(), "no message")
        return err["message"]

    def describes(self, d, name, p12, password):
        self.assertEqual(d["name"], name)
        self.assertEqual({x["alias"]: x["description"] for x in d["desc"]},
                         java_descriptions(p12, password, TZ))

    def test_commands_are_the_spec_s(self):
        if not os.path.exists(SPEC):
            self.skipTest("spec not found at %s" % SPEC)
        with open(SPEC) as f:
            spec = squash(f.read())
        for c in ALL:
            with self.subTest(c[:60]):
                self.assertIn(squash(c), spec)

    def test_spec_walkthrough(self):
        t = self.tmp
        # "Create a certificate file for testing", three times
        a_dir, a_pem, a_p12 = self.make_cert(os.path.join(t, "a"), EXPORT, "myPassword")
        b_dir, b_pem, b_p12 = self.make_cert(os.path.join(t, "b"), EXPORT_NAMED, "pass")
        c_dir = os.path.join(t, "c")  # a's key and certificate exported with "pass"
        os.makedirs(c_dir)
        for n in ("key.pem", "cert.pem"):
            shutil.copy(os.path.join(a_dir, n), c_dir)
        self.sh(EXPORT + " -passin pass:keypass -passout pass:pass", c_dir)
        c_p12 = os.path.join(c_dir, "cert_key.p12")
        shutil.copy(a_p12, os.path.join(a_dir, "cert.p12"))  # the example uploads cert.p12

        self.g = g = self.gateway(env={"TZ": TZ})
        self.tok = g.token(env=ENV_ID)
        g.start()
        self.bundle = os.path.join(t, "trusted.pem")
        with open(self.bundle, "w") as out:
            for src in (os.path.join(g.ssl_dir, ".default-certificate.pem"), a_pem, b_pem):
                with open(src) as f:
                    out.write("".join(re.findall(r"-----BEGIN CERTIFICATE-----.*?"
                                                 r"-----END CERTIFICATE-----\n", f.read(), re.S)))
        a_fp = cert_fingerprint(a_pem)
        b_fp = cert_fingerprint(b_pem)

        def served():
            return der_fingerprint(g.served_cert())

        # list: the default certificate is not included
        self.assertEqual(self.ok(self.curl(LIST)), [])
        # upload and activate (the example)
        d = self.ok(self.curl(UPLOAD_EXAMPLE, cwd=a_dir))
        self.describes(d, "cert.p12", a_p12, "myPassword")
        self.assertEqual([x["alias"] for x in d["desc"]], ["1"])
        self.assertEqual(served(), a_fp)
        # replace active certificate: 403
        self.refused(self.curl(UPLOAD_EXAMPLE, cwd=a_dir), 403)
        # delete the file in use: 403
        self.refused(self.curl(DELETE), 403)
        self.assertEqual(served(), a_fp)
        # the generic form: another name, a full path, the friendly name
        d = self.ok(self.curl(UPLOAD_TEMPLATE, **{
            "address of ActiveGate": "localhost", "port": str(g.port),
            "environment ID": ENV_ID, "certificate file name": "cert_demo.p12",
            "token": self.tok, "password": "pass", "path to certificate file": b_p12}))
        self.describes(d, "cert_demo.p12", b_p12, "pass")
        self.assertEqual([x["alias"] for x in d["desc"]], ["friendly-name"])
        self.assertEqual(served(), b_fp)
        # cert.p12's password is myPassword: activate and describe with "pass" are 400
        for cmd in (ACTIVATE_JSON, ACTIVATE_HEADER) + DESCRIBES:
            with self.subTest(wrong_password=cmd[:70]):
                self.refused(self.curl(cmd), 400)
        self.assertEqual(served(), b_fp)
        # list: both, the active one with details
        lst = self.ok(self.curl(LIST))
        self.assertEqual(sorted(e["name"] for e in lst), ["cert.p12", "cert_demo.p12"])
        for e in lst:
            if e["name"] == "cert_demo.p12":
                self.describes(e, "cert_demo.p12", b_p12, "pass")
            else:
                self.assertNotIn("desc", e)
        # delete: 200 with no content, then 404
        status, _, text = self.curl(DELETE)
        self.assertEqual((status, text), (200, ""))
        self.assertFalse(os.path.exists(os.path.join(g.ssl_dir, "cert.p12")))
        self.refused(self.curl(DELETE), 404)
        for cmd in (ACTIVATE_JSON, ACTIVATE_HEADER) + DESCRIBES:
            with self.subTest(missing=cmd[:70]):
                self.refused(self.curl(cmd), 404)
        self.assertEqual(served(), b_fp)
        # upload cert.p12 again, password "pass", by a local file name
        fill = {"address of ActiveGate": "localhost", "port": str(g.port),
                "environment ID": ENV_ID, "token": self.tok, "password": "pass"}
        d = self.ok(self.curl(UPLOAD_TEMPLATE, cwd=c_dir, **dict(
            fill, **{"certificate file name": "cert.p12",
                     "path to certificate file": "cert_key.p12"})))
        self.describes(d, "cert.p12", c_p12, "pass")
        self.assertEqual(served(), a_fp)
        # activate, both forms, each time from cert_demo.p12 (re-uploaded, as it is inactive)
        for cmd in (ACTIVATE_JSON, ACTIVATE_HEADER):
            with self.subTest(activate=cmd[:70]):
                self.ok(self.curl(UPLOAD_TEMPLATE, **dict(
                    fill, **{"certificate file name": "cert_demo.p12",
                             "path to certificate file": b_p12})))
                self.assertEqual(served(), b_fp)
                self.describes(self.ok(self.curl(cmd)), "cert.p12", c_p12, "pass")
                self.assertEqual(served(), a_fp)
        # describe, the three forms
        for cmd in DESCRIBES:
            with self.subTest(describe=cmd[:70]):
                self.describes(self.ok(self.curl(cmd)), "cert.p12", c_p12, "pass")
        self.refused(self.curl(DELETE), 403)
        # the restart serves what was activated last
        g.stop()
        g.start()
        self.assertEqual(served(), a_fp)
        self.describes(self.ok(self.curl(DESCRIBE_GET)), "cert.p12", c_p12, "pass")


if __name__ == "__main__":
    main()
