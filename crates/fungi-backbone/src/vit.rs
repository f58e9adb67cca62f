//! The Vision Transformer (DINO v1 `VisionTransformer`, DINOv2 `DinoVisionTransformer`).

use burn::module::Param;
use burn::prelude::*;

use crate::attention::Attention;
use crate::block::{Block, LayerScale};
use crate::config::VitConfig;
use crate::error::{Error, Result};
use crate::family::{Pool, PosPrefix};
use crate::layer_norm::LayerNorm;
use crate::mlp::Mlp;
use crate::ops::VitOps;
use crate::patch_embed::PatchEmbed;
use crate::pos_embed::interpolate_pos_embed;
use crate::target::{Site, TargetLayer};

/// A Vision Transformer: DINO / DINOv2, timm's `VisionTransformer` family, torchvision's and
/// Hugging Face's ViTs (their checkpoints are mapped onto these names, see [`crate::keys`]).
/// Field names are the DINO / timm state-dict keys.
#[derive(Module, Debug)]
pub struct Vit<B: Backend> {
    /// `[1, 1, D]` (absent with `class_token = false`).
    pub cls_token: Option<Param<Tensor<B, 3>>>,
    /// Register tokens `[1, R, D]` (DINOv2's `register_tokens`, timm's `reg_token`).
    pub reg_token: Option<Param<Tensor<B, 3>>>,
    /// `[1, P + M*M, D]` for the trained `M x M` grid and the `P` prefix tokens it covers.
    pub pos_embed: Param<Tensor<B, 3>>,
    /// Patch embedding.
    pub patch_embed: PatchEmbed<B>,
    /// LayerNorm after the position embedding (timm `pre_norm`, CLIP).
    pub norm_pre: Option<LayerNorm<B>>,
    /// Transformer blocks (`blocks.0` ...).
    pub blocks: Vec<Block<B>>,
    /// Final LayerNorm over the tokens (absent with timm's `fc_norm` or `final_norm = false`).
    pub norm: Option<LayerNorm<B>>,
    /// LayerNorm after pooling (timm `fc_norm`).
    pub fc_norm: Option<LayerNorm<B>>,
    /// Linear head kept as the embedding (`num_classes > 0`, e.g. CLIP's projection).
    pub head: Option<burn::nn::Linear<B>>,
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
        let eps = config.layer_norm_eps;
        let norm = |on: bool| on.then(|| LayerNorm::new(e, eps, device));
        let blocks = (0..config.depth)
            .map(|_| {
                let mut attn = Attention::new(e, config.num_heads, config.qkv_bias, device);
                if !config.proj_bias {
                    attn.proj.bias = None;
                }
                if config.qk_norm {
                    let hd = config.head_dim();
                    attn.q_norm = Some(LayerNorm::new(hd, eps, device));
                    attn.k_norm = Some(LayerNorm::new(hd, eps, device));
                }
                let mut mlp = Mlp::new(e, config.mlp_hidden_dim(), device);
                mlp.act = config.act_layer;
                if !config.proj_bias {
                    mlp.fc1.bias = None;
                    mlp.fc2.bias = None;
                }
                Block {
                    norm1: LayerNorm::new(e, eps, device),
                    attn,
                    ls1: ls(config.layer_scale),
                    norm2: LayerNorm::new(e, eps, device),
                    mlp,
                    ls2: ls(config.layer_scale),
                }
            })
            .collect();
        let mut patch_embed = PatchEmbed::new(config.in_chans, e, config.patch_size, device);
        if !config.patch_bias {
            patch_embed.proj.bias = None;
        }
        Self {
            cls_token: config
                .class_token
                .then(|| Param::from_tensor(Tensor::random([1, 1, e], normal, device))),
            reg_token: (config.reg_tokens > 0).then(|| {
                Param::from_tensor(Tensor::random([1, config.reg_tokens, e], normal, device))
            }),
            pos_embed: Param::from_tensor(Tensor::random(
                [1, config.pos_prefix_len() + g * g, e],
                normal,
                device,
            )),
            patch_embed,
            norm_pre: norm(config.pre_norm),
            blocks,
            norm: norm(config.final_norm),
            fc_norm: norm(config.fc_norm),
            head: (config.num_classes > 0)
                .then(|| crate::linear::linear(e, config.num_classes, true, device)),
            config: config.clone(),
        }
    }

    /// The device the parameters live on.
    pub fn device(&self) -> B::Device {
        self.pos_embed.val().device()
    }

    /// Token dimension `D` (timm's `embed_dim`); see [`Vit::out_dim`] for the embedding's.
    pub fn width(&self) -> usize {
        self.config.embed_dim
    }

    /// Dimension of the embedding [`Vit::forward`] returns (`num_classes` with a head).
    pub fn out_dim(&self) -> usize {
        self.config.out_dim()
    }

    /// Prefix tokens (class, registers) + patch tokens with the (interpolated) position
    /// embedding, then `norm_pre` if any.
    ///
    /// # Shapes
    /// - input `[B, C, H, W]`, output `[B, prefix + (H/P)(W/P), D]`
    pub fn embed(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, _, h, w] = x.dims();
        let c = &self.config;
        let p = c.patch_size;
        let d = c.embed_dim;
        let tokens = self.patch_embed.forward(x);
        let pos = interpolate_pos_embed(
            self.pos_embed.val(),
            c.pos_prefix_len(),
            h / p,
            w / p,
            h == w,
            c.interpolate_offset,
            c.interpolate_antialias,
        );
        let cls = self.cls_token.as_ref().map(|t| t.val().expand([b, 1, d]));
        let reg = self
            .reg_token
            .as_ref()
            .map(|t| t.val().expand([b, c.reg_tokens, d]));
        let x = match c.pos_prefix {
            PosPrefix::Cls => {
                // DINOv2 with registers: cat(cls, patches) + pos, registers after the class token.
                let x = match cls {
                    Some(cls) => Tensor::cat(vec![cls, tokens], 1),
                    None => tokens,
                } + pos;
                match reg {
                    None => x,
                    Some(reg) => {
                        let n = usize::from(c.class_token);
                        let t = x.dims()[1];
                        let head = x.clone().slice([0..b, 0..n, 0..d]);
                        let rest = x.slice([0..b, n..t, 0..d]);
                        Tensor::cat(vec![head, reg, rest], 1)
                    }
                }
            }
            PosPrefix::All => {
                let mut parts: Vec<_> = cls.into_iter().chain(reg).collect();
                parts.push(tokens);
                Tensor::cat(parts, 1) + pos
            }
            PosPrefix::None => {
                let mut parts: Vec<_> = cls.into_iter().chain(reg).collect();
                parts.push(tokens + pos);
                Tensor::cat(parts, 1)
            }
        };
        match &self.norm_pre {
            Some(n) => n.forward(x),
            None => x,
        }
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
        match &self.norm {
            Some(n) => B::vit_layer_norm(x, n),
            None => x,
        }
    }

    /// The embedding: DINO's `forward` (the CLS token after the final LayerNorm), timm's
    /// `model(x)` (pooled, `fc_norm`, head), torchvision's with `heads = Identity`, Hugging
    /// Face's `pooler_output` (Dinov2Model) / `last_hidden_state[:, 0]` (ViTModel). With token
    /// pooling the last block computes the CLS query and the CLS MLP row only; the result is
    /// identical.
    ///
    /// # Shapes
    /// - input `[B, C, H, W]`, output `[B, out_dim]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let depth = self.blocks.len();
        let cls_pool = self.cls_pooled();
        let mut x = self.embed(x);
        for (i, blk) in self.blocks.iter().enumerate() {
            x = blk.forward(x, cls_pool && i + 1 == depth);
        }
        self.finish(x)
    }

    /// Whether the embedding reads the class token only (token pooling).
    fn cls_pooled(&self) -> bool {
        self.config.global_pool == Pool::Token && self.config.class_token
    }

    /// Tokens after the blocks -> the embedding (`norm`, pooling, `fc_norm`, head).
    fn finish(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, t, d] = x.dims();
        let norm = |x: Tensor<B, 3>| match &self.norm {
            Some(n) => B::vit_layer_norm(x, n),
            None => x,
        };
        let pooled = match self.config.global_pool {
            // The class token is row 0; the norm is per token, so only that row is normalised.
            Pool::Token => norm(x.slice([0..b, 0..1, 0..d])).reshape([b, d]),
            pool => {
                let x = norm(x);
                let p = self.config.num_prefix_tokens().min(t);
                let patches = x.slice([0..b, p..t, 0..d]);
                match pool {
                    Pool::Avg => patches.mean_dim(1).reshape([b, d]),
                    Pool::Max => patches.max_dim(1).reshape([b, d]),
                    _ => (patches.clone().max_dim(1) + patches.mean_dim(1))
                        .mul_scalar(0.5)
                        .reshape([b, d]),
                }
            }
        };
        let pooled = match &self.fc_norm {
            Some(n) => n.forward(pooled),
            None => pooled,
        };
        match &self.head {
            Some(h) => h.forward(pooled),
            None => pooled,
        }
    }

    /// Whether the CLS-only fast path applies to `target`: the embedding is the class token
    /// (token pooling) and the target sits in the last block and is not `attn.qkv`, so only the
    /// CLS row of its output reaches the embedding.
    pub fn cls_only_allowed(&self, target: TargetLayer) -> bool {
        self.cls_pooled() && target.block + 1 == self.blocks.len() && target.site != Site::Qkv
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
        let mut x =
            self.blocks[target.block].resume(residual, y, target.site, last && self.cls_pooled());
        let cls_pool = self.cls_pooled();
        for (i, blk) in self.blocks.iter().enumerate().skip(target.block + 1) {
            x = blk.forward(x, cls_pool && i + 1 == depth);
        }
        Ok(self.finish(x))
    }

    /// Finishes the forward from a [`Tap`] taken with `cls_only = false`, returning **every**
    /// token after the final norm (what [`Vit::forward_tokens`] returns). Differentiable in `y`.
    ///
    /// # Shapes
    /// - `residual`: as in the tap; `y`: `[B, T, out]`; output `[B, T, D]`
    ///
    /// # Errors
    /// When the model has no such block ([`Error::InvalidTarget`]).
    pub fn resume_tokens(
        &self,
        residual: Tensor<B, 3>,
        y: Tensor<B, 3>,
        target: TargetLayer,
    ) -> Result<Tensor<B, 3>> {
        self.check_target(target, false)?;
        let mut x = self.blocks[target.block].resume(residual, y, target.site, false);
        for blk in self.blocks.iter().skip(target.block + 1) {
            x = blk.forward(x, false);
        }
        Ok(match &self.norm {
            Some(n) => B::vit_layer_norm(x, n),
            None => x,
        })
    }
}
