"""Layer 20: custom.properties and the served certificate: the default self-signed one,
custom PKCS#12 files from openssl (current and -legacy) and keytool, aliases, chains,
password obfuscation, every refusal reason with its message, and configuration errors."""
import os
import re
import socket
import stat
import subprocess

from harness import (SLOW, WEBSERVER, GatewayTest, cert_fingerprint, client_context,
                     der_fingerprint, der_subject, der_text, main, run, tool)

HOST = socket.gethostname()


def conf(file=None, password=None, alias=None, extra="", section_extra=""):
    """A custom.properties text with the certificate keys that are given."""
    lines = ["[%s]" % WEBSERVER]
    if file is not None:
        lines.append("certificate-file = %s" % file)
    if password is not None:
        lines.append("certificate-password = %s" % password)
    if alias is not None:
        lines.append("certificate-alias = %s" % alias)
    if section_extra:
        lines.append(section_extra.rstrip("\n"))
    return "\n".join(lines) + "\n" + extra


def default_pem(g):
    return os.path.join(g.ssl_dir, ".default-certificate.pem")


def all_files(root):
    for d, _, files in os.walk(root):
        for f in files:
            yield os.path.join(d, f)


class DefaultCertificateTest(GatewayTest):
    def test_created_on_first_start(self):
        g = self.gateway()
        g.start()
        self.assertEqual(stat.S_IMODE(os.stat(g.ssl_dir).st_mode), 0o700)
        self.assertTrue(os.path.isfile(default_pem(g)))
        self.assertEqual(stat.S_IMODE(os.stat(default_pem(g)).st_mode) & 0o077, 0,
                         "the default certificate's key must not be readable by others")
        der = g.served_cert()
        self.assertEqual(der_fingerprint(der), cert_fingerprint(default_pem(g)))
        text = der_text(der)
        self.assertIn("id-ecPublicKey", text)
        self.assertIn("prime256v1", text)
        self.assertEqual(der_subject(der), "CN=" + HOST)
        m = re.search(r"X509v3 Subject Alternative Name:.*?\n\s*(.*)\n", text)
        self.assertIsNotNone(m, text)
        sans = [s.strip() for s in m.group(1).split(",")]
        for want in ("DNS:" + HOST, "DNS:localhost", "IP Address:127.0.0.1",
                     "IP Address:0:0:0:0:0:0:0:1"):
            self.assertIn(want, sans)
        self.assertEqual(len(g.served_chain()), 1)
        self.assertRegex(g.logs(), r"serving default self-signed certificate .*"
                                   r"\.default-certificate\.pem")

    def test_clients_can_trust_it_for_localhost_and_127001(self):
        g = self.gateway().start()
        ca = os.path.join(self.tmp, "default.crt")
        run(["openssl", "x509", "-in", default_pem(g), "-out", ca])
        for name in ("localhost", "127.0.0.1"):
            ctx = client_context(ca)
            with socket.create_connection(("127.0.0.1", g.port), timeout=10 * SLOW) as s:
                with ctx.wrap_socket(s, server_hostname=name) as t:
                    self.assertEqual(der_fingerprint(t.getpeercert(True)),
                                     cert_fingerprint(ca))
        code, body = g.curl("--cacert", ca, "https://localhost:%d/rest/health" % g.port)
        self.assertEqual((code, body), (200, "RUNNING"))

    def test_reused_across_restarts(self):
        g = self.gateway().start()
        first = der_fingerprint(g.served_cert())
        self.assertEqual(g.stop(), 0)
        g.start()
        self.assertEqual(der_fingerprint(g.served_cert()), first)
        self.assertEqual(cert_fingerprint(default_pem(g)), first)

    def test_regenerated_when_expired(self):
        g = self.gateway()
        os.makedirs(g.ssl_dir, mode=0o700)
        run([tool("p12forge"), "expired", default_pem(g), HOST])
        old = cert_fingerprint(default_pem(g))
        g.start()
        der = g.served_cert()
        self.assertNotEqual(der_fingerprint(der), old, "an expired default certificate is served")
        self.assertEqual(der_fingerprint(der), cert_fingerprint(default_pem(g)),
                         "the new default certificate is not kept")
        p = subprocess.run(["openssl", "x509", "-noout", "-checkend", "86400", "-in",
                            default_pem(g)], capture_output=True)
        self.assertEqual(p.returncode, 0, "the regenerated certificate expires within a day")


