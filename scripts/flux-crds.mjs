#!/usr/bin/env node
// Builds the Flux CustomResourceDefinitions the tests install into a real
// kube-apiserver (Flux's controllers cannot run here), from the npm package
// @kubernetes-models/flux-cd@4.0.0 (scripts/install-test-deps.sh installs it):
//
//   node scripts/flux-crds.mjs > deploy/test/flux/crds.yaml      regenerate
//   node scripts/flux-crds.mjs | diff - deploy/test/flux/crds.yaml   up to date?
//   deploy/test/flux/check-crds.sh        accepted by a real kube-apiserver?
//
// The package ships no JSON schema, only ajv "standalone" validators compiled
// from it: one function per schema node, whose error objects carry the node's
// keywords (type, required, enum, pattern, format, min/maxLength, maxItems) and
// whose calls `validateN(data.prop|data[i0]|data[key0]|data, ...)` name its
// properties, items, additionalProperties and $refs. schemaOf() reads the
// schema back from that code; flux-validate.mjs uses it too. The output
// depends only on the package contents, so it is deterministic; keys are
// sorted as controller-gen sorts them.
//
// Package location: $GLAGENT_FLUX_MODELS, else $GLAGENT_CACHE/npm/flux-cd
// (an npm --prefix directory holding node_modules/).
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';

// The version deploy/test/flux/crds.yaml is made from (pinned in install-test-deps.sh).
const PACKAGE_VERSION = '4.0.0';

export function modelsDir() {
  if (process.env.GLAGENT_FLUX_MODELS) return process.env.GLAGENT_FLUX_MODELS;
  const cache = process.env.GLAGENT_CACHE
    || join(process.env.XDG_CACHE_HOME || join(process.env.HOME, '.cache'), 'glagent');
  return join(cache, 'npm', 'flux-cd');
}

const MODULES = join(modelsDir(), 'node_modules');
const PKG = join(MODULES, '@kubernetes-models', 'flux-cd');
if (!existsSync(join(PKG, 'package.json'))) {
  console.error(`@kubernetes-models/flux-cd not found under ${modelsDir()}; run scripts/install-test-deps.sh`);
  process.exit(2);
}
export const packageVersion = JSON.parse(readFileSync(join(PKG, 'package.json'), 'utf8')).version;
export const YAML = createRequire(join(MODULES, 'noop.js'))('yaml');

// The model class file of a kind, e.g. source.toolkit.fluxcd.io/v1/GitRepository.js.
export function modelFile(apiVersion, kind) {
  const [group, version] = String(apiVersion).split('/');
  if (!/^[a-z.]+\.fluxcd\.io$/.test(group) || !/^v\w+$/.test(version || '') || !/^[A-Z]\w*$/.test(kind)) return null;
  const file = join(PKG, group, version, `${kind}.js`);
  return existsSync(file) ? file : null;
}

// The package's model class (with .validate()) for apiVersion+kind.
export async function modelClass(apiVersion, kind) {
  const file = modelFile(apiVersion, kind);
  return file && (await import(pathToFileURL(file).href))[kind];
}

// --- reading the schema back from the compiled validators ---
const STR = String.raw`"(?:[^"\\]|\\.)*"`;
const ERROR = new RegExp(String.raw`keyword:"(\w+)",params:\{\w+:(${STR}|[\w.]+)\}`, 'g');
const CALL = new RegExp(String.raw`\b(validate\d+)\(data(?:\.([\w$]+)|\[(${STR})\]|\[(i\d+)\]|\[(key\d+)\])?,`, 'g');
const parsed = new Map();

function parseFile(path) {
  if (parsed.has(path)) return parsed.get(path);
  const src = readFileSync(path, 'utf8');
  const f = { imports: {}, consts: {}, fns: {}, root: src.match(/export const validate=(validate\d+)/)[1] };
  for (const [, name, spec] of src.matchAll(/import\{validate as (validate\d+)\}from"([^"]+)"/g)) {
    // "./X.js" is a sibling; "@scope/pkg/_schemas/X" maps to node_modules/@scope/pkg/_schemas/X.js.
    f.imports[name] = spec.startsWith('.') ? join(dirname(path), spec) : join(MODULES, spec.replace(/(\.js)?$/, '.js'));
  }
  for (const m of src.matchAll(/let (schema\d+_enum)=/g)) {
    f.consts[m[1]] = JSON.parse(src.slice(m.index + m[0].length).match(new RegExp(String.raw`^\[(?:${STR}|[^\]"])*\]`))[0]);
  }
  // ajv never nests these functions, so each runs up to the next one.
  const starts = [...src.matchAll(/function (validate\d+)\(data,/g)];
  starts.forEach((m, i) => { f.fns[m[1]] = src.slice(m.index, starts[i + 1]?.index ?? src.length); });
  parsed.set(path, f);
  return f;
}

