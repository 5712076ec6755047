// Shared documents in real Chromium: peers converging through a real relay, tabs of one node,
// durability in IndexedDB, versions, Yjs compatibility and bad input.
import { expect, test } from '@playwright/test';
import * as Y from 'yjs';

import { openDoc, tree, until } from './docs.mjs';
import { openNode, useRelay, waitForPeer } from './relay.mjs';

test.describe.configure({ mode: 'serial' });

const currentRelay = useRelay(test);

test('two nodes converge after concurrent edits to the same new object', async ({ browser }) => {
  const a = await openNode(await browser.newContext(), currentRelay());
  const b = await openNode(await browser.newContext(), currentRelay());
  await waitForPeer(a.page, b.peerId);
  await openDoc(a.page, 'world');
  await openDoc(b.page, 'world');
  // Both create `players` at once: neither write is lost.
  await Promise.all([
    a.page.evaluate(() => window.docs.world.set('players.alice', { x: 1, y: 2 })),
    b.page.evaluate(() => window.docs.world.set('players.bob', { x: 5 })),
  ]);
  const both = (t) => t.players?.alice?.x === 1 && t.players?.bob?.x === 5;
  await until(a.page, 'world', both);
  await until(b.page, 'world', both);
  expect(await tree(a.page, 'world')).toEqual(await tree(b.page, 'world'));
  // The remote change reached b's observer, marked as not local.
  const remote = await b.page.evaluate(() => window.seen.world.filter((c) => !c.local).flatMap((c) => c.changes));
  expect(remote.some((c) => c.path.join('.') === 'players.alice.x' && c.value === 1)).toBe(true);
  // An atomic update with a delete travels as one transaction.
  await a.page.evaluate(() => window.docs.world.update([{ set: 'score', value: 3 }, { delete: 'players.bob' }]));
  await until(b.page, 'world', (t) => t.score === 3 && t.players.bob === undefined && t.players.alice.x === 1);
  expect(a.errors.concat(b.errors)).toEqual([]);
});

test('a newcomer gets a large document as one change at the root, later writes per entry', async ({ browser }) => {
  const a = await openNode(await browser.newContext(), currentRelay());
  await openDoc(a.page, 'big');
  // 2000 entries: the sync answer (~60 KB) is past the 16 KiB from which frames go deflated.
  await a.page.evaluate(async () => {
    for (let b = 0; b < 2; b++) {
      await window.docs.big.update(
        Array.from({ length: 1000 }, (_, i) => ({ set: ['items', `i${b * 1000 + i}`], value: { n: i } })),
      );
    }
  });
  const b = await openNode(await browser.newContext(), currentRelay());
  await waitForPeer(b.page, a.peerId);
  await openDoc(b.page, 'big');
  await until(b.page, 'big', (t) => Object.keys(t.items ?? {}).length === 2000);
  const whole = await tree(a.page, 'big');
  expect(await tree(b.page, 'big')).toEqual(whole);
  // The sync filled b's empty document in one transaction: one change, the whole tree.
  const first = await b.page.evaluate(() => window.seen.big[0]);
  expect(first).toEqual({ changes: [{ path: [], value: whole, deleted: false }], local: false });
  // From then on, per entry; and b's own writes go on from the tree it was given.
  await a.page.evaluate(() => window.docs.big.set('items.i7.n', 'seven'));
  await until(b.page, 'big', (t) => t.items.i7.n === 'seven');
  const later = await b.page.evaluate(() => window.seen.big.at(-1).changes);
  expect(later).toEqual([{ path: ['items', 'i7', 'n'], value: 'seven', deleted: false }]);
  await b.page.evaluate(() => window.docs.big.delete('items.i0'));
  await until(a.page, 'big', (t) => t.items.i0 === undefined && Object.keys(t.items).length === 1999);
  expect(a.errors.concat(b.errors)).toEqual([]);
});