class CustomCertificateTest(GatewayTest):
    def start_with(self, p12, password, alias=None, extra=""):
        g = self.gateway()
        name = os.path.basename(p12)
        g.install(p12)
        g.write_conf(conf(name, password, alias) + extra)
        g.start()
        self.assertNotIn("custom certificate not served", g.logs())
        return g

    def test_cn_and_chain_match_the_file(self):
        root = self.pki.ca("root", "Test Root CA")
        inter = self.pki.ca("inter", "Test Intermediate CA", issuer=root)
        other = self.pki.ca("other", "Unrelated CA")
        leaf = self.pki.leaf("leaf", "gw.example.test", inter)
        p12 = self.pki.p12("chain.p12", leaf[0], leaf[1], "chainpw", alias="gw",
                           chain=(other[1], inter[1], root[1]))
        g = self.start_with(p12, "chainpw", "gw")
        self.assertServes(g, leaf[1])
        self.assertEqual(der_subject(g.served_cert()), "CN=gw.example.test")
        chain = g.served_chain()
        self.assertEqual(chain, ["CN = gw.example.test", "CN = Test Intermediate CA",
                                 "CN = Test Root CA"])
        # a client that trusts only the root can verify the name through the intermediate
        ctx = client_context(root[1])
        with socket.create_connection(("127.0.0.1", g.port), timeout=10 * SLOW) as s:
            with ctx.wrap_socket(s, server_hostname="gw.example.test") as t:
                self.assertEqual(t.getpeercert()["subject"], ((("commonName", "gw.example.test"),),))
        self.assertRegex(g.logs(), r"serving custom certificate chain\.p12, alias 'gw'")

    def test_rsa_2048(self):
        key, cert = self.pki.self_signed("rsa", "rsa.example", kind="rsa")
        g = self.start_with(self.pki.p12("rsa.p12", key, cert, "pw"), "pw")
        self.assertServes(g, cert)
        text = der_text(g.served_cert())
        self.assertIn("rsaEncryption", text)
        self.assertIn("Public-Key: (2048 bit)", text)
        p = g.s_client("-tls1_2", input="")
        self.assertIn("ECDHE-RSA-", p.stdout)

    def test_ecdsa(self):
        key, cert = self.pki.self_signed("ec", "ec.example", kind="ec")
        g = self.start_with(self.pki.p12("ec.p12", key, cert, "pw"), "pw")
        self.assertServes(g, cert)
        self.assertIn("id-ecPublicKey", der_text(g.served_cert()))
        p = g.s_client("-tls1_2", input="")
        self.assertIn("ECDHE-ECDSA-", p.stdout)

    def test_legacy_p12(self):
        key, cert = self.pki.self_signed("leg", "legacy.example")
        p12 = self.pki.p12("legacy.p12", key, cert, "legacypw", legacy=True)
        info = run(["openssl", "pkcs12", "-info", "-noout", "-in", p12, "-passin",
                    "pass:legacypw", "-legacy"]).stderr
        self.assertRegex(info, r"RC2|3DES|des-ede3", "the file is not a legacy one")
        g = self.start_with(p12, "legacypw")
        self.assertServes(g, cert)

    def test_keytool_two_keys_alias_selection(self):
        store = self.pki.keytool_keypair("two.p12", "first", "first.example", "storepw")
        self.pki.keytool_keypair("two.p12", "second", "second.example", "storepw", keyalg="EC")
        g = self.start_with(store, "storepw", "second")
        self.assertEqual(der_subject(g.served_cert()), "CN=second.example")
        self.assertIn("id-ecPublicKey", der_text(g.served_cert()))
        self.assertEqual(g.stop(), 0)
        # without certificate-alias: the first key entry
        g.write_conf(conf("two.p12", "storepw"))
        g.start()
        self.assertEqual(der_subject(g.served_cert()), "CN=first.example")
        self.assertIn("rsaEncryption", der_text(g.served_cert()))

    def test_friendly_name_is_lower_cased_like_java(self):
        key, cert = self.pki.self_signed("mixed", "mixed.example")
        p12 = self.pki.p12("mixed.p12", key, cert, "pw", alias="MyServer")
        g = self.start_with(p12, "pw", "myserver")
        self.assertServes(g, cert)

    def test_no_friendly_name_gets_alias_1(self):
        key, cert = self.pki.self_signed("anon", "anon.example")
        p12 = self.pki.p12("anon.p12", key, cert, "pw")
        g = self.start_with(p12, "pw", "1")
        self.assertServes(g, cert)
        self.assertIn("alias '1'", g.logs())

    def test_file_without_password(self):
        key, cert = self.pki.self_signed("nopw", "nopw.example")
        p12 = self.pki.p12("nopw.p12", key, cert, "")
        g = self.gateway()
        g.install(p12)
        g.write_conf("[%s]\ncertificate-file = nopw.p12\n" % WEBSERVER)
        g.start()
        self.assertServes(g, cert)

    def test_password_with_special_characters(self):
        pw = "p#ss\\w0rd; with spaces"  # '#' and ';' inside a value are not comments
        key, cert = self.pki.self_signed("spec", "spec.example")
        g = self.start_with(self.pki.p12("spec.p12", key, cert, pw), pw)
        self.assertServes(g, cert)
        self.assertEqual(g.stop(), 0)
        g.start()
        self.assertServes(g, cert)

    def test_trusted_certificate_entries_are_not_key_aliases(self):
        _, ca = self.pki.self_signed("trusted", "trusted.example")
        store = self.pki.path("mixed.p12")
        run(["keytool", "-importcert", "-noprompt", "-storetype", "PKCS12", "-keystore", store,
             "-storepass", "storepw", "-alias", "trustedca", "-file", ca])
        self.pki.keytool_keypair("mixed.p12", "server", "server.example", "storepw")
        g = self.start_with(store, "storepw")  # the first key entry, not the first entry
        self.assertEqual(der_subject(g.served_cert()), "CN=server.example")
        g.write_conf(conf("mixed.p12", "storepw", "trustedca"))
        self.assertIn("mixed.p12: alias 'trustedca' not found; the file's key aliases are: "
                      "'server'", g.reload())

    def test_absolute_certificate_file(self):
        key, cert = self.pki.self_signed("abs", "abs.example")
        p12 = self.pki.p12("abs.p12", key, cert, "pw")  # stays outside DIR/ssl
        g = self.gateway()
        g.write_conf(conf(p12, "pw"))
        g.start()
        self.assertServes(g, cert)

    def test_escaped_comma_in_password(self):
        key, cert = self.pki.self_signed("comma", "comma.example")
        p12 = self.pki.p12("comma.p12", key, cert, "a,b,c")
        g = self.start_with(p12, r"a\,b\,c")
        self.assertServes(g, cert)
        self.assertEqual(g.stop(), 0)
        g.start()  # now from certificate-password-encr
        self.assertServes(g, cert)


