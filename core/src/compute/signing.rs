//! Code signing: code that crosses the network runs only with an Ed25519 signature by the
//! network's root key (published in `/peercompute.json` as `rootKey`).
//!
//! The signature covers `"peercompute/code/1\n"` followed by the code's bytes (the WGSL
//! source as UTF-8), so a signature made for anything else never validates code. Keys and
//! signatures travel as lowercase hex: a public key is 64 hex digits, a signature 128.

use libp2p::identity::ed25519;

use crate::{error::ErrorCode, NodeError};

/// Prefix of every signed message.
pub const SIGNING_DOMAIN: &[u8] = b"peercompute/code/1\n";

fn message(code: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_DOMAIN.len() + code.len());
    m.extend_from_slice(SIGNING_DOMAIN);
    m.extend_from_slice(code);
    m
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of a hex string (either case); `None` when it is not hex.
pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

/// The network's root public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootKey(ed25519::PublicKey);

impl RootKey {
    /// Parses a 64-digit hex public key.
    pub fn from_hex(hex: &str) -> Result<RootKey, NodeError> {
        let bad = || {
            NodeError::new(
                ErrorCode::BadRequest,
                "the root key is an Ed25519 public key as 64 hex digits",
            )
        };
        let bytes = from_hex(hex).filter(|b| b.len() == 32).ok_or_else(bad)?;
        ed25519::PublicKey::try_from_bytes(&bytes)
            .map(RootKey)
            .map_err(|_| bad())
    }

    /// Hex form.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0.to_bytes())
    }

    /// Checks `signature` over `code`.
    pub fn verify(&self, code: &[u8], signature: Option<&[u8; 64]>) -> Result<(), NodeError> {
        let signature = signature.ok_or_else(|| {
            NodeError::new(
                ErrorCode::CodeUnsigned,
                "code from the network runs only when signed by the network's root key",
            )
        })?;
        if self.0.verify(&message(code), signature) {
            Ok(())
        } else {
            Err(NodeError::new(
                ErrorCode::CodeSignatureInvalid,
                "the code's signature does not match the network's root key (tampered, or signed by another key)",
            ))
        }
    }
}

/// Signs `code` with the root keypair (the relay CLI's `sign`, and tests).
pub fn sign(key: &ed25519::Keypair, code: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out.copy_from_slice(&key.sign(&message(code)));
    out
}

/// The hex public key of a keypair.
pub fn public_hex(key: &ed25519::Keypair) -> String {
    to_hex(&key.public().to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_code_verifies_and_tampered_code_does_not() {
        let key = ed25519::Keypair::generate();
        let root = RootKey::from_hex(&public_hex(&key)).unwrap();
        let code = b"@compute @workgroup_size(1) fn main() {}";
        let sig = sign(&key, code);
        root.verify(code, Some(&sig)).unwrap();
        let mut tampered = code.to_vec();
        tampered[0] = b'#';
        assert_eq!(
            root.verify(&tampered, Some(&sig)).unwrap_err().code,
            ErrorCode::CodeSignatureInvalid
        );
        assert_eq!(
            root.verify(code, None).unwrap_err().code,
            ErrorCode::CodeUnsigned
        );
        let other = ed25519::Keypair::generate();
        assert!(root.verify(code, Some(&sign(&other, code))).is_err());
        // A signature of the bare bytes (no domain prefix) is not a code signature.
        let mut bare = [0u8; 64];
        bare.copy_from_slice(&key.sign(code));
        assert!(root.verify(code, Some(&bare)).is_err());
    }

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        assert_eq!(from_hex(&to_hex(&[0, 255, 16])), Some(vec![0, 255, 16]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("é1"), None);
        assert!(RootKey::from_hex("00").is_err());
    }
}
