import { PeerCompute } from '/sdk/peercompute.js';

const $ = (id) => document.getElementById(id);
const short = (id) => `${id.slice(0, 8)}…${id.slice(-6)}`;

function setState(online, text) {
  $('state').className = `state ${online ? 'online' : 'offline'}`;
  $('state').textContent = text ?? (online ? 'online' : 'offline — reconnecting');
}

function renderStatus(s) {
  $('peer-id').textContent = s.peerId;
  $('relays').textContent = s.relays.map((r) => `${r.addr} ${r.reserved ? '✓' : r.connected ? '(no reservation)' : '✗'}`).join('\n') || '–';
  $('connections').textContent = String(s.connections);
  $('tabs').textContent = String(s.tabs);
  $('uptime').textContent = `${Math.round(s.uptimeMs / 1000)} s`;
  setState(s.online);
}

async function renderPeers(node) {
  const peers = await node.peers();
  $('peer-count').textContent = `(${peers.filter((p) => p.connected).length} connected)`;
  $('peers').replaceChildren(
    ...(peers.length
      ? peers.map((p) => {
          const li = document.createElement('li');
          li.textContent = `${short(p.peerId)} ${p.connected ? 'connected' : 'known'}${p.rttMs != null ? ` · ${p.rttMs.toFixed(1)} ms` : ''}`;
          return li;
        })
      : [Object.assign(document.createElement('li'), { className: 'muted', textContent: 'none yet — open this page in another browser profile' })]),
  );
}

function renderExecutors(s) {
  const c = s.compute;
  const gpu = c.gpuAdapter ? `GPU: ${c.gpuAdapter.name}${c.gpuAdapter.fallback ? ' (software)' : ''}` : 'no GPU';
  $('executors').textContent = `${c.cpuSlots} CPU worker(s) · ${gpu} · served ${c.chunksServed} chunk(s) for peers`;
}

/** Splits a Mandelbrot render over this node and every peer that computes; draws the result. */
async function renderMandelbrot(node) {
  const canvas = $('canvas');
  const [w, h] = [canvas.width, canvas.height];
  const maxIter = 400;
  $('compute-result').textContent = '';
  // The example wasm kernel gives the built-in kernel's bits. Unsigned, it runs on this node
  // only; signed by the network's root key (`signature`), it would travel like the built-in one.
  const code =
    $('kernel').value === 'wasm'
      ? { wasm: new Uint8Array(await (await fetch('/kernels/mandelbrot.wasm')).arrayBuffer()) }
      : { kernel: 'mandelbrot' };
  const task = node.submitTask({
    type: 'cpu',
    ...code,
    data: { params: { maxIter } },
    output: { type: 'u32', length: w * h },
    grid: [w, h],
    split: { axis: 1, chunks: 16 },
  });
  task.on('progress', ({ done, total }) => ($('progress').value = done / total));
  const { result, workers, elapsedMs } = await task.done;
  const image = new ImageData(w, h);
  for (let i = 0; i < result.length; i++) {
    const t = result[i] === maxIter ? 0 : Math.sqrt(result[i] / maxIter);
    image.data.set([255 * t, 180 * t, 255 * (1 - t) * (result[i] < maxIter), 255], i * 4);
  }
  canvas.getContext('2d').putImageData(image, 0, 0);
  $('compute-result').textContent = `${Math.round(elapsedMs)} ms on ${workers.map(short).join(', ')}`;
}

/** A text from a peer's data, which may be any JSON: shown as text, never as markup. */
const textOf = (value, max) => (typeof value === 'string' ? value : '').slice(0, max);