class ObfuscationTest(GatewayTest):
    PASSWORD = "Pl4in-Secret-7391"

    def original(self):
        # comments, blank lines, odd spacing, unknown keys and sections, CRLF on one
        # line, and a last line without a newline: all must survive byte for byte
        return ("# custom.properties of a test ActiveGate\n"
                "; another comment style   \n"
                "\n"
                "[collector]\n"
                "MSGrouter = true\n"
                "weird.key=  spaced value  \r\n"
                "\n"
                "[%s]\n"
                "# the certificate\n"
                "certificate-file = obf.p12\n"
                "certificate-password = %s\n"
                "unknown-webserver-key = keep\\, me\n"
                "certificate-alias = obf\n"
                "\n"
                "[connectivity]\n"
                "networkZone = zone-a\n"
                "# trailing comment without newline" % (WEBSERVER, self.PASSWORD))

    def assert_rewritten(self, before, after):
        """after = before without the plain password line, plus exactly one
        certificate-password-encr line inside the webserver section."""
        b = before.splitlines(keepends=True)
        a = after.splitlines(keepends=True)
        enc = [l for l in a if l.startswith("certificate-password-encr")]
        self.assertEqual(len(enc), 1, after)
        self.assertRegex(enc[0], r"^certificate-password-encr = \S+\n$")
        pos = a.index(enc[0])
        heads = [l for l in a[:pos] if l.startswith("[")]
        self.assertEqual(heads[-1], "[%s]\n" % WEBSERVER, "the encrypted password left its section")
        self.assertEqual([l for l in a if l is not enc[0]],
                         [l for l in b if not l.startswith("certificate-password =")])
        self.assertNotIn("certificate-password =", after)
        self.assertNotIn(self.PASSWORD, after)
        return enc[0]

    def test_plain_password_replaced_and_still_loads(self):
        key, cert = self.pki.self_signed("obf", "obf.example")
        g = self.gateway()
        g.install(self.pki.p12("obf.p12", key, cert, self.PASSWORD, alias="obf"))
        g.write_conf(self.original())
        os.chmod(g.conf_path, 0o640)
        inode = os.stat(g.conf_path).st_ino
        g.start()
        self.assertServes(g, cert)
        after = g.read_conf_bytes()
        self.assert_rewritten(self.original(), after.decode())
        self.assertEqual(stat.S_IMODE(os.stat(g.conf_path).st_mode), 0o640,
                         "the rewrite changed the file's mode")
        self.assertNotEqual(os.stat(g.conf_path).st_ino, inode,
                            "the file was rewritten in place, not replaced atomically")
        leftovers = [f for f in os.listdir(os.path.dirname(g.conf_path)) if "tmp" in f.lower()]
        self.assertEqual(leftovers, [], "a temporary file was left behind")
        self.assertEqual(g.stop(), 0)

        g.start()  # the certificate loads from certificate-password-encr
        self.assertServes(g, cert)
        self.assertEqual(g.read_conf_bytes(), after, "the second start changed the file")
        self.assertEqual(g.stop(), 0)
        self.assert_secret_nowhere(g, self.PASSWORD)

    def assert_secret_nowhere(self, g, secret):
        for path in list(all_files(g.data_dir)) + [g.log_path, g.access_path]:
            if os.path.exists(path):
                with open(path, "rb") as f:
                    self.assertNotIn(secret.encode(), f.read(), "the password is in " + path)

    def test_sighup_obfuscates_and_switches(self):
        g = self.gateway().start()
        key, cert = self.pki.self_signed("hup", "hup.example")
        g.install(self.pki.p12("hup.p12", key, cert, self.PASSWORD))
        g.write_conf("# keep me\n" + conf("hup.p12", self.PASSWORD))
        tail = g.reload()
        self.assertIn("reloaded", tail)
        self.assertServes(g, cert)
        text = g.read_conf()
        self.assertTrue(text.startswith("# keep me\n[%s]\ncertificate-file = hup.p12\n" % WEBSERVER))
        self.assertRegex(text, r"\ncertificate-password-encr = \S+\n")
        self.assertNotIn("certificate-password =", text)
        self.assertEqual(g.stop(), 0)
        self.assert_secret_nowhere(g, self.PASSWORD)

    def test_wrong_password_is_not_logged_or_kept(self):
        key, cert = self.pki.self_signed("w", "w.example")
        g = self.gateway()
        g.install(self.pki.p12("w.p12", key, cert, "the-right-one"))
        g.write_conf(conf("w.p12", self.PASSWORD))
        g.start()
        self.assertIn("w.p12: wrong password", g.logs())
        self.assertEqual(g.stop(), 0)
        self.assert_secret_nowhere(g, self.PASSWORD)