test('three tabs of one node see each other\'s writes through the worker', async ({ browser }) => {
  const context = await browser.newContext();
  const tabs = [];
  for (let i = 0; i < 3; i++) tabs.push(await openNode(context, currentRelay()));
  expect(new Set(tabs.map((t) => t.peerId)).size).toBe(1);
  for (const t of tabs) await openDoc(t.page, 'local');
  await tabs[0].page.evaluate(() => window.docs.local.set('from', 'tab0'));
  await tabs[2].page.evaluate(() => window.docs.local.set('also', ['tab2', 2]));
  for (const t of tabs) await until(t.page, 'local', (v) => v.from === 'tab0' && v.also?.[0] === 'tab2');
  // Tab 1 heard both through the worker, as local changes.
  const seen = await tabs[1].page.evaluate(() => window.seen.local);
  expect(seen.length).toBeGreaterThanOrEqual(2);
  expect(seen.every((c) => c.local)).toBe(true);
});

test('a key named __proto__ is plain data in every tab\'s copy, never the prototype', async ({ browser }) => {
  const context = await browser.newContext();
  const tabs = [await openNode(context, currentRelay()), await openNode(context, currentRelay())];
  for (const t of tabs) await openDoc(t.page, 'proto');
  await tabs[0].page.evaluate(async () => {
    await window.docs.proto.set(['__proto__', 'polluted'], true);
    await window.docs.proto.set(['__proto__', 'toString'], 1);
    await window.docs.proto.delete(['__proto__', 'toString']);
    await window.docs.proto.set('done', true);
  });
  for (const t of tabs) {
    await until(t.page, 'proto', (v) => v.done === true);
    const seen = await t.page.evaluate(() => ({
      inherited: {}.polluted,
      toString: typeof {}.toString,
      kept: window.docs.proto.get(['__proto__', 'polluted']),
      own: Object.hasOwn(window.docs.proto.get(), '__proto__'),
    }));
    expect(seen).toEqual({ inherited: undefined, toString: 'function', kept: true, own: true });
  }
});

test('closing an old handle again leaves a newer handle of the same document live', async ({ browser }) => {
  const context = await browser.newContext();
  const tabs = [await openNode(context, currentRelay()), await openNode(context, currentRelay())];
  await tabs[0].page.evaluate(async () => {
    const old = window.node.state('handles');
    await old.ready;
    await old.close();
    window.docs = { handles: window.node.state('handles') };
    await window.docs.handles.ready;
    await old.close(); // again: a no-op, not a second stateClose
  });
  await openDoc(tabs[1].page, 'handles');
  await tabs[1].page.evaluate(() => window.docs.handles.set('from', 'tab1'));
  await until(tabs[0].page, 'handles', (v) => v.from === 'tab1');
});

test('a write made just before its tab closes is kept, and reload restores from IndexedDB', async ({ browser }) => {
  const context = await browser.newContext();
  const keeper = await openNode(context, currentRelay());
  const writer = await openNode(context, currentRelay());
  await openDoc(writer.page, 'durable');
  // Fire and close at once: no await on the write.
  await writer.page.evaluate(() => {
    window.docs.durable.set('last', { words: 'before closing' });
  });
  await writer.page.close();
  // The other tab keeps the worker alive and sees it.
  await openDoc(keeper.page, 'durable');
  await until(keeper.page, 'durable', (t) => t.last?.words === 'before closing');
  // A write awaited and then every tab closed: the worker goes away with its memory.
  await keeper.page.evaluate(() => window.docs.durable.set('count', 7));
  await keeper.page.close();
  const closedAt = Date.now();
  // A new tab starts a new worker (its uptime is younger than the close) that restores the
  // document from IndexedDB: no other peer holds it.
  const again = await openNode(context, currentRelay());
  const uptime = await again.page.evaluate(async () => (await window.node.getStatus()).uptimeMs);
  expect(uptime).toBeLessThanOrEqual(Date.now() - closedAt);
  await openDoc(again.page, 'durable');
  expect(await tree(again.page, 'durable')).toEqual({ last: { words: 'before closing' }, count: 7 });
  // And a reload of that tab, too.
  await again.page.reload();
  await again.page.waitForFunction(() => window.sdkReady === true);
  await again.page.evaluate(async () => {
    window.node = await window.PeerCompute.connect();
  });
  await openDoc(again.page, 'durable');
  expect(await tree(again.page, 'durable')).toEqual({ last: { words: 'before closing' }, count: 7 });
});

