// Shares jco's runtime prelude between the plugins (workers/plugins/bundle.mjs runs this).
//
// `jco transpile --instantiation async` writes one module per component whose
// `instantiate(getCoreModule, imports, instantiateCore)` starts with jco's runtime: some 80
// declarations (string codecs, lift/lower helpers, the async task machinery, Waitable,
// RepTable, ComponentAsyncState, trap normalisation, …), about 120 KB of text (16 KB gzipped
// once minified), the same in every plugin but re-emitted by each (jco 1.35 has no option to
// emit it once). gzip's 32 KB window cannot see one copy from the next, so every installed
// plugin paid for it again.
//
// The prelude lives inside `instantiate`, so each instantiation (each hook call: runner.js)
// gets fresh state: its Maps, counters and classes. This keeps exactly that: the shared
// declarations go, once, into a factory `jcoRuntime()` in a module of their own, and each
// plugin's `instantiate` calls it where its prelude was and takes (by position) the helpers
// its own code uses. Nothing moves to module scope; no state is shared between plugins or
// calls.
//
// It is a rewrite of generated code, so it checks what it relies on and throws (failing the
// build) when jco's output has another shape, e.g. after a jco upgrade:
// - the module exports `function instantiate(getCoreModule, imports, instantiateCore)` whose
//   body opens with declarations (the prelude: `const`/`let`/`function`/`class`) followed by
//   the component's own code;
// - a declaration is shared only if every plugin that has it has it token for token (line
//   breaks included, for automatic semicolon insertion); a name declared differently by two
//   plugins stays in each plugin (with everything in the prelude that refers to it);
// - the shared declarations refer to nothing but each other and globals: never to
//   `instantiate`'s parameters or locals (nor its `this`, `arguments` or `new.target`) or
//   the module's names, and never to a name that another plugin's prelude declares but
//   theirs does not (it would be captured);
// - the component's code never refers to a binding the prelude may reassign (`let`, `var`,
//   or any name assigned to), since it gets a copy of each binding's value;
// - afterwards, the rewritten modules and the runtime refer to no undeclared name that is not
//   a global (in Node's `globalThis`) or was not already undeclared in jco's output.

import * as acorn from "acorn";

const PARAMS = ["getCoreModule", "imports", "instantiateCore"];
const FACTORY = "jcoRuntime";

class JcoShapeError extends Error {
  constructor(file, message) {
    super(`${file}: jco's output is not shaped as workers/plugins/jco-share.mjs expects: ${message}`);
  }
}

const parse = (source, file) => {
  try {
    return acorn.parse(source, { ecmaVersion: "latest", sourceType: "module" });
  } catch (e) {
    throw new JcoShapeError(file, `it does not parse (${e.message})`);
  }
};

/** A statement's tokens, with the line breaks between them: its identity across plugins. */
function tokens(source) {
  const out = [];
  let end = 0;
  for (const t of acorn.tokenizer(source, { ecmaVersion: "latest", sourceType: "module" })) {
    const brk = /[\n\r\u2028\u2029]/.test(source.slice(end, t.start)) ? "\n" : " ";
    out.push(brk + t.type.label + ":" + source.slice(t.start, t.end));
    end = t.end;
  }
  return out.join("");
}

// ---- Scopes: which names a piece of code refers to without declaring them ----------------

/** Binding names of a pattern (`a`, `{a, b: [c]}`, `...d`, `e = 1`). */
function patternNames(p, out = []) {
  switch (p.type) {
    case "Identifier":
      out.push(p.name);
      break;
    case "ObjectPattern":
      for (const prop of p.properties) patternNames(prop.type === "RestElement" ? prop.argument : prop.value, out);
      break;
    case "ArrayPattern":
      for (const e of p.elements) if (e) patternNames(e, out);
      break;
    case "RestElement":
      patternNames(p.argument, out);
      break;
    case "AssignmentPattern":
      patternNames(p.left, out);
      break;
    default:
      throw new Error(`unexpected binding pattern ${p.type}`);
  }
  return out;
}

/** Names a statement declares in its own block (`let`, `const`, `class`, `function`). */
function lexicalNames(stmt) {
  const s = stmt.type === "ExportNamedDeclaration" || stmt.type === "ExportDefaultDeclaration" ? stmt.declaration : stmt;
  if (!s) return [];
  if (s.type === "VariableDeclaration" && s.kind !== "var") return s.declarations.flatMap((d) => patternNames(d.id));
  if ((s.type === "FunctionDeclaration" || s.type === "ClassDeclaration") && s.id) return [s.id.name];
  return [];
}

