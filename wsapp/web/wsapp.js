// wsapp.js: the browser client of a wsapp server. An ES module with no dependencies:
//   import { connect } from "/wsapp.js";
//   const client = connect("/channels", { token, getToken });
//   const sub = await client.subscribe("news:today", (pub) => show(pub.data));
// One connection per client, reopened with exponential backoff and jitter; requests carry
// ids and settle with the reply echoing them; subscriptions come back after a reconnect
// with `since` and deliver what they missed, in order, exactly once. Types: wsapp.d.ts.

/** The close code of a server whose client's token expired. */
export const TOKEN_EXPIRED = 4001;

/** Milliseconds to wait before reconnect attempt `attempt` (0, 1, ...). */
export function backoff(attempt, { initial = 250, maximum = 8000, jitter = 0.25, random = Math.random } = {}) {
  const base = Math.min(initial * 2 ** Math.min(attempt, 30), maximum);
  return base * (1 + jitter * random());
}

/** The `exp` of a JWT in seconds since the epoch, or null if it has none or is no JWT. */
export function tokenExpiry(token) {
  if (typeof token !== "string") return null;
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const text = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
    const exp = JSON.parse(text).exp;
    return typeof exp === "number" && Number.isFinite(exp) ? exp : null;
  } catch {
    return null;
  }
}

/** Milliseconds from `now` (ms) until a token expiring at `exp` (s) should be renewed. */
export function refreshDelay(exp, now = Date.now()) {
  const left = exp * 1000 - now;
  const margin = Math.min(60000, Math.max(1000, left * 0.2));
  return Math.max(0, left - margin);
}

/** An Error carrying a wsapp error code (`invalid-argument`, `timeout`, `disconnected`...). */
export class WsappError extends Error {
  constructor(code, detail = code, reply = undefined) {
    super(`${code}: ${detail}`);
    this.name = "WsappError";
    this.code = code;
    this.detail = detail;
    this.reply = reply;
  }
}

/** Requests waiting for their replies, by id. */
export class Requests {
  constructor({ setTimer = (fn, ms) => setTimeout(fn, ms), clearTimer = (id) => clearTimeout(id) } = {}) {
    this.next = 1;
    this.pending = new Map();
    this.setTimer = setTimer;
    this.clearTimer = clearTimer;
  }

  /** Register a request; returns its id and the promise of its reply. */
  add(timeout, onReply = null) {
    const id = this.next++;
    const promise = new Promise((resolve, reject) => {
      const timer = this.setTimer(() => {
        this.pending.delete(id);
        reject(new WsappError("timeout", `no reply within ${timeout} ms`));
      }, timeout);
      this.pending.set(id, { resolve, reject, timer, onReply, sent: false });
    });
    return { id, promise };
  }

  /** Settle the request `message` answers; returns whether it answered one. */
  settle(message) {
    const entry = message && this.pending.get(message.id);
    if (!entry) return false;
    this.pending.delete(message.id);
    this.clearTimer(entry.timer);
    if (message.type === "error") {
      entry.reject(new WsappError(String(message.error), message.detail, message));
    } else {
      if (entry.onReply) entry.onReply(message);
      entry.resolve(message);
    }
    return true;
  }

  /** Note that request `id` went out on the current connection. */
  sent(id) {
    const entry = this.pending.get(id);
    if (entry) entry.sent = true;
  }

  /** Reject the request `id`, if it is still waiting. */
  fail(id, error) {
    const entry = this.pending.get(id);
    if (!entry) return;
    this.pending.delete(id);
    this.clearTimer(entry.timer);
    entry.reject(error);
  }

  /** Reject every waiting request with `error` (only those sent, with `sentOnly`). */
  failAll(error, sentOnly = false) {
    for (const [id, entry] of [...this.pending]) if (!sentOnly || entry.sent) this.fail(id, error);
  }
}

/**
 * Where one subscription stands: what to ask for after a reconnect, and which
 * publications are new (each offset is delivered once, in order).
 */
export class Recovery {
  constructor() {
    this.offset = null;
    this.epoch = null;
  }

  /** The `since` of the next subscribe request, or undefined before the first reply. */
  since() {
    return this.offset === null ? undefined : { offset: this.offset, epoch: this.epoch };
  }

