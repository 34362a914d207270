"""Layer 72: every key entry of the active file serves, chosen per handshake by server name
(SNI): exact name, then one-label wildcard; no SNI or no match gets the certificate-alias
entry. An RSA and an ECDSA entry for the same names serve side by side, chosen by what the
client offers. Open connections keep their certificate across a switch, and a session
never resumes under another entry's certificate. Hand-made ClientHellos with broken server
names get the default entry (or OpenSSL's alert), never a crash."""
import json
import os
import re
import shutil
import socket
import ssl
import struct
import tempfile

from harness import (SLOW, GatewayTest, WEBSERVER, client_context, der_subject, main, run,
                     s_client)

PW = "storepw"
FIX = {}  # made once for the module: keytool and openssl are slow


def keytool(*args):
    run(["keytool", "-noprompt"] + list(args))


def genkey(store, alias, cn, keyalg, san=None):
    args = ["-genkeypair", "-storetype", "PKCS12", "-keystore", store, "-storepass", PW,
            "-alias", alias, "-keyalg", keyalg, "-dname", "CN=" + cn, "-validity", "365"]
    if keyalg == "RSA":
        args += ["-keysize", "2048"]
    if san:
        args += ["-ext", "SAN=" + san]
    keytool(*args)


def openssl_p12(folder, name, alias, kind, cn, san):
    """An openssl-made key + self-signed certificate in a one-entry PKCS#12."""
    key = os.path.join(folder, name + ".key")
    crt = os.path.join(folder, name + ".crt")
    if kind == "rsa":
        run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", key])
    else:
        run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", key])
    run(["openssl", "req", "-x509", "-new", "-key", key, "-out", crt, "-days", "365",
         "-subj", "/CN=" + cn, "-addext", "subjectAltName=" + san])
    out = os.path.join(folder, name + ".p12")
    run(["openssl", "pkcs12", "-export", "-inkey", key, "-in", crt, "-name", alias, "-out", out,
         "-passout", "pass:" + PW])
    return out


def setUpModule():
    d = tempfile.mkdtemp(prefix="certgate-sni-")
    FIX["dir"] = d
    # three entries for three names (gamma by its CN only) plus a wildcard entry
    store = os.path.join(d, "names.p12")
    genkey(store, "alpha", "alpha.test", "RSA", "dns:alpha.test")
    genkey(store, "beta", "beta.test", "EC", "dns:beta.test,dns:www.beta.test")
    genkey(store, "gamma", "gamma.test", "RSA")
    genkey(store, "wild", "wildcard", "EC", "dns:*.wild.test")
    FIX["names"] = store
    # an RSA + ECDSA pair for the same names: two openssl files merged by keytool
    pair = os.path.join(d, "pair.p12")
    for alias, kind in (("pair-rsa", "rsa"), ("pair-ec", "ec")):
        src = openssl_p12(d, alias, alias, kind, "pair.test", "DNS:pair.test,DNS:alpha.test")
        keytool("-importkeystore", "-srckeystore", src, "-srcstoretype", "PKCS12",
                "-srcstorepass", PW, "-destkeystore", pair, "-deststoretype", "PKCS12",
                "-deststorepass", PW)
    FIX["pair"] = pair
    # entries the gateway leaves out: the same names and key type as an earlier one
    dup = os.path.join(d, "dup.p12")
    genkey(dup, "first", "first", "EC", "dns:dup.test")
    genkey(dup, "second", "second", "EC", "dns:dup.test")
    FIX["dup"] = dup


def tearDownModule():
    shutil.rmtree(FIX["dir"], ignore_errors=True)


def cn_of(der):
    m = re.search(r"CN=([^,]+)", der_subject(der))
    return m.group(1) if m else None


