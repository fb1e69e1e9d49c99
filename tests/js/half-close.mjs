// Sends its stdin's bytes on one connection, then half-closes it (FIN), and prints everything
// the server sends back until it closes: a client that pipelines requests and then says no more.
//   node tests/js/half-close.mjs PORT < requests
import net from "node:net";

const chunks = [];
process.stdin.on("data", (d) => chunks.push(d));
process.stdin.on("end", () => {
  const s = net.connect(Number(process.argv[2]), "127.0.0.1", () => s.end(Buffer.concat(chunks)));
  s.on("data", (d) => process.stdout.write(d));
  s.on("error", (e) => console.error("half-close: " + e.message));
});
