//! Weights straight from an exported ONNX graph (`--weights model.onnx`), read with burn's ONNX
//! IR crate (`onnx-ir`, its protobuf bindings).
//!
//! Exporters keep most parameters as named initializers (`blocks.0.norm1.weight`,
//! `backbone.embeddings.cls_token`) but store Linear weights as anonymous `MatMul` operands
//! (`onnx::MatMul_1234`, `[in, out]`), and fold a position embedding that the graph
//! interpolates into anonymous pieces. Those are named by the graph's structure:
//! - a `MatMul` (or `Gemm`) operand takes the module path of its node
//!   (`/backbone/encoder/layer.0/attention/attention/query/MatMul` ->
//!   `backbone.encoder.layer.0.attention.attention.query.weight`), transposed to PyTorch's
//!   `[out, in]`;
//! - with no named position embedding, an anonymous `[1, 1, D]` operand of a `Concat` (the
//!   class position) and an anonymous `[1, M*M, D]` operand of a `Reshape` (the grid) are joined
//!   into one `[1, 1 + M*M, D]` position embedding, named as the checkpoint's other keys say
//!   (`embeddings.position_embeddings`, `pos_embed`).
//!
//! When some keys sit under `backbone.` (a backbone inside a larger exported model, such as a
//! saliency decoder on a DINOv2), only those are kept.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use protobuf::Message;

use crate::error::{Error, Result};
use crate::weights::{RawTensor, StateDict};

fn format_err(path: &Path, reason: impl ToString) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        format: "ONNX",
        reason: reason.to_string(),
    }
}

/// A tensor's shape and values (or why they cannot be read).
type Values = (Vec<usize>, std::result::Result<Vec<f32>, String>);

/// ONNX `TensorProto.DataType` values we read.
const FLOAT: i32 = 1;
const FLOAT16: i32 = 10;
const DOUBLE: i32 = 11;
const BFLOAT16: i32 = 16;

fn tensor_values(t: &onnx_ir::TensorProto, path: &Path) -> Result<Values> {
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            format_err(
                path,
                format!("tensor `{}` has a negative dimension", t.name),
            )
        })?;
    let n: usize = shape.iter().product();
    if t.data_location.value() == 1 {
        return Err(format_err(
            path,
            format!(
                "tensor `{}` keeps its data in an external file; re-export with the weights inside the .onnx (save_as_external_data=False)",
                t.name
            ),
        ));
    }
    let raw = &t.raw_data;
    let data = match t.data_type {
        FLOAT if !raw.is_empty() => Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect::<Vec<_>>()),
        FLOAT => Ok(t.float_data.clone()),
        DOUBLE if !raw.is_empty() => Ok(raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect()),
        DOUBLE => Ok(t.double_data.iter().map(|&v| v as f32).collect()),
        FLOAT16 if !raw.is_empty() => Ok(raw
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()),
        // 16-bit floats without raw data sit in int32_data, one per element.
        FLOAT16 => Ok(t
            .int32_data
            .iter()
            .map(|&v| half::f16::from_bits(v as u16).to_f32())
            .collect()),
        BFLOAT16 if !raw.is_empty() => Ok(raw
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()),
        BFLOAT16 => Ok(t
            .int32_data
            .iter()
            .map(|&v| half::bf16::from_bits(v as u16).to_f32())
            .collect()),
        other => Err(format!("ONNX data type {other}")),
    };
    if let Ok(v) = &data {
        if v.len() != n {
            return Err(format_err(
                path,
                format!(
                    "tensor `{}`: {} values for shape {shape:?} ({n} expected)",
                    t.name,
                    v.len()
                ),
            ));
        }
    }
    Ok((shape, data))
}

/// `/a/b.0/c/MatMul` -> `a.b.0.c` (exporters may also repeat a container's name:
/// `/blocks/blocks.0/attn` -> `blocks.0.attn`).
fn module_path(node_name: &str) -> Option<String> {
    let parts: Vec<&str> = node_name.trim_matches('/').split('/').collect();
    if parts.len() < 2 {
        return None;
    }
    let scope = &parts[..parts.len() - 1];
    let mut out: Vec<&str> = Vec::new();
    for (i, p) in scope.iter().enumerate() {
        let repeated = scope
            .get(i + 1)
            .is_some_and(|next| next.starts_with(&format!("{p}.")));
        if !repeated {
            out.push(p);
        }
    }
    Some(out.join("."))
}

fn transpose(shape: &[usize], v: &[f32]) -> (Vec<usize>, Vec<f32>) {
    let (r, c) = (shape[0], shape[1]);
    let mut t = vec![0f32; v.len()];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = v[i * c + j];
        }
    }
    (vec![c, r], t)
}

/// Exporter-made names (`onnx::MatMul_12`, `/blocks/blocks.0/attn/Constant_output_0`) rather
/// than a module's parameter path.
fn is_anonymous(name: &str) -> bool {
    name.starts_with("onnx::") || name.contains('/') || name.contains(':') || !name.contains('.')
}

