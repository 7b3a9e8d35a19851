// Reconnect delays and token renewal times of wsapp.js.
import assert from "node:assert/strict";
import { test } from "node:test";
import { wsapp } from "./load.mjs";

const { backoff, tokenExpiry, refreshDelay, absoluteUrl } = wsapp;

test("backoff doubles from 250 ms up to 8 s, with at most a quarter of jitter", () => {
  const low = [0, 1, 2, 3, 4, 5, 6, 10, 1000].map((n) => backoff(n, { random: () => 0 }));
  assert.deepEqual(low, [250, 500, 1000, 2000, 4000, 8000, 8000, 8000, 8000]);
  const high = [0, 5].map((n) => backoff(n, { random: () => 0.999999 }));
  assert.ok(high[0] > 312 && high[0] < 312.5, String(high[0]));
  assert.ok(high[1] > 9999 && high[1] < 10000, String(high[1]));
});

test("backoff jitter spreads reconnects over the range", () => {
  const delays = new Set(Array.from({ length: 50 }, () => Math.round(backoff(3))));
  assert.ok(delays.size > 10, `only ${delays.size} distinct delays`);
  for (const delay of delays) assert.ok(delay >= 2000 && delay <= 2500, String(delay));
});

test("backoff takes its bounds from options", () => {
  assert.equal(backoff(2, { initial: 100, maximum: 300, random: () => 0 }), 300);
  assert.equal(backoff(0, { initial: 100, jitter: 0 }), 100);
});

function jwt(payload) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part(payload)}.signature`;
}

test("tokenExpiry reads a JWT's exp, base64url and unpadded", () => {
  assert.equal(tokenExpiry(jwt({ sub: "ada", exp: 1700000000 })), 1700000000);
  // a payload whose base64url form has - and _ and needs padding
  assert.equal(tokenExpiry(jwt({ name: "??>>~~", exp: 1700000001 })), 1700000001);
});

test("tokenExpiry is null for tokens without an exp or that are no JWT", () => {
  for (const token of ["opaque", "a.b.c", jwt({ sub: "x" }), jwt({ exp: "soon" }), "", null, undefined]) {
    assert.equal(tokenExpiry(token), null, String(token));
  }
});

test("refreshDelay renews a fifth of the lifetime early, between 1 s and 60 s early", () => {
  const now = 1_000_000_000_000;
  assert.equal(refreshDelay(now / 1000 + 10, now), 8000);
  assert.equal(refreshDelay(now / 1000 + 3, now), 2000);
  assert.equal(refreshDelay(now / 1000 + 3600, now), 3600000 - 60000);
  assert.equal(refreshDelay(now / 1000 - 5, now), 0);
});

test("absoluteUrl takes a path on the page's server, with wss under https", () => {
  assert.equal(absoluteUrl("/chat", { href: "http://example.com:8000/chat.html" }), "ws://example.com:8000/chat");
  assert.equal(absoluteUrl("/chat", { href: "https://example.com/" }), "wss://example.com/chat");
  assert.equal(absoluteUrl("ws://other:1/x", { href: "https://example.com/" }), "ws://other:1/x");
});