/** The shared board: notes in the `demo-board` document, who is here through presence, versions. */
async function startBoard(node) {
  const board = node.state('demo-board');
  const nameKey = 'peercompute-demo-name';
  const myName = () => localStorage.getItem(nameKey) || `guest-${node.peerId.slice(-4)}`;
  const showError = (e) => ($('board-state').textContent = `${e.code ?? 'ERROR'}: ${e.message}`);

  const renderHere = (peers) => {
    const names = Object.entries(peers)
      .filter(([, state]) => state !== null)
      .map(([peerId, state]) => {
        const li = document.createElement('li');
        li.textContent = `${textOf(state?.name, 40) || short(peerId)}${peerId === node.peerId ? ' (you)' : ''}`;
        return li;
      });
    $('here').replaceChildren(...names);
  };
  node.presence.on('change', renderHere);
  $('name').value = myName();
  $('name-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const name = $('name').value.trim();
    if (!name) return;
    localStorage.setItem(nameKey, name);
    node.presence.set({ name }).catch(showError);
  });

  const noteItem = (id, note) => {
    const li = document.createElement('li');
    const by = Object.assign(document.createElement('span'), { className: 'from', textContent: `${textOf(note?.by, 40)}:` });
    const text = Object.assign(document.createElement('span'), { className: 'text', textContent: textOf(note?.text, 500) });
    const remove = Object.assign(document.createElement('button'), { type: 'button', textContent: '✕', title: 'delete for everyone' });
    remove.setAttribute('aria-label', 'delete note');
    remove.addEventListener('click', () => board.delete(['notes', id]).catch(showError));
    li.append(by, text, remove);
    return li;
  };
  const sortedNotes = (notes) =>
    Object.entries(notes && typeof notes === 'object' ? notes : {}).sort(
      ([, a], [, b]) => (Number(a?.at) || 0) - (Number(b?.at) || 0),
    );
  // Any peer can add notes: the page shows the latest ones, not however many there are.
  const SHOWN_NOTES = 200;
  const renderNotes = () => {
    const notes = sortedNotes(board.get('notes'));
    $('notes').replaceChildren(...notes.slice(-SHOWN_NOTES).map(([id, note]) => noteItem(id, note)));
    $('board-state').textContent = `${notes.length} note${notes.length === 1 ? '' : 's'}${
      notes.length > SHOWN_NOTES ? ` (the latest ${SHOWN_NOTES} shown)` : ''
    }`;
  };
  board.observe('notes', renderNotes);
  $('note-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('note').value.trim();
    if (!text) return;
    $('note').value = '';
    const id = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
    board.set(['notes', id], { text, by: myName(), at: Date.now() }).catch(showError);
  });

  const renderVersions = async () => {
    const versions = await board.versions();
    const selected = $('versions').value;
    $('versions').replaceChildren(
      new Option('current', ''),
      ...versions.map((v) => new Option(`${v.label || 'version'} (${new Date(v.time).toLocaleTimeString()})`, v.id)),
    );
    $('versions').value = versions.some((v) => v.id === selected) ? selected : '';
  };
  $('version-form').addEventListener('submit', (e) => {
    e.preventDefault();
    board
      .snapshot(`${board.get('notes') ? Object.keys(board.get('notes')).length : 0} notes`)
      .then(renderVersions)
      .catch(showError);
  });
  $('versions').addEventListener('change', async () => {
    const id = $('versions').value;
    if (!id) {
      $('version-view').textContent = '';
      return;
    }
    try {
      const notes = sortedNotes(await board.at(id).get('notes'));
      $('version-view').textContent = `Then: ${notes.length} note${notes.length === 1 ? '' : 's'}${notes.length ? ' — ' : ''}${notes
        .map(([, n]) => textOf(n?.text, 80))
        .join(' · ')}`;
    } catch (err) {
      showError(err);
    }
  });
  $('versions').addEventListener('focus', () => renderVersions().catch(showError));

  await board.ready;
  renderNotes();
  await renderVersions();
  await node.presence.set({ name: myName() });
  renderHere(await node.presence.get());
}

function addMessage(from, text, mine) {
  const li = document.createElement('li');
  const who = document.createElement('span');
  who.className = 'from';
  who.textContent = mine ? 'me: ' : `${short(from)}: `;
  li.append(who, document.createTextNode(text));
  $('messages').append(li);
  li.scrollIntoView({ block: 'nearest' });
}

try {
  const node = await PeerCompute.connect();
  window.peercompute = node; // for poking at it from DevTools
  node.subscribe('chat', ({ from, data }) => addMessage(from, String(data?.text ?? ''), false));
  node.on('status', renderStatus);
  node.on('peer:join', () => renderPeers(node));
  node.on('peer:leave', () => renderPeers(node));
  $('send').addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = $('text').value.trim();
    if (!text) return;
    $('text').value = '';
    addMessage(node.peerId, text, true);
    await node.publish('chat', { text });
  });
  $('compute').addEventListener('submit', (e) => {
    e.preventDefault();
    renderMandelbrot(node).catch((err) => ($('compute-result').textContent = `${err.code}: ${err.message}`));
  });
  const refresh = async () => {
    const status = await node.getStatus();
    renderStatus(status);
    renderExecutors(status);
    await renderPeers(node);
  };
  startBoard(node).catch((err) => ($('board-state').textContent = `${err.code ?? 'ERROR'}: ${err.message}`));
  await refresh();
  setInterval(refresh, 2000);
} catch (e) {
  setState(false, `error: ${e.code ?? ''} ${e.message}`);
  console.error(e);
}
