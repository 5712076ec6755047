//! The tabs' `MessagePort`s: decoding requests into core inputs, encoding outputs back.

use std::{cell::RefCell, collections::HashMap, rc::Rc};

use futures::channel::mpsc;
use js_sys::{Array, Function, Object, Reflect, Uint8Array};
use peercompute_core::{
    node::{queue_lifecycle, Input, Output},
    pubsub::Payload,
    tab_protocol::{
        decode_request, max_field_bytes, Event, GpuAdapter, Header, ReplyValue, Request, RequestId,
        TabId, PROTOCOL_VERSION,
    },
    ErrorCode, NodeError,
};
use serde::Serialize;
use wasm_bindgen::{prelude::*, JsCast};
use web_sys::{MessageEvent, MessagePort};

use crate::executors::{Executors, MAX_POOL_SLOTS};

struct Tab {
    port: MessagePort,
    /// Whether the tab's Web Lock is watched already.
    watched: bool,
    // Kept alive while the port is attached; dropped (from the node loop, never from inside
    // the callback itself) when the tab is forgotten.
    _on_message: Closure<dyn FnMut(MessageEvent)>,
}

/// Attached tabs and the queue into the node loop.
pub(crate) struct Ports {
    inputs: mpsc::Sender<Input>,
    executors: Rc<RefCell<Executors>>,
    tabs: HashMap<TabId, Tab>,
    next_tab: TabId,
}

impl Ports {
    pub(crate) fn new(inputs: mpsc::Sender<Input>, executors: Rc<RefCell<Executors>>) -> Self {
        Ports {
            inputs,
            executors,
            tabs: HashMap::new(),
            next_tab: 1,
        }
    }

    pub(crate) fn attach(this: &Rc<RefCell<Ports>>, port: MessagePort) {
        let mut ports = this.borrow_mut();
        let tab = ports.next_tab;
        ports.next_tab = ports.next_tab.wrapping_add(1).max(1);
        let weak = Rc::downgrade(this);
        let reply_port = port.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            if let Some(ports) = weak.upgrade() {
                on_message(&ports, tab, &reply_port, ev.data());
            }
        });
        port.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        port.start();
        if queue_lifecycle(&ports.inputs, Input::Attach(tab)).is_err() {
            tracing::warn!(tab, "the node loop has stopped");
        }
        ports.tabs.insert(
            tab,
            Tab {
                port,
                watched: false,
                _on_message: on_message,
            },
        );
    }

    /// Delivers one output of the node loop.
    pub(crate) fn deliver(this: &Rc<RefCell<Ports>>, output: Output) {
        match output {
            Output::Reply { tab, id, result } => {
                if let Some(t) = this.borrow().tabs.get(&tab) {
                    // A task's result is bulk data: it travels as a transferred Uint8Array.
                    let bytes = match &result {
                        Ok(ReplyValue::TaskResult(r)) => Some(Uint8Array::from(r.bytes.as_slice())),
                        _ => None,
                    };
                    let msg = reply(Some(id), result);
                    let transfer = bytes.map(|b| {
                        if let Ok(value) = Reflect::get(&msg, &"value".into()) {
                            let _ = Reflect::set(&value, &"bytes".into(), &b);
                        }
                        Array::of1(&b.buffer())
                    });
                    post(&t.port, &msg, transfer);
                }
            }
            Output::Event { tab, event } => {
                if let Some(t) = this.borrow().tabs.get(&tab) {
                    let (msg, transfer) = event_message(event);
                    post(&t.port, &msg, transfer);
                }
            }
            Output::Forget { tab } => {
                let executors = this.borrow().executors.clone();
                executors.borrow_mut().detach_tab(tab);
                if let Some(t) = this.borrow_mut().tabs.remove(&tab) {
                    t.port.set_onmessage(None);
                    t.port.close();
                }
            }
            // Storage and executor outputs are the host's; they never reach here.
            Output::LoadDoc { .. }
            | Output::Persist { .. }
            | Output::Compact { .. }
            | Output::RunChunk { .. }
            | Output::AbortChunk { .. } => {}
        }
    }
}

fn on_message(ports: &Rc<RefCell<Ports>>, tab: TabId, port: &MessagePort, data: JsValue) {
    if Reflect::get(&data, &"op".into())
        .ok()
        .and_then(|o| o.as_string())
        .as_deref()
        == Some(EXECUTOR_ATTACH)
    {
        attach_executor(ports, tab, port, &data);
        return;
    }
    if let Some((id, error)) = oversized_field(&data) {
        post(port, &reply(id, Err(error)), None);
        return;
    }
    let header = serde_wasm_bindgen::from_value::<Header>(data.clone());
    let decoded = decode_request(header, || serde_wasm_bindgen::from_value::<Request>(data));
    let (id, request) = match decoded {
        Ok(ok) => ok,
        Err((id, error)) => {
            post(port, &reply(id, Err(error)), None);
            return;
        }
    };
    if let Request::Attach { lock: Some(lock) } = &request {
        // Once per tab: each watch ends in one detach, which skips the queue's bound.
        let first = ports
            .borrow_mut()
            .tabs
            .get_mut(&tab)
            .is_some_and(|t| !std::mem::replace(&mut t.watched, true));
        if first {
            watch_tab_lock(ports, tab, lock);
        }
    }
    let sent = ports
        .borrow_mut()
        .inputs
        .try_send(Input::Request { tab, id, request });
    if sent.is_err() {
        post(
            port,
            &reply(
                Some(id),
                Err(NodeError::new(
                    ErrorCode::Busy,
                    "the node is overloaded; try again",
                )),
            ),
            None,
        );
    }
}

