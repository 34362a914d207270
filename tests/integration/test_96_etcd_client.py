"""Layer 96: the etcd v3 client (src/etcd.c, issue 13) against a real 3-member etcd cluster
on loopback (Debian etcd-server 3.4), driven through tests/tools/etcdtool: range with prefix
and revision, transactions and their conflicts, leases, the streaming watch (resumed on
another member when its member stops, compaction detected), endpoint failover, etcd's
request limit, answers that are not etcd's, and TLS with the right and a wrong CA."""
import os
import re
import signal
import subprocess
import threading
import time

from etcd_cluster import EtcdCluster, need_etcd
from harness import SLOW, GatewayTest, free_port, main, run, tool


class EtcdClientTest(GatewayTest):
    def setUp(self):
        need_etcd()
        super().setUp()
        self.cluster = EtcdCluster(os.path.join(self.tmp, "etcd"))
        self.addCleanup(self.cluster.close)
        self.cluster.start()
        self.eps = self.cluster.endpoints()

    def tool(self, *args, check=True, eps=None, opts=()):
        return run([tool("etcdtool")] + list(opts) + [eps or self.eps] + list(args), check=check,
                   timeout=60 * SLOW)

    def revision(self, out):
        m = re.search(r"(?:^|\s)revision (\d+)", out)
        self.assertTrue(m, out)
        return int(m.group(1))

    def test_range_and_txn(self):
        r = self.revision(self.tool("put", "/cg/a", "one").stdout)
        self.tool("put", "/cg/b", "two")
        self.tool("put", "/cgx", "outside")
        out = self.tool("get", "/cg/", "prefix").stdout
        self.assertRegex(out, r"\n/cg/a mod=%d create=%d version=1 lease=0 value=one\n" % (r, r))
        self.assertIn("/cg/b mod=%d" % (r + 1), out)
        self.assertNotIn("/cgx", out)
        self.assertEqual(self.revision(out), r + 2)
        # an older revision, and etcdctl sees what the client wrote
        self.tool("put", "/cg/a", "one-b")
        self.assertIn("value=one\n", self.tool("get", "/cg/a", "key", "rev", str(r)).stdout)
        self.assertEqual(self.cluster.etcdctl("get", "/cg/a", "--print-value-only").stdout,
                         "one-b\n")
        # create: only while the key does not exist
        self.assertRegex(self.tool("create", "/cg/c", "first").stdout, r"^ok revision")
        self.assertRegex(self.tool("create", "/cg/c", "second").stdout, r"^conflict revision")
        self.assertIn("value=first", self.tool("get", "/cg/c").stdout)
        # compare-and-swap on mod_revision: a stale revision changes nothing
        mod = int(re.search(r"/cg/c mod=(\d+)", self.tool("get", "/cg/c").stdout).group(1))
        self.assertRegex(self.tool("cas", "/cg/c", "third", str(mod)).stdout, r"^ok ")
        self.assertRegex(self.tool("cas", "/cg/c", "fourth", str(mod)).stdout, r"^conflict ")
        self.assertIn("value=third", self.tool("get", "/cg/c").stdout)
        # the same compare from many writers at once, on different members: exactly one wins
        mod = int(re.search(r"/cg/c mod=(\d+)", self.tool("get", "/cg/c").stdout).group(1))
        procs = [subprocess.Popen([tool("etcdtool"), self.cluster.url(i % 3), "cas", "/cg/c",
                                   "w%d" % i, str(mod)], stdout=subprocess.PIPE, text=True)
                 for i in range(6)]
        outs = [p.communicate(timeout=30 * SLOW)[0] for p in procs]
        wins = [i for i, o in enumerate(outs) if o.startswith("ok ")]
        self.assertEqual(len(wins), 1, outs)
        self.assertEqual(sum(o.startswith("conflict ") for o in outs), 5, outs)
        self.assertIn("value=w%d\n" % wins[0], self.tool("get", "/cg/c").stdout)
        # delete with a prefix
        self.tool("del", "/cg/", "prefix")
        self.assertEqual(self.tool("get", "/cg/", "prefix").stdout.count("\n"), 1)
        self.assertIn("value=outside", self.tool("get", "/cgx").stdout)

    def test_leases(self):
        lease = re.search(r"^lease (\d+)$", self.tool("grant", "3").stdout, re.M).group(1)
        self.tool("put", "/cg/members/m1", "rev 7", "lease", lease)
        self.assertIn("lease=%d" % int(lease), self.tool("get", "/cg/members/m1").stdout)
        for _ in range(3):  # kept alive past its TTL
            time.sleep(1.2)
            ttl = int(re.search(r"ttl (\d+)", self.tool("keepalive", lease).stdout).group(1))
            self.assertGreater(ttl, 1)
        self.assertIn("value=rev 7", self.tool("get", "/cg/members/m1").stdout)
        self.assertEqual(self.tool("revoke", lease).stdout, "revoked\n")
        self.assertNotIn("/cg/members/m1", self.tool("get", "/cg/members/m1").stdout)
        p = self.tool("keepalive", lease, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stderr, r"^error: etcd http://127\.0\.0\.1:\d+: lease %s has expired "
                         r"or was revoked\n$" % lease)
        p = self.tool("revoke", lease, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("etcdserver: requested lease not found", p.stderr)
        # without keepalive the key goes with its lease
        short = re.search(r"^lease (\d+)$", self.tool("grant", "1").stdout, re.M).group(1)
        self.tool("put", "/cg/members/m2", "x", "lease", short)
        deadline = time.time() + 10 * SLOW
        while "/cg/members/m2" in self.tool("get", "/cg/members/m2").stdout:
            self.assertLess(time.time(), deadline, "the leased key did not expire")
            time.sleep(0.2)

    def start_watch(self, key, mode, start, count, eps=None):
        p = subprocess.Popen([tool("etcdtool"), eps or self.eps, "watch", key, mode, str(start),
                              str(count)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        self.assertEqual(p.stdout.readline(), "watching\n")
        return p

    def test_watch_and_compaction(self):
        r0 = self.revision(self.tool("put", "/cg/w/a", "0").stdout)
        w = self.start_watch("/cg/w/", "prefix", r0, 5)
        self.tool("put", "/cg/w/b", "1")
        self.tool("put", "/cg/other", "not watched")
        self.tool("put", "/cg/w/a", "bin\x01")
        self.tool("del", "/cg/w/b")
        self.tool("put", "/cg/w/c", "3")
        out, errs = w.communicate(timeout=30 * SLOW)
        self.assertEqual(w.returncode, 0, errs)
        ev = out.splitlines()
        self.assertEqual(len(ev), 5, out)
        self.assertEqual(ev[0], "event put /cg/w/a mod=%d value=0" % r0)  # from the revision
        self.assertRegex(ev[1], r"^event put /cg/w/b mod=\d+ value=1$")
        self.assertRegex(ev[2], r"^event put /cg/w/a mod=\d+ value=bin\\x01$")
        self.assertRegex(ev[3], r"^event delete /cg/w/b mod=\d+ value=$")
        self.assertRegex(ev[4], r"^event put /cg/w/c mod=\d+ value=3$")
        # compacted: a watch from before the compaction says so, with the oldest revision
        last = self.revision(self.tool("put", "/cg/w/d", "4").stdout)
        self.cluster.etcdctl("compact", str(last))
        p = self.tool("watch", "/cg/w/", "prefix", str(r0), "1", check=False)
        self.assertEqual(p.returncode, 3, p.stdout + p.stderr)
        self.assertIn("compacted %d\n" % last, p.stdout)
        self.assertRegex(p.stderr, r"etcd http://127\.0\.0\.1:\d+: revision %d has been "
                         r"compacted \(the oldest is %d\)" % (r0, last))
        p = self.tool("get", "/cg/w/a", "key", "rev", str(r0), check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("etcdserver: mvcc: required revision has been compacted", p.stderr)
        # from the compaction revision on, the watch works
        w = self.start_watch("/cg/w/", "prefix", last, 1)
        out, _ = w.communicate(timeout=30 * SLOW)
        self.assertEqual(out, "event put /cg/w/d mod=%d value=4\n" % last)

    def test_failover(self):
        # the first endpoint's member is stopped: requests go to the next ones
        self.tool("put", "/cg/f", "before")
        self.cluster.stop(0)
        t = time.time()
        self.assertIn("value=before", self.tool("get", "/cg/f").stdout)
        self.assertRegex(self.tool("put", "/cg/f", "after").stdout, r"^ok ")
        print("\na request with the first endpoint down: %.0f ms on average" % ((time.time() - t) * 500))
        self.cluster.start(0)
        # a watch whose member stops mid-stream resumes on another, losing and repeating
        # nothing
        w = self.start_watch("/cg/s/", "prefix", 0, 6)
        time.sleep(0.3 * SLOW)
        for i in range(3):
            self.tool("put", "/cg/s/k", "v%d" % i)
        time.sleep(0.3 * SLOW)
        self.cluster.stop(0, signal.SIGKILL)
        for i in range(3, 6):
            self.tool("put", "/cg/s/k", "v%d" % i, eps=self.cluster.endpoints([1, 2]))
        out, errs = w.communicate(timeout=30 * SLOW)
        self.assertEqual(w.returncode, 0, errs)
        self.assertEqual([l.split()[-1] for l in out.splitlines()],
                         ["value=v%d" % i for i in range(6)], out)
        # two of three stopped: no quorum, a clear error naming the endpoints, in bounded time
        self.cluster.stop(1)
        t = time.time()
        p = self.tool("put", "/cg/f", "lost", check=False, opts=("--timeout-ms", "1500"))
        took = time.time() - t
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertRegex(p.stderr, r"^error: etcd: no endpoint answered \(")
        for i in range(3):
            self.assertIn(self.cluster.url(i), p.stderr)
        self.assertLess(took, 3 * 1.5 + 3)
        # back to quorum: writes work again
        self.cluster.start(1)
        self.cluster.start(0)
        self.assertRegex(self.tool("put", "/cg/f", "again").stdout, r"^ok ")

    def test_errors(self):
        # nothing listens: every endpoint named with curl's reason
        dead = "http://127.0.0.1:%d,http://127.0.0.1:%d" % (free_port(), free_port())
        p = self.tool("get", "/cg", check=False, eps=dead)
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stderr, r"^error: etcd: no endpoint answered \(http://127\.0\.0\.1:\d+: "
                         r".*Couldn't connect to server; http://127\.0\.0\.1:\d+: .*\)\n$")
        # a web server that is not etcd
        port = free_port()
        web = subprocess.Popen(["python3", "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd=self.tmp)
        self.addCleanup(lambda: (web.kill(), web.wait()))
        deadline = time.time() + 10 * SLOW
        while True:
            p = self.tool("get", "/cg", check=False, eps="http://127.0.0.1:%d" % port)
            if "Couldn't connect" not in p.stderr or time.time() > deadline:
                break
            time.sleep(0.1)
        self.assertIn("http://127.0.0.1:%d: answered HTTP 501 without etcd's JSON (is it "
                      "etcd?)" % port, p.stderr)
        # a value over etcd's request limit (1.5 MiB by default)
        p = self.tool("putsize", "/cg/big", "1700000", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stderr, r"^error: etcd http://127\.0\.0\.1:\d+: etcdserver: request "
                         r"is too large\n$")
        # malformed endpoint lists
        p = self.tool("get", "/cg", check=False, eps="127.0.0.1:2379")
        self.assertEqual(p.stderr, "error: etcd endpoint '127.0.0.1:2379' does not start with "
                         "http:// or https://\n")

    def test_tls(self):
        ca = self.pki.ca("etcd-ca", "etcd test CA")
        key, cert = self.pki.leaf("etcd-server", "127.0.0.1", ca, san="IP:127.0.0.1")
        ckey, ccert = self.pki.leaf("etcd-client", "certgate", ca,
                                    ext_lines=["extendedKeyUsage=clientAuth"])
        cluster = EtcdCluster(os.path.join(self.tmp, "etcd-tls"), size=1,
                              tls=(ca[1], cert, key, ccert, ckey))
        self.addCleanup(cluster.close)
        cluster.start()
        eps = cluster.endpoints()
        self.assertTrue(eps.startswith("https://"))
        good = ("--ca", ca[1], "--cert", ccert, "--key", ckey)
        self.assertRegex(self.tool("put", "/t", "tls", eps=eps, opts=good).stdout, r"^ok ")
        self.assertIn("value=tls", self.tool("get", "/t", eps=eps, opts=good).stdout)
        # a CA that did not sign etcd's certificate
        other = self.pki.ca("other-ca", "another CA")
        p = self.tool("get", "/t", eps=eps, opts=("--ca", other[1], "--cert", ccert, "--key", ckey),
                      check=False)
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stderr, r"^error: etcd: no endpoint answered \(https://127\.0\.0\.1:"
                         r"\d+: .*(certificate|SSL).*\)")
        # no client certificate: etcd refuses the handshake
        p = self.tool("get", "/t", eps=eps, opts=("--ca", ca[1]), check=False)
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stderr, r"^error: etcd: no endpoint answered \(https://127\.0\.0\.1:")
        print("\nwithout a client certificate: %s" % p.stderr.strip())

if __name__ == "__main__":
    main()