class RefusalTest(GatewayTest):
    """A custom certificate that cannot be served: the reason is logged, the default
    certificate is served, and the API (here /rest/health) stays reachable."""

    def assert_refused(self, g, reason):
        g.start()
        logs = g.logs()
        self.assertIn("custom certificate not served: " + reason, logs)
        self.assertServes(g, default_pem(g), "the default certificate is not served")
        status, _, body = g.request("GET", "/rest/health")
        self.assertEqual((status, body), (200, b"RUNNING"))
        return logs

    def setup_file(self, p12, password, alias=None):
        g = self.gateway()
        g.install(p12)
        g.write_conf(conf(os.path.basename(p12), password, alias))
        return g

    def test_wrong_password(self):
        key, cert = self.pki.self_signed("c", "c.example")
        g = self.setup_file(self.pki.p12("c.p12", key, cert, "right"), "WrongOne")
        logs = self.assert_refused(g, "c.p12: wrong password")
        self.assertNotIn("WrongOne", logs)
        # the certificate API, the way to repair it remotely, answers
        token = g.token()
        status, _, body = g.request("GET", "/e/myenv/api/v1/certificate/list",
                                    headers={"Authorization": "Api-Token " + token})
        self.assertEqual(status, 200, body)
        self.assertIn(b'"name":"c.p12"', body.replace(b" ", b""))

    def test_no_private_key(self):
        key, cert = self.pki.self_signed("c", "c.example")
        g = self.setup_file(self.pki.p12_nokey("nokey.p12", cert, "pw"), "pw")
        self.assert_refused(g, "nokey.p12: no private key in the file; it must hold a private "
                               "key and its certificate chain")

    def test_key_does_not_match_certificate(self):
        k1, _ = self.pki.self_signed("one", "one.example")
        _, c2 = self.pki.self_signed("two", "two.example")
        p12 = self.pki.forge_p12("mismatch.p12", k1, c2, "pw", alias="mixed")
        g = self.setup_file(p12, "pw")
        self.assert_refused(g, "mismatch.p12: the private key of alias 'mixed' does not match "
                               "its certificate")

    def test_alias_not_found_names_existing_aliases(self):
        store = self.pki.keytool_keypair("ks.p12", "alpha", "a.example", "storepw")
        self.pki.keytool_keypair("ks.p12", "beta", "b.example", "storepw")
        g = self.setup_file(store, "storepw", "gamma")
        self.assert_refused(g, "ks.p12: alias 'gamma' not found; the file's key aliases are: "
                               "'alpha', 'beta'")

    def test_twopass_file(self):
        key, cert = self.pki.self_signed("tp", "tp.example")
        p12 = self.pki.forge_p12("twopass.p12", key, cert, "filepass", encpass="keypass")
        g = self.setup_file(p12, "filepass")
        self.assert_refused(g, "twopass.p12: the key password differs from the file password "
                               "(files made with -twopass are not supported)")

    def test_missing_file(self):
        g = self.gateway()
        g.write_conf(conf("absent.p12", "pw"))
        self.assert_refused(g, "absent.p12: cannot open")

    def test_not_a_pkcs12_file(self):
        key, cert = self.pki.self_signed("pem", "pem.example")
        g = self.setup_file(cert, "pw")
        self.assert_refused(g, "pem.crt: not a PKCS#12 file")

    def test_refusal_then_fixed_by_sighup(self):
        key, cert = self.pki.self_signed("fix", "fix.example")
        g = self.setup_file(self.pki.p12("fix.p12", key, cert, "right"), "wrong")
        self.assert_refused(g, "fix.p12: wrong password")
        g.write_conf(conf("fix.p12", "right"))
        self.assertIn("reloaded", g.reload())
        self.assertServes(g, cert)


