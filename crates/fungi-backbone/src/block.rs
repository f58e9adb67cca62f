//! Pre-norm transformer block (DINO `Block`, DINOv2 `NestedTensorBlock` with LayerScale).

use burn::module::Param;
use burn::prelude::*;

use crate::attention::Attention;
use crate::layer_norm::LayerNorm;
use crate::mlp::{activate, Mlp};
use crate::ops::{LinearEpilogue, VitOps};
use crate::target::Site;

/// DINOv2's LayerScale: a per-channel scale `gamma`.
#[derive(Module, Debug)]
pub struct LayerScale<B: Backend> {
    /// Scale `[D]`.
    pub gamma: Param<Tensor<B, 1>>,
}

impl<B: Backend> LayerScale<B> {
    /// # Shapes
    /// - input `[B, T, D]`, output the same.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        x * self.gamma.val().unsqueeze()
    }
}

/// `x = x + ls1(attn(norm1(x))); x = x + ls2(mlp(norm2(x)))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Pre-attention LayerNorm.
    pub norm1: LayerNorm<B>,
    /// Self-attention.
    pub attn: Attention<B>,
    /// DINOv2 LayerScale after attention (absent in DINO v1).
    pub ls1: Option<LayerScale<B>>,
    /// Pre-MLP LayerNorm.
    pub norm2: LayerNorm<B>,
    /// MLP.
    pub mlp: Mlp<B>,
    /// DINOv2 LayerScale after the MLP.
    pub ls2: Option<LayerScale<B>>,
}

/// The state of a block just before one of its Linear layers.
#[derive(Debug, Clone)]
pub struct BlockTap<B: Backend> {
    /// Residual stream needed to finish the block (`x` before the attention branch for
    /// `attn.*`, `x + attn` for `mlp.*`).
    pub residual: Tensor<B, 3>,
    /// Input of the tapped Linear.
    pub input: Tensor<B, 3>,
}

/// `residual + ls(·)` as a Linear epilogue.
fn residual_epilogue<B: Backend>(
    residual: Tensor<B, 3>,
    ls: &Option<LayerScale<B>>,
) -> LinearEpilogue<B> {
    LinearEpilogue::Residual {
        residual,
        gamma: ls.as_ref().map(|ls| ls.gamma.val()),
    }
}

fn scale<B: Backend>(ls: &Option<LayerScale<B>>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    match ls {
        Some(ls) => ls.forward(x),
        None => x,
    }
}

fn cls_rows<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, _, d] = x.dims();
    x.slice([0..b, 0..1, 0..d])
}

impl<B: VitOps> Block<B> {
    /// Full block. With `cls_only`, only the CLS token is carried out of the block
    /// (valid for the last block when only the CLS output is used).
    ///
    /// # Shapes
    /// - input `[B, T, D]`, output `[B, T, D]` (`[B, 1, D]` with `cls_only`).
    pub fn forward(&self, x: Tensor<B, 3>, cls_only: bool) -> Tensor<B, 3> {
        let a = self.attention(x.clone(), cls_only);
        let x = if cls_only { cls_rows(x) } else { x };
        let x = self.proj_residual(x, a);
        self.mlp_half(x)
    }

    /// `norm1`, `qkv` and the attention core: the input of `attn.proj`.
    fn attention(&self, x: Tensor<B, 3>, cls_only: bool) -> Tensor<B, 3> {
        let h = B::vit_layer_norm(x, &self.norm1);
        let qkv = B::vit_linear(h, &self.attn.qkv, LinearEpilogue::None);
        self.attn.core(qkv, cls_only)
    }

    /// `x + ls1(proj(a))`, the residual add fused into `attn.proj`.
    fn proj_residual(&self, x: Tensor<B, 3>, a: Tensor<B, 3>) -> Tensor<B, 3> {
        B::vit_linear(a, &self.attn.proj, residual_epilogue(x, &self.ls1))
    }

    /// `x + ls2(mlp(norm2(x)))`.
    fn mlp_half(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = B::vit_layer_norm(x.clone(), &self.norm2);
        let g = self.mlp.hidden(h);
        B::vit_linear(g, &self.mlp.fc2, residual_epilogue(x, &self.ls2))
    }

    /// `x + ls1(y)` (y: the output of `attn.proj`) then the MLP half.
    fn after_proj(&self, x: Tensor<B, 3>, y: Tensor<B, 3>) -> Tensor<B, 3> {
        self.mlp_half(x + scale(&self.ls1, y))
    }

    /// Runs the block up to the input of `site`.
    ///
    /// `cls_only` keeps only the CLS token from the attention output on; it is ignored for
    /// `attn.qkv`, whose output feeds every token's keys and values, so every token is kept
    /// there ([`crate::Vit::tap`] refuses that combination before it gets here).
    pub fn tap(&self, x: Tensor<B, 3>, site: Site, cls_only: bool) -> BlockTap<B> {
        if site == Site::Qkv {
            return BlockTap {
                input: B::vit_layer_norm(x.clone(), &self.norm1),
                residual: x,
            };
        }
        let a = self.attention(x.clone(), cls_only);
        let x = if cls_only { cls_rows(x) } else { x };
        if site == Site::Proj {
            return BlockTap {
                residual: x,
                input: a,
            };
        }
        let x2 = self.proj_residual(x, a);
        let h2 = B::vit_layer_norm(x2.clone(), &self.norm2);
        if site == Site::Fc1 {
            return BlockTap {
                residual: x2,
                input: h2,
            };
        }
        let g = self.mlp.hidden(h2);
        BlockTap {
            residual: x2,
            input: g,
        }
    }

    /// Finishes the block from the residual of [`Block::tap`] and the output `y` of the tapped
    /// Linear. `cls_only` only matters for `attn.qkv` (computes the CLS query only).
    pub fn resume(
        &self,
        residual: Tensor<B, 3>,
        y: Tensor<B, 3>,
        site: Site,
        cls_only: bool,
    ) -> Tensor<B, 3> {
        match site {
            Site::Qkv => {
                let a = self.attn.core(y, cls_only);
                let x = if cls_only {
                    cls_rows(residual)
                } else {
                    residual
                };
                let x = self.proj_residual(x, a);
                self.mlp_half(x)
            }
            Site::Proj => self.after_proj(residual, y),
            Site::Fc1 => B::vit_linear(
                activate(self.mlp.act, y),
                &self.mlp.fc2,
                residual_epilogue(residual, &self.ls2),
            ),
            Site::Fc2 => residual + scale(&self.ls2, y),
        }
    }
}
