// Bundles the compiled CLI into one file, dist/stordaemon.mjs. Loading libp2p's few hundred ES
// modules one by one takes a CLI about 0.7 s before it does anything; the bundle loads in a
// fraction of that, and every command a person or script runs starts that much sooner.
// classic-level stays outside: it loads a native addon from its own folder.
import { build } from 'esbuild'

await build({
  entryPoints: ['dist/bin/stordaemon.js'],
  outfile: 'dist/stordaemon.mjs',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['classic-level'],
  // CommonJS dependencies call require(); an ES module bundle has to provide it
  banner: { js: "import { createRequire as __storRequire } from 'node:module'; const require = __storRequire(import.meta.url);" },
  logLevel: 'warning'
})
