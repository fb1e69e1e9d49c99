// Validates an OpenAPI document with a third-party validator (@seriousme/openapi-schema-validator,
// which checks it against the official OpenAPI 3.0/3.1 JSON schemas and resolves every $ref).
//   node tests/js/validate-openapi.mjs openapi.yaml
import { Validator } from "@seriousme/openapi-schema-validator";

const file = process.argv[2];
const validator = new Validator();
const result = await validator.validate(file);
if (!result.valid) {
  console.error(`${file} is not a valid OpenAPI document:`);
  console.error(JSON.stringify(result.errors, null, 2));
  process.exit(1);
}
const refs = await validator.validateRefs?.();
if (refs && !refs.valid) {
  console.error(`${file} has $refs that do not resolve:`);
  console.error(JSON.stringify(refs.errors, null, 2));
  process.exit(1);
}
console.log(`${file}: valid OpenAPI ${validator.version}`);