test('named versions read back', async ({ browser }) => {
  const n = await openNode(await browser.newContext(), currentRelay());
  await openDoc(n.page, 'versions');
  const result = await n.page.evaluate(async () => {
    const doc = window.docs.versions;
    await doc.set('score', 1);
    const v = await doc.snapshot('before-boss');
    await doc.update([{ set: 'score', value: 9 }, { set: 'boss.hp', value: 0 }]);
    return {
      v,
      now: doc.get(),
      then: await doc.at(v).get(),
      thenScore: await doc.at(v.id).get('score'),
      versions: await doc.versions(),
      unknown: await doc.at('nope').get().catch((e) => e.code),
      deleted: await doc.deleteVersion(v).then(() => doc.versions()),
      deletedAt: await doc.at(v).get().catch((e) => e.code),
      deletedTwice: await doc.deleteVersion(v.id).catch((e) => e.code),
      badId: await doc.deleteVersion(42).catch((e) => e.code),
    };
  });
  expect(result.now).toEqual({ score: 9, boss: { hp: 0 } });
  expect(result.then).toEqual({ score: 1 });
  expect(result.thenScore).toBe(1);
  expect(result.versions).toEqual([result.v]);
  expect(result.v.label).toBe('before-boss');
  expect(result.unknown).toBe('STATE_UNKNOWN_VERSION');
  expect(result.deleted).toEqual([]);
  expect(result.deletedAt).toBe('STATE_UNKNOWN_VERSION');
  expect(result.deletedTwice).toBe('STATE_UNKNOWN_VERSION');
  expect(result.badId).toBe('BAD_REQUEST');
});

test('updates are Yjs v1: yjs reads ours and we read yjs\'s', async ({ browser }) => {
  const n = await openNode(await browser.newContext(), currentRelay());
  await openDoc(n.page, 'yjs');
  const exported = await n.page.evaluate(async () => {
    await window.docs.yjs.set('players.alice', { x: 1, tags: ['a', 'b'] });
    return Array.from(await window.docs.yjs.exportUpdate());
  });
  const ydoc = new Y.Doc();
  Y.applyUpdate(ydoc, Uint8Array.from(exported));
  const root = ydoc.getMap('root');
  // Leaves are keyed by path (keys joined by U+001F).
  expect(root.get('players\u001falice\u001fx')).toBe(1);
  expect(root.get('players\u001falice\u001ftags')).toEqual(['a', 'b']);
  // A Yjs client writes; we import its update.
  const before = Y.encodeStateVector(ydoc);
  root.set('made\u001fby', 'yjs');
  const update = Y.encodeStateAsUpdate(ydoc, before);
  const after = await n.page.evaluate(async (bytes) => {
    await window.docs.yjs.importUpdate(Uint8Array.from(bytes));
    return window.docs.yjs.get();
  }, Array.from(update));
  expect(after).toEqual({ players: { alice: { x: 1, tags: ['a', 'b'] } }, made: { by: 'yjs' } });
  // A Yjs update that builds on changes this document never got: refused with what is
  // missing, the part that does not depend on them goes in, nothing is held unstored.
  const elsewhere = new Y.Doc();
  elsewhere.getMap('root').set('skipped', 1);
  const sv = Y.encodeStateVector(elsewhere);
  elsewhere.getMap('root').set('skipped', 2);
  const orphan = Y.encodeStateAsUpdate(elsewhere, sv);
  const independent = new Y.Doc();
  independent.getMap('root').set('fine', true);
  const both = Y.mergeUpdates([orphan, Y.encodeStateAsUpdate(independent)]);
  const missing = await n.page.evaluate(async (bytes) => {
    const e = await window.docs.yjs.importUpdate(Uint8Array.from(bytes)).then(() => null, (e) => e);
    return { code: e?.code, message: e?.message, fine: window.docs.yjs.get('fine') };
  }, Array.from(both));
  expect(missing.code).toBe('STATE_MISSING_HISTORY');
  expect(missing.message).toContain(`client ${elsewhere.clientID}`);
  expect(missing.fine).toBe(true);
});