/// A top-level string or typed-array field longer than its op allows, measured before serde
/// copies it into wasm memory. A string's UTF-16 length is a lower bound of its UTF-8 bytes,
/// so a string refused here is too long in any encoding.
fn oversized_field(data: &JsValue) -> Option<(Option<RequestId>, NodeError)> {
    let object = data.dyn_ref::<Object>()?;
    let op = Reflect::get(data, &"op".into()).ok()?;
    // Even the op name is measured before it is copied (the decoder refuses unknown ones).
    let op = op
        .dyn_ref::<js_sys::JsString>()
        .filter(|s| s.length() <= 64)?;
    let op = String::from(op);
    let max = max_field_bytes(&op);
    let entries = Object::entries(object);
    let measure = |value: &JsValue| {
        if let Some(s) = value.dyn_ref::<js_sys::JsString>() {
            s.length() as usize
        } else {
            value
                .dyn_ref::<Uint8Array>()
                .map_or(0, |b| b.byte_length() as usize)
        }
    };
    // Keys too: the decoder copies each key to match it against the fields it knows.
    let (name, len) = entries.iter().find_map(|entry| {
        let entry: Array = entry.unchecked_into();
        let (key, value) = (entry.get(0), entry.get(1));
        let len = measure(&key).max(measure(&value));
        let name = || match measure(&key) {
            n if n <= 40 => key.as_string().unwrap_or_default(),
            n => format!("({n} characters long)"),
        };
        (len > max).then(|| (name(), len))
    })?;
    let id = Reflect::get(data, &"id".into())
        .ok()
        .and_then(|v| v.as_f64())
        .filter(|v| v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(v))
        .map(|v| v as RequestId);
    let error = NodeError::new(
        ErrorCode::PayloadTooLarge,
        format!("{op}: field {name:?} is {len} long; at most {max} bytes"),
    );
    Some((id, error))
}

/// The browser-only request by which a tab lends the node an executor, the port transferred:
/// its CPU worker pool, `{ v, id, op: "executorAttach", port: MessagePort, cpuSlots, score }`,
/// or its GPU worker, `{ v, id, op: "executorAttach", port, gpu: { name, backend, fallback } }`.
/// A port cannot travel through serde, so it is handled here, before the core decoder.
const EXECUTOR_ATTACH: &str = "executorAttach";

fn attach_executor(
    ports: &Rc<RefCell<Ports>>,
    tab: TabId,
    reply_port: &MessagePort,
    data: &JsValue,
) {
    let get = |k: &str| Reflect::get(data, &k.into()).unwrap_or(JsValue::UNDEFINED);
    let id = get("id").as_f64().map(|i| i as RequestId);
    let pool = get("port").dyn_into::<MessagePort>().ok();
    let slots = get("cpuSlots")
        .as_f64()
        .filter(|s| s.fract() == 0.0 && *s >= 1.0 && *s <= f64::from(MAX_POOL_SLOTS));
    let score = get("score").as_f64().filter(|s| s.is_finite() && *s >= 0.0);
    let gpu = get("gpu");
    let gpu = if gpu.is_undefined() {
        Ok(None)
    } else {
        serde_wasm_bindgen::from_value::<GpuAdapter>(gpu)
            .map(|mut g| {
                cut_at_char(&mut g.name, 256);
                cut_at_char(&mut g.backend, 64);
                Some(g)
            })
            .map_err(|_| ())
    };
    let result = match (get("v").as_f64(), pool, slots, score, gpu) {
        (Some(v), ..) if v != f64::from(PROTOCOL_VERSION) => Err(NodeError::new(
            ErrorCode::UnsupportedVersion,
            format!("protocol version {v}, expected {PROTOCOL_VERSION}"),
        )),
        (_, Some(pool), _, _, Ok(Some(gpu))) => {
            let executors = ports.borrow().executors.clone();
            Executors::attach(&executors, tab, pool, 1, score.unwrap_or(0.0), Some(gpu))
                .map(|()| ReplyValue::Done)
        }
        (_, Some(pool), Some(slots), Some(score), Ok(None)) => {
            let executors = ports.borrow().executors.clone();
            Executors::attach(&executors, tab, pool, slots as u32, score, None)
                .map(|()| ReplyValue::Done)
        }
        _ => Err(NodeError::new(
            ErrorCode::BadRequest,
            format!("executorAttach needs a transferred `port` and either `cpuSlots` 1..={MAX_POOL_SLOTS} with a `score`, or `gpu` {{ name, backend, fallback }}"),
        )),
    };
    post(reply_port, &reply(id, result), None);
}

