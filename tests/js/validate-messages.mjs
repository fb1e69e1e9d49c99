// Checks messages against openapi.yaml's schemas with a third-party JSON Schema validator (ajv,
// draft 2020-12 as OpenAPI 3.1 uses it, with ajv-formats for uuid): one JSON message per line
// on stdin, each valid against one of the schemas named.
//   node tests/js/validate-messages.mjs openapi.yaml LobbyMessage StreamError < lines
import fs from "node:fs";
import YAML from "yaml";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const [file, ...names] = process.argv.slice(2);
const doc = YAML.parse(fs.readFileSync(file, "utf8"));
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
ajv.addSchema({ $id: "openapi.json", components: doc.components });
const validate = ajv.compile({
  oneOf: names.map((n) => ({ $ref: `openapi.json#/components/schemas/${n}` })),
});

const lines = fs.readFileSync(0, "utf8").split("\n").filter((l) => l.trim() !== "");
let bad = 0;
for (const [i, line] of lines.entries()) {
  let value;
  try {
    value = JSON.parse(line);
  } catch (e) {
    console.error(`line ${i + 1} is not JSON: ${line}`);
    bad++;
    continue;
  }
  if (!validate(value)) {
    console.error(`line ${i + 1} is not a ${names.join(" | ")}: ${line}`);
    console.error(JSON.stringify(validate.errors, null, 1).slice(0, 2000));
    bad++;
  }
}
if (bad > 0) process.exit(1);
console.log(`${lines.length} messages valid as ${names.join(" | ")}`);
