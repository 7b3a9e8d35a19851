// Types of wsapp.js, the browser client served by every wsapp server at /wsapp.js.

/** The close code of a server whose client's token expired. */
export declare const TOKEN_EXPIRED: 4001;

export type State = "connecting" | "open" | "closed";

/** What a "state" listener gets besides the state. */
export interface StateInfo {
  /** Reconnect attempt (connecting). */
  attempt?: number;
  /** Close code, null without one (closed). */
  code?: number | null;
  reason?: string;
  /** Milliseconds until the next attempt, and when it is (Date.now() time) (closed). */
  delay?: number;
  retryAt?: number;
  /** True once client.close() was called: no reconnect follows. */
  final?: boolean;
}

export interface BackoffOptions {
  /** First delay in ms (250). */
  initial?: number;
  /** Longest delay in ms before jitter (8000). */
  maximum?: number;
  /** Up to this fraction is added at random (0.25). */
  jitter?: number;
  random?: () => number;
}

export interface ConnectOptions {
  /** A token (a JWT) sent first as {"action": "authenticate", "token": T}. */
  token?: string;
  /** Called for a new token before the current one expires and after a 4001 close. */
  getToken?: () => string | Promise<string>;
  /** Default request timeout in ms (10000). */
  timeout?: number;
  backoff?: BackoffOptions;
}

export interface RequestOptions {
  /** Milliseconds before the promise rejects with code "timeout". */
  timeout?: number;
}

/** Any JSON event the server sends; `type` names it. */
export interface ServerEvent {
  type: string;
  id?: string | number;
  [field: string]: unknown;
}

export interface Publication<T = unknown> {
  channel: string;
  offset: number;
  data: T;
}

export interface Member {
  client: string;
  info: Record<string, unknown>;
}

/** An Error carrying a wsapp error code: the server's, or timeout, disconnected, closed. */
export declare class WsappError extends Error {
  code: string;
  detail: string;
  reply?: ServerEvent;
}

export declare class Subscription<T = unknown> {
  readonly channel: string;
  /** "unrecovered": publications were missed beyond recovery (the event says up to where);
   * "join"/"leave": presence changes; "error": the server refused a resubscribe. */
  on(type: "unrecovered" | "join" | "leave", fn: (event: ServerEvent) => void): () => void;
  on(type: "error", fn: (error: WsappError) => void): () => void;
  off(type: string, fn: (...args: any[]) => void): void;
  unsubscribe(): Promise<void>;
}

export declare class Client {
  readonly url: string;
  readonly state: State;
  on(type: "state", fn: (state: State, info: StateInfo) => void): () => void;
  /** Every event that is no reply to a request nor a subscription's publication. */
  on(type: "message", fn: (event: ServerEvent) => void): () => void;
  /** Server error events without a request id, invalid JSON, failed token renewals. */
  on(type: "error", fn: (error: Error) => void): () => void;
  off(type: string, fn: (...args: any[]) => void): void;
  /** Send with an id (queued until open); resolves with the reply echoing it. */
  request<R extends ServerEvent = ServerEvent>(obj: Record<string, unknown>, options?: RequestOptions): Promise<R>;
  /** Send without an id; false (not sent) unless open. */
  send(obj: Record<string, unknown>): boolean;
  subscribe<T = unknown>(channel: string, onPublication: (pub: Publication<T>) => void): Promise<Subscription<T>>;
  publish(channel: string, data: unknown): Promise<ServerEvent & { offset: number }>;
  presence(channel: string): Promise<Member[]>;
  history(channel: string, limit?: number): Promise<ServerEvent & { publications: { offset: number; data: unknown }[] }>;
  close(): void;
}

/** Open a client keeping one connection to `url` (ws://, wss:// or a path on this server). */
export declare function connect(url: string, options?: ConnectOptions): Client;

// The pure parts, exported for tests and for pages of their own.
export declare function backoff(attempt: number, options?: BackoffOptions): number;
export declare function tokenExpiry(token: string): number | null;
export declare function refreshDelay(exp: number, now?: number): number;
export declare function absoluteUrl(url: string, base?: { href: string }): string;

export declare class Requests {
  constructor(timers?: { setTimer?: typeof setTimeout; clearTimer?: typeof clearTimeout });
  add(timeout: number, onReply?: ((reply: ServerEvent) => void) | null): { id: number; promise: Promise<ServerEvent> };
  settle(message: ServerEvent): boolean;
  sent(id: number): void;
  fail(id: number, error: Error): void;
  failAll(error: Error, sentOnly?: boolean): void;
  readonly pending: Map<number, unknown>;
}

export declare class Recovery {
  offset: number | null;
  epoch: string | null;
  since(): { offset: number; epoch: string } | undefined;
  subscribed(reply: ServerEvent): { publications: { offset: number; data: unknown }[]; unrecovered: boolean };
  publication(event: { offset: number }): boolean;
  unrecovered(event: { offset: number; epoch: string }): void;
}
