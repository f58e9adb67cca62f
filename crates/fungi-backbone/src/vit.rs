//! The Vision Transformer (DINO v1 `VisionTransformer`, DINOv2 `DinoVisionTransformer`).

use burn::module::Param;
use burn::prelude::*;

use crate::attention::Attention;
use crate::block::{Block, LayerScale};
use crate::config::VitConfig;
use crate::error::{Error, Result};
use crate::layer_norm::LayerNorm;
use crate::mlp::Mlp;
use crate::ops::VitOps;
use crate::patch_embed::PatchEmbed;
use crate::pos_embed::interpolate_pos_embed;
use crate::target::{Site, TargetLayer};

/// A DINO / DINOv2 ViT. Field names are the PyTorch state-dict keys.
#[derive(Module, Debug)]
pub struct Vit<B: Backend> {
    /// `[1, 1, D]`.
    pub cls_token: Param<Tensor<B, 3>>,
    /// `[1, 1 + M*M, D]` for the trained `M x M` grid.
    pub pos_embed: Param<Tensor<B, 3>>,
    /// Patch embedding.
    pub patch_embed: PatchEmbed<B>,
    /// Transformer blocks (`blocks.0` ...).
    pub blocks: Vec<Block<B>>,
    /// Final LayerNorm.
    pub norm: LayerNorm<B>,
    /// Architecture.
    #[module(skip)]
    pub config: VitConfig,
}

/// The state of the network just before a target Linear layer; see [`Vit::tap`].
#[derive(Debug, Clone)]
pub struct Tap<B: Backend> {
    /// Residual stream of the target block needed to finish it.
    pub residual: Tensor<B, 3>,
    /// Input of the target Linear, `[B, T', in]` (`T' = 1` on the CLS-only path).
    pub input: Tensor<B, 3>,
    /// Whether only the CLS token was carried (see [`Vit::cls_only_allowed`]).
    pub cls_only: bool,
}

impl<B: Backend> Vit<B> {
    /// Random DINO-style init (trunc-normal std 0.02 approximated by a normal).
    pub fn random(config: &VitConfig, device: &B::Device) -> Self {
        let e = config.embed_dim;
        let g = config.pos_grid();
        let normal = burn::tensor::Distribution::Normal(0.0, 0.02);
        let ls = |on: bool| {
            on.then(|| LayerScale {
                gamma: Param::from_tensor(Tensor::ones([e], device).mul_scalar(1e-5)),
            })
        };
        let blocks = (0..config.depth)
            .map(|_| Block {
                norm1: LayerNorm::new(e, config.layer_norm_eps, device),
                attn: Attention::new(e, config.num_heads, config.qkv_bias, device),
                ls1: ls(config.layer_scale),
                norm2: LayerNorm::new(e, config.layer_norm_eps, device),
                mlp: Mlp::new(e, config.mlp_hidden_dim(), device),
                ls2: ls(config.layer_scale),
            })
            .collect();
        Self {
            cls_token: Param::from_tensor(Tensor::random([1, 1, e], normal, device)),
            pos_embed: Param::from_tensor(Tensor::random([1, 1 + g * g, e], normal, device)),
            patch_embed: PatchEmbed::new(config.in_chans, e, config.patch_size, device),
            blocks,
            norm: LayerNorm::new(e, config.layer_norm_eps, device),
            config: config.clone(),
        }
    }

    /// Embedding dimension `D`.
    pub fn embed_dim(&self) -> usize {
        self.config.embed_dim
    }

    /// Patch tokens + CLS + (interpolated) position embedding.
    ///
    /// # Shapes
    /// - input `[B, C, H, W]`, output `[B, 1 + (H/P)(W/P), D]`
    pub fn embed(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, _, h, w] = x.dims();
        let p = self.config.patch_size;
        let tokens = self.patch_embed.forward(x);
        let d = self.config.embed_dim;
        let cls = self.cls_token.val().expand([b, 1, d]);
        let x = Tensor::cat(vec![cls, tokens], 1);
        let pos = interpolate_pos_embed(
            self.pos_embed.val(),
            h / p,
            w / p,
            h == w,
            self.config.interpolate_offset,
        );
        x + pos
    }

    /// Checks that an input size can be embedded.
    pub fn check_input(&self, height: usize, width: usize) -> Result<()> {
        let p = self.config.patch_size;
        if height < p || width < p {
            return Err(Error::InputSize {
                height,
                width,
                patch_size: p,
            });
        }
        Ok(())
    }
}

