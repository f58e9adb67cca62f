//! A user-defined objective: **flip consistency**. Two views of an image (the DINO eval view and
//! its horizontal mirror) go through a random head; the loss is the negative cosine similarity of
//! the two latents. Nothing in `fungi-core` knows about it: it implements
//! [`fungi::core::Objective`] and is handed to the extractor like the built-in ones.
#![warn(missing_docs)]

use std::collections::BTreeMap;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fungi::aug::{EvalTransform, RgbImage};
use fungi::core::{l2_normalize, Head, Objective, Result, StateTensor};
use rand_chacha::ChaCha8Rng;

/// Flip-consistency objective.
pub struct FlipConsistency<B: Backend> {
    head: Head<B>,
}

impl<B: Backend> FlipConsistency<B> {
    /// A random head `[latent, embed_dim]` drawn from the stream `(seed, "flip.head")`.
    pub fn new(embed_dim: usize, latent: usize, seed: u64, device: &B::Device) -> Self {
        Self {
            head: Head::random("flip.head", embed_dim, latent, seed, device),
        }
    }
}

impl<B: AutodiffBackend> Objective<B> for FlipConsistency<B> {
    fn name(&self) -> &str {
        "flip"
    }
    fn views_per_image(&self) -> usize {
        2
    }
    fn views(&self, image: &RgbImage, _rng: &mut ChaCha8Rng) -> Vec<f32> {
        let view = EvalTransform::default().apply_u8(image);
        let flipped = fungi::aug::image::imageops::flip_horizontal(&view);
        [view, flipped]
            .iter()
            .flat_map(|v| {
                fungi::aug::normalize::to_chw_normalized(
                    v,
                    fungi::aug::normalize::ScaleFormula::Divide,
                )
            })
            .collect()
    }
    fn image_loss(&self, embeddings: Tensor<B, 2>) -> Result<Tensor<B, 1>> {
        // embeddings: [2, E] — this image's two views only.
        let z = l2_normalize(self.head.apply(embeddings)); // [2, L]
        let [_, l] = z.dims();
        let a = z.clone().slice([0..1, 0..l]);
        let b = z.slice([1..2, 0..l]);
        Ok((a * b).sum().neg().reshape([1]))
    }
    fn state(&self) -> BTreeMap<String, StateTensor> {
        BTreeMap::from(self.head.state_entries("head"))
    }
    fn load_state(&mut self, state: &BTreeMap<String, StateTensor>) -> Result<()> {
        self.head = self.head.loaded(state, "flip", "head")?;
        Ok(())
    }
    fn config_json(&self) -> serde_json::Value {
        serde_json::json!({ "latent_dim": self.head.dims().0 })
    }
}