  /**
   * Take a `subscribed` reply; returns the publications to deliver and whether
   * publications were missed beyond recovery.
   */
  subscribed(reply) {
    const asked = this.offset !== null;
    const sameEpoch = asked && reply.epoch === this.epoch;
    const publications = [];
    let unrecovered = false;
    if (asked && reply.recovered && sameEpoch) {
      for (const pub of reply.publications || []) {
        if (pub.offset > this.offset) {
          publications.push(pub);
          this.offset = pub.offset;
        }
      }
    } else if (asked && (reply.offset > this.offset || !sameEpoch)) {
      unrecovered = true;
    }
    if (!asked || unrecovered || reply.offset > this.offset) this.offset = reply.offset;
    this.epoch = reply.epoch;
    return { publications, unrecovered };
  }

  /** Take a live publication; returns whether it is new (to deliver). */
  publication(event) {
    if (this.offset !== null && event.offset <= this.offset) return false;
    this.offset = event.offset;
    return true;
  }

  /** Take an `unrecovered` event: delivery goes on after its position. */
  unrecovered(event) {
    if (this.offset === null || event.offset > this.offset || event.epoch !== this.epoch) {
      this.offset = event.offset;
      this.epoch = event.epoch;
    }
  }
}

class Emitter {
  constructor() {
    this.listeners = new Map();
  }

  /** Call `fn` on every `type` event; returns a function that stops it. */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    const set = this.listeners.get(type);
    if (set && set.delete(fn) && set.size === 0) this.listeners.delete(type);
  }

  emit(type, ...args) {
    for (const fn of [...(this.listeners.get(type) || [])]) {
      try {
        fn(...args);
      } catch (error) {
        console.error(`wsapp: a "${type}" listener failed`, error);
      }
    }
  }
}

/** One channel subscription; see Client.subscribe. */
export class Subscription extends Emitter {
  constructor(client, channel, onPublication) {
    super();
    this.client = client;
    this.channel = channel;
    this.onPublication = onPublication;
    this.recovery = new Recovery();
    this.active = true;
    this.subscribed = false;
    this.ready = null;
  }

  deliver(pub) {
    try {
      this.onPublication({ channel: this.channel, offset: pub.offset, data: pub.data });
    } catch (error) {
      console.error("wsapp: onPublication failed", error);
    }
  }

  /** Stop the subscription; resolves once the server confirmed (or the client is offline). */
  async unsubscribe() {
    if (!this.active) return;
    this.active = false;
    this.listeners.clear();
    await this.client._unsubscribe(this);
  }
}

/** A connection to one wsapp app that keeps itself open; see connect(). */
export class Client extends Emitter {
  constructor(url, options = {}) {
    super();
    this.url = absoluteUrl(url);
    this.options = { timeout: 10000, ...options };
    this.token = options.token ?? null;
    this.getToken = options.getToken ?? null;
    this.state = "closed";
    this.socket = null;
    this.attempt = 0;
    this.closing = false;
    this.requests = new Requests();
    this.subscriptions = new Map();
    this.queue = [];
    this.timers = { retry: null, refresh: null };
    this.needToken = !this.token && !!this.getToken;
    this._open();
  }

  _setState(state, info = {}) {
    this.state = state;
    this.emit("state", state, info);
  }

  async _open() {
    this.timers.retry = null;
    if (this.closing) return;
    this._setState("connecting", { attempt: this.attempt });
    if (this.needToken || (this.token && this.getToken && expired(this.token))) {
      try {
        this.token = await this.getToken();
        this.needToken = false;
      } catch (error) {
        this.emit("error", new WsappError("token-unavailable", String(error)));
        return this._retry({ code: null, reason: "getToken failed" });
      }
      if (this.closing) return;
    }
    let socket;
    try {
      socket = new WebSocket(this.url);
    } catch (error) {
      this.emit("error", error);
      return this._retry({ code: null, reason: String(error) });
    }
    this.socket = socket;
    socket.onopen = () => this._opened(socket);
    socket.onmessage = (message) => this._received(socket, message.data);
    socket.onclose = (event) => this._closed(socket, event.code, event.reason);
    socket.onerror = () => {};
  }

