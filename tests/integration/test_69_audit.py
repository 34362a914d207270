"""Layer 60: the audit trail (issue #11, item 3). Every certificate change appends one JSON
line to DIR/log/audit.jsonl: API upload (also PEM), activate and delete, their refusals
(4xx) by authenticated clients, SIGHUP reloads that change the served certificate and
failed ones, the fallback to the default certificate (at start and on reload) and
`certgate cert import`. The hashes in a line are checked against the certificate that
`openssl s_client` really receives; no password or token secret may appear anywhere in
the log folder. Rotation by size ([certgate] audit-max-size / audit-files), concurrent
writers (every line is whole JSON), kill -9 during a burst of uploads, and the reader
`certgate audit` (--since, --json, corrupt lines, usage errors) are covered too."""
import json
import os
import re
import threading
import time
import unittest

from harness import (GatewayTest, SLOW, certgate, cert_fingerprint, der_fingerprint, main,
                     run)

from test_68_cert_import import s_client_leaf_fingerprint

SECRET = "Audit-Secret-pw-4711"  # the PKCS#12 password: must never reach the log


def audit_dir(g):
    return os.path.join(g.data_dir, "log")


def audit_path(g):
    return os.path.join(audit_dir(g), "audit.jsonl")


def raw_lines(g):
    """The trail's lines oldest first across the rotated files (bytes, newlines kept)."""
    d = audit_dir(g)
    nums = sorted((int(n.rsplit(".", 1)[1]) for n in os.listdir(d)
                   if re.fullmatch(r"audit\.jsonl\.\d+", n)), reverse=True)
    out = []
    for name in ["audit.jsonl.%d" % n for n in nums] + ["audit.jsonl"]:
        p = os.path.join(d, name)
        if os.path.exists(p):
            with open(p, "rb") as f:
                out += f.read().splitlines(keepends=True)
    return out


def records(g):
    """Every line parsed (a line that is not JSON fails the test)."""
    out = []
    for i, line in enumerate(raw_lines(g)):
        if not line.endswith(b"\n"):
            raise AssertionError("line %d is incomplete: %r" % (i + 1, line))
        out.append(json.loads(line))
    return out


def wait_records(g, n, timeout=10):
    deadline = time.time() + timeout * SLOW
    while True:
        r = records(g)
        if len(r) >= n or time.time() > deadline:
            return r
        time.sleep(0.05)


def token_id(token):
    return ".".join(token.split(".")[:2])


