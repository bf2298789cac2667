#!/bin/sh
# worker-build bundles the Worker's JavaScript with esbuild (ESBUILD_BIN). Kefu's plugins
# (workers/build/plugins/index.mjs and the plugins' core wasm modules beside it, made by
# workers/plugins/bundle.mjs) must stay a module of their own: the Worker imports the core
# modules as compiled wasm modules, which esbuild cannot bundle. So the plugins' import,
# `./plugins/index.mjs` (workers/src/plugins.rs), is left external, and resolves next to
# workers/build/index.js at run time.
exec "$(dirname "$0")/../node_modules/.bin/esbuild" "$@" '--external:./plugins/*'