  async _opened(socket) {
    if (this.token) {
      try {
        await this._call({ action: "authenticate", token: this.token }, {}, true);
      } catch (error) {
        this.emit("error", error);
        if (this.socket === socket) socket.close(1000, "authentication failed");
        return;
      }
      if (this.socket !== socket) return;
      this._scheduleRefresh();
    }
    this.attempt = 0;
    this._setState("open");
    const queued = this.queue.splice(0);
    for (const send of queued) send();
    for (const sub of this.subscriptions.values()) this._subscribeOnServer(sub);
  }

  _received(socket, data) {
    if (this.socket !== socket) return;
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      this.emit("error", new WsappError("invalid-json", "the server sent a message that is not JSON"));
      return;
    }
    if (message === null || typeof message !== "object") {
      this.emit("error", new WsappError("invalid-json", "the server sent JSON that is not an object"));
      return;
    }
    if ("id" in message && this.requests.settle(message)) return;
    const sub = typeof message.channel === "string" ? this.subscriptions.get(message.channel) : undefined;
    if (sub && sub.subscribed) {
      if (message.type === "publication") {
        if (sub.recovery.publication(message)) sub.deliver(message);
        return;
      }
      if (message.type === "unrecovered") {
        sub.recovery.unrecovered(message);
        sub.emit("unrecovered", message);
        return;
      }
      if (message.type === "join" || message.type === "leave") sub.emit(message.type, message);
    }
    if (message.type === "error") this.emit("error", new WsappError(String(message.error), message.detail, message));
    this.emit("message", message);
  }

  _closed(socket, code, reason) {
    if (this.socket !== socket) return;
    this.socket = null;
    clearTimeout(this.timers.refresh);
    this.requests.failAll(new WsappError("disconnected", `connection closed (${code})`), true);
    for (const sub of this.subscriptions.values()) sub.subscribed = false;
    if (code === TOKEN_EXPIRED && this.getToken) this.needToken = true;
    this._retry({ code, reason });
  }

  _retry(info) {
    if (this.closing) return;
    const delay = info.code === TOKEN_EXPIRED && this.attempt === 0 ? 0 : backoff(this.attempt, this.options.backoff);
    this.attempt += 1;
    this._setState("closed", { ...info, delay, retryAt: Date.now() + delay });
    this.timers.retry = setTimeout(() => this._open(), delay);
  }

  _scheduleRefresh() {
    clearTimeout(this.timers.refresh);
    const exp = tokenExpiry(this.token);
    if (exp === null || !this.getToken) return;
    const socket = this.socket;
    const delay = refreshDelay(exp);
    if (delay > 2 ** 30) {
      // beyond what setTimeout can wait: look again later
      this.timers.refresh = setTimeout(() => this._scheduleRefresh(), 2 ** 30);
      return;
    }
    this.timers.refresh = setTimeout(async () => {
      try {
        const token = await this.getToken();
        if (this.socket !== socket) return;
        await this._call({ action: "refresh", token }, {}, true);
        this.token = token;
        this._scheduleRefresh();
      } catch (error) {
        this.emit("error", error);
        this.needToken = true;
      }
    }, delay);
  }

  /** Send `body` with an id now (when `now`), or once open; resolves with the reply. */
  _call(body, { timeout = this.options.timeout } = {}, now = false, onReply = null) {
    const { id, promise } = this.requests.add(timeout, onReply);
    const send = () => {
      if (this.socket && this.socket.readyState === WebSocket.OPEN) {
        this.socket.send(JSON.stringify({ ...body, id }));
        this.requests.sent(id);
      } else {
        this.requests.fail(id, new WsappError("disconnected", "the connection is closed"));
      }
    };
    if (now || this.state === "open") send();
    else if (this.closing) this.requests.fail(id, new WsappError("closed", "the client is closed"));
    else {
      this.queue.push(send);
      promise.catch(() => {}).finally(() => {
        const at = this.queue.indexOf(send);
        if (at >= 0) this.queue.splice(at, 1);
      });
    }
    return promise;
  }

  /** Send `obj` with an id; resolves with the reply echoing it, rejects with a WsappError. */
  request(obj, options = {}) {
    return this._call(obj, options);
  }

  /** Send `obj` without waiting for any reply (dropped while not open); returns whether sent. */
  send(obj) {
    if (this.state !== "open") return false;
    this.socket.send(JSON.stringify(obj));
    return true;
  }

  /** Subscribe to `channel`; resolves with the Subscription once the server confirmed it. */
  subscribe(channel, onPublication) {
    if (this.subscriptions.has(channel)) {
      return Promise.reject(new WsappError("invalid-argument", `already subscribed to ${channel}`));
    }
    const sub = new Subscription(this, channel, onPublication);
    this.subscriptions.set(channel, sub);
    sub.ready = new Promise((resolve, reject) => {
      sub._resolve = resolve;
      sub._reject = reject;
    });
    if (this.state === "open") this._subscribeOnServer(sub);
    return sub.ready;
  }

  _subscribeOnServer(sub) {
    const body = { action: "subscribe", channel: sub.channel };
    const since = sub.recovery.since();
    if (since) body.since = since;
    const onReply = (reply) => {
      if (!sub.active || this.subscriptions.get(sub.channel) !== sub) {
        // unsubscribed while the server was subscribing: undo it there
        this._call({ action: "unsubscribe", channel: sub.channel }, {}, true).catch(() => {});
        return;
      }
      const { publications, unrecovered } = sub.recovery.subscribed(reply);
      sub.subscribed = true;
      for (const pub of publications) sub.deliver(pub);
      if (unrecovered) sub.emit("unrecovered", reply);
    };
    this._call(body, {}, true, onReply).then(
      () => sub._resolve(sub),
      (error) => {
        if (error.code === "disconnected" || error.code === "timeout") {
          if (error.code === "timeout" && this.socket) this.socket.close(4000, "subscribe timed out");
          return;
        }
        if (this.subscriptions.get(sub.channel) === sub) this.subscriptions.delete(sub.channel);
        sub.active = false;
        sub.emit("error", error);
        sub._reject(error);
      },
    );
  }

  async _unsubscribe(sub) {
    if (this.subscriptions.get(sub.channel) !== sub) return;
    this.subscriptions.delete(sub.channel);
    sub._reject(new WsappError("unsubscribed", "unsubscribed before the server confirmed"));
    sub.ready.catch(() => {});
    if (this.state !== "open" || !sub.subscribed) return;
    try {
      await this._call({ action: "unsubscribe", channel: sub.channel }, {}, true);
    } catch (error) {
      if (error.code !== "disconnected" && error.code !== "invalid-argument") throw error;
    }
  }

  /** Publish `data` to `channel`; resolves with the `published` reply (its offset). */
  publish(channel, data) {
    return this._call({ action: "publish", channel, data });
  }

  /** The clients present in `channel`: resolves with [{client, info}]. */
  async presence(channel) {
    return (await this._call({ action: "presence", channel })).clients;
  }

  /** The latest `limit` publications of `channel`, oldest first. */
  history(channel, limit = undefined) {
    return this._call(limit === undefined ? { action: "history", channel } : { action: "history", channel, limit });
  }

  /** Close for good: no reconnect; waiting requests reject. */
  close() {
    if (this.closing) return;
    this.closing = true;
    clearTimeout(this.timers.retry);
    clearTimeout(this.timers.refresh);
    const error = new WsappError("closed", "the client is closed");
    this.requests.failAll(error);
    for (const sub of this.subscriptions.values()) {
      sub.ready.catch(() => {});
      sub._reject(error);
    }
    this.subscriptions.clear();
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close(1000, "client closed");
    this._setState("closed", { code: 1000, reason: "client closed", final: true });
  }
}

function expired(token) {
  const exp = tokenExpiry(token);
  return exp !== null && exp * 1000 <= Date.now();
}

/** `url` as an absolute ws:// or wss:// URL; a path is taken on the page's own server. */
export function absoluteUrl(url, base = globalThis.location) {
  if (/^wss?:\/\//.test(url)) return url;
  const resolved = new URL(url, base && base.href);
  resolved.protocol = resolved.protocol === "https:" ? "wss:" : "ws:";
  return resolved.href;
}

/** Open a client that keeps one connection to `url` (ws://..., or a path on this server). */
export function connect(url, options = {}) {
  return new Client(url, options);
}
