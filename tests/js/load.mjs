// Imports wsapp/web/wsapp.js as the ES module it is (the package has no package.json).
import { readFileSync } from "node:fs";

const source = readFileSync(new URL("../../wsapp/web/wsapp.js", import.meta.url), "utf8");
export const wsapp = await import("data:text/javascript;base64," + Buffer.from(source).toString("base64"));
