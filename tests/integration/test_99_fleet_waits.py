"""Layer 99: what the answer of a fleet member's certificate write promises (issue 13):
200 means committed in etcd AND applied by this member; a change this member (or, with
?wait=all, another) could not activate answers 202 naming the member and its reason, also
in certgate fleet status; ?wait=all&timeout=S bounds the wait (400 for a bad wait or
timeout, also on a single node, which accepts ?wait=all); a wait holds an api-queue slot
but no thread (five at once still commit, a list answers), a client that leaves ends its
wait at once. A 3-member etcd on loopback, two gateways (test_99_fleet_api.py's FleetBase)."""
import json
import os
import re
import threading
import time

from harness import SLOW, certgate, main, wait_until
from test_99_fleet_api import FleetBase, read_bytes


class FleetWaitTest(FleetBase):
    def test_not_applied_here_answers_202_with_the_reason(self):
        a, b = self.fleet("a", "b")
        x, y, z = self.new_p12(), self.new_p12(), self.new_p12()
        for p in (x, y, z):
            status, _, body = self.put(a, p)
            self.assertEqual(status, 200, body)
        # a's cache copies of x and y are damaged: they no longer load on a (on b they do)
        for p in (x, y):
            with open(os.path.join(a.ssl_dir, p[0]), "wb") as f:
                f.write(b"damaged on disk")
        # activated on a: committed in etcd, b serves it, a cannot and says so (not 200)
        status, _, body = a.activate(x[0], x[3], self.token)
        self.assertEqual(status, 202, body)
        d = json.loads(body)
        self.assertGreater(d["revision"], 0)
        self.assertIn("this member (a) could not apply it and keeps serving what it had",
                      d["message"])
        self.assertIn("the other members apply it from etcd", d["message"])
        self.assertEqual([(m["member"], m["failed"]) for m in d["behind"]], [("a", True)], d)
        self.assertIn(x[0], d["behind"][0]["error"])
        self.assertEqual(self.active_name(), x[0])
        self.assertTrue(wait_until(lambda: self.serves(b, x[1]), 10), b.logs()[-2000:])
        self.assertTrue(self.serves(a, z[1]))
        # certgate fleet status says so too (once the member key is rewritten)
        want = re.compile(r"member a: applied revision \d+, serving %s, not applied at revision "
                          r"%d: .*%s" % (z[0], d["revision"], x[0]))
        st = [""]

        def status_says():
            st[0] = certgate("fleet", "status", "--data-dir", a.data_dir, check=False).stdout
            return want.search(st[0])
        self.assertTrue(wait_until(status_says, 5), st[0])
        # ?wait=all on b: a reports its failure under its member key; answered at once
        t = time.time()
        status, _, body = b.call("POST", y[0] + "/activate?wait=all", self.token,
                                 headers={"X-Password": y[3]})
        waited = time.time() - t
        self.assertEqual(status, 202, body)
        d = json.loads(body)
        self.assertIn("1 member could not apply it", d["message"])
        self.assertEqual([(m["member"], m["failed"]) for m in d["behind"]], [("a", True)], d)
        self.assertIn(y[0], d["behind"][0]["error"])
        self.assertLess(waited, 4 * SLOW)  # a failure is not waited out (5 s)
        self.assertTrue(self.serves(b, y[1]) and self.serves(a, z[1]))
        # a file a can load again: 200, and ?wait=all is 200 too (a's failure is past)
        status, _, body = a.call("POST", z[0] + "/activate?wait=all", self.token,
                                 headers={"X-Password": z[3]})
        self.assertEqual(status, 200, body)
        self.assertTrue(self.serves(a, z[1]) and self.serves(b, z[1]))

    def test_wait_all_timeout(self):
        a, b = self.fleet("a", "b")
        p = self.new_p12()
        # bad values: 400 with a sentence, nothing written to etcd
        for q, words in (("?wait=all&timeout=0", "from 1 to 60"),
                         ("?wait=all&timeout=61", "from 1 to 60"),
                         ("?wait=all&timeout=2s", "from 1 to 60"),
                         ("?wait=all&timeout=", "from 1 to 60"),
                         ("?wait=all&timeout=-1", "from 1 to 60"),
                         ("?timeout=3", "timeout goes with wait=all"),
                         ("?wait=local&timeout=3", "timeout goes with wait=all"),
                         ("?wait=everyone", "wait must be all")):
            status, _, body = self.put(a, p, q)
            self.assertEqual(status, 400, (q, body))
            self.assertIn(words, self.err(body), q)
        status, _, body = a.call("DELETE", "nothing.p12?wait=all&timeout=99", token=self.token)
        self.assertEqual(status, 400, body)
        self.assertEqual(self.active_name(), "c1.p12")
        self.assertFalse(os.path.exists(os.path.join(a.ssl_dir, p[0])))
        # a member that never applies: its key without a lease, as a live member's
        ghost = "/certgate/members/ghost"
        self.cluster.etcdctl("put", ghost, '{"applied":1,"serving":"","time":"now"}')
        # ?timeout=5 answers 202 after about 5 s. Five such waits at once (more than libuv's 4
        # pool threads): a wait holds an api-queue slot but no thread, so each write still
        # commits at once and a GET list on the same member answers at once
        ps = [self.new_p12() for _ in range(5)]
        res = {}
        ths = []
        t0 = time.time()
        for q in ps:
            th = threading.Thread(target=lambda q=q: res.__setitem__(
                q[0], (self.put(a, q, "?wait=all&timeout=5"), time.time())))
            th.start()
            ths.append(th)
            self.assertTrue(wait_until(lambda q=q: self.active_name() == q[0], 3),
                            "%s not committed while %d waits are in progress"
                            % (q[0], len(ths) - 1))
        t = time.time()
        status, _, body = a.call("GET", "list", token=self.token)
        listed = time.time() - t
        for th in ths:
            th.join()
        self.assertEqual(status, 200, body)
        self.assertIn(ps[0][0], [e["name"] for e in json.loads(body)])
        self.assertLess(listed, 1.0 * SLOW)
        self.assertEqual(sorted(res), sorted(q[0] for q in ps), "a ?wait=all did not answer")
        for q in ps:
            (status, _, body), done = res[q[0]]
            self.assertEqual(status, 202, body)
            d = json.loads(body)
            self.assertIn("1 member has not reported it within 5 s", d["message"])
            self.assertEqual([m["member"] for m in d["behind"]], ["ghost"], d)
        waited = res[ps[0][0]][1] - t0
        self.assertGreater(waited, 4.9)
        self.assertLess(waited, 5 + 3 * SLOW)
        self.assertTrue(self.serves(a, ps[-1][1]) and self.serves(b, ps[-1][1]))
        # a client that leaves during its wait: the wait ends at once (not after 30 s), the
        # change is recorded in the audit trail, the slot is free again
        g = self.new_p12()
        t = time.time()
        with self.assertRaises(OSError):
            a.call("PUT", g[0] + "?wait=all&timeout=30", self.token, body=read_bytes(g[2]),
                   headers={"X-Password": g[3], "Content-Type": "application/octet-stream"},
                   timeout=1.5)
        audit = os.path.join(a.data_dir, "log", "audit.jsonl")
        self.assertTrue(wait_until(lambda: any(
            '"name":"%s"' % g[0] in line and "not yet applied everywhere" in line
            for line in open(audit)), 5), a.logs()[-2000:])
        self.assertLess(time.time() - t, 8 * SLOW)
        self.assertEqual(a.call("GET", "list", token=self.token)[0], 200)
        # a longer bound lets the member catch up: 200 as soon as it reports the revision
        q = self.new_p12()
        res = []
        th = threading.Thread(target=lambda: res.append(self.put(a, q, "?wait=all&timeout=30")))
        th.start()
        self.assertTrue(wait_until(lambda: self.active_name() == q[0], 5))
        time.sleep(0.5)
        self.assertEqual(res, [])
        t = time.time()
        self.cluster.etcdctl("put", ghost, '{"applied":999999,"serving":"","time":"now"}')
        th.join()
        self.assertLess(time.time() - t, 2 * SLOW)
        self.assertEqual(res[0][0], 200, res[0][2])
        self.assertTrue(self.serves(b, q[1]))
        self.cluster.etcdctl("del", ghost)
        # a single node: nobody to wait for; the same 400s
        a.stop()
        s = self.ctl.start()
        r = self.new_p12()
        status, _, body = self.put(s, r, "?wait=all&timeout=3")
        self.assertEqual(status, 200, body)
        self.assertTrue(self.serves(s, r[1]))
        status, _, body = self.put(s, self.new_p12(), "?wait=all&timeout=0")
        self.assertEqual(status, 400, body)
        self.assertIn("from 1 to 60", self.err(body))


if __name__ == "__main__":
    main()