impl<B: VitOps> Vit<B> {
    /// Final-norm output of every token.
    ///
    /// # Shapes
    /// - input `[B, C, H, W]`, output `[B, T, D]`
    pub fn forward_tokens(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        let mut x = self.embed(x);
        for blk in &self.blocks {
            x = blk.forward(x, false);
        }
        B::vit_layer_norm(x, &self.norm)
    }

    /// The CLS token after the final LayerNorm (DINO's `forward`). The last block computes the
    /// CLS query and the CLS MLP row only; the result is identical.
    ///
    /// # Shapes
    /// - input `[B, C, H, W]`, output `[B, D]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let depth = self.blocks.len();
        let mut x = self.embed(x);
        for (i, blk) in self.blocks.iter().enumerate() {
            x = blk.forward(x, i + 1 == depth);
        }
        self.finish(x)
    }

    fn finish(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, _, d] = x.dims();
        B::vit_layer_norm(x.slice([0..b, 0..1, 0..d]), &self.norm).reshape([b, d])
    }

    /// Whether the CLS-only fast path applies to `target`: the target sits in the last block and
    /// is not `attn.qkv`, so only the CLS row of its output reaches the CLS embedding.
    pub fn cls_only_allowed(&self, target: TargetLayer) -> bool {
        target.block + 1 == self.blocks.len() && target.site != Site::Qkv
    }

    /// Checks that `target` is one of this model's layers and, with `cls_only`, that the
    /// CLS-only path is valid for it.
    ///
    /// # Errors
    /// [`Error::InvalidTarget`] naming the target and what is valid.
    pub fn check_target(&self, target: TargetLayer, cls_only: bool) -> Result<()> {
        let depth = self.blocks.len();
        if target.block >= depth {
            return Err(Error::InvalidTarget {
                target: target.to_string(),
                reason: format!(
                    "the model has {depth} blocks (blocks.0 to blocks.{})",
                    depth.saturating_sub(1)
                ),
            });
        }
        if cls_only && !self.cls_only_allowed(target) {
            return Err(Error::InvalidTarget {
                target: target.to_string(),
                reason: format!(
                    "the CLS-only path needs a target in the last block (blocks.{}) other than attn.qkv",
                    depth - 1
                ),
            });
        }
        Ok(())
    }

    /// The Linear layer at `target`.
    ///
    /// # Errors
    /// When the model has no such block ([`Error::InvalidTarget`]).
    pub fn linear(&self, target: TargetLayer) -> Result<&burn::nn::Linear<B>> {
        self.check_target(target, false)?;
        let blk = &self.blocks[target.block];
        Ok(match target.site {
            Site::Qkv => &blk.attn.qkv,
            Site::Proj => &blk.attn.proj,
            Site::Fc1 => &blk.mlp.fc1,
            Site::Fc2 => &blk.mlp.fc2,
        })
    }

    /// Runs the network up to the input of `target`. With `cls_only` (see
    /// [`Vit::cls_only_allowed`]) only the CLS row is carried from the target block's attention on.
    ///
    /// # Errors
    /// If `target.block` is out of range or `cls_only` is not allowed for `target`
    /// ([`Vit::check_target`]).
    pub fn tap(&self, x: Tensor<B, 4>, target: TargetLayer, cls_only: bool) -> Result<Tap<B>> {
        self.check_target(target, cls_only)?;
        let mut x = self.embed(x);
        for blk in &self.blocks[..target.block] {
            x = blk.forward(x, false);
        }
        let t = self.blocks[target.block].tap(x, target.site, cls_only);
        Ok(Tap {
            residual: t.residual,
            input: t.input,
            cls_only,
        })
    }

    /// Finishes the forward from a [`Tap`]'s residual and the target Linear's output `y`,
    /// returning the CLS embedding. Differentiable in `y` (and only `y` needs to be tracked).
    ///
    /// # Shapes
    /// - `residual`: as in the tap; `y`: `[B, T', out]`; output `[B, D]`
    ///
    /// # Errors
    /// When the model has no such block ([`Error::InvalidTarget`]).
    pub fn resume(
        &self,
        residual: Tensor<B, 3>,
        y: Tensor<B, 3>,
        target: TargetLayer,
    ) -> Result<Tensor<B, 2>> {
        self.check_target(target, false)?;
        let depth = self.blocks.len();
        let last = target.block + 1 == depth;
        let mut x = self.blocks[target.block].resume(residual, y, target.site, last);
        for (i, blk) in self.blocks.iter().enumerate().skip(target.block + 1) {
            x = blk.forward(x, i + 1 == depth);
        }
        Ok(self.finish(x))
    }
}