function node(path, fn, seen) {
  const f = parseFile(path);
  if (f.imports[fn]) return node(f.imports[fn], parseFile(f.imports[fn]).root, seen);
  const key = `${path}#${fn}`;
  if (seen.has(key)) throw new Error(`recursive schema at ${key}`);
  seen = new Set(seen).add(key);
  const body = f.fns[fn];
  const s = {};
  for (const [, keyword, raw] of body.matchAll(ERROR)) {
    const value = raw.startsWith('"') ? JSON.parse(raw) : /^\d+$/.test(raw) ? Number(raw) : f.consts[raw];
    if (keyword === 'required') { if (!(s.required ??= []).includes(value)) s.required.push(value); }
    else s[keyword] = value;
  }
  for (const [, callee, prop, quoted, item, key2] of body.matchAll(CALL)) {
    if (callee === fn) continue;
    const child = node(path, callee, seen);
    if (prop || quoted) (s.properties ??= {})[prop ?? JSON.parse(quoted)] = child;
    else if (item) s.items = child;
    else if (key2) s.additionalProperties = child;
    else { // a $ref or an embedded Go struct (allOf): merge it in, own keywords first
      const { properties, required, ...rest } = child;
      Object.assign(s, { ...rest, ...s });
      if (properties) s.properties = { ...s.properties, ...properties };
      if (required) s.required = [...new Set([...(s.required ?? []), ...required])];
    }
  }
  return s;
}

// The JSON schema of a kind as the package validates it, $refs inlined.
export function schemaOf(apiVersion, kind) {
  const file = modelFile(apiVersion, kind);
  const schema = file && readFileSync(file, 'utf8').match(/import\{validate\}from"([^"]+)"/);
  return schema && node(join(dirname(file), schema[1]), parseFile(join(dirname(file), schema[1])).root, new Set());
}

// --- CRDs ---
// Kubernetes structural schema: every node typed (untyped = any JSON, e.g.
// HelmRelease values, becomes x-kubernetes-preserve-unknown-fields), no $ref,
// no additionalProperties next to properties, root metadata only `type: object`.
function structural(s) {
  const out = {};
  for (const k of ['type', 'format', 'enum', 'pattern', 'minLength', 'maxLength', 'maxItems', 'required']) {
    if (s[k] !== undefined) out[k] = s[k];
  }
  if (s.properties) out.properties = Object.fromEntries(Object.entries(s.properties).map(([k, v]) => [k, structural(v)]));
  else if (s.additionalProperties) out.additionalProperties = structural(s.additionalProperties);
  if (s.items) out.items = structural(s.items);
  if (!out.type || (out.type === 'object' && !out.properties && !out.additionalProperties)) {
    out['x-kubernetes-preserve-unknown-fields'] = true;
  }
  return out;
}

const col = (name, jsonPath, type = 'string') => ({ name, type, jsonPath });
const URL = [col('URL', '.spec.url')];
const CHART = [col('Chart', '.spec.chart'), col('Version', '.spec.version'),
  col('Source Kind', '.spec.sourceRef.kind'), col('Source Name', '.spec.sourceRef.name')];
// kind, apiVersion, plural, short name, printer columns before Age/Ready/Status (as in Flux's CRDs)
const KINDS = [
  ['GitRepository', 'source.toolkit.fluxcd.io/v1', 'gitrepositories', 'gitrepo', URL],
  ['HelmRepository', 'source.toolkit.fluxcd.io/v1', 'helmrepositories', 'helmrepo', URL],
  ['HelmChart', 'source.toolkit.fluxcd.io/v1', 'helmcharts', 'hc', CHART],
  ['Kustomization', 'kustomize.toolkit.fluxcd.io/v1', 'kustomizations', 'ks', []],
  ['HelmRelease', 'helm.toolkit.fluxcd.io/v2', 'helmreleases', 'hr', []],
];

function crd([kind, apiVersion, plural, short, columns]) {
  const [group, version] = apiVersion.split('/');
  const schema = schemaOf(apiVersion, kind);
  if (!schema?.properties?.spec) throw new Error(`no schema for ${apiVersion} ${kind}`);
  const { spec, status } = structural(schema).properties;
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${plural}.${group}` },
    spec: {
      group,
      names: { kind, listKind: `${kind}List`, plural, singular: kind.toLowerCase(), shortNames: [short], categories: ['all', 'fluxcd'] },
      scope: 'Namespaced',
      versions: [{
        name: version, served: true, storage: true,
        subresources: { status: {} },
        additionalPrinterColumns: [...columns, col('Age', '.metadata.creationTimestamp', 'date'),
          col('Ready', '.status.conditions[?(@.type=="Ready")].status'),
          col('Status', '.status.conditions[?(@.type=="Ready")].message')],
        schema: { openAPIV3Schema: { type: 'object', properties: {
          apiVersion: { type: 'string' }, kind: { type: 'string' }, metadata: { type: 'object' }, spec, status,
        } } },
      }],
    },
  };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  if (packageVersion !== PACKAGE_VERSION) {
    console.error(`found @kubernetes-models/flux-cd@${packageVersion}, want ${PACKAGE_VERSION}`);
    process.exit(2);
  }
  const header = `# Generated by scripts/flux-crds.mjs from @kubernetes-models/flux-cd@${packageVersion}; do not edit.\n`
    + '# Regenerate: node scripts/flux-crds.mjs > deploy/test/flux/crds.yaml\n'
    + '# Verify against a real kube-apiserver: deploy/test/flux/check-crds.sh\n';
  process.stdout.write(header + KINDS.map((k) => '---\n' + YAML.stringify(crd(k), { lineWidth: 0, sortMapEntries: true })).join(''));
}
