"""An independent MessagePack peer for the codec specs: Python's msgpack (Debian's python3-msgpack),
which shares no code with libmpack.

    python3 msgpack_peer.py VALUES ENCODED OUT

VALUES holds one expected value per line: "i <integer>" or "f <float, as %.17g, inf, nan>".
ENCODED holds atoll's encoding of each value, one after another. The script decodes ENCODED and
checks every value against VALUES; for integers it also checks that atoll chose the smallest
MessagePack form (the bytes msgpack.packb makes, which always picks the smallest). Then it writes
its own encoding of all the values, as one array, to OUT, for atoll to decode in turn.
Mismatches go to stderr (the first 20) and the exit code is 1.
"""
import math
import sys

import msgpack


def parse(line):
    kind, text = line.split(" ", 1)
    if kind == "i":
        return int(text)
    return float(text)


def same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return type(a) is type(b) and a == b


def main(values_path, encoded_path, out_path):
    with open(values_path) as f:
        expected = [parse(line.rstrip("\n")) for line in f if line.strip()]
    with open(encoded_path, "rb") as f:
        data = f.read()
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)
    problems = []
    start = 0
    count = 0
    for want in expected:
        try:
            got = unpacker.unpack()
        except msgpack.OutOfData:
            problems.append("the encoding ends after %d values of %d" % (count, len(expected)))
            break
        end = unpacker.tell()
        mine = data[start:end]
        start = end
        count += 1
        if not same(got, want):
            problems.append("%r was encoded as %s, which decodes as %r" % (want, mine.hex(), got))
        elif isinstance(want, int) and mine != msgpack.packb(want):
            problems.append("%r was encoded as %s, not in its smallest form %s"
                            % (want, mine.hex(), msgpack.packb(want).hex()))
    if start != len(data) and not problems:
        problems.append("%d bytes follow the last value" % (len(data) - start))
    with open(out_path, "wb") as f:
        f.write(msgpack.packb(expected, use_single_float=False))
    for p in problems[:20]:
        print(p, file=sys.stderr)
    if problems:
        print("%d of %d values wrong" % (len(problems), len(expected)), file=sys.stderr)
        return 1
    print("%d values checked" % count)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