def sclient_cert(g, *args):
    """(CN, public key bits) of what openssl s_client gets."""
    p = s_client(g.port, *args)
    m = re.search(r"^subject=.*?CN = ([^,\n]+)", p.stdout, re.M)
    b = re.search(r"Server public key is (\d+) bit", p.stdout)
    if not m or not b:
        raise AssertionError("s_client %s: no certificate (exit %d):\n%s\n%s"
                             % (" ".join(args), p.returncode, p.stdout[-1500:], p.stderr[-1500:]))
    return m.group(1).strip(), int(b.group(1))


# ----- a hand-made TLS 1.2 ClientHello, to send server names no library sends -----

def u16(n):
    return struct.pack(">H", n)


def ext(kind, body):
    return u16(kind) + u16(len(body)) + body


def sni_ext(name_bytes, list_len=None):
    entry = b"\x00" + u16(len(name_bytes)) + name_bytes
    return ext(0, u16(len(entry) if list_len is None else list_len) + entry)


def client_hello(extensions):
    suites = struct.pack(">HH", 0xC02F, 0xC030)  # ECDHE-RSA-AES128/256-GCM
    base = (ext(10, u16(4) + struct.pack(">HH", 0x001D, 0x0017)) + ext(11, b"\x01\x00") +
            ext(13, u16(6) + struct.pack(">HHH", 0x0804, 0x0401, 0x0501)))
    exts = extensions + base
    body = (b"\x03\x03" + os.urandom(32) + b"\x00" + u16(len(suites)) + suites + b"\x01\x00" +
            u16(len(exts)) + exts)
    hs = b"\x01" + struct.pack(">I", len(body))[1:] + body
    return b"\x16\x03\x01" + u16(len(hs)) + hs


