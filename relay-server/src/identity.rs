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
            let mut options = fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path)?;
            file.write_all(&keypair.to_protobuf_encoding()?)?;
            tracing::info!("created identity {}", path.display());
            Ok(keypair)
        }
        Err(e) => Err(e.into()),
    }
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
}