class AuditTest(GatewayTest):
    def key_cert(self, name, cn):
        return self.pki.self_signed(name, cn, san="DNS:" + cn)

    def p12(self, name, cn, password=SECRET):
        key, crt = self.key_cert(name, cn)
        return self.pki.p12(name + ".p12", key, crt, password), crt

    def assertNoSecrets(self, g, *secrets):
        for name in os.listdir(audit_dir(g)):
            with open(os.path.join(audit_dir(g), name), "rb") as f:
                data = f.read()
            for s in secrets:
                self.assertNotIn(s.encode(), data, "%s holds a secret" % name)

    def assertLine(self, rec, **want):
        for k, v in want.items():
            self.assertEqual(rec.get(k), v, "%s in %s" % (k, rec))
        self.assertRegex(rec["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    def test_api_changes_and_refusals(self):
        g, tok = self.api_gateway(tz="UTC")
        other = g.token(name="other")
        self.assertEqual(os.stat(audit_dir(g)).st_mode & 0o777, 0o700)
        self.assertEqual(os.stat(audit_path(g)).st_mode & 0o777, 0o600)
        start = records(g)
        self.assertEqual(len(start), 1, start)
        default_fp = s_client_leaf_fingerprint(g.port)[0]
        self.assertLine(start[0], source="start", operation="start", status=200,
                        sha256After=default_fp)
        a, a_crt = self.p12("a", "host-a")
        b, b_crt = self.p12("b", "host-b")
        # upload with curl (a real client): a is served now
        code, body = g.curl("-T", a, "-H", "Authorization: Api-Token " + tok,
                            "-H", "X-Password: " + SECRET, g.api("a.p12"))
        self.assertEqual(code, 200, body)
        fp_a = s_client_leaf_fingerprint(g.port)[0]
        self.assertEqual(fp_a, cert_fingerprint(a_crt))
        # a refused upload (wrong password), a dry run (not recorded), an unauthenticated
        # request (not recorded: no one to attribute it to; the metrics count it)
        self.assertEqual(g.upload("x.p12", b, "wrong-" + SECRET, tok)[0], 400)
        with open(b, "rb") as f:
            self.assertEqual(g.call("PUT", "b.p12?dryRun=true", tok, body=f.read(),
                                    headers={"X-Password": SECRET})[0], 200)
        self.assertEqual(g.upload("y.p12", b, SECRET, "dt0c01.NOTATOKEN")[0], 401)
        # b by python http.client, then activate a again, a refused activation, deletes
        self.assertEqual(g.upload("b.p12", b, SECRET, other)[0], 200)
        fp_b = s_client_leaf_fingerprint(g.port)[0]
        self.assertEqual(g.activate("a.p12", SECRET, tok)[0], 200)
        self.assertEqual(s_client_leaf_fingerprint(g.port)[0], fp_a)
        self.assertEqual(g.activate("b.p12", "N0pe-5521", tok)[0], 400)
        self.assertEqual(g.call("DELETE", "a.p12", tok)[0], 403)  # the active file
        self.assertEqual(g.call("DELETE", "b.p12", tok)[0], 200)
        self.assertEqual(g.call("DELETE", ".hidden", tok)[0], 400)  # refused on the loop
        rs = wait_records(g, 10)[1:]
        ops = [(r["operation"], r["name"], r["status"]) for r in rs]
        self.assertEqual(ops, [("upload", "a.p12", 200), ("upload", "x.p12", 400),
                               ("upload", "b.p12", 200), ("activate", "a.p12", 200),
                               ("activate", "b.p12", 400), ("delete", "a.p12", 403),
                               ("delete", "b.p12", 200), ("delete", None, 400)], rs)
        for r in rs:
            self.assertLine(r, source="api", client="127.0.0.1")
            self.assertEqual(r["tokenId"], token_id(other if r["name"] == "b.p12" and
                                                    r["operation"] == "upload" else tok))
        up_a, bad_up, up_b, act_a, bad_act, del_a, del_b, bad_name = rs
        self.assertLine(up_a, sha256Before=default_fp, sha256After=fp_a, alias="1")
        self.assertIn("uploaded and activated a.p12", up_a["message"])
        self.assertLine(bad_up, sha256Before=fp_a, sha256After=fp_a, alias=None)
        self.assertIn("wrong password", bad_up["message"])
        self.assertLine(up_b, sha256Before=fp_a, sha256After=fp_b)
        self.assertLine(act_a, sha256Before=fp_b, sha256After=fp_a, alias="1")
        self.assertLine(bad_act, sha256Before=fp_a, sha256After=fp_a)
        self.assertIn("active certificate file", del_a["message"])
        self.assertLine(del_b, sha256Before=fp_a, sha256After=fp_a)
        self.assertIn("Invalid certificate name", bad_name["message"])
        self.assertNoSecrets(g, SECRET, "N0pe-5521", tok.split(".")[2], other.split(".")[2])
        # the readable view says the same
        out = certgate("audit", "--data-dir", g.data_dir).stdout.splitlines()
        self.assertEqual(len(out), 9, out)
        self.assertRegex(out[1], r"^\S+Z api upload 200 a\.p12 alias 1 token %s from "
                                 r"127\.0\.0\.1 served %s -> %s: uploaded and activated"
                         % (re.escape(token_id(tok)), default_fp[:16], fp_a[:16]))
        self.assertRegex(out[2], r"api upload 400 x\.p12 .* served %s \(unchanged\): "
                         % fp_a[:16])

    def test_pem_upload_and_api_token_in_query(self):
        g, tok = self.api_gateway(tz="UTC")
        key, crt = self.key_cert("pem", "host-pem")
        bundle = os.path.join(self.tmp, "bundle.pem")
        with open(bundle, "wb") as f, open(crt, "rb") as c, open(key, "rb") as k:
            f.write(c.read() + k.read())
        code, out = g.curl("-X", "PUT", "--data-binary", "@" + bundle, "-H",
                           "Content-Type: application/x-pem-file",
                           g.api("pem.p12") + "?api-token=" + tok)
        self.assertEqual(code, 200, out)
        r = wait_records(g, 2)[-1]
        self.assertLine(r, operation="upload", name="pem.p12", status=200,
                        tokenId=token_id(tok), sha256After=cert_fingerprint(crt))
        self.assertIn("PEM bundle", r["message"])
        self.assertNoSecrets(g, tok.split(".")[2], "PRIVATE KEY")

    def test_reload_and_fallback(self):
        g = self.gateway("gw", env={"TZ": "UTC"})
        a, a_crt = self.p12("a", "host-a")
        g.install(a)
        g.write_sections(webserver="certificate-file = missing.p12\n"
                                   "certificate-password = %s\n" % SECRET)
        g.start()
        default_fp = s_client_leaf_fingerprint(g.port)[0]
        r = records(g)
        self.assertEqual(len(r), 1)
        self.assertLine(r[0], source="start", operation="fallback", status=500,
                        name="missing.p12", sha256After=default_fp)
        self.assertIn("serving the default self-signed certificate", r[0]["message"])
        # a reload that serves a.p12
        g.write_sections(webserver="certificate-file = a.p12\n"
                                   "certificate-password = %s\n" % SECRET)
        g.reload()
        fp_a = s_client_leaf_fingerprint(g.port)[0]
        self.assertEqual(fp_a, cert_fingerprint(a_crt))
        r = records(g)
        self.assertLine(r[-1], source="reload", operation="reload", status=200, name="a.p12",
                        sha256Before=default_fp, sha256After=fp_a)
        # a reload that changes nothing: no line
        n = len(r)
        g.reload()
        self.assertEqual(len(records(g)), n)
        # a failed reload
        g.write_sections(webserver="certificate-file = a.p12\n"
                                   "certificate-password = Wr0ng-9931\n")
        self.assertIn("reload failed", g.reload())
        r = records(g)
        self.assertLine(r[-1], source="reload", operation="reload", status=500,
                        sha256Before=fp_a, sha256After=fp_a)
        self.assertIn("still serving the previous certificate", r[-1]["message"])
        # the configuration names no certificate any more: fallback on reload
        g.write_sections(certgate="api-queue = 8\n")
        g.reload()
        r = records(g)
        self.assertLine(r[-1], source="reload", operation="fallback", status=200,
                        sha256Before=fp_a, sha256After=s_client_leaf_fingerprint(g.port)[0])
        self.assertNoSecrets(g, SECRET, "Wr0ng-9931")

    def test_cert_import_lines(self):
        g, tok = self.api_gateway(tz="UTC")
        default_fp = s_client_leaf_fingerprint(g.port)[0]
        key, crt = self.key_cert("imp", "host-imp")
        certgate("cert", "import", "--data-dir", g.data_dir, "--certificate", crt, "--key", key,
                 "--name", "imp.p12", "--activate")
        p = certgate("cert", "import", "--data-dir", g.data_dir, "--certificate", crt,
                     "--key", crt, "--name", "bad.p12", check=False)
        self.assertEqual(p.returncode, 1)
        r = records(g)[1:]
        self.assertEqual([(x["source"], x["operation"], x["name"], x["status"]) for x in r],
                         [("cli", "import", "imp.p12", 200), ("cli", "activate", "imp.p12", 200),
                          ("cli", "import", "bad.p12", 400)])
        self.assertRegex(r[0]["user"], r"^\S+ \(uid %d\)$" % os.geteuid())
        self.assertLine(r[0], sha256Before=default_fp, sha256After=default_fp)
        self.assertLine(r[1], sha256Before=default_fp, sha256After=cert_fingerprint(crt))
        self.assertIn("after SIGHUP", r[1]["message"])
        self.assertIn("nothing was stored", r[2]["message"])
        # the password the import made is printed only without --activate: not in the log
        p = certgate("cert", "import", "--data-dir", g.data_dir, "--certificate", crt, "--key",
                     key, "--name", "imp2.p12")
        pw = re.search(r"through the API: (\S+)$", p.stdout, re.M).group(1)
        self.assertNoSecrets(g, pw)
        g.reload()
        self.assertEqual(s_client_leaf_fingerprint(g.port)[0], cert_fingerprint(crt))
        self.assertLine(records(g)[-1], source="reload", sha256After=cert_fingerprint(crt))

    def test_rotation_reader_since_json_and_corrupt_lines(self):
        g, tok = self.api_gateway(tz="UTC", conf="[certgate]\naudit-max-size = 1K\n"
                                                 "audit-files = 3\n")
        for i in range(14):  # refusals on the loop and in the pool, alternately
            if i % 2:
                self.assertEqual(g.call("DELETE", "none-%d.p12" % i, tok)[0], 404)
            else:
                self.assertEqual(g.call("DELETE", ".bad-%d" % i, tok)[0], 400)
        wait_records(g, 9)  # at most 3 rotated files of 1-2 lines and the current one
        names = sorted(os.listdir(audit_dir(g)))
        self.assertEqual(names, ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2",
                                 "audit.jsonl.3"])
        for n in names:
            size = os.path.getsize(os.path.join(audit_dir(g), n))
            self.assertLessEqual(size, 1024, n)
            self.assertEqual(os.stat(os.path.join(audit_dir(g), n)).st_mode & 0o777, 0o600)
        lines = raw_lines(g)
        recs = [json.loads(x) for x in lines]
        times = [r["time"] for r in recs]
        self.assertEqual(times, sorted(times))
        # the newest 14 are kept whole, in order (the oldest were rotated away)
        nums = [int(re.search(r"-(\d+)", r["message"]).group(1)) for r in recs
                if re.search(r"-(\d+)", r["message"] or "")]
        self.assertEqual(nums, list(range(14))[-len(nums):])
        # --json gives exactly the raw lines, oldest first; readable: one line each
        js = certgate("audit", "--data-dir", g.data_dir, "--json").stdout
        self.assertEqual(js.encode(), b"".join(lines))
        rd = certgate("audit", "--data-dir", g.data_dir).stdout.splitlines()
        self.assertEqual(len(rd), len(lines))
        # --since: an RFC 3339 time, an offset, a duration, a date
        mid = recs[len(recs) // 2]["time"]
        got = certgate("audit", "--data-dir", g.data_dir, "--json", "--since", mid).stdout
        self.assertEqual(len(got.splitlines()), len([t for t in times if t >= mid]))
        self.assertEqual(certgate("audit", "--data-dir", g.data_dir, "--since",
                                  "2999-01-01T00:00:00Z").stdout, "")
        self.assertEqual(certgate("audit", "--data-dir", g.data_dir, "--since",
                                  "2999-01-01T01:00:00+01:00").stdout, "")
        self.assertEqual(len(certgate("audit", "--data-dir", g.data_dir, "--since",
                                      "1h").stdout.splitlines()), len(lines))
        self.assertEqual(len(certgate("audit", "--data-dir", g.data_dir, "--since",
                                      "2000-01-01").stdout.splitlines()), len(lines))
        # usage errors: exit 2 with a sentence
        for args, words in [(["--since", "yesterday"], "--since takes an RFC 3339 time"),
                            (["--since", "2026-13-01T00:00:00Z"], "--since takes"),
                            (["--since"], "unknown or incomplete option '--since'"),
                            (["--follow"], "unknown or incomplete option '--follow'")]:
            p = certgate("audit", "--data-dir", g.data_dir, *args, check=False)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn(words, p.stderr)
            self.assertIn("Usage: certgate audit", p.stderr)
        p = certgate("audit", "--data-dir", os.path.join(self.tmp, "nowhere"), check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no such data directory", p.stderr)
        # a corrupt line in a rotated file and a torn last line: reported, skipped
        with open(os.path.join(audit_dir(g), "audit.jsonl.2"), "ab") as f:
            f.write(b"\x1b[31mnot json\n")
        g.stop()
        with open(audit_path(g), "ab") as f:
            f.write(b'{"time":"2026-11-30T10:00:00.000Z","source":"api","op')
        p = certgate("audit", "--data-dir", g.data_dir, "--json", check=False)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.encode(), b"".join(lines))
        self.assertRegex(p.stderr, r"audit\.jsonl\.2:\d+: not an audit record \(corrupt line\)")
        self.assertRegex(p.stderr, r"audit\.jsonl:\d+: an incomplete line")
        self.assertIn("2 lines skipped", p.stderr)
        # a restart ends the torn line, so the next lines stay whole
        g.start()
        last = raw_lines(g)[-2:]
        self.assertTrue(last[0].endswith(b'"op\n'), last)
        self.assertEqual(json.loads(last[1])["operation"], "start")
        self.assertIn("its last line was incomplete", g.logs())

    def test_concurrent_writers_and_cli_while_running(self):
        g, tok = self.api_gateway(tz="UTC", conf="[certgate]\naudit-max-size = 8K\n"
                                                 "audit-files = 50\napi-queue = 64\n")
        p12s = [self.p12("c%d" % i, "host-c%d" % i)[0] for i in range(3)]
        errors = []

        def client(i):
            try:
                for k in range(8):
                    pw = SECRET if k % 2 == 0 else "bad"
                    st = g.upload("t%d-%d.p12" % (i, k), p12s[(i + k) % 3], pw, tok)[0]
                    if st != (200 if pw == SECRET else 400):
                        errors.append((i, k, st))
            except Exception as e:  # noqa: BLE001
                errors.append((i, repr(e)))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        # an import from the command line at the same time: another process appending
        key, crt = self.key_cert("cli", "host-cli")
        for k in range(3):
            certgate("cert", "import", "--data-dir", g.data_dir, "--certificate", crt, "--key",
                     key, "--name", "cli-%d.p12" % k)
        for t in threads:
            t.join(120 * SLOW)
        rs = records(g)  # every line whole JSON, across the rotated files
        self.assertEqual(errors, [], [r["message"] for r in rs if r["status"] == 500])
        api = [r for r in rs if r["source"] == "api"]
        self.assertEqual(len(api), 48)
        self.assertEqual(len([r for r in rs if r["source"] == "cli"]), 3)
        self.assertEqual(sorted(r["name"] for r in api),
                         sorted("t%d-%d.p12" % (i, k) for i in range(6) for k in range(8)))
        self.assertGreater(len(os.listdir(audit_dir(g))), 2, "no rotation happened")
        # a change's before is the previous change's after (lines in the order of changes)
        ok = [r for r in rs if r["status"] == 200 and r["source"] == "api"]
        for prev, cur in zip(ok, ok[1:]):
            self.assertEqual(cur["sha256Before"], prev["sha256After"])
        self.assertNoSecrets(g, SECRET, tok.split(".")[2])

    def test_link_or_fifo_in_place_of_the_file_is_a_start_error(self):
        g = self.gateway("gw")
        os.makedirs(audit_dir(g), mode=0o755)
        target = os.path.join(self.tmp, "elsewhere")
        os.symlink(target, audit_path(g))
        self.assertEqual(g.run_to_exit(), 1)
        self.assertIn("cannot start: cannot open the audit log %s: it is a symbolic link"
                      % audit_path(g), g.logs())
        self.assertFalse(os.path.exists(target), "the link was followed")
        os.unlink(audit_path(g))
        os.mkfifo(audit_path(g))
        self.assertEqual(g.run_to_exit(), 1)  # and it does not hang on the FIFO
        self.assertIn("it is not a regular file", g.logs())
        os.unlink(audit_path(g))
        g.start()
        self.assertEqual(os.stat(audit_dir(g)).st_mode & 0o777, 0o700)  # made private
        self.assertEqual(records(g)[0]["operation"], "start")

    def test_kill9_during_a_burst_leaves_whole_lines(self):
        g, tok = self.api_gateway(tz="UTC", conf="[certgate]\napi-queue = 64\n")
        p12, _ = self.p12("k", "host-k")
        stop = threading.Event()
        done = []

        def client(i):
            k = 0
            while not stop.is_set():
                try:
                    g.upload("k%d-%d.p12" % (i, k), p12, SECRET, tok, timeout=5)
                    done.append(1)
                except Exception:  # noqa: BLE001 - the gateway is killed under it
                    return
                k += 1

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(6)]
        for t in threads:
            t.start()
        deadline = time.time() + 20 * SLOW
        while len(done) < 20 and time.time() < deadline:
            time.sleep(0.01)
        g.kill9()
        stop.set()
        for t in threads:
            t.join(30 * SLOW)
        self.assertGreaterEqual(len(done), 20)
        lines = raw_lines(g)
        # every line but possibly the last is whole JSON
        for line in lines[:-1]:
            json.loads(line)
        torn = not lines[-1].endswith(b"\n")
        if not torn:
            json.loads(lines[-1])
        p = certgate("audit", "--data-dir", g.data_dir, "--json")
        self.assertEqual(len(p.stdout.splitlines()), len(lines) - torn)
        if torn:
            self.assertIn("an incomplete line", p.stderr)
        # every 200 the clients saw is in the trail (the line is fsync'd before the answer)
        ups = [json.loads(x) for x in lines if x.endswith(b"\n")]
        self.assertGreaterEqual(len([r for r in ups if r["status"] == 200]), len(done))


if __name__ == "__main__":
    main()
