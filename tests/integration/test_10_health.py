"""Layer 10: the process starts, answers /rest/health, and stops cleanly."""
import signal

from harness import GatewayTest, main


class HealthTest(GatewayTest):
    def test_health_running(self):
        g = self.gateway().start()
        status, headers, body = g.request("GET", "/rest/health")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"RUNNING")
        self.assertTrue(headers["content-type"].startswith("text/plain"))

    def test_unknown_path_without_upstream_503(self):
        # every non-local path is forwarded (issue #4); with no [upstream] that is a 503
        g = self.gateway().start()
        status, _, body = g.request("GET", "/nothing/here")
        self.assertEqual(status, 503)
        self.assertIn(b"no upstream configured", body)

    def test_health_wrong_method_405(self):
        g = self.gateway().start()
        status, headers, _ = g.request("DELETE", "/rest/health")
        self.assertEqual(status, 405)
        self.assertEqual(headers.get("allow"), "GET, HEAD")

    def test_sigterm_exits_zero(self):
        g = self.gateway().start()
        self.assertEqual(g.stop(signal.SIGTERM), 0)
        self.assertIn("stopped", g.logs())


if __name__ == "__main__":
    main()
