//! Architecture configs of the other families, by their own keyword names: timm's
//! `VisionTransformer(**kwargs)` plus its `pretrained_cfg` (`"family": "timm"`), torchvision's
//! `VisionTransformer` (`"family": "torchvision"`), and Hugging Face `config.json` files
//! (`"model_type": "dinov2" | "vit"`). Unknown keys are errors naming the key.

use serde_json::{Map, Value};

use crate::config::{edit_distance, VitConfig};
use crate::error::{Error, Result};
use fungi_aug::resample::Filter;

/// Takes typed values out of a JSON object; what is left at the end is an unknown key.
struct Keys<'a> {
    map: Map<String, Value>,
    source: Option<&'a str>,
    family: &'static str,
    known: Vec<&'static str>,
}

impl<'a> Keys<'a> {
    fn new(map: Map<String, Value>, source: Option<&'a str>, family: &'static str) -> Self {
        Self {
            map,
            source,
            family,
            known: Vec::new(),
        }
    }

    fn err(&self, key: &str, value: &Value, expected: &str) -> Error {
        Error::Config {
            source_name: self.source.map(str::to_string),
            key: key.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }

    fn take(&mut self, key: &'static str) -> Option<Value> {
        self.known.push(key);
        self.map.remove(key).filter(|v| !v.is_null())
    }

    /// A value that may be present as JSON `null` (meaning "the default").
    fn take_nullable(&mut self, key: &'static str) -> Option<Value> {
        self.known.push(key);
        self.map.remove(key)
    }

    fn usize(&mut self, key: &'static str, default: usize) -> Result<usize> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => match v.as_u64() {
                Some(n) => usize::try_from(n).map_err(|_| self.err(key, &v, "a smaller integer")),
                None => Err(self.err(key, &v, "a non-negative integer")),
            },
        }
    }

    /// An integer, or a `[h, w]` pair with `h == w` (timm accepts both for sizes).
    fn square(&mut self, key: &'static str, default: usize) -> Result<usize> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => {
                let n = match &v {
                    Value::Array(a) if a.len() == 2 && a[0] == a[1] => a[0].as_u64(),
                    Value::Array(_) => None,
                    other => other.as_u64(),
                };
                n.map(|n| n as usize)
                    .ok_or_else(|| self.err(key, &v, "a positive integer or a square [n, n] pair"))
            }
        }
    }

    fn f64(&mut self, key: &'static str, default: f64) -> Result<f64> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| self.err(key, &v, "a number")),
        }
    }

    fn bool(&mut self, key: &'static str, default: bool) -> Result<bool> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, &v, "true or false")),
        }
    }

    fn string(&mut self, key: &'static str) -> Result<Option<String>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.err(key, &v, "a string")),
        }
    }

    fn rgb(&mut self, key: &'static str, default: [f32; 3]) -> Result<[f32; 3]> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => {
                let parsed = v.as_array().filter(|a| a.len() == 3).and_then(|a| {
                    let x: Vec<f32> = a
                        .iter()
                        .filter_map(|x| x.as_f64())
                        .map(|x| x as f32)
                        .collect();
                    (x.len() == 3).then(|| [x[0], x[1], x[2]])
                });
                parsed.ok_or_else(|| self.err(key, &v, "three numbers (R, G, B)"))
            }
        }
    }

    /// Drops keys that only matter for training or bookkeeping.
    fn ignore(&mut self, keys: &[&'static str]) {
        for k in keys {
            self.known.push(k);
            self.map.remove(*k);
        }
    }

    /// Errors on the first key nobody took.
    fn finish(self) -> Result<()> {
        let Some(key) = self.map.keys().next() else {
            return Ok(());
        };
        let closest = self
            .known
            .iter()
            .min_by_key(|k| edit_distance(key, k))
            .filter(|k| edit_distance(key, k) <= 1 + key.len() / 3)
            .map(|k| format!(" (did you mean `{k}`?)"))
            .unwrap_or_default();
        let mut known = self.known.clone();
        known.sort_unstable();
        known.dedup();
        Err(Error::ConfigParse {
            path: self.source.unwrap_or("<string>").into(),
            reason: format!(
                "unknown key `{key}` for the {} family{closest}; known keys: {}",
                self.family,
                known.join(", ")
            ),
        })
    }
}

const DESCRIPTIVE: &[&str] = &[
    "family",
    "comment",
    "description",
    "name",
    "arch",
    "architecture",
];

mod hf;
mod timm;
mod torchvision;

use hf::hugging_face;

fn interpolation(keys: &Keys<'_>, key: &str, v: Option<String>, default: Filter) -> Result<Filter> {
    match v.as_deref() {
        None => Ok(default),
        Some("bicubic") => Ok(Filter::Bicubic),
        Some("bilinear") => Ok(Filter::Bilinear),
        Some(other) => Err(keys.err(
            key,
            &Value::String(other.into()),
            "\"bicubic\" or \"bilinear\" (PIL filters of the eval resize)",
        )),
    }
}

/// The config of another family, if `map` names one (`family` or `model_type`); `None` for a
/// DINO config.
pub(crate) fn other_family(
    map: &mut Map<String, Value>,
    source: Option<&str>,
) -> Result<Option<VitConfig>> {
    if let Some(mt) = map
        .get("model_type")
        .and_then(Value::as_str)
        .map(str::to_string)
    {
        return hugging_face(&mt, std::mem::take(map), source).map(Some);
    }
    let family = match map.get("family") {
        None => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(Error::Config {
                source_name: source.map(str::to_string),
                key: "family".into(),
                value: v.to_string(),
                expected: "\"dino\", \"timm\" or \"torchvision\"".into(),
            })
        }
    };
    match family.as_str() {
        "dino" | "dinov2" => {
            map.remove("family");
            Ok(None)
        }
        "timm" => timm::timm(std::mem::take(map), source).map(Some),
        "torchvision" => torchvision::torchvision(std::mem::take(map), source).map(Some),
        other => Err(Error::Config {
            source_name: source.map(str::to_string),
            key: "family".into(),
            value: format!("\"{other}\""),
            expected:
                "\"dino\", \"timm\" or \"torchvision\" (Hugging Face configs carry `model_type`)"
                    .into(),
        }),
    }
}