class ConfigErrorTest(GatewayTest):
    """A configuration error at start: `run` exits 1, and the message names the file, the
    line and what is wrong."""

    def assert_start_fails(self, text, message):
        g = self.gateway()
        g.write_conf(text)
        rc = g.run_to_exit()
        self.assertEqual(rc, 1, g.logs())
        self.assertIn(message.replace("PATH", g.conf_path), g.logs())
        self.assertNotIn("ready:", g.logs())

    def test_unsupported_protocol(self):
        self.assert_start_fails("[%s]\n\nssl-protocols = TLSv1.1\n" % WEBSERVER,
                                "PATH:3: ssl-protocols: 'TLSv1.1' is not supported; use TLSv1.2, "
                                "TLSv1.3 or both, comma-separated")

    def test_protocol_list_with_one_bad_item(self):
        self.assert_start_fails("[%s]\nssl-protocols = TLSv1.2,SSLv3\n" % WEBSERVER,
                                "PATH:2: ssl-protocols: 'SSLv3' is not supported")

    def test_malformed_line(self):
        self.assert_start_fails("# ok\n[%s]\nthis line has no equals sign\n" % WEBSERVER,
                                "PATH:3: expected 'key = value', '[section]' or a comment")

    def test_bad_timeout(self):
        self.assert_start_fails("[certgate]\nkeepalive-timeout = 1\nheader-timeout = soon\n",
                                "PATH:3: header-timeout: 'soon' is not a number of seconds")

    def test_bad_port(self):
        self.assert_start_fails("[%s]\nport-ssl = 70000\n" % WEBSERVER,
                                "PATH:2: port-ssl: '70000' is out of range")

    def test_bad_switch(self):
        self.assert_start_fails("[certgate]\nssl-session-tickets = maybe\n",
                                "PATH:2: ssl-session-tickets: 'maybe' is not a switch")

    def test_excluded_ciphers_leaving_nothing(self):
        self.assert_start_fails("[%s]\nport-ssl = 9999\nexcluded-ciphers = GCM, CHACHA20\n"
                                % WEBSERVER,
                                "PATH:3: excluded-ciphers leaves no cipher for TLSv1.2")

    def test_unknown_keys_and_sections_are_not_errors(self):
        g = self.gateway()
        g.write_conf("[nobody.knows]\nx = 1\n[%s]\nfuture-key = on\n[certgate]\nnew-thing = 2\n"
                     % WEBSERVER)
        g.start()
        self.assertEqual(g.request("GET", "/rest/health")[0], 200)


if __name__ == "__main__":
    main()
