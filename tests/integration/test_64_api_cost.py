"""Layer 64: certificate work off the change lock and capped (issue 10, item 4).

- A PKCS#12 whose key derivation would be hostile (5,000,000 MAC iterations; scrypt with
  a huge N or p) is refused at once with a sentence naming the cost and the limit, by the
  API (400), at start-up (fallback to the default certificate) and on SIGHUP.
- A legitimate but slow upload (1,800,000 iterations) in flight holds up neither `list`,
  nor `describe` of another file, nor a SIGHUP reload: they complete while it still runs.
- At most [certgate] api-queue jobs are queued or running: beyond, 503 + Retry-After.
- A job whose client has gone before it starts is not started (log, no file).

Ordering is asserted, never a duration; the figures are printed."""
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import unittest

from harness import SLOW, GatewayTest, Pki, main, run, tool

MAC_ITER_PATTERN = bytes.fromhex("0203010000")  # INTEGER 65536
MAC_ITER_HOSTILE = bytes.fromhex("02034c4b40")  # INTEGER 5,000,000


class Fixtures:
    dir = None

    @classmethod
    def make(cls):
        if cls.dir:
            return
        cls.dir = tempfile.mkdtemp(prefix="certgate-it64-")
        pki = Pki(cls.dir)
        cls.key, cls.crt = pki.self_signed("k", "cost.example", kind="ec")
        cls.other = pki.p12("other.p12", cls.key, cls.crt, "pw-o", alias="other")
        # hostile: only a MAC (no encrypted part), made with 65,536 iterations; the
        # INTEGER at the end of the DER is rewritten to 5,000,000 (same length). The budget
        # refuses it before the MAC is checked.
        made = pki.path("mac65536.p12")
        run(["openssl", "pkcs12", "-export", "-inkey", cls.key, "-in", cls.crt, "-out", made,
             "-passout", "pass:pw", "-keypbe", "NONE", "-certpbe", "NONE", "-iter", "65536"])
        with open(made, "rb") as f:
            der = f.read()
        assert der.endswith(MAC_ITER_PATTERN), der[-8:].hex()
        cls.hostile = pki.path("hostile.p12")
        with open(cls.hostile, "wb") as f:
            f.write(der[:-len(MAC_ITER_PATTERN)] + MAC_ITER_HOSTILE)
        # scrypt: a real one (N=16384, r=8, p=1: 16 MiB) and patched hostile ones
        cls.scrypt_ok = pki.path("scrypt-ok.p12")
        run([tool("p12forge"), "scrypt", cls.scrypt_ok, cls.key, cls.crt, "pw", "16384", "8",
             "1", "real"])
        cls.scrypt_n = pki.path("scrypt-n.p12")
        run([tool("p12forge"), "scrypt", cls.scrypt_n, cls.key, cls.crt, "pw", str(1 << 27),
             "8", "1", "patched"])
        cls.scrypt_p = pki.path("scrypt-p.p12")
        run([tool("p12forge"), "scrypt", cls.scrypt_p, cls.key, cls.crt, "pw", "16384", "8",
             "100000", "patched"])
        # slow but within the budget: key bag 900,000 + MAC 900,000 iterations
        cls.slow = pki.path("slow.p12")
        run(["openssl", "pkcs12", "-export", "-inkey", cls.key, "-in", cls.crt, "-out",
             cls.slow, "-passout", "pass:pw-s", "-certpbe", "NONE", "-iter", "900000"],
            timeout=300)

    @classmethod
    def cleanup(cls):
        if cls.dir:
            shutil.rmtree(cls.dir, ignore_errors=True)


def setUpModule():
    Fixtures.make()


def tearDownModule():
    Fixtures.cleanup()


F = Fixtures
HOSTILE_SENTENCE = ("key derivation would take 5,000,000 PBKDF2 iterations (the MAC and every "
                    "encrypted part together); the limit is 2,000,000 (files from openssl and "
                    "keytool use 2,048 to 10,000 per part)")


