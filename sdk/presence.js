// Presence (awareness): one small JSON state per node — a name, a cursor — that every peer
// sees and that disappears when the node leaves. All tabs of an origin are one node, so they
// share one presence state: the last `set` from any tab wins.

import { checkValue, utf8Within } from './state.js';

const MAX_PRESENCE_BYTES = 4 * 1024;

/** `node.presence`. */
export class Presence {
  #request;
  #makeError;
  #peers = {};
  #listeners = new Set();

  constructor(request, makeError) {
    this.#request = request;
    this.#makeError = makeError;
  }

  /**
   * Sets this node's state (plain JSON, at most 4 KiB as JSON text) for every peer to see;
   * `null` clears it. Resolves once the node has taken it.
   */
  async set(state) {
    if (state === undefined) throw this.#makeError('PRESENCE_INVALID_VALUE', 'state must be a JSON value or null');
    if (state !== null) {
      try {
        checkValue(this.#makeError, state);
      } catch (e) {
        throw this.#makeError('PRESENCE_INVALID_VALUE', e.message);
      }
    }
    const json = JSON.stringify(state);
    if (!utf8Within(json, MAX_PRESENCE_BYTES)) {
      throw this.#makeError('PAYLOAD_TOO_LARGE', `a presence state is at most ${MAX_PRESENCE_BYTES} bytes of JSON`);
    }
    await this.#request('presenceSet', { json });
  }

  /** Clears this node's state: peers stop showing it at once. */
  clear() {
    return this.set(null);
  }

  /** Every node's state, this one's included: `{ [peerId]: state }`. */
  async get() {
    const { json } = await this.#request('presenceGet');
    this.#peers = JSON.parse(json);
    return structuredClone(this.#peers);
  }

  /**
   * `on('change', (peers) => …)`: called with `{ [peerId]: state }` whenever a state is set,
   * changes, is cleared, or expires (a peer silent for 30 s, or gone). Returns an off function.
   */
  on(event, handler) {
    if (event !== 'change') throw new TypeError(`unknown presence event ${event}`);
    if (typeof handler !== 'function') throw new TypeError('handler must be a function');
    this.#listeners.add(handler);
    return () => this.#listeners.delete(handler);
  }

  _apply(peersJson) {
    try {
      this.#peers = JSON.parse(peersJson);
    } catch {
      return; // the worker produces this JSON; this cannot happen with an honest worker
    }
    for (const h of this.#listeners) {
      try {
        h(structuredClone(this.#peers));
      } catch (e) {
        console.error('PeerCompute presence handler threw:', e);
      }
    }
  }
}