def raw_hello(port, extensions):
    """Sends the ClientHello; returns ("cert", leaf DER), ("alert", description) or
    ("closed", None)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW) as s:
        s.sendall(client_hello(extensions))
        data, hs = b"", b""
        while True:
            while len(data) < 5 or len(data) < 5 + struct.unpack(">H", data[3:5])[0]:
                try:
                    chunk = s.recv(65536)
                except (ConnectionError, socket.timeout):
                    chunk = b""
                if not chunk:
                    return ("closed", None)
                data += chunk
            n = struct.unpack(">H", data[3:5])[0]
            kind, frag, data = data[0], data[5:5 + n], data[5 + n:]
            if kind == 0x15:
                return ("alert", frag[1])
            if kind != 0x16:
                return ("closed", None)
            hs += frag
            while len(hs) >= 4:
                mlen = struct.unpack(">I", b"\x00" + hs[1:4])[0]
                if len(hs) < 4 + mlen:
                    break
                mtype, msg, hs = hs[0], hs[4:4 + mlen], hs[4 + mlen:]
                if mtype == 11:  # Certificate: list<3>, first cert<3>
                    clen = struct.unpack(">I", b"\x00" + msg[3:6])[0]
                    return ("cert", msg[6:6 + clen])


class SniTest(GatewayTest):
    def start(self, alias="beta", name="names.p12", src="names"):
        """A gateway with certificate-alias `alias` in custom.properties, and `src`
        uploaded and activated through the API."""
        g = self.gateway()
        if alias:
            g.write_conf("[%s]\ncertificate-alias = %s\n" % (WEBSERVER, alias))
        tok = g.token()
        g.start()
        status, _, body = g.upload(name, FIX[src], PW, tok)
        self.assertEqual(status, 200, body)
        return g, tok, json.loads(body)

    def served(self, g, server_name):
        return cn_of(g.served_cert(server_name))

    def test_names_choose_the_entry(self):
        g, tok, d = self.start()
        names = {e["alias"]: e["names"] for e in d["desc"]}
        self.assertEqual(names, {"alpha": ["alpha.test"], "beta": ["beta.test", "www.beta.test"],
                                 "gamma": ["gamma.test"], "wild": ["*.wild.test"]})
        self.assertEqual(d["warnings"], [], d)
        for sni, want in (("alpha.test", "alpha.test"), ("beta.test", "beta.test"),
                          ("www.beta.test", "beta.test"), ("gamma.test", "gamma.test"),
                          ("x.wild.test", "wildcard"), ("ALPHA.Test", "alpha.test"),
                          ("a.b.wild.test", "beta.test"), ("wild.test", "beta.test"),
                          ("unknown.test", "beta.test")):
            cn, _ = sclient_cert(g, "-servername", sni)
            self.assertEqual(cn, want, "server name %s" % sni)
        cn, _ = sclient_cert(g, "-noservername")
        self.assertEqual(cn, "beta.test", "no SNI: the certificate-alias entry")
        # the list of stored files shows the names too
        status, _, body = g.call("GET", "list", tok)
        active = [f for f in json.loads(body) if f.get("active")][0]
        self.assertEqual([e["names"] for e in active["desc"]][0], ["alpha.test"])

    def test_without_alias_the_first_entry_is_default(self):
        g, tok, _ = self.start(alias="nosuchalias")
        self.assertEqual(self.served(g, None), "alpha.test")
        self.assertEqual(self.served(g, "gamma.test"), "gamma.test")
        self.assertEqual(self.served(g, "nothing.test"), "alpha.test")

    def test_rsa_and_ecdsa_pair(self):
        g, tok, d = self.start(alias="pair-rsa", name="pair.p12", src="pair")
        self.assertEqual(sorted(e["keyType"] for e in d["desc"]), ["EC-P256", "RSA-2048"])
        for args, bits in ((("-sigalgs", "ECDSA+SHA256"), 256),
                           (("-sigalgs", "RSA-PSS+SHA256:RSA+SHA256"), 2048),
                           (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"), 256),
                           (("-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"), 2048),
                           (("-tls1_2", "-sigalgs", "RSA+SHA256"), 2048),
                           ((), 256)):  # offers both: the server prefers ECDSA
            for sni in (("-servername", "pair.test"), ("-noservername",)):
                cn, got = sclient_cert(g, *(sni + args))
                self.assertEqual((cn, got), ("pair.test", bits), " ".join(sni + args))

    def test_left_out_entries_are_warned(self):
        g, tok, d = self.start(alias="", name="dup.p12", src="dup")
        self.assertEqual([e["names"] for e in d["desc"]], [["dup.test"], ["dup.test"]])
        self.assertIn("alias 'second' is not served: alias 'first' answers for the same names "
                      "with the same key type", d["warnings"])
        self.assertEqual(self.served(g, "dup.test"), "first")
        # a dry run says so too
        status, _, body = g.call("POST", "dup.p12/activate?dryRun=true", tok,
                                 headers={"X-Password": PW})
        self.assertEqual(status, 200, body)
        self.assertEqual(len([w for w in json.loads(body)["warnings"] if "not served" in w]), 1)

    def test_open_connection_keeps_its_certificate(self):
        g, tok, _ = self.start()
        ctx = client_context()
        raw = socket.create_connection(("127.0.0.1", g.port), timeout=10 * SLOW)
        t = ctx.wrap_socket(raw, server_hostname="gamma.test")
        before = t.getpeercert(binary_form=True)
        self.assertEqual(cn_of(before), "gamma.test")
        req = b"GET /rest/health HTTP/1.1\r\nHost: x\r\n\r\n"
        t.sendall(req)
        self.assertIn(b"200", t.recv(65536))
        # a switch to a set without gamma.test
        status, _, body = g.upload("pair.p12", FIX["pair"], PW, tok)
        self.assertEqual(status, 200, body)
        self.assertEqual(self.served(g, "gamma.test"), "pair.test")
        self.assertEqual(self.served(g, "alpha.test"), "pair.test")
        t.sendall(req)
        self.assertIn(b"200", t.recv(65536))
        self.assertEqual(t.getpeercert(binary_form=True), before)
        t.close()

    def resume(self, g, version, first, second):
        """Connects with server name `first`, then offers that session with `second`:
        (reused, CN of the second handshake)."""
        ctx = client_context()  # one context: Python offers a session only to its own
        ctx.minimum_version = ctx.maximum_version = version

        def connect(name, session=None):
            raw = socket.create_connection(("127.0.0.1", g.port), timeout=10 * SLOW)
            t = ctx.wrap_socket(raw, server_hostname=name, session=session)
            t.sendall(b"GET /rest/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while t.recv(65536):  # reads the TLS 1.3 ticket too
                pass
            return t

        t = connect(first)
        sess = t.session
        t.close()
        self.assertIsNotNone(sess)
        t3 = connect(second, session=sess)
        out = (t3.session_reused, cn_of(t3.getpeercert(binary_form=True)))
        t3.close()
        return out

    def test_sessions_stay_with_their_entry(self):
        g, tok, _ = self.start()
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            # the control: the same name resumes (so the test can fail)
            self.assertEqual(self.resume(g, version, "alpha.test", "alpha.test"),
                             (True, "alpha.test"), version)
            self.assertEqual(self.resume(g, version, "alpha.test", "gamma.test"),
                             (False, "gamma.test"), version)
            self.assertEqual(self.resume(g, version, "gamma.test", "beta.test"),
                             (False, "beta.test"), version)
            # the default entry's session offered with a name of another entry
            self.assertEqual(self.resume(g, version, "unknown.test", "alpha.test"),
                             (False, "alpha.test"), version)

    def test_broken_server_names(self):
        g, tok, _ = self.start(alias="alpha")
        default = cn_of(g.served_cert(None))
        self.assertEqual(default, "alpha.test")
        ok = ("cert", None)

        def check(extensions, what, alert_ok=False):
            kind, val = raw_hello(g.port, extensions)
            if kind == "cert":
                self.assertEqual(cn_of(val), "alpha.test", what)
            elif not alert_ok:
                self.fail("%s: %s %r" % (what, kind, val))
            # the gateway still answers
            self.assertEqual(self.served(g, "gamma.test"), "gamma.test", what)

        self.assertEqual(raw_hello(g.port, sni_ext(b"gamma.test"))[0], ok[0])
        self.assertEqual(cn_of(raw_hello(g.port, sni_ext(b"gamma.test"))[1]), "gamma.test")
        check(b"", "no server_name extension")
        check(sni_ext(b"127.0.0.1"), "IPv4 literal")
        check(sni_ext(b"::1"), "IPv6 literal")
        check(sni_ext(b"[::1]"), "bracketed IPv6 literal")
        check(sni_ext(b"\xff\xfe\x80garbage\x01.test"), "non-ASCII bytes")
        check(sni_ext(b"*.wild.test"), "a wildcard as the name")
        check(sni_ext(b"gamma.test\x00.evil"), "NUL inside", alert_ok=True)
        check(sni_ext(b""), "empty name", alert_ok=True)
        check(sni_ext(b"a" * 64 + b".test"), "64-byte label")
        check(sni_ext(b"a." * 127), "254 characters")
        check(sni_ext(b"x" * 300), "over-long name", alert_ok=True)
        check(sni_ext(b"y" * 65000), "very long name", alert_ok=True)
        check(sni_ext(b"gamma.test", list_len=3), "list length too short", alert_ok=True)
        check(sni_ext(b"gamma.test", list_len=200), "list length too long", alert_ok=True)
        check(ext(0, b""), "empty extension", alert_ok=True)
        check(ext(0, b"\x00"), "one byte", alert_ok=True)
        check(ext(0, u16(13) + b"\x01" + u16(10) + b"gamma.test"), "not a host_name type",
              alert_ok=True)
        self.assertIsNone(g.proc.poll(), "the gateway died")


if __name__ == "__main__":
    main()
