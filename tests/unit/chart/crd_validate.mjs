// Validates prometheus-operator objects with the validators generated from the operator's CRD schemas.
// Usage: node crd_validate.mjs <dir holding node_modules> < objects.json
// Input: a JSON list of objects. Output: a JSON list of {kind, name, error} (error null when valid).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const root = join(process.argv[2], "node_modules", "@kubernetes-models", "prometheus-operator", "monitoring.coreos.com", "v1");
const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const object of objects) {
  const module = await import(pathToFileURL(join(root, `${object.kind}.js`)).href);
  let error = null;
  try {
    new module[object.kind](object).validate();
  } catch (err) {
    error = String(err.message);
  }
  results.push({ kind: object.kind, name: object.metadata?.name ?? null, error });
}
process.stdout.write(JSON.stringify(results));
