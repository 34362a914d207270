"""Layer 60: `certgate cert import` (issue #11, item 5): PEM key + certificate (+ chain)
made by openssl become a PKCS#12 file in DIR/ssl that openssl itself reads as PBES2 /
AES-256-CBC with an HMAC-SHA256 MAC; --activate records it and a SIGHUP serves it
(checked with openssl s_client). Bad input (a key that is not the certificate's, an
encrypted key without its password, a chain that does not chain, a missing or unreadable
file, an expired certificate) is refused with a sentence naming the file, and nothing is
stored."""
import os
import re
import shutil
import tempfile
import unittest

from harness import (GatewayTest, Pki, certgate, cert_fingerprint, der_fingerprint, main, run,
                     s_client, tree_snapshot)

from test_67_warnings_dryrun import ca_signed_dates


class Fixtures:
    dir = None

    @classmethod
    def make(cls):
        if cls.dir:
            return
        cls.dir = tempfile.mkdtemp(prefix="certgate-it68-")
        pki = Pki(cls.dir)
        cls.root = pki.ca("root", "Import Root")
        cls.inter = pki.ca("inter", "Import Intermediate", issuer=cls.root)
        cls.key, cls.crt = pki.leaf("leaf", "host-import", cls.inter)
        cls.chain_in_order = cls.bundle(pki, "chain-ok.pem", [cls.inter[1], cls.root[1]])
        cls.chain_reversed = cls.bundle(pki, "chain-rev.pem", [cls.root[1], cls.inter[1]])
        cls.fullchain = cls.bundle(pki, "fullchain.pem", [cls.crt, cls.inter[1]])
        cls.other_key = pki.key("other")
        cls.stranger = pki.ca("stranger", "Unrelated CA")
        cls.enc_key = pki.path("leaf-enc.key")
        run(["openssl", "pkey", "-in", cls.key, "-aes256", "-passout", "pass:key-secret",
             "-out", cls.enc_key])
        cls.exp_key, cls.exp_crt = ca_signed_dates(pki, "expired", "host-old",
                                                   "20200101000000Z", "20210101000000Z")
        cls.garbage = pki.path("garbage.pem")
        with open(cls.garbage, "wb") as f:
            f.write(os.urandom(2000))

    @staticmethod
    def bundle(pki, name, parts):
        out = pki.path(name)
        with open(out, "w") as f:
            for p in parts:
                with open(p) as src:
                    f.write(src.read())
        return out

    @classmethod
    def cleanup(cls):
        if cls.dir:
            shutil.rmtree(cls.dir, ignore_errors=True)


F = Fixtures


def setUpModule():
    F.make()


def tearDownModule():
    F.cleanup()


def s_client_leaf_fingerprint(port):
    """SHA-256 of the leaf openssl s_client receives, and the subjects of the chain."""
    p = s_client(port, "-showcerts", "-servername", "localhost")
    pems = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", p.stdout, re.S)
    if not pems:
        raise AssertionError("s_client got no certificate:\n" + p.stdout[-2000:] + p.stderr)
    fp = run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"], input=pems[0]).stdout
    subjects = re.findall(r"^\s*\d+ s:(.*)$", p.stdout, re.M)
    return fp.split("=", 1)[1].strip().replace(":", "").lower(), subjects


