//! Property tests of every reader of untrusted files: random bytes and mutations of valid files
//! (truncation at random points, random byte flips and splices, random values and lines in the
//! text headers) must give `Ok` or an error, never a panic (docs/fuzzing.md).
//!
//! Deterministic by default (a fixed seed, so the suite stays green); explore further with
//! `FUZZ_SEED=<n> FUZZ_CASES=<n> cargo test --release -p fungi-tests --test fuzz_readers`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::OnceLock;

use fungi_aug::{decode_rgb_bytes, DecodeOptions};
use fungi_backbone::{StateDict, Vit, VitConfig};
use fungi_tests::*;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError};

type B = TestBackend;

/// `cases` (or `FUZZ_CASES`), a fixed seed (or `FUZZ_SEED`), no regression files.
fn config(cases: u32) -> Config {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    Config {
        cases: env("FUZZ_CASES").map_or(cases, |c| c as u32),
        rng_seed: RngSeed::Fixed(env("FUZZ_SEED").unwrap_or(0x00F0_2261)),
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Config::default()
    }
}

/// Runs `f`, failing the property (with a description of the input) if it panics.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        TestCaseError::fail(format!("panicked on {what}: {msg}"))
    })
}

// -------------------------------------------------------------------------------------------
// Mutations.

/// One change to a file's bytes. Positions are `Index`es (scaled to the length when applied), so
/// shrinking finds small, readable cases; `head` variants stay within the first `head` bytes
/// (the header), where most parsing decisions are made.
#[derive(Debug, Clone)]
enum Mutation {
    /// Keep only the first bytes.
    Truncate(Index),
    /// XOR bytes anywhere.
    Flip(Vec<(Index, u8)>),
    /// XOR bytes in the header.
    FlipHead(Vec<(Index, u8)>),
    /// Set header bytes to "interesting" values (0, 0xFF, 0x7F, 0x80).
    SetHead(Vec<(Index, u8)>),
    /// Delete `del` bytes at a position and insert others.
    Splice(Index, usize, Vec<u8>),
    /// Replace the whole file with random bytes.
    Random(Vec<u8>),
}

fn byte_edits() -> impl Strategy<Value = Vec<(Index, u8)>> {
    prop::collection::vec((any::<Index>(), 1u8..=255), 1..6)
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => any::<Index>().prop_map(Mutation::Truncate),
        2 => byte_edits().prop_map(Mutation::Flip),
        3 => byte_edits().prop_map(Mutation::FlipHead),
        2 => prop::collection::vec(
            (any::<Index>(), prop::sample::select(vec![0u8, 0xFF, 0x7F, 0x80, 1])),
            1..4
        )
        .prop_map(Mutation::SetHead),
        2 => (any::<Index>(), 0usize..64, prop::collection::vec(any::<u8>(), 0..32))
            .prop_map(|(i, d, v)| Mutation::Splice(i, d, v)),
        1 => prop::collection::vec(any::<u8>(), 0..600).prop_map(Mutation::Random),
    ]
}

impl Mutation {
    fn apply(&self, base: &[u8], head: usize) -> Vec<u8> {
        let n = base.len();
        let head = head.clamp(1, n.max(1));
        let mut b = base.to_vec();
        match self {
            Mutation::Truncate(i) => b.truncate(i.index(n + 1)),
            Mutation::Flip(e) if n > 0 => e.iter().for_each(|(i, x)| b[i.index(n)] ^= x),
            Mutation::FlipHead(e) if n > 0 => e.iter().for_each(|(i, x)| b[i.index(head)] ^= x),
            Mutation::SetHead(e) if n > 0 => e.iter().for_each(|(i, x)| b[i.index(head)] = *x),
            Mutation::Splice(i, del, ins) => {
                let at = i.index(n + 1);
                let end = (at + del).min(n);
                b.splice(at..end, ins.iter().copied());
            }
            Mutation::Random(v) => b = v.clone(),
            _ => {}
        }
        b
    }
}

/// Values that stress parsers and validators.
const INTERESTING: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "3",
    "-0.0",
    "0.5",
    "1e309",
    "-1e309",
    "1e-400",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "65535",
    "65536",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "1000000000",
    "\"\"",
    "\"x\"",
    "\"blocks.99.attn.proj\"",
    "\"F16\"",
    "\"I64\"",
    "\"BOOL\"",
    "null",
    "true",
    "[]",
    "{}",
    "[0]",
    "[1, 2]",
    "[0, 18446744073709551615]",
    "[4294967296, 4294967296]",
    "[[1]]",
    "\"\\u0000\"",
];

