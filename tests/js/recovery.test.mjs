// Recovery bookkeeping of wsapp.js: after a resubscribe, missed publications once, in order.
import assert from "node:assert/strict";
import { test } from "node:test";
import { wsapp } from "./load.mjs";

const { Recovery } = wsapp;
const pub = (offset) => ({ offset, data: `p${offset}` });

test("the first subscribe asks for no since and starts at the channel's position", () => {
  const recovery = new Recovery();
  assert.equal(recovery.since(), undefined);
  const result = recovery.subscribed({ offset: 7, epoch: "e1", recovered: false, publications: [] });
  assert.deepEqual(result, { publications: [], unrecovered: false });
  assert.deepEqual(recovery.since(), { offset: 7, epoch: "e1" });
});

test("live publications advance the position; repeats and older ones are dropped", () => {
  const recovery = new Recovery();
  recovery.subscribed({ offset: 2, epoch: "e", recovered: false, publications: [] });
  const delivered = [3, 3, 2, 4, 1, 5].filter((offset) => recovery.publication({ offset }));
  assert.deepEqual(delivered, [3, 4, 5]);
  assert.deepEqual(recovery.since(), { offset: 5, epoch: "e" });
});

test("a recovered resubscribe delivers only what is newer than what was delivered, in order", () => {
  const recovery = new Recovery();
  recovery.subscribed({ offset: 2, epoch: "e", recovered: false, publications: [] });
  recovery.publication({ offset: 3 });
  const result = recovery.subscribed({
    offset: 6, epoch: "e", recovered: true, publications: [pub(3), pub(4), pub(5), pub(6)],
  });
  assert.deepEqual(result.publications.map((p) => p.offset), [4, 5, 6]);
  assert.equal(result.unrecovered, false);
  assert.deepEqual(recovery.since(), { offset: 6, epoch: "e" });
  assert.equal(recovery.publication({ offset: 6 }), false, "a recovered one again live");
  assert.equal(recovery.publication({ offset: 7 }), true);
});

test("an unrecovered resubscribe is reported when publications were missed", () => {
  const recovery = new Recovery();
  recovery.subscribed({ offset: 2, epoch: "e", recovered: false, publications: [] });
  const result = recovery.subscribed({ offset: 9, epoch: "e", recovered: false, publications: [] });
  assert.deepEqual(result, { publications: [], unrecovered: true });
  assert.deepEqual(recovery.since(), { offset: 9, epoch: "e" });
});

test("nothing missed is no loss, even when the server did not recover", () => {
  const recovery = new Recovery();
  recovery.subscribed({ offset: 4, epoch: "e", recovered: false, publications: [] });
  const result = recovery.subscribed({ offset: 4, epoch: "e", recovered: false, publications: [] });
  assert.equal(result.unrecovered, false);
});

test("a new epoch is a loss, and numbering restarts from its position", () => {
  const recovery = new Recovery();
  recovery.subscribed({ offset: 40, epoch: "old", recovered: false, publications: [] });
  const result = recovery.subscribed({ offset: 1, epoch: "new", recovered: false, publications: [] });
  assert.equal(result.unrecovered, true);
  assert.deepEqual(recovery.since(), { offset: 1, epoch: "new" });
  assert.equal(recovery.publication({ offset: 2 }), true);
});

test("an unrecovered event moves the position past what was lost", () => {
  const recovery = new Recovery();
  recovery.subscribed({ offset: 1, epoch: "e", recovered: false, publications: [] });
  recovery.unrecovered({ offset: 5, epoch: "e" });
  assert.equal(recovery.publication({ offset: 5 }), false);
  assert.equal(recovery.publication({ offset: 6 }), true);
});
