//! Reading PyTorch state dicts (`.pth` zip/legacy pickles, `.safetensors`) and loading them
//! strictly into a [`Vit`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::conv::Conv2dConfig;
use burn::nn::Linear;
use burn::prelude::*;

use crate::attention::Attention;
use crate::block::{Block, LayerScale};
use crate::config::VitConfig;
use crate::error::{Error, KeyProblem, Result};
use crate::layer_norm::LayerNorm;
use crate::mlp::Mlp;
use crate::patch_embed::PatchEmbed;
use crate::vit::Vit;

/// One tensor of a state dict, up-cast to `f32` (or the dtype we could not read).
#[derive(Debug, Clone)]
pub struct RawTensor {
    /// PyTorch shape.
    pub shape: Vec<usize>,
    /// Row-major values; `Err(dtype)` when the dtype is not a float type we read.
    pub data: std::result::Result<Vec<f32>, String>,
}

/// A state dict: key -> tensor, plus the file it came from (for error messages).
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    /// File the tensors were read from.
    pub path: PathBuf,
    /// Tensors by key.
    pub tensors: BTreeMap<String, RawTensor>,
}

fn format_err(path: &Path, format: &'static str, reason: impl ToString) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        format,
        reason: reason.to_string(),
    }
}

impl StateDict {
    /// Reads `.safetensors`, `.pth` / `.pt` / `.bin` (PyTorch `torch.save` of a state dict) or
    /// `.onnx` (the initializers of an exported graph, see `StateDict::read_onnx`).
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "safetensors" => Self::read_safetensors(path),
            "pth" | "pt" | "bin" | "ckpt" => Self::read_pytorch(path),
            "onnx" => Self::read_onnx(path),
            _ => Err(Error::UnsupportedFormat {
                path: path.to_path_buf(),
            }),
        }
    }

    /// Reads a safetensors file (F32, F16, BF16 and F64 are up-cast to f32).
    pub fn read_safetensors(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_safetensors_bytes(&bytes, path)
    }

    /// Parses safetensors bytes; `path` is only used in messages.
    pub fn from_safetensors_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        use safetensors::Dtype;
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| format_err(path, "safetensors", e))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let raw = view.data();
            let data = match view.dtype() {
                Dtype::F32 => Ok(raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()),
                Dtype::F16 => Ok(raw
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect()),
                Dtype::BF16 => Ok(raw
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect()),
                Dtype::F64 => Ok(raw
                    .chunks_exact(8)
                    .map(|c| {
                        f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                    })
                    .collect()),
                other => Err(format!("{other:?}")),
            };
            tensors.insert(
                name,
                RawTensor {
                    shape: view.shape().to_vec(),
                    data,
                },
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
        })
    }

    /// Reads a PyTorch checkpoint holding a plain state dict (DINO's released backbones).
    pub fn read_pytorch(path: &Path) -> Result<Self> {
        use burn::tensor::DType;
        if let Err(source) = std::fs::metadata(path) {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source,
            });
        }
        let reader = burn_store::pytorch::PytorchReader::new(path)
            .map_err(|e| format_err(path, "PyTorch .pth", e))?;
        let mut tensors = BTreeMap::new();
        for (name, snap) in reader.into_tensors() {
            let shape = snap.shape.to_vec();
            let data = match snap.dtype {
                DType::F32 | DType::F16 | DType::BF16 | DType::F64 => {
                    let d = snap.to_data().map_err(|e| {
                        format_err(path, "PyTorch .pth", format!("tensor `{name}`: {e:?}"))
                    })?;
                    d.convert::<f32>()
                        .into_vec::<f32>()
                        .map_err(|e| format!("{e:?}"))
                }
                other => Err(format!("{other:?}")),
            };
            tensors.insert(name, RawTensor { shape, data });
        }
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
        })
    }

    /// The tensors whose keys start with `prefix`, without it.
    ///
    /// # Errors
    /// [`Error::PrefixNotFound`] when no key starts with it (naming the keys' beginnings).
    pub fn select_prefix(&self, prefix: &str) -> Result<Self> {
        let tensors: BTreeMap<String, RawTensor> = self
            .tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix(prefix).map(|k| (k.to_string(), t.clone())))
            .collect();
        if tensors.is_empty() {
            let mut found: Vec<String> = self
                .tensors
                .keys()
                .map(|k| k.splitn(3, '.').take(2).collect::<Vec<_>>().join(".") + ".")
                .collect();
            found.dedup();
            found.truncate(20);
            return Err(Error::PrefixNotFound {
                path: self.path.clone(),
                prefix: prefix.to_string(),
                found,
            });
        }
        Ok(Self {
            path: self.path.clone(),
            tensors,
        })
    }

    /// Checks the keys, shapes and dtypes against `config`; returns every problem found.
    pub fn check(&self, config: &VitConfig) -> Vec<KeyProblem> {
        let expected = config.state_dict_shapes();
        let mut problems = Vec::new();
        for (key, shape) in &expected {
            match self.tensors.get(key) {
                None => problems.push(KeyProblem::Missing {
                    key: key.clone(),
                    expected: shape.clone(),
                }),
                Some(t) if &t.shape != shape => problems.push(KeyProblem::Shape {
                    key: key.clone(),
                    expected: shape.clone(),
                    found: t.shape.clone(),
                }),
                Some(RawTensor { data: Err(dt), .. }) => problems.push(KeyProblem::DType {
                    key: key.clone(),
                    found: dt.clone(),
                }),
                Some(RawTensor { data: Ok(v), .. }) => {
                    let count = v.iter().filter(|x| !x.is_finite()).count();
                    if count > 0 {
                        let first = v.iter().position(|x| !x.is_finite()).unwrap_or(0);
                        problems.push(KeyProblem::NonFinite {
                            key: key.clone(),
                            count,
                            first,
                            value: v[first],
                        });
                    }
                }
            }
        }
        let known: std::collections::HashSet<&str> =
            expected.iter().map(|(k, _)| k.as_str()).collect();
        for (key, t) in &self.tensors {
            let projector = config.state_dict_prefix.is_some()
                && config.num_classes == 0
                && config.layout == crate::Layout::Timm
                && key.starts_with("head.");
            if !known.contains(key.as_str())
                && !config.ignored_keys().contains(&key.as_str())
                && !projector
            {
                problems.push(KeyProblem::Unexpected {
                    key: key.clone(),
                    found: t.shape.clone(),
                });
            }
        }
        problems
    }

    /// Deterministic random weights for `config` (every key of
    /// [`VitConfig::state_dict_shapes`], in the model's names), the same bytes on every machine
    /// and backend: for device checks and benchmarks that need identical weights on two
    /// machines without carrying a checkpoint. Values come from SplitMix64 seeded by
    /// FNV-1a(`seed`, key): LayerNorm weights `1 + U(-0.1, 0.1)`, LayerScale `0.1 + U(-0.05, 0.05)`,
    /// other vectors `U(-0.02, 0.02)`, matrices and embeddings uniform with standard deviation
    /// 0.02 (timm's init scale).
    pub fn synthetic(config: &VitConfig, seed: u64) -> Self {
        let mut tensors = BTreeMap::new();
        for (key, shape) in config.state_dict_shapes() {
            let n: usize = shape.iter().product();
            let (centre, half) = if shape.len() > 1 {
                (0.0, 0.02 * 3f64.sqrt())
            } else if key.ends_with(".gamma") {
                (0.1, 0.05)
            } else if key.ends_with(".weight") {
                (1.0, 0.1)
            } else {
                (0.0, 0.02)
            };
            // FNV-1a over the seed and the key: one independent stream per tensor.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in seed.to_le_bytes().iter().chain(key.as_bytes()) {
                h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
            let data = (0..n)
                .map(|_| {
                    // SplitMix64.
                    h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let mut z = h;
                    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                    z ^= z >> 31;
                    let u = (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
                    (centre + half * u) as f32
                })
                .collect();
            tensors.insert(
                key,
                RawTensor {
                    shape,
                    data: Ok(data),
                },
            );
        }
        Self {
            path: PathBuf::from(format!("synthetic:{seed}")),
            tensors,
        }
    }

    /// Writes the tensors as an F32 safetensors file.
    pub fn write_safetensors(&self, path: &Path) -> Result<()> {
        let bufs: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .filter_map(|(k, t)| {
                let d = t.data.as_ref().ok()?;
                Some((
                    k.clone(),
                    t.shape.clone(),
                    d.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ))
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bufs
            .iter()
            .map(|(k, s, b)| {
                (
                    k.clone(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                        .expect("consistent sizes"),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, path)
            .map_err(|e| format_err(path, "safetensors", e))
    }
}

struct Loader<'a, B: Backend> {
    sd: &'a StateDict,
    device: &'a B::Device,
}

impl<B: Backend> Loader<'_, B> {
    /// Values and shape of a key that [`StateDict::check`] has found present and readable.
    fn data(&self, key: &str) -> (Vec<f32>, Vec<usize>) {
        match self.sd.tensors.get(key) {
            Some(RawTensor { data: Ok(v), shape }) => (v.clone(), shape.clone()),
            // Unreachable after `check`; an empty tensor then fails loudly in Burn's shape check.
            _ => (Vec::new(), vec![0]),
        }
    }
    fn tensor<const D: usize>(&self, key: &str) -> Param<Tensor<B, D>> {
        let (v, s) = self.data(key);
        Param::from_tensor(Tensor::from_data(TensorData::new(v, s), self.device))
    }
    /// PyTorch `[out, in]` -> Burn `[in, out]`.
    fn linear(&self, prefix: &str, bias: bool) -> Linear<B> {
        let (v, s) = self.data(&format!("{prefix}.weight"));
        let (o, i) = (s[0], s[1]);
        let mut t = vec![0f32; v.len()];
        for r in 0..o {
            for c in 0..i {
                t[c * o + r] = v[r * i + c];
            }
        }
        Linear {
            weight: Param::from_tensor(Tensor::from_data(TensorData::new(t, [i, o]), self.device)),
            bias: bias.then(|| self.tensor(&format!("{prefix}.bias"))),
        }
    }
    fn norm(&self, prefix: &str, eps: f64) -> LayerNorm<B> {
        LayerNorm {
            weight: self.tensor(&format!("{prefix}.weight")),
            bias: self.tensor(&format!("{prefix}.bias")),
            eps,
        }
    }
}

impl<B: Backend> Vit<B> {
    /// Builds a model from a state dict, strictly: every expected key must be present with the
    /// right shape and a float dtype, and no unknown key may be present (except
    /// [`VitConfig::ignored_keys`]). Keys are read in the config's [`crate::Layout`]
    /// (torchvision / Hugging Face names are mapped, see [`crate::keys`]); problems name the
    /// checkpoint's own keys.
    ///
    /// # Errors
    /// [`Error::Mismatch`] listing every missing/unexpected/mis-shaped/mis-typed key.
    pub fn from_state_dict(config: &VitConfig, sd: &StateDict, device: &B::Device) -> Result<Self> {
        config.validate(None)?;
        let selected;
        let sd = match &config.state_dict_prefix {
            Some(prefix) => {
                selected = sd.select_prefix(prefix)?;
                &selected
            }
            None => sd,
        };
        let sd = &crate::keys::to_model_names(config.layout, sd);
        let problems = sd.check(config);
        if !problems.is_empty() {
            let layout = config.layout;
            let problems = problems
                .into_iter()
                .map(|p| p.renamed(|k| crate::keys::checkpoint_name(layout, k)))
                .collect();
            return Err(Error::Mismatch {
                path: sd.path.clone(),
                problems,
            });
        }
        let l = Loader::<B> { sd, device };
        let eps = config.layer_norm_eps;
        let mut patch_embed = PatchEmbed {
            proj: Conv2dConfig::new(
                [config.in_chans, config.embed_dim],
                [config.patch_size, config.patch_size],
            )
            .with_stride([config.patch_size, config.patch_size])
            .with_bias(config.patch_bias)
            .with_initializer(burn::nn::Initializer::Zeros)
            .init(device),
        };
        patch_embed.proj.weight = l.tensor("patch_embed.proj.weight");
        patch_embed.proj.bias = config.patch_bias.then(|| l.tensor("patch_embed.proj.bias"));
        let ls = |key: String| {
            config.layer_scale.then(|| LayerScale {
                gamma: l.tensor(&key),
            })
        };
        let blocks = (0..config.depth)
            .map(|i| {
                let b = format!("blocks.{i}");
                Block {
                    norm1: l.norm(&format!("{b}.norm1"), eps),
                    attn: Attention {
                        qkv: l.linear(&format!("{b}.attn.qkv"), config.qkv_bias),
                        proj: l.linear(&format!("{b}.attn.proj"), config.proj_bias),
                        q_norm: config
                            .qk_norm
                            .then(|| l.norm(&format!("{b}.attn.q_norm"), eps)),
                        k_norm: config
                            .qk_norm
                            .then(|| l.norm(&format!("{b}.attn.k_norm"), eps)),
                        num_heads: config.num_heads,
                        scale: (config.head_dim() as f64).powf(-0.5),
                    },
                    ls1: ls(format!("{b}.ls1.gamma")),
                    norm2: l.norm(&format!("{b}.norm2"), eps),
                    mlp: Mlp {
                        fc1: l.linear(&format!("{b}.mlp.fc1"), config.proj_bias),
                        fc2: l.linear(&format!("{b}.mlp.fc2"), config.proj_bias),
                        act: config.act_layer,
                    },
                    ls2: ls(format!("{b}.ls2.gamma")),
                }
            })
            .collect();
        Ok(Self {
            cls_token: config.class_token.then(|| l.tensor("cls_token")),
            reg_token: (config.reg_tokens > 0).then(|| l.tensor("reg_token")),
            pos_embed: l.tensor("pos_embed"),
            patch_embed,
            norm_pre: config.pre_norm.then(|| l.norm("norm_pre", eps)),
            blocks,
            norm: config.final_norm.then(|| l.norm("norm", eps)),
            fc_norm: config.fc_norm.then(|| l.norm("fc_norm", eps)),
            head: (config.num_classes > 0).then(|| l.linear("head", true)),
            config: config.clone(),
        })
    }

    /// Reads a weights file (`.pth`/`.pt` or `.safetensors`) and builds the model strictly.
    pub fn from_file(
        config: &VitConfig,
        path: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<Self> {
        let sd = StateDict::read(path)?;
        Self::from_state_dict(config, &sd, device)
    }

    /// The parameters as a PyTorch-layout state dict with the model's (DINO / timm) names
    /// (Linear weights transposed back to `[out, in]`).
    pub fn to_state_dict(&self) -> StateDict {
        let mut tensors = BTreeMap::new();
        let mut put = |k: String, shape: Vec<usize>, v: Vec<f32>| {
            tensors.insert(k, RawTensor { shape, data: Ok(v) });
        };
        fn vals<B: Backend, const D: usize>(t: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
            let s = t.dims().to_vec();
            (s, t.into_data().convert::<f32>().into_vec().expect("f32"))
        }
        let lin = |k: String, l: &Linear<B>, put: &mut dyn FnMut(String, Vec<usize>, Vec<f32>)| {
            let (s, v) = vals(l.weight.val().transpose());
            put(format!("{k}.weight"), s, v);
            if let Some(b) = &l.bias {
                let (s, v) = vals(b.val());
                put(format!("{k}.bias"), s, v);
            }
        };
        if let Some(t) = &self.cls_token {
            let (s, v) = vals(t.val());
            put("cls_token".into(), s, v);
        }
        if let Some(t) = &self.reg_token {
            let (s, v) = vals(t.val());
            put("reg_token".into(), s, v);
        }
        let (s, v) = vals(self.pos_embed.val());
        put("pos_embed".into(), s, v);
        let (s, v) = vals(self.patch_embed.proj.weight.val());
        put("patch_embed.proj.weight".into(), s, v);
        if let Some(b) = &self.patch_embed.proj.bias {
            let (s, v) = vals(b.val());
            put("patch_embed.proj.bias".into(), s, v);
        }
        let norm =
            |k: String, n: &LayerNorm<B>, put: &mut dyn FnMut(String, Vec<usize>, Vec<f32>)| {
                let (s, v) = vals(n.weight.val());
                put(format!("{k}.weight"), s, v);
                let (s, v) = vals(n.bias.val());
                put(format!("{k}.bias"), s, v);
            };
        if let Some(n) = &self.norm_pre {
            norm("norm_pre".into(), n, &mut put);
        }
        for (i, blk) in self.blocks.iter().enumerate() {
            let b = format!("blocks.{i}");
            norm(format!("{b}.norm1"), &blk.norm1, &mut put);
            lin(format!("{b}.attn.qkv"), &blk.attn.qkv, &mut put);
            if let Some(n) = &blk.attn.q_norm {
                norm(format!("{b}.attn.q_norm"), n, &mut put);
            }
            if let Some(n) = &blk.attn.k_norm {
                norm(format!("{b}.attn.k_norm"), n, &mut put);
            }
            lin(format!("{b}.attn.proj"), &blk.attn.proj, &mut put);
            norm(format!("{b}.norm2"), &blk.norm2, &mut put);
            lin(format!("{b}.mlp.fc1"), &blk.mlp.fc1, &mut put);
            lin(format!("{b}.mlp.fc2"), &blk.mlp.fc2, &mut put);
            for (name, ls) in [("ls1", &blk.ls1), ("ls2", &blk.ls2)] {
                if let Some(ls) = ls {
                    let (s, v) = vals(ls.gamma.val());
                    put(format!("{b}.{name}.gamma"), s, v);
                }
            }
        }
        if let Some(n) = &self.norm {
            norm("norm".into(), n, &mut put);
        }
        if let Some(n) = &self.fc_norm {
            norm("fc_norm".into(), n, &mut put);
        }
        if let Some(h) = &self.head {
            lin("head".into(), h, &mut put);
        }
        StateDict {
            path: PathBuf::new(),
            tensors,
        }
    }
}
