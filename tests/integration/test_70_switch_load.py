"""Layer 70: switching the certificate through the API while the gateway is under load.

* Keep-alive clients (4 threads, one persistent HTTPS connection each) send requests to
  /rest/health back to back while the certificate is switched 50 times (uploads,
  activations, uploads over inactive files): zero failed requests, no connection lost,
  each connection keeps the certificate of its handshake, and after each 200 new
  handshakes (full ones: a resumed TLS session carries the certificate it was made
  with) get the new certificate.
* New handshakes in a tight loop during switches: never a failure, and a handshake that
  starts after a switch was acknowledged (and before the next one was sent) gets the
  certificate of that switch.
* Concurrent API clients: operations are serialized; the end state is consistent."""
import json
import os
import re
import socket
import threading
import time

from harness import (SLOW, GatewayTest, KeepAliveLoad, cert_fingerprint, client_context,
                     der_fingerprint, main, recv_all)

SWITCHES = 50
NCERTS = 5


class SwitchLoadTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.certs = []  # (p12 path, password, fingerprint)
        for i in range(NCERTS):
            key, crt = self.pki.self_signed("c%d" % i, "host-%d" % i, kind="ec")
            pw = "pw-%d" % i
            self.certs.append((self.pki.p12("c%d.p12" % i, key, crt, pw), pw,
                               cert_fingerprint(crt)))
        self.g, self.tok = self.api_gateway(threads=2)

    def served(self):
        return der_fingerprint(self.g.served_cert())

    def test_keepalive_load_while_switching(self):
        g = self.g
        initial = self.served()
        load = KeepAliveLoad(g, clients=4).start()
        api = g.connect(timeout=30)
        stored = {}  # name -> index of the certificate in it
        plan = []
        for i in range(SWITCHES):
            target = i % NCERTS
            name = "f%d.p12" % target
            if name not in stored:
                plan.append(("upload", name, target))
            elif i % 7 == 3:  # replace an inactive file with another certificate
                plan.append(("upload", name, (target + 2) % NCERTS))
            else:
                plan.append(("activate", name, stored[name]))
            if plan[-1][0] == "upload":
                stored[name] = plan[-1][2]
        stored.clear()
        during = []
        t0 = time.time()
        try:
            for n, (op, name, idx) in enumerate(plan):
                p12, pw, fp = self.certs[idx]
                before = load.total
                if op == "upload":
                    status, _, body = g.upload(name, p12, pw, self.tok, conn=api)
                else:
                    status, _, body = g.activate(name, pw, self.tok, conn=api)
                self.assertEqual(status, 200, "switch %d (%s %s): %s" % (n + 1, op, name, body))
                self.assertEqual(json.loads(body)["name"], name)
                # several handshakes, so that every worker thread's listener is asked
                for k in range(4):
                    self.assertEqual(self.served(), fp,
                                     "switch %d (%s %s): new handshake %d does not get the new "
                                     "certificate" % (n + 1, op, name, k + 1))
                during.append(load.total - before)
                self.assertEqual(load.failures, [], "requests failed during switch %d" % (n + 1))
                # give the load a moment between switches (bounded)
                deadline = time.time() + 0.5 * SLOW
                while load.total - before < 8 and time.time() < deadline:
                    time.sleep(0.005)
        finally:
            load.stop()
            api.close()
        elapsed = time.time() - t0
        self.assertEqual(load.failures, [])
        self.assertEqual(load.connections, [1] * 4, "a keep-alive connection was lost")
        for i, certs in enumerate(load.peer_certs):
            self.assertEqual(certs, {initial},
                             "client %d: its connection's certificate changed" % i)
        self.assertTrue(all(c >= 20 for c in load.counts), "a client starved: %s" % load.counts)
        self.assertGreater(sum(1 for d in during if d > 0), SWITCHES // 2,
                           "the load did not run while switching: %s" % during)
        print("\n    %d switches in %.1f s; %d requests (%s), none failed"
              % (SWITCHES, elapsed, load.total, load.counts))

    def test_new_handshakes_see_acknowledged_switches(self):
        g = self.g
        for i in range(NCERTS):
            p12, pw, _ = self.certs[i]
            self.assertEqual(g.upload("f%d.p12" % i, p12, pw, self.tok)[0], 200)
        known = {fp for _, _, fp in self.certs} | {self.served()}
        stop = threading.Event()
        seen = []  # (start, end, fingerprint)
        failures = []

        def handshaker():
            ctx = client_context()
            while not stop.is_set():
                t_start = time.monotonic()
                try:
                    with socket.create_connection(("127.0.0.1", g.port), timeout=10 * SLOW) as s:
                        with ctx.wrap_socket(s) as t:
                            fp = der_fingerprint(t.getpeercert(True))
                            t.sendall(b"GET /rest/health HTTP/1.1\r\nHost: x\r\n"
                                      b"Connection: close\r\n\r\n")
                            data = recv_all(t)
                    if not data.startswith(b"HTTP/1.1 200") or not data.endswith(b"RUNNING"):
                        failures.append("bad answer %r" % data[:100])
                    seen.append((t_start, time.monotonic(), fp))
                except Exception as e:  # noqa: BLE001
                    failures.append("%s: %s" % (type(e).__name__, e))

        threads = [threading.Thread(target=handshaker, daemon=True) for _ in range(2)]
        for t in threads:
            t.start()
        switches = []  # (sent, acknowledged, fingerprint)
        try:
            for n in range(20):
                idx = n % NCERTS
                p12, pw, fp = self.certs[idx]
                sent = time.monotonic()
                status, _, body = g.activate("f%d.p12" % idx, pw, self.tok)
                acked = time.monotonic()
                self.assertEqual(status, 200, body)
                switches.append((sent, acked, fp))
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join(30 * SLOW)
        self.assertEqual(failures, [])
        self.assertGreater(len(seen), 40, "too few handshakes to mean anything")
        self.assertTrue({fp for _, _, fp in seen} <= known)
        checked = 0
        for k, (_, acked, fp) in enumerate(switches):
            next_sent = switches[k + 1][0] if k + 1 < len(switches) else float("inf")
            for start, end, got in seen:
                if start > acked and end < next_sent:
                    checked += 1
                    self.assertEqual(got, fp, "a handshake after switch %d got another "
                                     "certificate" % (k + 1))
        self.assertGreater(checked, 10)

    def test_concurrent_api_clients_serialized(self):
        g = self.g
        for i in range(NCERTS):
            p12, pw, _ = self.certs[i]
            self.assertEqual(g.upload("f%d.p12" % i, p12, pw, self.tok)[0], 200)
        errors = []

        def worker(w):
            conn = g.connect(timeout=60)
            try:
                for n in range(8):
                    idx = (w + n) % NCERTS
                    p12, pw, _ = self.certs[idx]
                    op = n % 4
                    if op == 0:
                        st, _, body = g.activate("f%d.p12" % idx, pw, self.tok, conn=conn)
                    elif op == 1:
                        st, _, body = g.call("GET", "list", self.tok, conn=conn)
                    elif op == 2:
                        st, _, body = g.call("GET", "f%d.p12/list" % idx, self.tok, conn=conn,
                                             headers={"X-Password": pw})
                    else:
                        st, _, body = g.activate("f%d.p12" % idx, pw, self.tok, conn=conn,
                                                 json_body=True)
                    if st != 200:
                        errors.append("worker %d op %d: %d %s" % (w, n, st, body[:200]))
                    if op == 1:
                        lst = json.loads(body)
                        active = [e for e in lst if "desc" in e]
                        if len(active) != 1:
                            errors.append("list shows %d active files" % len(active))
            except Exception as e:  # noqa: BLE001
                errors.append("worker %d: %s: %s" % (w, type(e).__name__, e))
            finally:
                conn.close()

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120 * SLOW)
        self.assertEqual(errors, [])
        # the configuration, the list and the served certificate agree
        conf = g.read_conf()
        name = re.search(r"(?m)^certificate-file\s*=\s*(\S+)", conf).group(1)
        idx = int(name[1])
        self.assertEqual(self.served(), self.certs[idx][2])
        lst = json.loads(g.call("GET", "list", self.tok)[2])
        self.assertEqual([e["name"] for e in lst if "desc" in e], [name])
        self.assertEqual(sorted(os.listdir(g.ssl_dir)),
                         sorted([".default-certificate.pem"] +
                                ["f%d.p12" % i for i in range(NCERTS)]))


if __name__ == "__main__":
    main()