impl StateDict {
    /// Reads the parameters of an exported ONNX model (see the module docs of `onnx`).
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Format`] naming the file and what is wrong with it.
    pub fn read_onnx(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let model = onnx_ir::ModelProto::parse_from_tokio_bytes(&bytes::Bytes::from(bytes))
            .map_err(|e| format_err(path, e))?;
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| format_err(path, "the model has no graph"))?;
        let mut values: HashMap<String, Values> = HashMap::new();
        for t in &graph.initializer {
            values.insert(t.name.clone(), tensor_values(t, path)?);
        }
        // Constant nodes (some exporters keep folded weights there).
        for n in &graph.node {
            if n.op_type == "Constant" {
                if let (Some(out), Some(t)) = (
                    n.output.first(),
                    n.attribute
                        .iter()
                        .find(|a| a.name == "value")
                        .and_then(|a| a.t.as_ref()),
                ) {
                    values.insert(out.clone(), tensor_values(t, path)?);
                }
            }
        }
        let mut tensors: BTreeMap<String, RawTensor> = BTreeMap::new();
        let mut used: std::collections::HashSet<String> = std::collections::HashSet::new();
        // Named parameters.
        for (name, (shape, data)) in &values {
            if !is_anonymous(name) {
                tensors.insert(
                    name.clone(),
                    RawTensor {
                        shape: shape.clone(),
                        data: data.clone(),
                    },
                );
                used.insert(name.clone());
            }
        }
        // Anonymous Linear weights, named by their node.
        let mut consumers: HashMap<&str, Vec<&str>> = HashMap::new();
        for n in &graph.node {
            for i in &n.input {
                consumers
                    .entry(i.as_str())
                    .or_default()
                    .push(n.op_type.as_str());
            }
            let linear = n.op_type == "MatMul" || n.op_type == "Gemm";
            if !linear {
                continue;
            }
            let Some(w) = n.input.get(1) else { continue };
            let Some((shape, data)) = values.get(w) else {
                continue;
            };
            if !is_anonymous(w) || shape.len() != 2 {
                continue;
            }
            let Some(module) = module_path(&n.name) else {
                continue;
            };
            let trans_b =
                n.op_type == "Gemm" && n.attribute.iter().any(|a| a.name == "transB" && a.i == 1);
            let (shape, data) = match data {
                Ok(v) if !trans_b => {
                    let (s, t) = transpose(shape, v);
                    (s, Ok(t))
                }
                other => (shape.clone(), other.clone()),
            };
            tensors.insert(format!("{module}.weight"), RawTensor { shape, data });
            used.insert(w.clone());
        }
        Self::join_position_embedding(&values, &used, &consumers, &mut tensors);
        // A backbone inside a larger model: keep it only.
        if tensors.keys().any(|k| k.starts_with("backbone.")) {
            tensors = tensors
                .into_iter()
                .filter_map(|(k, v)| k.strip_prefix("backbone.").map(|k| (k.to_string(), v)))
                .collect();
        }
        if tensors.is_empty() {
            return Err(format_err(
                path,
                "no parameters found in the graph's initializers",
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
        })
    }

    /// A position embedding folded into an anonymous class position (`[1, 1, D]`, into a
    /// `Concat`) and grid (`[1, M*M, D]`, into a `Reshape`) is joined back, if the graph has no
    /// named one.
    fn join_position_embedding(
        values: &HashMap<String, Values>,
        used: &std::collections::HashSet<String>,
        consumers: &HashMap<&str, Vec<&str>>,
        tensors: &mut BTreeMap<String, RawTensor>,
    ) {
        const NAMES: [&str; 4] = [
            "pos_embed",
            "embeddings.position_embeddings",
            "encoder.pos_embedding",
            "backbone.embeddings.position_embeddings",
        ];
        if tensors.keys().any(|k| {
            NAMES
                .iter()
                .any(|n| k == n || k.ends_with(&format!(".{n}")))
        }) {
            return;
        }
        let feeds = |name: &str, op: &str| consumers.get(name).is_some_and(|c| c.contains(&op));
        let mut cls = None;
        let mut grid = None;
        let mut names: Vec<&String> = values
            .keys()
            .filter(|k| is_anonymous(k) && !used.contains(*k))
            .collect();
        names.sort();
        for name in names {
            let (shape, data) = &values[name];
            let Ok(v) = data else { continue };
            if shape.len() != 3 || shape[0] != 1 {
                continue;
            }
            if shape[1] == 1 && feeds(name, "Concat") && cls.is_none() {
                cls = Some((shape[2], v));
            } else if shape[1] > 1 && feeds(name, "Reshape") && grid.is_none() {
                let m = (shape[1] as f64).sqrt() as usize;
                if m * m == shape[1] {
                    grid = Some((shape[1], shape[2], v));
                }
            }
        }
        let (Some((d1, c)), Some((n, d2, g))) = (cls, grid) else {
            return;
        };
        if d1 != d2 {
            return;
        }
        // Named after the class token's key: `<p>embeddings.cls_token` (Hugging Face) ->
        // `<p>embeddings.position_embeddings`, `<p>class_token` (torchvision) ->
        // `<p>encoder.pos_embedding`, `<p>cls_token` (DINO / timm) -> `<p>pos_embed`.
        let cls_key = tensors
            .keys()
            .find(|k| k.ends_with("cls_token") || k.ends_with("class_token"))
            .cloned()
            .unwrap_or_else(|| "cls_token".into());
        let key = if let Some(p) = cls_key.strip_suffix("embeddings.cls_token") {
            format!("{p}embeddings.position_embeddings")
        } else if let Some(p) = cls_key.strip_suffix("class_token") {
            format!("{p}encoder.pos_embedding")
        } else {
            format!(
                "{}pos_embed",
                cls_key.strip_suffix("cls_token").unwrap_or("")
            )
        };
        let mut data = c.clone();
        data.extend_from_slice(g);
        tensors.insert(
            key,
            RawTensor {
                shape: vec![1, 1 + n, d1],
                data: Ok(data),
            },
        );
    }
}
