// Bundles the viewer into dist/: one script, the page and its style.
// No CDN at run time: everything the page needs is in dist/.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";

mkdirSync("dist", { recursive: true });
await build({
  entryPoints: ["src/app.js"],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  outfile: "dist/app.js",
  legalComments: "none",
});
for (const file of ["index.html", "style.css"]) {
  copyFileSync(`src/${file}`, `dist/${file}`);
}