test('close() lets writes in flight become durable; observers get copies', async ({ browser }) => {
  const context = await browser.newContext();
  const keeper = await openNode(context, currentRelay());
  const n = await openNode(context, currentRelay());
  await openDoc(n.page, 'closing');
  const result = await n.page.evaluate(async () => {
    const doc = window.docs.closing;
    let given;
    doc.observe('team', ({ changes }) => {
      given = changes.find((c) => c.path.join('.') === 'team.members')?.value;
      given?.push('intruder'); // an observer that changes what it got
    });
    await doc.set('team', { members: ['ann'] });
    const mirror = doc.get('team');
    // Not awaited: close() right after the write was sent.
    const write = doc.set('late', 'kept').then(() => 'resolved', (e) => e.code);
    await window.node.close();
    return { given, mirror, write: await write };
  });
  expect(result.given).toEqual(['ann', 'intruder']);
  expect(result.mirror).toEqual({ members: ['ann'] });
  expect(result.write).toBe('resolved');
  await openDoc(keeper.page, 'closing');
  expect(await tree(keeper.page, 'closing')).toEqual({ team: { members: ['ann'] }, late: 'kept' });
});

test('bad state input gets codes and changes nothing', async ({ browser }) => {
  const n = await openNode(await browser.newContext(), currentRelay());
  await openDoc(n.page, 'bad');
  const codes = await n.page.evaluate(async () => {
    const doc = window.docs.bad;
    await doc.set('ok', 1);
    const code = (p) => p.then(() => 'resolved', (e) => e.code);
    const cyclic = {};
    cyclic.self = cyclic;
    const sync = (f) => {
      try {
        f();
        return 'no error';
      } catch (e) {
        return e.code;
      }
    };
    return {
      fn: await code(doc.set('a', { f() {} })),
      cycle: await code(doc.set('a', cyclic)),
      nan: await code(doc.set('a', NaN)),
      infinity: await code(doc.set('a', [1, Infinity])),
      date: await code(doc.set('a', new Date())),
      emptyKey: await code(doc.set('a..b', 1)),
      control: await code(doc.set(['a\nb'], 1)),
      // 256 bytes of UTF-8 is the longest key (two bytes a character here), 258 is over.
      longestKey: await code(doc.set(['é'.repeat(128)], 1)),
      keyOver: await code(doc.set(['é'.repeat(129)], 1)),
      valueKeyOver: await code(doc.set('v', { ['é'.repeat(129)]: 1 })),
      noOps: await code(doc.update([])),
      badOp: await code(doc.update([{ move: 'a' }])),
      stringOp: await code(doc.update(['x'])),
      nullOp: await code(doc.update([null])),
      notBytes: await code(doc.importUpdate([1, 2, 3])),
      garbage: await code(doc.importUpdate(new Uint8Array([255, 255, 255, 1, 2, 3]))),
      docName: sync(() => window.node.state('')),
      // The same handle is returned for the same name, and still works after the errors.
      same: window.node.state('bad') === doc && (await code(doc.set('x', 1))),
      tree: doc.get(),
    };
  });
  expect(codes).toEqual({
    fn: 'STATE_INVALID_VALUE',
    cycle: 'STATE_INVALID_VALUE',
    nan: 'STATE_INVALID_VALUE',
    infinity: 'STATE_INVALID_VALUE',
    date: 'STATE_INVALID_VALUE',
    emptyKey: 'STATE_INVALID_PATH',
    control: 'STATE_INVALID_PATH',
    longestKey: 'resolved',
    keyOver: 'STATE_INVALID_PATH',
    valueKeyOver: 'STATE_INVALID_VALUE',
    noOps: 'STATE_INVALID_VALUE',
    badOp: 'STATE_INVALID_VALUE',
    stringOp: 'STATE_INVALID_VALUE',
    nullOp: 'STATE_INVALID_VALUE',
    notBytes: 'STATE_INVALID_UPDATE',
    garbage: 'STATE_INVALID_UPDATE',
    docName: 'STATE_INVALID_DOC_NAME',
    same: 'resolved',
    tree: { ok: 1, x: 1, ['é'.repeat(128)]: 1 },
  });
  expect(n.errors).toEqual([]);
});
