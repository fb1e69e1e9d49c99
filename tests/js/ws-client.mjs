// A WebSocket client for the functional specs (the `ws` package): connects, sends each line of
// stdin as one text message, and prints what happens, a line each:
//   open | message TEXT | close CODE REASON | error MESSAGE
//   node tests/js/ws-client.mjs URL [HEADER=VALUE...]
// A stdin line "!close CODE" closes; "!ping" pings; "!binary TEXT" sends a binary message;
// "!raw-bytes HEX" sends HEX bytes as a text frame unchecked (invalid UTF-8 included);
// "!fragments A|B|C" sends one text message in three frames.
import WebSocket from "ws";
import readline from "node:readline";

const [url, ...pairs] = process.argv.slice(2);
const headers = Object.fromEntries(pairs.map((p) => p.split(/=(.*)/s).slice(0, 2)));
const ws = new WebSocket(url, { headers, skipUTF8Validation: true });
const say = (line) => process.stdout.write(line + "\n");

const pending = [];
let open = false;
ws.on("open", () => {
  say("open");
  open = true;
  for (const line of pending.splice(0)) act(line);
});
ws.on("message", (data) => say("message " + data.toString()));
ws.on("ping", () => say("ping"));
ws.on("close", (code, reason) => {
  say(`close ${code} ${reason.toString()}`);
  process.exit(0);
});
ws.on("error", (err) => say("error " + err.message));
ws.on("unexpected-response", (req, res) => {
  say(`refused ${res.statusCode}`);
  process.exit(0);
});

function act(line) {
  if (line.startsWith("!close")) ws.close(Number(line.split(" ")[1] || 1000));
  else if (line === "!ping") ws.ping();
  else if (line.startsWith("!binary ")) ws.send(Buffer.from(line.slice(8)), { binary: true });
  else if (line.startsWith("!fragments ")) {
    const parts = line.slice(11).split("|");
    parts.forEach((part, i) => ws.send(part, { binary: false, fin: i === parts.length - 1 }));
  } else if (line.startsWith("!raw-bytes ")) ws.send(Buffer.from(line.slice(11), "hex"), { binary: false });
  else ws.send(line);
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => (open ? act(line) : pending.push(line)));