/** `var` names declared anywhere in a function body (not in nested functions). */
function varNames(node, out = []) {
  if (!node || typeof node !== "object") return out;
  if (Array.isArray(node)) {
    for (const n of node) varNames(n, out);
    return out;
  }
  switch (node.type) {
    case "VariableDeclaration":
      if (node.kind === "var") for (const d of node.declarations) patternNames(d.id, out);
      return out;
    case "FunctionDeclaration":
    case "FunctionExpression":
    case "ArrowFunctionExpression":
    case "ClassDeclaration":
    case "ClassExpression":
      return out;
    case "BlockStatement":
    case "StaticBlock":
    case "Program":
      return varNames(node.body, out);
    case "IfStatement":
      return varNames([node.consequent, node.alternate], out);
    case "ForStatement":
      return varNames([node.init, node.body], out);
    case "ForInStatement":
    case "ForOfStatement":
      return varNames([node.left, node.body], out);
    case "WhileStatement":
    case "DoWhileStatement":
    case "LabeledStatement":
      return varNames(node.body, out);
    case "TryStatement":
      return varNames([node.block, node.handler?.body, node.finalizer], out);
    case "SwitchStatement":
      return varNames(node.cases.flatMap((c) => c.consequent), out);
    case "ExportNamedDeclaration":
      return varNames(node.declaration, out);
    default:
      return out;
  }
}

/**
 * Walks `nodes` (statements or expressions) in a scope where `bound` names are declared and
 * calls `ref(name, isWrite)` for every identifier that refers to a name declared outside them.
 */
