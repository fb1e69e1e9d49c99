#!/usr/bin/python3
"""Network probes for the partition specs (tests/helpers/netns.lua), run inside a node's namespace.

  netprobe.py reach SECONDS HOST...   for each host, one line: HOST tcp yes|no udp yes|no
  netprobe.py serve IP PORT           a TCP echo server for one connection
  netprobe.py connect IP PORT         a TCP client: sends each line of stdin, prints each echo

reach sends to a port nobody listens on (9): a reachable host answers at once, TCP with a reset
and UDP with an ICMP port unreachable; a cut one never answers within SECONDS. serve and connect
print one line per event, for the spec to expect: listening, accepted, connected, got LINE, eof,
reset, error MESSAGE.
"""
import errno
import select
import socket
import sys
import threading
import time

PORT = 9


def say(*words):
    print(*words, flush=True)


def reach(seconds, hosts):
    tcp, udp = {}, {}
    for h in hosts:
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.setblocking(False)
        t.connect_ex((h, PORT))
        tcp[t] = h
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.setblocking(False)
        u.connect((h, PORT))
        u.send(b"probe")
        udp[u] = h
    answered = {("tcp", h): False for h in hosts}
    answered.update({("udp", h): False for h in hosts})
    deadline = time.monotonic() + seconds
    pending_t, pending_u = set(tcp), set(udp)
    while pending_t or pending_u:
        # One last look once the time is up: a probe descheduled past its deadline still counts
        # the answers that came.
        left = max(0, deadline - time.monotonic())
        r, w, _ = select.select(list(pending_u), list(pending_t), [], left)
        for t in w:
            pending_t.discard(t)
            answered[("tcp", tcp[t])] = t.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) in (0, errno.ECONNREFUSED)
        for u in r:
            pending_u.discard(u)
            try:
                u.recv(64)
                answered[("udp", udp[u])] = True
            except ConnectionRefusedError:
                answered[("udp", udp[u])] = True
            except OSError:
                pass
        if left == 0:
            break
    for h in hosts:
        say(h, "tcp", "yes" if answered[("tcp", h)] else "no", "udp", "yes" if answered[("udp", h)] else "no")


def pump(sock):
    """Prints what arrives on sock, line by line, and how the stream ends; yields each line."""
    buf = b""
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                say("eof")
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                say("got", line.decode())
                yield line
    except ConnectionResetError:
        say("reset")
    except OSError as e:
        say("error", e)


def serve(ip, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port))
    s.listen(1)
    say("listening")
    c, _ = s.accept()
    say("accepted")
    for line in pump(c):
        c.sendall(line + b"\n")


def connect(ip, port):
    c = socket.create_connection((ip, port), timeout=5)
    c.settimeout(None)
    say("connected")
    reader = threading.Thread(target=lambda: list(pump(c)), daemon=True)
    reader.start()
    while True:
        line = sys.stdin.readline()
        if not line:
            break
        c.sendall(line.encode())
    c.shutdown(socket.SHUT_WR)
    reader.join(5)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "reach":
        reach(float(sys.argv[2]), sys.argv[3:])
    elif mode == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    elif mode == "connect":
        connect(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit("netprobe.py: unknown mode " + mode)