/// One change to a text (JSON or TOML) file.
#[derive(Debug, Clone)]
enum TextMutation {
    /// Replace the n-th scalar (number, string, `true`/`false`) with an interesting value.
    Value(Index, &'static str),
    /// Insert `key = value` (TOML) / `"key": value,` (JSON) before a line.
    Line(Index, &'static str, &'static str),
    /// Delete a line.
    DeleteLine(Index),
    /// Duplicate a line.
    DuplicateLine(Index),
    /// A byte-level mutation of the text.
    Bytes(Mutation),
}

/// Spans of scalars in a JSON/TOML text: numbers, quoted strings, `true`/`false`.
fn scalar_spans(t: &str) -> Vec<(usize, usize)> {
    let b = t.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(b.len());
            out.push((start, i));
        } else if c.is_ascii_digit() || c == b'-' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b"+-.".contains(&b[i])) {
                i += 1;
            }
            out.push((start, i));
        } else if t[i..].starts_with("true") || t[i..].starts_with("false") {
            i += if c == b't' { 4 } else { 5 };
            out.push((start, i));
        } else {
            i += 1;
        }
    }
    out
}

fn text_mutation(keys: &'static [&'static str]) -> impl Strategy<Value = TextMutation> {
    let value = prop::sample::select(INTERESTING);
    prop_oneof![
        4 => (any::<Index>(), value.clone()).prop_map(|(i, v)| TextMutation::Value(i, v)),
        3 => (any::<Index>(), prop::sample::select(keys), value)
            .prop_map(|(i, k, v)| TextMutation::Line(i, k, v)),
        1 => any::<Index>().prop_map(TextMutation::DeleteLine),
        1 => any::<Index>().prop_map(TextMutation::DuplicateLine),
        2 => mutation().prop_map(TextMutation::Bytes),
    ]
}

impl TextMutation {
    fn apply(&self, base: &str, json: bool) -> Vec<u8> {
        let lines: Vec<&str> = base.lines().collect();
        let with_lines = |f: &dyn Fn(&mut Vec<String>)| {
            let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            f(&mut l);
            l.join("\n").into_bytes()
        };
        match self {
            TextMutation::Value(i, v) => {
                let spans = scalar_spans(base);
                if spans.is_empty() {
                    return base.as_bytes().to_vec();
                }
                let (a, b) = spans[i.index(spans.len())];
                format!("{}{v}{}", &base[..a], &base[b..]).into_bytes()
            }
            TextMutation::Line(i, k, v) => with_lines(&|l| {
                let at = i.index(l.len() + 1).max(usize::from(json));
                let line = if json {
                    format!("\"{k}\": {v},")
                } else {
                    format!("{k} = {v}")
                };
                l.insert(at.min(l.len()), line);
            }),
            TextMutation::DeleteLine(i) => with_lines(&|l| {
                if !l.is_empty() {
                    l.remove(i.index(l.len()));
                }
            }),
            TextMutation::DuplicateLine(i) => with_lines(&|l| {
                if !l.is_empty() {
                    let at = i.index(l.len());
                    let dup = l[at].clone();
                    l.insert(at, dup);
                }
            }),
            TextMutation::Bytes(m) => m.apply(base.as_bytes(), base.len()),
        }
    }
}

// -------------------------------------------------------------------------------------------
// Images.

fn image_seeds() -> &'static Vec<(String, Vec<u8>)> {
    static S: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    S.get_or_init(|| {
        [
            "golden/images/00_chelsea.jpg",
            "golden/images/07_panorama.jpg",
            "golden/images/05_tiny.png",
            "golden/images/04_astronaut_P.png",
            "formats/gray.jpg",
            "formats/cmyk.jpg",
            "formats/rgb16.png",
            "formats/p_transparency.png",
            "formats/rgb_lossless.webp",
            "formats/rgb.bmp",
            "formats/rgb.tif",
            "formats/rgb.ppm",
        ]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(fixtures().join(f)).unwrap()))
        .collect()
    })
}