function freeReferences(nodes, bound, ref) {
  const isBound = (scope, name) => {
    for (let s = scope; s; s = s.parent) if (s.names.has(name)) return true;
    return false;
  };
  const scopeOf = (parent, names) => ({ parent, names: new Set(names) });
  const reference = (scope, name, write) => {
    if (!isBound(scope, name)) ref(name, write);
  };
  const blockScope = (parent, stmts) => scopeOf(parent, stmts.flatMap(lexicalNames));

  // A pattern in a declaration or parameter list: only defaults and computed keys refer.
  function binding(p, scope) {
    switch (p.type) {
      case "Identifier":
        return;
      case "ObjectPattern":
        for (const prop of p.properties) {
          if (prop.type === "RestElement") binding(prop.argument, scope);
          else {
            if (prop.computed) expr(prop.key, scope);
            binding(prop.value, scope);
          }
        }
        return;
      case "ArrayPattern":
        for (const e of p.elements) if (e) binding(e, scope);
        return;
      case "RestElement":
        return binding(p.argument, scope);
      case "AssignmentPattern":
        binding(p.left, scope);
        return expr(p.right, scope);
      default:
        throw new Error(`unexpected binding pattern ${p.type}`);
    }
  }
  // A pattern assigned to (`[a, b] = …`, `for (x of …)`): its identifiers are written.
  function target(p, scope) {
    switch (p.type) {
      case "Identifier":
        return reference(scope, p.name, true);
      case "MemberExpression":
        return expr(p, scope);
      case "ObjectPattern":
        for (const prop of p.properties) {
          if (prop.type === "RestElement") target(prop.argument, scope);
          else {
            if (prop.computed) expr(prop.key, scope);
            target(prop.value, scope);
          }
        }
        return;
      case "ArrayPattern":
        for (const e of p.elements) if (e) target(e, scope);
        return;
      case "RestElement":
        return target(p.argument, scope);
      case "AssignmentPattern":
        target(p.left, scope);
        return expr(p.right, scope);
      default:
        return expr(p, scope);
    }
  }
  function fn(node, scope) {
    const names = node.params.flatMap((p) => patternNames(p));
    if (node.type !== "ArrowFunctionExpression") names.push("arguments");
    if (node.type === "FunctionExpression" && node.id) names.push(node.id.name);
    if (node.body.type === "BlockStatement") {
      names.push(...varNames(node.body.body), ...node.body.body.flatMap(lexicalNames));
    }
    const inner = scopeOf(scope, names);
    // `this`, `arguments`' function and `new.target` are an ordinary function's own.
    if (node.type !== "ArrowFunctionExpression") inner.ownsThis = true;
    for (const p of node.params) binding(p, inner);
    if (node.body.type === "BlockStatement") for (const s of node.body.body) expr(s, inner);
    else expr(node.body, inner);
  }
  function expr(node, scope) {
    if (!node) return;
    switch (node.type) {
      case "Identifier":
        return reference(scope, node.name, false);
      case "ThisExpression":
      case "Super":
      case "MetaProperty":
        // Outside any function of its own, these are `instantiate`'s: a name it declares.
        for (let s = scope; s; s = s.parent) if (s.ownsThis) return;
        return ref(node.type === "MetaProperty" ? `${node.meta.name}.${node.property.name}` : "this", false);
      case "PrivateIdentifier":
      case "Literal":
      case "BreakStatement":
      case "ContinueStatement":
      case "EmptyStatement":
      case "DebuggerStatement":
        return;
      case "MemberExpression":
        expr(node.object, scope);
        if (node.computed) expr(node.property, scope);
        return;
      case "Property":
      case "MethodDefinition":
      case "PropertyDefinition":
        if (node.computed) expr(node.key, scope);
        // A shorthand `{ a }` holds the identifier as its value, which refers.
        return expr(node.value, scope);
      case "LabeledStatement":
        return expr(node.body, scope);
      case "FunctionDeclaration":
      case "FunctionExpression":
      case "ArrowFunctionExpression":
        return fn(node, scope);
      case "ClassDeclaration":
      case "ClassExpression": {
        expr(node.superClass, scope);
        const inner = scopeOf(scope, node.id ? [node.id.name] : []);
        // A member's computed key is evaluated outside; its value (a method, a field's
        // initializer, a static block) has the class's `this`.
        const members = { ...inner, ownsThis: true };
        for (const m of node.body.body) {
          if (m.computed) expr(m.key, inner);
          if (m.type === "StaticBlock") expr(m, members);
          else expr(m.value, members);
        }
        return;
      }
      case "StaticBlock": {
        const inner = scopeOf(scope, [...varNames(node.body), ...node.body.flatMap(lexicalNames)]);
        for (const s of node.body) expr(s, inner);
        return;
      }
      case "BlockStatement": {
        const inner = blockScope(scope, node.body);
        for (const s of node.body) expr(s, inner);
        return;
      }
      case "SwitchStatement": {
        expr(node.discriminant, scope);
        const inner = blockScope(
          scope,
          node.cases.flatMap((c) => c.consequent),
        );
        for (const c of node.cases) {
          expr(c.test, inner);
          for (const s of c.consequent) expr(s, inner);
        }
        return;
      }
      case "ForStatement": {
        const inner = scopeOf(scope, node.init ? lexicalNames(node.init) : []);
        expr(node.init, inner);
        expr(node.test, inner);
        expr(node.update, inner);
        return expr(node.body, inner);
      }
      case "ForInStatement":
      case "ForOfStatement": {
        const inner = scopeOf(scope, lexicalNames(node.left));
        expr(node.right, scope);
        if (node.left.type === "VariableDeclaration") expr(node.left, inner);
        else target(node.left, inner);
        return expr(node.body, inner);
      }
      case "CatchClause": {
        const inner = scopeOf(scope, node.param ? patternNames(node.param) : []);
        if (node.param) binding(node.param, inner);
        return expr(node.body, inner);
      }
      case "VariableDeclaration":
        for (const d of node.declarations) {
          binding(d.id, scope);
          expr(d.init, scope);
        }
        return;
      case "AssignmentExpression":
        target(node.left, scope);
        return expr(node.right, scope);
      case "UpdateExpression":
        return target(node.argument, scope);
      case "ExportNamedDeclaration":
      case "ExportDefaultDeclaration":
        return expr(node.declaration, scope);
      case "ImportDeclaration":
      case "ExportAllDeclaration":
        return;
      default:
        // Every other node refers through its child nodes (expressions and statements).
        for (const [key, value] of Object.entries(node)) {
          if (key === "type" || key === "start" || key === "end" || key === "loc" || key === "range") continue;
          if (Array.isArray(value)) for (const v of value) v && typeof v.type === "string" && expr(v, scope);
          else if (value && typeof value.type === "string") expr(value, scope);
        }
    }
  }
  const top = scopeOf(null, bound);
  for (const n of nodes) expr(n, top);
}

/** The names `nodes` refer to without declaring, as a Map name → written to. */
export function free(nodes, bound = []) {
  const out = new Map();
  freeReferences(nodes, bound, (name, write) => out.set(name, out.get(name) || write));
  return out;
}

const isGlobal = (name) => name in globalThis;

// ---- The rewrite --------------------------------------------------------------------------

