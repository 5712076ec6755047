//! The relay unmasks every byte a browser or native node sends (RFC 6455 §5.3: clients mask
//! their frames). `vendor/soketto` does it eight bytes at a time; this checks it against the
//! definition, byte by byte, for every length around the word size and every offset of the
//! last partial word, and against the RFC's own example.

use soketto::base::{Codec, Header, OpCode};

fn masked_header(mask: u32) -> Header {
    let mut header = Header::new(OpCode::Binary);
    header.set_masked(true).set_mask(mask);
    header
}

#[test]
fn unmasking_matches_the_rfc_example() {
    // RFC 6455 §5.7: "Hello", masked with 37 fa 21 3d.
    let mut data = vec![0x7f, 0x9f, 0x4d, 0x51, 0x58];
    Codec::apply_mask(&masked_header(0x37fa_213d), &mut data);
    assert_eq!(data, b"Hello");
}

#[test]
fn unmasking_is_the_xor_with_the_repeated_key_at_every_length() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for len in (0..=67).chain([1000, 4093, 65_536 + 5]) {
        let mask = next() as u32;
        let key = mask.to_be_bytes();
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let mut masked = data.clone();
        Codec::apply_mask(&masked_header(mask), &mut masked);
        for (i, (&m, &d)) in masked.iter().zip(&data).enumerate() {
            assert_eq!(m, d ^ key[i % 4], "length {len}, byte {i}");
        }
        // Masking is its own inverse.
        Codec::apply_mask(&masked_header(mask), &mut masked);
        assert_eq!(masked, data, "length {len}");
    }
    // An unmasked frame is left alone.
    let mut data = vec![1, 2, 3];
    Codec::apply_mask(&Header::new(OpCode::Binary), &mut data);
    assert_eq!(data, [1, 2, 3]);
}
