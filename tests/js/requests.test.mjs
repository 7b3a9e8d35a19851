// Request ids and replies in wsapp.js: each reply settles the request it echoes, once.
import assert from "node:assert/strict";
import { test } from "node:test";
import { wsapp } from "./load.mjs";

const { Requests, WsappError } = wsapp;

function manualTimers() {
  const timers = new Map();
  let next = 1;
  return {
    timers,
    setTimer: (fn, ms) => (timers.set(next, { fn, ms }), next++),
    clearTimer: (id) => timers.delete(id),
    fire: () => [...timers.entries()].forEach(([id, { fn }]) => (timers.delete(id), fn())),
  };
}

test("each reply settles the request whose id it echoes, not another", async () => {
  const clock = manualTimers();
  const requests = new Requests(clock);
  const first = requests.add(1000);
  const second = requests.add(1000);
  assert.notEqual(first.id, second.id);
  assert.equal(requests.settle({ type: "state", value: 2, id: second.id }), true);
  assert.deepEqual(await second.promise, { type: "state", value: 2, id: second.id });
  assert.equal(requests.settle({ type: "state", value: 2, id: second.id }), false, "settled twice");
  assert.equal(requests.settle({ type: "state", id: 999 }), false);
  assert.equal(requests.settle({ type: "state" }), false);
  requests.settle({ type: "sent", id: first.id });
  assert.equal((await first.promise).type, "sent");
  assert.equal(requests.pending.size, 0);
  assert.equal(clock.timers.size, 0, "timers left behind");
});

test("an error reply rejects with a WsappError carrying the code and detail", async () => {
  const requests = new Requests(manualTimers());
  const { id, promise } = requests.add(1000);
  requests.settle({ type: "error", error: "invalid-argument", detail: "'room' must be a string", id });
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof WsappError && error instanceof Error);
    assert.equal(error.code, "invalid-argument");
    assert.equal(error.detail, "'room' must be a string");
    return true;
  });
});

test("a request never answered rejects at its timeout with code timeout", async () => {
  const clock = manualTimers();
  const requests = new Requests(clock);
  const { id, promise } = requests.add(1500);
  assert.equal([...clock.timers.values()][0].ms, 1500);
  clock.fire();
  await assert.rejects(promise, { code: "timeout" });
  assert.equal(requests.settle({ type: "late", id }), false, "a late reply settles nothing");
  assert.equal(requests.pending.size, 0);
});

test("onReply runs synchronously before the promise settles", async () => {
  const requests = new Requests(manualTimers());
  const order = [];
  const { id, promise } = requests.add(1000, () => order.push("onReply"));
  promise.then(() => order.push("then"));
  requests.settle({ type: "subscribed", id });
  order.push("after settle");
  await promise;
  assert.deepEqual(order, ["onReply", "after settle", "then"]);
});

test("failAll with sentOnly rejects what went out and keeps what is queued", async () => {
  const clock = manualTimers();
  const requests = new Requests(clock);
  const sent = requests.add(1000);
  const queued = requests.add(1000);
  requests.sent(sent.id);
  requests.failAll(new WsappError("disconnected"), true);
  await assert.rejects(sent.promise, { code: "disconnected" });
  assert.deepEqual([...requests.pending.keys()], [queued.id]);
  requests.failAll(new WsappError("closed"));
  await assert.rejects(queued.promise, { code: "closed" });
  assert.equal(clock.timers.size, 0);
});
