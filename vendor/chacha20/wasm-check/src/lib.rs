//! Exports `check() -> u32`: the number of failed comparisons (0 when the SIMD backend agrees
//! with the test vector and with the scalar reference everywhere).
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use reference::cipher::{
    KeyIvInit as _, StreamCipher as ReferenceCipher, StreamCipherSeek as ReferenceSeek,
};

/// RFC 8439 §2.4.2: key 00..1f, nonce 00:00:00:00:00:00:00:4a:00:00:00:00, counter 1.
fn rfc8439_vector() -> bool {
    let key: [u8; 32] = core::array::from_fn(|i| i as u8);
    let nonce = [0, 0, 0, 0, 0, 0, 0, 0x4a, 0, 0, 0, 0];
    let mut text = *b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    let expected_start = [
        0x6e, 0x2e, 0x35, 0x9a, 0x25, 0x68, 0xf9, 0x80, 0x41, 0xba, 0x07, 0x28,
    ];
    let expected_end = [
        0x5a, 0xf9, 0x0b, 0xbf, 0x74, 0xa3, 0x5b, 0xe6, 0xb4, 0x0b, 0x8e, 0xed, 0xf2, 0x78, 0x5e,
        0x42, 0x87, 0x4d,
    ];
    let mut cipher = chacha20::ChaCha20::new(&key.into(), &nonce.into());
    cipher.seek(64u64);
    cipher.apply_keystream(&mut text);
    text[..12] == expected_start && text[text.len() - 18..] == expected_end
}

/// Random keys, nonces, start positions and lengths, applied in uneven pieces (so both the
/// four-block and the one-block paths run, from every offset within a block).
fn matches_reference(seed: u32, cases: u32) -> u32 {
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let mut failures = 0;
    for case in 0..cases {
        let key: [u8; 32] = core::array::from_fn(|_| next() as u8);
        let nonce: [u8; 12] = core::array::from_fn(|_| next() as u8);
        let len = (next() % 4096) as usize;
        let position = if case % 2 == 0 {
            u64::from(next() % 1_000_000)
        } else {
            0
        };
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let mut ours = data.clone();
        let mut theirs = data;
        let mut cipher = chacha20::ChaCha20::new(&key.into(), &nonce.into());
        cipher.seek(position);
        let mut at = 0;
        while at < len {
            let end = (at + 1 + (next() % 700) as usize).min(len);
            cipher.apply_keystream(&mut ours[at..end]);
            at = end;
        }
        let mut reference = reference::ChaCha20::new(&key.into(), &nonce.into());
        reference.seek(position);
        reference.apply_keystream(&mut theirs);
        if ours != theirs {
            failures += 1;
        }
    }
    failures
}

/// The block counter's last blocks: the four-block path must stop at the same place.
fn near_counter_end() -> bool {
    let key = [7u8; 32];
    let nonce = [9u8; 12];
    let position = (u64::from(u32::MAX) - 5) * 64;
    let mut ours = vec![0u8; 5 * 64];
    let mut theirs = ours.clone();
    let mut cipher = chacha20::ChaCha20::new(&key.into(), &nonce.into());
    cipher.seek(position);
    cipher.apply_keystream(&mut ours);
    let mut reference = reference::ChaCha20::new(&key.into(), &nonce.into());
    reference.seek(position);
    reference.apply_keystream(&mut theirs);
    ours == theirs
}

#[no_mangle]
pub extern "C" fn check() -> u32 {
    u32::from(!rfc8439_vector())
        + matches_reference(0x9e37_79b9, 2000)
        + u32::from(!near_counter_end())
}
