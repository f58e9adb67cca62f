//! Ground truth of the revisited Oxford / Paris benchmarks: the published `gnd_roxford5k.pkl` /
//! `gnd_rparis6k.pkl` (a pickled dict with `imlist`, `qimlist` and `gnd`, a list of dicts with
//! the `easy`, `hard`, `junk` index lists and the query box `bbx`), or the same structure as JSON.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{EvalError, GndList, Result, RetrievalProtocol};

/// The ground truth of one query.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryGnd {
    /// Database indices of the easy positives.
    pub easy: Vec<usize>,
    /// Database indices of the hard positives.
    pub hard: Vec<usize>,
    /// Database indices of the junk images (ignored in both protocols).
    pub junk: Vec<usize>,
    /// The query's box `[x1, y1, x2, y2]` (unused by the protocol: queries are not cropped);
    /// `None` when the file has none.
    #[serde(default)]
    pub bbx: Option<[f64; 4]>,
}

impl QueryGnd {
    /// The list named `list`.
    pub fn list(&self, list: GndList) -> &[usize] {
        match list {
            GndList::Easy => &self.easy,
            GndList::Hard => &self.hard,
            GndList::Junk => &self.junk,
        }
    }

    /// Positives (`ok`) and ignored images (`junk`) under a protocol, as DINO's
    /// `eval_image_retrieval.py` builds them: medium = `ok: easy + hard, junk: junk`; hard =
    /// `ok: hard, junk: junk + easy`.
    pub fn protocol(&self, p: RetrievalProtocol) -> crate::ApGnd {
        let cat = |a: &[usize], b: &[usize]| a.iter().chain(b).copied().collect::<Vec<_>>();
        match p {
            RetrievalProtocol::Medium => crate::ApGnd {
                ok: cat(&self.easy, &self.hard),
                junk: self.junk.clone(),
            },
            RetrievalProtocol::Hard => crate::ApGnd {
                ok: self.hard.clone(),
                junk: cat(&self.junk, &self.easy),
            },
        }
    }
}

/// A revisited benchmark's ground truth.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    /// Database image names (their order is the database order).
    pub imlist: Vec<String>,
    /// Query image names.
    pub qimlist: Vec<String>,
    /// One entry per query, in `qimlist` order.
    pub gnd: Vec<QueryGnd>,
}

/// A format-independent view of a parsed file, enough to walk it with good error messages.
enum Node {
    None,
    Bool,
    Int(i64),
    BigInt,
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Node>),
    Dict(Vec<(String, Node)>),
    Other,
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::None => "None / null",
            Node::Bool => "a boolean",
            Node::Int(_) => "an integer",
            Node::BigInt => "an integer out of the 64-bit range",
            Node::Float(_) => "a float",
            Node::Str(_) => "a string",
            Node::Bytes(_) => "bytes",
            Node::List(_) => "a list",
            Node::Dict(_) => "a dict",
            Node::Other => "a set or another Python object",
        }
    }

    fn from_pickle(v: serde_pickle::Value) -> Self {
        use serde_pickle::Value as V;
        match v {
            V::None => Node::None,
            V::Bool(_) => Node::Bool,
            V::I64(i) => Node::Int(i),
            V::Int(_) => Node::BigInt,
            V::F64(f) => Node::Float(f),
            V::String(s) => Node::Str(s),
            V::Bytes(b) => Node::Bytes(b),
            V::List(l) | V::Tuple(l) => Node::List(l.into_iter().map(Node::from_pickle).collect()),
            V::Dict(d) => Node::Dict(
                d.into_iter()
                    .map(|(k, v)| {
                        let key = match k {
                            serde_pickle::HashableValue::String(s) => s,
                            serde_pickle::HashableValue::Bytes(b) => {
                                String::from_utf8_lossy(&b).into_owned()
                            }
                            other => format!("{other:?}"),
                        };
                        (key, Node::from_pickle(v))
                    })
                    .collect(),
            ),
            _ => Node::Other,
        }
    }

    fn from_json(v: serde_json::Value) -> Self {
        use serde_json::Value as V;
        match v {
            V::Null => Node::None,
            V::Bool(_) => Node::Bool,
            V::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => Node::Int(i),
                (None, Some(_), _) => Node::BigInt,
                (None, None, Some(f)) => Node::Float(f),
                _ => Node::Other,
            },
            V::String(s) => Node::Str(s),
            V::Array(a) => Node::List(a.into_iter().map(Node::from_json).collect()),
            V::Object(o) => Node::Dict(
                o.into_iter()
                    .map(|(k, v)| (k, Node::from_json(v)))
                    .collect(),
            ),
        }
    }
}

/// Walks a [`Node`] tree, naming the file and the field in every error.
struct Walker<'a> {
    path: &'a str,
}

