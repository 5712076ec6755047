//! The network's root key on disk: created by `relay-server root-key`, used by
//! `relay-server sign FILE`; its public half goes into `/peercompute.json`.

use std::path::Path;

use anyhow::Context;
use libp2p::identity::ed25519;
use peercompute_core::compute::signing::{sign, to_hex};

/// Largest file `sign` reads: the larger of the bounds a node accepts for a shader and for
/// a wasm kernel.
const MAX_SIGNED_FILE: u64 = {
    use peercompute_core::compute::{task::MAX_CODE_BYTES, wasm_kernel::MAX_MODULE_BYTES};
    (if MAX_CODE_BYTES > MAX_MODULE_BYTES {
        MAX_CODE_BYTES
    } else {
        MAX_MODULE_BYTES
    }) as u64
};

fn ed25519_of(key: libp2p::identity::Keypair, path: &Path) -> anyhow::Result<ed25519::Keypair> {
    key.try_into_ed25519()
        .with_context(|| format!("{} is not an Ed25519 key", path.display()))
}

/// Loads the root key, creating it (mode 0600) when the file does not exist.
pub fn load_or_create_root_key(path: &Path) -> anyhow::Result<ed25519::Keypair> {
    ed25519_of(crate::identity::load_or_create(path)?, path)
}

/// Loads an existing root key; a missing file is an error (signing with a fresh key would
/// produce signatures no node accepts).
pub fn load_root_key(path: &Path) -> anyhow::Result<ed25519::Keypair> {
    if !path.exists() {
        anyhow::bail!(
            "no root key at {} (create one with `relay-server root-key --key {}`)",
            path.display(),
            path.display()
        );
    }
    load_or_create_root_key(path)
}

/// Signs a file's bytes; returns the signature as hex.
pub fn sign_file(key: &Path, file: &Path) -> anyhow::Result<String> {
    let key = load_root_key(key)?;
    let len = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    if len > MAX_SIGNED_FILE {
        anyhow::bail!(
            "{} is {len} bytes; code is at most {MAX_SIGNED_FILE}",
            file.display()
        );
    }
    let code = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    Ok(to_hex(&sign(&key, &code)))
}

#[cfg(test)]
mod tests {
    use peercompute_core::compute::signing::{public_hex, RootKey};

    use super::*;

    #[test]
    fn a_signed_file_verifies_against_the_published_key() {
        let dir = std::env::temp_dir().join(format!("pc-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let key_path = dir.join("root.key");
        assert!(sign_file(&key_path, &key_path).is_err(), "no key yet");
        let key = load_or_create_root_key(&key_path).expect("created");
        let shader = dir.join("shader.wgsl");
        std::fs::write(&shader, "@compute @workgroup_size(1) fn main() {}").expect("write");
        let signature = sign_file(&key_path, &shader).expect("signs");
        let root = RootKey::from_hex(&public_hex(&key)).expect("key");
        let sig = peercompute_core::compute::task::parse_signature(&signature).expect("hex");
        let code = std::fs::read(&shader).expect("read");
        root.verify(&code, Some(&sig)).expect("verifies");
        // A wasm kernel may be larger than a shader: up to 1 MiB, not a byte more.
        let kernel = dir.join("kernel.wasm");
        let limit = peercompute_core::compute::wasm_kernel::MAX_MODULE_BYTES;
        std::fs::write(&kernel, vec![0u8; limit]).expect("write");
        assert!(sign_file(&key_path, &kernel).is_ok());
        std::fs::write(&kernel, vec![0u8; limit + 1]).expect("write");
        assert!(sign_file(&key_path, &kernel).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