/// Small limits, as in the cargo-fuzz target: mutated headers may claim huge images.
fn fuzz_decode_options() -> DecodeOptions {
    DecodeOptions {
        max_image_pixels: Some(1 << 18),
        max_alloc: 16 << 20,
        ..Default::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Mutated golden JPEGs and PNGs and the format fixtures: `Ok` (a consistent image within
    /// the limits) or an error naming the file, never a panic.
    #[test]
    fn decode_rgb_bytes_never_panics(file in any::<Index>(), m in mutation(), exif in any::<bool>()) {
        let seeds = image_seeds();
        let (name, base) = &seeds[file.index(seeds.len())];
        let bytes = m.apply(base, 256);
        let opts = DecodeOptions { apply_exif_orientation: exif, ..fuzz_decode_options() };
        let path = Path::new("/fuzz/input.img");
        let r = no_panic(&format!("{name} with {m:?}"), || decode_rgb_bytes(&bytes, path, &opts))?;
        match r {
            Ok(img) => {
                let (w, h) = (img.width() as u64, img.height() as u64);
                prop_assert!(w > 0 && h > 0 && w * h <= 2 << 18, "{name} {m:?}: {w}x{h}");
                prop_assert_eq!(img.as_raw().len() as u64, w * h * 3);
            }
            // A panic inside a codec, caught by fungi-aug's last-resort guard, is still a bug.
            Err(e @ fungi_aug::Error::Decode {
                reason: fungi_aug::DecodeError::CodecPanic { .. },
                ..
            }) => prop_assert!(false, "{name} with {m:?}: {e}"),
            Err(e) => prop_assert!(e.to_string().contains("/fuzz/input.img"), "{e}"),
        }
    }
}

// -------------------------------------------------------------------------------------------
// Weights.

fn golden_bytes(name: &str) -> &'static [u8] {
    static S: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    let all = S.get_or_init(|| {
        ["model.safetensors", "model.pth", "model.json"]
            .iter()
            .map(|f| (f.to_string(), std::fs::read(golden_dir().join(f)).unwrap()))
            .collect()
    });
    &all.iter().find(|(n, _)| n == name).unwrap().1
}

fn golden_config() -> &'static VitConfig {
    static C: OnceLock<VitConfig> = OnceLock::new();
    C.get_or_init(|| VitConfig::from_json_file(golden_dir().join("model.json")).unwrap())
}

/// `(header_len, header text, data)` of a safetensors file.
fn split_safetensors(b: &[u8]) -> (usize, &str, &[u8]) {
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    (n, std::str::from_utf8(&b[8..8 + n]).unwrap(), &b[8 + n..])
}

const SAFETENSORS_KEYS: &[&str] = &[
    "dtype",
    "shape",
    "data_offsets",
    "__metadata__",
    "cls_token",
];

/// A mutated safetensors file: the JSON header rewritten (its length prefix kept consistent or
/// not), or the bytes mutated.
#[derive(Debug, Clone)]
enum StMutation {
    Header(TextMutation, bool),
    Bytes(Mutation),
}

fn st_mutation() -> impl Strategy<Value = StMutation> {
    prop_oneof![
        3 => (text_mutation(SAFETENSORS_KEYS), prop::bool::weighted(0.9))
            .prop_map(|(m, fix)| StMutation::Header(m, fix)),
        2 => mutation().prop_map(StMutation::Bytes),
    ]
}

impl StMutation {
    fn apply(&self, base: &[u8]) -> Vec<u8> {
        let (n, header, data) = split_safetensors(base);
        match self {
            StMutation::Header(m, fix_len) => {
                let h = m.apply(header, true);
                let len = if *fix_len { h.len() } else { n };
                let mut out = (len as u64).to_le_bytes().to_vec();
                out.extend_from_slice(&h);
                out.extend_from_slice(data);
                out
            }
            StMutation::Bytes(m) => m.apply(base, 8 + n),
        }
    }
}

/// A state dict that parsed is checked against the golden architecture and loaded (the path of
/// `Vit::from_file`).
fn load_state_dict(sd: &StateDict) {
    let _ = sd.check(golden_config());
    let _ = Vit::<B>::from_state_dict(golden_config(), sd, &device());
}