/// Cuts `s` to at most `max` bytes, at a character boundary (`truncate` panics inside one).
fn cut_at_char(s: &mut String, max: usize) {
    if s.len() > max {
        let end = (0..=max)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        s.truncate(end);
    }
}

/// Asks for the tab's Web Lock; the browser grants it to us only once the tab, which holds it
/// for its whole life, is gone (closed, crashed or navigated away).
fn watch_tab_lock(ports: &Rc<RefCell<Ports>>, tab: TabId, lock: &str) {
    let request = (|| -> Result<(JsValue, Function), JsValue> {
        let navigator = Reflect::get(&js_sys::global(), &"navigator".into())?;
        let locks = Reflect::get(&navigator, &"locks".into())?;
        let request = Reflect::get(&locks, &"request".into())?.dyn_into::<Function>()?;
        Ok((locks, request))
    })();
    let Ok((locks, request)) = request else {
        tracing::warn!("Web Locks unavailable: closed tabs are noticed only when they say goodbye");
        return;
    };
    let weak = Rc::downgrade(ports);
    let on_granted = Closure::once_into_js(move |_lock: JsValue| {
        if let Some(ports) = weak.upgrade() {
            let ports = ports.borrow();
            // A message the tab posted before it died may still be dispatched: it must not
            // reach the node after the detach, which would attach the tab again for good.
            if let Some(t) = ports.tabs.get(&tab) {
                t.port.set_onmessage(None);
                let _ = queue_lifecycle(&ports.inputs, Input::Detach(tab));
            }
        }
    });
    if let Err(e) = request.call2(&locks, &JsValue::from_str(lock), &on_granted) {
        tracing::warn!(tab, "watching the tab's lock failed: {e:?}");
    }
}

fn to_js<T: Serialize>(value: &T) -> JsValue {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .unwrap_or(JsValue::NULL)
}

fn set(obj: &Object, key: &str, value: &JsValue) {
    let _ = Reflect::set(obj, &JsValue::from_str(key), value);
}

fn reply(id: Option<RequestId>, result: Result<ReplyValue, NodeError>) -> JsValue {
    let msg = Object::new();
    set(&msg, "v", &PROTOCOL_VERSION.into());
    set(&msg, "id", &id.map_or(JsValue::NULL, JsValue::from));
    match result {
        Ok(value) => {
            set(&msg, "ok", &JsValue::TRUE);
            set(&msg, "value", &to_js(&value));
        }
        Err(e) => {
            set(&msg, "ok", &JsValue::FALSE);
            let err = Object::new();
            set(&err, "code", &e.code.as_str().into());
            set(&err, "message", &e.message.as_str().into());
            set(&msg, "error", &err);
        }
    }
    msg.into()
}

fn event_message(event: Event) -> (JsValue, Option<Array>) {
    let msg = Object::new();
    set(&msg, "v", &PROTOCOL_VERSION.into());
    let mut transfer = None;
    match event {
        Event::Message {
            topic,
            from,
            payload,
            local,
        } => {
            set(&msg, "event", &"message".into());
            set(&msg, "topic", &topic.into());
            set(&msg, "from", &from.into());
            set(&msg, "local", &local.into());
            match payload {
                Payload::Json(text) => set(&msg, "json", &text.into()),
                Payload::Bytes(bytes) => {
                    let array = Uint8Array::from(bytes.as_slice());
                    transfer = Some(Array::of1(&array.buffer()));
                    set(&msg, "bytes", &array);
                }
            }
        }
        Event::PeerJoin { peer_id } => {
            set(&msg, "event", &"peer:join".into());
            set(&msg, "peerId", &peer_id.into());
        }
        Event::PeerLeave { peer_id } => {
            set(&msg, "event", &"peer:leave".into());
            set(&msg, "peerId", &peer_id.into());
        }
        Event::Status(status) => {
            set(&msg, "event", &"status".into());
            set(&msg, "status", &to_js(&status));
        }
        Event::State {
            doc,
            changes,
            local,
        } => {
            set(&msg, "event", &"state".into());
            set(&msg, "doc", &doc.into());
            set(&msg, "changes", &changes.into());
            set(&msg, "local", &local.into());
        }
        Event::Presence { peers } => {
            set(&msg, "event", &"presence".into());
            set(&msg, "peers", &peers.into());
        }
        Event::TaskProgress {
            task,
            done,
            total,
            peers,
        } => {
            set(&msg, "event", &"taskProgress".into());
            set(&msg, "task", &task.into());
            set(&msg, "done", &done.into());
            set(&msg, "total", &total.into());
            set(&msg, "peers", &(peers as u32).into());
        }
    }
    (msg.into(), transfer)
}

fn post(port: &MessagePort, msg: &JsValue, transfer: Option<Array>) {
    let result = match transfer {
        Some(t) => port.post_message_with_transferable(msg, &t),
        None => port.post_message(msg),
    };
    if let Err(e) = result {
        tracing::warn!("posting to a tab failed: {e:?}");
    }
}
