// Trunk's post-build hook: writes a brotli (.br, quality 11) and a gzip (.gz, level 9) copy
// beside each file of the built UI, so the hub serves them as they are instead of
// compressing the wasm on every request (and brotli, which on-the-fly compression would
// make too slow to offer). Node's zlib is the reference brotli and gzip; Node is already
// here for wasm-opt. A copy is kept only when it saves at least a tenth.
import { readdirSync, readFileSync, writeFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { brotliCompressSync, gzipSync, constants } from "node:zlib";

const dir = process.env.TRUNK_STAGING_DIR;
if (!dir) {
  console.error("precompress: TRUNK_STAGING_DIR is not set (run by trunk build)");
  process.exit(1);
}
const worth = /\.(wasm|js|css|html|svg|webmanifest|json)$/;
for (const name of readdirSync(dir)) {
  const path = join(dir, name);
  if (!worth.test(name) || !statSync(path).isFile()) continue;
  const raw = readFileSync(path);
  const copies = {
    br: brotliCompressSync(raw, {
      params: {
        [constants.BROTLI_PARAM_QUALITY]: constants.BROTLI_MAX_QUALITY,
        [constants.BROTLI_PARAM_SIZE_HINT]: raw.length,
      },
    }),
    gz: gzipSync(raw, { level: 9 }),
  };
  for (const [ext, bytes] of Object.entries(copies)) {
    if (bytes.length * 10 <= raw.length * 9) writeFileSync(`${path}.${ext}`, bytes);
  }
  console.log(`precompress: ${name} ${raw.length} B, brotli ${copies.br.length} B, gzip ${copies.gz.length} B`);
}
