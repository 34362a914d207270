"""Layer 71: expiry warnings and the stored certificates' facts (issue 11, items 1 and 2).

Real certificates made by openssl (`req -x509 -days N`, and `openssl ca -enddate` for one
that has already expired), real uploads through the API, real restarts; the gauges are
scraped from metrics-listen and checked by promtool (Debian's prometheus package)."""
import calendar
import json
import os
import re
import shutil
import stat
import subprocess
import time
import urllib.request

from harness import (SLOW, WEBSERVER, GatewayTest, certgate, der_fingerprint, free_port, main,
                     run)

NA = "certgate_certificate_not_after_timestamp_seconds"
NB = "certgate_certificate_not_before_timestamp_seconds"
LINE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def gauges(text, name):
    """{file: (alias, sha256, served, value)} of one gauge."""
    out = {}
    for line in text.splitlines():
        m = LINE_RE.match(line)
        if not m or m.group(1) != name:
            continue
        ls = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[ls["file"]] = (ls["alias"], ls["sha256"], ls["served"], float(m.group(3)))
    return out


def not_after(crt):
    out = run(["openssl", "x509", "-in", crt, "-noout", "-enddate"]).stdout
    t = time.strptime(out.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y GMT")
    return float(calendar.timegm(t))


def sha_of(crt):
    out = run(["openssl", "x509", "-in", crt, "-noout", "-fingerprint", "-sha256"]).stdout
    return out.strip().split("=", 1)[1].replace(":", "").lower()


class ExpiryTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.mport = free_port()

    def cert(self, name, days):
        """(p12 path, crt path) of a self-signed certificate valid for `days` days."""
        key, crt = self.pki.self_signed(name, "%s.example" % name, days=days,
                                        san="DNS:%s.example" % name)
        return self.pki.p12(name + ".p12", key, crt, "pw-" + name, alias=name), crt

    def gw_serving(self, p12, name, password):
        g = self.gateway()
        g.install(p12, name)
        g.write_conf("[%s]\ncertificate-file = %s\ncertificate-password = %s\n"
                     "[certgate]\nmetrics-listen = 127.0.0.1:%d\n"
                     % (WEBSERVER, name, password, self.mport))
        return g

    def scrape(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.mport,
                                    timeout=10 * SLOW) as r:
            text = r.read().decode()
        p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
        self.assertEqual((p.returncode, p.stdout + p.stderr), (0, ""), text)
        return text

    def warnings_of(self, g, sha):
        return [l for l in g.logs().splitlines() if sha[:16] in l and
                ("expires in" in l or "expired" in l)]

    def test_warnings_once_and_records_survive_a_restart(self):
        soon, soon_crt = self.cert("soon", 5)
        twenty, twenty_crt = self.cert("twenty", 20)
        two, two_crt = self.cert("two", 2)
        one, one_crt = self.cert("one", 1)
        g = self.gw_serving(soon, "soon.p12", "pw-soon")
        tok = g.token()
        g.start()
        sha = {n: sha_of(c) for n, c in (("soon", soon_crt), ("twenty", twenty_crt),
                                          ("two", two_crt), ("one", one_crt))}
        # the served certificate is inside the 7-day threshold at start: said once
        self.assertTrue(g.wait_log(r"WARN.*served certificate CN=soon\.example, file soon\.p12 "
                                   r"alias soon, sha256 %s expires in [45] days \(\d{4}-\d\d-\d\dT"
                                   r"\d\d:\d\d:\d\dZ\) \(the 7-day warning\)" % sha["soon"][:16]),
                        g.logs())
        # uploads (each is activated at once) of certificates at 20, 2 and 1 day(s)
        for name, p12 in (("twenty", twenty), ("two", two), ("one", one)):
            st, _, body = g.upload(name + ".p12", p12, "pw-" + name, tok)
            self.assertEqual(st, 200, body)
        self.assertTrue(g.wait_log(r"certificate CN=twenty\.example, file twenty\.p12 alias "
                                   r"twenty, sha256 %s expires in (19|20) days .*the 30-day warning"
                                   % sha["twenty"][:16]), g.logs())
        self.assertTrue(g.wait_log(r"certificate CN=two\.example.* expires in (1 day|2 days) .*"
                                   r"the 7-day warning"), g.logs())
        self.assertTrue(g.wait_log(r"certificate CN=one\.example.* expires in (1 day|23 hours) .*"
                                   r"the 1-day warning"), g.logs())
        st, _, body = g.activate("soon.p12", "pw-soon", tok)  # the others are now stored
        self.assertEqual(st, 200, body)
        g.reload()  # checks again: nothing new to say
        time.sleep(0.5 * SLOW)
        for n in sha:
            self.assertEqual(len(self.warnings_of(g, sha[n])), 1, (n, g.logs()))
        self.assertNotIn("14-day", g.logs())

        # the records: public facts only, 0600, invisible to the API's list
        meta = os.path.join(g.data_dir, "ssl-meta")
        self.assertEqual(sorted(os.listdir(meta)),
                         ["one.p12.json", "soon.p12.json", "twenty.p12.json", "two.p12.json"])
        for f in os.listdir(meta):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(meta, f)).st_mode), 0o600)
            with open(os.path.join(meta, f)) as fh:
                text = fh.read()
            self.assertNotIn("pw-", text)
        with open(os.path.join(meta, "twenty.p12.json")) as fh:
            rec = json.load(fh)
        self.assertEqual(rec["entries"][0]["sha256"], sha["twenty"])
        self.assertEqual(rec["entries"][0]["not_after"], not_after(twenty_crt))
        st, _, body = g.call("GET", "list", tok)
        self.assertEqual(st, 200)
        self.assertEqual(sorted(e["name"] for e in json.loads(body)),
                         ["one.p12", "soon.p12", "twenty.p12", "two.p12"])

        # delete: the record goes with the file
        st, _, _ = g.call("DELETE", "one.p12", tok)
        self.assertEqual(st, 200)
        self.assertFalse(os.path.exists(os.path.join(meta, "one.p12.json")))
        # a stored file changed by hand: its record is stale
        time.sleep(0.01)
        shutil.copyfile(two, os.path.join(g.ssl_dir, "two.p12"))  # in place: new mtime

        g.stop()
        g.start()
        # after the restart: the stored facts are known again without any password
        self.assertTrue(g.wait_log(r"WARN.*stored certificate CN=twenty\.example, file "
                                   r"twenty\.p12 alias twenty, sha256 %s expires in (19|20) days .*"
                                   r"the 30-day warning" % sha["twenty"][:16]), g.logs())
        self.assertTrue(g.wait_log(r"WARN.*served certificate CN=soon\.example.*the 7-day"),
                        g.logs())
        self.assertTrue(g.wait_log(r"certificate record .*two\.p12\.json ignored: stale"),
                        g.logs())
        na = gauges(self.scrape(), NA)
        self.assertEqual(na, {
            "soon.p12": ("soon", sha["soon"][:16], "true", not_after(soon_crt)),
            "twenty.p12": ("twenty", sha["twenty"][:16], "false", not_after(twenty_crt)),
        })
        nb = gauges(self.scrape(), NB)
        self.assertEqual(set(nb), {"soon.p12", "twenty.p12"})
        self.assertLess(nb["twenty.p12"][3], na["twenty.p12"][3])
        self.assertEqual(der_fingerprint(g.served_cert())[:16], sha["soon"][:16])
        self.assertEqual(self.warnings_of(g, sha["two"]), [])  # stale: not known

        # a describe with the password makes the changed file known again
        st, _, body = g.call("GET", "two.p12/list", tok, headers={"X-Password": "pw-two"})
        self.assertEqual(st, 200, body)
        self.assertTrue(g.wait_log(r"stored certificate CN=two\.example.*the 7-day"), g.logs())
        self.assertIn("two.p12", gauges(self.scrape(), NA))
        self.assertTrue(os.path.exists(os.path.join(meta, "two.p12.json")))

    def test_cert_import_records_the_facts(self):
        """`certgate cert import` (PEM in) records the facts: a gateway started later has
        the imported file's gauges and warns of it, though it never had its password."""
        key, crt = self.pki.self_signed("imp", "imp.example", days=10, san="DNS:imp.example")
        g = self.gateway()
        g.write_conf("[certgate]\nmetrics-listen = 127.0.0.1:%d\n" % self.mport)
        certgate("cert", "import", "--data-dir", g.data_dir, "--certificate", crt, "--key", key,
                 "--name", "imp.p12")
        rec = os.path.join(g.data_dir, "ssl-meta", "imp.p12.json")
        self.assertEqual(stat.S_IMODE(os.stat(rec).st_mode), 0o600)
        g.start()
        sha = sha_of(crt)
        self.assertTrue(g.wait_log(r"WARN.*stored certificate CN=imp\.example, file imp\.p12 "
                                   r"alias 1, sha256 %s expires in (9|10) days .*the 14-day warning"
                                   % sha[:16]), g.logs())
        na = gauges(self.scrape(), NA)
        self.assertEqual(na["imp.p12"], ("1", sha[:16], "false", not_after(crt)))
        self.assertEqual(na[""][2], "true")  # the default certificate is served

    def test_an_expired_served_certificate_is_an_error(self):
        d = self.pki.path("ca")
        os.makedirs(d)
        with open(os.path.join(d, "ca.cnf"), "w") as f:
            f.write("[ca]\ndefault_ca = cg\n[cg]\ndir = .\ndatabase = ./index.txt\n"
                    "new_certs_dir = .\nserial = ./serial\ndefault_md = sha256\npolicy = pol\n"
                    "unique_subject = no\n[pol]\ncommonName = supplied\n")
        open(os.path.join(d, "index.txt"), "w").close()
        with open(os.path.join(d, "serial"), "w") as f:
            f.write("01\n")
        end = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() - 3 * 86400 - 600))
        run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem",
             "-out", "r.csr", "-subj", "/CN=old.example"], cwd=d)
        run(["openssl", "ca", "-config", "ca.cnf", "-selfsign", "-keyfile", "k.pem", "-in",
             "r.csr", "-out", "c.pem", "-startdate", "20200101000000Z", "-enddate", end,
             "-batch"], cwd=d)
        p12 = self.pki.p12("old.p12", os.path.join(d, "k.pem"), os.path.join(d, "c.pem"), "pw")
        g = self.gw_serving(p12, "old.p12", "pw")
        g.start()
        self.assertTrue(g.wait_log(r"ERROR.*served certificate CN=old\.example, file old\.p12 "
                                   r"alias 1, sha256 [0-9a-f]{16} expired 3 days ago \(.*\): "
                                   r"clients refuse it"), g.logs())
        self.assertEqual(g.logs().count("expired 3 days ago"), 1)


if __name__ == "__main__":
    main()
