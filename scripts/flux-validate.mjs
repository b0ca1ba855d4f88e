#!/usr/bin/env node
// Validates Flux objects (e.g. the HelmRepository/HelmRelease a bootstrap CLI
// commits) against the published schemas of @kubernetes-models/flux-cd:
//
//   node scripts/flux-validate.mjs <file.yaml>...
//
// Every YAML document must be a kind that current Flux serves; it is checked
// with the package's own validator (HelmRelease.validate() etc.) and, as a
// strict kubectl apply would, for fields the schema does not know. Prints
// `<file>: <kind> <name> valid` per document, else the errors with their JSON
// paths, and exits 1. Finds the package like scripts/flux-crds.mjs does
// ($GLAGENT_FLUX_MODELS, else $GLAGENT_CACHE/npm/flux-cd).
import { readFileSync } from 'node:fs';
import { YAML, modelClass, schemaOf } from './flux-crds.mjs';

// The API versions current Flux serves (source v1beta2, helm v2beta1/v2beta2
// and the other betas are gone); any kind of the package in them is accepted.
const SERVED = new Set(['source.toolkit.fluxcd.io/v1', 'helm.toolkit.fluxcd.io/v2',
  'kustomize.toolkit.fluxcd.io/v1', 'notification.toolkit.fluxcd.io/v1']);

const pointer = (path, key) => `${path}/${String(key).replace(/~/g, '~0').replace(/\//g, '~1')}`;

// Fields present in the object but absent from a schema node that lists its properties.
function unknownFields(value, schema, path = '', out = []) {
  if (!schema || value === null || typeof value !== 'object') return out;
  if (Array.isArray(value)) {
    value.forEach((v, i) => unknownFields(v, schema.items, pointer(path, i), out));
    return out;
  }
  for (const [key, v] of Object.entries(value)) {
    const sub = schema.properties?.[key] ?? schema.additionalProperties;
    if (!sub && schema.properties) out.push({ instancePath: pointer(path, key), message: 'unknown field' });
    else unknownFields(v, sub, pointer(path, key), out);
  }
  return out;
}

async function check(doc) {
  const { apiVersion, kind } = doc ?? {};
  const Model = SERVED.has(apiVersion) && !/List$/.test(kind ?? '') && await modelClass(apiVersion, kind);
  if (!Model) return [{ message: `not a served Flux kind/version: ${apiVersion} ${kind}` }];
  let errors = [];
  try {
    new Model(doc).validate();
  } catch (e) {
    if (!e.errors) throw e;
    errors = e.errors.map((err) => ({ instancePath: err.instancePath || '/', message: err.message
      + (err.params?.allowedValues ? `: ${err.params.allowedValues.join(', ')}` : '') }));
  }
  return [...errors, ...unknownFields(doc, schemaOf(apiVersion, kind))];
}

const files = process.argv.slice(2);
if (!files.length) {
  console.error('usage: flux-validate.mjs <file.yaml>...');
  process.exit(2);
}
let failed = false;
for (const file of files) {
  for (const doc of YAML.parseAllDocuments(readFileSync(file, 'utf8'))) {
    if (doc.errors.length) {
      console.log(`${file}: YAML error: ${doc.errors[0].message.split('\n')[0]}`);
      failed = true;
      continue;
    }
    const obj = doc.toJS();
    if (obj === null) continue; // empty document
    const what = `${obj?.kind} ${obj?.metadata?.name ?? '<unnamed>'}`;
    const errors = await check(obj);
    if (!errors.length) {
      console.log(`${file}: ${what} valid`);
      continue;
    }
    failed = true;
    console.log(`${file}: ${what} invalid`);
    for (const e of errors) console.log(`  ${e.instancePath ? `${e.instancePath}: ` : ''}${e.message}`);
  }
}
process.exit(failed ? 1 : 0);
