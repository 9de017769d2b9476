#!/usr/bin/env python3
"""The origin scripts/test-nginx controls: files from a directory, behaviour from the
query string. Usage: origin.py PORT DIR

  GET /ANY/PATH/NAME     DIR/NAME, with Last-Modified, ETag, Content-Type
  ?cc=VALUE              Cache-Control: VALUE (default: max-age=300; none: no header)
  ?expires=SECONDS       Expires: now + SECONDS (no Cache-Control unless cc is given)
  ?cookie=1              Set-Cookie: a=b
  ?vary=VALUE            Vary: VALUE
  ?status=N              that status
  ?hdr=Name:Value        an extra header
  ?truncate=1            announce the whole length, send half, close
  ?chunked=1             chunked transfer encoding
  ?chunked_truncate=1    chunked, half the body, close without the last chunk
  ?sleep=MS              wait before answering
  GET /_hits?p=PATH      how many requests PATH (path and query) got
"""
import email.utils
import hashlib
import http.server
import os
import socketserver
import sys
import threading
import time
import urllib.parse

HITS = {}
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_HEAD(self):
        self.do_GET(head=True)

    def do_GET(self, head=False):
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
        if u.path == "/_hits":
            with LOCK:
                n = HITS.get(q.get("p", ""), 0)
            body = str(n).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)
            return
        with LOCK:
            HITS[self.path] = HITS.get(self.path, 0) + 1
        if "sleep" in q:
            time.sleep(int(q["sleep"]) / 1000)
        path = os.path.join(DIR, os.path.basename(u.path))
        try:
            st = os.stat(path)
        except OSError:
            self.send_error(404)
            return
        size = st.st_size
        self.send_response(int(q.get("status", "200")))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        self.send_header("ETag", '"%s"' % hashlib.sha1(("%s-%d" % (path, st.st_mtime_ns)).encode()).hexdigest()[:16])
        if "expires" in q:
            self.send_header("Expires", email.utils.formatdate(time.time() + int(q["expires"]), usegmt=True))
            if "cc" in q:
                self.send_header("Cache-Control", q["cc"])
        elif q.get("cc") != "none":
            self.send_header("Cache-Control", q.get("cc", "max-age=300"))
        if q.get("cookie"):
            self.send_header("Set-Cookie", "a=b")
        if "vary" in q:
            self.send_header("Vary", q["vary"])
        if "hdr" in q:
            k, v = q["hdr"].split(":", 1)
            self.send_header(k, v)
        chunked = q.get("chunked") or q.get("chunked_truncate")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        if head:
            return
        with open(path, "rb") as f:
            if q.get("truncate"):
                self.wfile.write(f.read(size // 2))
                self.wfile.flush()
                self.close_connection = True
                return
            if chunked:
                data = f.read()
                half = data[: len(data) // 2] if q.get("chunked_truncate") else data
                if half:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(half), half))
                if q.get("chunked_truncate"):
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(b"0\r\n\r\n")
                return
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                self.wfile.write(b)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    port = int(sys.argv[1])
    DIR = sys.argv[2]
    Server(("127.0.0.1", port), Handler).serve_forever()
