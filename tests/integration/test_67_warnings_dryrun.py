"""Layer 60: warnings on every upload and activation answer, refusals of expired
certificates and mismatched keys, and ?dryRun=true (issue #11, item 6).

Certificates are made by openssl at test time: short-lived, not yet valid, without
subjectAltName, clientAuth-only, RSA-1024, SHA-1 signed, with a chain missing its CA,
expired (openssl ca -startdate/-enddate), and a PKCS#12 whose key is not the
certificate's (tests/tools/p12forge). Dry runs must leave the ssl directory, the config
bytes and the served certificate exactly as they were."""
import json
import os
import shutil
import tempfile
import unittest

from harness import (GatewayTest, Pki, cert_fingerprint, der_fingerprint, main, run)


def ca_signed_dates(pki, name, cn, start, end, issuer=None):
    """A certificate with the given validity (YYYYMMDDHHMMSSZ), self-signed unless issuer
    (key, cert) is given, made by `openssl ca`. Returns (key, cert)."""
    d = pki.path(name + ".ca")
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "index.txt"), "w").close()
    with open(os.path.join(d, "serial"), "w") as f:
        f.write("01\n")
    cnf = os.path.join(d, "ca.cnf")
    with open(cnf, "w") as f:
        f.write("[ca]\ndefault_ca = x\n[x]\ndatabase = %s/index.txt\nnew_certs_dir = %s\n"
                "serial = %s/serial\ndefault_md = sha256\npolicy = p\ncopy_extensions = copy\n"
                "unique_subject = no\n[p]\ncommonName = supplied\n" % (d, d, d))
    key = pki.key(name)
    csr = pki.path(name + ".csr")
    cert = pki.path(name + ".crt")
    run(["openssl", "req", "-new", "-key", key, "-out", csr, "-subj", "/CN=" + cn,
         "-addext", "subjectAltName=DNS:" + cn])
    cmd = ["openssl", "ca", "-batch", "-config", cnf, "-in", csr, "-startdate", start,
           "-enddate", end, "-out", cert, "-notext"]
    cmd += ["-cert", issuer[1], "-keyfile", issuer[0]] if issuer else ["-selfsign", "-keyfile", key]
    run(cmd)
    return key, cert


class Fixtures:
    dir = None

    @classmethod
    def make(cls):
        if cls.dir:
            return
        cls.dir = tempfile.mkdtemp(prefix="certgate-it67-")
        pki = Pki(cls.dir)
        cls.ca = pki.ca("ca", "Test CA")
        k, c = pki.leaf("good", "host-good", cls.ca)
        cls.good_crt = c
        cls.good = pki.p12("good.p12", k, c, "pw", chain=[cls.ca[1]])
        k, c = pki.self_signed("short", "host-short", days=5, san="DNS:host-short")
        cls.short, cls.short_crt = pki.p12("short.p12", k, c, "pw"), c
        k, c = pki.self_signed("nosan", "host-nosan")
        cls.nosan = pki.p12("nosan.p12", k, c, "pw")
        k, c = pki.leaf("client", "host-client", cls.ca, ext_lines=["extendedKeyUsage=clientAuth"])
        cls.clientauth = pki.p12("client.p12", k, c, "pw", chain=[cls.ca[1]])
        k, c = pki.leaf("nochain", "host-nochain", cls.ca)
        cls.nochain = pki.p12("nochain.p12", k, c, "pw")
        k, c = ca_signed_dates(pki, "notyet", "host-notyet", "20990101000000Z", "21000101000000Z")
        cls.notyet = pki.p12("notyet.p12", k, c, "pw")
        k, c = ca_signed_dates(pki, "expired", "host-expired", "20200101000000Z",
                               "20210101000000Z")
        cls.expired = pki.p12("expired.p12", k, c, "pw")
        # RSA-1024 and SHA-1: made by openssl; the TLS layer may refuse them outright
        k = pki.path("rsa1024.key")
        run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024",
             "-out", k])
        c = pki.path("rsa1024.crt")
        run(["openssl", "req", "-x509", "-new", "-key", k, "-out", c, "-days", "90", "-subj",
             "/CN=host-1024", "-addext", "subjectAltName=DNS:host-1024"])
        cls.rsa1024 = pki.p12("rsa1024.p12", k, c, "pw")
        k = pki.key("sha1")
        csr, c = pki.path("sha1.csr"), pki.path("sha1.crt")
        ext = pki.path("sha1.ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=DNS:host-sha1\n")
        run(["openssl", "req", "-new", "-key", k, "-out", csr, "-subj", "/CN=host-sha1"])
        run(["openssl", "x509", "-req", "-sha1", "-in", csr, "-CA", cls.ca[1], "-CAkey",
             cls.ca[0], "-CAcreateserial", "-out", c, "-days", "90", "-extfile", ext])
        cls.sha1 = pki.p12("sha1.p12", k, c, "pw", chain=[cls.ca[1]])
        other = pki.key("other")
        cls.mismatch = pki.forge_p12("mismatch.p12", other, cls.good_crt, "pw")

    @classmethod
    def cleanup(cls):
        if cls.dir:
            shutil.rmtree(cls.dir, ignore_errors=True)


F = Fixtures


def setUpModule():
    F.make()


def tearDownModule():
    F.cleanup()


