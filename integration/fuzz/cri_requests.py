"""Sends random and mutated CRI requests to every RPC of api.proto over a unix socket, as raw
protobuf bytes through Python grpcio (a gRPC C-core client), and checks each gets an answer: a
response or a gRPC status, never a dropped call or a hang.

usage: cri_requests.py SOCKET API_PROTO SECONDS SEED [KNOWN_ID ...]

Requests are random protobuf encodings (fields 1-16 of every wire type, strings with NUL bytes,
`..`, absolute paths, huge and negative numbers, nested messages) and mutations of them; KNOWN_IDs
(a pod's, a container's) are put in field 1 sometimes, so calls reach past the id lookup. Prints
one line per RPC and last "requests: N, answered: N, codes: {...}"; exits non-zero when a call
went unanswered.
"""

import collections
import random
import re
import sys
import time

import grpc

STRINGS = [
    b"", b"\x00", b"a\x00b", b"..", b"../../etc/passwd", b"/", b"/proc/self/fd/3", b"/dev/sda",
    b"localhost/x", b"runtime/default", b"unconfined", b"kube-system", b"\xff\xfe", b"%2F",
    b"x" * 300, b"sha256:" + b"0" * 64, b"127.0.0.1:1/none:latest", b"SIGKILL", b"-1",
]
VARINTS = [0, 1, 2, 3, 255, 2**31 - 1, 2**31, 2**63 - 1, 2**64 - 1, 2**64 - 2**63]


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field, wire):
    return varint((field << 3) | wire)


def message(rng, depth=0):
    out = bytearray()
    for _ in range(rng.randint(0, 6)):
        field = rng.randint(1, 16)
        kind = rng.random()
        if kind < 0.3:
            out += key(field, 0) + varint(rng.choice(VARINTS) if rng.random() < 0.5 else rng.getrandbits(64))
        elif kind < 0.65:
            s = rng.choice(STRINGS) if rng.random() < 0.7 else rng.randbytes(rng.randint(0, 40))
            out += key(field, 2) + varint(len(s)) + s
        elif kind < 0.9 and depth < 3:
            inner = message(rng, depth + 1)
            out += key(field, 2) + varint(len(inner)) + inner
        elif kind < 0.95:
            out += key(field, 1) + rng.randbytes(8)
        else:
            out += key(field, 5) + rng.randbytes(4)
    return bytes(out)


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not data or rng.random() < 0.3:
            data += rng.randbytes(rng.randint(1, 8))
        elif rng.random() < 0.5:
            data[rng.randrange(len(data))] = rng.getrandbits(8)
        else:
            del data[rng.randrange(len(data))]
    return bytes(data)


def main():
    sock, proto, seconds, seed = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    known = [i.encode() for i in sys.argv[5:]]
    rng = random.Random(seed)
    text = open(proto).read()
    methods = []
    service = None
    for line in text.splitlines():
        m = re.match(r"\s*service\s+(\w+)", line)
        if m:
            service = m.group(1)
        m = re.match(r"\s*rpc\s+(\w+)\s*\(\s*(\w+)\s*\)\s*returns\s*\(\s*(stream\s+)?\w+", line)
        if m and service:
            methods.append((f"/runtime.v1.{service}/{m.group(1)}", bool(m.group(3))))
    ch = grpc.insecure_channel("unix://" + sock)
    callers = {
        path: (ch.unary_stream(path) if streaming else ch.unary_unary(path))
        for path, streaming in methods
    }
    codes = collections.Counter()
    internal = collections.Counter()
    per = collections.Counter()
    sent = answered = 0
    unanswered = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        path, streaming = rng.choice(methods)
        body = message(rng)
        if known and rng.random() < 0.5:
            k = rng.choice(known)
            body = key(1, 2) + varint(len(k)) + k + body
        if rng.random() < 0.2:
            body = mutate(rng, body)
        sent += 1
        per[path] += 1
        try:
            if streaming:
                # A stream's first answer (or its status) is enough.
                it = callers[path](body, timeout=2)
                next(iter(it), None)
                it.cancel()
            else:
                callers[path](body, timeout=20)
            codes["OK"] += 1
            answered += 1
        except grpc.RpcError as e:
            code = e.code()
            # The server's own status comes with its metadata (content-type at least); a status
            # the client made up (connection reset, deadline) comes with none. A stream we
            # cancelled after its first answer, or still open at its deadline, was answered.
            from_server = bool(e.initial_metadata()) or bool(e.trailing_metadata())
            if from_server or (
                streaming
                and code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)
            ):
                codes[code.name] += 1
                answered += 1
                if code == grpc.StatusCode.INTERNAL:
                    d = e.details() or ""
                    if d.startswith("failed to decode Protobuf message"):
                        codes["(undecodable)"] += 1
                    else:
                        internal[d[:90]] += 1
            else:
                unanswered.append((path, code.name, e.details(), body.hex()))
    for path, n in sorted(per.items()):
        print(f"{path}: {n}")
    for msg, n in internal.most_common(8):
        print(f"INTERNAL x{n}: {msg}")
    for u in unanswered[:10]:
        print("UNANSWERED", *u)
    print(f"requests: {sent}, answered: {answered}, codes: {dict(codes)}")
    sys.exit(1 if unanswered else 0)


if __name__ == "__main__":
    main()
