"""Layer 90: an outside TLS scan. Debian's testssl.sh against a gateway serving a
certificate signed by a test CA (made now with openssl: a CA and a leaf with SANs, a CRL
distribution point and an OCSP address, as a public CA issues them), trusted with
--add-ca. Asserted: no finding rated HIGH or CRITICAL; only TLS 1.2 and 1.3 offered;
forward secrecy for every cipher offered (each one's key exchange, from the per-protocol
cipher list). MEDIUM and LOW findings are printed.

Checks run: -p protocols, -s cipher categories, -f forward secrecy, -S server defaults and
the certificate, -P server preference, -U vulnerabilities, -E ciphers per protocol; not
the client simulations (-c) nor the HTTP header checks (-h), which say nothing about TLS
and double the time. About 60 s in release; under ASan (CERTGATE_SANITIZED=1) the same
checks run, only slower (allowed up to 15 minutes)."""
import json
import os
import shutil
import subprocess
import time

from harness import GatewayTest, SANITIZED, main

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")
CHECKS = ["-p", "-s", "-f", "-S", "-P", "-U", "-E"]
OLD_PROTOCOLS = ("SSLv2", "SSLv3", "TLS1", "TLS1_1")


class TestsslScan(GatewayTest):
    def test_scan(self):
        self.assertTrue(TESTSSL, "testssl.sh is not installed (scripts/deps.sh test)")
        ca = self.pki.ca("ca", "certgate scan test CA")
        key, crt = self.pki.leaf(
            "leaf", "localhost", ca, kind="rsa", san="DNS:localhost,IP:127.0.0.1",
            ext_lines=["keyUsage=critical,digitalSignature,keyEncipherment",
                       "extendedKeyUsage=serverAuth",
                       "crlDistributionPoints=URI:http://127.0.0.1:9/ca.crl",
                       "authorityInfoAccess=OCSP;URI:http://127.0.0.1:9/ocsp"])
        p12 = self.pki.p12("leaf.p12", key, crt, "scan-pw", chain=[ca[1]])
        g = self.gateway(threads=2)
        g.install(p12)
        g.write_sections(webserver="certificate-file = leaf.p12\n"
                                   "certificate-password = scan-pw\n")
        g.start()
        self.assertServes(g, crt)

        out = os.path.join(self.tmp, "testssl.json")
        cmd = [TESTSSL, "--quiet", "--color", "0", "--warnings", "off", "--nodns", "none",
               "--add-ca", ca[1], "--connect-timeout", "10", "--openssl-timeout", "10",
               "--jsonfile", out] + CHECKS + ["127.0.0.1:%d" % g.port]
        t0 = time.monotonic()
        p = subprocess.run(cmd, capture_output=True, text=True,
                           timeout=900 if SANITIZED else 300)
        took = time.monotonic() - t0
        self.assertTrue(os.path.exists(out), "testssl.sh wrote no JSON (exit %d):\n%s\n%s"
                        % (p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
        with open(out) as f:
            findings = json.load(f)
        by_id = {x["id"]: x for x in findings}
        print("\n    testssl.sh %s: %d findings in %.0f s (exit %d)"
              % (" ".join(CHECKS), len(findings), took, p.returncode))
        for x in findings:
            if x["severity"] in ("MEDIUM", "LOW"):
                print("    %-6s %s: %s" % (x["severity"], x["id"], x["finding"]))

        bad = ["%s %s: %s" % (x["severity"], x["id"], x["finding"]) for x in findings
               if x["severity"] in ("HIGH", "CRITICAL")]
        self.assertEqual(bad, [], "testssl.sh rates these HIGH or CRITICAL")
        # the scan really ran: the certificate was seen and trusted, vulnerabilities tested
        self.assertEqual(by_id["cert_chain_of_trust"]["severity"], "OK",
                         by_id["cert_chain_of_trust"])
        for vid in ("heartbleed", "CCS", "ROBOT", "secure_renego", "CRIME_TLS", "POODLE_SSL",
                    "SWEET32", "FREAK", "LOGJAM", "BEAST", "LUCKY13", "RC4"):
            self.assertIn(vid, by_id, "no %s finding: did -U run?" % vid)

        # protocols: TLS 1.2 and 1.3 only
        for proto in OLD_PROTOCOLS:
            self.assertIn("not offered", by_id[proto]["finding"], by_id[proto])
        for proto in ("TLS1_2", "TLS1_3"):
            self.assertTrue(by_id[proto]["finding"].startswith("offered"), by_id[proto])

        # forward secrecy everywhere: every cipher offered (-E lists them per protocol,
        # "cipher-<protocol>_<code>") has an ephemeral key exchange
        ciphers = [x for x in findings if x["id"].startswith("cipher-")]
        self.assertTrue(ciphers, "no cipher list (-E) in the findings")
        protos = set()
        for x in ciphers:
            proto = x["id"][len("cipher-"):].rsplit("_", 1)[0]
            protos.add(proto)
            self.assertIn(proto, ("tls1_2", "tls1_3"), x)
            # "TLS 1.2   xc02f   ECDHE-RSA-AES128-GCM-SHA256   ECDH 253   AESGCM ..."
            kx = x["finding"].split()[4]
            self.assertIn(kx, ("ECDH", "DH"), "no forward secrecy: %s" % x["finding"])
        self.assertEqual(protos, {"tls1_2", "tls1_3"})
        fs = by_id.get("FS") or by_id.get("PFS")
        self.assertIsNotNone(fs, "no forward secrecy finding")
        self.assertEqual(fs["severity"], "OK", fs)
        self.assertIsNone(g.proc.poll(), "the gateway died during the scan")


if __name__ == "__main__":
    main()
