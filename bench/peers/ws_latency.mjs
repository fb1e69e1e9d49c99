// WebSocket echo latency from Node's `ws` client: N sequential round trips of a small JSON
// message; prints the 50th and 99th percentiles in microseconds.
//   node bench/peers/ws_latency.mjs URL [N]
import WebSocket from "../../tests/js/node_modules/ws/index.js";

const [url, count] = process.argv.slice(2);
const n = Number(count || 20000);
const ws = new WebSocket(url);
const samples = [];
let started = 0n;
const msg = JSON.stringify({ move: { position: 4, team: "fish" } });
ws.on("open", () => {
  started = process.hrtime.bigint();
  ws.send(msg);
});
ws.on("message", () => {
  const now = process.hrtime.bigint();
  samples.push(Number(now - started) / 1000);
  if (samples.length === n) {
    samples.sort((a, b) => a - b);
    const at = (q) => samples[Math.min(samples.length - 1, Math.floor(samples.length * q))];
    console.log(`p50 ${at(0.5).toFixed(1)} p99 ${at(0.99).toFixed(1)}`);
    ws.close();
    return;
  }
  started = process.hrtime.bigint();
  ws.send(msg);
});
ws.on("error", (e) => {
  console.error("ws_latency: " + e.message);
  process.exit(1);
});
