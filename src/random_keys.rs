//! A hasher for map keys that are already uniformly random and out of a client's control (a
//! SHA-256 digest, a seal's tag, a SipHash value under a random key): hashing them again would
//! only cost time. A leaf: the session and rate-limit stores both use it.

/// Takes a `u64` key as its hash, and a byte key's last eight bytes (not the first: stores pick
/// their shard by those).
#[derive(Default, Clone, Copy)]
pub struct RandomKeyHasher(u64);

impl std::hash::Hasher for RandomKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let tail = bytes
            .get(bytes.len().saturating_sub(8)..)
            .unwrap_or_default();
        word[..tail.len()].copy_from_slice(tail);
        self.0 ^= u64::from_le_bytes(word);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
    // An array's length prefix says nothing.
    fn write_usize(&mut self, _: usize) {}
}

pub type RandomKeyed = std::hash::BuildHasherDefault<RandomKeyHasher>;
