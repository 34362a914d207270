"""Layer 95 (fleet faults, issue 13): a 3-member etcd on loopback and two or three gateways.
A watch cut mid-stream (the etcd member a gateway watches is killed with SIGKILL, then all
of etcd) still brings later changes; a compacted revision (a gateway stopped with SIGSTOP
while a file is deleted and the active certificate changes, etcd compacted) is followed by
a full read that serves the new certificate and removes the deleted file from DIR/ssl and
GET list, but never a file placed by hand nor the file served; a wrong CA for a TLS etcd is
named in the log of a gateway that serves its cache and by `certgate fleet status`; a
member whose clock is two hours off (libfaketime) converges like the others."""
import base64
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import unittest

from etcd_cluster import EtcdCluster, SharedEtcd, need_etcd
from harness import (SANITIZED, SLOW, WEBSERVER, GatewayTest, certgate, der_fingerprint, main,
                     run, wait_until)

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


class FleetFaultsTest(SharedEtcd, GatewayTest):

    def setUp(self):
        super().setUp()
        self.reset_etcd()
        self.n = 0
        self.token = None

    # ----- helpers -----

    def new_p12(self):
        """A new keystore: (name, DER fingerprint, path, password)."""
        self.n += 1
        name = "c%d.p12" % self.n
        key, cert = self.pki.self_signed("c%d" % self.n, "c%d.example" % self.n, kind="ec",
                                         san="DNS:c%d.example" % self.n)
        pw = "pw-%d" % self.n
        path = self.pki.p12(name, key, cert, pw)
        with open(cert) as f:
            fp = der_fingerprint(ssl.PEM_cert_to_DER_cert(f.read()))
        return name, fp, path, pw

    def control(self, eps, fleet_conf=""):
        """The node that makes the fleet: c1.p12 active, `fleet init`; returns c1's
        fingerprint."""
        self.ctl = self.gateway("ctl")
        self.token = self.ctl.token()
        name, fp, path, pw = self.new_p12()
        self.ctl.install(path, name)
        self.ctl.write_conf("[%s]\ncertificate-file = %s\ncertificate-password = %s\n%s"
                            % (WEBSERVER, name, pw, fleet_conf))
        certgate("fleet", "init", "--data-dir", self.ctl.data_dir, "--etcd", eps)
        return fp

    def member(self, name, eps, extra="", env=None, start=True):
        g = self.gateway(name, env=env)
        g.write_conf("[fleet]\netcd = %s\nmember-id = %s\ntimeout = 2\n%s" % (eps, name, extra))
        dst = os.path.join(g.data_dir, "config", "fleet.key")
        shutil.copyfile(os.path.join(self.ctl.data_dir, "config", "fleet.key"), dst)
        os.chmod(dst, 0o600)
        return g.start() if start else g

    def serves(self, g, fp):
        try:
            return der_fingerprint(g.served_cert()) == fp
        except OSError:
            return False

    def wait_serves(self, g, fp, timeout=10):
        self.assertTrue(wait_until(lambda: self.serves(g, fp), timeout * SLOW), g.logs()[-3000:])

    def upload(self, g, timeout=20):
        """Uploads (and activates) a new keystore through g's API, retrying while the fleet
        answers 503 (etcd coming back); returns (name, fingerprint)."""
        name, fp, path, pw = self.new_p12()
        deadline = time.time() + timeout * SLOW
        while True:
            status, _, body = g.upload(name, path, pw, self.token)
            if status != 503 or time.time() > deadline:
                break
            time.sleep(0.3)
        self.assertEqual(status, 200, body)
        return name, fp

    def listed(self, g):
        status, _, body = g.call("GET", "list", token=self.token)
        self.assertEqual(status, 200, body)
        return sorted(e["name"] for e in json.loads(body))

    def etcd_ports(self, g, cluster=None):
        """The etcd client ports g has established connections to (ss -tnp)."""
        p = run(["ss", "-tnpH", "state", "established"])
        ports = set()
        for line in p.stdout.splitlines():
            if "pid=%d," % g.proc.pid not in line:
                continue
            peer = line.split()[-2] if "users:" in line.split()[-1] else line.split()[-1]
            port = int(peer.rsplit(":", 1)[1])
            if port in (cluster or self.cluster).client:
                ports.add(port)
        return ports

    def member_keys(self):
        p = self.cluster.etcdctl("get", "--prefix", "/certgate/members/", "-w", "json",
                                 members=[i for i in range(3) if self.cluster.procs[i]])
        return {base64.b64decode(kv["key"]).decode().rsplit("/", 1)[1]:
                json.loads(base64.b64decode(kv["value"]))
                for kv in json.loads(p.stdout).get("kvs", [])}

    # ----- tests -----

    def test_watch_cut_mid_stream(self):
        c = self.cluster
        fp = self.control(c.endpoints())
        # a uses m2 first, b m1: killing m1 cuts b's watch but not a's
        a = self.member("a", c.endpoints([1, 2, 0]))
        b = self.member("b", c.endpoints([0, 1, 2]))
        for g in (a, b):
            self.wait_serves(g, fp)
        self.assertIn(c.client[0], wait_until(lambda: self.etcd_ports(b), 5),
                      "b is not connected to m1")
        c.stop(0, signal.SIGKILL)
        name, fp = self.upload(a)
        t = time.time()
        self.wait_serves(b, fp)
        print("\nwatch member killed: the next change reached the other gateway in %.0f ms"
              % ((time.time() - t) * 1000))
        self.assertNotIn(c.client[0], self.etcd_ports(b))
        c.start(0)
        # all of etcd killed, then back: b's watch is cut and nothing answers for a while
        mark = len(b.logs())
        for i in range(3):
            c.stop(i, signal.SIGKILL)
        time.sleep(1.5)
        self.assertTrue(self.serves(b, fp))  # the cache
        c.start()
        name, fp = self.upload(a)
        self.wait_serves(b, fp, 20)
        after = b.logs()[mark:]
        self.assertIn("fleet: serving the local cache: etcd: no endpoint", after)
        # one warning per outage from each thread, not one a second
        self.assertLessEqual(after.count("fleet: serving the local cache"), 1, after)
        self.assertLessEqual(after.count("not kept"), 1, after)
        self.assertTrue(wait_until(lambda: self.member_keys().get("b", {}).get("serving") == name,
                                   10 * SLOW), self.member_keys())

    def test_hung_etcd_member(self):
        # SIGSTOP: the member keeps its connections open but answers nothing, as a hung host
        # or a network that drops packets would; b's watch is cut after 5 x timeout (10 s)
        # of silence and resumed on another member
        c = self.cluster
        fp = self.control(c.endpoints())
        a = self.member("a", c.endpoints([1, 2, 0]))
        b = self.member("b", c.endpoints([0, 1, 2]))
        for g in (a, b):
            self.wait_serves(g, fp)
        self.assertIn(c.client[0], wait_until(lambda: self.etcd_ports(b), 5))
        c.procs[0].send_signal(signal.SIGSTOP)
        try:
            t = time.time()
            name, fp = self.upload(a)
            self.wait_serves(b, fp, 25)
            print("\nwatch member hung (SIGSTOP): the next change reached the other gateway in "
                  "%.1f s (the watch is cut after 10 s of silence)" % (time.time() - t))
        finally:
            c.procs[0].send_signal(signal.SIGCONT)

    def test_progress_notifications_move_the_resume_point(self):
        # etcd set to send progress notifications every second: a quiet watch follows the
        # store's revision, so after a compaction of revisions written outside the prefix, a
        # watch resumed on another member needs no full read
        c = EtcdCluster(os.path.join(self.tmp, "etcd-progress"),
                        extra_args=["--experimental-watch-progress-notify-interval", "1s"])
        self.addCleanup(c.close)
        c.start()
        fp = self.control(c.endpoints())
        b = self.member("b", c.endpoints([0, 1, 2]))
        self.wait_serves(b, fp)
        self.assertIn(c.client[0], wait_until(lambda: self.etcd_ports(b, c), 5))
        time.sleep(3.5)  # b's member key is written again at the first lease refresh
        p = c.etcdctl("put", "/elsewhere/first", "x", "-w", "json")
        first = int(json.loads(p.stdout)["header"]["revision"])
        for i in range(5):
            c.etcdctl("put", "/elsewhere/%d" % i, "x")
        p = c.etcdctl("put", "/elsewhere/last", "x", "-w", "json")
        rev = int(json.loads(p.stdout)["header"]["revision"])
        time.sleep(2.5)  # two progress notifications at least
        p = c.etcdctl("get", "--prefix", "/certgate/", "-w", "json")
        self.assertLess(max(kv["mod_revision"] for kv in json.loads(p.stdout)["kvs"]), first,
                        "a fleet key changed after /elsewhere/first: nothing to show")
        c.etcdctl("compact", str(rev))
        c.stop(0, signal.SIGKILL)  # b's watch is resumed on m2 from its resume point
        name, fp = self.upload(b)
        self.wait_serves(b, fp)
        self.assertNotIn("has been compacted", b.logs())
        self.assertNotIn("serving the local cache", b.logs())

    def test_compacted_revision_full_read_prunes_the_cache(self):
        c = self.cluster
        fp = self.control(c.endpoints())
        a = self.member("a", c.endpoints([1, 2, 0]))
        b = self.member("b", c.endpoints([0, 1, 2]), "environment = myenv\n", start=False)
        # a file the operator placed by hand, which etcd never had
        key, cert = self.pki.self_signed("hand", "hand.example", kind="ec")
        b.install(self.pki.p12("hand.p12", key, cert, "pw-hand"), "hand.p12")
        b.start()
        for g in (a, b):
            self.wait_serves(g, fp)
        n2, fp2 = self.upload(a)
        n3, fp3 = self.upload(a)
        for g in (a, b):
            self.wait_serves(g, fp3)
        self.assertEqual(self.listed(b), ["c1.p12", n2, n3, "hand.p12"])
        self.assertIn(c.client[0], wait_until(lambda: self.etcd_ports(b), 5))
        # b stopped; its watch member goes, so its watch is cut while it cannot notice
        b.send_signal(signal.SIGSTOP)
        try:
            c.stop(0, signal.SIGKILL)
            status, _, body = a.call("DELETE", n2, token=self.token)
            self.assertEqual(status, 200, body)
            n4, fp4 = self.upload(a)  # the active certificate changes (n3 stays in etcd)
            status, _, body = a.call("DELETE", n3, token=self.token)
            self.assertEqual(status, 200, body)
            p = c.etcdctl("get", "/certgate/fleet", "-w", "json", members=[1, 2])
            rev = int(json.loads(p.stdout)["header"]["revision"])
            c.etcdctl("compact", str(rev), members=[1, 2])
        finally:
            b.send_signal(signal.SIGCONT)
        self.wait_serves(b, fp4, 15)
        self.assertTrue(wait_until(lambda: "removed %s" % n3 in b.logs(), 5 * SLOW),
                        b.logs()[-3000:])
        logs = b.logs()
        self.assertRegex(logs, r"revision \d+ has been compacted")
        self.assertIn("fleet: removed %s from %s (etcd no longer has it; seen at a full read)"
                      % (n2, b.ssl_dir), logs)
        for gone in (n2, n3):
            self.assertFalse(os.path.exists(os.path.join(b.ssl_dir, gone)), gone)
        self.assertEqual(self.listed(b), ["c1.p12", n4, "hand.p12"])
        with open(os.path.join(b.data_dir, "config", "fleet-cache.json")) as f:
            self.assertEqual(json.load(f), {"version": 1, "names": ["c1.p12", n4]})
        self.assertEqual(os.stat(os.path.join(b.data_dir, "config",
                                              "fleet-cache.json")).st_mode & 0o777, 0o600)
        # the served file is never removed, even when etcd loses it (etcdctl, not the API,
        # which refuses that); read at the start of b
        b.stop()
        c.start(0)
        c.etcdctl("del", "/certgate/myenv/certs/%s" % n4)
        b.start(port=b.port)
        self.assertTrue(wait_until(lambda: "is no longer in etcd but is kept" in b.logs(),
                                   10 * SLOW), b.logs())
        self.assertIn("fleet: %s is no longer in etcd but is kept: it is the certificate this "
                      "member serves" % n4, b.logs())
        self.assertTrue(self.serves(b, fp4))
        self.assertTrue(os.path.exists(os.path.join(b.ssl_dir, n4)))
        self.assertTrue(os.path.exists(os.path.join(b.ssl_dir, "hand.p12")))
        # an emptied etcd (or a wrong prefix) is not a reason to empty the cache
        b.stop()
        c.etcdctl("del", "--prefix", "/certgate/")
        b.start(port=b.port)
        self.assertTrue(wait_until(lambda: "are not checked against etcd" in b.logs(), 10 * SLOW),
                        b.logs())
        self.assertIn("fleet: cache files in %s are not checked against etcd: etcd has no "
                      "/certgate/myenv/active" % b.ssl_dir, b.logs())
        self.assertEqual(self.listed(b), ["c1.p12", n4, "hand.p12"])
        self.assertNotIn("fleet: removed", b.logs())

    def test_wrong_ca_serves_the_cache_and_names_it(self):
        ca = self.pki.ca("etcd-ca", "etcd test CA")
        key, cert = self.pki.leaf("etcd-server", "127.0.0.1", ca, san="IP:127.0.0.1")
        ckey, ccert = self.pki.leaf("etcd-client", "certgate", ca,
                                    ext_lines=["extendedKeyUsage=clientAuth"])
        tls = EtcdCluster(os.path.join(self.tmp, "etcd-tls"), size=1,
                          tls=(ca[1], cert, key, ccert, ckey))
        self.addCleanup(tls.close)
        tls.start()
        eps = tls.endpoints()
        good = "ca-file = %s\ncert-file = %s\nkey-file = %s\n" % (ca[1], ccert, ckey)
        fp = self.control(eps, "[fleet]\netcd = %s\n%s" % (eps, good))
        b = self.member("b", eps, good)
        self.wait_serves(b, fp)
        b.stop()
        other = self.pki.ca("other-ca", "another CA")
        b.write_conf(b.read_conf().replace("ca-file = %s" % ca[1], "ca-file = %s" % other[1]))
        b.start(port=b.port)
        self.assertTrue(self.serves(b, fp), b.logs())  # the cache
        sentence = ("etcd's TLS certificate is not signed by the CA in ca-file %s; set [fleet] "
                    "ca-file to the CA that issued it" % other[1])
        self.assertTrue(wait_until(lambda: sentence in b.logs(), 10 * SLOW), b.logs())
        line = "fleet: serving the local cache: etcd: no endpoint answered (%s" % eps
        self.assertTrue(wait_until(lambda: line in b.logs(), 10 * SLOW), b.logs())
        p = certgate("fleet", "status", "--data-dir", b.data_dir, check=False)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn(sentence, p.stderr)
        self.assertTrue(p.stderr.startswith("certgate fleet status: etcd: no endpoint answered"),
                        p.stderr)
        # the right CA again: the same command works
        b.write_conf(b.read_conf().replace("ca-file = %s" % other[1], "ca-file = %s" % ca[1]))
        p = certgate("fleet", "status", "--data-dir", b.data_dir)
        self.assertIn("environment myenv: active c1.p12", p.stdout)

    def test_member_clock_two_hours_off_converges(self):
        if SANITIZED:
            raise unittest.SkipTest("libfaketime is an LD_PRELOAD library, and the sanitizer "
                                    "runtime must come first in the library list")
        if not os.path.exists(FAKETIME_LIB):
            raise unittest.SkipTest("libfaketime is not installed (Debian package libfaketime; "
                                    "`scripts/deps.sh test` installs it)")
        c = self.cluster
        fp = self.control(c.endpoints())
        a = self.member("a", c.endpoints())
        env = {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME": "+2h", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
        late = self.member("late", c.endpoints([2, 0, 1]), env=env)
        early = self.member("early", c.endpoints([1, 2, 0]), env=dict(env, FAKETIME="-2h"))
        for g in (a, late, early):
            self.wait_serves(g, fp)
        for _ in range(3):
            name, fp = self.upload(a)
            for g in (late, early):
                self.wait_serves(g, fp)
        keys = wait_until(lambda: (lambda m: m if len(m) == 3 and
                                   {v["serving"] for v in m.values()} == {name} else None)(
            self.member_keys()), 10 * SLOW)
        self.assertTrue(keys, self.member_keys())
        for g in ("a", "late", "early"):
            self.assertEqual(keys[g]["serving"], name)
        # the clocks really were off: the member keys' times (informative only) say so
        t = {g: time.mktime(time.strptime(keys[g]["time"], "%Y-%m-%dT%H:%M:%SZ"))
             for g in keys}
        self.assertGreater(t["late"] - t["a"], 1.9 * 3600)
        self.assertGreater(t["a"] - t["early"], 1.9 * 3600)
        # leases are etcd's TTLs: the members' keys outlive several keepalive rounds
        time.sleep(4)
        self.assertEqual(sorted(self.member_keys()), ["a", "early", "late"])


if __name__ == "__main__":
    main()
