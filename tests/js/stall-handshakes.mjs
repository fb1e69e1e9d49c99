// Holds COUNT connections to a node's cluster port, each stalled in the handshake: it sends a frame
// header announcing an 80-byte hello and one byte of it, then nothing. Each connection the node
// closes is opened again at once, for as long as this runs: a client without the secret trying to
// keep every handshake slot busy. Prints "flooding" once COUNT connections have been accepted, and
// on SIGTERM (or when stdin ends) one line of JSON, {"opened":N,"closed":N,"failed":N}, and exits.
//   node tests/js/stall-handshakes.mjs PORT COUNT [LOCAL_ADDRESS]
import net from "node:net";

const port = Number(process.argv[2]);
const count = Number(process.argv[3]);
const localAddress = process.argv[4] || "127.0.0.1";
const stall = Buffer.from([0x00, 0x00, 0x00, 0x50, 0x87]);

let opened = 0, closed = 0, failed = 0, announced = false, stopping = false;

function open() {
  if (stopping) return;
  let connected = false;
  const s = net.connect({ port, host: "127.0.0.1", localAddress }, () => {
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
    if (connected) setImmediate(open);
    else setTimeout(open, 10);
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
for (let i = 0; i < count; i++) open();