proptest! {
    #![proptest_config(config(160))]

    /// Mutated `model.safetensors` (header values, lengths, bytes) through
    /// `StateDict::from_safetensors_bytes` and, when it parses, `Vit::from_state_dict`.
    #[test]
    fn safetensors_state_dict_never_panics(m in st_mutation()) {
        let bytes = m.apply(golden_bytes("model.safetensors"));
        let path = Path::new("/fuzz/model.safetensors");
        let what = format!("model.safetensors with {m:?}");
        let r = no_panic(&what, || StateDict::from_safetensors_bytes(&bytes, path))?;
        match r {
            Ok(sd) => no_panic(&what, || load_state_dict(&sd))?,
            Err(e) => prop_assert!(e.to_string().contains("/fuzz/model.safetensors"), "{e}"),
        }
    }

    /// Mutated `model.pth` (a zip holding a pickle and raw tensor data) through
    /// `StateDict::read_pytorch` and, when it parses, `Vit::from_state_dict`.
    #[test]
    fn pytorch_state_dict_never_panics(m in mutation()) {
        let base = golden_bytes("model.pth");
        // The pickle (`archive/data.pkl`) follows the first local file header.
        let bytes = m.apply(base, 4096);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.pth");
        std::fs::write(&path, &bytes).unwrap();
        let what = format!("model.pth with {m:?}");
        let r = no_panic(&what, || StateDict::read_pytorch(&path))?;
        match r {
            Ok(sd) => no_panic(&what, || load_state_dict(&sd))?,
            Err(e) => prop_assert!(e.to_string().contains("model.pth"), "{e}"),
        }
    }
}

// -------------------------------------------------------------------------------------------
// Architecture and configuration files.

const VIT_KEYS: &[&str] = &[
    "img_size",
    "patch_size",
    "in_chans",
    "embed_dim",
    "depth",
    "num_heads",
    "mlp_ratio",
    "qkv_bias",
    "layer_norm_eps",
    "mlp_hidden_dim",
    "num_classes",
    "layer_scale",
    "interpolate_offset",
    "num_register_tokens",
    "unknown_key",
];

const CONFIG_KEYS: &[&str] = &[
    "seed",
    "target_layer",
    "batch_size",
    "include_embedding",
    "grad_path",
    "projection_dim",
    "preset",
    "type",
    "temperature",
    "view",
    "comparison_batch_size",
    "comparison_batch_encoding_batch_size",
    "latent_dim",
    "num_patches",
    "stride_scale",
    "loss",
    "local_crops_number",
    "global_crops_scale",
    "local_crops_scale",
    "crop_ratio",
    "out_dim",
    "teacher_temp",
    "student_temp",
    "self_similarity_constant",
    "unknown_key",
];

/// Valid configurations: the README's TOML, presets, and every objective with all its fields
/// (JSON from `FungiConfig`'s own serialisation).
fn config_seeds() -> &'static Vec<(String, String)> {
    static S: OnceLock<Vec<(String, String)>> = OnceLock::new();
    S.get_or_init(|| {
        let readme = "seed = 0\ntarget_layer = \"blocks.11.attn.proj\"\nbatch_size = 16\n\
                      [[objective]]\ntype = \"kl\"\ntemperature = 15.0\nview = \"eval\"\n\
                      [[objective]]\ntype = \"dino\"\n[[objective]]\ntype = \"simclr\"\n\
                      comparison_batch_size = 256\nloss = \"paper\"\n";
        let mut v = vec![
            ("fungi.toml".to_string(), readme.to_string()),
            ("fungi.toml".into(), "preset = \"paper\"\nseed = 3\n".into()),
        ];
        for p in [fungi::Preset::Fungivision, fungi::Preset::Paper] {
            let mut c = fungi::FungiConfig::preset(p);
            c.extractor.target_layer = Some("blocks.3.attn.proj".into());
            c.extractor.projection_dim = Some(64);
            if p == fungi::Preset::Paper {
                c.objectives
                    .push(fungi::ObjectiveConfig::Deepcluster(Default::default()));
            }
            let json = serde_json::to_string_pretty(&c).unwrap();
            assert!(fungi::FungiConfig::parse(&json, "fungi.json").is_ok());
            let toml = toml::to_string(&c).unwrap();
            assert!(
                fungi::FungiConfig::parse(&toml, "fungi.toml").is_ok(),
                "{toml}"
            );
            v.push(("fungi.json".into(), json));
            v.push(("fungi.toml".into(), toml));
        }
        for (name, text) in &v {
            fungi::FungiConfig::parse(text, name).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
        v
    })
}

