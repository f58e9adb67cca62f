//! Seeded random streams: one master seed, one independent ChaCha8 stream per
//! `(domain, index)` — e.g. `("dino", global image index)` — so results never depend on batch
//! size, thread count or sharding.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// The stream for `(master seed, domain, index)`: ChaCha8 keyed by
/// `SHA-256(master_le || len(domain)_le || domain || index_le)`. Platform independent.
pub fn stream(master: u64, domain: &str, index: u64) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(master.to_le_bytes());
    h.update((domain.len() as u64).to_le_bytes());
    h.update(domain.as_bytes());
    h.update(index.to_le_bytes());
    ChaCha8Rng::from_seed(h.finalize().into())
}

/// The first `m` entries of a seeded Fisher–Yates permutation of `0..n` (all of them when
/// `m >= n`): `m` distinct indices, and the first `k` of them are this function's answer for
/// `k` — SimCLR draws its comparison images, DeepCluster its k-means starting points.
pub fn sample_without_replacement(n: usize, m: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let m = m.min(n);
    for i in 0..m {
        let j = rng.random_range(i..n);
        idx.swap(i, j);
    }
    idx.truncate(m);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| stream(7, "kl", 3).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(stream(7, "kl", 3).next_u64(), stream(7, "kl", 4).next_u64());
        assert_ne!(
            stream(7, "kl", 3).next_u64(),
            stream(7, "dino", 3).next_u64()
        );
        assert_ne!(stream(7, "kl", 3).next_u64(), stream(8, "kl", 3).next_u64());
    }

    #[test]
    fn samples_are_distinct_prefixes_of_one_permutation() {
        let all = sample_without_replacement(50, 50, &mut stream(1, "s", 0));
        let some = sample_without_replacement(50, 7, &mut stream(1, "s", 0));
        assert_eq!(&all[..7], &some[..]);
        let mut sorted = all.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(
            sample_without_replacement(3, 9, &mut stream(1, "s", 0)).len(),
            3
        );
    }
}
