//! scikit-learn's `train_test_split(X, y, test_size=…, random_state=seed, stratify=y)`, ported
//! draw for draw: numpy's legacy `RandomState(seed)` (MT19937 with `init_genrand` seeding,
//! `random_interval` by masked rejection, the Fisher–Yates `shuffle` from the last element
//! down), `StratifiedShuffleSplit._iter_indices` and `_approximate_mode` with its random
//! tie-breaking by `choice(…, replace=False)` (= the first entries of a `permutation`).
//! `tests/stratified_split.rs` checks the indices against scikit-learn on fixtures.

use crate::{EvalError, Result, Subset};

const N: usize = 624;
const M: usize = 397;

/// numpy's MT19937 as `np.random.RandomState(seed)` drives it (only what the split draws).
#[derive(Clone)]
pub struct RandomState {
    key: [u32; N],
    pos: usize,
}

impl std::fmt::Debug for RandomState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RandomState")
            .field("pos", &self.pos)
            .finish()
    }
}

impl RandomState {
    /// `np.random.RandomState(seed)` for an integer seed (`mt19937_seed`, i.e. `init_genrand`).
    pub fn new(seed: u32) -> Self {
        let mut key = [0u32; N];
        let mut s = seed;
        for (pos, k) in key.iter_mut().enumerate() {
            *k = s;
            s = 1_812_433_253u32
                .wrapping_mul(s ^ (s >> 30))
                .wrapping_add(pos as u32 + 1);
        }
        Self { key, pos: N }
    }

    fn generate(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        let mag = |y: u32| if y & 1 == 1 { MATRIX_A } else { 0 };
        for i in 0..N {
            let y = (self.key[i] & UPPER) | (self.key[(i + 1) % N] & LOWER);
            self.key[i] = self.key[(i + M) % N] ^ (y >> 1) ^ mag(y);
        }
        self.pos = 0;
    }

    /// The next 32-bit output (`random_raw` of the legacy bit generator).
    pub fn next_u32(&mut self) -> u32 {
        if self.pos == N {
            self.generate();
        }
        let mut y = self.key[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        (hi << 32) | u64::from(self.next_u32())
    }

    /// numpy's `random_interval(max)`: uniform on `0..=max` by masked rejection.
    pub fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for s in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> s;
        }
        loop {
            let v = if max <= 0xffff_ffff {
                u64::from(self.next_u32()) & mask
            } else {
                self.next_u64() & mask
            };
            if v <= max {
                return v;
            }
        }
    }

    /// `RandomState.shuffle` of a 1-d array (in place).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.interval(i as u64) as usize;
            v.swap(i, j);
        }
    }

    /// `RandomState.permutation(n)`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        self.shuffle(&mut v);
        v
    }
}

/// `_approximate_mode(class_counts, n_draws, rng)` of scikit-learn.
fn approximate_mode(counts: &[usize], n_draws: usize, rng: &mut RandomState) -> Vec<usize> {
    let total = counts.iter().sum::<usize>() as f64;
    let continuous: Vec<f64> = counts
        .iter()
        .map(|&c| c as f64 / total * n_draws as f64)
        .collect();
    let mut floored: Vec<f64> = continuous.iter().map(|v| v.floor()).collect();
    let mut need = (n_draws as f64 - floored.iter().sum::<f64>()) as i64;
    if need > 0 {
        let remainder: Vec<f64> = continuous
            .iter()
            .zip(&floored)
            .map(|(c, f)| c - f)
            .collect();
        let mut values = remainder.clone();
        values.sort_by(|a, b| b.total_cmp(a));
        values.dedup();
        for value in values {
            let inds: Vec<usize> = (0..remainder.len())
                .filter(|&i| remainder[i] == value)
                .collect();
            let add_now = inds.len().min(need as usize);
            for p in rng.permutation(inds.len()).into_iter().take(add_now) {
                floored[inds[p]] += 1.0;
            }
            need -= add_now as i64;
            if need == 0 {
                break;
            }
        }
    }
    floored.into_iter().map(|v| v as usize).collect()
}

