use peercompute_core::state::{
    path::decode_ops,
    sync_protocol::{DocMessages, SyncFrame},
    SharedDoc,
};
use serde_json::json;
use yrs::sync::SyncMessage;

use super::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pc-pin-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn update_setting(key: &str, value: i64) -> Vec<u8> {
    let doc = SharedDoc::new();
    let ops = decode_ops(&json!([{"set": [key], "value": value}]).to_string()).expect("ops");
    doc.apply_ops(&ops)
        .expect("applies")
        .update
        .expect("changed")
}

fn push(doc: &str, update: Vec<u8>) -> SyncFrame {
    SyncFrame {
        entries: vec![DocMessages {
            doc: doc.into(),
            messages: vec![SyncMessage::Update(update)],
        }],
    }
}

#[test]
fn pinned_documents_survive_a_restart_and_compact() {
    let dir = temp_dir("restart");
    {
        let mut pinned = PinnedDocs::open(&dir, usize::MAX).expect("opens");
        pinned.handle_request(push("w", update_setting("a", 1)), usize::MAX);
        assert!(pinned.apply_broadcast("w", &update_setting("b", 2)));
        assert!(pinned.apply_broadcast("other doc/é", &update_setting("c", 3)));
        assert!(
            !pinned.apply_broadcast("w", &[0xff; 12]),
            "garbage is refused"
        );
        assert!(
            !pinned.apply_broadcast("garbage", &[0xff; 12]),
            "and adopts no document"
        );
        // Enough records to trigger a compaction.
        for i in 0..250 {
            assert!(pinned.apply_broadcast("many", &update_setting(&format!("k{i}"), i)));
        }
    }
    let pinned = PinnedDocs::open(&dir, usize::MAX).expect("reopens");
    assert_eq!(pinned.len(), 3);
    assert_eq!(pinned.json("w"), Some(json!({"a": 1, "b": 2})));
    assert_eq!(pinned.json("other doc/é"), Some(json!({"c": 3})));
    let many = pinned.json("many").expect("pinned");
    assert_eq!(many.as_object().map(|o| o.len()), Some(250));
    let file = decode_file(&fs::read(doc_file(&dir, "many")).expect("file")).expect("decodes");
    assert!(file.updates.len() < 100, "{} records", file.updates.len());
}

/// A compaction cut short (the relay died before its rename) leaves a temporary file: the next
/// relay removes it and loads the document file it was to replace.
#[test]
fn a_compaction_cut_short_leaves_nothing_behind() {
    let dir = temp_dir("stale-tmp");
    {
        let mut pinned = PinnedDocs::open(&dir, usize::MAX).expect("opens");
        assert!(pinned.apply_broadcast("w", &update_setting("a", 1)));
    }
    let stale = doc_file(&dir, "w").with_extension("tmp");
    fs::write(&stale, b"half a compaction").expect("write");
    let pinned = PinnedDocs::open(&dir, usize::MAX).expect("opens");
    assert_eq!(pinned.json("w"), Some(json!({"a": 1})));
    assert!(!stale.exists(), "removed");
}

#[test]
fn a_state_directory_is_used_by_one_relay_at_a_time() {
    let dir = temp_dir("locked");
    let first = PinnedDocs::open(&dir, usize::MAX).expect("opens");
    let second = PinnedDocs::open(&dir, usize::MAX);
    assert!(
        second.is_err_and(|e| e.to_string().contains("in use")),
        "a second relay is refused"
    );
    drop(first);
    PinnedDocs::open(&dir, usize::MAX).expect("free again once the first is gone");
}

#[test]
fn a_damaged_file_loads_what_is_intact_and_is_rewritten() {
    let dir = temp_dir("damaged");
    fs::create_dir_all(&dir).expect("dir");
    let good = update_setting("a", 1);
    let mut bytes = encode_file("w", [good.as_slice(), &[1, 2, 3]]);
    bytes.extend_from_slice(&[9, 9]); // a torn append
    fs::write(doc_file(&dir, "w"), &bytes).expect("write");
    fs::write(dir.join("junk.ydoc"), b"not a document").expect("write");
    {
        let pinned = PinnedDocs::open(&dir, usize::MAX).expect("opens despite the damage");
        assert_eq!(pinned.json("w"), Some(json!({"a": 1})));
    }
    let file = decode_file(&fs::read(doc_file(&dir, "w")).expect("file")).expect("decodes");
    assert_eq!(file.corrupt, 0, "rewritten without the damage");
    assert_eq!(file.updates.len(), 1);
    // The originals are kept for recovery by hand: the damaged one beside its rewrite, the
    // unreadable one set aside, so nothing appends to it.
    let damaged = doc_file(&dir, "w").with_extension("ydoc.damaged");
    assert_eq!(fs::read(damaged).expect("kept"), bytes);
    assert!(!dir.join("junk.ydoc").exists());
    assert_eq!(
        fs::read(dir.join("junk.ydoc.damaged")).expect("set aside"),
        b"not a document"
    );
}

