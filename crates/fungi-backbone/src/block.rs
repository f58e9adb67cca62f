//! Pre-norm transformer block (DINO `Block`, DINOv2 `NestedTensorBlock` with LayerScale).

use burn::module::Param;
use burn::prelude::*;

use crate::attention::Attention;
use crate::layer_norm::LayerNorm;
use crate::mlp::{gelu_exact, Mlp};
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

impl<B: Backend> Block<B> {
    /// Full block. With `cls_only`, only the CLS token is carried out of the block
    /// (valid for the last block when only the CLS output is used).
    ///
    /// # Shapes
    /// - input `[B, T, D]`, output `[B, T, D]` (`[B, 1, D]` with `cls_only`).
    pub fn forward(&self, x: Tensor<B, 3>, cls_only: bool) -> Tensor<B, 3> {
        let y = self.attn.forward(self.norm1.forward(x.clone()), cls_only);
        let x = if cls_only { cls_rows(x) } else { x };
        self.after_proj(x, y)
    }

    /// `x + ls1(y)` then the MLP half.
    fn after_proj(&self, x: Tensor<B, 3>, y: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x + scale(&self.ls1, y);
        let m = self.mlp.forward(self.norm2.forward(x.clone()));
        x + scale(&self.ls2, m)
    }

    /// Runs the block up to the input of `site`.
    ///
    /// `cls_only` keeps only the CLS token from the attention output on (not allowed for
    /// `attn.qkv`, whose output feeds every token's keys and values).
    pub fn tap(&self, x: Tensor<B, 3>, site: Site, cls_only: bool) -> BlockTap<B> {
        assert!(
            !(cls_only && site == Site::Qkv),
            "cls_only cannot tap attn.qkv: every token's keys and values depend on it"
        );
        let h1 = self.norm1.forward(x.clone());
        if site == Site::Qkv {
            return BlockTap {
                residual: x,
                input: h1,
            };
        }
        let a = self.attn.core(self.attn.qkv.forward(h1), cls_only);
        let x = if cls_only { cls_rows(x) } else { x };
        if site == Site::Proj {
            return BlockTap {
                residual: x,
                input: a,
            };
        }
        let x2 = x + scale(&self.ls1, self.attn.proj.forward(a));
        let h2 = self.norm2.forward(x2.clone());
        if site == Site::Fc1 {
            return BlockTap {
                residual: x2,
                input: h2,
            };
        }
        let g = gelu_exact(self.mlp.fc1.forward(h2));
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
                self.after_proj(x, self.attn.proj.forward(a))
            }
            Site::Proj => self.after_proj(residual, y),
            Site::Fc1 => residual + scale(&self.ls2, self.mlp.fc2.forward(gelu_exact(y))),
            Site::Fc2 => residual + scale(&self.ls2, y),
        }
    }
}