/// `train_test_split(np.arange(n), test_size=test_fraction, random_state=seed, stratify=labels)`:
/// the `(train, held_out)` row indices, in scikit-learn's (shuffled) order.
///
/// The held-out part gets `ceil(test_fraction · n)` rows. Errors (scikit-learn refuses the same
/// inputs): a class with fewer than 2 rows, a part with fewer rows than there are classes (also
/// when `test_fraction` is not in `(0, 1)` or leaves a part empty).
pub fn stratified_split(
    labels: &[i64],
    test_fraction: f64,
    seed: u32,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let n = labels.len();
    let n_test = if test_fraction.is_finite() && test_fraction > 0.0 && test_fraction < 1.0 {
        (test_fraction * n as f64).ceil() as usize
    } else {
        0
    };
    let n_train = n.saturating_sub(n_test);
    // np.unique(y, return_inverse=True), class_counts, stable argsort by class.
    let mut classes = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let mut class_indices: Vec<Vec<usize>> = vec![Vec::new(); classes.len()];
    for (i, l) in labels.iter().enumerate() {
        if let Ok(c) = classes.binary_search(l) {
            class_indices[c].push(i);
        }
    }
    let counts: Vec<usize> = class_indices.iter().map(Vec::len).collect();
    if let Some(c) = counts.iter().position(|&c| c < 2) {
        return Err(EvalError::StratifyClass {
            label: classes[c],
            count: counts[c],
        });
    }
    for (part, size) in [(Subset::Train, n_train), (Subset::Validation, n_test)] {
        if size < classes.len() || size == 0 {
            return Err(EvalError::StratifySize {
                rows: n,
                part,
                size,
                classes: classes.len(),
            });
        }
    }
    let mut rng = RandomState::new(seed);
    let n_i = approximate_mode(&counts, n_train, &mut rng);
    let remaining: Vec<usize> = counts.iter().zip(&n_i).map(|(c, t)| c - t).collect();
    let t_i = approximate_mode(&remaining, n_test, &mut rng);
    let mut train = Vec::with_capacity(n_train);
    let mut test = Vec::with_capacity(n_test);
    for (c, idx) in class_indices.iter().enumerate() {
        let perm = rng.permutation(idx.len());
        let taken: Vec<usize> = perm.iter().map(|&p| idx[p]).collect();
        train.extend_from_slice(&taken[..n_i[c]]);
        test.extend_from_slice(&taken[n_i[c]..n_i[c] + t_i[c]]);
    }
    rng.shuffle(&mut train);
    rng.shuffle(&mut test);
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_outputs() {
        // init_genrand(5489), the reference implementation's default seed: first outputs.
        let mut r = RandomState::new(5489);
        let first: Vec<u32> = (0..3).map(|_| r.next_u32()).collect();
        assert_eq!(first, vec![3_499_211_612, 581_869_302, 3_890_346_734]);
        // The 10000th output of the default seed (C++ std::mt19937 requirement).
        let mut r = RandomState::new(5489);
        let v = (0..10_000).map(|_| r.next_u32()).last();
        assert_eq!(v, Some(4_123_659_995));
    }

    #[test]
    fn interval_stays_in_range_and_shuffle_permutes() {
        let mut r = RandomState::new(42);
        for max in [0u64, 1, 2, 7, 1000, 1 << 40] {
            for _ in 0..100 {
                assert!(r.interval(max) <= max);
            }
        }
        let mut p = r.permutation(50);
        p.sort_unstable();
        assert_eq!(p, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn approximate_mode_hits_the_draw_count() {
        let mut r = RandomState::new(0);
        let m = approximate_mode(&[3, 3, 3, 1], 5, &mut r);
        assert_eq!(m.iter().sum::<usize>(), 5);
        assert!(m.iter().zip([3, 3, 3, 1]).all(|(a, b)| *a <= b));
    }

    #[test]
    fn split_sizes_and_errors() {
        let labels: Vec<i64> = (0..23).map(|i| i % 3).collect();
        let (tr, te) = stratified_split(&labels, 0.2, 42).unwrap();
        assert_eq!((tr.len(), te.len()), (18, 5));
        let mut all: Vec<usize> = tr.iter().chain(&te).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..23).collect::<Vec<_>>());
        assert_eq!(
            stratified_split(&[1, 1, 2], 0.2, 42),
            Err(EvalError::StratifyClass { label: 2, count: 1 })
        );
        // 6 rows of 3 classes: 2 held out for 3 classes.
        assert_eq!(
            stratified_split(&[0, 0, 1, 1, 2, 2], 0.2, 42),
            Err(EvalError::StratifySize {
                rows: 6,
                part: Subset::Validation,
                size: 2,
                classes: 3
            })
        );
        assert!(matches!(
            stratified_split(&[0, 0, 1, 1], 1.0, 42),
            Err(EvalError::StratifySize { size: 0, .. })
        ));
    }
}