/// Records that wait for a damaged one (yrs holds them pending) are not compacted away: the
/// file stays as it is, and a peer may still send what they need.
#[test]
fn records_waiting_for_a_damaged_one_are_kept() {
    let dir = temp_dir("pending");
    fs::create_dir_all(&dir).expect("dir");
    let writer = SharedDoc::new();
    let write = |ops: &str| {
        let ops = decode_ops(ops).unwrap();
        writer.apply_ops(&ops).unwrap().update.unwrap()
    };
    let first = write(r#"[{"set":["a"],"value":1}]"#);
    // The same key again: its item names the first one as its left neighbour.
    let second = write(r#"[{"set":["a"],"value":2}]"#);
    let mut damaged = first.clone();
    damaged.truncate(3);
    let bytes = encode_file("w", [damaged.as_slice(), second.as_slice()]);
    fs::write(doc_file(&dir, "w"), &bytes).expect("write");
    {
        let pinned = PinnedDocs::open(&dir, usize::MAX).expect("opens");
        assert_eq!(
            pinned.json("w"),
            Some(json!({})),
            "the second waits for the first"
        );
    }
    assert_eq!(
        fs::read(doc_file(&dir, "w")).expect("file"),
        bytes,
        "left as it was"
    );
}

fn append_write(doc: &str, update: &[u8]) -> FileWrite {
    FileWrite::Append {
        doc: doc.into(),
        update: update.to_vec(),
    }
}

/// One group commit: appends grouped per document, a compaction in the middle of the batch
/// standing for the appends to its document before it, and the appends after it kept.
#[test]
fn a_group_commit_keeps_the_order_of_compactions_and_appends() {
    let dir = temp_dir("group");
    fs::create_dir_all(&dir).expect("dir");
    let (u1, u2, u3, v1) = (
        b"u1".as_slice(),
        b"u2".as_slice(),
        b"u3".as_slice(),
        b"v1".as_slice(),
    );
    commit(
        &dir,
        vec![
            append_write("d", u1),
            append_write("e", v1),
            append_write("d", u2),
            FileWrite::Compact {
                doc: "d".into(),
                state: b"u1+u2".to_vec(),
            },
            append_write("d", u3),
        ],
    );
    let read =
        |doc: &str| decode_file(&fs::read(doc_file(&dir, doc)).expect("file")).expect("decodes");
    assert_eq!(read("d").updates, [b"u1+u2".as_slice(), u3]);
    assert_eq!(read("e").updates, [v1]);
    // A later commit appends to the files as they are.
    commit(&dir, vec![append_write("e", u1), append_write("e", u2)]);
    assert_eq!(read("e").updates, [v1, u1, u2]);
    assert_eq!(read("e").corrupt, 0);
}

/// A compaction that cannot be written leaves the old file, which still gets the appends
/// the compaction would have stood for.
#[test]
fn a_failed_compaction_keeps_the_appends_it_stood_for() {
    let dir = temp_dir("group-failed");
    fs::create_dir_all(&dir).expect("dir");
    commit(&dir, vec![append_write("d", b"u1")]);
    // `replace` writes a temporary file first: a folder in its place makes it fail.
    fs::create_dir_all(doc_file(&dir, "d").with_extension("tmp")).expect("blocker");
    commit(
        &dir,
        vec![
            append_write("d", b"u2"),
            FileWrite::Compact {
                doc: "d".into(),
                state: b"u1+u2".to_vec(),
            },
        ],
    );
    let file = decode_file(&fs::read(doc_file(&dir, "d")).expect("file")).expect("decodes");
    assert_eq!(file.updates, [b"u1".as_slice(), b"u2"]);
}