proptest! {
    #![proptest_config(config(256))]

    /// Mutated `model.json` through `VitConfig::from_json_str` (and, when accepted, its
    /// parameter count).
    #[test]
    fn vit_config_never_panics(m in text_mutation(VIT_KEYS)) {
        let base = std::str::from_utf8(golden_bytes("model.json")).unwrap();
        let bytes = m.apply(base, true);
        let text = String::from_utf8_lossy(&bytes);
        let what = format!("model.json with {m:?}");
        let r = no_panic(&what, || VitConfig::from_json_str(&text, Some("/fuzz/model.json")))?;
        match r {
            Ok(c) => {
                no_panic(&what, || c.num_parameters())?;
            }
            Err(e) => prop_assert!(e.to_string().contains("/fuzz/model.json"), "{e}"),
        }
    }

    /// Mutated TOML and JSON configurations through `FungiConfig::parse`.
    #[test]
    fn fungi_config_never_panics(seed in any::<Index>(), m in text_mutation(CONFIG_KEYS)) {
        let seeds = config_seeds();
        let (name, base) = &seeds[seed.index(seeds.len())];
        let bytes = m.apply(base, name.ends_with(".json"));
        let text = String::from_utf8_lossy(&bytes);
        let what = format!("{name} with {m:?}");
        let r = no_panic(&what, || fungi::FungiConfig::parse(&text, name))?;
        if let Err(e) = r {
            prop_assert!(e.to_string().contains(name.as_str()), "{e}");
        }
    }
}

// -------------------------------------------------------------------------------------------
// State files.

/// A real state file: the golden model with a seeded KL objective, and one with an explicit
/// (stored, I8) projection.
fn state_seeds() -> &'static Vec<Vec<u8>> {
    static S: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    S.get_or_init(|| {
        let p = Path::new("/fuzz/state.safetensors");
        let seeded = kl_extractor(true).state_bytes(p).unwrap();
        let explicit = kl_extractor(false).state_bytes(p).unwrap();
        vec![seeded, explicit]
    })
}

fn kl_extractor(seeded: bool) -> fungi_core::FungiExtractor<TestAutodiff> {
    use fungi_kl::{KlConfig, KlObjective};
    let kl = KlObjective::<TestAutodiff>::new(KlConfig::paper(), 64, 5, &device()).unwrap();
    let mut b = fungi_core::FungiExtractor::builder(golden_vit())
        .target_layer("blocks.3.attn.proj")
        .batch_size(4)
        .objective(Box::new(kl));
    b = if seeded {
        b.seed(5)
    } else {
        b.projection(golden_projection())
    };
    b.build().unwrap()
}

proptest! {
    #![proptest_config(config(160))]

    /// Mutated state files (header values, lengths, bytes) through `fungi_core::state::read`
    /// and, when they parse, `FungiExtractor::load_state_bytes` of a matching extractor.
    #[test]
    fn state_file_never_panics(which in any::<bool>(), m in st_mutation()) {
        let base = &state_seeds()[usize::from(which)];
        let bytes = m.apply(base);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        let what = format!("state {} with {m:?}", if which { "explicit" } else { "seeded" });
        let r = no_panic(&what, || fungi_core::state::read(&path))?;
        match r {
            Ok(_) => {
                let mut ex = kl_extractor(!which);
                let _ = no_panic(&what, || ex.load_state_bytes(&bytes, &path))?;
            }
            Err(e) => prop_assert!(e.to_string().contains("state.safetensors"), "{e}"),
        }
    }
}

// -------------------------------------------------------------------------------------------
// The mutators themselves.

#[test]
fn mutators_keep_valid_inputs_valid_when_they_change_nothing() {
    let st = golden_bytes("model.safetensors");
    let (n, header, _) = split_safetensors(st);
    assert_eq!(n, header.len());
    let same = StMutation::Bytes(Mutation::Flip(vec![])).apply(st);
    assert_eq!(same, st);
    assert!(!scalar_spans(header).is_empty());
    assert!(StateDict::from_safetensors_bytes(&same, Path::new("x")).is_ok());
    let pth = golden_bytes("model.pth");
    assert_eq!(&pth[..2], b"PK");
}
