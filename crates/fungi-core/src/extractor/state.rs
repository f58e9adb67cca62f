//! State files of an extractor: what [`FungiExtractor::save_state`] writes (projection,
//! objectives' heads / negatives / prototypes, settings, fingerprints) and what
//! [`FungiExtractor::load_state`] accepts — all or nothing, refusing a state made for other
//! settings or weights, naming what differs. The file format is [`crate::state`]'s.

use std::collections::BTreeMap;
use std::path::Path;

use fungi_backbone::AutodiffVitOps;

use super::FungiExtractor;
use crate::error::{Error, Result};
use crate::objective::StateTensor;
use crate::projection::Projection;
use crate::state::{self, json_differences, Stored, STATE_FORMAT};
use crate::transform::EmbeddingTransform;

impl<B: AutodiffVitOps> FungiExtractor<B> {
    /// SHA-256 of the backbone's parameters (state-dict keys, shapes and `f32` values in key
    /// order): identifies the weights in state files, so a state made with other weights (whose
    /// SimCLR negatives or DeepCluster prototypes came from another model) is refused.
    /// Computed once.
    pub fn backbone_fingerprint(&self) -> String {
        self.backbone_fingerprint
            .get_or_init(|| state::backbone_fingerprint(self.engine.inner()))
            .clone()
    }

