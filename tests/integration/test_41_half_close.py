"""Layer 41: a client that half-closes. Scripts and tools (nc -N, socat, a client that
calls shutdown(SHUT_WR) after its last request) send their requests, end their side with a
TCP FIN, with or without a TLS close_notify, and keep reading. Every request they sent
completely is answered, pipelined ones too, in order; the last answer says
"Connection: close" or the connection ends after it; an unfinished request ends the
connection without an answer. Before this, the FIN without close_notify was a fatal TLS
error in OpenSSL 3 (a decode_error alert, no more writes) and the answers were lost, and a
pipelined request behind an asynchronous answer was dropped."""
import os
import re
import socket
import ssl
import time

from harness import SLOW, GatewayTest, main


class HalfClosingClient:
    """A TLS client over a raw socket (ssl.MemoryBIO), so that it can end its TCP side
    (shutdown SHUT_WR) and still read: Python's SSLSocket.shutdown drops the TLS layer."""

    def __init__(self, port, version=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if version:
            ctx.minimum_version = ctx.maximum_version = version
        self.raw = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = self.raw.recv(65536)
                if not data:
                    raise AssertionError("the gateway closed during the handshake")
                self.inc.write(data)
        self._flush()

    def _flush(self):
        data = self.out.read()
        if data:
            self.raw.sendall(data)

    def send(self, data):
        self.tls.write(data)
        self._flush()

    def close_notify(self):
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass
        self._flush()

    def fin(self):
        self.raw.shutdown(socket.SHUT_WR)

    def read_all(self, timeout=10):
        """Everything the gateway sends until it closes: (plaintext, how it ended)."""
        self.raw.settimeout(timeout * SLOW)
        data, end = b"", "closed"
        try:
            while True:
                chunk = self.raw.recv(65536)
                if not chunk:
                    break
                self.inc.write(chunk)
                while True:
                    try:
                        got = self.tls.read(65536)
                    except ssl.SSLWantReadError:
                        break
                    except ssl.SSLZeroReturnError:
                        end = "close_notify"
                        break
                    if not got:
                        break
                    data += got
        except socket.timeout:
            end = "still open"
        except ConnectionResetError:
            end = "reset"
        except ssl.SSLError as e:
            end = "TLS error: %s" % e
        finally:
            self.raw.close()
        return data, end


def statuses(data):
    return [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


def health(extra=""):
    return ("GET /rest/health HTTP/1.1\r\nHost: x\r\n%s\r\n" % extra).encode()


class HalfCloseTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.g, self.tok = self.api_gateway()

    def list_request(self):
        return ("GET /e/myenv/api/v1/certificate/list HTTP/1.1\r\nHost: x\r\n"
                "Authorization: Api-Token %s\r\n\r\n" % self.tok).encode()

    def client(self, version=None):
        return HalfClosingClient(self.g.port, version)

    def assertAnswered(self, data, end, codes):
        self.assertEqual(statuses(data), codes, data[:2000])
        self.assertIn(end, ("closed", "close_notify"),
                      "the gateway did not end the connection after its answers")
        self.assertIsNone(self.g.proc.poll(), "the gateway died")

    def test_fin_without_close_notify_after_pipelined_requests(self):
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            c = self.client(version)
            c.send(health() * 3)
            c.fin()
            data, end = c.read_all()
            self.assertAnswered(data, end, [200, 200, 200])
            self.assertEqual(data.count(b"RUNNING"), 3)

    def test_fin_behind_an_asynchronous_answer(self):
        """The API answers from the thread pool; the pipelined health check behind it, and
        the FIN behind that, arrive while the job runs."""
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            c = self.client(version)
            c.send(health() + self.list_request() + health())
            c.fin()
            data, end = c.read_all()
            codes = statuses(data)
            # the list job may be refused as not started (its client ended its side first:
            # 503 with a sentence), never lost; whatever is answered is answered in order
            self.assertEqual(len(codes), 3, data[:3000])
            self.assertEqual(codes[0], 200)
            self.assertIn(codes[1], (200, 503), data[:3000])
            self.assertEqual(codes[2], 200)
            if codes[1] == 503:
                self.assertIn(b"client closed its connection", data)
            self.assertAnswered(data, end, codes)
            # nothing follows an answer that says close (RFC 9112 9.6)
            i = data.find(b"Connection: close")
            if i >= 0:
                self.assertNotIn(b"HTTP/1.1 ", data[i:], data[:3000])

    def test_close_notify_then_fin(self):
        c = self.client()
        c.send(health() + health())
        c.close_notify()
        c.fin()
        data, end = c.read_all()
        self.assertAnswered(data, end, [200, 200])

    def test_unfinished_request_after_answers_ends_the_connection(self):
        c = self.client()
        c.send(health() + b"GET /rest/health HTTP/1.1\r\nHost: x\r\nX-Half: ")
        c.fin()
        t0 = time.monotonic()
        data, end = c.read_all(timeout=10)
        self.assertAnswered(data, end, [200])
        self.assertLess(time.monotonic() - t0, 5 * SLOW,
                        "the gateway waited for the rest of a request after the client's EOF")

    def test_unfinished_body_then_fin(self):
        c = self.client()
        c.send(("PUT /e/myenv/api/v1/certificate/x.p12 HTTP/1.1\r\nHost: x\r\n"
                "Authorization: Api-Token %s\r\nX-Password: pw\r\nContent-Length: 1000\r\n\r\n"
                % self.tok).encode() + b"\x30" * 10)
        c.fin()
        data, end = c.read_all()
        self.assertEqual(statuses(data), [], data[:2000])
        self.assertIn(end, ("closed", "close_notify", "reset"))
        self.assertFalse(os.path.exists(os.path.join(self.g.ssl_dir, "x.p12")))

    def test_many_half_closing_clients_and_the_gateway_stays_well(self):
        for i in range(40):
            c = self.client()
            c.send(health() * (1 + i % 4) + (self.list_request() if i % 5 == 0 else b""))
            if i % 2:
                c.close_notify()
            c.fin()
            data, end = c.read_all()
            self.assertIn(len(statuses(data)), (1 + i % 4 + (1 if i % 5 == 0 else 0),),
                          (i, data[:1000]))
        code, _, body = self.g.call("GET", "list", token=self.tok)
        self.assertEqual(code, 200, body)


if __name__ == "__main__":
    main()
