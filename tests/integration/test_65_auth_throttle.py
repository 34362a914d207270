"""Layer 65: throttling of failed authentications on the certificate API.

A storm of 2,000 wrong tokens from 127.0.0.1: the first 20 (the budget) get 401, every
later answer within the window is 429 with Retry-After, also for a valid token from that
address (no oracle); a valid token from another address (127.0.0.2, a bound client
socket) is served meanwhile; the log holds a bounded number of lines about the storm,
whose counts add up to the 429s sent, and never a token; after the window a valid token
from 127.0.0.1 works again. The window is shortened with `auth-failure-window`."""
import http.client
import json
import os
import random
import re
import time

from harness import SLOW, GatewayTest, client_context, main

BUDGET = 20
WINDOW = 10 * SLOW  # seconds; the storm takes a fraction of it
STORM = 2000
ALPHA = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def wrong_token(rng):
    return "dt0c01.%s.%s" % ("".join(rng.choice(ALPHA) for _ in range(24)),
                             "".join(rng.choice(ALPHA) for _ in range(64)))


class ThrottleTest(GatewayTest):
    def start(self, budget=BUDGET, window=WINDOW):
        g = self.gateway()
        g.write_sections(certgate="auth-failures-per-minute = %d\nauth-failure-window = %.1f\n"
                         % (budget, window))
        tok = g.token()
        g.start()
        return g, tok

    def conn(self, g, source="127.0.0.1"):
        return http.client.HTTPSConnection("127.0.0.1", g.port, timeout=20 * SLOW,
                                           context=client_context(),
                                           source_address=(source, 0))

    def call(self, c, g, token, rest="list"):
        c.request("GET", g.api_path(rest), headers={"Authorization": "Api-Token " + token})
        r = c.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body

    def throttle_lines(self, g):
        return [l for l in g.logs().splitlines() if "authentication:" in l]

    def test_storm_from_one_address(self):
        g, tok = self.start()
        rng = random.Random(65)
        wrong = [wrong_token(rng) for _ in range(STORM)]
        c = self.conn(g)
        answers = []  # (status, retry-after, completed at)
        t_first = time.monotonic()
        for w in wrong:
            status, headers, body = self.call(c, g, w)
            answers.append((status, headers.get("retry-after"), time.monotonic()))
            if status != 200:
                self.assertApiError((status, headers, body), status)
        storm_s = time.monotonic() - t_first
        self.assertEqual([a[0] for a in answers[:BUDGET]], [401] * BUDGET,
                         "the budget's failures are answered 401")
        # every answer completed within the window (which began no earlier than t_first)
        # after the budget is a 429 with Retry-After
        in_window = [a for a in answers[BUDGET:] if a[2] < t_first + WINDOW]
        self.assertGreater(len(in_window), STORM // 2,
                           "the storm took %.1f s, the window is %.1f s" % (storm_s, WINDOW))
        for status, retry, _ in in_window:
            self.assertEqual(status, 429)
            self.assertIsNotNone(retry, "429 without Retry-After")
            self.assertTrue(1 <= int(retry) <= int(WINDOW) + 1, retry)
        retries = [int(a[1]) for a in in_window]
        self.assertLessEqual(retries[-1], retries[0], "Retry-After does not count down")
        # a storm longer than the window lets at most the budget through per window
        late_401 = sum(1 for a in answers[BUDGET:] if a[0] == 401)
        self.assertLessEqual(late_401, BUDGET * int(storm_s // WINDOW))
        sent_429 = sum(1 for a in answers if a[0] == 429)

        # while 127.0.0.1 is throttled: its valid token gets 429 too (no oracle) ...
        status, headers, body = self.call(c, g, tok)
        self.assertApiError((status, headers, body), 429, "try again")
        self.assertIn("retry-after", headers)
        sent_429 += 1
        retry = int(headers["retry-after"])
        # ... and another address with a valid token is served
        other = self.conn(g, "127.0.0.2")
        status, _, body = self.call(other, g, tok)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), [])
        # another address's wrong tokens are its own budget
        status, _, _ = self.call(other, g, wrong[0])
        self.assertEqual(status, 401)
        other.close()

        # after the window, the valid token from 127.0.0.1 works again
        time.sleep(retry + 0.3)
        status, _, body = self.call(c, g, tok)
        self.assertEqual(status, 200, body)
        c.close()

        # the log: bounded, with the counts of the refusals and without any token; the
        # last refusals are reported within a second of the window's end
        self.assertTrue(g.wait_log(r"throttling of 127\.0\.0\.1 has ended", timeout=5),
                        "\n".join(self.throttle_lines(g)))
        lines = self.throttle_lines(g)
        self.assertGreaterEqual(len(lines), 2)
        self.assertLessEqual(len(lines), 2 + 2 * int(storm_s // WINDOW), "\n".join(lines))
        self.assertTrue(all("127.0.0.1" in l for l in lines), "\n".join(lines))
        self.assertIn("%d failed attempts from 127.0.0.1" % BUDGET, lines[0])
        counted = sum(int(a or b) for l in lines
                      for a, b in re.findall(r"refused (\d+) API|(\d+) more API", l))
        self.assertEqual(counted, sent_429, "\n".join(lines))
        log = g.logs() + open(g.access_path).read()
        self.assertNotIn(tok, log)
        self.assertNotIn(tok.split(".")[2], log)
        for w in wrong:
            self.assertNotIn(w.split(".")[2], log, "a wrong token is in the log")

    def test_throttling_off(self):
        g, tok = self.start(budget=0)
        rng = random.Random(650)
        c = self.conn(g)
        statuses = {self.call(c, g, wrong_token(rng))[0] for _ in range(100)}
        self.assertEqual(statuses, {401})
        self.assertEqual(self.call(c, g, tok)[0], 200)
        c.close()
        self.assertEqual(self.throttle_lines(g), [])

    def test_refused_before_the_body_is_read(self):
        """A throttled address's upload is refused from its headers: 429, the body is not
        read, nothing is written."""
        g, tok = self.start(budget=2)
        c = self.conn(g)
        for _ in range(2):
            self.assertEqual(self.call(c, g, "dt0c01.wrong")[0], 401)
        before = sorted(os.listdir(g.ssl_dir))
        c.request("PUT", g.api_path("x.p12"), body=os.urandom(512 * 1024),
                  headers={"Authorization": "Api-Token " + tok, "X-Password": "pw"})
        r = c.getresponse()
        body = r.read()
        self.assertApiError((r.status, {k.lower(): v for k, v in r.getheaders()}, body), 429)
        self.assertEqual(sorted(os.listdir(g.ssl_dir)), before)
        c.close()


if __name__ == "__main__":
    main()