class ImportTest(GatewayTest):
    def imp(self, g, *args, check=True):
        return certgate("cert", "import", "--data-dir", g.data_dir, *args, check=check)

    def test_import_activate_then_sighup_serves_it(self):
        g, tok = self.api_gateway(tz="UTC")
        p = self.imp(g, "--certificate", F.crt, "--key", F.key, "--chain", F.chain_in_order,
                     "--alias", "Web", "--name", "web.p12", "--activate")
        self.assertIn("imported web.p12 (alias 'web')", p.stdout)
        self.assertEqual(p.stderr, "", "a sound certificate with its chain got warnings")
        stored = os.path.join(g.ssl_dir, "web.p12")
        self.assertEqual(os.stat(stored).st_mode & 0o777, 0o600)
        conf = g.read_conf()
        self.assertRegex(conf, r"(?m)^certificate-file = web\.p12$")
        self.assertRegex(conf, r"(?m)^certificate-password-encr = v1:")
        self.assertNotRegex(conf, r"(?m)^certificate-password =")
        self.assertNotEqual(s_client_leaf_fingerprint(g.port)[0], cert_fingerprint(F.crt),
                            "the running gateway switched before SIGHUP")
        g.reload()
        fp, subjects = s_client_leaf_fingerprint(g.port)
        self.assertEqual(fp, cert_fingerprint(F.crt), "SIGHUP did not serve the import")
        self.assertEqual([re.sub(r"^.*CN ?= ?", "", s).strip() for s in subjects],
                         ["host-import", "Import Intermediate", "Import Root"])

    def test_import_without_activate_modern_encryption_and_api_activation(self):
        g, tok = self.api_gateway(tz="UTC")
        p = self.imp(g, "--certificate", F.fullchain, "--key", F.enc_key, "--key-password",
                     "key-secret")
        self.assertIn("imported fullchain.p12", p.stdout)
        pw = re.search(r"activating it through the API: ([0-9a-f]{48})$", p.stdout, re.M).group(1)
        stored = os.path.join(g.ssl_dir, "fullchain.p12")
        info = run(["openssl", "pkcs12", "-in", stored, "-info", "-noout", "-passin",
                    "pass:" + pw]).stderr
        self.assertIn("MAC: sha256, Iteration 10000", info)
        self.assertIn("PBES2, PBKDF2, AES-256-CBC, Iteration 10000, PRF hmacWithSHA256", info)
        self.assertNotRegex(info, r"RC2|3DES|DES-EDE|SHA1 and")
        self.assertNotIn("certificate-file", g.read_conf() if os.path.exists(g.conf_path) else "")
        # keytool (Java) reads it too, and sees the chain
        kt = run(["keytool", "-list", "-v", "-storetype", "PKCS12", "-keystore", stored,
                  "-storepass", pw]).stdout
        self.assertIn("Certificate chain length: 2", kt)
        d = self.assertJson(g.activate("fullchain.p12", pw, tok))
        # the file ends at the intermediate; its private root is not trusted by this system
        self.assertEqual(len(d["warnings"]), 1, d)
        self.assertIn("incomplete: 'CN=Import Root' (the issuer of 'CN=Import Intermediate')",
                      d["warnings"][0])
        self.assertEqual(s_client_leaf_fingerprint(g.port)[0], cert_fingerprint(F.crt))

    def test_chain_out_of_order_is_reordered_with_a_warning(self):
        g, _ = self.api_gateway(tz="UTC")
        p = self.imp(g, "--certificate", F.crt, "--key", F.key, "--chain", F.chain_reversed,
                     "--activate")
        self.assertRegex(p.stderr, r"warning: The chain in .*chain-rev\.pem was out of order")
        g.reload()
        fp, subjects = s_client_leaf_fingerprint(g.port)
        self.assertEqual(fp, cert_fingerprint(F.crt))
        self.assertEqual([re.sub(r"^.*CN ?= ?", "", s).strip() for s in subjects],
                         ["host-import", "Import Intermediate", "Import Root"])

    def test_incomplete_chain_warns(self):
        g, _ = self.api_gateway(tz="UTC")
        p = self.imp(g, "--certificate", F.crt, "--key", F.key)
        self.assertRegex(p.stderr, r"warning: The chain is incomplete: .*Import Intermediate")

    def test_bad_input_refused_nothing_stored(self):
        g, _ = self.api_gateway(tz="UTC")
        self.imp(g, "--certificate", F.crt, "--key", F.key, "--chain", F.chain_in_order,
                 "--name", "keep.p12", "--activate")
        g.reload()
        missing = os.path.join(self.tmp, "missing.pem")
        cases = [
            ("mismatched key", ["--certificate", F.crt, "--key", F.other_key],
             [F.crt, "does not match the private key in " + F.other_key]),
            ("encrypted key, no password", ["--certificate", F.crt, "--key", F.enc_key],
             [F.enc_key, "encrypted", "--key-password"]),
            ("encrypted key, wrong password", ["--certificate", F.crt, "--key", F.enc_key,
                                               "--key-password", "nope"],
             [F.enc_key, "does not decrypt"]),
            ("chain that does not chain", ["--certificate", F.crt, "--key", F.key, "--chain",
                                           F.stranger[1]],
             [F.stranger[1], "Unrelated CA", "does not chain"]),
            ("missing file", ["--certificate", missing, "--key", F.key], [missing, "no such file"]),
            ("not PEM", ["--certificate", F.garbage, "--key", F.key],
             [F.garbage, "no certificate"]),
            ("key file without a key", ["--certificate", F.crt, "--key", F.crt],
             [F.crt, "no private key"]),
            ("expired", ["--certificate", F.exp_crt, "--key", F.exp_key],
             [F.exp_crt, "expired on 2021-01-01"]),
        ]
        before = self.state(g)
        conf = g.read_conf_bytes()
        for what, args, words in cases:
            with self.subTest(what):
                p = self.imp(g, *(args + ["--name", "new.p12", "--activate"]), check=False)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertEqual(p.stdout, "")
                self.assertIn("nothing was stored", p.stderr)
                for w in words:
                    self.assertIn(w, p.stderr)
                self.assertNotIn("key-secret", p.stderr)
                self.assertEqual(self.state(g), before, "a refused import changed something")
                self.assertEqual(g.read_conf_bytes(), conf)
        # the active file cannot be replaced
        p = self.imp(g, "--certificate", F.crt, "--key", F.key, "--name", "keep.p12", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("active certificate file", p.stderr)
        self.assertEqual(self.state(g), before)
        # usage errors: 2
        p = certgate("cert", "import", "--data-dir", g.data_dir, "--key", F.key, check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--certificate", p.stderr)


class PemUploadTest(GatewayTest):
    """PUT {name} with Content-Type: application/x-pem-file (issue #11, item 5)."""

    def put_pem(self, g, tok, name, parts, password=None, dry=False):
        body = b""
        for p in parts:
            with open(p, "rb") as f:
                body += f.read()
        h = {"Content-Type": "application/x-pem-file"}
        if password:
            h["X-Password"] = password
        return g.call("PUT", name + ("?dryRun=true" if dry else ""), tok, body=body, headers=h)

    def test_pem_bundle_upload(self):
        g, tok = self.api_gateway(tz="UTC")
        before = self.state(g)
        # dry run first: nothing stored
        d = self.assertJson(self.put_pem(g, tok, "pem.p12", [F.key, F.root[1], F.inter[1], F.crt],
                                         dry=True))
        self.assertIs(d["dryRun"], True)
        self.assertTrue(any("out of order" in w for w in d["warnings"]), d["warnings"])
        self.assertEqual(self.state(g), before)
        # encrypted key, X-Password decrypts it; chain out of order is reordered
        d = self.assertJson(self.put_pem(g, tok, "pem.p12",
                                         [F.enc_key, F.root[1], F.inter[1], F.crt],
                                         password="key-secret"))
        self.assertTrue(d["active"])
        self.assertEqual(d["desc"][0]["chainLength"], 3)
        fp, subjects = s_client_leaf_fingerprint(g.port)
        self.assertEqual(fp, cert_fingerprint(F.crt))
        self.assertEqual([re.sub(r"^.*CN ?= ?", "", s).strip() for s in subjects],
                         ["host-import", "Import Intermediate", "Import Root"])
        with open(os.path.join(g.ssl_dir, "pem.p12"), "rb") as f:
            self.assertEqual(f.read(1), b"\x30", "the stored file is not DER PKCS#12")
        conf = g.read_conf()
        self.assertRegex(conf, r"(?m)^certificate-password-encr = v1:")
        self.assertNotIn("key-secret", conf)
        # a restart serves it from the stored file and the obfuscated random password
        g.stop()
        g.start()
        self.assertEqual(s_client_leaf_fingerprint(g.port)[0], cert_fingerprint(F.crt))

    def test_pem_bundle_refusals_change_nothing(self):
        g, tok = self.api_gateway(tz="UTC")
        before = self.state(g)
        for what, parts, pw, words in (
                ("mismatched key", [F.other_key, F.crt], None, ["matches its private key"]),
                ("encrypted key, no X-Password", [F.enc_key, F.crt], None, ["encrypted"]),
                ("no key", [F.crt], None, ["no private key"]),
                ("chain that does not chain", [F.key, F.crt, F.stranger[1]], None,
                 ["does not chain", "Unrelated CA"])):
            with self.subTest(what):
                self.assertApiError(self.put_pem(g, tok, "bad.p12", parts, pw), 400, *words)
                self.assertEqual(self.state(g), before)


if __name__ == "__main__":
    main()
