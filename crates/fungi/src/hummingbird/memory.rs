//! HummingBird's memory bank: a bounded sample of the training images' patch features with
//! their soft labels (`../shared/docs/dense-fungi.md` §B.3/§C.3).

use fungi_core::rng::stream;
use fungi_eval::Matrix;
use rand::RngExt;

use super::{HummingbirdError, Result};

/// Patch features (unit rows) and soft labels of the memory.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryBank {
    dim: usize,
    num_classes: usize,
    per_image: usize,
    seed: u64,
    rows: Vec<f32>,
    labels: Vec<f32>,
}

impl MemoryBank {
    /// An empty bank of `dim`-wide rows with `num_classes` soft labels, keeping `per_image`
    /// patches of each image; the choice is seeded by `(seed, "hummingbird.memory", key)`.
    pub fn new(dim: usize, num_classes: usize, per_image: usize, seed: u64) -> Self {
        Self {
            dim,
            num_classes,
            per_image: per_image.max(1),
            seed,
            rows: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// Patches kept per image for a bank of `memory_size` rows over `images` images
    /// (`memory_size / images`, at least 1), as the paper sizes it.
    pub fn per_image_for(memory_size: usize, images: usize) -> usize {
        (memory_size / images.max(1)).max(1)
    }

    /// Adds image `key`'s patches `features` `[P, dim]` with their soft labels `[P, C]`,
    /// keeping `per_image` of them chosen as the paper's `sample_features` does: a patch scores
    /// `u · Σ_c n_c` over the classes `c` it holds, `n_c` the number of the image's patches
    /// holding `c` and `u ~ U(0, 1)`, and the lowest scores are kept — patches of rare classes
    /// first. A patch with no labelled pixel (all 255) comes after every labelled one. Rows are
    /// stored L2-normalised.
    ///
    /// # Errors
    /// Sizes that do not agree, or a non-finite feature.
    pub fn add(&mut self, key: u64, features: &[f32], labels: &Matrix) -> Result<()> {
        let p = labels.rows;
        if labels.cols != self.num_classes || features.len() != p * self.dim {
            return Err(HummingbirdError::Shape {
                what: format!("memory image {key}"),
                expected: format!(
                    "{p} patches x {} features and {} label columns",
                    self.dim, self.num_classes
                ),
                found: format!(
                    "{} feature values and {} label columns",
                    features.len(),
                    labels.cols
                ),
            });
        }
        if let Some(v) = features.iter().find(|v| !v.is_finite()) {
            return Err(HummingbirdError::NonFinite {
                what: format!("the features of memory image {key}"),
                value: *v,
            });
        }
        let c = self.num_classes;
        let mut count = vec![0usize; c];
        for r in 0..p {
            for (k, n) in count.iter_mut().enumerate() {
                if labels.data[r * c + k] > 0.0 {
                    *n += 1;
                }
            }
        }
        let mut rng = stream(self.seed, "hummingbird.memory", key);
        let unlabelled = (p * c + 1) as f64;
        let mut scored: Vec<(f64, usize)> = (0..p)
            .map(|r| {
                let u: f64 = rng.random::<f64>();
                let s: usize = (0..c)
                    .filter(|&k| labels.data[r * c + k] > 0.0)
                    .map(|k| count[k])
                    .sum();
                let score = if s == 0 { unlabelled + u } else { u * s as f64 };
                (score, r)
            })
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut keep: Vec<usize> = scored
            .iter()
            .take(self.per_image.min(p))
            .map(|&(_, r)| r)
            .collect();
        keep.sort_unstable();
        for r in keep {
            let row = &features[r * self.dim..(r + 1) * self.dim];
            let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            self.rows.extend(row.iter().map(|v| v / n));
            self.labels
                .extend(labels.data[r * c..(r + 1) * c].iter().map(|&v| v as f32));
        }
        Ok(())
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.rows.len() / self.dim.max(1)
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Width of a row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Label columns.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Patches kept per image.
    pub fn per_image(&self) -> usize {
        self.per_image
    }

    /// The rows `[M, dim]` and labels `[M, C]`.
    pub fn into_parts(self) -> (Vec<f32>, Vec<f32>) {
        (self.rows, self.labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rare_class_patches_are_kept_first_and_unlabelled_ones_last() {
        // 4 patches, 2 classes: three background patches, one of class 1, one unlabelled.
        let labels =
            Matrix::new(5, 2, vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]).unwrap();
        let feats: Vec<f32> = (0..5).flat_map(|r| [r as f32 + 1.0, 0.0]).collect();
        for seed in 0..20 {
            let mut m = MemoryBank::new(2, 2, 1, seed);
            m.add(0, &feats, &labels).unwrap();
            // The class-1 patch scores u·1 < the background patches' u·3 most of the time;
            // over seeds it must be kept at least once, and the unlabelled one never.
            let (rows, l) = m.into_parts();
            assert_eq!(rows.len(), 2);
            assert_eq!(rows[1], 0.0);
            assert_ne!(
                l,
                vec![0.0, 0.0],
                "seed {seed}: the unlabelled patch was kept"
            );
        }
        let kept_rare = (0..50)
            .filter(|&seed| {
                let mut m = MemoryBank::new(2, 2, 1, seed);
                m.add(0, &feats, &labels).unwrap();
                m.into_parts().1 == vec![0.0, 1.0]
            })
            .count();
        // P(u1 < min(3 u_a, 3 u_b, 3 u_c)) is well above a half.
        assert!(kept_rare > 25, "{kept_rare}");
        let mut m = MemoryBank::new(2, 2, 10, 0);
        m.add(0, &feats, &labels).unwrap();
        assert_eq!(m.len(), 5);
        let e = m.add(1, &feats[..4], &labels).unwrap_err().to_string();
        assert!(e.contains("memory image 1"), "{e}");
    }
}