/** Reads one jco module: its prelude declarations and the rest of `instantiate`. */
function split(file, source) {
  const ast = parse(source, file);
  const exp = ast.body.find(
    (s) => s.type === "ExportNamedDeclaration" && s.declaration?.type === "FunctionDeclaration" && s.declaration.id.name === "instantiate",
  );
  if (!exp) throw new JcoShapeError(file, "no `export function instantiate`");
  const fn = exp.declaration;
  const params = fn.params.map((p) => (p.type === "AssignmentPattern" ? p.left : p));
  if (params.length !== PARAMS.length || params.some((p, i) => p.type !== "Identifier" || p.name !== PARAMS[i])) {
    throw new JcoShapeError(file, `instantiate's parameters are not (${PARAMS.join(", ")})`);
  }
  const body = fn.body.body;
  const isDecl = (s) =>
    (s.type === "VariableDeclaration" && s.kind !== "var") || s.type === "FunctionDeclaration" || s.type === "ClassDeclaration";
  let n = 0;
  while (n < body.length && isDecl(body[n])) n++;
  if (n === 0 || n === body.length) throw new JcoShapeError(file, "instantiate does not open with declarations followed by other code");
  const prelude = body.slice(0, n).map((s) => {
    const text = source.slice(s.start, s.end);
    return { node: s, text, key: tokens(text), names: lexicalNames(s) };
  });
  const rest = body.slice(n);
  // Names `instantiate`'s own code declares, and the module's: the prelude must not see them.
  const local = new Set([
    ...PARAMS,
    "arguments",
    "this",
    "new.target",
    ...varNames(rest),
    ...rest.flatMap(lexicalNames),
    ...varNames(ast.body),
    ...ast.body.flatMap(lexicalNames),
  ]);
  return { file, source, ast, fn, prelude, rest, local };
}

/** Orders the shared declarations so that each plugin's own order is kept. */
function mergeOrder(plugins, shared) {
  const after = new Map([...shared.keys()].map((k) => [k, new Set()]));
  const first = [];
  for (const p of plugins) {
    let prev = null;
    for (const d of p.prelude) {
      if (!shared.has(d.key)) continue;
      if (!first.includes(d.key)) first.push(d.key);
      if (prev !== null) after.get(prev).add(d.key);
      prev = d.key;
    }
  }
  const indegree = new Map(first.map((k) => [k, 0]));
  for (const succ of after.values()) for (const k of succ) indegree.set(k, indegree.get(k) + 1);
  const order = [];
  const ready = first.filter((k) => indegree.get(k) === 0);
  while (ready.length) {
    // The earliest-seen ready declaration first, for a stable, readable order.
    ready.sort((a, b) => first.indexOf(a) - first.indexOf(b));
    const k = ready.shift();
    order.push(k);
    for (const s of after.get(k)) {
      indegree.set(s, indegree.get(s) - 1);
      if (indegree.get(s) === 0) ready.push(s);
    }
  }
  if (order.length !== first.length) {
    throw new JcoShapeError("(all plugins)", "the plugins' preludes declare shared helpers in conflicting orders");
  }
  return order;
}

/**
 * Rewrites jco's modules `{file, source}` to share their prelude; returns
 * `{runtime, modules: [{file, source}], shared, kept}`: the runtime module's text (exporting
 * `jcoRuntime`) and each plugin's module, which imports it from `runtimeSpecifier`.
 */