class WarningsTest(GatewayTest):
    def start(self):
        self.g, self.tok = self.api_gateway(tz="UTC")
        return self.g

    def put(self, name, p12, dry=False, password="pw"):
        with open(p12, "rb") as f:
            body = f.read()
        return self.g.call("PUT", name + ("?dryRun=true" if dry else ""), self.tok, body=body,
                           headers={"X-Password": password,
                                    "Content-Type": "application/octet-stream"})

    def test_upload_answers_carry_warnings(self):
        g = self.start()
        d = self.assertJson(self.put("good.p12", F.good))
        self.assertEqual(d["warnings"], [], "a sound certificate with its chain got warnings")
        self.assertServes(g, F.good_crt)
        cases = [("short", F.short, ["expires in 4 days"]),
                 ("nosan", F.nosan, ["subjectAltName"]),
                 ("clientauth", F.clientauth, ["serverAuth"]),
                 ("nochain", F.nochain, ["incomplete", "CN=Test CA"]),
                 ("notyet", F.notyet, ["not valid yet", "2099-01-01"])]
        for name, p12, words in cases:
            with self.subTest(name):
                d = self.assertJson(self.put(name + ".p12", p12))
                self.assertEqual(len(d["warnings"]), 1, d["warnings"])
                for w in words:
                    self.assertIn(w, d["warnings"][0])
                self.assertTrue(d["active"])
                self.assertEqual(der_fingerprint(g.served_cert()),
                                 d["desc"][0]["sha256"].replace(":", "").lower())
        # activation answers carry them too
        d = self.assertJson(g.activate("short.p12", "pw", self.tok))
        self.assertIn("expires in 4 days", d["warnings"][0])
        self.assertServes(g, F.short_crt)

    def test_weak_keys_and_sha1_refused_with_reason(self):
        """RSA-1024 and SHA-1 signatures: OpenSSL's security level (2 on Debian 12) refuses
        them when the TLS context is built; the 400 says why in words, not only in
        OpenSSL's terms, and a dry run answers the same."""
        g = self.start()
        before = self.state(g)
        for name, p12, words in (("rsa1024", F.rsa1024, ["too small", "RSA with 1024 bits"]),
                                 ("sha1", F.sha1, ["too weak", "signed with SHA-1"])):
            with self.subTest(name):
                self.assertApiError(self.put(name + ".p12", p12), 400, *words)
                self.assertApiError(self.put(name + ".p12", p12, dry=True), 400, *words)
                self.assertEqual(self.state(g), before)

    def test_expired_and_mismatched_key_refused(self):
        g = self.start()
        self.assertJson(self.put("good.p12", F.good))
        before = self.state(g)
        self.assertApiError(self.put("expired.p12", F.expired), 400, "expired on 2021-01-01")
        self.assertApiError(self.put("expired.p12", F.expired, dry=True), 400, "expired")
        self.assertApiError(self.put("mismatch.p12", F.mismatch), 400, "does not match")
        self.assertApiError(self.put("mismatch.p12", F.mismatch, dry=True), 400,
                            "does not match")
        self.assertEqual(self.state(g), before, "a refused upload changed something")
        # a stored expired file cannot be activated either
        g.install(F.expired, "old.p12")
        before = self.state(g)
        self.assertApiError(g.activate("old.p12", "pw", self.tok), 400, "expired")
        self.assertEqual(self.state(g), before)
        self.assertServes(g, F.good_crt)

    def test_dry_run_upload_stores_nothing(self):
        g = self.start()
        self.assertJson(self.put("good.p12", F.good))
        before = self.state(g)
        conf = g.read_conf_bytes()
        listing = sorted(os.listdir(g.ssl_dir))
        d = self.assertJson(self.put("short.p12", F.short, dry=True))
        self.assertIs(d["dryRun"], True)
        self.assertFalse(d["active"])
        self.assertEqual(d["name"], "short.p12")
        self.assertEqual(d["desc"][0]["subject"].split("CN=")[-1], "host-short")
        self.assertIn("expires in 4 days", d["warnings"][0])
        self.assertEqual(sorted(os.listdir(g.ssl_dir)), listing, "a dry run stored a file")
        self.assertEqual(g.read_conf_bytes(), conf, "a dry run changed custom.properties")
        self.assertEqual(self.state(g), before)
        self.assertServes(g, F.good_crt)
        # dryRun=false is a real upload; a misspelt value is refused, not taken as false
        self.assertApiError(g.call("PUT", "short.p12?dryRun=yes", self.tok, body=b"x",
                                   headers={"X-Password": "pw"}), 400, "dryRun")
        self.assertEqual(self.state(g), before)
        self.assertApiError(self.put("good.p12", F.short, dry=True), 403, "active")
        self.assertApiError(self.put("bad.p12", F.short, dry=True, password="wrong"), 400,
                            "password")
        self.assertEqual(self.state(g), before)

    def test_dry_run_activate_changes_nothing(self):
        g = self.start()
        self.assertJson(self.put("good.p12", F.good))
        g.install(F.nosan, "nosan.p12")
        before = self.state(g)
        conf = g.read_conf_bytes()
        d = self.assertJson(g.call("POST", "nosan.p12/activate?dryRun=true", self.tok,
                                   headers={"X-Password": "pw"}))
        self.assertIs(d["dryRun"], True)
        self.assertFalse(d["active"])
        self.assertIn("subjectAltName", d["warnings"][0])
        self.assertEqual(g.read_conf_bytes(), conf)
        self.assertEqual(self.state(g), before)
        self.assertServes(g, F.good_crt)
        # the real activation then switches, with the same warning
        d = self.assertJson(g.activate("nosan.p12", "pw", self.tok))
        self.assertNotIn("dryRun", d)
        self.assertIn("subjectAltName", d["warnings"][0])
        self.assertNotEqual(der_fingerprint(g.served_cert()), cert_fingerprint(F.good_crt))


if __name__ == "__main__":
    main()
