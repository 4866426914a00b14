#!/usr/bin/env python3
"""The kernel's side of VirtioUserIP's tests: plain Linux sockets, run in the TAP's namespace.

  udp-echo HOST PORT COUNT     COUNT datagrams (4..1,500 bytes, some over the MTU), 32 in flight;
                               prints "intact N of COUNT"
  tcp-send HOST PORT BYTES     sends BYTES (block i of 1 MiB: random.Random(i)), half-closes,
                               waits for the server to close; prints the stream's sha256
  tcp-receive HOST PORT        reads to end of stream; prints "BYTES SHA256"
  tcp-reset HOST PORT BYTES    sends BYTES, then closes with a reset (SO_LINGER 0)
  tcp-stall HOST PORT SECONDS  connects, reads nothing for SECONDS, then reads to end of stream;
                               prints "BYTES end" or "BYTES reset"
  tcp-serve PORT               accepts one connection, answers "pong:" + what it read to end
                               of stream, closes; prints "ready" once listening
  tcp-read HOST PORT           reads to end of stream; prints what came (as text)
  tcp-echo HOST PORT BYTES     sends BYTES (as tcp-send) while reading what comes back, then
                               half-closes and reads to end of stream; prints "BYTES SHA256"
                               of what it sent and of what came back
  tcp-ask HOST PORT BYTES      sends BYTES, half-closes, reads the answer to end of stream;
                               prints it (as text)
  tcp-blast HOST PORT SECONDS  (Scripts/bench-ip.sh) sends for SECONDS, half-closes, waits for
                               the close; prints "Mbit/s N"
  tcp-sink PORT                (Scripts/bench-ip.sh) takes connections and discards their bytes
"""
import hashlib
import random
import socket
import struct
import sys
import threading
import time


def blocks(total):
    i = 0
    while total > 0:
        block = random.Random(i).randbytes(min(total, 1 << 20))
        yield block
        total -= len(block)
        i += 1


def udp_echo(host, port, count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    pending, sent, received, intact = {}, 0, 0, 0
    while received < count:
        while sent < count and sent - received < 32:
            size = 4 + (sent * 37) % 1497 if sent % 100 else 3000
            payload = struct.pack(">I", sent) + random.Random(sent).randbytes(size - 4)
            pending[sent] = payload
            s.sendto(payload, (host, port))
            sent += 1
        try:
            data, _ = s.recvfrom(65536)
        except socket.timeout:
            break
        received += 1
        if pending.pop(struct.unpack(">I", data[:4])[0], None) == data:
            intact += 1
    print(f"intact {intact} of {count}")


def tcp_send(host, port, total):
    s = socket.create_connection((host, port), timeout=60)
    digest = hashlib.sha256()
    for block in blocks(total):
        s.sendall(block)
        digest.update(block)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    print(digest.hexdigest())


def digest_to_end(s):
    """Reads to end of stream; returns (bytes, sha256 hex) of what came."""
    digest, count = hashlib.sha256(), 0
    while True:
        data = s.recv(1 << 20)
        if not data:
            return count, digest.hexdigest()
        digest.update(data)
        count += len(data)


def tcp_receive(host, port):
    s = socket.create_connection((host, port), timeout=60)
    print(*digest_to_end(s))


def read_to_end(s):
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def tcp_read(host, port):
    s = socket.create_connection((host, port), timeout=60)
    print(read_to_end(s).decode(errors="replace"))


def tcp_echo(host, port, total):
    s = socket.create_connection((host, port), timeout=60)
    sent = hashlib.sha256()

    def send():
        for block in blocks(total):
            s.sendall(block)
            sent.update(block)
        s.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send)
    sender.start()
    count, back = digest_to_end(s)
    sender.join()
    print(total, sent.hexdigest(), count, back)


def tcp_ask(host, port, total):
    s = socket.create_connection((host, port), timeout=60)
    for block in blocks(total):
        s.sendall(block)
    s.shutdown(socket.SHUT_WR)
    print(read_to_end(s).decode(errors="replace"))


def tcp_stall(host, port, seconds):
    s = socket.create_connection((host, port), timeout=60)
    time.sleep(seconds)
    count = 0
    try:
        while True:
            data = s.recv(1 << 20)
            if not data:
                print(count, "end")
                return
            count += len(data)
    except ConnectionResetError:
        print(count, "reset")


def tcp_reset(host, port, total):
    s = socket.create_connection((host, port), timeout=60)
    for block in blocks(total):
        s.sendall(block)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    print("reset")


def tcp_serve(port):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(1)
    listener.settimeout(60)
    print("ready", flush=True)
    connection, _ = listener.accept()
    connection.settimeout(60)
    connection.sendall(b"pong:" + read_to_end(connection))
    connection.close()


def tcp_blast(host, port, seconds):
    s = socket.create_connection((host, port), timeout=60)
    block = bytes(1 << 20)
    sent, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        s.sendall(block)
        sent += len(block)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    print(f"Mbit/s {sent * 8 / (time.monotonic() - start) / 1e6:.0f}")


def tcp_sink(port):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(8)
    buffer = bytearray(1 << 20)
    while True:
        connection, _ = listener.accept()
        while connection.recv_into(buffer):
            pass
        connection.close()


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "udp-echo":
        udp_echo(args[0], int(args[1]), int(args[2]))
    elif command == "tcp-send":
        tcp_send(args[0], int(args[1]), int(args[2]))
    elif command == "tcp-receive":
        tcp_receive(args[0], int(args[1]))
    elif command == "tcp-read":
        tcp_read(args[0], int(args[1]))
    elif command == "tcp-echo":
        tcp_echo(args[0], int(args[1]), int(args[2]))
    elif command == "tcp-ask":
        tcp_ask(args[0], int(args[1]), int(args[2]))
    elif command == "tcp-stall":
        tcp_stall(args[0], int(args[1]), float(args[2]))
    elif command == "tcp-reset":
        tcp_reset(args[0], int(args[1]), int(args[2]))
    elif command == "tcp-serve":
        tcp_serve(int(args[0]))
    elif command == "tcp-blast":
        tcp_blast(args[0], int(args[1]), float(args[2]))
    elif command == "tcp-sink":
        tcp_sink(int(args[0]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