impl Walker<'_> {
    fn err(&self, field: &str, reason: impl Into<String>) -> EvalError {
        EvalError::GndField {
            path: self.path.to_string(),
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    fn get<'n>(&self, dict: &'n [(String, Node)], key: &str, field: &str) -> Result<&'n Node> {
        dict.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .ok_or_else(|| self.err(field, "missing"))
    }

    fn dict<'n>(&self, n: &'n Node, field: &str) -> Result<&'n [(String, Node)]> {
        match n {
            Node::Dict(d) => Ok(d),
            other => Err(self.err(field, format!("expected a dict, found {}", other.kind()))),
        }
    }

    fn list<'n>(&self, n: &'n Node, field: &str) -> Result<&'n [Node]> {
        match n {
            Node::List(l) => Ok(l),
            other => Err(self.err(field, format!("expected a list, found {}", other.kind()))),
        }
    }

    fn names(&self, n: &Node, field: &str) -> Result<Vec<String>> {
        self.list(n, field)?
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Node::Str(s) => Ok(s.clone()),
                Node::Bytes(b) => String::from_utf8(b.clone())
                    .map_err(|_| self.err(&format!("{field}[{i}]"), "bytes that are not UTF-8")),
                other => Err(self.err(
                    &format!("{field}[{i}]"),
                    format!("expected a string, found {}", other.kind()),
                )),
            })
            .collect()
    }

    fn indices(&self, n: &Node, field: &str, database: usize) -> Result<Vec<usize>> {
        self.list(n, field)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let f = || format!("{field}[{i}]");
                match v {
                    Node::Int(x) => usize::try_from(*x)
                        .ok()
                        .filter(|&x| x < database)
                        .ok_or_else(|| {
                            self.err(
                                &f(),
                                format!(
                                    "index {x} is outside imlist (expected 0 <= index < {database})"
                                ),
                            )
                        }),
                    other => Err(self.err(
                        &f(),
                        format!("expected an integer index, found {}", other.kind()),
                    )),
                }
            })
            .collect()
    }

    fn bbx(&self, n: &Node, field: &str) -> Result<Option<[f64; 4]>> {
        if matches!(n, Node::None) {
            return Ok(None);
        }
        let l = self.list(n, field)?;
        if l.len() != 4 {
            return Err(self.err(field, format!("expected 4 numbers, found {}", l.len())));
        }
        let mut out = [0.0; 4];
        for (i, v) in l.iter().enumerate() {
            out[i] = match v {
                Node::Int(x) => *x as f64,
                Node::Float(x) if x.is_finite() => *x,
                other => {
                    return Err(self.err(
                        &format!("{field}[{i}]"),
                        format!("expected a finite number, found {}", other.kind()),
                    ))
                }
            };
        }
        Ok(Some(out))
    }

    fn ground_truth(&self, root: &Node) -> Result<GroundTruth> {
        let top = match root {
            Node::Dict(d) => d,
            other => {
                return Err(EvalError::GndFile {
                    path: self.path.to_string(),
                    reason: format!("expected a dict at the top level, found {}", other.kind()),
                })
            }
        };
        let imlist = self.names(self.get(top, "imlist", "imlist")?, "imlist")?;
        let qimlist = self.names(self.get(top, "qimlist", "qimlist")?, "qimlist")?;
        let entries = self.list(self.get(top, "gnd", "gnd")?, "gnd")?;
        if entries.len() != qimlist.len() {
            return Err(self.err(
                "gnd",
                format!(
                    "{} entries for {} query names in qimlist (expected equal)",
                    entries.len(),
                    qimlist.len()
                ),
            ));
        }
        let gnd = entries
            .iter()
            .enumerate()
            .map(|(q, e)| {
                let field = format!("gnd[{q}]");
                let d = self.dict(e, &field)?;
                let mut lists: [Vec<usize>; 3] = Default::default();
                for (slot, list) in
                    lists
                        .iter_mut()
                        .zip([GndList::Easy, GndList::Hard, GndList::Junk])
                {
                    let f = format!("{field}.{list}");
                    *slot = self.indices(self.get(d, &list.to_string(), &f)?, &f, imlist.len())?;
                }
                let bbx = match d.iter().find(|(k, _)| k == "bbx") {
                    Some((_, v)) => self.bbx(v, &format!("{field}.bbx"))?,
                    None => None,
                };
                let [easy, hard, junk] = lists;
                Ok(QueryGnd {
                    easy,
                    hard,
                    junk,
                    bbx,
                })
            })
            .collect::<Result<_>>()?;
        Ok(GroundTruth {
            imlist,
            qimlist,
            gnd,
        })
    }
}

impl GroundTruth {
    /// Reads a pickled ground truth (the published `gnd_*.pkl`, any pickle protocol, Python 2
    /// strings decoded as UTF-8); `name` is used in errors.
    ///
    /// Errors name the file and the field: not a pickle, not a dict, a missing `imlist` /
    /// `qimlist` / `gnd` / `easy` / `hard` / `junk`, a non-integer or out-of-`imlist` index, a
    /// `bbx` that is not 4 numbers, more or fewer `gnd` entries than `qimlist` names.
    pub fn from_pickle_slice(bytes: &[u8], name: &str) -> Result<Self> {
        let opts = serde_pickle::DeOptions::new().decode_strings();
        let v = serde_pickle::value_from_slice(bytes, opts).map_err(|e| EvalError::GndFile {
            path: name.to_string(),
            reason: format!("not a readable pickle: {e}"),
        })?;
        Walker { path: name }.ground_truth(&Node::from_pickle(v))
    }

    /// Reads the same structure from JSON text (`bbx` optional); errors as
    /// [`GroundTruth::from_pickle_slice`].
    pub fn from_json_str(text: &str, name: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| EvalError::GndFile {
            path: name.to_string(),
            reason: format!("not valid JSON: {e}"),
        })?;
        Walker { path: name }.ground_truth(&Node::from_json(v))
    }

    /// Reads a ground-truth file: JSON when its extension is `.json` (or, for another extension,
    /// when it starts with `{`), a pickle otherwise. Errors name the file (and the field).
    pub fn load(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| EvalError::GndFile {
            path: name.clone(),
            reason: format!("cannot read: {e}"),
        })?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let json = match ext.as_deref() {
            Some("json") => true,
            Some("pkl" | "pickle") => false,
            _ => bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
        };
        if json {
            let text = std::str::from_utf8(&bytes).map_err(|e| EvalError::GndFile {
                path: name.clone(),
                reason: format!("not UTF-8 text: {e}"),
            })?;
            Self::from_json_str(text, &name)
        } else {
            Self::from_pickle_slice(&bytes, &name)
        }
    }
}