class Timed(threading.Thread):
    """Runs fn in a thread; records when it ended and what it returned."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.result, self.error, self.end = fn, None, None, None
        self.start_t = time.monotonic()

    def run(self):
        try:
            self.result = self.fn()
        except Exception as e:  # reported by the test
            self.error = e
        self.end = time.monotonic()


class ApiCostTest(GatewayTest):
    def start(self, certgate="", env=None, threads=2):
        self.g, self.tok = self.api_gateway(conf="[certgate]\n" + certgate if certgate else None,
                                            env=env, threads=threads)
        return self.g

    def call(self, method, rest, body=None, password=None, timeout=60):
        h = {"Authorization": "Api-Token " + self.tok}
        if password is not None:
            h["X-Password"] = password
        return self.g.request(method, self.g.api(rest), body=body, headers=h, timeout=timeout)

    def upload(self, name, path, password, timeout=60):
        with open(path, "rb") as f:
            return self.call("PUT", name, f.read(), password, timeout)

    # ----- the budget -----

    def test_hostile_iterations_refused_fast_with_sentence(self):
        g = self.start()
        before = self.state(g)
        t0 = time.monotonic()
        code, _, body = self.upload("cert.p12", F.hostile, "pw")
        ms = (time.monotonic() - t0) * 1000
        print("\n    5,000,000 MAC iterations: %d in %.1f ms" % (code, ms))
        self.assertEqual(code, 400, body)
        self.assertIn(b"cert.p12: " + HOSTILE_SENTENCE.encode(), body)
        self.assertEqual(self.state(g), before)
        # a stored file: activate and describe refuse it the same way
        g.install(F.hostile, "stored.p12")
        for method, rest in (("POST", "stored.p12/activate"), ("GET", "stored.p12/list")):
            code, _, body = self.call(method, rest, password="pw")
            self.assertEqual(code, 400, body)
            self.assertIn(b"stored.p12: " + HOSTILE_SENTENCE.encode(), body)
        # SIGHUP with it configured: refused, the previous certificate stays
        served = g.served_cert()
        g.write_conf("[com.compuware.apm.webserver]\ncertificate-file = stored.p12\n"
                     "certificate-password = pw\n")
        tail = g.reload()
        self.assertIn("reload failed", tail)
        self.assertIn("stored.p12: " + HOSTILE_SENTENCE, tail)
        self.assertEqual(g.served_cert(), served)

    def test_hostile_file_at_start_falls_back(self):
        g = self.gateway("start")
        g.install(F.hostile, "cert.p12")
        g.write_conf("[com.compuware.apm.webserver]\ncertificate-file = cert.p12\n"
                     "certificate-password = pw\n")
        g.start()
        self.assertTrue(g.wait_log("custom certificate not served: cert.p12: "
                                   + HOSTILE_SENTENCE.replace("(", r"\(").replace(")", r"\)")))

    def test_scrypt_costs(self):
        g = self.start()
        before = self.state(g)
        for path, part in ((F.scrypt_n, b"would need 128 GiB of memory for scrypt (128 * N * r "
                                         b"bytes); the limit is 32 MiB"),
                           (F.scrypt_p, b"would take 13,107,200,000 units of scrypt work (N * r "
                                         b"* p summed over the encrypted parts); the limit is "
                                         b"2,097,152")):
            t0 = time.monotonic()
            code, _, body = self.upload("s.p12", path, "pw")
            print("\n    %s: %d in %.1f ms" % (os.path.basename(path), code,
                                               (time.monotonic() - t0) * 1000))
            self.assertEqual(code, 400, body)
            self.assertIn(b"s.p12: key derivation " + part, body)
        self.assertEqual(self.state(g), before)
        # a real scrypt file within the caps is served
        t0 = time.monotonic()
        code, _, body = self.upload("scrypt.p12", F.scrypt_ok, "pw")
        print("    scrypt N=16384 r=8 p=1 upload: %d in %.1f ms"
              % (code, (time.monotonic() - t0) * 1000))
        self.assertEqual(code, 200, body)
        self.assertEqual(json.loads(body)["desc"][0]["alias"], "scrypt")

    # ----- off the lock -----

    def test_slow_upload_holds_up_nothing(self):
        g = self.start()
        g.install(F.other, "other.p12")
        up = Timed(lambda: self.upload("slow.p12", F.slow, "pw-s", timeout=120))
        up.start()
        time.sleep(0.3)  # fixed: the slow part is PBKDF2 in libcrypto, which ASan does not slow
        self.assertIsNone(up.end, "the slow upload ended before the other calls were made")
        lst = Timed(lambda: self.call("GET", "list"))
        lst.run()
        desc = Timed(lambda: self.call("GET", "other.p12/list", password="pw-o"))
        desc.run()
        t0 = time.monotonic()
        tail = g.reload()
        reload_end = time.monotonic()
        up.join(120 * SLOW)
        self.assertIsNone(up.error)
        self.assertEqual(up.result[0], 200, up.result[2])
        self.assertEqual(lst.result[0], 200, lst.result[2])
        self.assertEqual(desc.result[0], 200, desc.result[2])
        self.assertIn("reloaded", tail)
        print("\n    upload %.0f ms; list done after %.0f ms, describe after %.0f ms, reload "
              "after %.0f ms (from the upload's start)"
              % ((up.end - up.start_t) * 1000, (lst.end - up.start_t) * 1000,
                 (desc.end - up.start_t) * 1000, (reload_end - up.start_t) * 1000))
        self.assertLess(lst.end, up.end, "list waited for the slow upload")
        self.assertLess(desc.end, up.end, "describe waited for the slow upload")
        self.assertLess(reload_end, up.end, "SIGHUP waited for the slow upload")
        self.assertEqual([e["name"] for e in json.loads(lst.result[2])], ["other.p12"])

    def test_state_rechecked_under_the_lock(self):
        """What a job validated without the lock is checked again under it."""
        g = self.start()
        # two slow uploads of one name: the first to commit makes it the active file,
        # so the other is refused (403) instead of replacing the served file
        a = Timed(lambda: self.upload("same.p12", F.slow, "pw-s", timeout=120))
        b = Timed(lambda: self.upload("same.p12", F.slow, "pw-s", timeout=120))
        a.start()
        b.start()
        a.join(120 * SLOW)
        b.join(120 * SLOW)
        codes = sorted([a.result[0], b.result[0]])
        print("\n    two uploads of one name: %s" % codes)
        self.assertEqual(codes, [200, 403], (a.result, b.result))
        with open(os.path.join(g.ssl_dir, "same.p12"), "rb") as f, open(F.slow, "rb") as s:
            self.assertEqual(f.read(), s.read())
        # a stored file deleted while its activation derives keys: 404, nothing changes
        g.install(F.slow, "stored.p12")
        before = self.state(g)["served"]
        act = Timed(lambda: self.call("POST", "stored.p12/activate", password="pw-s",
                                      timeout=120))
        act.start()
        time.sleep(0.3)  # fixed: the slow part is PBKDF2 in libcrypto, which ASan does not slow
        code, _, body = self.call("DELETE", "stored.p12")
        deleted = time.monotonic()
        self.assertEqual(code, 200, body)
        act.join(120 * SLOW)
        self.assertLess(deleted, act.end, "the delete waited for the activation")
        self.assertEqual(act.result[0], 404, act.result[2])
        self.assertIn(b"deleted meanwhile", act.result[2])
        self.assertEqual(self.state(g)["served"], before)
        self.assertIn("certificate-file = same.p12", g.read_conf())

    def test_slow_reload_holds_up_nothing(self):
        """A SIGHUP reload derives the configured certificate's keys before it takes the
        change lock, so `list` does not wait for it."""
        g = self.gateway("reload", env={"TZ": "America/New_York"})
        g.install(F.slow, "slow.p12")
        g.write_conf("[com.compuware.apm.webserver]\ncertificate-file = slow.p12\n"
                     "certificate-password = pw-s\n")
        self.g, self.tok = g, g.token()
        g.start()
        before = len(g.logs())
        rl = Timed(lambda: g.reload())
        rl.start()
        # the reload has begun once it logs so; from then it derives the file's keys
        # (about a second of PBKDF2 in libcrypto, which no sanitizer slows) -- a wait
        # scaled by SLOW would outlast it under ASan
        deadline = time.monotonic() + 10 * SLOW
        while "SIGHUP: reloading" not in g.logs()[before:]:
            self.assertLess(time.monotonic(), deadline, "the reload never began")
            time.sleep(0.005)
        time.sleep(0.05)
        self.assertIsNone(rl.end, "the reload ended before list was asked")
        # a list asked now is answered, and the reload's outcome (logged as soon as it
        # releases the lock) is not logged yet
        lst = Timed(lambda: self.call("GET", "list"))
        lst.run()
        self.assertEqual(lst.result[0], 200, lst.result[2])
        self.assertNotIn("reloaded", g.logs()[before:], "list waited for the reload")
        rl.join(60 * SLOW)
        self.assertIsNone(rl.error)
        self.assertIn("reloaded", rl.result)
        self.assertEqual(lst.result[0], 200, lst.result[2])
        print("\n    reload %.0f ms; list done after %.0f ms (from the reload's start)"
              % ((rl.end - rl.start_t) * 1000, (lst.end - rl.start_t) * 1000))
        self.assertLess(lst.end, rl.end, "list waited for the reload")
        # the file changed between the load and the lock would be loaded again; the
        # result served is the configured file
        self.assertEqual([e["name"] for e in json.loads(lst.result[2])], ["slow.p12"])

    # ----- the queue -----

    def test_queue_full_503_retry_after(self):
        g = self.start(certgate="api-queue = 1\n")
        up = Timed(lambda: self.upload("slow.p12", F.slow, "pw-s", timeout=120))
        up.start()
        time.sleep(0.3)  # fixed: the slow part is PBKDF2 in libcrypto, which ASan does not slow
        busy = None
        while up.end is None and busy is None:
            code, headers, body = self.call("GET", "list")
            if code == 503:
                busy = (headers, body, up.end)
            else:
                self.assertEqual(code, 200, body)
                time.sleep(0.02)
        self.assertIsNotNone(busy, "no 503 while the only slot was taken")
        self.assertIsNone(busy[2], "the 503 came after the upload ended")
        headers, body, _ = busy
        self.assertEqual(headers.get("retry-after"), "2")
        self.assertTrue(headers.get("content-type", "").startswith("application/json"))
        err = json.loads(body)["error"]
        self.assertEqual(err["code"], 503)
        self.assertIn("api-queue", err["message"])
        up.join(120 * SLOW)
        self.assertEqual(up.result[0], 200, up.result[2])
        code, _, body = self.call("GET", "list")  # the slot is free again
        self.assertEqual(code, 200, body)

    def test_job_of_a_gone_client_is_not_started(self):
        # one thread in libuv's pool: slow uploads hold it one after the other (about 0.5 s
        # each on a fast machine), and the next job waits behind them
        g = self.start(env={"UV_THREADPOOL_SIZE": "1"})
        slow = ["slow%d.p12" % i for i in range(4)]
        ups = []
        for name in slow:
            ups.append(Timed(lambda n=name: self.upload(n, F.slow, "pw-s", timeout=120)))
            ups[-1].start()
            time.sleep(0.05)
        with open(F.other, "rb") as f:
            body = f.read()
        s = g.tls_socket()
        s.sendall(("PUT /e/myenv/api/v1/certificate/gone.p12 HTTP/1.1\r\nHost: x\r\n"
                   "Authorization: Api-Token %s\r\nX-Password: pw-o\r\nContent-Length: %d\r\n\r\n"
                   % (self.tok, len(body))).encode() + body)
        time.sleep(0.3 * SLOW)  # the whole request is in: its job is queued
        self.assertTrue(any(u.end is None for u in ups),
                        "all slow uploads ended before the second client left")
        s.close()
        for u in ups:
            u.join(120 * SLOW)
            self.assertEqual(u.result[0], 200, u.result[2])
        self.assertTrue(g.wait_log(r"certificate API: upload gone\.p12 not started: its "
                                   r"client has gone"), g.logs())
        self.assertFalse(os.path.exists(os.path.join(g.ssl_dir, "gone.p12")))
        self.assertNotIn("uploaded and activated gone.p12", g.logs())
        code, _, body = self.call("GET", "list")
        self.assertEqual(sorted(e["name"] for e in json.loads(body)), slow)

if __name__ == "__main__":
    main()