export function shareJcoRuntime(inputs, runtimeSpecifier) {
  const plugins = inputs.map(({ file, source }) => split(file, source));

  // Which declarations are the same wherever they appear; a name declared two ways is not
  // shared, and neither is any declaration that refers to a name not shared.
  const byKey = new Map(); // key → {text, node, names, file}
  const keysOfName = new Map(); // name → Set of keys
  for (const p of plugins) {
    for (const d of p.prelude) {
      if (!byKey.has(d.key)) byKey.set(d.key, { ...d, file: p.file });
      for (const name of d.names) {
        if (!keysOfName.has(name)) keysOfName.set(name, new Set());
        keysOfName.get(name).add(d.key);
      }
    }
  }
  const shared = new Map([...byKey].filter(([, d]) => d.names.every((n) => keysOfName.get(n).size === 1)));
  const sharedNames = () => new Set([...shared.values()].flatMap((d) => d.names));
  for (let changed = true; changed; ) {
    changed = false;
    const names = sharedNames();
    for (const [key, d] of shared) {
      const refs = [...free([d.node], d.names).keys()];
      if (refs.some((r) => keysOfName.has(r) && !names.has(r))) {
        shared.delete(key);
        changed = true;
      }
    }
  }

  // The shared declarations see nothing of a plugin: only each other and globals.
  const names = sharedNames();
  for (const [, d] of shared) {
    for (const [name] of free([d.node], [...names])) {
      if (plugins.some((p) => p.local.has(name))) {
        throw new JcoShapeError(d.file, `the prelude's \`${d.names.join(", ")}\` refers to \`${name}\`, which instantiate or the module declares`);
      }
    }
  }
  // A shared declaration that refers to another must mean that one in every plugin that has
  // it: the name is declared in the plugin's own prelude, not a global or a name of its code.
  for (const p of plugins) {
    const own = new Set(p.prelude.flatMap((d) => d.names));
    for (const d of p.prelude.filter((d) => shared.has(d.key))) {
      for (const [name] of free([d.node], d.names)) {
        if (names.has(name) && !own.has(name)) {
          throw new JcoShapeError(p.file, `its prelude's \`${d.names.join(", ")}\` refers to \`${name}\`, which only another plugin's prelude declares`);
        }
      }
    }
  }
  // Bindings that may change after they are made (`let`, or assigned to anywhere in the
  // shared prelude): a plugin's own code would only get a copy of their value.
  const mutable = new Set();
  for (const [, d] of shared) {
    if (d.node.type === "VariableDeclaration" && d.node.kind === "let") d.names.forEach((n) => mutable.add(n));
  }
  // Walked without declaring them, the shared names show up as free: with whether written.
  for (const [name, write] of free([...shared.values()].map((d) => d.node))) if (write && names.has(name)) mutable.add(name);

  const order = mergeOrder(plugins, shared);
  // What each plugin's own code (and its unshared prelude) takes from the shared prelude.
  const wanted = plugins.map((p) => {
    const kept = p.prelude.filter((d) => !shared.has(d.key));
    const ownShared = new Set(p.prelude.filter((d) => shared.has(d.key)).flatMap((d) => d.names));
    const declared = [...PARAMS, "arguments", ...kept.flatMap((d) => d.names), ...varNames(p.rest), ...p.rest.flatMap(lexicalNames)];
    const wants = new Set();
    for (const [name, write] of free([...kept.map((d) => d.node), ...p.rest], declared)) {
      if (!ownShared.has(name)) continue;
      if (write || mutable.has(name)) {
        throw new JcoShapeError(p.file, `instantiate's code uses \`${name}\`, which the prelude may reassign (it would see a stale copy)`);
      }
      wants.add(name);
    }
    return { kept, wants };
  });
  // The factory returns an array, which each plugin destructures by position, leaving holes
  // for what it does not use: minified, that costs no names (property keys would stay).
  const exported = [...new Set(wanted.flatMap((w) => [...w.wants]))].sort();
  const modules = plugins.map((p, i) => {
    const { kept, wants } = wanted[i];
    const pattern = exported.map((name) => (wants.has(name) ? name : "")).join(", ");
    const first = p.prelude[0].node.start;
    const last = p.prelude[p.prelude.length - 1].node.end;
    const head = `const [${pattern}] = ${FACTORY}();\n` + kept.map((d) => d.text).join("\n");
    const source =
      p.source.slice(0, first) +
      head +
      p.source.slice(last) +
      `\nimport { ${FACTORY} } from ${JSON.stringify(runtimeSpecifier)};\n`;
    return { file: p.file, source, keptCount: kept.length };
  });
  const runtime =
    `// jco's runtime prelude, shared by the plugins (workers/plugins/jco-share.mjs): a factory,\n` +
    `// called once per instantiation, so every instance has its own state.\n` +
    `export function ${FACTORY}() {\n` +
    order.map((k) => shared.get(k).text).join("\n") +
    `\nreturn [${exported.join(", ")}];\n}\n`;

  // Afterwards: nothing refers to a name no longer declared (jco's own code may refer to an
  // undeclared name, e.g. `rep` in 1.35's RepTable#clear: that stays as it was).
  const undeclared = (ast) => free(ast.body, [...varNames(ast.body), ...ast.body.flatMap(lexicalNames), FACTORY]);
  const before = new Set(plugins.flatMap((p) => [...undeclared(p.ast).keys()]));
  const check = (file, source) => {
    for (const [name] of undeclared(parse(source, file))) {
      if (!isGlobal(name) && !before.has(name)) {
        throw new JcoShapeError(file, `after sharing, it refers to \`${name}\`, declared nowhere`);
      }
    }
  };
  check("jco runtime", runtime);
  for (const m of modules) check(m.file, m.source);
  return {
    runtime,
    modules: modules.map(({ file, source }) => ({ file, source })),
    shared: shared.size,
    kept: Object.fromEntries(modules.map((m) => [m.file, m.keptCount])),
  };
}
