//! The relay's persistent identity: an Ed25519 key in a file, so its peer id (and with it every
//! circuit address browsers hold) survives restarts.

use std::{fs, io::Write, path::Path};

use anyhow::{bail, Context};
use libp2p::identity::Keypair;

/// Largest identity file we read (a protobuf-encoded Ed25519 key is 68 bytes).
const MAX_IDENTITY_FILE: u64 = 4096;

/// Loads the key from `path`, or creates it (mode 0600) if the file does not exist.
pub fn load_or_create(path: &Path) -> anyhow::Result<Keypair> {
    match fs::metadata(path) {
        Ok(meta) => {
            if meta.len() > MAX_IDENTITY_FILE {
                bail!(
                    "{} is {} bytes, not an identity key",
                    path.display(),
                    meta.len()
                );
            }
            let bytes = fs::read(path)?;
            Keypair::from_protobuf_encoding(&bytes).context("not a libp2p protobuf-encoded key")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keypair = Keypair::generate_ed25519();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir)?;
            }
            if !write_new(path, &keypair.to_protobuf_encoding()?)? {
                // Another relay created it first: its key is the identity.
                return load_or_create(path);
            }
            tracing::info!("created identity {}", path.display());
            Ok(keypair)
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes `bytes` to `path` (mode 0600) unless it exists; `false` if it did. The file appears
/// whole or not at all: a crash leaves no empty or torn key that would keep the relay from
/// starting, only a temporary file (`path`.tmp-PID), which the next creation replaces.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    // Made anew, so it gets mode 0600 (an old one keeps the mode it was created with).
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    // A hard link, unlike a rename, never replaces a key that appeared meanwhile. Where the
    // file system has no hard links, a rename does, unless the key is there already.
    let placed = match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(_) if path.exists() => Ok(false),
        Err(_) => fs::rename(&tmp, path).map(|()| true),
    };
    let _ = fs::remove_file(&tmp);
    if !placed? {
        return Ok(false);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_peer_id_after_reload_and_bad_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("pc-id-{}", std::process::id()));
        let path = dir.join("relay.key");
        let _ = fs::remove_dir_all(&dir);
        let a = load_or_create(&path).expect("create");
        let b = load_or_create(&path).expect("load");
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        fs::write(&path, b"not a key").expect("write");
        assert!(load_or_create(&path).is_err());
        fs::write(&path, vec![0u8; 5000]).expect("write");
        assert!(load_or_create(&path).is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    /// A creation that died before its key was complete left only its temporary file: the
    /// next one creates the key whole and leaves nothing beside it.
    #[test]
    fn a_key_appears_whole_and_a_torn_attempt_is_no_obstacle() {
        let dir = std::env::temp_dir().join(format!("pc-id-torn-{}", std::process::id()));
        let path = dir.join("relay.key");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let torn = path.with_extension(format!("tmp-{}", std::process::id()));
        fs::write(&torn, b"\x08\x01").expect("write");
        let a = load_or_create(&path).expect("create");
        let b = load_or_create(&path).expect("load");
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        let names: Vec<_> = fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["relay.key"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("key").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A key that appeared meanwhile is kept, not replaced.
        assert!(!write_new(&path, b"other").expect("write"));
        assert_eq!(load_or_create(&path).expect("load").public(), a.public());
        let _ = fs::remove_dir_all(&dir);
    }
}
