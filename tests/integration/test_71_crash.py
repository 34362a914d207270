"""Layer 71: crashes and restarts around certificate API operations.

* kill -9 at a random instant of a loop of uploads, activations and deletes, several
  rounds on one data directory; after each kill the ssl directory and custom.properties
  are consistent, and after the restart the gateway serves the certificate of the last
  activation that answered 200 -- or of the operation in flight when it was killed: a
  request without an answer may or may not have taken effect (an upload in flight may
  also have stored its file without activating it), but never half a file and never a
  configuration that points to a missing or unloadable file.
* A restart (graceful or kill -9) right after an API activation serves the same
  certificate, and the plain passwords appear in no file under the data directory nor in
  the log."""
import base64
import json
import os
import random
import threading
import time

from harness import (CertSet, GatewayTest, cert_fingerprint, conf_value, der_fingerprint, main,
                     SLOW)

NAMES = ["n0.p12", "n1.p12", "n2.p12"]
ROUNDS = 6


class CrashTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.set = CertSet(self.pki, 4, "crash")
        self.certs = self.set.certs  # (p12 path, password, cert fingerprint, file sha256)

    def disk_state(self, g):
        """(files {name: cert index}, active name or None); see CertSet.disk_state."""
        return self.set.disk_state(self, g)

    def test_kill9_during_operation_loop(self):
        rnd = random.Random(int(os.environ.get("CERTGATE_CRASH_SEED", "0")) or None)
        g, tok = self.api_gateway(threads=2)
        files, active = {}, None  # acknowledged state
        default_fp = der_fingerprint(g.served_cert())
        acked_total = 0
        inflight_kills = 0
        for rnd_no in range(ROUNDS):
            state = {"files": dict(files), "active": active, "inflight": None, "acked": 0,
                     "errors": []}
            stop = threading.Event()

            def client():
                while not stop.is_set():
                    fs, act = state["files"], state["active"]
                    choices = []
                    for n in NAMES:
                        if n != act:
                            choices.append(("upload", n, rnd.randrange(len(self.certs))))
                        if n in fs and n != act:
                            choices.append(("activate", n, fs[n]))
                            choices.append(("delete", n, None))
                    op = rnd.choice(choices)
                    state["inflight"] = op
                    kind, name, idx = op
                    try:
                        if kind == "upload":
                            st, _, body = g.upload(name, self.certs[idx][0], self.certs[idx][1],
                                                   tok, timeout=20)
                        elif kind == "activate":
                            st, _, body = g.activate(name, self.certs[idx][1], tok,
                                                     json_body=rnd.random() < 0.5, timeout=20)
                        else:
                            st, _, body = g.call("DELETE", name, tok, timeout=20)
                    except Exception:  # noqa: BLE001 - the gateway was killed
                        return
                    if st != 200:
                        state["errors"].append("%s: %d %s" % (op, st, body[:200]))
                        return
                    if kind == "upload":
                        fs[name] = idx
                        state["active"] = name
                    elif kind == "activate":
                        state["active"] = name
                    else:
                        del fs[name]
                    state["inflight"] = None
                    state["acked"] += 1

            t = threading.Thread(target=client, daemon=True)
            t.start()
            time.sleep(rnd.uniform(0.15, 1.2) * SLOW)
            g.kill9()
            stop.set()
            t.join(30 * SLOW)
            self.assertEqual(state["errors"], [])
            acked_total += state["acked"]
            op = state["inflight"]
            inflight_kills += op is not None
            files, active = state["files"], state["active"]
            # consistency on disk, before any restart tidies up
            disk_files, disk_active = self.disk_state(g)
            allowed_active = {active}
            if op and op[0] in ("upload", "activate"):
                allowed_active.add(op[1])
            self.assertIn(disk_active, allowed_active,
                          "round %d: config names %s; acknowledged %s, in flight %s"
                          % (rnd_no, disk_active, active, op))
            for n in NAMES:
                want = {files.get(n)}
                if op and op[1] == n:
                    want.add(op[2] if op[0] == "upload" else None)
                self.assertIn(disk_files.get(n), want,
                              "round %d: %s holds %s; acknowledged %s, in flight %s"
                              % (rnd_no, n, disk_files.get(n), files.get(n), op))
            # the restart serves what the configuration names, which is what was acknowledged
            # (or the operation in flight)
            g.start()
            self.assertNotRegex(g.logs(), r"custom certificate not served",
                                "round %d: the configured certificate does not load" % rnd_no)
            served = der_fingerprint(g.served_cert())
            if disk_active is None:
                self.assertEqual(served, default_fp)
            else:
                self.assertEqual(served, self.certs[disk_files[disk_active]][2],
                                 "round %d: the restart serves another certificate" % rnd_no)
            for d in (g.ssl_dir, os.path.dirname(g.conf_path)):
                self.assertEqual([n for n in os.listdir(d) if n.startswith(".tmp-")], [],
                                 "stale temp files in %s after the restart" % d)
            # the API agrees
            lst = {e["name"]: e for e in json.loads(g.call("GET", "list", tok)[2])}
            self.assertEqual(set(lst), set(disk_files))
            self.assertEqual([n for n, e in lst.items() if "desc" in e],
                             [disk_active] if disk_active else [])
            files, active = disk_files, disk_active  # what the in-flight request left
        self.assertGreater(acked_total, 10, "too few operations to mean anything")
        print("\n    %d rounds, %d acknowledged operations, %d kills with a request in flight"
              % (ROUNDS, acked_total, inflight_kills))

    def test_restart_after_api_activation(self):
        secrets = ["Sup3r-Secret-Pa55-%d" % i for i in range(2)]
        paths = []
        for i, pw in enumerate(secrets):
            key, crt = self.pki.self_signed("s%d" % i, "restart-%d" % i, kind="ec")
            paths.append((self.pki.p12("s%d.p12" % i, key, crt, pw), pw, cert_fingerprint(crt)))
        g, tok = self.api_gateway()
        for i in (0, 1):
            st, _, body = g.upload("s%d.p12" % i, paths[i][0], paths[i][1], tok)
            self.assertEqual(st, 200, body)
        st, _, body = g.activate("s0.p12", secrets[0], tok, json_body=True)
        self.assertEqual(st, 200, body)
        self.assertEqual(der_fingerprint(g.served_cert()), paths[0][2])
        # graceful restart
        self.assertEqual(g.stop(), 0)
        g.start()
        self.assertEqual(der_fingerprint(g.served_cert()), paths[0][2])
        # an activation acknowledged just before a kill -9 survives it
        st, _, body = g.activate("s1.p12", secrets[1], tok)
        self.assertEqual(st, 200, body)
        g.kill9()
        g.start()
        self.assertEqual(der_fingerprint(g.served_cert()), paths[1][2])
        st, _, body = g.call("GET", "list", tok)
        self.assertIn(b'"name":"s1.p12","desc"', body)
        # no plain password anywhere under the data dir, nor in the logs
        needles = []
        for pw in secrets:
            needles += [pw.encode(), base64.b64encode(pw.encode()), pw.encode("utf-16-le")]
        places = [os.path.join(r, n) for r, _, fs in os.walk(g.data_dir) for n in fs]
        places += [g.log_path, g.access_path]
        for p in places:
            with open(p, "rb") as f:
                data = f.read()
            for n in needles:
                self.assertNotIn(n, data, "a password is in %s" % p)
        self.assertIsNone(conf_value(g.read_conf(), "certificate-password"))


if __name__ == "__main__":
    main()
