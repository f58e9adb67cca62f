//! State files of dense FUNGI (format `fungi-state/1`, as `fungi extract`'s): `projection`
//! (I8 `[K, O·(I+1)]`, or `projection_seed` metadata for a seeded one), `projection_scaling`,
//! `dense.head.weight` `[L, E]`, `dense.head.bias` `[L]`, `dense.support` `[M, E]`; metadata
//! `config` (JSON: `target_layer`, `target_shape`, `embed_dim`, and what this crate adds —
//! `seed`, `projection_dim`, `dense`, `backbone`) and fingerprints. A state made elsewhere
//! with only those tensors and `target_layer` / `target_shape` / `embed_dim` in its config
//! loads; the dense settings then come from the caller.

use std::collections::BTreeMap;
use std::path::Path;

use fungi_backbone::AutodiffVitOps;
use fungi_core::state::{
    self, backbone_fingerprint, json_differences, projection_entries, projection_from_state,
    Stored, STATE_FORMAT,
};
use fungi_core::{Head, Result, StateTensor};

use crate::DenseExtractor;

impl<B: AutodiffVitOps> DenseExtractor<B> {
    fn state_config(&self) -> serde_json::Value {
        let (o, j) = self.engine.grad_shape();
        serde_json::json!({
            "target_layer": self.engine.target().to_string(),
            "target_shape": [o, j - 1],
            "embed_dim": self.width(),
            "seed": self.settings.seed,
            "projection_dim": self.projection.out_dim(),
            "dense": self.settings.dense,
            "backbone": self.engine.inner().config,
        })
    }

    /// The state file's bytes (byte-identical for identical extractors); `path` names the file
    /// in errors.
    ///
    /// # Errors
    /// No support bank, or a projection that is not `±1`.
    pub fn state_bytes(&self, path: &Path) -> Result<Vec<u8>> {
        self.ready()?;
        let mut tensors = BTreeMap::new();
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), STATE_FORMAT.to_string());
        meta.insert("config".to_string(), self.state_config().to_string());
        meta.insert(
            "backbone_fingerprint".into(),
            backbone_fingerprint(self.engine.inner()),
        );
        projection_entries(&self.projection, &mut tensors, &mut meta)?;
        for (k, t) in self.head.state_entries("dense.head") {
            tensors.insert(k, Stored::F32(t));
        }
        if let Some(s) = self.support() {
            tensors.insert("dense.support".into(), Stored::F32(s.clone()));
        }
        state::to_bytes(path, &tensors, &meta)
    }

    /// Saves the state atomically.
    ///
    /// # Errors
    /// As [`DenseExtractor::state_bytes`]; the file cannot be written.
    pub fn save_state(&self, path: &Path) -> Result<()> {
        fungi_core::tensor_file::write_bytes_atomic(path, &self.state_bytes(path)?)
    }

    /// Loads a state file ([`DenseExtractor::load_state_bytes`]).
    ///
    /// # Errors
    /// As [`DenseExtractor::load_state_bytes`]; the file cannot be read.
    pub fn load_state(&mut self, path: &Path) -> Result<()> {
        self.load_state_bytes(&state::read_bytes(path)?, path)
    }

    /// Loads projection, head and support bank (rows used as stored: they are L2-normalised
    /// patch tokens) from a state file's bytes. Refuses a state made
    /// for another target layer, target shape or token size, and — where the file records
    /// them — another seed, projection size, `[dense]` settings, architecture or weights,
    /// naming what differs. All or nothing.
    ///
    /// # Errors
    /// [`Error::Format`] for a file that is not a state, [`Error::Mismatch`] naming the
    /// setting or tensor that does not fit.
    pub fn load_state_bytes(&mut self, bytes: &[u8], path: &Path) -> Result<()> {
        let st = state::parse(bytes, path)?;
        let cfg = st.config(path)?;
        let mine = self.state_config();
        let mismatch = |what: &str, e: String, f: String| state::mismatch(path, what, e, f);
        state::require_same(&cfg, &mine, &state::COMMON_KEYS, path)?;
        if !cfg["seed"].is_null() && cfg["seed"] != mine["seed"] {
            return Err(mismatch(
                "`seed` (the state was made with another seed; use the same seed, or make a new state)",
                mine["seed"].to_string(),
                cfg["seed"].to_string(),
            ));
        }
        for key in ["dense", "backbone"] {
            if cfg[key].is_object() {
                let d = json_differences(&mine[key], &cfg[key]);
                if !d.is_empty() {
                    return Err(mismatch(
                        &format!("`{key}` settings (expected = this run's, found = the state's)"),
                        "the same".into(),
                        d.join("; "),
                    ));
                }
            }
        }
        if let Some(fp) = st.metadata.get("backbone_fingerprint") {
            let own = backbone_fingerprint(self.engine.inner());
            if fp != &own {
                return Err(mismatch(
                    "weights (backbone fingerprint; the state was made with other weights)",
                    own,
                    fp.clone(),
                ));
            }
        }
        let (o, j) = self.engine.grad_shape();
        let projection = projection_from_state(&st, path, o * j, self.settings.projection_dim)?;
        let (l, e) = (self.settings.dense.latent_dim, self.width());
        let take = |key: &str, shape: Option<&[usize]>| -> Result<StateTensor> {
            let t = st.f32.get(key).ok_or_else(|| {
                mismatch(
                    &format!("state tensor `{key}`"),
                    shape.map_or("a tensor".into(), |s| format!("shape {s:?}")),
                    "nothing".into(),
                )
            })?;
            if let Some(s) = shape {
                if t.shape != s {
                    return Err(mismatch(
                        &format!("state tensor `{key}` ([dense] latent_dim = {l}, token size {e})"),
                        format!("shape {s:?}"),
                        format!("shape {:?}", t.shape),
                    ));
                }
            }
            Ok(t.clone())
        };
        let head = Head::from_pytorch(
            take("dense.head.weight", Some(&[l, e]))?,
            take("dense.head.bias", Some(&[l]))?,
            &self.device,
        )?;
        let support = take("dense.support", None)?;
        let before = (self.head.clone(), self.support.take());
        self.head = head;
        if let Err(err) = self.install_support(support, false) {
            (self.head, self.support) = before;
            return Err(err);
        }
        self.projection = projection;
        Ok(())
    }
}