    /// The state file's bytes (see [`FungiExtractor::save_state`]): byte-identical for identical
    /// extractors, so runs can compare states by hash. `path` names the file in errors.
    pub fn state_bytes(&self, path: &Path) -> Result<Vec<u8>> {
        let mut tensors = BTreeMap::new();
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), STATE_FORMAT.to_string());
        meta.insert("config".to_string(), self.state_config().to_string());
        meta.insert("backbone_fingerprint".into(), self.backbone_fingerprint());
        state::projection_entries(&self.projection, &mut tensors, &mut meta)?;
        for o in &self.objectives {
            for (k, t) in o.state() {
                tensors.insert(format!("{}.{k}", o.name()), Stored::F32(t));
            }
        }
        state::to_bytes(path, &tensors, &meta)
    }

    /// Saves projection, objective states and configuration so a later run (e.g. on the test
    /// split) reproduces this one's random choices exactly. Atomic (temp file + rename) and
    /// byte-reproducible.
    pub fn save_state(&self, path: &Path) -> Result<()> {
        crate::tensor_file::write_bytes_atomic(path, &self.state_bytes(path)?)
    }

    fn state_config(&self) -> serde_json::Value {
        let (o, i1) = self.engine.grad_shape();
        let i = i1 - 1;
        // The choice as it resolved: `model` on an arch with a transform and `eval` on one
        // without are the default (`auto`), so they compare equal to it.
        let mut config = self.config.clone();
        let backbone = &self.engine.inner().config;
        if EmbeddingTransform::Auto.resolve(backbone).ok() == Some(self.eval_transform) {
            config.transform = EmbeddingTransform::Auto;
        }
        serde_json::json!({
            "extractor": config,
            "target_layer": self.engine.target().to_string(),
            "target_shape": [o, i],
            "embed_dim": self.engine.inner().out_dim(),
            "backbone": self.engine.inner().config,
            "objectives": self.objectives.iter().map(|o| serde_json::json!({"name": o.name(), "config": o.config_json()})).collect::<Vec<_>>(),
        })
    }

    /// Loads a state file written by [`FungiExtractor::save_state`]: the projection and every
    /// objective's state. Refuses a state that was made for another setup — target layer,
    /// shapes, objectives and their settings, seed, projection size, architecture, weights
    /// (whatever the file records) — naming what differs. All or nothing: on any error the
    /// extractor is unchanged.
    pub fn load_state(&mut self, path: &Path) -> Result<()> {
        self.load_state_bytes(&state::read_bytes(path)?, path)
    }

    /// [`FungiExtractor::load_state`] from the file's bytes (`path` names it in errors).
    pub fn load_state_bytes(&mut self, bytes: &[u8], path: &Path) -> Result<()> {
        let st = state::parse(bytes, path)?;
        let cfg = st.config(path)?;
        let mine = self.state_config();
        let mismatch = |what: &str, e: String, f: String| state::mismatch(path, what, e, f);
        state::require_same(&cfg, &mine, &state::COMMON_KEYS, path)?;
        // Settings the state depends on, where the file records them.
        for key in ["seed", "projection_dim"] {
            let theirs = &cfg["extractor"][key];
            if cfg["extractor"].is_object() && theirs != &mine["extractor"][key] {
                return Err(mismatch(
                    &format!(
                        "`{key}` (the state was made with {key} = {theirs}; use the same {key}, \
                         or make a new state)"
                    ),
                    mine["extractor"][key].to_string(),
                    theirs.to_string(),
                ));
            }
        }
        if cfg["backbone"].is_object() {
            let d = json_differences(&mine["backbone"], &cfg["backbone"]);
            if !d.is_empty() {
                return Err(mismatch(
                    "architecture",
                    "the state's architecture".into(),
                    d.join("; "),
                ));
            }
        }
        if let Some(fp) = st.metadata.get("backbone_fingerprint") {
            if fp != &self.backbone_fingerprint() {
                return Err(mismatch(
                    "weights (backbone fingerprint; the state was made with other weights)",
                    self.backbone_fingerprint(),
                    fp.clone(),
                ));
            }
        }
        let names: Vec<String> = self
            .objectives
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let theirs: Vec<String> = cfg["objectives"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|o| o["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if names != theirs {
            return Err(mismatch(
                "objectives",
                format!("{names:?}"),
                format!("{theirs:?}"),
            ));
        }
        for (k, o) in self.objectives.iter().enumerate() {
            let recorded = &cfg["objectives"][k]["config"];
            if !recorded.is_null() {
                let d = json_differences(&o.config_json(), recorded);
                if !d.is_empty() {
                    return Err(mismatch(
                        &format!("objective `{}` settings", o.name()),
                        "the same settings as the state".into(),
                        d.join("; "),
                    ));
                }
            }
        }
        let scaling = st
            .f32
            .get("projection_scaling")
            .and_then(|t| t.data.first().copied());
        let (e, g) = (self.projection.out_dim(), self.projection.in_dim());
        let projection = if let Some((shape, data)) = st.i8.get("projection") {
            if shape != &vec![e, g] {
                return Err(mismatch(
                    "`projection` shape",
                    format!("{:?}", [e, g]),
                    format!("{shape:?}"),
                ));
            }
            Projection::from_i8(e, g, data, scaling.unwrap_or(self.projection.scaling()))?
        } else {
            let seed: u64 = st
                .metadata
                .get("projection_seed")
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Error::Format {
                    path: path.into(),
                    reason: "neither a `projection` tensor nor `projection_seed` metadata".into(),
                })?;
            let dims = (
                st.metadata.get("projection_out_dim"),
                st.metadata.get("projection_in_dim"),
            );
            if dims != (Some(&e.to_string()), Some(&g.to_string())) {
                return Err(mismatch(
                    "projection shape",
                    format!("[{e}, {g}]"),
                    format!("{dims:?}"),
                ));
            }
            let p = Projection::rademacher(e, g, seed);
            match scaling {
                Some(s) => p.with_scaling(s),
                None => p,
            }
        };
        if let Some(fp) = st.metadata.get("projection_fingerprint") {
            if fp != &projection.fingerprint() {
                return Err(mismatch(
                    "projection fingerprint",
                    fp.clone(),
                    projection.fingerprint(),
                ));
            }
        }
        // All or nothing: restore the objectives already loaded if a later one fails.
        let before: Vec<BTreeMap<String, StateTensor>> =
            self.objectives.iter().map(|o| o.state()).collect();
        for k in 0..self.objectives.len() {
            let prefix = format!("{}.", self.objectives[k].name());
            let sub: BTreeMap<String, StateTensor> = st
                .f32
                .iter()
                .filter_map(|(n, v)| n.strip_prefix(&prefix).map(|s| (s.to_string(), v.clone())))
                .collect();
            if let Err(err) = self.objectives[k].load_state(&sub) {
                for (o, s) in self.objectives.iter_mut().zip(&before).take(k + 1) {
                    let _ = o.load_state(s);
                }
                return Err(err);
            }
        }
        self.projection = projection;
        self.device_projection = std::sync::OnceLock::new();
        Ok(())
    }
}
