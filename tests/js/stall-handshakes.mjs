// Holds COUNT connections to a node's cluster port, each stalled in the handshake: it sends a frame
// header announcing an 80-byte hello and one byte of it, then nothing. Each connection the node
// closes is opened again at once, for as long as this runs: a client without the secret trying to
// keep every handshake slot busy. Prints "flooding" once COUNT connections have been accepted, and
// on SIGTERM (or when stdin ends) one line of JSON, {"opened":N,"closed":N,"failed":N}, and exits.
// With SOURCES, the connections come from that many local addresses, LOCAL_ADDRESS and the ones
// after it (127.0.1.1, 127.0.1.2, ...: the whole of 127/8 is loopback), one connection each in turn.
//   node tests/js/stall-handshakes.mjs PORT COUNT [LOCAL_ADDRESS [SOURCES]]
import net from "node:net";

const port = Number(process.argv[2]);
const count = Number(process.argv[3]);
const localAddress = process.argv[4] || "127.0.0.1";
const sources = Number(process.argv[5] || 1);
const base = localAddress.split(".").map(Number);

// The i-th source address: LOCAL_ADDRESS plus i, carried over the last two bytes.
function source(i) {
  const n = base[2] * 256 + base[3] + (i % sources);
  return `${base[0]}.${base[1] + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`;
}
const stall = Buffer.from([0x00, 0x00, 0x00, 0x50, 0x87]);

let opened = 0, closed = 0, failed = 0, announced = false, stopping = false;

function open(i) {
  if (stopping) return;
  let connected = false;
  const s = net.connect({ port, host: "127.0.0.1", localAddress: source(i) }, () => {
    connected = true;
    opened++;
    s.write(stall);
    if (!announced && opened >= count) {
      announced = true;
      console.log("flooding");
    }
  });
  s.on("error", () => {
    if (!connected) failed++;
  });
  s.on("close", () => {
    if (connected) closed++;
    // Refused outright (no listener, no port): try again a little later, not in a hot loop.
    if (connected) setImmediate(open, i);
    else setTimeout(open, 10, i);
  });
}

function stop() {
  if (stopping) return;
  stopping = true;
  console.log(JSON.stringify({ opened, closed, failed }));
  process.exit(0);
}

process.on("SIGTERM", stop);
process.stdin.on("end", stop);
process.stdin.resume();
for (let i = 0; i < count; i++) open(i);
