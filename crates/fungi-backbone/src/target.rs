//! Addressing Linear layers by their PyTorch dot path (`blocks.11.attn.proj`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which Linear inside a transformer block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Site {
    /// `attn.qkv` (`[3D, D]`).
    Qkv,
    /// `attn.proj` (`[D, D]`).
    Proj,
    /// `mlp.fc1` (`[hidden, D]`).
    Fc1,
    /// `mlp.fc2` (`[D, hidden]`).
    Fc2,
}

impl Site {
    /// The suffix of the dot path (`attn.proj`).
    pub fn name(self) -> &'static str {
        match self {
            Site::Qkv => "attn.qkv",
            Site::Proj => "attn.proj",
            Site::Fc1 => "mlp.fc1",
            Site::Fc2 => "mlp.fc2",
        }
    }
}

/// A Linear layer of the ViT whose per-image gradient FUNGI takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TargetLayer {
    /// Block index.
    pub block: usize,
    /// Linear within the block.
    pub site: Site,
}

impl TargetLayer {
    /// `blocks.{depth-1}.attn.proj`, fungivision's default target.
    pub fn last_attn_proj(depth: usize) -> Self {
        Self {
            block: depth.saturating_sub(1),
            site: Site::Proj,
        }
    }

    /// Parses a dot path and checks it against a model of `depth` blocks.
    ///
    /// # Errors
    /// [`Error::UnknownLayer`] listing the valid paths.
    pub fn parse(path: &str, depth: usize) -> Result<Self> {
        let bad = || Error::UnknownLayer {
            path: path.to_string(),
            depth,
            layout: crate::family::Layout::Dino,
        };
        let rest = path.strip_prefix("blocks.").ok_or_else(bad)?;
        let (idx, site) = rest.split_once('.').ok_or_else(bad)?;
        let block: usize = idx.parse().map_err(|_| bad())?;
        if block >= depth {
            return Err(bad());
        }
        let site = match site {
            "attn.qkv" => Site::Qkv,
            "attn.proj" => Site::Proj,
            "mlp.fc1" => Site::Fc1,
            "mlp.fc2" => Site::Fc2,
            _ => return Err(bad()),
        };
        Ok(Self { block, site })
    }

    /// Every valid path of a model of `depth` blocks.
    pub fn all(depth: usize) -> Vec<Self> {
        (0..depth)
            .flat_map(|block| {
                [Site::Qkv, Site::Proj, Site::Fc1, Site::Fc2]
                    .into_iter()
                    .map(move |site| Self { block, site })
            })
            .collect()
    }
}

impl fmt::Display for TargetLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blocks.{}.{}", self.block, self.site.name())
    }
}

impl FromStr for TargetLayer {
    type Err = Error;
    /// Parses without a depth check (use [`TargetLayer::parse`] when the model is known).
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s, usize::MAX)
    }
}

impl Serialize for TargetLayer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for TargetLayer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_paths() {
        for t in TargetLayer::all(12) {
            assert_eq!(TargetLayer::parse(&t.to_string(), 12).unwrap(), t);
        }
        assert_eq!(
            TargetLayer::parse("blocks.11.attn.proj", 12).unwrap(),
            TargetLayer::last_attn_proj(12)
        );
    }

    #[test]
    fn unknown_paths_list_the_valid_ones() {
        for bad in [
            "blocks.12.attn.proj",
            "blocks.x.attn.proj",
            "blocks.1.attn.out",
            "head",
            "blocks.1",
            "",
        ] {
            let err = TargetLayer::parse(bad, 12).unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
            assert!(
                err.contains("blocks.N.mlp.fc2") && err.contains("N from 0 to 11"),
                "{err}"
            );
        }
    }
}
